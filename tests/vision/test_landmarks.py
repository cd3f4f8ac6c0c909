"""Dense landmarks (dlib's 68 points, mediapipe's face mesh) on a real render of the phantom's face.

The phantom's eye centres are known in patient space, so their pixels on the frontal render are the truth the
landmarks are held to. Skips only where dlib's 68-point weights or mediapipe are not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.phantom import EYE_CENTRES
from deface_ts.vision import faces, landmarks
from deface_ts.vision.render import render_views

#: A globe's radius (mm): a landmark farther than this from the eye's centre line is not on that eye.
GLOBE_MM = 12.0


@pytest.fixture(scope="module")
def frontal(face_ct):
    return render_views(face_ct, (0.0,), backend="numpy")[0.0]


def eye_error_mm(view, detection) -> float:
    truth = view.lps_to_pixel(np.array([EYE_CENTRES["left"], EYE_CENTRES["right"]]))
    found = np.array([detection.landmarks["eye_left"], detection.landmarks["eye_right"]])
    return float(np.linalg.norm(found - truth, axis=1).max()) * view.pixel_mm


@pytest.mark.parametrize("detector", ["dlib_hog", "mediapipe"])
def test_dense_landmarks_place_the_eyes_nose_tip_and_mouth(frontal, detector):
    if detector not in faces.available_detectors():
        pytest.skip(f"{detector} not installed")
    if detector == "dlib_hog" and not landmarks.dlib68_available():
        pytest.skip("dlib's 68-point weights (face-recognition-models) not installed")
    raw = faces.detect(frontal.image, [detector])
    assert raw, f"{detector} found no face on the phantom"
    refined = landmarks.refine(frontal.image, raw)
    assert [d.box for d in refined] == [d.box for d in raw]  # the boxes stay the detector's
    dense = refined[0]
    assert dense.landmarks != raw[0].landmarks, "no dense model applied"
    assert eye_error_mm(frontal, dense) < GLOBE_MM
    marks = dense.landmarks
    left, right = np.array(marks["eye_left"]), np.array(marks["eye_right"])
    assert left[0] > right[0]  # the patient's left eye on the image's right: the camera faces the patient
    assert abs(left[1] - right[1]) < 0.1 * (left[0] - right[0])  # level, as the phantom's eyes are
    eyes_row = (left[1] + right[1]) / 2.0
    assert eyes_row < marks["nose"][1] < marks["mouth"][1]  # eyes, nose tip, mouth from the top down


def test_refine_leaves_mtcnn_keypoints_alone(frontal):
    if "mtcnn" not in faces.available_detectors():
        pytest.skip("mtcnn not installed")
    raw = faces.detect(frontal.image, ["mtcnn"])
    assert raw and landmarks.refine(frontal.image, raw)[0].landmarks == raw[0].landmarks
