"""The visual verification of the written result (the numbers are checked first: `deface_ts.checks.post_check`).

:func:`visual_check`: the skin of the original and of the written CT rendered at the
configured angles (same cameras), every available face detector run on both, and the
identity check; in ``enforce`` mode a face found or recognised on the defaced render
fails the case and the pictures of the failure are kept for the user. It looks at the
written CT, not the array in memory, so a writer bug that left the face in the files
is caught before the output folder appears.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deface_ts.config import VerifyConfig
from deface_ts.errors import PrivacyError
from deface_ts.forked import Forked, fork_is_safe, shared_array
from deface_ts.geometry.masks import BoxMask
from deface_ts.geometry.volume import Volume
from deface_ts.vision.skin import patient_reach, skin_within

if TYPE_CHECKING:  # the detectors' and dlib's modules load where a verification runs: not with --verify off
    from deface_ts.checks.identity import IdentityResult
    from deface_ts.vision.cameras import Render
    from deface_ts.vision.identity import Descriptors

NO_FACE_BEFORE = "no face visible before defacing"
FACE_DETECTED = "face visible after defacing"
FACE_RECOGNISABLE = "face recognisable after defacing"
NOT_JUDGED = "not verified: the identity check could not run"

#: Where the post-check puts the written CT and whom it tells then (`VisualVerification.hand_off`); None: nowhere.
HandOff = tuple[np.ndarray, Callable[[], None]] | None

#: Scores below these do not count towards a face (each detector has its own scale: mtcnn and mediapipe
#: give probabilities, dlib's HOG an SVM margin, 0 at its default threshold). Calibrated
#: (scripts/calibrate_verify.py, docs/verification.md): each floor lies just above the best score the
#: detector gave on any view of a correct defacing of 8 synthetic people x 3 scans; it still counts 93 %
#: (mtcnn), 91 % (dlib) and 31 % (mediapipe, whose scores barely separate, ROC-AUC 0.97) of intact views.
COUNT_SCORES = {"mtcnn": 0.73, "mediapipe": 0.79, "dlib_hog": 0.36, "haar": 0.0}


def verify_detectors(config: VerifyConfig) -> list[str]:
    """The detectors verification runs; fewer than ``min_detectors`` usable is a failure (fail closed)."""
    from deface_ts.vision import faces

    available = faces.available_detectors()
    wanted: list[str] = list(config.detectors) or [d for d in faces.VERIFY_DETECTORS if d in available]
    missing = [d for d in wanted if d not in available]
    usable = [d for d in wanted if d in available]
    if missing or len(usable) < config.min_detectors:
        raise PrivacyError(
            f"verify: {len(usable)} face detector(s) usable here ({', '.join(usable) or 'none'}"
            f"{'; missing: ' + ', '.join(missing) if missing else ''}), at least {config.min_detectors} needed. "
            "Install the privacy extra (scripts/setup.sh installs it) or run with --verify off (recorded in the "
            "report). Nothing was written.")
    return usable


def visual_check(before: Volume, after: Volume, config: VerifyConfig, failure_folder: Path,
                 eyes_mm: np.ndarray | None = None) -> tuple[dict, dict, dict]:
    """Render before/after, detect faces, compare identities; return (report section, renders before, after).

    Two rules judge the written CT (docs/verification.md): the detection rule (a face
    counted on the defaced render) and the identity rule (the defaced face nearer its
    original than ``config.identity_threshold``, at the original's face box or, where no detector
    found the original, the box projected from ``eyes_mm`` and the nose). In the pipeline the
    two halves, :func:`look_at_original` and :func:`judge_written`, run apart
    (:class:`VisualVerification`).

    Raises
    ------
    PrivacyError
        ``enforce`` mode and either rule finds the face, or neither can judge the
        case: the message says which rule decided and what to do, and
        ``failure_folder`` receives the pictures.
    BlankRenderError
        A render shows no surface: never pass blind.
    """
    return judge_written(look_at_original(before, config, eyes_mm), after, config, failure_folder, eyes_mm)


@dataclass
class Original:
    """What the verification sees of the original CT: its renders, the detections, the identity boxes and
    descriptors."""

    renders: dict[float, Render]
    seen: dict
    boxes: dict
    described: Descriptors  # under way (`identity.describe`)
    reach: BoxMask  # the patient without shell and couch (`deface_ts.vision.skin.patient_reach`)
    ct: Volume  # the original CT


def look_at_original(before: Volume, config: VerifyConfig, eyes_mm: np.ndarray | None) -> Original:
    """The original rendered at the configured angles, searched by every detector, its faces embedded."""
    from deface_ts.checks import identity
    from deface_ts.vision import faces

    reach = patient_reach(before.array, before.spacing, threshold_hu=config.skin_hu,
                          opening_mm=config.strip_opening_mm, margin_mm=config.strip_margin_mm)
    renders = _render(before, config, skin=skin_within(before.array, reach, config.skin_hu),
                      angles=tuple(config.angles))
    seen = faces.faces_in_views(renders, verify_detectors(config))
    boxes = identity.face_boxes(renders, seen, eyes_mm)
    return Original(renders, seen, boxes, identity.describe(renders, boxes), reach, before)


def judge_written(original: Original, after: Volume, config: VerifyConfig, failure_folder: Path,
                  eyes_mm: np.ndarray | None) -> tuple[dict, dict, dict]:
    """The written CT rendered with the original's cameras and judged by both rules (:func:`visual_check`).

    dlib embeds the defaced faces while the detectors search the defaced views: in the worker
    process `identity.start_worker` forked where one runs (dlib's ResNet holds the GIL for each whole
    descriptor: benchmarks/README.md, "identity check"), else in a thread. No detector or model
    object is used by two threads at once.
    """
    from deface_ts.checks import identity
    from deface_ts.vision import faces

    detectors = verify_detectors(config)
    if not after.same_grid(original.ct):
        raise PrivacyError("verify: the written CT is not on the original's grid")
    # Its skin within the original's reach: all the written CT's own stripping would show (see skin_within),
    # without stripping it again (0.2-0.4 s on the 2-core machine, on the way to the verdict).
    after_renders = _render(after, config, skin=skin_within(after.array, original.reach, config.skin_hu),
                            frame=original.renders)
    described_after = identity.describe(after_renders, original.boxes)  # beside the detectors' search
    seen_after = faces.faces_in_views(after_renders, detectors)
    judged = identity.judge(original.boxes, original.described.result(), described_after.result(),
                            config.identity_threshold, eyes_mm)
    visible_before = bool(_counted(original.seen, config))
    found_after = _counted(seen_after, config)
    status, decided_by = verdict(visible_before, found_after, judged)
    result = {
        "mode": config.mode,
        "status": status,
        "decided_by": decided_by,
        "backend": next(iter(original.renders.values())).backend,
        "detectors": detectors,
        "angles": [float(a) for a in config.angles],
        "count_scores": dict(COUNT_SCORES),
        "identity": judged.to_report(),
        "identity_network": "a worker process" if identity.worker_running() else "a thread",
        "views": _views(original.seen, seen_after, found_after, judged),
        "detections_before": _summary(original.seen),
        "detections_after": _summary(seen_after),
    }
    if config.mode == "enforce" and decided_by != "verified":
        _refuse(result, found_after, judged, failure_folder, after_renders, seen_after)
    return result, original.renders, after_renders


def _render(ct: Volume, config: VerifyConfig, **camera: Any) -> dict[float, Render]:
    from deface_ts.vision.render import render_views

    return render_views(ct, backend=config.backend, threshold_hu=config.skin_hu, opening_mm=config.strip_opening_mm,
                        margin_mm=config.strip_margin_mm, **camera)


class VisualVerification:
    """The visual verification, begun as soon as the face is located; used as a context manager.

    A forked child renders the original and looks at it (:func:`look_at_original`) while this
    process plans, writes and post-checks the removal; the written CT reaches it through shared
    memory, from the post-check's child as soon as it has read the written slices (:meth:`hand_off`)
    or from :meth:`judge`, which waits for its verdict (:func:`judge_written`), pictures of a failure
    included. The original's half then costs no wall time where a second core is free. Where this
    process has already run a detector, VTK or torch (a render locator, TotalSegmentator), whose
    threads and contexts a fork would copy half made, or runs other threads, both halves run here
    in :meth:`judge`.
    """

    def __init__(self, before: Volume, config: VerifyConfig, failure_folder: Path, eyes_mm: np.ndarray | None):
        self.before, self.config, self.failure_folder, self.eyes_mm = before, config, failure_folder, eyes_mm
        self._job: Forked[tuple[dict, dict, dict]] | None = None
        if config.mode == "off" or not fork_is_safe():
            return
        self._written = shared_array(before.shape, before.array.dtype)
        self._ready, self._tell = os.pipe()
        self._handed_off = False
        self._job = Forked(self._judge_in_child)

    def hand_off(self) -> HandOff:
        """Where a process forked after this call may put the written CT, and what it calls once it is there:
        the child then judges it at once, while this process writes the rest, not when :meth:`judge` is reached
        (which then only waits). None where the verification does not run beside the pipeline."""
        if self._job is None:
            return None
        self._handed_off = True
        return self._written, self._tell_ready

    def _tell_ready(self) -> None:
        os.write(self._tell, b"!")

    def judge(self, after: Volume) -> tuple[dict, tuple[dict, dict] | None]:
        """(the report's verify section, (renders before, after) or None when verification is off)."""
        if self.config.mode == "off":
            return {"mode": "off", "status": "not verified (verify off)"}, None
        if self._job is None:
            result, before, after_renders = visual_check(self.before, after, self.config, self.failure_folder,
                                                         self.eyes_mm)
            result["ran"] = "in the pipeline"
        else:
            if after.array.dtype != self._written.dtype or not after.same_grid(self.before):
                raise PrivacyError("verify: the written CT is not on the input grid")
            if not self._handed_off:
                self._written[...] = after.array
                self._tell_ready()
            elif not np.shares_memory(after.array, self._written):
                raise PrivacyError("verify: the written CT was handed off, but another array is judged")
            result, before, after_renders = self._job.result()
            result["ran"] = ("beside the pipeline (forked when the face was located; the written CT "
                             f"{'from the post-check as it read it' if self._handed_off else 'given when verified'})")
        return result, (before, after_renders)

    def _judge_in_child(self) -> tuple[dict, dict, dict]:
        from deface_ts.checks import identity

        os.close(self._tell)  # so that a read sees the end of the pipe when the pipeline is gone
        # dlib's network gets a process of its own, forked before this one loads VTK and the detectors: it
        # embeds the defaced faces while this one searches the defaced views.
        identity.start_worker()
        try:
            original = look_at_original(self.before, self.config, self.eyes_mm)
            if os.read(self._ready, 1) != b"!":
                raise RuntimeError("the pipeline ended before the written CT was ready")
            return judge_written(original, self.before.with_array(self._written), self.config, self.failure_folder,
                                 self.eyes_mm)
        finally:
            identity.stop_worker()

    def __enter__(self) -> VisualVerification:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._job is not None:
            self._job.stop()
            os.close(self._ready)
            os.close(self._tell)
            self._job = None


def verdict(visible_before: bool, found_after: list, judged: IdentityResult) -> tuple[str, str]:
    """(status, the rule that decided): ``detection``, ``identity``, ``unjudged`` or ``verified``."""
    if found_after:
        return FACE_DETECTED, "detection"
    if judged.recognisable:
        return FACE_RECOGNISABLE, "identity"
    if not judged.judged:
        return f"{NOT_JUDGED}: {judged.reason}", "unjudged"
    sources = sorted({view["box_from"] for view in judged.views.values()})
    seen = ("no face detected after defacing" if visible_before else
            f"{NO_FACE_BEFORE} to the detection rule, identity judged at {'/'.join(sources)} boxes")
    return (f"verified: {seen}; identity distance {judged.distance:.2f} ≥ {judged.threshold:.2f} "
            "(as far from the original as different people)"), "verified"


def _refuse(result: dict, found_after: list, judged: IdentityResult, folder: Path, renders: dict, seen: dict) -> None:
    """Raise the PrivacyError that says which rule decided, after saving the pictures of the failure."""
    pictures = _failure_pictures(folder, renders, seen, result)
    where = f"pictures of the failure: {', '.join(str(p) for p in pictures)}"
    if result["decided_by"] == "detection":
        what = "; ".join(f"{d.detector} at {angle:g}° (score {d.score:.2f})" for angle, d in found_after)
        raise PrivacyError(f"verify: a face is still visible after defacing: {what}. Nothing was written; {where}")
    if result["decided_by"] == "identity":
        raise PrivacyError(
            f"verify: the face is still recognisable after defacing (detection rule passed, identity rule failed): "
            f"identity distance {judged.distance:.2f} < {judged.threshold:.2f}, the distance between different "
            f"people. Nothing was written; {where}")
    raise PrivacyError(
        f"verify: the case cannot be judged: {judged.reason}. Nothing was written. If the input really shows no "
        "face (e.g. the scan stops above the eyes), run with --verify report to accept it knowingly; the report "
        "records that it was not verified.")


def _summary(seen: dict) -> dict:
    return {f"{angle:g}": [{"detector": d.detector, "score": round(float(d.score), 3),
                            "box": [round(float(v), 1) for v in d.box]} for d in found]
            for angle, found in seen.items()}


def _views(seen_before: dict, seen_after: dict, found_after: list, judged: IdentityResult) -> dict:
    """Per view: the detections before and after, whether one counted, the identity distance and threshold."""
    before, after = _summary(seen_before), _summary(seen_after)
    counted = {f"{angle:g}" for angle, _ in found_after}
    return {key: {"detections_before": before[key], "detections_after": after[key], "face_counted": key in counted,
                  "identity_distance": judged.views.get(key, {}).get("distance"),
                  "identity_box_from": judged.views.get(key, {}).get("box_from"),
                  "identity_threshold": judged.threshold}
            for key in before}


def _counted(seen: dict, config: VerifyConfig) -> list[tuple[float, object]]:
    """(angle, detection) pairs that count as a face.

    A face counts when ``agreement`` detectors find it at one place in a view, when
    one detection is at least ``single_score`` confident, or when one detector finds
    it in ``consistent_views`` views; only detections at or above `COUNT_SCORES` count.
    A single detector fires now and then on a cut surface (mediapipe up to 0.79 and
    dlib's HOG up to 0.35 on correct defacings in the calibration), and on defaceRT's
    box (region ``upper``) the detectors agree in only 7 of 24 calibration scans:
    detection alone does not judge partial defacings, the identity rule does. The
    view-count rule is off by default. Every valid detection is listed in the report.
    """
    from deface_ts.vision import faces

    counted: list[tuple[float, object]] = []
    views_by_detector: dict[str, set[float]] = {}
    kept = {}
    for angle, found in seen.items():
        found = [d for d in found if d.score >= COUNT_SCORES.get(d.detector, 0.0)]
        kept[angle] = found
        for d in found:
            views_by_detector.setdefault(d.detector, set()).add(angle)
        groups = faces.agreeing(found, min_detectors=config.agreement) if config.agreement > 1 else [[d] for d in found]
        counted += [(angle, d) for group in groups for d in group]
    consistent = {name for name, views in views_by_detector.items()
                  if config.consistent_views and len(views) >= config.consistent_views}
    for angle, found in kept.items():
        counted += [(angle, d) for d in found if (d.score >= config.single_score or d.detector in consistent)
                    and (angle, d) not in counted]
    return counted


def _failure_pictures(folder: Path, renders: dict, seen: dict, result: dict) -> list[Path]:
    """The failing views, detections boxed in red and the identity box in blue with its distance; the
    verification result as JSON."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    judged = result["identity"]["views"]
    written = []
    for angle, found in seen.items():
        key = f"{angle:g}"
        if not found and key not in judged:
            continue
        image = Image.fromarray(renders[angle].image)
        draw = ImageDraw.Draw(image)
        for d in found:
            draw.rectangle([float(v) for v in d.box], outline=(255, 0, 0), width=2)
            draw.text((d.box[0] + 2, d.box[1] + 2), f"{d.detector} {d.score:.2f}", fill=(255, 0, 0))
        if key in judged:
            box = judged[key]["box"]
            draw.rectangle(box, outline=(0, 0, 255), width=1)
            draw.text((box[0] + 2, box[3] - 12), f"identity {judged[key]['distance']:.2f}", fill=(0, 0, 255))
        path = folder / f"verify_failed_{angle:+04.0f}deg.png"
        image.save(path)
        written.append(path)
    (folder / "verify.json").write_text(json.dumps(result, indent=2))
    return written
