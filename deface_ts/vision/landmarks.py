"""Dense face landmarks for the render locator: dlib's 68-point predictor and mediapipe's face mesh.

The detectors' own keypoints are few and coarse (dlib's 5-point predictor gives eye corners and the
nose's base, BlazeFace six points a few pixels apart on a 100-pixel face). The dense models place the
eyes from their whole contour, the nose at its tip (what stands furthest in front of the eyes) and the
mouth at its centre. Both ship in their wheels: dlib's ``shape_predictor_68_face_landmarks.dat`` in
face-recognition-models(-ng), the face mesh's TFLite model inside mediapipe 0.10.21. Nothing is
downloaded; where a model is missing the detector's keypoints are kept.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import cache

import numpy as np

from deface_ts.vision import faces
from deface_ts.vision.faces import Detection
from deface_ts.vision.native_stderr import drop_native_noise

log = logging.getLogger(__name__)

# dlib's 68-point layout (iBUG 300-W): the two eyes' six contour points each, the nose tip, the 20 mouth points.
DLIB_EYES = (range(36, 42), range(42, 48))
DLIB_NOSE_TIP = 30
DLIB_MOUTH = range(48, 68)
# mediapipe's canonical face mesh: each eye's 16-point contour, the nose tip, the lips' inner midpoints.
MESH_EYES = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
             (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466))
MESH_NOSE_TIP = 1
MESH_MOUTH = (13, 14)


def refine(image_rgb: np.ndarray, detections: list[Detection]) -> list[Detection]:
    """Each detection with its landmarks from a dense model where one applies, else as the detector gave them.

    dlib's HOG boxes get the 68-point predictor (the model it was trained with); mediapipe's boxes get
    the face mesh found inside them. MTCNN keeps its own five points: they come from its last net, which
    already regresses them on the face. A detection keeps its detector's name, box and score, so
    agreement between detectors stays agreement between independent boxes.
    """
    image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    meshes = _mesh_faces(image) if any(d.detector == "mediapipe" for d in detections) else []
    out = []
    for found in detections:
        marks: dict[str, tuple[float, float]] | None = None
        if found.detector == "dlib_hog":
            marks = _dlib68(image, found.box)
        elif found.detector == "mediapipe":
            marks = next((m for m in meshes if _inside(m["nose"], found.box)), None)
        out.append(replace(found, landmarks=marks) if marks else found)
    return out


def _inside(xy: tuple[float, float], box: tuple[float, float, float, float]) -> bool:
    return box[0] <= xy[0] <= box[2] and box[1] <= xy[1] <= box[3]


def _named(points: np.ndarray, eyes, nose: int, mouth) -> dict[str, tuple[float, float]]:
    """Eye and mouth centres and the nose tip, named by the patient's side (`faces._anatomical`)."""
    eye_a, eye_b = (points[list(ring)].mean(axis=0) for ring in eyes)
    marks = faces._anatomical(eye_a, eye_b, points[nose], None)
    centre = points[list(mouth)].mean(axis=0)
    marks["mouth"] = (float(centre[0]), float(centre[1]))
    return marks


# ------------------------------------------------------------------------------------------ dlib
@cache
def _predictor68():
    path = faces._face_models_file("shape_predictor_68_face_landmarks.dat")
    if path is None:
        return None
    import dlib

    return dlib.shape_predictor(str(path))


def dlib68_available() -> bool:
    return faces._module_present("dlib") and _predictor68() is not None


def _dlib68(image: np.ndarray, box: tuple[float, float, float, float]) -> dict[str, tuple[float, float]] | None:
    if not dlib68_available():
        return None
    import dlib

    shape = _predictor68()(image, dlib.rectangle(*(round(v) for v in (box[0], box[1], box[2] - 1, box[3] - 1))))
    points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)
    return _named(points, DLIB_EYES, DLIB_NOSE_TIP, DLIB_MOUTH)


# ------------------------------------------------------------------------------------------ mediapipe
@cache
def _face_mesh():
    FaceMesh = faces.import_mediapipe("face_mesh").FaceMesh

    with drop_native_noise():
        mesh = FaceMesh(static_image_mode=True, max_num_faces=2, refine_landmarks=False,
                        min_detection_confidence=0.5)
        mesh.process(np.zeros((64, 64, 3), np.uint8))  # TensorFlow Lite logs its start-up on the first frame
    return mesh


def _mesh_faces(image: np.ndarray) -> list[dict[str, tuple[float, float]]]:
    """Eye and mouth centres and nose tip of every face the mesh finds (pixels); [] without mediapipe."""
    if not faces._module_present("mediapipe"):
        return []
    try:
        with drop_native_noise():  # the mesh's graph warns about non-square images on its first one
            result = _face_mesh().process(image)
    except Exception as exc:  # an unusable wheel: keep BlazeFace's own keypoints
        log.warning("mediapipe's face mesh failed (%s); using the detector's keypoints", exc)
        return []
    h, w = image.shape[:2]
    found = []
    for face in result.multi_face_landmarks or []:
        points = np.array([(p.x * w, p.y * h) for p in face.landmark], dtype=np.float64)
        found.append(_named(points, MESH_EYES, MESH_NOSE_TIP, MESH_MOUTH))
    return found
