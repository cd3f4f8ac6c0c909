"""Each removal region on the phantom (known anatomy), built by the planner from what a locator found.

Rules (deface_ts.removal.plan.RULES): 1 eye band, 2 forehead outside the cranial cavity, 3 lower face,
4 defaceRT's box (region upper), 5 a face mask's region. Every test runs in all four patient positions:
regions are defined in patient space.
"""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.config import load_config
from deface_ts.errors import PrivacyError
from deface_ts.geometry.masks import body_from_hu
from deface_ts.geometry.volume import ANTERIOR, SUPERIOR, Volume
from deface_ts.locate.base import FaceLocation
from deface_ts.locate.eyes import MaskEyeLocator
from deface_ts.phantom import CHIN, EYE_CENTRES, NOSE_TIP, PhantomOptions, evaluate
from deface_ts.removal.face_mask import face_region_from_mask
from deface_ts.removal.plan import plan_removal

SMALL = dict(rows=128, columns=128, pixel_spacing=2.0, slices=64, slice_thickness=3.0, noise_hu=0.0)
POSITIONS = ("HFS", "HFP", "FFS", "FFP")


@pytest.fixture(scope="module")
def heads():
    """CT, masks and body of the phantom in each position."""
    out = {}
    for position in POSITIONS:
        hu, masks, affine = evaluate(PhantomOptions(**SMALL, position=position))
        ct = Volume(hu, affine)
        out[position] = (ct, masks, body_from_hu(hu, -400.0))
    return out


def eyes_location(ct: Volume, masks) -> FaceLocation:
    return MaskEyeLocator(masks["eye_left"] | masks["eye_right"], "truth").locate(ct)


def at(ct: Volume, point: np.ndarray) -> tuple[int, ...]:
    return tuple(np.rint(ct.lps_to_index(point[None])[0]).astype(int))


@pytest.mark.parametrize("position", POSITIONS)
def test_full_region_rules_follow_the_anatomy(heads, position):
    ct, masks, body = heads[position]
    plan = plan_removal(ct, body, eyes_location(ct, masks), [], load_config())
    rule = plan.provenance
    anterior, superior = ct.axis_coordinate(ANTERIOR), ct.axis_coordinate(SUPERIOR)
    cut = plan.landmarks.cut_plane_anterior_mm
    assert cut is not None and np.all(anterior[plan.region] >= cut - 1e-3)  # one coronal cut plane
    # Eye band: the eye slices; forehead: above them; lower face: below them, down to the chin.
    eyes = masks["eye_left"] | masks["eye_right"]
    band = superior[rule == 1]
    assert band.min() <= superior[eyes].min() + 1e-3 and band.max() >= superior[eyes].max() - 3.0
    assert superior[rule == 2].min() > superior[eyes].max() - 1e-3
    assert superior[rule == 3].max() < superior[eyes].min()
    for name, point in (("eye centres", EYE_CENTRES["left"]), ("nose tip", NOSE_TIP), ("chin", CHIN)):
        assert rule[at(ct, point)] in (1, 3), name
    # Never the cranial cavity: the forehead rule stops at the skull.
    assert not (plan.removed & masks["brain"]).any()
    assert (rule == 4).sum() == 0 and (rule == 5).sum() == 0


@pytest.mark.parametrize("position", POSITIONS)
def test_upper_region_is_defacert_box(heads, position):
    ct, masks, body = heads[position]
    config = load_config(None, {"region.kind": "upper"})
    plan = plan_removal(ct, body, eyes_location(ct, masks), [], config)
    assert set(np.unique(plan.provenance)) == {0, 4}
    superior = ct.axis_coordinate(SUPERIOR)
    eyes = masks["eye_left"] | masks["eye_right"]
    lowest = superior[eyes].min() - config.eyes.margin_mm
    assert np.all(superior[plan.region] >= lowest - 3.0)  # one slice of rounding
    assert plan.provenance[at(ct, EYE_CENTRES["right"])] == 4
    assert plan.provenance[at(ct, NOSE_TIP)] == 0 and plan.provenance[at(ct, CHIN)] == 0  # nose and chin kept


@pytest.mark.parametrize("position", POSITIONS)
def test_face_mask_region_is_grown_filled_and_keeps_the_brain(heads, position):
    ct, masks, body = heads[position]
    anterior = ct.axis_coordinate(ANTERIOR)
    # A face layer: body voxels in the front 22 mm of the head (nose tip at 97 mm), up to the brow.
    face = masks["body"] & (anterior > 75.0) & (ct.axis_coordinate(SUPERIOR) < 20.0)
    location = FaceLocation("face", [], face_mask=face)
    plan = plan_removal(ct, body, location, [], load_config())
    assert set(np.unique(plan.provenance)) == {0, 5}
    expected = face_region_from_mask(ct, face, 5.0)
    assert np.array_equal(plan.region, expected & plan.region) and plan.region[at(ct, NOSE_TIP)]
    assert not (plan.removed & masks["brain"]).any()


def test_union_adds_the_face_mask_to_the_eye_region(heads):
    ct, masks, body = heads["HFS"]
    eyes = eyes_location(ct, masks)
    cheek = np.zeros(ct.shape, bool)
    cheek[at(ct, EYE_CENTRES["left"] + np.array([15.0, 25.0, -10.0]))] = True  # lateral, behind the cut plane
    location = FaceLocation("union", eyes.eyes, face_mask=cheek)
    plan = plan_removal(ct, body, location, [], load_config())
    assert (plan.provenance == 5).any() and (plan.provenance == 1).any()


def test_face_mask_missing_the_eyes_fails_method_face(heads):
    ct, masks, body = heads["HFS"]
    eyes = eyes_location(ct, masks)
    chin_only = np.zeros(ct.shape, bool)
    chin_only[at(ct, CHIN)] = True
    with pytest.raises(PrivacyError, match="does not cover the front of the"):
        plan_removal(ct, body, FaceLocation("face", eyes.eyes, face_mask=chin_only), [], load_config())


def test_protection_wins_over_every_rule(heads):
    ct, masks, body = heads["HFS"]
    ptv = masks["ptv"] if "ptv" in masks else next(m for k, m in masks.items() if k.startswith("ptv"))
    plan = plan_removal(ct, body, eyes_location(ct, masks), [("PTV", ptv)], load_config())
    assert not (plan.removed & ptv).any() and plan.kept_by["PTV"] >= 0
    assert np.array_equal(plan.removed, plan.region & ~plan.protected)
