"""Apply a RemovalPlan: defaced CT, clipped ROIs with BODY following the new skin, dose zeroed.

Protected voxels are never changed: the plan's ``removed`` already excludes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
from scipy import ndimage

from deface_ts.choices import RoiStatus, Role
from deface_ts.config import Config
from deface_ts.geometry.masks import BoxMask, body_from_hu
from deface_ts.geometry.volume import Volume
from deface_ts.io.dicom.case import Case
from deface_ts.io.dicom.rtdose import Dose
from deface_ts.io.dicom.rtstruct import Roi
from deface_ts.io.dicom.writer import Changes
from deface_ts.locate.base import FaceLocation
from deface_ts.removal.plan import RemovalPlan, plan_removal


@dataclass
class Applied:
    """The defaced case as changes for the writer, plus what the report needs.

    The defaced HU volume is built only when asked for (:attr:`hu`, the NIfTI copy): the writer takes the
    removed voxels and their air value from ``changes``, and a CT-sized copy held to the end of the run is a
    sixth of its memory.
    """

    original: np.ndarray  # the loaded HU (CT grid)
    changes: Changes
    rois: list[RoiEntry] = field(default_factory=list)
    doses: list[DoseEntry] = field(default_factory=list)

    @property
    def hu(self) -> np.ndarray:
        """Defaced HU (CT grid, same dtype as the loaded HU): a new array on each call."""
        hu = self.original.copy()
        hu[self.changes.ct_mask] = self.changes.ct_hu
        return hu


class RoiEntry(TypedDict):
    """What defacing did to one ROI (report.json ``rois``)."""

    name: str
    number: int
    role: Role
    voxels_before: int
    status: RoiStatus
    voxels_after: int
    preserved_ratio: float | None
    volume_cc_before: float
    volume_cc_after: float


class DoseEntry(TypedDict):
    """What defacing did to one RTDOSE (report.json ``dose``)."""

    file: str
    voxels_zeroed: int
    dose_integral_removed_gy_cc: float
    max_dose_removed_gy: float


def fill_values(hu: np.ndarray, removed: np.ndarray, body: np.ndarray, config: Config) -> np.ndarray | float:
    """Air for the removed voxels: a constant, or noise matched to the air around the patient."""
    if not config.fill.noise:
        return float(config.fill.hu)
    air = hu[~body & (hu < config.fill.hu + 200)]
    sigma = float(air.std()) if air.size > 100 else 0.0
    rng = np.random.default_rng(config.fill.seed)
    return config.fill.hu + rng.normal(0.0, sigma, int(removed.sum())).astype(np.float32)


def dose_points(dose: Volume, ct: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The CT voxel (k, j, i) under each dose-grid point's centre (through patient coordinates), and whether it
    lies in the CT; for :func:`dose_voxels_in`, which then needs not map the grid again for another mask."""
    k, j, i = np.indices(dose.shape).reshape(3, -1)
    index = np.rint(ct.lps_to_index(dose.index_to_lps(np.column_stack([k, j, i])))).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.array(ct.shape)), axis=1)
    return index[inside], inside


def dose_voxels_in(dose: Volume, ct: Volume, mask: np.ndarray,
                   points: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Dose-grid voxels whose centre falls in a CT-grid ``mask`` voxel (``points``: :func:`dose_points`)."""
    index, inside = points if points is not None else dose_points(dose, ct)
    hit = np.zeros(inside.shape, dtype=bool)
    hit[inside] = mask[index[:, 0], index[:, 1], index[:, 2]]
    return hit.reshape(dose.shape)


def apply_plan(case: Case, plan: RemovalPlan, body: np.ndarray, protected_names: set[str], config: Config) -> Applied:
    """The defaced HU, and the changes the writer makes to each RTSTRUCT ROI and RTDOSE."""
    ct = case.ct.hu
    # The air value as the CT stores it (int16 HU are rounded), one value or one per removed voxel (noise).
    fill = np.rint(fill_values(ct.array, plan.removed, body, config)).astype(ct.array.dtype)
    changes = Changes(ct_mask=plan.removed, ct_hu=fill, defaced=True)
    applied = Applied(ct.array, changes)
    if case.structures is not None:
        applied.rois = [_clip_roi(roi, ct, plan.removed, roi.name in protected_names, changes)
                        for roi in case.structures.rois]
    applied.doses = [_zero_dose(dose, ct, plan, changes) for dose in case.doses]
    return applied


def _clip_roi(roi: Roi, ct: Volume, removed: np.ndarray, protected: bool, changes: Changes) -> RoiEntry:
    """Clip one ROI by the removal (unless protected); the new mask goes to ``changes``."""
    before = after = roi.volume_voxels
    status: RoiStatus = "protected" if protected else "unchanged"
    if not protected and before:
        box = roi.mask.box
        lost = int((roi.mask.array & removed[box]).sum())
        if lost:
            new_mask = np.zeros(ct.shape, dtype=bool)  # only the ROI's box can hold voxels
            new_mask[box] = roi.mask.array & ~removed[box]
            changes.rois[roi.number] = new_mask
            after = before - lost
            status = "removed" if after == 0 else "clipped"
    return RoiEntry(name=roi.name, number=roi.number, role=roi.role, voxels_before=before, status=status,
                    voxels_after=after, preserved_ratio=round(after / before, 6) if before else None,
                    volume_cc_before=round(before * ct.voxel_cc, 3), volume_cc_after=round(after * ct.voxel_cc, 3))


def _zero_dose(dose: Dose, ct: Volume, plan: RemovalPlan, changes: Changes) -> DoseEntry:
    """Zero the dose points that lie in the removed region; the mask goes to ``changes``."""
    points = dose_points(dose.gy, ct)  # mapped once, for both masks
    zero = dose_voxels_in(dose.gy, ct, plan.removed, points)
    if plan.protected.any():
        # A planning system interpolates dose between grid points, so a zeroed point next to a protected ROI
        # would lower its DVH: keep every dose point one grid step around a protected point
        # (docs/calibration.md, "Dose").
        near = ndimage.binary_dilation(dose_voxels_in(dose.gy, ct, plan.protected, points),
                                       structure=np.ones((3, 3, 3), dtype=bool))
        zero &= ~near
    changes.dose_zero.append(zero)
    gy = dose.gy.array[zero]
    return DoseEntry(file=str(dose.file.path), voxels_zeroed=int(zero.sum()),
                     dose_integral_removed_gy_cc=round(float(gy.sum()) * dose.gy.voxel_cc, 4),
                     max_dose_removed_gy=round(float(gy.max()) if gy.size else 0.0, 4))


def deface_volume(ct: Volume, eyes: np.ndarray, protected: list[tuple[str, np.ndarray | BoxMask]],
                  config: Config) -> tuple[Volume, RemovalPlan, FaceLocation]:
    """Locate (eyes from a mask), plan and apply on an in-memory CT: the NIfTI path without files.

    Calibration and tests deface many variants this way; the pipeline writes and re-reads instead.
    """
    from deface_ts.locate.eyes import MaskEyeLocator

    location = MaskEyeLocator(eyes, "eye mask").locate(ct)
    body = body_from_hu(ct.array, config.region.body_hu)
    plan = plan_removal(ct, body, location, protected, config)
    hu = ct.array.copy()
    hu[plan.removed] = fill_values(ct.array, plan.removed, body, config)
    return ct.with_array(hu), plan, location
