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

import numpy as np

from deface_ts.config import Config, VerifyConfig
from deface_ts.io.dicom.case import Case
from deface_ts.errors import PrivacyError
from deface_ts.removal.plan import RemovalPlan
from deface_ts.locate.base import FaceLocation, anterior_pole
from deface_ts.geometry.volume import Volume

NO_FACE_BEFORE = "no face visible before defacing"

#: Scores below these do not count towards a face (each detector has its own scale: mtcnn and mediapipe
#: give probabilities, dlib's HOG an SVM margin, 0 at its default threshold). On the intact phantom the
#: lowest scores seen are mtcnn 0.98, mediapipe 0.53 and dlib 0.50; on defaced renders dlib fires at
#: 0.02-0.11 on cut surfaces. The floors are well under the faces and above that noise.
COUNT_SCORES = {"mtcnn": 0.90, "mediapipe": 0.50, "dlib_hog": 0.25, "haar": 0.0}


def post_check_volume(written: Volume, original: Volume, plan: RemovalPlan, location: FaceLocation,
                      config: Config) -> dict:
    """Checks on a written CT volume; raises PrivacyError when one fails."""
    if written.shape != original.shape or not np.allclose(written.affine, original.affine, atol=1e-3):
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
        if not plan.rule[index]:
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
    if case.plan is not None and written.plan is None:
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
    wanted = list(config.detectors) or [d for d in faces.VERIFY_DETECTORS if d in available]
    missing = [d for d in wanted if d not in available]
    usable = [d for d in wanted if d in available]
    if missing or len(usable) < config.min_detectors:
        raise PrivacyError(
            f"verify: {len(usable)} face detector(s) usable here ({', '.join(usable) or 'none'}"
            f"{'; missing: ' + ', '.join(missing) if missing else ''}), at least {config.min_detectors} needed. "
            "Install the privacy extra (scripts/setup.sh installs it) or run with --verify off (recorded in the "
            "report). Nothing was written.")
    return usable


def visual_check(before: Volume, after: Volume, config: VerifyConfig, failure_folder: Path) -> tuple[dict, dict, dict]:
    """Render before/after, detect faces; return (report section, renders before, renders after).

    Raises
    ------
    PrivacyError
        ``enforce`` mode and a valid detection on the defaced render: the message
        names the view and detector, and ``failure_folder`` receives the pictures.
    BlankRenderError
        A render shows no surface: never pass blind.
    """
    from deface_ts.vision import faces
    from deface_ts.vision.render import render_views

    detectors = verify_detectors(config)
    options = dict(backend=config.backend, threshold_hu=config.skin_hu, opening_mm=config.strip_opening_mm,
                   margin_mm=config.strip_margin_mm)
    before_renders = render_views(before, tuple(config.angles), **options)
    # The detectors read the original's views while the written CT is rendered (their native code and VTK's
    # run side by side); the defaced views are searched only after, so no detector is used by two threads.
    with ThreadPoolExecutor(1) as pool:
        looking = pool.submit(faces.faces_in_views, before_renders, detectors)
        after_renders = render_views(after, frame=before_renders, **options)
        seen_before = looking.result()
    seen_after = faces.faces_in_views(after_renders, detectors)

    def summary(seen: dict) -> dict:
        return {f"{angle:g}": [{"detector": d.detector, "score": round(float(d.score), 3),
                                "box": [round(float(v), 1) for v in d.box]} for d in found]
                for angle, found in seen.items()}

    visible_before = bool(_counted(seen_before, config))
    found_after = _counted(seen_after, config)
    status = ("face visible after defacing" if found_after
              else "verified: no face found after defacing" if visible_before else NO_FACE_BEFORE)
    result = {
        "mode": config.mode,
        "status": status,
        "backend": next(iter(before_renders.values())).backend,
        "detectors": detectors,
        "angles": [float(a) for a in config.angles],
        "detections_before": summary(seen_before),
        "detections_after": summary(seen_after),
    }
    if found_after and config.mode == "enforce":
        pictures = _failure_pictures(failure_folder, after_renders, seen_after, result)
        where = "; ".join(f"{d.detector} at {angle:g}° (score {d.score:.2f})" for angle, d in found_after)
        raise PrivacyError(f"verify: a face is still visible after defacing: {where}. Nothing was written; "
                           f"pictures of the failure: {', '.join(str(p) for p in pictures)}")
    return result, before_renders, after_renders


def _counted(seen: dict, config: VerifyConfig) -> list[tuple[float, object]]:
    """(angle, detection) pairs that count as a face.

    A face counts when ``agreement`` detectors find it at one place in a view, when
    one detection is at least ``single_score`` confident, or when one detector finds
    it in ``consistent_views`` views. A single detector now and then fires on a cut
    surface: on the defaced phantom with a protected PTV bulging through the cut,
    mediapipe at 0.63 in two views and dlib's HOG at 0.02-0.11, while on the intact
    face mtcnn (≥ 0.98), mediapipe (0.53-0.77) and dlib (0.50-1.23) all fire on the
    same box in every view from -45° to +45°. On defaceRT's box (region ``upper``),
    which leaves nose, lips and chin, mediapipe alone finds a face in all five views,
    mtcnn in none: mediapipe's scores do not separate the two, so the view-count rule
    is off by default. Every valid detection is listed in the report either way.
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
    """The failing views with the detections boxed, and the verification result as JSON."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for angle, found in seen.items():
        if not found:
            continue
        image = Image.fromarray(renders[angle].image)
        draw = ImageDraw.Draw(image)
        for d in found:
            draw.rectangle([float(v) for v in d.box], outline=(255, 0, 0), width=2)
            draw.text((d.box[0] + 2, d.box[1] + 2), f"{d.detector} {d.score:.2f}", fill=(255, 0, 0))
        path = folder / f"verify_failed_{angle:+04.0f}deg.png"
        image.save(path)
        written.append(path)
    (folder / "verify.json").write_text(json.dumps(result, indent=2))
    return written
