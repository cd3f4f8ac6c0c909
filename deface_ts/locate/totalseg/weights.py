"""TotalSegmentator weights on disk: where they live, which tasks are usable, importing them, privacy settings.

deface-ts never downloads at run time: a hospital machine usually has no internet
access, and TotalSegmentator's own downloader has no timeout. Weights are fetched
once by a person with internet access (see models/README.md) and imported with
``deface-ts models import PATH``; a missing task is a clear error naming the folder.

The folder logic mirrors ``totalsegmentator.config`` (weights in
$TOTALSEG_WEIGHTS_PATH, else $TOTALSEG_HOME_DIR/nnunet/results, else
~/.totalsegmentator/nnunet/results) but is re-implemented here so that
``models status`` works, and answers quickly, without torch or TotalSegmentator.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from deface_ts.errors import InputError, LicenceError, MissingWeightsError


@dataclass(frozen=True)
class Task:
    """One TotalSegmentator model as deface-ts uses it."""

    name: str  # TotalSegmentator task name (its -ta option) or our name for a helper model
    dataset: int  # nnU-Net dataset id
    folder: str  # DatasetXXX_name folder under the weights folder
    trainer: str
    configuration: str
    licensed: bool = False
    needs: tuple[str, ...] = ()  # helper models TotalSegmentator runs first
    purpose: str = ""

    @property
    def model_folder(self) -> str:
        """The nnU-Net model folder inside ``folder``: <trainer>__nnUNetPlans__<configuration>."""
        return f"{self.trainer}__nnUNetPlans__{self.configuration}"


#: The tasks deface-ts calls, with TotalSegmentator 2.x's dataset ids, trainers and configurations.
TASKS: dict[str, Task] = {
    "face": Task("face", 303, "Dataset303_face_1559subj", "nnUNetTrainerNoMirroring", "3d_fullres",
                 licensed=True, purpose="face mask (1.5 mm)"),
    "head_glands_cavities": Task("head_glands_cavities", 775, "Dataset775_head_glands_cavities_492subj",
                                 "nnUNetTrainer_DASegOrd0_NoMirroring", "3d_fullres_high", needs=("total_6mm",),
                                 purpose="eyes and lenses (0.75 x 0.75 x 1 mm)"),
    "total_6mm": Task("total_6mm", 298, "Dataset298_TotalSegmentator_total_6mm_1559subj",
                      "nnUNetTrainer_4000epochs_NoMirroring", "3d_fullres",
                      purpose="'total --fastest' (6 mm): head_glands_cavities crops to its skull"),
}

#: TotalSegmentator's offline licence rule (totalsegmentator.config.has_valid_license_offline): 18 characters.
LICENCE_LENGTH = 18


def home_dir() -> Path:
    """TotalSegmentator's home folder (its config.json lives here): $TOTALSEG_HOME_DIR or ~/.totalsegmentator."""
    if "TOTALSEG_HOME_DIR" in os.environ:
        return Path(os.environ["TOTALSEG_HOME_DIR"])
    home = Path("/tmp") if str(Path.home()) == "/" else Path.home()  # TotalSegmentator's rule for containers
    return home / ".totalsegmentator"


def weights_dir() -> Path:
    """Folder holding the DatasetXXX_* model folders."""
    if "TOTALSEG_WEIGHTS_PATH" in os.environ:
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    return home_dir() / "nnunet" / "results"


def task_folder(task: str) -> Path:
    return weights_dir() / _task(task).folder


def _task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise InputError(f"unknown TotalSegmentator task '{name}' (known: {', '.join(TASKS)})") from None


def missing_files(task: str) -> list[str]:
    """Files of the task's fold-0 model that are absent (empty when complete)."""
    info = _task(task)
    model = task_folder(task) / info.model_folder
    wanted = [model / "dataset.json", model / "plans.json", model / "fold_0" / "checkpoint_final.pth"]
    return [str(p) for p in wanted if not p.is_file()]


def require_task(task: str) -> Path:
    """Model folder of ``task``, after checking it and its helper models are complete on disk.

    Raises
    ------
    MissingWeightsError
        Naming the task, the dataset and the folder where the files are expected.
    """
    info = _task(task)
    for needed in (info.name, *info.needs):
        missing = missing_files(needed)
        if missing:
            need = TASKS[needed]
            why = f" (needed by '{task}')" if needed != task else ""
            raise MissingWeightsError(
                f"TotalSegmentator weights for task '{needed}'{why} (dataset {need.dataset}) are not installed: "
                f"expected {missing[0]}"
                + (f" and {len(missing) - 1} more file(s)" if len(missing) > 1 else "")
                + f". deface-ts never downloads at run time: see models/README.md, then "
                f"'deface-ts models import PATH' (weights folder: {weights_dir()})."
            )
    return task_folder(task) / info.model_folder


def read_config() -> dict | None:
    """TotalSegmentator's config.json, or None when there is none (or it is unreadable)."""
    path = home_dir() / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def licence_state() -> str:
    """'configured', 'missing' or 'invalid', by TotalSegmentator's offline rule (never asks its server)."""
    number = (read_config() or {}).get("license_number")
    if not number:
        return "missing"
    return "configured" if len(str(number)) == LICENCE_LENGTH else "invalid"


def require_licence(task: str) -> None:
    """Raise LicenceError before TotalSegmentator would print a notice and call sys.exit(1)."""
    if not _task(task).licensed:
        return
    state = licence_state()
    if state != "configured":
        raise LicenceError(
            f"TotalSegmentator task '{task}' is licensed (free for academic use) and its licence number is "
            f"{state} in {home_dir() / 'config.json'}; obtain one and set it with 'totalseg_set_license -l NUMBER' "
            "(needs internet once) or put \"license_number\" into that file (see models/README.md), "
            "or use a method without the face model."
        )


def set_licence(number: str) -> Path:
    """Store a licence number in TotalSegmentator's config.json without contacting its server."""
    number = str(number).strip()
    if len(number) != LICENCE_LENGTH:
        raise InputError(f"a TotalSegmentator licence number has {LICENCE_LENGTH} characters, got {len(number)}")
    return ensure_private_config(license_number=number)


def ensure_private_config(**extra) -> Path:
    """Create or update TotalSegmentator's config.json with usage statistics switched off.

    TotalSegmentator posts every run (with the licence number) to its server
    unless "send_usage_stats" is false; it also creates the file with the
    statistics switched *on* when it is missing. So deface-ts writes the file
    first, before any call, every time. Other keys are kept.
    """
    path = home_dir() / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    config = read_config() or {}
    wanted = {"send_usage_stats": False, "statistics_disclaimer_shown": True, **extra}
    config.setdefault("totalseg_id", "deface_ts_local")  # TotalSegmentator expects these two keys
    config.setdefault("prediction_counter", 0)
    if any(config.get(k) != v for k, v in wanted.items()) or not path.exists():
        config.update(wanted)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
            json.dump(config, tmp, indent=4)
        os.replace(tmp.name, path)  # atomic: a concurrent TotalSegmentator never reads half a file
    return path


def usage_statistics() -> str:
    """'off', 'on' or 'unset' (no config.json: TotalSegmentator would create one with statistics on)."""
    config = read_config()
    if config is None:
        return "unset"
    return "off" if config.get("send_usage_stats") is False else "on"


def available_tasks() -> list[str]:
    """Tasks that can run now: weights (and helper models) complete, licence configured where needed."""
    usable = []
    for name, info in TASKS.items():
        complete = all(not missing_files(t) for t in (name, *info.needs))
        if complete and (not info.licensed or licence_state() == "configured"):
            usable.append(name)
    return usable


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def status() -> dict:
    """What ``deface-ts models status`` prints: tasks present, where, licence, usage statistics, versions."""
    tasks = {}
    for name, info in TASKS.items():
        folder = task_folder(name)
        missing = missing_files(name)
        tasks[name] = {
            "dataset": info.dataset,
            "purpose": info.purpose,
            "folder": str(folder),
            "present": folder.is_dir(),
            "complete": not missing,
            "missing": missing,
            "licensed": info.licensed,
            "needs": list(info.needs),
        }
    return {
        "home_dir": str(home_dir()),
        "weights_dir": str(weights_dir()),
        "tasks": tasks,
        "available": available_tasks(),
        "licence": licence_state(),
        "usage_statistics": usage_statistics(),
        "totalsegmentator_version": _version("TotalSegmentator"),
        "torch_version": _version("torch"),
    }


def _dataset_folders(root: Path) -> list[Path]:
    """DatasetXXX_* folders of known tasks under ``root`` (itself, or up to four levels down)."""
    known = {t.folder for t in TASKS.values()}
    found = [root] if root.resolve().name in known else []
    for depth in range(1, 5):
        found += [f for f in root.glob("/".join(["*"] * depth)) if f.is_dir() and f.name in known]
    return found


def _safe_extract(archive: Path, destination: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            parts = PurePosixPath(member).parts
            if member.startswith(("/", "\\")) or ".." in parts or ":" in member:
                raise InputError(f"{archive}: refusing an archive member outside the archive: {member!r}")
        zf.extractall(destination)


def import_weights(path: Path | str, overwrite: bool = False) -> list[str]:
    """Copy TotalSegmentator weights (a zip, or a folder) into :func:`weights_dir`.

    Accepts the release zips (``Dataset303_face_1559subj.zip`` ...), a folder
    holding DatasetXXX_* folders, or a copy of a whole ``.totalsegmentator``
    home. Each dataset must hold a complete fold-0 model for the trainer and
    configuration deface-ts uses. Returns the names of the tasks imported.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    with tempfile.TemporaryDirectory(prefix="deface-ts-weights-") as scratch:
        root = path
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise InputError(f"{path}: not a zip archive or a folder of TotalSegmentator weights")
            root = Path(scratch) / "unpacked"
            _safe_extract(path, root)
        folders = _dataset_folders(root)
        if not folders:
            known = ", ".join(t.folder for t in TASKS.values())
            raise InputError(f"{path}: holds none of the model folders deface-ts uses ({known})")
        by_folder = {t.folder: t for t in TASKS.values()}
        imported = []
        for folder in folders:
            task = by_folder[folder.resolve().name]
            model = folder / task.model_folder
            needed = ("dataset.json", "plans.json", "fold_0/checkpoint_final.pth")
            absent = [p for p in needed if not (model / p).is_file()]
            if absent:
                raise InputError(f"{folder}: incomplete model for task '{task.name}', missing {model / absent[0]}")
            target = weights_dir() / task.folder
            if target.exists():
                if not overwrite:
                    raise InputError(f"{target} exists already; pass overwrite=True (--overwrite) to replace it")
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            # Copy to a sibling then rename, so an interrupted import never leaves a half model that looks present.
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(folder, partial)
            os.replace(partial, target)
            imported.append(task.name)
    return imported
