"""The deface pipeline, top to bottom: discover → load → segment → plan → apply → write → verify → report.

Everything is written into a temporary folder and checked there; the output
folder appears only when every check passed (fail closed on privacy): the
post-check re-reads the written files, and the visual verification renders the
written skin and runs face detectors on it.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from deface_ts import __version__
from deface_ts.locate.totalseg import weights
from deface_ts.io import nifti
from deface_ts.removal.apply import apply_plan, fill_values
from deface_ts.config import Config
from deface_ts.io.dicom.case import Case, load_case
from deface_ts.io.dicom.uids import UidMap
from deface_ts.io.dicom.writer import write_case
from deface_ts.errors import InputError
from deface_ts.io.output import atomic_output
from deface_ts.removal.plan import RULES, RemovalPlan, body_from_hu, plan_removal
from deface_ts.locate.base import FaceLocation, Locator
from deface_ts.locate.eyes import MaskEyeLocator, RoiEyeLocator, eye_rois
from deface_ts.checks.position import decide_position
from deface_ts.checks.verify import post_check, post_check_volume, visual_check
from deface_ts.geometry.volume import Volume


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def is_nifti(path: Path) -> bool:
    return Path(path).name.lower().endswith((".nii", ".nii.gz"))


def deface(input: Path, output: Path, config: Config, *, series_uid: str | None = None, overwrite: bool = False,
           eyes_mask: Path | None = None, protect_masks: list[Path] = ()) -> dict:
    """Deface one case (a DICOM study folder or a NIfTI CT) into ``output``; return the report."""
    if is_nifti(input):
        return deface_nifti(Path(input), Path(output), config, eyes_mask, list(protect_masks), overwrite)
    timer = Timer()
    with timer.stage("load"):
        case = load_case(Path(input), series_uid)
    ct = case.ct.hu
    with timer.stage("segment"):
        locator = make_locator(config, structures=case.structures)
        location = locator.locate(ct)
    with timer.stage("plan"):
        body = body_mask(case, config)
        protected = protected_rois(case, config)
        plan = plan_removal(ct, body, location, protected, config)
        position = decide_position(ct, body, location, case.ct.patient_position)
    with timer.stage("apply"):
        applied = apply_plan(case, plan, body, {name for name, _ in protected}, config)
    with atomic_output(Path(output), [Path(input)], overwrite) as tmp:
        with timer.stage("write"):
            written = write_outputs(tmp, case, applied, plan, config)
        with timer.stage("post_check"):
            reread = load_case(tmp / "dicom")
            check = post_check(reread, case, plan, location, config) if config.post_check else {"skipped": True}
        with timer.stage("verify"):
            visual, renders = verify_visually(ct, reread.ct.hu, config, Path(output))
        if config.verify.pictures:
            with timer.stage("qc_pictures"):
                doses = (case.doses[0].gy, reread.doses[0].gy) if case.doses and reread.doses else (None, None)
                pictures = qc_pictures(tmp / "qc", ct, reread.ct.hu, plan, location, doses, renders)
        report = build_report(case, location, plan, applied, config, timer, check)
        report["patient_position"] = position
        report["verify"] = visual
        if config.verify.pictures:
            report["qc_pictures"] = pictures
        report["output"] = {"folder": str(Path(output)), "uids": written.uids}
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
    return report


def write_outputs(folder: Path, case: Case, applied, plan: RemovalPlan, config: Config):
    """The defaced DICOM set in ``folder/dicom`` and, unless switched off, NIfTI copies in ``folder/nifti``."""
    ct = case.ct.hu
    with ThreadPoolExecutor(1) as pool:
        # NIfTI copies are compressed by zlib, which releases the GIL: written beside the DICOM set.
        nifti_done = pool.submit(write_nifti_outputs, folder / "nifti", ct.with_array(applied.hu), plan,
                                 hu_dtype=ct.array.dtype) if config.output.nifti else None
        written = write_case(case, applied.changes, folder / "dicom", UidMap(config.output.uid_salt))
        if nifti_done is not None:
            nifti_done.result()
    return written


def verify_visually(before: Volume, after: Volume, config: Config, output: Path) -> tuple[dict, tuple | None]:
    """The visual verification (see :func:`deface_ts.checks.verify.visual_check`), or a record that it was off."""
    if config.verify.mode == "off":
        return {"mode": "off", "status": "not verified (verify off)"}, None
    failure_folder = output.parent / f"{output.name}.verify-failed"
    result, before_renders, after_renders = visual_check(before, after, config.verify, failure_folder)
    return result, (before_renders, after_renders)


def qc_pictures(folder: Path, before: Volume, after: Volume, plan: RemovalPlan, location: FaceLocation,
                doses: tuple, renders: tuple | None) -> dict[str, str]:
    """QC PNGs (renders before/after, slices through the eyes, dose) in ``folder``; names relative to the case."""
    from deface_ts.reporting.qc import write_qc_pictures

    centres = [e.centre_mm for e in location.eyes]
    if not centres:  # a face mask without eyes: slices through the middle of the removed region
        centres = [before.index_to_lps(np.argwhere(plan.removed).mean(axis=0)[None])[0]]
    written = write_qc_pictures(folder, before, after, plan.removed, plan.protected, centres,
                                dose_before=doses[0], dose_after=doses[1],
                                renders_before=renders[0] if renders else None,
                                renders_after=renders[1] if renders else None)
    return {name: f"{folder.name}/{file}" for name, file in written.items()}


def make_locator(config: Config, structures=None, eyes_mask: np.ndarray | None = None,
                 eyes_source: str = "") -> Locator:
    """The locator the configured method names; ``auto`` picks the strongest one available.

    Eye landmarks come, in this order, from ``eyes_mask`` (NIfTI input), the
    RTSTRUCT's eye ROIs, TotalSegmentator's head_glands_cavities, or the CT
    itself (`deface_ts.locate.ct_eyes`; under ``auto`` cross-checked by the
    render locator, `deface_ts.locate.weightless`).
    """
    from deface_ts.locate.totalseg import runtime

    options = totalseg_options(config)
    eye_locator: Locator | None = None
    if eyes_mask is not None:
        eye_locator = MaskEyeLocator(eyes_mask, eyes_source)
    elif structures is not None and eye_rois(structures, config.eyes):
        eye_locator = RoiEyeLocator(structures, config.eyes)
    method = config.method
    if method == "auto":
        method = auto_method(options, eye_locator is not None)
    if method == "eyes":
        if eye_locator is not None:
            return eye_locator
        with runtime.using_home(options):
            installed = "head_glands_cavities" in weights.available_tasks()
        if installed:
            return runtime.TotalSegEyeLocator(options)
        return weight_free_locator(config, structures, cross_check=False)
    if method == "weightless":
        return weight_free_locator(config, structures, cross_check=True)
    if method in ("face", "union"):
        return runtime.TotalSegLocator(method, options, eye_locator)
    if method == "render":
        from deface_ts.locate.render import RenderLocator

        return RenderLocator(backend=config.verify.backend, detectors=tuple(config.verify.detectors) or None)
    raise InputError(f"unknown method {config.method!r}")


def auto_method(options, has_eyes: bool) -> str:
    """``auto``: union > face > eyes (ROIs, mask or TotalSegmentator) > weightless (CT eyes checked by a render)."""
    from deface_ts.locate.totalseg import runtime

    with runtime.using_home(options):
        tasks = weights.available_tasks()
    try:
        return runtime.choose_method(tasks, has_eyes)
    except InputError:
        return "weightless"


def weight_free_locator(config: Config, structures, cross_check: bool) -> Locator:
    """The CT eye finder; with ``cross_check`` the render locator checks it (or stands in) where detectors exist."""
    from deface_ts.locate.ct_eyes import CtEyeLocator
    from deface_ts.locate.render import LANDMARK_DETECTORS, RenderLocator
    from deface_ts.locate.weightless import WeightFreeLocator, why_weight_free
    from deface_ts.vision import faces

    render = None
    if cross_check and any(d in LANDMARK_DETECTORS for d in faces.available_detectors()):
        render = RenderLocator(backend=config.verify.backend, detectors=tuple(config.verify.detectors) or None)
    return WeightFreeLocator(CtEyeLocator(), render, why=why_weight_free(structures))


def totalseg_options(config: Config):
    from deface_ts.locate.totalseg.runtime import TotalSegOptions

    ts = config.totalseg
    return TotalSegOptions(device=ts.device, threads=ts.threads, home=Path(ts.home) if ts.home else None,
                           crop=ts.crop, face_margin_mm=ts.face_margin_mm, flatten_mm=ts.flatten_mm, body_hu=config.region.body_hu,
                           keep_models=ts.keep_models)


def body_mask(case: Case, config: Config) -> np.ndarray:
    """The patient body: the RTSTRUCT's BODY/External ROI if there is one, else from HU."""
    if case.structures is not None:
        bodies = [r for r in case.structures.by_role("body") if r.volume_voxels]
        if bodies:
            return max(bodies, key=lambda r: r.volume_voxels).mask.full(case.ct.hu.shape)
    return body_from_hu(case.ct.hu.array, config.region.body_hu)


def protected_rois(case: Case, config: Config) -> list[tuple[str, np.ndarray]]:
    """ROIs never to change: configured roles (PTV/CTV/GTV by default) and name patterns."""
    if case.structures is None:
        return []
    out = []
    for roi in case.structures.rois:
        by_role = roi.role in config.protect.roles
        by_name = any(re.search(p, roi.name, re.IGNORECASE) for p in config.protect.patterns)
        if (by_role or by_name) and roi.volume_voxels:
            out.append((roi.name, roi.mask.full(case.ct.hu.shape)))
    return out


def write_nifti_outputs(folder: Path, defaced: Volume, plan: RemovalPlan, hu_dtype=np.int16) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    nifti.save(defaced, folder / "ct_defaced.nii.gz", dtype=hu_dtype)
    removal = np.where(plan.protected, 0, plan.rule).astype(np.uint8)
    nifti.save(defaced.with_array(removal), folder / "removal_mask.nii.gz")
    # Labels name the protecting ROI of each voxel (report: "protection_labels"); 0 is unprotected.
    protection = plan.protected_by if plan.protected_by is not None else plan.protected.astype(np.uint16)
    nifti.save(defaced.with_array(protection), folder / "protection_mask.nii.gz")


def build_report(case: Case | None, location: FaceLocation, plan: RemovalPlan, applied, config: Config, timer: Timer,
                 check: dict, ct: Volume | None = None) -> dict:
    ct = ct if ct is not None else case.ct.hu  # type: ignore[union-attr]
    voxel_cc = float(np.prod(ct.spacing)) / 1000.0
    removed = plan.removed
    tissue = removed & (ct.array > config.region.body_hu)
    rules = {RULES[n]: int(((plan.rule == n) & ~plan.protected).sum()) for n in np.unique(plan.rule) if n}
    report = {
        "deface_ts_version": __version__,
        "method": location.method,
        "region": config.region.kind,
        "locator_notes": location.notes,
        "landmarks": plan.landmarks.__dict__,
        "removed": {
            "voxels": int(removed.sum()),
            "tissue_voxels": int(tissue.sum()),
            "tissue_volume_cc": round(int(tissue.sum()) * voxel_cc, 3),
            # Tissue the skull encloses that the plan removes (0 unless region upper; None: keep_brain off).
            "brain_side_cc": plan.brain_side_removed_cc,
            "by_rule_voxels": rules,
            "kept_by_protection_voxels": plan.kept_by,
            "protection_labels": {str(k): v for k, v in plan.protection_labels.items()},
            "rule_labels": {str(k): v for k, v in RULES.items()},
        },
        "config": config.to_dict(),
        "timings_s": timer.seconds,
        "post_check": check,
    }
    if applied is not None and case is not None:
        report["rois"] = applied.rois
        report["dose"] = applied.doses
        bodies = [r for r in applied.rois if r["role"] == "body"]
        if bodies:
            report["body_volume_cc"] = {"before": bodies[0]["volume_cc_before"], "after": bodies[0]["volume_cc_after"]}
        report["input"] = {
            "folder": str(case.files.ct[0].path.parent),
            "ct_series_instance_uid": case.files.series_uid,
            "warnings": case.warnings,
        }
        report["versions"] = _versions()
    return report


def _versions() -> dict:
    import nibabel
    import pydicom
    import scipy
    import skimage

    return {"numpy": np.__version__, "pydicom": pydicom.__version__, "nibabel": nibabel.__version__,
            "scipy": scipy.__version__, "scikit-image": skimage.__version__}


def deface_nifti(input: Path, output: Path, config: Config, eyes_mask: Path | None, protect_masks: list[Path],
                 overwrite: bool) -> dict:
    """NIfTI in, NIfTI out: eyes from ``--eyes-mask``, protection from ``--protect-mask`` images."""
    timer = Timer()
    with timer.stage("load"):
        ct = _load_nifti(input, "CT")
        eyes = _load_nifti(eyes_mask, "eye mask", like=ct).array > 0 if eyes_mask is not None else None
        protected = [(str(p), _load_nifti(p, "protection mask", like=ct).array > 0) for p in protect_masks]
    with timer.stage("segment"):
        location = make_locator(config, eyes_mask=eyes, eyes_source=str(eyes_mask)).locate(ct)
    with timer.stage("plan"):
        body = body_from_hu(ct.array, config.region.body_hu)
        plan = plan_removal(ct, body, location, protected, config)
        position = decide_position(ct, body, location, None)
    with timer.stage("apply"):
        hu = ct.array.copy()
        hu[plan.removed] = np.rint(fill_values(ct.array, plan.removed, body, config))
    with atomic_output(output, [input], overwrite) as tmp:
        with timer.stage("write"):
            integer = np.all(np.mod(ct.array, 1) == 0)
            write_nifti_outputs(tmp, ct.with_array(hu), plan, hu_dtype=np.int16 if integer else np.float32)
        with timer.stage("post_check"):
            written = nifti.load(tmp / "ct_defaced.nii.gz")
            check = post_check_volume(written, ct, plan, location, config) if config.post_check else {"skipped": True}
        with timer.stage("verify"):
            visual, renders = verify_visually(ct, written, config, output)
        if config.verify.pictures:
            with timer.stage("qc_pictures"):
                pictures = qc_pictures(tmp / "qc", ct, written, plan, location, (None, None), renders)
        report = build_report(None, location, plan, None, config, timer, check, ct=ct)
        report["patient_position"] = position
        report["verify"] = visual
        if config.verify.pictures:
            report["qc_pictures"] = pictures
        report["input"] = {"ct": str(input), "eyes_mask": str(eyes_mask) if eyes_mask else None, "protect_masks": [str(p) for p in protect_masks]}
        report["output"] = {"folder": str(output), "ct": "ct_defaced.nii.gz", "removal_mask": "removal_mask.nii.gz",
                            "protection_mask": "protection_mask.nii.gz"}
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _load_nifti(path: Path, what: str, like: Volume | None = None) -> Volume:
    try:
        volume = nifti.load(Path(path))
    except FileNotFoundError:
        raise InputError(f"{path}: {what} file not found") from None
    except Exception as exc:
        raise InputError(f"{path}: cannot read {what} as NIfTI ({exc.__class__.__name__}: {exc})") from None
    if like is not None and (volume.shape != like.shape or not np.allclose(volume.affine, like.affine, atol=1e-3)):
        raise InputError(f"{path}: {what} is not on the CT's grid (shape {volume.shape} vs {like.shape} or affine differs)")
    return volume

