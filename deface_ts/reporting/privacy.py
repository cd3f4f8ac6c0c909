"""Privacy of defaced pairs: can a face be found, and recognised, on skin renders before and after?

Detection rates per detector and view; the distance between dlib's 128-d face
embeddings of a defaced scan and its own original (the defaced render taken with
the original's cameras and embedded in the original's face box: an attacker who
knows where the face was); for patients with several scans, same-vs-different
ROC-AUC and rank-1 re-identification against the gallery of originals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deface_ts.geometry.volume import Volume
from deface_ts.vision import faces

#: Which detector's box to embed when several found the face (dlib's 5-point predictor suits dlib's boxes best).
EMBED_BOX_ORDER = ("dlib_hog", "mtcnn", "mediapipe", "haar")


@dataclass
class FaceResult:
    """What the detectors and the recogniser saw in one pair's renders."""

    found: dict[str, dict[str, dict[str, float | None]]]  # "original"/"defaced" → angle → detector → best score
    agreeing: dict[str, dict[str, bool]]  # "original"/"defaced" → angle → ≥2 detectors at one place
    embeddings: dict[str, dict[str, np.ndarray]]  # "original"/"defaced" → angle → 128-d descriptor


def faces_of_pair(original: Volume, defaced: Volume, detectors: list[str], angles: Sequence[float],
                  backend: str = "auto") -> FaceResult:
    """Render both CTs with the same cameras, detect faces, embed each in the original's face box."""
    from deface_ts.vision.render import render_views

    renders = {"original": render_views(original, tuple(angles), backend=backend)}
    renders["defaced"] = render_views(defaced, backend=backend, frame=renders["original"])
    result = FaceResult({}, {}, {"original": {}, "defaced": {}})
    boxes = {}
    for kind, views in renders.items():
        result.found[kind], result.agreeing[kind] = {}, {}
        for angle, valid in faces.faces_in_views(views, detectors).items():
            scores = {name: max((d.score for d in valid if d.detector == name), default=None) for name in detectors}
            result.found[kind][view_key(angle)] = scores
            result.agreeing[kind][view_key(angle)] = bool(faces.agreeing(valid)) if len(detectors) > 1 else bool(valid)
            if kind == "original" and valid:
                rank = {name: n for n, name in enumerate(EMBED_BOX_ORDER)}
                boxes[angle] = min(valid, key=lambda d: (rank.get(d.detector, 99), -d.score)).box
    if faces.embedding_available():
        for angle, box in boxes.items():
            for kind in renders:
                result.embeddings[kind][view_key(angle)] = faces.embed(renders[kind][angle].image, box)
    return result


def view_key(angle: float) -> str:
    return f"{float(angle):g}"


def embedding_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float | None:
    """Mean L2 distance over the views both have an embedding for; None when they share none."""
    common = sorted(set(a) & set(b))
    return float(np.mean([np.linalg.norm(a[k] - b[k]) for k in common])) if common else None


def roc_auc(same: list[float], different: list[float]) -> float | None:
    """P(a same-person pair is closer than a different-person pair), ties counted half (Mann-Whitney)."""
    if not same or not different:
        return None
    s, d = np.asarray(same)[:, None], np.asarray(different)[None, :]
    return float(np.mean((s < d) + 0.5 * (s == d)))


def roc_curve(same: list[float], different: list[float]) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) points, accepting pairs closer than each threshold."""
    thresholds = np.unique(np.concatenate([same, different, [np.inf]]))
    s, d = np.asarray(same), np.asarray(different)
    return [(0.0, 0.0)] + [(float(np.mean(d <= t)), float(np.mean(s <= t))) for t in thresholds]


def recognition(patients: list[str], originals: list[dict], defaced: list[dict]) -> dict | None:
    """Same-vs-different-person ROC-AUC and rank-1 re-identification; None without a patient scanned twice."""
    n = len(patients)
    repeated = {p for p in patients if patients.count(p) > 1}
    if not repeated or len(set(patients)) < 2:
        return None

    def distances(probes: list[dict]) -> np.ndarray:
        out = np.full((n, n), np.nan)
        for i in range(n):
            for j in range(n):
                value = embedding_distance(probes[i], originals[j])
                out[i, j] = np.nan if value is None else value
        return out

    result = {}
    for kind, probes in (("original", originals), ("defaced", defaced)):
        dist = distances(probes)
        same: list[float] = []
        diff: list[float] = []
        for i in range(n):
            for j in range(n):
                if i != j and np.isfinite(dist[i, j]):
                    (same if patients[i] == patients[j] else diff).append(float(dist[i, j]))
        rank1 = {}
        for variant, own in (("other_scans", False), ("with_own_scan", True)):
            hits = probes_n = 0
            for i in range(n):
                if not own and patients[i] not in repeated:
                    continue
                if kind == "original" and own:
                    continue  # an original matched to itself says nothing
                probes_n += 1
                row = dist[i].copy()
                if not own:
                    row[i] = np.nan
                if np.isfinite(row).any():
                    hits += patients[int(np.nanargmin(row))] == patients[i]
            if probes_n:
                rank1[variant] = {"rate": hits / probes_n, "probes": probes_n}
        result[kind] = {"roc_auc": roc_auc(same, diff), "same_pairs": len(same), "different_pairs": len(diff),
                        "roc": roc_curve(same, diff) if same and diff else [], "rank1": rank1,
                        "same_distances": same, "different_distances": diff}
    return result
