"""The identity rule: is the defaced face at least as far from the original as two different people are?

A detector's score says whether something looks like a face, not whose face it is: a
partial defacing that keeps nose, lips and chin scores like an intact face on some
detectors and like a cut plane on others. The identity rule instead measures
recognisability, as the seed papers do: dlib's 128-d descriptors of the original and
of the written CT, each rendered with the same camera and taken at the same face box,
and their L2 distance averaged over the views.

The threshold is calibrated (scripts/calibrate_verify.py, figures in
docs/verification.md): the largest distance between scans of two *different*
synthetic people. A defaced face closer to its original than that is closer than
some pair of strangers are to each other, and fails the case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deface_ts.config import VerifyConfig
from deface_ts.vision import identity
from deface_ts.vision.cameras import Render

#: Calibrated threshold (docs/verification.md); one source: the config's default.
STRANGER_DISTANCE = VerifyConfig().identity_threshold
#: Views farther round than this are not judged. dlib's 5-point alignment and descriptor are made for
#: near-frontal faces; on the calibration set the ±45° views made a correct defacing and defaceRT's box
#: harder to tell apart (docs/verification.md), and six descriptors instead of ten keep the check's cost
#: within its budget. Profiles (±90°) say nothing of identity to this model.
MAX_ANGLE = 30.0


@dataclass
class IdentityResult:
    """Per view the face box used and the distance; the mean over the judged views and the verdict."""

    threshold: float
    views: dict[str, dict] = field(default_factory=dict)
    distance: float | None = None
    reason: str = ""  # why no view could be judged ("" when some could)

    @property
    def judged(self) -> bool:
        return self.distance is not None

    @property
    def recognisable(self) -> bool:
        return self.judged and self.distance < self.threshold  # type: ignore[operator]

    def to_report(self) -> dict:
        return {"threshold": self.threshold, "distance": None if self.distance is None else round(self.distance, 4),
                "recognisable": self.recognisable, "judged": self.judged, "views": self.views,
                **({"reason": self.reason} if self.reason else {})}


def face_boxes(before: dict[float, Render], seen_before: dict,
               eyes_mm: np.ndarray | None) -> dict[float, identity.FaceBox]:
    """Per view: the original's detection box, else the box projected from the eye landmarks and the nose.

    Empty when the recogniser is not installed: then nothing can be judged (`why_not` says so).
    """
    if not identity.available():
        return {}
    boxes = {}
    for angle, render in before.items():
        if abs(angle) > MAX_ANGLE:
            continue
        box = identity.box_from_detections(seen_before.get(angle, []))
        if box is None and eyes_mm is not None:
            box = identity.box_from_landmarks(render, eyes_mm)
        if box is not None:
            boxes[angle] = box
    return boxes


def start_worker() -> bool:
    """Fork the process for dlib's network now (see `identity.start_worker`)."""
    return identity.start_worker()


def stop_worker() -> None:
    identity.stop_worker()


def worker_running() -> bool:
    """Whether dlib's network runs in a worker process (else in a thread of this one)."""
    return identity.worker_pid() is not None


def describe(renders: dict[float, Render], boxes: dict[float, identity.FaceBox]) -> identity.Descriptors:
    """Start dlib's descriptor of each view at its box: chips cut here (~1 ms each), the network (~0.08 s
    of CPU each, holding the GIL) in the worker process when one was started, else in a thread."""
    return identity.Descriptors({angle: identity.face_chip(renders[angle], box) for angle, box in boxes.items()})


def descriptors(renders: dict[float, Render], boxes: dict[float, identity.FaceBox]) -> dict[float, np.ndarray]:
    """dlib's descriptor of each view at its box, waited for."""
    return describe(renders, boxes).result()


def why_not(eyes_mm: np.ndarray | None) -> str:
    """Why no view could be judged, in words a user can act on."""
    if not identity.available():
        return ("dlib's face recognition weights are not installed (face-recognition-models; scripts/setup.sh "
                "installs them)")
    if eyes_mm is None:
        return "no detector found a face on the original and no eye landmarks place a face box"
    return ("no detector found a face on the original and the eye landmarks give no face box (no skin below "
            "the eyes in the renders)")


def judge(boxes: dict[float, identity.FaceBox], before: dict[float, np.ndarray], after: dict[float, np.ndarray],
          threshold: float, eyes_mm: np.ndarray | None) -> IdentityResult:
    """The identity verdict from the descriptors of the original and of the written CT at the same boxes."""
    result = IdentityResult(threshold)
    if not boxes:
        result.reason = why_not(eyes_mm)
        return result
    distances = []
    for angle, box in boxes.items():
        value = identity.distance(before[angle], after[angle])
        distances.append(value)
        result.views[f"{angle:g}"] = {"box": [round(v, 1) for v in box.box], "box_from": box.source,
                                      "distance": round(value, 4)}
    result.distance = float(np.mean(distances))
    return result
