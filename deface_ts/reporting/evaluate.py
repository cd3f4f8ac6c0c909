"""Evaluate defacing over original/defaced pairs: privacy (can a face be found or recognised?) and utility.

The measures are those of the published defacing studies, on renders of the skin surface:

* face detection rate per detector and view, originals vs defaced (the TotalSegmentator
  face-mask study on stroke CT renders: 76.5 % of intact renders had a detected face);
* the distance between dlib's 128-d face embeddings of each defaced scan and its own
  original (the defaced render is taken with the original's cameras and embedded in the
  original's face box: an attacker who knows where the face was);
* for cohorts where a patient has two or more scans: same-vs-different-person ROC-AUC of
  embedding distances, defaced scan against the originals of the other scans (the same study),
  and the rank-1 re-identification rate of each defaced scan against the gallery of
  originals (O'Sullivan-Steben et al., defaceRT: 97 % before, 4 % after defacing);
* utility (defaceRT, and the evaluation of eight neuro defacers on head-and-neck CT): per ROI
  the preserved-voxel ratio, Dice and HD95 of the ROIs that changed; dose difference (max |Δ|,
  mean |Δ| in the body, max |Δ| where the CT did not change) and DVH points (D95, D2, Dmean) of
  the protected ROIs.

Pairs come from :mod:`~deface_ts.reporting.pairs`, the measures from :mod:`~deface_ts.reporting.privacy`
and :mod:`~deface_ts.reporting.utility`. `evaluate` writes results.json, results.csv (one row per case)
and summary.html into an output folder that appears only when everything was computed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deface_ts.errors import DefaceError, InputError
from deface_ts.io.dicom.case import load_case
from deface_ts.io.output import atomic_output
from deface_ts.reporting.html import summary_html, write_csv
from deface_ts.reporting.pairs import Pair
from deface_ts.reporting.privacy import FaceResult, embedding_distance, faces_of_pair, recognition, view_key
from deface_ts.reporting.utility import dose_changes, dose_summary, roi_changes, roi_summary
from deface_ts.vision import faces

log = logging.getLogger(__name__)


def evaluate_pair(pair: Pair, detectors: list[str], angles: Sequence[float],
                  backend: str) -> tuple[dict, FaceResult | None]:
    """Load one pair and measure it; the faces seen (for the cohort's re-identification) come back too."""
    original, defaced = load_case(pair.original), load_case(pair.defaced_dicom)
    ct0, ct1 = original.ct.hu, defaced.ct.hu
    if not ct0.same_grid(ct1):
        raise InputError(f"the defaced CT {ct1.shape} is not on the original's grid {ct0.shape}")
    report = pair.report()
    result = {"patient": pair.patient, "scan": pair.scan, "original": str(pair.original),
              "defaced": str(pair.defaced), "ct_voxels_changed": int((ct0.array != ct1.array).sum()),
              "rois": roi_changes(original, defaced), "doses": dose_changes(pair, original, defaced, report)}
    seen = faces_of_pair(ct0, ct1, detectors, angles, backend) if detectors else None
    if seen is not None:
        result["faces"] = {"found": seen.found, "agreeing": seen.agreeing}
        result["embedding_distance_to_own_original"] = embedding_distance(seen.embeddings["original"],
                                                                          seen.embeddings["defaced"])
    return result, seen


def detection_rates(cases: list[dict], detectors: list[str], angles: Sequence[float]) -> dict:
    """Fraction of cases with a valid detection, per kind → detector (and "agreeing") → view (and "any view")."""
    rates: dict = {}
    seen = [c["faces"] for c in cases if "faces" in c]
    for kind in ("original", "defaced"):
        rates[kind] = {}
        for name in [*detectors, "agreeing"]:
            def hit(faces_: dict, angle: str, kind: str = kind, name: str = name) -> bool:
                if name == "agreeing":
                    return bool(faces_["agreeing"][kind][angle])
                return faces_["found"][kind][angle][name] is not None
            views = {view_key(a): float(np.mean([hit(f, view_key(a)) for f in seen])) if seen else None
                     for a in angles}
            views["any"] = float(np.mean([any(hit(f, view_key(a)) for a in angles) for f in seen])) if seen else None
            rates[kind][name] = views
    return rates


def evaluate(pairs: Sequence[Pair], output: Path, detectors: Sequence[str] | None = None,
             angles: Sequence[float] = faces.VERIFY_ANGLES, *, backend: str = "auto",
             overwrite: bool = False) -> dict:
    """Evaluate privacy and utility over original/defaced pairs; write results into ``output``.

    Parameters
    ----------
    pairs
        From `read_pairs` or `pairs_from_roots`.
    output
        Folder for results.json, results.csv and summary.html (created atomically).
    detectors
        Face detector names; None: those of `faces.VERIFY_DETECTORS` that run here. An empty
        list skips the privacy measures (no renders).
    angles
        Render views in degrees (0 = anterior).
    backend
        Render backend ("auto", "vtk", "numpy").
    overwrite
        Replace an existing non-empty ``output``.

    Returns
    -------
    dict
        What results.json holds: "cohort" (rates, recognition, ROI and dose summaries) and "cases".

    Raises
    ------
    InputError
        Naming the pair that could not be evaluated.
    """
    pairs = list(pairs)
    if not pairs:
        raise InputError("no pairs to evaluate")
    if detectors is None:
        available = faces.available_detectors()
        detectors = [d for d in faces.VERIFY_DETECTORS if d in available]
        if not detectors:
            log.warning("no face detector runs here: privacy measures skipped (install deface-ts[privacy])")
    detectors, angles = list(detectors), [float(a) for a in angles]
    cases, embeddings = _evaluate_pairs(pairs, detectors, angles, backend)
    cohort = {
        "pairs": len(pairs), "patients": len({p.patient for p in pairs}), "detectors": detectors,
        "angles": angles, "embedding": faces.embedding_available(),
        "detection_rate": detection_rates(cases, detectors, angles) if detectors else None,
        "recognition": recognition([p.patient for p in pairs], [e["original"] for e in embeddings],
                                   [e["defaced"] for e in embeddings]) if detectors else None,
        "rois": roi_summary(cases), "dose": dose_summary(cases),
    }
    results = {"cohort": cohort, "cases": cases}
    inputs = [p.original for p in pairs] + [p.defaced for p in pairs]
    with atomic_output(Path(output), inputs, overwrite) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=_json))
        write_csv(tmp / "results.csv", cases)
        (tmp / "summary.html").write_text(summary_html(results))
    return results


def _evaluate_pairs(pairs: list[Pair], detectors: list[str], angles: list[float],
                    backend: str) -> tuple[list[dict], list[dict]]:
    """Each pair's measures, and the embeddings of its renders (for the cohort's re-identification)."""
    cases, embeddings = [], []
    for pair in pairs:
        log.info("evaluating %s", pair.label)
        try:
            case, seen = evaluate_pair(pair, detectors, angles, backend)
        except DefaceError as exc:
            raise InputError(f"{pair.label}: {exc}") from exc
        except Exception as exc:
            raise InputError(f"{pair.label}: {exc.__class__.__name__}: {exc}") from exc
        cases.append(case)
        embeddings.append(seen.embeddings if seen is not None else {"original": {}, "defaced": {}})
    return cases, embeddings


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
