"""Who a rendered face is: dlib's 128-d ResNet descriptor, compared by L2 distance.

Verification asks whether the defaced face could still be recognised as the original,
so it compares descriptors taken at one face box in two renders made with the same
camera: the original's and the written CT's. The box is where a detector found the
original face, or, when no detector did (low resolution, unusual heads), the box
projected from the located eye landmarks and the nose tip (the nearest skin point to
the camera below the eyes). dlib's 5-point predictor then aligns the face inside the
box as it does for any photograph.

The network (83 ms of CPU per face, holding the GIL) runs in a worker process (`start_worker`,
forked by the verification), so that it runs beside the renders and detectors on another core;
without one it runs in a thread here, with the same numbers.

The weights ship in face-recognition-models(-ng) (see :mod:`deface_ts.vision.faces`).
Raw cosine similarity of these descriptors is ~0.9 even between different people; the
L2 distance is what dlib calibrated (0.6 separates people in LFW photographs).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache

import numpy as np

from deface_ts.vision import faces
from deface_ts.vision.cameras import Render

log = logging.getLogger(__name__)

#: Which detector's box to embed when several found the face: dlib's 5-point predictor was trained on boxes of
#: dlib's own detectors, so its alignment is best inside them; MTCNN's and mediapipe's boxes sit higher/tighter.
EMBED_BOX_ORDER = ("dlib_hog", "mtcnn", "mediapipe", "haar")

#: The landmark box in units of the distance between the eyes (3-D, so that turning the head does not shrink it),
#: centred between the eyes' midpoint and the nose tip: the mean of dlib's boxes relative to the eyes over the 72
#: intact calibration views within ±30° (docs/verification_calibration.json, "landmark_fit": width 2.09 ± 0.18,
#: top 0.73 ± 0.17 eye distances above the eyes, centre offset -0.02 ± 0.10).
LANDMARK_BOX_WIDTH = 2.09
LANDMARK_BOX_TOP = 0.73


@dataclass(frozen=True)
class FaceBox:
    """A face box in one view and where it came from ("dlib_hog", "mtcnn", ... or "landmarks")."""

    box: tuple[float, float, float, float]
    source: str


def box_from_detections(found: Sequence[faces.Detection]) -> FaceBox | None:
    """The box of the preferred detector (`EMBED_BOX_ORDER`), its best-scoring one; None when nothing was found."""
    if not found:
        return None
    rank = {name: n for n, name in enumerate(EMBED_BOX_ORDER)}
    best = min(found, key=lambda d: (rank.get(d.detector, 99), -d.score))
    return FaceBox(tuple(float(v) for v in best.box), best.detector)  # type: ignore[arg-type]


def nose_tip(render: Render, eyes_lps: np.ndarray) -> np.ndarray | None:
    """The skin point nearest the camera in the band below the eyes (pixel x, y); None when the band is empty.

    The band spans the eyes' columns and 0.3 to 1.2 eye distances below them: the nose, not the brow above
    or the chin below, on every face the phantom generator makes and on the real head.
    """
    eyes = render.lps_to_pixel(eyes_lps)
    spread = float(np.linalg.norm(eyes_lps[0] - eyes_lps[1])) / render.pixel_mm
    x0, x1 = eyes[:, 0].min(), eyes[:, 0].max()
    y0, y1 = eyes[:, 1].mean() + 0.3 * spread, eyes[:, 1].mean() + 1.2 * spread
    h, w = render.depth.shape
    rows = slice(max(int(y0), 0), min(int(np.ceil(y1)), h))
    cols = slice(max(int(x0), 0), min(int(np.ceil(x1)), w))
    band = render.depth[rows, cols]
    if band.size == 0 or not np.isfinite(band).any():
        return None
    r, c = np.unravel_index(np.nanargmin(band), band.shape)
    return np.array([cols.start + c, rows.start + r], dtype=float)


def box_from_landmarks(render: Render, eyes_lps: np.ndarray) -> FaceBox | None:
    """The face box projected from two eye centres (LPS, mm) and the nose tip found below them."""
    eyes_lps = np.asarray(eyes_lps, dtype=float).reshape(-1, 3)
    if len(eyes_lps) != 2:
        return None
    nose = nose_tip(render, eyes_lps)
    if nose is None:
        return None
    eyes = render.lps_to_pixel(eyes_lps)
    spread = float(np.linalg.norm(eyes_lps[0] - eyes_lps[1])) / render.pixel_mm
    width = LANDMARK_BOX_WIDTH * spread
    centre_x = (eyes[:, 0].mean() + nose[0]) / 2.0
    top = eyes[:, 1].mean() - LANDMARK_BOX_TOP * spread
    return FaceBox((centre_x - width / 2, top, centre_x + width / 2, top + width), "landmarks")


@cache
def _predictor():
    """This module's own 5-point predictor: verification cuts chips in one thread while dlib's HOG detector
    (which runs `faces`' predictor for its landmarks) searches another view in the next."""
    import dlib

    return dlib.shape_predictor(str(_weights("shape_predictor_5_face_landmarks.dat")))


@cache
def _network():
    """dlib's ResNet, loaded where the descriptors are computed: in the worker process when one runs."""
    import dlib

    return dlib.face_recognition_model_v1(str(_weights("dlib_face_recognition_resnet_model_v1.dat")))


def _weights(name: str):
    path = faces._face_models_file(name)
    if path is None:
        raise RuntimeError("dlib's face recognition weights are missing (pip install face-recognition-models)")
    return path


def face_chip(render: Render, box: FaceBox) -> np.ndarray:
    """The 150 x 150 chip of the face inside ``box``, aligned by the 5-point predictor (~1 ms).

    dlib's own ``compute_face_descriptor(image, shape)`` cuts this chip (padding 0.25) and embeds it; the
    descriptor of the chip is the same bit for bit (tests/checks/test_identity.py), and the chip is small
    enough to hand to another process.
    """
    import dlib

    image = np.ascontiguousarray(render.image, dtype=np.uint8)
    rect = dlib.rectangle(*(round(v) for v in (box.box[0], box.box[1], box.box[2] - 1, box.box[3] - 1)))
    return dlib.get_face_chip(image, _predictor()(image, rect), size=150, padding=0.25)


def chip_descriptor(chip: np.ndarray) -> np.ndarray:
    """dlib's 128-d descriptor of an aligned chip (`face_chip`): one pass of the ResNet, ~83 ms of CPU."""
    return np.asarray(_network().compute_face_descriptor(chip), dtype=np.float64)


def descriptor(render: Render, box: FaceBox) -> np.ndarray:
    """dlib's 128-d descriptor of the face inside ``box`` on ``render``, computed here."""
    return chip_descriptor(face_chip(render, box))


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """L2 distance between two descriptors (0: the same picture; dlib: < 0.6 the same person in photographs)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def available() -> bool:
    """True when dlib and both weight files (5-point predictor, ResNet) are installed."""
    return faces.embedding_available()


# ------------------------------------------------------------------------------------------ where the network runs
#: The process that runs dlib's network (`start_worker`); None: descriptors are computed in a thread here.
_worker: ProcessPoolExecutor | None = None
_thread: ThreadPoolExecutor | None = None


def start_worker() -> bool:
    """Fork the process that computes this process's descriptors; True when one runs (idempotent).

    dlib's ResNet holds the GIL for each whole descriptor (83 ms), so in a thread it only takes turns
    with the renders and detectors it should overlap; in a process of its own it runs on another core.
    Call it early, before the caller loads VTK and the detectors: the pipeline's visual verification
    (a forked child itself, `deface_ts.checks.verify.VisualVerification`) starts it first thing. The
    network loads in the worker, beside the caller's work. No worker without ``fork`` or the weights.
    """
    global _worker
    if _worker is None and available() and "fork" in multiprocessing.get_all_start_methods():
        _worker = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"), initializer=_serve,
                                      initargs=(os.getpid(),))
        _worker.submit(int)  # the executor forks on its first task: make that now, while this process is small
    return _worker is not None


def stop_worker() -> None:
    """End the worker (a process that ends while its worker waits for work would wait for it)."""
    global _worker
    if _worker is not None:
        _worker.shutdown(wait=True, cancel_futures=True)
        _worker = None


def _serve(parent: int) -> None:
    """The worker's start: load the network, and leave when the parent is gone. A parent killed outright
    (SIGKILL, out of memory) never tells its executor's queue, and the worker would wait on it for ever."""
    _network()
    threading.Thread(target=_exit_without, args=(parent,), daemon=True, name="parent-watch").start()


def _exit_without(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def worker_pid() -> int | None:
    """The worker's process id (its CPU time is not this process's); None when none runs."""
    processes = getattr(_worker, "_processes", None) or {}
    return next(iter(processes), None)


def _describe(chips: dict[float, np.ndarray]) -> dict[float, np.ndarray]:
    return {angle: chip_descriptor(chip) for angle, chip in chips.items()}


class Descriptors:
    """The descriptors of aligned chips (`face_chip`), under way in the worker, else in a thread here.

    Both give the same numbers bit for bit; a worker that died (killed, out of memory) is not restarted
    (a fork now would copy the whole pipeline) and its chips are embedded here instead.
    """

    def __init__(self, chips: dict[float, np.ndarray]) -> None:
        self.chips = chips
        self._future = _submit(chips)

    def result(self) -> dict[float, np.ndarray]:
        global _worker
        try:
            return self._future.result()
        except BrokenProcessPool:
            log.warning("the face descriptor worker stopped; computing the descriptors in this process")
            _worker = None
            return _describe(self.chips)


def _submit(chips: dict[float, np.ndarray]) -> Future:
    global _worker, _thread
    if _worker is not None:
        try:
            return _worker.submit(_describe, chips)
        except (BrokenProcessPool, RuntimeError):  # died earlier, or shut down at interpreter exit
            _worker = None
    if _thread is None:
        _thread = ThreadPoolExecutor(1, thread_name_prefix="face-descriptor")
    return _thread.submit(_describe, chips)
