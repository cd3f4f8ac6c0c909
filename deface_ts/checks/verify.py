"""Checks of the written result: the post-check (numbers) and the visual verification (a face detector's eyes).

Both look at what was written, not at the arrays in memory, so a writer bug that
left the face in the files is caught before the output folder appears.

* :func:`post_check_volume` / :func:`post_check`: no body tissue left in the removal
  region, the landmarks inside it, nothing changed outside it, references linked.
* :func:`visual_check`: the skin of the original and of the written CT rendered at
  the configured angles (same cameras), every available face detector run on
  both. In ``enforce`` mode a valid detection on the defaced render fails the case
  and the picture of the failure is kept for the user.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from deface_ts.checks import identity
from deface_ts.checks.identity import IdentityResult
from deface_ts.config import Config, VerifyConfig
from deface_ts.errors import PrivacyError
from deface_ts.geometry.volume import Volume
from deface_ts.io.dicom.case import Case
from deface_ts.locate.base import FaceLocation, anterior_pole
from deface_ts.removal.plan import RemovalPlan
from deface_ts.vision.cameras import Render

NO_FACE_BEFORE = "no face visible before defacing"
FACE_DETECTED = "face visible after defacing"
FACE_RECOGNISABLE = "face recognisable after defacing"
NOT_JUDGED = "not verified: the identity check could not run"

#: Scores below these do not count towards a face (each detector has its own scale: mtcnn and mediapipe
#: give probabilities, dlib's HOG an SVM margin, 0 at its default threshold). Calibrated
#: (scripts/calibrate_verify.py, docs/verification.md): each floor lies just above the best score the
#: detector gave on any view of a correct defacing of 8 synthetic people x 3 scans; it still counts 93 %
#: (mtcnn), 91 % (dlib) and 31 % (mediapipe, whose scores barely separate, ROC-AUC 0.97) of intact views.
COUNT_SCORES = {"mtcnn": 0.73, "mediapipe": 0.79, "dlib_hog": 0.36, "haar": 0.0}


def post_check_volume(written: Volume, original: Volume, plan: RemovalPlan, location: FaceLocation,
                      config: Config) -> dict:
    """Checks on a written CT volume; raises PrivacyError when one fails."""
    if not written.same_grid(original):
        raise PrivacyError("post-check: the written CT is not on the input grid")
    removed = plan.removed
    leftover, changed = _leftover_and_changed(written.array, original.array, removed, config.region.body_hu)
    if leftover:
        raise PrivacyError(f"post-check: {leftover} body voxels remain in the removal region of the written CT")
    for eye in location.eyes:
        if location.method == "face":
            # A face mask must cover the front of each eye (its cornea), not necessarily the centre.
            index, what = anterior_pole(written, eye.mask), "front"
        else:
            index = tuple(np.clip(np.rint(written.lps_to_index(eye.centre_mm[None])[0]).astype(int), 0,
                                  np.array(written.shape) - 1))
            what = "centre"
        if not plan.provenance[index]:
            raise PrivacyError(f"post-check: the {what} of eye landmark '{eye.source}' (centre "
                               f"{eye.centre_mm.round(1).tolist()} mm) is not inside the removal region")
    if changed:
        raise PrivacyError(f"post-check: {changed} voxels outside the removal region differ from the input")
    return {"passed": True, "tissue_voxels_left_in_region": 0, "eyes_inside_region": len(location.eyes),
            "voxels_changed_outside_removal": 0}


def _leftover_and_changed(written: np.ndarray, original: np.ndarray, removed: np.ndarray,
                          body_hu: float) -> tuple[int, int]:
    """Body voxels left in the removal region, and voxels changed outside it.

    Compared slice by slice: whole-volume comparisons make five CT-sized temporaries (180 MB at 512x512x141)
    and gathering a mask's voxels first copies tens of millions of them.
    """
    leftover = changed = 0
    for after, before, gone in zip(written, original, removed):
        leftover += int(np.count_nonzero((after > body_hu) & gone))
        changed += int(np.count_nonzero((after != before) & ~gone))
    return leftover, changed


def post_check(written: Case, case: Case, plan: RemovalPlan, location: FaceLocation, config: Config) -> dict:
    """Check the reloaded written DICOM set: CT, references and dose."""
    folder = written.files.ct[0].path.parent
    result = post_check_volume(written.ct.hu, case.ct.hu, plan, location, config)
    if case.structures is not None and written.structures is None:
        raise PrivacyError(f"post-check: {folder}: the written RTSTRUCT does not reference the written CT")
    if case.rtplan is not None and written.rtplan is None:
        raise PrivacyError(f"post-check: {folder}: the written RTPLAN does not reference the written RTSTRUCT")
    if len(written.doses) != len(case.doses):
        raise PrivacyError(f"post-check: {folder}: {len(written.doses)} of {len(case.doses)} doses link to the set")
    if len(written.files.warnings) > len(case.files.warnings):
        raise PrivacyError(f"post-check: {folder}: written set is not fully linked: {written.files.warnings}")
    result.update(series_instance_uid=written.files.series_uid, references_resolved=True)
    return result


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
    found the original, the box projected from ``eyes_mm`` and the nose).

    Raises
    ------
    PrivacyError
        ``enforce`` mode and either rule finds the face, or neither can judge the
        case: the message says which rule decided and what to do, and
        ``failure_folder`` receives the pictures.
    BlankRenderError
        A render shows no surface: never pass blind.
    """
    detectors = verify_detectors(config)
    before_renders, after_renders, seen_before, seen_after, judged = _render_and_detect(before, after, config,
                                                                                         detectors, eyes_mm)
    visible_before = bool(_counted(seen_before, config))
    found_after = _counted(seen_after, config)
    status, decided_by = verdict(visible_before, found_after, judged)
    result = {
        "mode": config.mode,
        "status": status,
        "decided_by": decided_by,
        "backend": next(iter(before_renders.values())).backend,
        "detectors": detectors,
        "angles": [float(a) for a in config.angles],
        "count_scores": dict(COUNT_SCORES),
        "identity": judged.to_report(),
        "views": _views(seen_before, seen_after, found_after, judged),
        "detections_before": _summary(seen_before),
        "detections_after": _summary(seen_after),
    }
    if config.mode == "enforce" and decided_by != "verified":
        _refuse(result, found_after, judged, failure_folder, after_renders, seen_after)
    return result, before_renders, after_renders


def _render_and_detect(before: Volume, after: Volume, config: VerifyConfig, detectors: list[str],
                       eyes_mm: np.ndarray | None):
    """Renders, detections and the identity verdict; native work overlapped where it is safe.

    The detectors read the original's views while the written CT is rendered; the original's
    face chips then go to dlib's network, and the written CT's as soon as it is rendered, so the
    network runs beside the render and the detectors of the defaced views. It runs in the worker
    process `identity.start_worker` forked (the pipeline forks it before loading the CT): dlib
    holds the GIL for each whole descriptor, so in a thread it would only take turns with them
    (benchmarks/README.md, "identity check"). No detector or model object is used by two threads
    at once.
    """
    from deface_ts.vision import faces
    from deface_ts.vision.render import render_views

    def render(ct: Volume, **camera: Any) -> dict[float, Render]:
        return render_views(ct, backend=config.backend, threshold_hu=config.skin_hu,
                            opening_mm=config.strip_opening_mm, margin_mm=config.strip_margin_mm, **camera)

    before_renders = render(before, angles=tuple(config.angles))

    def look_at_original():
        seen = faces.faces_in_views(before_renders, detectors)
        boxes = identity.face_boxes(before_renders, seen, eyes_mm)
        return seen, boxes, identity.describe(before_renders, boxes)

    with ThreadPoolExecutor(1) as pool:
        looking = pool.submit(look_at_original)
        after_renders = render(after, frame=before_renders)
        seen_before, boxes, described_before = looking.result()
    described_after = identity.describe(after_renders, boxes)
    seen_after = faces.faces_in_views(after_renders, detectors)
    judged = identity.judge(boxes, described_before.result(), described_after.result(), config.identity_threshold,
                            eyes_mm)
    return before_renders, after_renders, seen_before, seen_after, judged


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
