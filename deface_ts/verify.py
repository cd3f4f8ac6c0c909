"""Post-check from the written files: fail the case if the face region still holds body tissue.

It re-reads what was written (not the arrays in memory), so a writer bug that
left the face in the files is caught before the output folder appears.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deface_ts.config import Config
from deface_ts.dicom.case import Case, load_case
from deface_ts.errors import PrivacyError
from deface_ts.plan import RemovalPlan
from deface_ts.segment.base import FaceLocation
from deface_ts.volume import Volume


def post_check_volume(written: Volume, original: Volume, plan: RemovalPlan, location: FaceLocation,
                      config: Config) -> dict:
    """Checks on a written CT volume; raises PrivacyError when one fails."""
    if written.shape != original.shape or not np.allclose(written.affine, original.affine, atol=1e-3):
        raise PrivacyError("post-check: the written CT is not on the input grid")
    removed = plan.removed
    leftover = int((written.array[removed] > config.region.body_hu).sum())
    if leftover:
        raise PrivacyError(f"post-check: {leftover} body voxels remain in the removal region of the written CT")
    region = plan.region
    for eye in location.eyes:
        index = tuple(np.clip(np.rint(written.lps_to_index(eye.centre_mm[None])[0]).astype(int), 0,
                              np.array(written.shape) - 1))
        if not region[index]:
            raise PrivacyError(f"post-check: eye landmark '{eye.source}' at {eye.centre_mm.round(1).tolist()} mm "
                               "is not inside the removal region")
    kept = ~removed
    changed = int((written.array[kept] != original.array[kept]).sum())
    if changed:
        raise PrivacyError(f"post-check: {changed} voxels outside the removal region differ from the input")
    return {"passed": True, "tissue_voxels_left_in_region": 0, "eyes_inside_region": len(location.eyes),
            "voxels_changed_outside_removal": 0}


def post_check(folder: Path, case: Case, plan: RemovalPlan, location: FaceLocation, config: Config) -> dict:
    """Reload the written DICOM set and check CT, references and dose."""
    written = load_case(folder)
    result = post_check_volume(written.ct.hu, case.ct.hu, plan, location, config)
    new_series = written.files.series_uid
    if case.structures is not None:
        if written.structures is None:
            raise PrivacyError(f"post-check: {folder}: the written RTSTRUCT does not reference the written CT")
    if case.plan is not None and written.plan is None:
        raise PrivacyError(f"post-check: {folder}: the written RTPLAN does not reference the written RTSTRUCT")
    if len(written.doses) != len(case.doses):
        raise PrivacyError(f"post-check: {folder}: {len(written.doses)} of {len(case.doses)} doses link to the set")
    if len(written.files.warnings) > len(case.files.warnings):
        raise PrivacyError(f"post-check: {folder}: written set is not fully linked: {written.files.warnings}")
    result.update(series_instance_uid=new_series, references_resolved=True)
    return result
