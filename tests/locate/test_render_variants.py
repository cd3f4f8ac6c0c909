"""The render locator on the phantom as real scans vary it: pitched heads, thick slices, a cut field of view.

Every patient position, eye ROIs left out; real renders (the numpy ray caster, which runs everywhere, and
VTK's offscreen renders on one position) and real detectors. The same locator with the same parameters
must find both eyes within 10 mm of the truth in every variant (issue 11). The variants are built by
`deface_ts.phantom.variants` from a phantom scanned at 1 mm slices, so thick slices are averages of thin
ones, as a scanner makes them.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from deface_ts.geometry.volume import Volume
from deface_ts.locate.render import SEARCH, RenderLocator, check_landmarks
from deface_ts.phantom import EYE_CENTRES, PhantomOptions, evaluate
from deface_ts.phantom.variants import cut_field, pitched, rotation_about, to_spacing
from deface_ts.vision.cameras import Camera
from tests.locate.test_render_locator import FACE, needs_landmark_detector
from tests.vision.scenes import needs_backend

POSITIONS = ["HFS", "HFP", "FFS", "FFP"]
VARIANTS = ["pitched +20°", "pitched -20°", "3 mm slices", "5 mm slices", "cut above the brow", "cut below the lips"]
#: The brow ridge peaks 11 mm above the eye centres, the lower lip ends ~60 mm below them (phantom.surfaces).
ABOVE_THE_BROW_MM, BELOW_THE_LIPS_MM = 16.0, -62.0


@cache
def thin_phantom(position: str) -> Volume:
    """The phantom without eye ROIs at 2 mm pixels and 1 mm slices (the base every variant is made from)."""
    hu, _, affine = evaluate(PhantomOptions(position=position, include_eyes=False, rows=128, columns=128,
                                            pixel_spacing=2.0, slices=192, slice_thickness=1.0))
    return Volume(hu, affine)


def variant(position: str, change: str) -> tuple[Volume, dict[str, np.ndarray]]:
    base = thin_phantom(position)
    if change.endswith("slices"):
        return to_spacing(base, (float(change.split()[0]), 2.0, 2.0)), EYE_CENTRES
    planning = to_spacing(base, (3.0, 2.0, 2.0))
    if change.startswith("pitched"):
        return pitched(planning, 20.0 if "+" in change else -20.0, EYE_CENTRES)
    if change == "cut above the brow":
        return cut_field(planning, above_mm=ABOVE_THE_BROW_MM), EYE_CENTRES
    return cut_field(planning, below_mm=BELOW_THE_LIPS_MM), EYE_CENTRES


@pytest.mark.parametrize("change", VARIANTS)
@pytest.mark.parametrize("position", POSITIONS)
def test_eyes_found_within_10_mm_as_scans_vary(position, change):
    needs_landmark_detector()
    ct, truth = variant(position, change)
    location = RenderLocator(backend="numpy").locate(ct)
    for eye in location.eyes:
        assert np.linalg.norm(eye.centre_mm - truth[eye.side]) < 10.0, (position, change, eye.side, location.notes)


@pytest.mark.parametrize("change", VARIANTS)
def test_vtk_renders_find_the_eyes_as_scans_vary(change):
    """The same with VTK's offscreen renders (the default backend where OpenGL works): its tilted cameras too."""
    needs_backend("vtk")
    needs_landmark_detector()
    ct, truth = variant("FFP", change)
    location = RenderLocator(backend="vtk").locate(ct)
    for eye in location.eyes:
        assert np.linalg.norm(eye.centre_mm - truth[eye.side]) < 10.0, (change, eye.side, location.notes)


def test_a_flexed_head_is_read_on_a_tilted_view():
    """Flexed 20°, the frontal view shows no upright face the checks accept; a camera tilted up from below does."""
    needs_landmark_detector()
    ct, _ = variant("HFP", "pitched +20°")
    location = RenderLocator(backend="numpy").locate(ct)
    assert "pitch +" in location.notes[0], location.notes


# ------------------------------------------------------------------------------ the pieces
def test_pitched_moves_points_with_the_head():
    ct = to_spacing(thin_phantom("HFS"), (3.0, 2.0, 2.0))
    moved_ct, moved = pitched(ct, 20.0, {"nose": np.array([0.0, -96.0, -30.0])})
    # flexion turns the nose down and back
    assert moved["nose"][2] < -30.0 - 20.0 and moved["nose"][1] > -96.0
    # the tissue went with the point: soft tissue at the moved nose, air where it was
    assert moved_ct.sample(moved["nose"][None])[0] > -300 and moved_ct.sample(np.array([[0.0, -96.0, -30.0]]))[0] < -300


def test_tilted_camera_sees_a_flexed_face_upright():
    """The camera pitched by the head's flexion has the flexed head's axes as its frame."""
    ct = to_spacing(thin_phantom("HFS"), (5.0, 2.0, 2.0))
    for degrees in (15.0, -30.0):
        camera = Camera.around(ct, 0.0, 1.0, pitch=degrees)
        rotation = rotation_about(np.array([1.0, 0.0, 0.0]), np.radians(degrees))
        assert np.allclose(-camera.down, rotation @ np.array([0.0, 0.0, 1.0]))
        assert np.allclose(-camera.ray, rotation @ np.array([0.0, -1.0, 0.0]))
        assert np.allclose(camera.right, [1.0, 0.0, 0.0])  # still the patient's left


def test_landmark_checks_follow_the_view_frame():
    """A flexed face fails the patient-axis checks and passes in the frame of the camera tilted with it."""
    rotation = rotation_about(np.array([1.0, 0.0, 0.0]), np.radians(35.0))
    flexed = {name: rotation @ point for name, point in FACE.items()}
    assert check_landmarks(flexed)  # the nose is no longer in front of the eyes along the patient's anterior
    camera = Camera.around(to_spacing(thin_phantom("HFS"), (5.0, 2.0, 2.0)), 0.0, 1.0, pitch=35.0)
    assert check_landmarks(flexed, frame=(camera.right, -camera.down, -camera.ray)) == []
    assert 35.0 - max(pitch for _, pitch in SEARCH) <= 5.0  # the search tilts the camera far enough for this head
