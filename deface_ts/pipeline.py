"""The deface pipeline, top to bottom: load → locate → plan → apply → write → post-check → verify → report.

Everything is written into a temporary folder and checked there; the output
folder appears only when every check passed (fail closed on privacy): the
post-check re-reads the written files, and the visual verification renders the
written skin and runs face detectors on it. A DICOM study and a NIfTI CT run the
same stages; what differs between them (how they load, what they write) is in
:class:`DicomInput` and :class:`NiftiInput`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from deface_ts.checks.position import decide_position
from deface_ts.checks.post_check import hand_on, post_check_ct, post_check_links, post_check_volume
from deface_ts.checks.verify import HandOff, VisualVerification
from deface_ts.config import Config
from deface_ts.deid import session as deid_session
from deface_ts.deid.headers import HeaderDeidentifier
from deface_ts.errors import InputError
from deface_ts.forked import Forked, shared_array
from deface_ts.geometry.masks import BoxMask, body_from_hu
from deface_ts.geometry.volume import Volume
from deface_ts.io import nifti
from deface_ts.io.dicom.case import Case, load_case
from deface_ts.io.dicom.rtdose import load_dose
from deface_ts.io.dicom.study import StudyFiles
from deface_ts.io.dicom.uids import UidMap
from deface_ts.io.dicom.writer import write_case
from deface_ts.io.output import atomic_output
from deface_ts.locate.base import FaceLocation, Locator
from deface_ts.locate.choose import make_locator
from deface_ts.removal.apply import Applied, apply_plan, fill_values
from deface_ts.removal.plan import RemovalPlan, plan_removal
from deface_ts.report import Report, build_report, write_report

#: Told the name of each stage as it starts (the CLI's progress display); None: nothing is told.
Progress = Callable[[str], None] | None


def deface(input: Path, output: Path, config: Config, *, series_uid: str | None = None, overwrite: bool = False,
           eyes_mask: Path | None = None, protect_masks: Sequence[Path] = (), patient_id: str | None = None,
           linkage: Path | None = None, progress: Progress = None) -> Report:
    """Deface one case (a DICOM study folder or a NIfTI CT) into ``output``; return the report.

    Header de-identification (``config.deid``) gives a DICOM set ``patient_id`` (else a keyed pseudonym) and
    writes the old → new linkage to ``linkage`` (else ``config.deid.linkage``, else beside ``output``).
    """
    timer = Timer(progress)
    with timer.stage("load"):
        case: CaseInput = (NiftiInput.load(Path(input), eyes_mask, list(protect_masks), config) if is_nifti(input)
                           else DicomInput.load(Path(input), series_uid, config, patient_id))
    linkage_file = case.linkage_file(Path(output), linkage or config.deid.linkage)
    ct = case.ct
    with timer.stage("segment"):
        location = case.locator(config).locate(ct)
    # The visual verification looks at the original from here on, beside the stages below.
    with VisualVerification(ct, config.verify, failure_folder(Path(output)), eyes_mm(location)) as verification:
        with timer.stage("plan"):
            body = case.body(config)
            plan = plan_removal(ct, body, location, case.protected(config), config)
            position = decide_position(ct, body, location, case.patient_position)
        with timer.stage("apply"):
            case.apply(plan, body, config)
        with atomic_output(Path(output), [Path(input)], overwrite) as tmp:
            with timer.stage("write"):
                case.write(tmp, plan, location, config, verification.hand_off())
            with timer.stage("post_check"):
                written, check = case.check(tmp, plan, location, config)
            pictures = {}
            if config.verify.pictures:  # the slices and the dose while the verification's child judges
                with timer.stage("qc_pictures"):
                    pictures = qc_pictures(tmp / "qc", ct, written, plan, location, case.doses())
            with timer.stage("verify"):
                visual, renders = verification.judge(written)
            if config.verify.pictures and renders is not None:
                with timer.stage("qc_pictures"):
                    pictures.update(render_pictures(tmp / "qc", renders))
            report = build_report(ct, location, plan, config, timer.seconds, check)
            report.update(case.describe(Path(output)))
            report["patient_position"] = position
            report["verify"] = visual
            if config.verify.pictures:
                report["qc_pictures"] = pictures
            report = case.deidentify_report(report, Path(input))
            write_report(tmp / "report.json", report)
            case.check_shareable(tmp)  # after report.json: the report is searched too
            case.write_linkage(linkage_file)  # before the output appears: a shared set is never without its linkage
    return report


class CaseInput(Protocol):
    """What the stages need from one kind of input (a DICOM study or a NIfTI CT)."""

    @property
    def ct(self) -> Volume: ...
    @property
    def patient_position(self) -> str | None: ...

    def locator(self, config: Config) -> Locator: ...
    def body(self, config: Config) -> np.ndarray: ...
    def protected(self, config: Config) -> list[tuple[str, np.ndarray | BoxMask]]: ...
    def apply(self, plan: RemovalPlan, body: np.ndarray, config: Config) -> None: ...
    def write(self, folder: Path, plan: RemovalPlan, location: FaceLocation, config: Config,
              hand_off: HandOff = None) -> None: ...
    def check(self, folder: Path, plan: RemovalPlan, location: FaceLocation,
              config: Config) -> tuple[Volume, dict[str, Any]]: ...
    def doses(self) -> tuple[Volume | None, Volume | None]: ...
    def describe(self, output: Path) -> Report: ...
    def linkage_file(self, output: Path, requested: str | Path | None) -> Path | None: ...
    def deidentify_report(self, report: Report, input: Path) -> Report: ...
    def check_shareable(self, folder: Path) -> None: ...
    def write_linkage(self, path: Path | None) -> None: ...


@dataclass
class DicomInput:
    """A DICOM-RT study: CT, and where present RTSTRUCT, RTPLAN, RTDOSE; headers de-identified unless off."""

    case: Case
    deid: HeaderDeidentifier | None = None
    applied: Applied | None = None
    written: StudyFiles | None = None
    written_hu: np.ndarray | None = None
    ct_check: Forked[dict] | None = None
    uids: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path, series_uid: str | None, config: Config, patient_id: str | None) -> DicomInput:
        case = load_case(folder, series_uid, meanwhile=import_planning)
        objects = [o.dataset for o in (case.structures, case.rtplan) if o is not None] + [d.dataset for d in case.doses]
        deid = deid_session.prepare([*case.ct.datasets, *objects], config.deid, patient_id, defaced=True,
                                    where=str(case.files.ct[0].path.parent))
        return cls(case, deid)

    @property
    def ct(self) -> Volume:
        return self.case.ct.hu

    @property
    def patient_position(self) -> str | None:
        return self.case.ct.patient_position

    def locator(self, config: Config) -> Locator:
        return make_locator(config, structures=self.case.structures)

    def body(self, config: Config) -> np.ndarray:
        """The patient body: the RTSTRUCT's BODY/External ROI if there is one, else from HU."""
        if self.case.structures is not None:
            bodies = [r for r in self.case.structures.by_role("body") if r.volume_voxels]
            if bodies:
                return max(bodies, key=lambda r: r.volume_voxels).mask.full(self.ct.shape)
        return body_from_hu(self.ct.array, config.region.body_hu)

    def protected(self, config: Config) -> list[tuple[str, np.ndarray | BoxMask]]:
        """ROIs never to change: configured roles (PTV/CTV/GTV by default) and name patterns (as their boxes)."""
        if self.case.structures is None:
            return []
        out: list[tuple[str, np.ndarray | BoxMask]] = []
        for roi in self.case.structures.rois:
            by_role = roi.role in config.protect.roles
            by_name = any(re.search(p, roi.name, re.IGNORECASE) for p in config.protect.patterns)
            if (by_role or by_name) and roi.volume_voxels:
                out.append((roi.name, roi.mask))
        return out

    def apply(self, plan: RemovalPlan, body: np.ndarray, config: Config) -> None:
        self.applied = apply_plan(self.case, plan, body, {name for name, _ in self.protected(config)}, config)

    def write(self, folder: Path, plan: RemovalPlan, location: FaceLocation, config: Config,
              hand_off: HandOff = None) -> None:
        """The defaced DICOM set in ``folder/dicom`` and, unless switched off, NIfTI copies in ``folder/nifti``.

        Once the CT slices are written, a forked child re-reads and checks them (the post-check) while this
        process writes the RT objects and the NIfTI copies: both hold the GIL, and a machine has two cores.
        The child puts what it read where ``hand_off`` says (the visual verification's memory) and tells it.
        """
        assert self.applied is not None, "apply before write"
        applied = self.applied
        # The written CT comes back from the child in memory both processes share (the visual verification
        # renders what was written, not the array in memory).
        self.written_hu, ready = hand_off or (shared_array(self.ct.shape, self.ct.array.dtype), None)
        with ThreadPoolExecutor(1) as pool:
            nifti_done = None

            def check_ct(paths: list[Path]) -> None:
                nonlocal nifti_done
                # Forked before the NIfTI thread starts: a child must not inherit a lock another thread holds.
                self.ct_check = Forked(post_check_ct, paths, self.ct, plan, location, config, self.written_hu, ready)
                if config.output.nifti:  # zlib releases the GIL: compressed beside the DICOM writing
                    nifti_done = pool.submit(write_nifti_outputs, folder / "nifti", self.ct.with_array(applied.hu),
                                             plan, hu_dtype=self.ct.array.dtype)

            uids = self.deid.uids if self.deid is not None else UidMap(config.output.uid_salt)
            transform = self.deid.dataset if self.deid is not None else None
            try:
                written = write_case(self.case, applied.changes, folder / "dicom", uids, transform, check_ct)
                if nifti_done is not None:
                    nifti_done.result()
            except BaseException:
                if self.ct_check is not None:
                    self.ct_check.stop()
                raise
        self.uids = written.uids

    def check(self, folder: Path, plan: RemovalPlan, location: FaceLocation,
              config: Config) -> tuple[Volume, dict[str, Any]]:
        """The written set checked: the CT by the child started in :meth:`write`, the links here."""
        assert self.ct_check is not None and self.written_hu is not None, "write before check"
        with self.ct_check:
            self.written, links = post_check_links(folder / "dicom", self.case)
            check = self.ct_check.result()
        return self.ct.with_array(self.written_hu), {**check, **links} if config.post_check else check

    def doses(self) -> tuple[Volume | None, Volume | None]:
        if self.case.doses and self.written is not None and self.written.rtdose:
            return self.case.doses[0].gy, load_dose(self.written.rtdose[0]).gy
        return None, None

    def describe(self, output: Path) -> Report:
        assert self.applied is not None, "apply before describe"
        report = Report(rois=self.applied.rois, dose=self.applied.doses)
        bodies = [r for r in self.applied.rois if r["role"] == "body"]
        if bodies:
            report["body_volume_cc"] = {"before": bodies[0]["volume_cc_before"], "after": bodies[0]["volume_cc_after"]}
        report["input"] = {"folder": str(self.case.files.ct[0].path.parent),
                           "ct_series_instance_uid": self.case.files.series_uid, "warnings": self.case.warnings}
        report["output"] = {"folder": str(output), "uids": self.uids}
        return report

    def linkage_file(self, output: Path, requested: str | Path | None) -> Path | None:
        return deid_session.linkage_path(output, requested) if self.deid is not None else None

    def deidentify_report(self, report: Report, input: Path) -> Report:
        """Without input paths, original UIDs or identifying ROI names when the headers are de-identified."""
        if self.deid is None:
            report["deid"] = {"profile": "off", "headers": "copied from the input (identifying values kept)"}
            return report
        return cast(Report, deid_session.apply_to_report(dict(report), self.deid, input))

    def check_shareable(self, folder: Path) -> None:
        if self.deid is not None:
            deid_session.check_output(folder, self.deid)

    def write_linkage(self, path: Path | None) -> None:
        if self.deid is not None and path is not None:
            deid_session.write_linkage(path, self.deid)


@dataclass
class NiftiInput:
    """A NIfTI CT: eyes from ``--eyes-mask``, protection from ``--protect-mask`` images; NIfTI out.

    With de-identification on, no input path reaches the report (a file name may name the patient): the
    masks are called by their kind and number instead.
    """

    path: Path
    ct: Volume
    eyes_mask: Path | None = None
    eyes: np.ndarray | None = None
    protect: list[tuple[str, np.ndarray]] = field(default_factory=list)
    hu: np.ndarray | None = None
    private: bool = False
    hand_off: HandOff = None

    @classmethod
    def load(cls, path: Path, eyes_mask: Path | None, protect_masks: list[Path], config: Config) -> NiftiInput:
        private = config.deid.profile != "off"
        ct = load_nifti(path, "CT")
        eyes = load_nifti(eyes_mask, "eye mask", like=ct).array > 0 if eyes_mask is not None else None
        protect = [(f"protection mask {n}" if private else str(p), load_nifti(p, "protection mask", like=ct).array > 0)
                   for n, p in enumerate(protect_masks, start=1)]
        return cls(path, ct, eyes_mask, eyes, protect, private=private)

    patient_position = None  # NIfTI has no PatientPosition: decided from the image axes and the anatomy

    def locator(self, config: Config) -> Locator:
        return make_locator(config, eyes_mask=self.eyes, eyes_source="eye mask" if self.private else str(self.eyes_mask))

    def body(self, config: Config) -> np.ndarray:
        return body_from_hu(self.ct.array, config.region.body_hu)

    def protected(self, config: Config) -> list[tuple[str, np.ndarray | BoxMask]]:
        return list(self.protect)

    def apply(self, plan: RemovalPlan, body: np.ndarray, config: Config) -> None:
        self.hu = self.ct.array.copy()
        self.hu[plan.removed] = np.rint(fill_values(self.ct.array, plan.removed, body, config))

    def write(self, folder: Path, plan: RemovalPlan, location: FaceLocation, config: Config,
              hand_off: HandOff = None) -> None:
        assert self.hu is not None, "apply before write"
        integer = bool(np.all(np.mod(self.ct.array, 1) == 0))
        write_nifti_outputs(folder, self.ct.with_array(self.hu), plan, hu_dtype=np.int16 if integer else np.float32)
        self.hand_off = hand_off  # the written CT goes there once read back (check)

    def check(self, folder: Path, plan: RemovalPlan, location: FaceLocation,
              config: Config) -> tuple[Volume, dict[str, Any]]:
        into, ready = self.hand_off or (None, None)  # the verification judges it from there on
        written = hand_on(nifti.load(folder / "ct_defaced.nii.gz"), self.ct, into, ready)
        check = post_check_volume(written, self.ct, plan, location, config) if config.post_check else {"skipped": True}
        return written, check

    def doses(self) -> tuple[Volume | None, Volume | None]:
        return None, None

    def describe(self, output: Path) -> Report:
        return Report(
            input={"ct": str(self.path), "eyes_mask": str(self.eyes_mask) if self.eyes_mask else None,
                   "protect_masks": [name for name, _ in self.protect]},
            output={"folder": str(output), "ct": "ct_defaced.nii.gz", "removal_mask": "removal_mask.nii.gz",
                    "protection_mask": "protection_mask.nii.gz"})

    # A NIfTI CT carries no DICOM header to de-identify: no linkage, nothing to scan.
    def linkage_file(self, output: Path, requested: str | Path | None) -> Path | None:
        return None

    def deidentify_report(self, report: Report, input: Path) -> Report:
        report["deid"] = {"profile": "not applicable", "headers": "NIfTI input has no DICOM headers"}
        if self.private:
            report["input"] = {"files": "not listed: de-identification is on and a file name may name the patient"}
        return report

    def check_shareable(self, folder: Path) -> None:
        return None

    def write_linkage(self, path: Path | None) -> None:
        return None


class Timer:
    """Seconds per named stage (report.json ``timings_s``); ``progress`` is told each stage as it starts."""

    def __init__(self, progress: Progress = None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress(name)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def import_planning() -> None:
    """Load scipy.ndimage (the planning's morphology) now, while the CT decodes in a child (`load_case`): the
    command line defers it (apps/lazy.py), and it would otherwise load in the plan stage (~0.2 s)."""
    from scipy import ndimage

    ndimage.binary_dilation  # noqa: B018 - any attribute of a deferred module loads it


def is_nifti(path: Path) -> bool:
    return Path(path).name.lower().endswith((".nii", ".nii.gz"))


def failure_folder(output: Path) -> Path:
    """Where the pictures of a failed visual verification go: beside the output, which never appears."""
    return output.parent / f"{output.name}.verify-failed"


def eyes_mm(location: FaceLocation) -> np.ndarray | None:
    return np.array([eye.centre_mm for eye in location.eyes]) if len(location.eyes) == 2 else None


def qc_pictures(folder: Path, before: Volume, after: Volume, plan: RemovalPlan, location: FaceLocation,
                doses: tuple[Volume | None, Volume | None]) -> dict[str, str]:
    """QC PNGs (slices through the eyes, dose) in ``folder``; names relative to the case."""
    from deface_ts.reporting.qc import write_qc_pictures

    centres = [e.centre_mm for e in location.eyes]
    if not centres:  # a face mask without eyes: slices through the middle of the removed region
        centres = [before.index_to_lps(np.argwhere(plan.removed).mean(axis=0)[None])[0]]
    written = write_qc_pictures(folder, before, after, plan.removed, plan.protected, centres,
                                dose_before=doses[0], dose_after=doses[1])
    return {name: f"{folder.name}/{file}" for name, file in written.items()}


def render_pictures(folder: Path, renders: tuple[dict, dict]) -> dict[str, str]:
    """The verification's renders before and after, side by side, in ``folder``; names relative to the case."""
    from deface_ts.reporting.qc import write_render_picture

    return {name: f"{folder.name}/{file}" for name, file in write_render_picture(folder, *renders).items()}


def write_nifti_outputs(folder: Path, defaced: Volume, plan: RemovalPlan, hu_dtype: Any = np.int16) -> None:
    """The defaced CT, the removal mask (rule labels) and the protection mask (ROI labels) as NIfTI."""
    folder.mkdir(parents=True, exist_ok=True)
    nifti.save(defaced, folder / "ct_defaced.nii.gz", dtype=hu_dtype)
    removal = np.where(plan.protected, 0, plan.provenance).astype(np.uint8)
    nifti.save(defaced.with_array(removal), folder / "removal_mask.nii.gz")
    # Labels name the protecting ROI of each voxel (report: "protection_labels"); 0 is unprotected.
    protection = plan.protected_by if plan.protected_by is not None else plan.protected.astype(np.uint16)
    nifti.save(defaced.with_array(protection), folder / "protection_mask.nii.gz")


def load_nifti(path: Path, what: str, like: Volume | None = None) -> Volume:
    """A NIfTI image as a Volume; a missing or unreadable file, or one off the CT's grid, is an InputError."""
    try:
        volume = nifti.load(Path(path))
    except FileNotFoundError:
        raise InputError(f"{path}: {what} file not found") from None
    except Exception as exc:
        raise InputError(f"{path}: cannot read {what} as NIfTI ({exc.__class__.__name__}: {exc})") from None
    if like is not None and not volume.same_grid(like):
        raise InputError(f"{path}: {what} is not on the CT's grid (shape {volume.shape} vs {like.shape} or affine differs)")
    return volume
