"""Apply a RemovalPlan: defaced CT, clipped ROIs with BODY following the new skin, dose zeroed.

Protected voxels are never changed: the plan's ``removed`` already excludes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from deface_ts.config import Config
from deface_ts.io.dicom.case import Case
from deface_ts.io.dicom.writer import Changes
from deface_ts.removal.plan import RemovalPlan
from deface_ts.geometry.volume import Volume


@dataclass
class Applied:
    """The defaced case as changes for the writer, plus what the report needs.

    The defaced HU volume is built only when asked for (:attr:`hu`, the NIfTI copy): the writer takes the
    removed voxels and their air value from ``changes``, and a CT-sized copy held to the end of the run is a
    sixth of its memory.
    """

    original: np.ndarray  # the loaded HU (CT grid)
    changes: Changes
    rois: list[dict] = field(default_factory=list)
    doses: list[dict] = field(default_factory=list)

    @property
    def hu(self) -> np.ndarray:
        """Defaced HU (CT grid, same dtype as the loaded HU): a new array on each call."""
        hu = self.original.copy()
        hu[self.changes.ct_mask] = self.changes.ct_hu
        return hu


def fill_values(hu: np.ndarray, removed: np.ndarray, body: np.ndarray, config: Config) -> np.ndarray | float:
    """Air for the removed voxels: a constant, or noise matched to the air around the patient."""
    if not config.fill.noise:
        return float(config.fill.hu)
    air = hu[~body & (hu < config.fill.hu + 200)]
    sigma = float(air.std()) if air.size > 100 else 0.0
    rng = np.random.default_rng(config.fill.seed)
    return config.fill.hu + rng.normal(0.0, sigma, int(removed.sum())).astype(np.float32)


def dose_voxels_in(dose: Volume, ct: Volume, mask: np.ndarray) -> np.ndarray:
    """Dose-grid voxels whose centre falls in a CT-grid ``mask`` voxel (through patient coordinates)."""
    k, j, i = np.indices(dose.shape).reshape(3, -1)
    index = np.rint(ct.lps_to_index(dose.index_to_lps(np.column_stack([k, j, i])))).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.array(ct.shape)), axis=1)
    hit = np.zeros(index.shape[0], dtype=bool)
    ii = index[inside]
    hit[inside] = mask[ii[:, 0], ii[:, 1], ii[:, 2]]
    return hit.reshape(dose.shape)


def apply_plan(case: Case, plan: RemovalPlan, body: np.ndarray, protected_names: set[str], config: Config) -> Applied:
    ct = case.ct.hu
    removed = plan.removed
    # The air value as the CT stores it (int16 HU are rounded), one value or one per removed voxel (noise).
    fill = np.rint(fill_values(ct.array, removed, body, config)).astype(ct.array.dtype)
    changes = Changes(ct_mask=removed, ct_hu=fill, defaced=True)
    applied = Applied(ct.array, changes)
    voxel_cc = float(np.prod(ct.spacing)) / 1000.0

    if case.structures is not None:
        for roi in case.structures.rois:
            before = roi.volume_voxels
            entry = {"name": roi.name, "number": roi.number, "role": roi.role, "voxels_before": before}
            if roi.name in protected_names:
                entry.update(status="protected", voxels_after=before)
            else:
                box = roi.mask.box
                lost = int((roi.mask.array & removed[box]).sum()) if before else 0
                if lost == 0:
                    entry.update(status="unchanged", voxels_after=before)
                else:
                    new_mask = np.zeros(ct.shape, dtype=bool)  # only the ROI's box can hold voxels
                    new_mask[box] = roi.mask.array & ~removed[box]
                    changes.rois[roi.number] = new_mask
                    after = before - lost
                    entry.update(status="removed" if after == 0 else "clipped", voxels_after=after)
            entry["preserved_ratio"] = round(entry["voxels_after"] / before, 6) if before else None
            entry["volume_cc_before"] = round(before * voxel_cc, 3)
            entry["volume_cc_after"] = round(entry["voxels_after"] * voxel_cc, 3)
            applied.rois.append(entry)

    for dose in case.doses:
        zero = dose_voxels_in(dose.gy, ct, removed)
        if plan.protected.any():
            # A planning system interpolates dose between grid points, so a zeroed point next to a protected
            # ROI would lower its DVH (seen: PTV D95 -1.0 Gy on a 3 mm grid). Keep every dose point one grid
            # step around a point inside the protected region (ROI + margin): with a margin of at least half the
            # dose grid's diagonal, all eight corners of any dose cell holding a protected point are kept.
            near = ndimage.binary_dilation(dose_voxels_in(dose.gy, ct, plan.protected),
                                           structure=np.ones((3, 3, 3), dtype=bool))
            zero &= ~near
        changes.dose_zero.append(zero)
        gy = dose.gy.array[zero]
        applied.doses.append(
            {
                "file": str(dose.file.path),
                "voxels_zeroed": int(zero.sum()),
                "dose_integral_removed_gy_cc": round(float(gy.sum()) * float(np.prod(dose.gy.spacing)) / 1000.0, 4),
                "max_dose_removed_gy": round(float(gy.max()) if gy.size else 0.0, 4),
            }
        )
    return applied
