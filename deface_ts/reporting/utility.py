"""Utility of defaced pairs: what the removal did to ROIs (voxels kept, Dice, HD95) and to dose (DVH points)."""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from deface_ts.choices import PROTECTED_ROLES
from deface_ts.config import RegionConfig
from deface_ts.errors import InputError
from deface_ts.geometry.masks import body_from_hu
from deface_ts.geometry.volume import Volume
from deface_ts.io import nifti
from deface_ts.io.dicom.case import Case
from deface_ts.removal.apply import dose_points, dose_voxels_in
from deface_ts.report import Report
from deface_ts.reporting.pairs import Pair

log = logging.getLogger(__name__)


def surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def hd95_mm(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> float | None:
    """95th percentile of the surface distances of a to b and b to a, pooled (MedPy's hd95)."""
    union = a | b
    if not a.any() or not b.any():
        return None
    lo = np.argwhere(union).min(axis=0)
    hi = np.argwhere(union).max(axis=0) + 1
    box = tuple(slice(x, y) for x, y in zip(lo, hi))
    sa, sb = surface(a[box]), surface(b[box])
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return float(np.percentile(np.concatenate([to_b[sa], to_a[sb]]), 95))


def roi_changes(original: Case, defaced: Case) -> list[dict]:
    """Per ROI of the original: voxels kept, Dice and HD95 against the defaced ROI of the same name."""
    if original.structures is None:
        return []
    shape, spacing = original.ct.hu.shape, original.ct.hu.spacing
    after = {r.name: r for r in defaced.structures.rois} if defaced.structures is not None else {}
    out = []
    for roi in original.structures.rois:
        a = roi.mask.full(shape)
        b = after[roi.name].mask.full(shape) if roi.name in after else np.zeros(shape, bool)
        na, nb, both = int(a.sum()), int(b.sum()), int((a & b).sum())
        changed = not np.array_equal(a, b)
        out.append({"name": roi.name, "role": roi.role, "voxels_before": na, "voxels_after": nb,
                    "in_defaced": roi.name in after, "changed": changed,
                    "preserved_ratio": both / na if na else None,
                    "dice": 2.0 * both / (na + nb) if na + nb else None,
                    "hd95_mm": (hd95_mm(a, b, spacing) if changed else 0.0) if na else None})
    return out


def dose_at(dose: Volume, ct: Volume, mask: np.ndarray) -> np.ndarray:
    """Dose (Gy) at the centres of the CT voxels of ``mask``, trilinear; 0 outside the dose grid."""
    return dose.sample(ct.index_to_lps(np.argwhere(mask)))


def dvh_points(gy: np.ndarray) -> dict[str, float | None]:
    """D95 and D2 (dose received by at least 95 % and 2 % of the volume) and the mean dose, in Gy."""
    if gy.size == 0:
        return {"D95": None, "D2": None, "Dmean": None}
    return {"D95": float(np.percentile(gy, 5)), "D2": float(np.percentile(gy, 98)), "Dmean": float(gy.mean())}


def protected_names(original: Case, report: Report | None) -> list[str]:
    """The ROIs the report says were protected; without a report, the roles protected by default."""
    if report and report.get("rois"):
        return [r["name"] for r in report["rois"] if r.get("status") == "protected"]
    return [r.name for r in original.structures.rois if r.role in PROTECTED_ROLES] if original.structures else []


def removal_mask(pair: Pair, ct: Volume, defaced_ct: Volume) -> tuple[np.ndarray, str]:
    """The voxels the pipeline removed: its nifti/removal_mask.nii.gz, else the CT voxels that changed.

    The second is an approximation: air replaced by air of the same HU does not show.
    """
    path = pair.defaced / "nifti" / "removal_mask.nii.gz"
    if path.is_file():
        mask = nifti.load(path)
        if mask.same_grid(ct):
            return mask.array > 0, "removal_mask.nii.gz"
        log.warning("%s is not on the CT grid; using the changed CT voxels", path)
    return ct.array != defaced_ct.array, "changed CT voxels"


def dose_changes(pair: Pair, original: Case, defaced: Case, report: Report | None) -> list[dict]:
    """Per RTDOSE (in file order): |Δ dose| overall, in the body, outside the removal; DVH of protected ROIs.

    DVH points sample the dose trilinearly at the ROI's CT voxel centres, as planning systems do;
    ``max_abs_voxel_diff_gy`` is the largest change of a dose voxel whose centre lies in the ROI.
    """
    if len(original.doses) != len(defaced.doses):
        raise InputError(f"{len(original.doses)} RTDOSE before, {len(defaced.doses)} after")
    ct, shape = original.ct.hu, original.ct.hu.shape
    bodies = [r for r in original.structures.by_role("body") if r.volume_voxels] if original.structures else []
    body = (max(bodies, key=lambda r: r.volume_voxels).mask.full(shape) if bodies
            else body_from_hu(ct.array, RegionConfig().body_hu))
    removed, removal_source = removal_mask(pair, ct, defaced.ct.hu)
    after_rois = {r.name: r for r in defaced.structures.rois} if defaced.structures is not None else {}
    out = []
    for number, (d0, d1) in enumerate(zip(original.doses, defaced.doses), start=1):
        g0, g1 = d0.gy, d1.gy
        if not g0.same_grid(g1):
            raise InputError(f"RTDOSE {number}: the defaced dose is not on the original's grid")
        delta = np.abs(g1.array.astype(np.float64) - g0.array)
        points = dose_points(g0, ct)  # the dose grid mapped onto the CT once, for every mask below
        in_body = dose_voxels_in(g0, ct, body, points)
        kept = ~dose_voxels_in(g0, ct, removed, points)
        dvh: list[dict] = []
        entry = {"dose": number, "max_gy": float(g0.array.max()), "max_abs_diff_gy": float(delta.max()),
                 "mean_abs_diff_body_gy": float(delta[in_body].mean()) if in_body.any() else None,
                 "max_abs_diff_outside_removal_gy": float(delta[kept].max()) if kept.any() else 0.0,
                 "removal_from": removal_source, "voxels_changed": int((delta > 0).sum()), "dvh": dvh}
        for name in protected_names(original, report):
            assert original.structures is not None  # protected names come from its ROIs
            m0 = original.structures.get(name).mask.full(shape)
            m1 = after_rois[name].mask.full(shape) if name in after_rois else np.zeros(shape, bool)
            before, after = dvh_points(dose_at(g0, ct, m0)), dvh_points(dose_at(g1, ct, m1))
            diff = {k: (a - b) if b is not None and a is not None else None
                    for k, b, a in ((k, before[k], after[k]) for k in before)}
            inside = dose_voxels_in(g0, ct, m0, points)
            dvh.append({"roi": name, "before": before, "after": after, "difference": diff,
                                 "max_abs_voxel_diff_gy": float(delta[inside].max()) if inside.any() else None})
        out.append(entry)
    return out


def roi_summary(cases: list[dict]) -> dict[str, dict]:
    """Per ROI name over the cases: how often it changed, min preserved ratio, mean Dice, max HD95."""
    by_name: dict[str, list[dict]] = {}
    for case in cases:
        for roi in case["rois"]:
            by_name.setdefault(roi["name"], []).append(roi)
    out = {}
    for name, rois in by_name.items():
        ratios = [r["preserved_ratio"] for r in rois if r["preserved_ratio"] is not None]
        dice = [r["dice"] for r in rois if r["dice"] is not None]
        hd = [r["hd95_mm"] for r in rois if r["hd95_mm"] is not None]
        out[name] = {"role": rois[0]["role"], "cases": len(rois), "changed": sum(r["changed"] for r in rois),
                     "min_preserved_ratio": min(ratios) if ratios else None,
                     "mean_preserved_ratio": float(np.mean(ratios)) if ratios else None,
                     "mean_dice": float(np.mean(dice)) if dice else None, "max_hd95_mm": max(hd) if hd else None}
    return out


def dose_summary(cases: list[dict]) -> dict:
    doses = [d for c in cases for d in c["doses"]]
    dvh = [abs(v) for d in doses for e in d["dvh"] for v in e["difference"].values() if v is not None]
    return {"doses": len(doses),
            "max_abs_diff_gy": max((d["max_abs_diff_gy"] for d in doses), default=None),
            "max_abs_diff_outside_removal_gy": max((d["max_abs_diff_outside_removal_gy"] for d in doses),
                                                      default=None),
            "max_abs_dvh_difference_protected_gy": max(dvh, default=None)}
