"""The brain side of the removal region on skulls the phantom does not have: a craniectomy and partial-volume bone.

The phantom is read back from its DICOM files; its frontal bone is then opened (a 40 mm defect filled with
soft tissue, as after a craniectomy) or thinned to partial-volume values (150-240 HU, under the bone threshold).
The phantom's own Brain ROI is the truth: no voxel of it may be removed, and the report's figure must say so.
"""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.config import EyesConfig, load_config
from deface_ts.errors import CavityError
from deface_ts.geometry.masks import body_from_hu
from deface_ts.geometry.volume import ANTERIOR, Volume
from deface_ts.io.dicom.case import load_case
from deface_ts.locate.eyes import RoiEyeLocator
from deface_ts.removal.plan import check_brain_side, plan_removal


@pytest.fixture(scope="module")
def case(phantom_cache):
    return load_case(phantom_cache(rows=192, columns=192, pixel_spacing=1.3, slices=90, slice_thickness=2.5).folder)


def frontal_patch(ct: Volume, radius_mm: float) -> np.ndarray:
    """Voxels of the skull within ``radius_mm`` of the forehead's midline point 30 mm above the eyes."""
    centre = np.array([0.0, -73.0, 35.0])  # in the frontal bone (outer table ~76 mm in front of the skull's axis)
    index = np.argwhere(np.ones(ct.shape, dtype=bool))
    near = np.linalg.norm(ct.index_to_lps(index) - centre, axis=1) <= radius_mm
    patch = np.zeros(ct.shape, dtype=bool)
    patch[tuple(index[near].T)] = True
    return patch & (ct.array > 250)


@pytest.mark.parametrize("change", ["craniectomy", "partial-volume bone"])
def test_no_brain_removed_through_a_weak_skull(case, change):
    ct = case.ct.hu
    hu = ct.array.astype(np.float32).copy()
    patch = frontal_patch(ct, 20.0)
    assert patch.sum() > 50
    hu[patch] = 40.0 if change == "craniectomy" else np.linspace(150.0, 240.0, int(patch.sum()))
    weak = Volume(hu, ct.affine)
    brain = next(r for r in case.structures.rois if r.name == "Brain").mask.full(ct.shape)
    config = load_config()
    location = RoiEyeLocator(case.structures, EyesConfig()).locate(weak)
    plan = plan_removal(weak, body_from_hu(hu, config.region.body_hu), location, [], config)
    # The frontal lobes reach in front of the cut plane above the eyes (defaceRT's box removes them) ...
    points = ct.index_to_lps(np.argwhere(brain))
    in_front = (points @ ANTERIOR >= plan.landmarks.cut_plane_anterior_mm) & (points[:, 2] >= plan.landmarks.inferior_eye_mm)
    assert in_front.sum() > 100
    assert not plan.removed[brain].any()  # ... and none of them is removed
    assert plan.brain_side_removed_cc == 0.0


def test_a_plan_reaching_into_the_brain_is_refused(case):
    """The check after planning catches any rule: here the region is forced over the brain."""
    ct = case.ct.hu
    config = load_config()
    location = RoiEyeLocator(case.structures, EyesConfig()).locate(ct)
    plan = plan_removal(ct, body_from_hu(ct.array, config.region.body_hu), location, [], config)
    brain = next(r for r in case.structures.rois if r.name == "Brain").mask.full(ct.shape)
    plan.provenance[brain] = 3
    plan.removed = (plan.provenance > 0) & ~plan.protected
    cavity = np.zeros(ct.shape, dtype=bool)
    cavity[brain] = True
    with pytest.raises(CavityError, match="reaches .* cc into the cranial cavity"):
        check_brain_side(ct, plan, cavity)
