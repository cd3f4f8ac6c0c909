"""TotalSegmentator backend: the face mask (task ``face``, dataset 303) and eyes (``head_glands_cavities``, 775).

What deface-ts adds around ``totalsegmentator.python_api.totalsegmentator``:

* privacy first: weights and the licence are checked before the call (never a
  download, never TotalSegmentator's ``sys.exit``), and its usage statistics are
  switched off in its config.json before every call;
* speed: the CT is cropped to the head (for ``face``, to the front of the head)
  before the call and the labels are pasted back, so nnU-Net's sliding window
  only tiles the face; nnU-Net runs without worker processes (no spawn start-up
  per case), and each network is loaded once per process and kept;
* safety: an empty face or empty eyes is a :class:`PrivacyError` of the case, and
  every TotalSegmentator failure becomes a :class:`DefaceError` so a batch goes on.

TotalSegmentator's API builds a new nnU-Net predictor (and reloads its
checkpoint) on every call. To keep models loaded, deface-ts hands it a subclass
of nnU-Net's predictor, for the duration of its own calls only, whose
``initialize_from_trained_model_folder`` reuses a per-process cache (keyed by
folder, folds, device and the checkpoint's size and mtime) through nnU-Net's
public ``manual_initialization``; the same subclass runs nnU-Net's sequential
path and applies the configured thread count.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deface_ts.choices import Method
from deface_ts.errors import DefaceError, InputError, ModelError, PrivacyError
from deface_ts.geometry.masks import largest_component
from deface_ts.geometry.view import AnatomicalView
from deface_ts.geometry.volume import Volume
from deface_ts.io import nifti
from deface_ts.locate.base import Eye, FaceLocation, Locator
from deface_ts.locate.eyes import MaskEyeLocator
from deface_ts.locate.totalseg import weights

#: head_glands_cavities labels that belong to the eyeballs (eye_left, eye_right, eye_lens_left, eye_lens_right).
EYE_LABELS = (1, 2, 3, 4)

#: Trainer classes the three models were trained with, by module: registered with TotalSegmentator directly,
#: because nnU-Net's name search imports every trainer module, and some import timm → torchvision, which
#: fails beside the CPU torch wheel.
TRAINER_MODULES = {
    "nnUNetTrainerNoMirroring": "nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring",
    "nnUNetTrainer_DASegOrd0_NoMirroring":
        "nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDAOrd0",
    "nnUNetTrainer_4000epochs_NoMirroring":
        "nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs_NoMirroring",
    "nnUNetTrainer": "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
}


@dataclass
class TotalSegOptions:
    """How deface-ts runs TotalSegmentator (the lead maps the ``totalseg`` config section onto this)."""

    device: str = "auto"  # auto | cpu | gpu | gpu:N
    threads: int | None = None  # torch CPU threads; None: torch's default
    home: Path | None = None  # TotalSegmentator home (config.json, weights); None: $TOTALSEG_HOME_DIR or ~
    crop: bool = True  # crop to the head (face: to the front of the head) before the call
    face_depth_mm: float = 130.0  # how far behind the most anterior skin the face crop reaches
    head_length_mm: float = 260.0  # how far below the top of the head the crop reaches (vertex to under the chin)
    crop_margin_mm: float = 10.0  # context around the head for the network (nnU-Net pads beyond it anyway)
    body_hu: float = -400.0
    keep_models: bool = True  # keep networks loaded between cases of one process
    timings: dict = field(default_factory=dict)  # seconds per task of the last calls (for the report)


# ----------------------------------------------------------------------------------------------- choosing
def choose_method(available_tasks: list[str] | set[str], has_eye_rois: bool) -> Method:
    """The strongest method the weights and ROIs allow: 'union', then 'face', then 'eyes'.

    ``available_tasks`` is :func:`deface_ts.locate.totalseg.weights.available_tasks` (weights complete, licence set).
    'eyes' means eye landmarks: from the RTSTRUCT's eye ROIs when it has them,
    else from TotalSegmentator (:class:`TotalSegEyeLocator`).
    """
    ts_eyes = "head_glands_cavities" in available_tasks
    if "face" in available_tasks:
        return "union" if (has_eye_rois or ts_eyes) else "face"
    if has_eye_rois or ts_eyes:
        return "eyes"
    raise InputError("no way to locate the face: the RTSTRUCT has no eye ROI and no TotalSegmentator weights are "
                     "installed (see 'deface-ts models status' and models/README.md)")


def resolve_device(device: str) -> str:
    """TotalSegmentator's device string; a GPU that was asked for and is missing is an error, not a slow CPU run."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "gpu" or (device.startswith("gpu:") and device[4:].isdigit()):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device[4:]) if ":" in device else 0
        if index >= count:
            raise InputError(f"device '{device}' requested but torch sees {count} CUDA GPU(s); "
                             "use --device cpu or auto")
        return device
    raise InputError(f"device '{device}' is not one of auto, cpu, gpu, gpu:N")


# ----------------------------------------------------------------------------------------------- cropping
def _view_range_to_source(view: AnatomicalView, axis: int, lo: int, hi: int, n: int) -> tuple[int, slice]:
    source = view.axes[axis]
    return source, (slice(n - hi, n - lo) if view.flips[axis] else slice(lo, hi))


def head_box(ct: Volume, options: TotalSegOptions, anterior_only: bool) -> tuple[slice, slice, slice]:
    """Index box (k, j, i) around the head; with ``anterior_only`` just its front ``face_depth_mm``.

    The head is found on a ~3 mm copy of the CT (largest body component, so a
    separate couch does not count): from its top down ``head_length_mm``, across
    its width; the face box starts at the most anterior skin of that range.
    Directions come from the affine, so any patient position works.
    """
    full = (slice(0, ct.shape[0]), slice(0, ct.shape[1]), slice(0, ct.shape[2]))
    try:
        view = AnatomicalView.of(ct)
    except ValueError:
        return full  # oblique grid: TotalSegmentator copes, only the crop is skipped
    step = [max(1, int(round(3.0 / ct.spacing[a]))) for a in view.axes]
    small = view.view(ct.array)[:: step[0], :: step[1], :: step[2]] > options.body_hu
    body = largest_component(small)
    if not body.any():
        raise PrivacyError("no patient body found in the CT (nothing above "
                           f"{options.body_hu:g} HU); cannot locate the face")
    mm = [ct.spacing[a] * s for a, s in zip(view.axes, step)]  # mm per small-grid step along S, A, L
    s_idx = np.flatnonzero(body.any(axis=(1, 2)))
    top = s_idx[-1]
    s_lo = max(0, top - int(np.ceil(options.head_length_mm / mm[0])))
    head = body[s_lo : top + 1]
    a_idx = np.flatnonzero(head.any(axis=(0, 2)))
    l_idx = np.flatnonzero(head.any(axis=(0, 1)))
    a_lo = a_idx[0]
    if anterior_only:
        a_lo = max(a_idx[0], a_idx[-1] - int(np.ceil(options.face_depth_mm / mm[1])))
    ranges = [(s_lo, top), (a_lo, a_idx[-1]), (l_idx[0], l_idx[-1])]
    box: list[slice] = [slice(None)] * 3
    for axis, (lo, hi) in enumerate(ranges):
        n = ct.shape[view.axes[axis]]
        margin = int(np.ceil(options.crop_margin_mm / ct.spacing[view.axes[axis]]))
        lo_full = max(0, lo * step[axis] - margin)
        hi_full = min(n, (hi + 1) * step[axis] + margin)
        source, sl = _view_range_to_source(view, axis, lo_full, hi_full, n)
        box[source] = sl
    return tuple(box)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- calling
_PREDICTOR_CLASS = None
_MODEL_CACHE: dict[tuple, dict] = {}


def clear_model_cache() -> None:
    """Forget the loaded networks (frees their memory)."""
    _MODEL_CACHE.clear()


def _register_trainers() -> None:
    """Put the trainer classes the tasks use into TotalSegmentator's custom trainer table."""
    import importlib

    import totalsegmentator.nnunet as ts_nnunet
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    for name, module in TRAINER_MODULES.items():
        if name in ts_nnunet.custom_trainers:
            continue
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            # These trainers change only training (epochs, augmentation, mirroring); inference builds the
            # network with nnUNetTrainer's build_network_architecture either way.
            cls = type(name, (nnUNetTrainer,), {})
        ts_nnunet.custom_trainers[name] = cls


def _checkpoint_stamp(folder: str, folds, checkpoint: str) -> tuple:
    stamp = []
    for fold in folds or ():
        path = Path(folder) / f"fold_{fold}" / checkpoint
        stat = path.stat() if path.exists() else None
        stamp.append((str(fold), stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1))
    return tuple(stamp)


def _channel_lists(folder: Path, ending: str) -> list[list[str]]:
    """nnU-Net's input lists for a folder of CASE_XXXX<ending> files: one list of channel files per case."""
    cases: dict[str, list[str]] = {}
    for path in sorted(folder.iterdir()):
        stem = path.name[: -len(ending)] if path.name.endswith(ending) else ""
        if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
            cases.setdefault(stem[:-5], []).append(str(path))
    return [cases[k] for k in sorted(cases)]


def _predictor_class():
    """nnU-Net's predictor with a per-process model cache, sequential prediction and a thread count."""
    global _PREDICTOR_CLASS
    if _PREDICTOR_CLASS is not None:
        return _PREDICTOR_CLASS
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    class DefaceTsPredictor(nnUNetPredictor):
        threads: int | None = None
        keep_models: bool = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.device.type == "cpu" and self.threads:
                torch.set_num_threads(int(self.threads))  # TotalSegmentator just set it to every core

        def initialize_from_trained_model_folder(self, model_training_output_dir, use_folds,
                                                 checkpoint_name="checkpoint_final.pth"):
            folds = tuple(use_folds) if use_folds is not None else None
            key = (str(Path(model_training_output_dir).resolve()), folds, checkpoint_name, str(self.device),
                   _checkpoint_stamp(model_training_output_dir, folds, checkpoint_name))
            cached = _MODEL_CACHE.get(key) if self.keep_models else None
            if cached is None:
                super().initialize_from_trained_model_folder(model_training_output_dir, use_folds, checkpoint_name)
                cached = dict(network=self.network, plans_manager=self.plans_manager,
                              configuration_manager=self.configuration_manager, parameters=self.list_of_parameters,
                              dataset_json=self.dataset_json, trainer_name=self.trainer_name,
                              inference_allowed_mirroring_axes=self.allowed_mirroring_axes)
                if self.keep_models:
                    _MODEL_CACHE[key] = cached
            else:
                self.manual_initialization(**cached)

        def predict_from_files(self, list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                               save_probabilities=False, overwrite=True, num_processes_preprocessing=1,
                               num_processes_segmentation_export=1, folder_with_segs_from_prev_stage=None,
                               num_parts=1, part_id=0, **kwargs):
            # One image per call: worker processes (spawned, each importing torch) only cost start-up time,
            # and nnU-Net lists a folder's files with a 12-process pool: list them here instead.
            if isinstance(list_of_lists_or_source_folder, (str, Path)):
                list_of_lists_or_source_folder = _channel_lists(Path(list_of_lists_or_source_folder),
                                                                self.dataset_json["file_ending"])
            return self.predict_from_files_sequential(list_of_lists_or_source_folder,
                                                      output_folder_or_list_of_truncated_output_files,
                                                      save_probabilities, overwrite,
                                                      folder_with_segs_from_prev_stage, **kwargs)

    _PREDICTOR_CLASS = DefaceTsPredictor
    return DefaceTsPredictor


@contextmanager
def using_home(options: TotalSegOptions):
    """$TOTALSEG_HOME_DIR set to ``options.home`` (when given) for the checks and the call, then restored."""
    saved = os.environ.get("TOTALSEG_HOME_DIR")
    if options.home is not None:
        os.environ["TOTALSEG_HOME_DIR"] = str(options.home)
    try:
        yield
    finally:
        if options.home is not None:
            if saved is None:
                os.environ.pop("TOTALSEG_HOME_DIR", None)
            else:
                os.environ["TOTALSEG_HOME_DIR"] = saved


@contextmanager
def _session(options: TotalSegOptions):
    """Statistics off, trainers registered, our predictor in TotalSegmentator: only while we call it."""
    weights.ensure_private_config()  # before TotalSegmentator runs at all: it would create one with statistics on
    import totalsegmentator.nnunet as ts_nnunet

    _register_trainers()
    predictor = _predictor_class()
    predictor.threads, predictor.keep_models = options.threads, options.keep_models
    original = ts_nnunet.nnUNetPredictor
    ts_nnunet.nnUNetPredictor = predictor
    try:
        yield
    finally:
        ts_nnunet.nnUNetPredictor = original


def run_task(ct: Volume, task: str, options: TotalSegOptions, anterior_only: bool = False) -> np.ndarray:
    """Labels (uint8, CT grid) of one TotalSegmentator task, run on the head crop of ``ct``.

    Raises
    ------
    MissingWeightsError, LicenceError
        Before anything runs.
    ModelError
        When TotalSegmentator or nnU-Net fails (corrupt checkpoint, out of memory, ...).
    """
    import time

    with using_home(options):
        model_folder = weights.require_task(task)  # checked first: these errors need neither torch nor TotalSegmentator
        weights.require_licence(task)
        device = resolve_device(options.device)
        box = head_box(ct, options, anterior_only) if options.crop else tuple(slice(0, n) for n in ct.shape)
        part = ct.crop(box)
        image = nifti.to_nifti(part.with_array(part.array.astype(np.float32, copy=False)))
        start = time.perf_counter()
        with _session(options):
            from totalsegmentator.python_api import totalsegmentator

            try:
                result = totalsegmentator(image, None, ml=True, task=task, device=device, quiet=True,
                                          nr_thr_resamp=1, nr_thr_saving=1)
            except DefaceError:
                raise
            except SystemExit as exc:  # TotalSegmentator exits on some input and licence problems
                raise ModelError(f"TotalSegmentator task '{task}' stopped (exit {exc.code}); "
                                 f"model: {model_folder}") from None
            except MemoryError:
                raise ModelError(f"TotalSegmentator task '{task}' ran out of memory on {device}; use --device cpu, "
                                 f"fewer --threads, or a machine with more memory. Model: {model_folder}") from None
            except Exception as exc:  # noqa: BLE001 - one case fails, the batch goes on
                if "out of memory" in str(exc).lower():  # torch.cuda.OutOfMemoryError and CPU allocator errors
                    raise ModelError(f"TotalSegmentator task '{task}' ran out of memory on {device} ({exc}); "
                                     f"try --device cpu or fewer --threads. Model: {model_folder}") from exc
                raise ModelError(f"TotalSegmentator task '{task}' failed ({type(exc).__name__}: {exc}); "
                                 f"model: {model_folder}") from exc
    options.timings[task] = round(time.perf_counter() - start, 3)
    labels = nifti.from_nifti(result, dtype=np.uint8)
    if labels.shape != part.shape:
        raise ModelError(f"TotalSegmentator task '{task}' returned shape {labels.shape} for input {part.shape}")
    out = np.zeros(ct.shape, dtype=np.uint8)
    out[box] = labels.array
    return out


def eyes_from_labels(ct: Volume, labels: np.ndarray, source: str) -> list[Eye]:
    """Eyeballs (with lenses) from head_glands_cavities labels; sides from the affine, not the labels."""
    mask = np.isin(labels, EYE_LABELS)
    if not mask.any():
        raise PrivacyError(f"{source}: no eye found (empty eye labels); cannot locate the face. "
                           "Nothing was written.")
    return MaskEyeLocator(mask, source).locate(ct).eyes


# ----------------------------------------------------------------------------------------------- locators
@dataclass
class TotalSegEyeLocator:
    """Eye landmarks from TotalSegmentator's head_glands_cavities (for CTs without eye ROIs)."""

    options: TotalSegOptions = field(default_factory=TotalSegOptions)
    name: str = "eyes"

    def locate(self, ct: Volume) -> FaceLocation:
        labels = run_task(ct, "head_glands_cavities", self.options)
        eyes = eyes_from_labels(ct, labels, "TotalSegmentator head_glands_cavities")
        return FaceLocation(self.name, eyes, notes=[f"eyes: TotalSegmentator head_glands_cavities ({len(eyes)})"])


@dataclass
class TotalSegLocator:
    """Face mask from TotalSegmentator ``face``; eyes from ``eye_locator`` or head_glands_cavities.

    ``method`` 'face': the region is the face mask (grown, filled to the front);
    each eye found must have its front inside it, else the face model missed
    part of the face and the case fails. 'union': the same region, and the
    planner adds the eye-landmark region to it, so eyes are required.
    Eyes come from ``eye_locator`` (e.g. the RTSTRUCT's eye ROIs) when given,
    else from head_glands_cavities when its weights are installed.
    """

    method: str = "union"
    options: TotalSegOptions = field(default_factory=TotalSegOptions)
    eye_locator: Locator | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.method not in ("face", "union"):
            raise InputError(f"TotalSegLocator method must be 'face' or 'union', got {self.method!r}")
        self.name = self.name or self.method

    def _eyes(self, ct: Volume) -> tuple[list[Eye], str | None]:
        if self.eye_locator is not None:
            located = self.eye_locator.locate(ct)
            return located.eyes, "; ".join(located.notes) or "eyes from the eye locator"
        with using_home(self.options):
            installed = "head_glands_cavities" in weights.available_tasks()
        if installed or self.method == "union":
            labels = run_task(ct, "head_glands_cavities", self.options)
            eyes = eyes_from_labels(ct, labels, "TotalSegmentator head_glands_cavities")
            return eyes, f"eyes: TotalSegmentator head_glands_cavities ({len(eyes)})"
        return [], None

    def locate(self, ct: Volume) -> FaceLocation:
        labels = run_task(ct, "face", self.options, anterior_only=True)
        face = labels == 1
        if not face.any():
            raise PrivacyError("TotalSegmentator 'face' found no face in this CT (empty mask); "
                               "cannot locate the face. Nothing was written.")
        notes = [f"face mask: TotalSegmentator face, {face.sum() * ct.voxel_cc:.1f} cc"]
        eyes, eye_note = self._eyes(ct)
        notes.append(eye_note or "no eye landmarks (head_glands_cavities not installed, no eye ROI): "
                     "face mask not cross-checked")
        return FaceLocation(self.name, eyes, face_mask=face, notes=notes)
