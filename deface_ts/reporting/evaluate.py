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
* utility (defaceRT, and the evaluation of eight neuro defacers on head-and-neck CT): per ROI the preserved-voxel ratio, Dice and HD95 of the ROIs
  that changed; dose difference (max |Δ|, mean |Δ| in the body, max |Δ| where the CT did
  not change) and DVH points (D95, D2, Dmean) of the protected ROIs.

`evaluate` writes results.json, results.csv (one row per case) and summary.html into an
output folder that appears only when everything was computed.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage

from deface_ts.vision import faces
from deface_ts.io import nifti
from deface_ts.removal.apply import dose_voxels_in
from deface_ts.choices import PROTECTED_ROLES
from deface_ts.config import RegionConfig
from deface_ts.report import Report, read_report
from deface_ts.io.dicom.case import Case, load_case
from deface_ts.errors import DefaceError, InputError
from deface_ts.reporting.html import summary_html, write_csv
from deface_ts.io.output import atomic_output
from deface_ts.geometry.masks import body_from_hu
from deface_ts.geometry.volume import Volume

log = logging.getLogger(__name__)

#: Which detector's box to embed when several found the face (dlib's 5-point predictor suits dlib's boxes best).
EMBED_BOX_ORDER = ("dlib_hog", "mtcnn", "mediapipe", "haar")


# ------------------------------------------------------------------------------------------ pairs
@dataclass(frozen=True)
class Pair:
    """One scan before and after defacing.

    ``defaced`` is the pipeline's output folder (``dicom/`` and ``report.json``) or a bare DICOM folder.
    """

    original: Path
    defaced: Path
    patient: str
    scan: str

    @property
    def label(self) -> str:
        return f"pair {self.patient}/{self.scan} ({self.original} -> {self.defaced})"

    @property
    def defaced_dicom(self) -> Path:
        return self.defaced / "dicom" if (self.defaced / "dicom").is_dir() else self.defaced

    def report(self) -> Report | None:
        path = self.defaced / "report.json"
        return read_report(path) if path.is_file() else None


def read_pairs(csv_path: Path) -> list[Pair]:
    """Pairs from a CSV with columns original, defaced, patient and optionally scan.

    Relative paths are taken from the CSV's folder; a missing scan is the original's folder name.
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
            columns = set(rows[0]) if rows else set()
    except FileNotFoundError:
        raise InputError(f"{csv_path}: pair list not found") from None
    missing = {"original", "defaced", "patient"} - columns
    if missing:
        raise InputError(f"{csv_path}: needs the columns original, defaced, patient[, scan]; missing "
                         f"{', '.join(sorted(missing))}" if rows else f"{csv_path}: no pairs listed")
    pairs = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        original, defaced = (csv_path.parent / row[c].strip() for c in ("original", "defaced"))
        for what, folder in (("original", original), ("defaced", defaced)):
            if not folder.is_dir():
                raise InputError(f"{csv_path}, line {number}: {what} folder {folder} not found")
        scan = (row.get("scan") or "").strip() or original.name
        pairs.append(Pair(original, defaced, row["patient"].strip(), scan))
    return _unique(pairs, str(csv_path))


def pairs_from_roots(original_root: Path, defaced_root: Path) -> list[Pair]:
    """Pairs of case folders with the same name under two roots; the patient is the original's PatientID.

    Originals without a defaced folder (a case the pipeline refused) are left out with a warning.
    """
    original_root, defaced_root = Path(original_root), Path(defaced_root)
    for root in (original_root, defaced_root):
        if not root.is_dir():
            raise InputError(f"{root}: folder not found")
    pairs, unmatched = [], []
    for folder in sorted(p for p in original_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        defaced = defaced_root / folder.name
        if not defaced.is_dir():
            unmatched.append(folder.name)
            continue
        pairs.append(Pair(folder, defaced, _patient_id(folder), folder.name))
    if unmatched:
        log.warning("no defaced folder under %s for: %s", defaced_root, ", ".join(unmatched))
    if not pairs:
        raise InputError(f"no case folder of {original_root} has a folder of the same name in {defaced_root}")
    return _unique(pairs, str(original_root))


def _patient_id(folder: Path) -> str:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        except Exception:
            continue
        if "PatientID" in header:
            return str(header.PatientID)
    raise InputError(f"{folder}: no DICOM file with a PatientID")


def _unique(pairs: list[Pair], source: str) -> list[Pair]:
    seen = set()
    for pair in pairs:
        if (pair.patient, pair.scan) in seen:
            raise InputError(f"{source}: patient {pair.patient} scan {pair.scan} is listed twice")
        seen.add((pair.patient, pair.scan))
    return pairs


# ------------------------------------------------------------------------------------------ privacy
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
            result.found[kind][_key(angle)] = scores
            result.agreeing[kind][_key(angle)] = bool(faces.agreeing(valid)) if len(detectors) > 1 else bool(valid)
            if kind == "original" and valid:
                rank = {name: n for n, name in enumerate(EMBED_BOX_ORDER)}
                boxes[angle] = min(valid, key=lambda d: (rank.get(d.detector, 99), -d.score)).box
    if faces.embedding_available():
        for angle, box in boxes.items():
            for kind in renders:
                result.embeddings[kind][_key(angle)] = faces.embed(renders[kind][angle].image, box)
    return result


def _key(angle: float) -> str:
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


# ------------------------------------------------------------------------------------------ utility
def surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def hd95_mm(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> float | None:
    """95th percentile of the surface distances of a to b and b to a, pooled (MedPy's hd95)."""
    union = a | b
    if not a.any() or not b.any():
        return None
    lo = np.argwhere(union).min(axis=0)
    hi = np.argwhere(union).max(axis=0) + 1
    box = tuple(slice(x, y) for x, y in zip(lo, hi))
    sa, sb = surface(a[box]), surface(b[box])
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return float(np.percentile(np.concatenate([to_b[sa], to_a[sb]]), 95))


def roi_changes(original: Case, defaced: Case) -> list[dict]:
    """Per ROI of the original: voxels kept, Dice and HD95 against the defaced ROI of the same name."""
    if original.structures is None:
        return []
    shape, spacing = original.ct.hu.shape, original.ct.hu.spacing
    after = {r.name: r for r in defaced.structures.rois} if defaced.structures is not None else {}
    out = []
    for roi in original.structures.rois:
        a = roi.mask.full(shape)
        b = after[roi.name].mask.full(shape) if roi.name in after else np.zeros(shape, bool)
        na, nb, both = int(a.sum()), int(b.sum()), int((a & b).sum())
        changed = not np.array_equal(a, b)
        out.append({"name": roi.name, "role": roi.role, "voxels_before": na, "voxels_after": nb,
                    "in_defaced": roi.name in after, "changed": changed,
                    "preserved_ratio": both / na if na else None,
                    "dice": 2.0 * both / (na + nb) if na + nb else None,
                    "hd95_mm": (hd95_mm(a, b, spacing) if changed else 0.0) if na else None})
    return out


def dose_at(dose: Volume, ct: Volume, mask: np.ndarray) -> np.ndarray:
    """Dose (Gy) at the centres of the CT voxels of ``mask``, trilinear; 0 outside the dose grid."""
    return dose.sample(ct.index_to_lps(np.argwhere(mask)))


def dvh_points(gy: np.ndarray) -> dict[str, float | None]:
    """D95 and D2 (dose received by at least 95 % and 2 % of the volume) and the mean dose, in Gy."""
    if gy.size == 0:
        return {"D95": None, "D2": None, "Dmean": None}
    return {"D95": float(np.percentile(gy, 5)), "D2": float(np.percentile(gy, 98)), "Dmean": float(gy.mean())}


def protected_names(original: Case, report: Report | None) -> list[str]:
    """The ROIs the report says were protected; without a report, the roles protected by default."""
    if report and report.get("rois"):
        return [r["name"] for r in report["rois"] if r.get("status") == "protected"]
    return [r.name for r in original.structures.rois if r.role in PROTECTED_ROLES] if original.structures else []


def removal_mask(pair: Pair, ct: Volume, defaced_ct: Volume) -> tuple[np.ndarray, str]:
    """The voxels the pipeline removed: its nifti/removal_mask.nii.gz, else the CT voxels that changed.

    The second is an approximation: air replaced by air of the same HU does not show.
    """
    path = pair.defaced / "nifti" / "removal_mask.nii.gz"
    if path.is_file():
        mask = nifti.load(path)
        if mask.shape == ct.shape and np.allclose(mask.affine, ct.affine, atol=1e-3):
            return mask.array > 0, "removal_mask.nii.gz"
        log.warning("%s is not on the CT grid; using the changed CT voxels", path)
    return ct.array != defaced_ct.array, "changed CT voxels"


def dose_changes(pair: Pair, original: Case, defaced: Case, report: Report | None) -> list[dict]:
    """Per RTDOSE (in file order): |Δ dose| overall, in the body, outside the removal; DVH of protected ROIs.

    DVH points sample the dose trilinearly at the ROI's CT voxel centres, as planning systems do;
    ``max_abs_voxel_diff_gy`` is the largest change of a dose voxel whose centre lies in the ROI.
    """
    if len(original.doses) != len(defaced.doses):
        raise InputError(f"{len(original.doses)} RTDOSE before, {len(defaced.doses)} after")
    ct, shape = original.ct.hu, original.ct.hu.shape
    bodies = [r for r in original.structures.by_role("body") if r.volume_voxels] if original.structures else []
    body = (max(bodies, key=lambda r: r.volume_voxels).mask.full(shape) if bodies
            else body_from_hu(ct.array, RegionConfig().body_hu))
    removed, removal_source = removal_mask(pair, ct, defaced.ct.hu)
    after_rois = {r.name: r for r in defaced.structures.rois} if defaced.structures is not None else {}
    out = []
    for number, (d0, d1) in enumerate(zip(original.doses, defaced.doses), start=1):
        g0, g1 = d0.gy, d1.gy
        if g0.shape != g1.shape or not np.allclose(g0.affine, g1.affine, atol=1e-3):
            raise InputError(f"RTDOSE {number}: the defaced dose is not on the original's grid")
        delta = np.abs(g1.array.astype(np.float64) - g0.array)
        in_body = dose_voxels_in(g0, ct, body)
        kept = ~dose_voxels_in(g0, ct, removed)
        dvh: list[dict] = []
        entry = {"dose": number, "max_gy": float(g0.array.max()), "max_abs_diff_gy": float(delta.max()),
                 "mean_abs_diff_body_gy": float(delta[in_body].mean()) if in_body.any() else None,
                 "max_abs_diff_outside_removal_gy": float(delta[kept].max()) if kept.any() else 0.0,
                 "removal_from": removal_source, "voxels_changed": int((delta > 0).sum()), "dvh": dvh}
        for name in protected_names(original, report):
            assert original.structures is not None  # protected names come from its ROIs
            m0 = original.structures.get(name).mask.full(shape)
            m1 = after_rois[name].mask.full(shape) if name in after_rois else np.zeros(shape, bool)
            before, after = dvh_points(dose_at(g0, ct, m0)), dvh_points(dose_at(g1, ct, m1))
            diff = {k: (a - b) if b is not None and a is not None else None
                    for k, b, a in ((k, before[k], after[k]) for k in before)}
            inside = dose_voxels_in(g0, ct, m0)
            dvh.append({"roi": name, "before": before, "after": after, "difference": diff,
                                 "max_abs_voxel_diff_gy": float(delta[inside].max()) if inside.any() else None})
        out.append(entry)
    return out


# ------------------------------------------------------------------------------------------ the run
def evaluate_pair(pair: Pair, detectors: list[str], angles: Sequence[float],
                  backend: str) -> tuple[dict, FaceResult | None]:
    """Load one pair and measure it; the faces seen (for the cohort's re-identification) come back too."""
    original, defaced = load_case(pair.original), load_case(pair.defaced_dicom)
    ct0, ct1 = original.ct.hu, defaced.ct.hu
    if ct0.shape != ct1.shape or not np.allclose(ct0.affine, ct1.affine, atol=1e-3):
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
            def hit(faces_, angle):
                if name == "agreeing":
                    return faces_["agreeing"][kind][angle]
                return faces_["found"][kind][angle][name] is not None
            views = {_key(a): float(np.mean([hit(f, _key(a)) for f in seen])) if seen else None for a in angles}
            views["any"] = float(np.mean([any(hit(f, _key(a)) for a in angles) for f in seen])) if seen else None
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


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def roi_summary(cases: list[dict]) -> dict[str, dict]:
    """Per ROI name over the cases: how often it changed, min preserved ratio, mean Dice, max HD95."""
    by_name: dict[str, list[dict]] = {}
    for case in cases:
        for roi in case["rois"]:
            by_name.setdefault(roi["name"], []).append(roi)
    out = {}
    for name, rois in by_name.items():
        ratios = [r["preserved_ratio"] for r in rois if r["preserved_ratio"] is not None]
        dice = [r["dice"] for r in rois if r["dice"] is not None]
        hd = [r["hd95_mm"] for r in rois if r["hd95_mm"] is not None]
        out[name] = {"role": rois[0]["role"], "cases": len(rois), "changed": sum(r["changed"] for r in rois),
                     "min_preserved_ratio": min(ratios) if ratios else None,
                     "mean_preserved_ratio": float(np.mean(ratios)) if ratios else None,
                     "mean_dice": float(np.mean(dice)) if dice else None, "max_hd95_mm": max(hd) if hd else None}
    return out


def dose_summary(cases: list[dict]) -> dict:
    doses = [d for c in cases for d in c["doses"]]
    dvh = [abs(v) for d in doses for e in d["dvh"] for v in e["difference"].values() if v is not None]
    return {"doses": len(doses),
            "max_abs_diff_gy": max((d["max_abs_diff_gy"] for d in doses), default=None),
            "max_abs_diff_outside_removal_gy": max((d["max_abs_diff_outside_removal_gy"] for d in doses),
                                                      default=None),
            "max_abs_dvh_difference_protected_gy": max(dvh, default=None)}
