#!/usr/bin/env python
"""Calibrate verification on distinct synthetic people: the identity threshold and the detection rule.

Each synthetic person is the phantom with other face proportions (`FaceShape`); each is
scanned several times (noise seed, slice thickness, matrix, position in the field). For
every scan the skin is rendered at verification's angles, faces are detected and dlib's
descriptor is taken per view, as `deface_ts.checks.verify` does. Written out:

* same-person distances (two scans of one person) and different-person distances (scans of
  two people), each the mean over the views both have a face box in;
* the distance of each defaced scan from its own original at the original's face box, for
  the correct defacing and for partial ones (`region: upper`, the cut plane moved 10, 20
  and 30 mm forward);
* the best valid score per detector and view on intact, correctly defaced and partly
  defaced renders: the detection rule's ROC;
* the threshold by the rule documented in docs/verification.md.

    PYTHONPATH=. .venv/bin/python scripts/calibrate_verify.py --out docs/verification_calibration.json

About 10 minutes on 2 cores with the defaults. ``--real-head FOLDER`` adds an unpacked
InVesalius ``Cranium.inv3`` (Debian invesalius-examples) as one more, real, person.
"""

from __future__ import annotations

import argparse
import itertools
import json
import plistlib
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deface_ts.checks.identity import MAX_ANGLE
from deface_ts.config import load_config
from deface_ts.geometry.volume import Volume, affine_from_dicom
from deface_ts.phantom import FaceShape, evaluate
from deface_ts.phantom.people import ACQUISITIONS, people, scan_options
from deface_ts.removal.apply import deface_volume
from deface_ts.vision import faces, identity
from deface_ts.vision.render import render_views

#: The correct defacing and the partial ones that keep nose, lips or chin (they must fail).
DEFACINGS = {
    "full": {},
    "upper": {"region.kind": "upper"},
    "forward_10mm": {"region.plane_offset_mm": -10.0},
    "forward_20mm": {"region.plane_offset_mm": -20.0},
    "forward_30mm": {"region.plane_offset_mm": -30.0},
}


def scan(shape: FaceShape, acquisition: str) -> tuple[Volume, np.ndarray, np.ndarray]:
    """CT, eye mask and PTV mask of one person in one acquisition."""
    hu, masks, affine = evaluate(scan_options(shape, acquisition))
    return Volume(hu, affine), masks["eye_left"] | masks["eye_right"], masks["ptv_face"]


def deface(ct: Volume, eyes: np.ndarray, ptv: np.ndarray, overrides: dict) -> tuple[Volume, np.ndarray]:
    """The defaced CT and the eye centres (mm) the plan used."""
    after, _, location = deface_volume(ct, eyes, [("PTV", ptv)], load_config(None, overrides))
    return after, np.array([e.centre_mm for e in location.eyes])


def look(renders: dict, detectors: list[str]) -> tuple[dict, dict]:
    """Best valid score per view and detector, and the valid detections themselves."""
    seen = faces.faces_in_views(renders, detectors)
    best = {f"{a:g}": {d: max((x.score for x in found if x.detector == d), default=None) for d in detectors}
            for a, found in seen.items()}
    return best, seen


def original_record(ct: Volume, eyes_mm: np.ndarray, detectors: list[str], angles: tuple) -> dict:
    renders = render_views(ct, angles)
    best, seen = look(renders, detectors)
    boxes, descriptors = {}, {}
    for angle, render in renders.items():
        box = identity.box_from_detections(seen[angle]) or identity.box_from_landmarks(render, eyes_mm)
        boxes[angle] = box
        descriptors[angle] = identity.descriptor(render, box)
    fit = {f"{a:g}": _landmark_fit(renders[a], eyes_mm, seen[a]) for a in angles}
    return {"renders": renders, "best": best, "boxes": boxes, "descriptors": descriptors, "landmark_fit": fit}


def _landmark_fit(render, eyes_mm: np.ndarray, found) -> dict | None:
    """dlib's box in units of the 3-D eye distance, relative to the eyes: what `LANDMARK_BOX_*` are taken from."""
    dlib = [d for d in found if d.detector == "dlib_hog"]
    nose = identity.nose_tip(render, eyes_mm)
    if not dlib or nose is None:
        return None
    spread = float(np.linalg.norm(eyes_mm[0] - eyes_mm[1])) / render.pixel_mm
    eyes = render.lps_to_pixel(eyes_mm)
    x0, y0, x1, _ = max(dlib, key=lambda d: d.score).box
    return {"width": (x1 - x0) / spread, "top": (eyes[:, 1].mean() - y0) / spread,
            "centre_offset": ((x0 + x1) / 2 - (eyes[:, 0].mean() + nose[0]) / 2) / spread}


def view_distances(a: dict, b: dict) -> dict[str, float]:
    """Per view both have a descriptor for: the L2 distance."""
    return {f"{k:g}": identity.distance(a[k], b[k]) for k in sorted(set(a) & set(b))}


def mean_distance(a: dict, b: dict) -> float:
    return float(np.mean(list(view_distances(a, b).values())))


def real_head(folder: Path) -> Volume:
    """The InVesalius example head (raw int16 slices, spacing in main.plist).

    Its rows run posterior to anterior and its columns from the patient's left: HFP's orientation
    puts the face at the front and keeps the slices running superior.
    """
    main = plistlib.loads((folder / "main.plist").read_bytes())
    shape = tuple(main["matrix"]["shape"])
    hu = np.fromfile(folder / main["matrix"]["filename"], dtype=np.int16).reshape(shape).astype(np.float32)
    sx, sy, sz = main["spacing"]
    return Volume(hu, affine_from_dicom(np.zeros(3), np.array([-1.0, 0, 0, 0, -1.0, 0]), (sz, sy, sx)))


def calibrate(count: int, angles: tuple, detectors: list[str], real: Path | None, seed: int = 14) -> dict:
    shapes = people(count, seed)
    originals: dict[tuple[int, str], dict] = {}
    defaced: list[dict] = []
    timing = []
    for p, shape in enumerate(shapes):
        for acquisition in ACQUISITIONS:
            ct, eyes, ptv = scan(shape, acquisition)
            _, eyes_mm = deface(ct, eyes, ptv, {})
            record = originals[(p, acquisition)] = original_record(ct, eyes_mm, detectors, angles)
            for name, overrides in DEFACINGS.items():
                after, _ = deface(ct, eyes, ptv, overrides)
                renders = render_views(after, frame=record["renders"])
                best, _ = look(renders, detectors)
                start = time.perf_counter()
                per_view = {f"{a:g}": identity.distance(record["descriptors"][a],
                                                        identity.descriptor(renders[a], record["boxes"][a]))
                            for a in angles}
                timing.append(time.perf_counter() - start)
                defaced.append({"person": p, "acquisition": acquisition, "defacing": name,
                                "distance": float(np.mean(list(per_view.values()))), "per_view": per_view,
                                "best": best, "box_sources": sorted({b.source for b in record["boxes"].values()})})
            record.pop("renders")
            print(f"person {p} {acquisition}: done", file=sys.stderr, flush=True)
    same, different = [], []
    for (a, b) in itertools.combinations(sorted(originals), 2):
        per_view = view_distances(originals[a]["descriptors"], originals[b]["descriptors"])
        (same if a[0] == b[0] else different).append({"a": list(a), "b": list(b), "per_view": per_view,
                                                      "distance": float(np.mean(list(per_view.values())))})
    result = {
        "angles": list(angles), "detectors": detectors, "acquisitions": ACQUISITIONS,
        "seed": seed, "people": [asdict(s) for s in shapes], "same_person": same, "different_person": different,
        "defaced": defaced,
        "intact": [{"person": k[0], "acquisition": k[1], "best": v["best"], "landmark_fit": v["landmark_fit"]}
                   for k, v in originals.items()],
        "defaced_embedding_s_per_case": float(np.median(timing)),
    }
    if real is not None:
        result["real_head"] = real_head_distances(real_head(real), originals, detectors, angles)
    return result


def real_head_distances(ct: Volume, originals: dict, detectors: list[str], angles: tuple) -> dict:
    """The real head as one more person: its distances to every synthetic scan, what the detectors see on it,
    and its own correct and partial defacings (eyes located by the render locator: it has no eye ROIs)."""
    from deface_ts.locate.render import RenderLocator

    location = RenderLocator().locate(ct)
    eyes = location.eye_mask()
    eyes_mm = np.array([e.centre_mm for e in location.eyes])
    renders = render_views(ct, angles)
    best, seen = look(renders, detectors)
    boxes = {a: identity.box_from_detections(seen[a]) or identity.box_from_landmarks(renders[a], eyes_mm)
             for a in angles}
    descriptors = {a: identity.descriptor(renders[a], b) for a, b in boxes.items() if b is not None}
    defaced = {}
    for name in ("full", "upper"):
        after, _ = deface(ct, eyes, np.zeros(ct.shape, dtype=bool), DEFACINGS[name])
        views = render_views(after, frame=renders)
        per_view = {f"{a:g}": identity.distance(descriptors[a], identity.descriptor(views[a], boxes[a]))
                    for a in descriptors}
        defaced[name] = {"distance": float(np.mean(list(per_view.values()))), "per_view": per_view,
                         "best": look(views, detectors)[0]}
    return {"best": best, "box_sources": {f"{a:g}": b.source for a, b in boxes.items() if b is not None},
            "distances_to_synthetic": [view_distances(descriptors, o["descriptors"]) for o in originals.values()],
            "defaced": defaced}


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "min": round(float(v.min()), 3), "p5": round(float(np.percentile(v, 5)), 3),
            "median": round(float(np.median(v)), 3), "p95": round(float(np.percentile(v, 95)), 3),
            "max": round(float(v.max()), 3)} if v.size else {"n": 0}


def _scores(records: list[dict], detector: str) -> list[float]:
    """The detector's best valid score in every view of these renders; -inf where it found nothing valid."""
    return [s if s is not None else -np.inf for r in records for s in (v[detector] for v in r["best"].values())]


def detection_floors(raw: dict) -> dict:
    """Per detector: ROC of intact vs correctly defaced views, and the floor above every correct defacing."""
    intact = raw["intact"]
    correct = [d for d in raw["defaced"] if d["defacing"] == "full"]
    out = {}
    for detector in raw["detectors"]:
        positives, negatives = _scores(intact, detector), _scores(correct, detector)
        finite = [s for s in negatives if np.isfinite(s)]
        # The floor: just above the best score this detector gave on any correctly defaced view.
        floor = float(np.ceil((max(finite) + 1e-9) * 100) / 100) if finite else None
        counted = [s for s in positives if floor is None or s >= floor]
        thresholds = sorted({s for s in positives + negatives if np.isfinite(s)})
        roc = [(round(float(np.mean(np.array(negatives) >= t)), 3), round(float(np.mean(np.array(positives) >= t)), 3),
                round(t, 3)) for t in thresholds]
        out[detector] = {"floor": floor, "intact_views_counted": round(len(counted) / len(positives), 3),
                         "auc": round(_auc(positives, negatives), 3),
                         "roc_fpr_tpr_threshold": roc, "intact_scores": _stats([s for s in positives if np.isfinite(s)]),
                         "defaced_scores": _stats(finite)}
    return out


def _auc(positives: list[float], negatives: list[float]) -> float:
    p, n = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


def detection_counts(best: dict, floors: dict) -> list[str]:
    """Views where at least two detectors score at or above their floors (the agreement rule, boxes assumed
    at one place: on these renders every pair of valid boxes overlapped) or one reaches 0.95 above its floor."""
    views = []
    for view, scores in best.items():
        above = [d for d, s in scores.items() if s is not None and floors[d]["floor"] is not None
                 and s >= floors[d]["floor"]]
        if len(above) >= 2 or any(scores[d] >= 0.95 for d in above if d != "dlib_hog"):
            views.append(view)
    return views


def judged(per_view: dict) -> float:
    """The identity statistic verification uses: the mean distance over the views within `MAX_ANGLE`."""
    return float(np.mean([v for k, v in per_view.items() if abs(float(k)) <= MAX_ANGLE]))


def summarise(raw: dict, threshold: float | None = None) -> dict:
    """The threshold by the documented rule (or a given one, for held-out people), its margins, and how each
    defacing fares under both rules."""
    for record in raw["same_person"] + raw["different_person"] + raw["defaced"]:
        record["distance"] = judged(record["per_view"])
    same = [d["distance"] for d in raw["same_person"]]
    different = [d["distance"] for d in raw["different_person"]]
    # At least as far from the original as any two different people of the calibration are from each other.
    threshold = threshold if threshold is not None else float(np.ceil(max(different) * 100) / 100)
    floors = detection_floors(raw)
    kinds = {}
    for kind in DEFACINGS:
        cases = [d for d in raw["defaced"] if d["defacing"] == kind]
        by_identity = [d for d in cases if d["distance"] < threshold]
        by_detection = [d for d in cases if detection_counts(d["best"], floors)]
        failed = {(d["person"], d["acquisition"]) for d in by_identity + by_detection}
        kinds[kind] = {"distance": _stats([d["distance"] for d in cases]), "cases": len(cases),
                       "failed_by_identity": len(by_identity), "failed_by_detection": len(by_detection),
                       "failed": len(failed)}
    summary = {"statistic": f"mean L2 over views within ±{MAX_ANGLE:g}°", "same_person": _stats(same),
               "different_person": _stats(different), "threshold": threshold,
               "same_vs_different_auc": round(_auc(different, same), 3),
               "correct_vs_upper_auc": round(_auc([d["distance"] for d in raw["defaced"] if d["defacing"] == "full"],
                                                  [d["distance"] for d in raw["defaced"] if d["defacing"] == "upper"]), 3),
               "margin_to_same_person": round(threshold - max(same), 3),
               "margin_to_correct_defacing": round(min(d["distance"] for d in raw["defaced"]
                                                       if d["defacing"] == "full") - threshold, 3),
               "defacings": kinds,
               "detection": {d: {k: v for k, v in f.items() if k != "roc_fpr_tpr_threshold"} for d, f in floors.items()},
               "identity_embedding_s_per_case_5_views": round(raw["defaced_embedding_s_per_case"], 3)}
    if "real_head" in raw:
        real = raw["real_head"]
        summary["real_head"] = {
            "to_synthetic": _stats([judged(v) for v in real["distances_to_synthetic"] if v]),
            "defaced": {k: round(judged(v["per_view"]), 3) for k, v in real["defaced"].items()},
            "box_sources": real["box_sources"]}
    raw["detection_roc"] = {d: f["roc_fpr_tpr_threshold"] for d, f in floors.items()}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("docs/verification_calibration.json"))
    parser.add_argument("--seed", type=int, default=14, help="draws the people; another seed gives held-out people")
    parser.add_argument("--threshold", type=float, help="judge with this threshold instead of deriving one "
                        "(held-out check of a calibrated threshold)")
    parser.add_argument("--summarise", type=Path, help="only summarise an earlier run's JSON (no renders)")
    parser.add_argument("--real-head", type=Path, help="unpacked Cranium.inv3 folder (main.plist, matrix.dat)")
    args = parser.parse_args(argv)
    if args.summarise:
        raw = json.loads(args.summarise.read_text())
        raw["summary"] = summarise(raw, args.threshold)
        args.out.write_text(json.dumps(raw, indent=1))
        print(json.dumps(raw["summary"], indent=1))
        return 0
    angles = tuple(load_config().verify.angles)
    detectors = [d for d in faces.VERIFY_DETECTORS if d in faces.available_detectors()]
    raw = calibrate(args.people, angles, detectors, args.real_head, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(raw, indent=1))
    raw["summary"] = summarise(raw, args.threshold)
    args.out.write_text(json.dumps(raw, indent=1))
    print(json.dumps(raw["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
