"""The files `deface_ts.reporting.evaluate` writes besides results.json.

results.csv has one flat row per case; summary.html is one self-contained page whose
plots are drawn as inline SVG (no plotting library is needed).
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

ORIGINAL_COLOUR = "#4477aa"
DEFACED_COLOUR = "#cc4444"
SAME_COLOUR = "#228833"
DIFFERENT_COLOUR = "#888888"

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}svg{margin:0.5em 1em 1em 0}
.note{color:#555;font-size:90%}"""


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def bar_chart(groups: list[str], series: dict[str, tuple[list[float | None], str]], title: str,
              width: int = 520, height: int = 220) -> str:
    """Grouped bars of values in 0..1, one group per label, one bar per series."""
    left, bottom, top = 40, 40, 24
    plot_w, plot_h = width - left - 10, height - bottom - top
    slot = plot_w / max(len(groups), 1)
    bar = slot * 0.8 / max(len(series), 1)
    parts = [f'<text x="{left}" y="16" font-size="13">{html.escape(title)}</text>']
    for tick in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{tick:g}</text>')
    for g, label in enumerate(groups):
        x0 = left + g * slot + slot * 0.1
        for s, (values, colour) in enumerate(series.values()):
            value = values[g]
            if value is None:
                continue
            h = plot_h * max(0.0, min(1.0, value))
            parts.append(f'<rect x="{x0 + s * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 1:.1f}" '
                         f'height="{max(h, 0.5):.1f}" fill="{colour}"><title>{html.escape(label)}: '
                         f'{value:.2f}</title></rect>')
        parts.append(f'<text x="{x0 + slot * 0.4:.1f}" y="{top + plot_h + 14}" font-size="10" '
                     f'text-anchor="middle">{html.escape(label)}</text>')
    parts.append(_legend({k: c for k, (_, c) in series.items()}, left, height - 10))
    return f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'


def _legend(entries: dict[str, str], x: float, y: float) -> str:
    parts = []
    for name, colour in entries.items():
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="{y}" font-size="11">{html.escape(name)}</text>')
        x += 24 + 7 * len(name)
    return "".join(parts)


def roc_plot(curves: dict[str, tuple[list, str]], size: int = 260) -> str:
    """ROC curves (false positive rate, true positive rate) with the chance diagonal."""
    pad = 36
    span = size - 2 * pad
    xy = lambda fpr, tpr: (pad + fpr * span, size - pad - tpr * span)  # noqa: E731
    parts = [f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#999"/>',
             f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="#ccc" stroke-dasharray="4"/>',
             f'<text x="{size / 2}" y="{size - 8}" font-size="10" text-anchor="middle">false positive rate</text>',
             f'<text x="10" y="{size / 2}" font-size="10" transform="rotate(-90 10 {size / 2})" '
             f'text-anchor="middle">true positive rate</text>']
    for points, colour in curves.values():
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(f, t) for f, t in points))
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts.append(_legend({k: c for k, (_, c) in curves.items()}, pad, 18))
    return f'<svg width="{size}" height="{size}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'


def strip_plot(rows: dict[str, tuple[list[float], str]], title: str, marker: float | None = None,
               width: int = 520) -> str:
    """One row of dots per series along a distance axis (0 .. max), with an optional reference line."""
    left, right, row_h, top = 150, 20, 26, 28
    values = [v for vs, _ in rows.values() for v in vs] + ([marker] if marker is not None else [])
    high = max(values + [1e-6]) * 1.05
    x = lambda v: left + (width - left - right) * v / high  # noqa: E731
    height = top + row_h * len(rows) + 24
    parts = [f'<text x="4" y="16" font-size="13">{html.escape(title)}</text>']
    for r, (name, (vs, colour)) in enumerate(rows.items()):
        y = top + row_h * r + row_h / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
                     f'{html.escape(name)}</text>')
        parts += [f'<circle cx="{x(v):.1f}" cy="{y:.1f}" r="4" fill="{colour}" fill-opacity="0.6">'
                  f'<title>{v:.3f}</title></circle>' for v in vs]
    axis_y = top + row_h * len(rows)
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}" stroke="#999"/>')
    for tick in (0.0, high / 2, high):
        parts.append(f'<text x="{x(tick):.1f}" y="{axis_y + 14}" font-size="10" text-anchor="middle">{tick:.2f}</text>')
    if marker is not None:
        parts.append(f'<line x1="{x(marker):.1f}" x2="{x(marker):.1f}" y1="{top}" y2="{axis_y}" stroke="#000" '
                     f'stroke-dasharray="3"><title>{marker}</title></line>')
    return f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'


def privacy_section(cohort: dict, cases: list[dict]) -> str:
    rates = cohort.get("detection_rate")
    if not rates:
        return "<h2>Privacy</h2><p>No face detector ran: privacy measures were skipped.</p>"
    names = [*cohort["detectors"], "agreeing"]
    views = [*(f"{a:g}" for a in cohort["angles"]), "any"]
    out = ["<h2>Privacy</h2>",
           "<p class='note'>Fraction of cases with a valid face detection (box on the head, face-sized, with "
           "relief). 'agreeing': at least two detectors at one place. Views in degrees about the superior axis, "
           "0 = anterior; 'any': in at least one view.</p>",
           bar_chart(names, {"original": ([rates["original"][n]["any"] for n in names], ORIGINAL_COLOUR),
                             "defaced": ([rates["defaced"][n]["any"] for n in names], DEFACED_COLOUR)},
                     "detection rate in any view")]
    rows = [[f"{kind}: {n}", *(rates[kind][n][v] for v in views)] for kind in ("original", "defaced") for n in names]
    out.append(table(["detector", *views], rows))
    distances = [float(c["embedding_distance_to_own_original"]) for c in cases
                 if c.get("embedding_distance_to_own_original") is not None]
    if distances:
        out.append("<p class='note'>dlib 128-d embeddings, defaced render (original's cameras) embedded in the "
                   "original's face box; the dashed line is dlib's same-person threshold 0.6.</p>")
        out.append(strip_plot({"defaced vs own original": (distances, DEFACED_COLOUR)},
                              "embedding distance to the scan's own original", marker=0.6))
    recognition = cohort.get("recognition")
    if recognition:
        rows = []
        for kind in ("original", "defaced"):
            r = recognition[kind]
            rank = r["rank1"]
            rows.append([kind, r["roc_auc"], r["same_pairs"], r["different_pairs"],
                         rank.get("other_scans", {}).get("rate"), rank.get("with_own_scan", {}).get("rate")])
        out += ["<h3>Re-identification</h3>",
                "<p class='note'>Probe scans (originals, then defaced) against the originals of the other scans: "
                "ROC-AUC of same vs different patient from embedding distance (0.5 = chance), rank-1 rate of the "
                "nearest original belonging to the probe's patient (gallery without, then with, the probe's own "
                "scan).</p>",
                table(["probes", "ROC-AUC", "same pairs", "different pairs", "rank-1 (other scans)",
                       "rank-1 (with own scan)"], rows),
                roc_plot({kind: (recognition[kind]["roc"], colour)
                          for kind, colour in (("original", ORIGINAL_COLOUR), ("defaced", DEFACED_COLOUR))}),
                strip_plot({f"{kind}, {label}": (recognition[kind][key], colour)
                            for kind in ("original", "defaced")
                            for label, key, colour in (("same", "same_distances", SAME_COLOUR),
                                                       ("different", "different_distances", DIFFERENT_COLOUR))},
                           "embedding distances, probe vs other scans' originals")]
    else:
        out.append("<p class='note'>No patient has two or more scans: ROC-AUC and rank-1 re-identification "
                   "were not computed.</p>")
    return "".join(out)


def utility_section(cohort: dict, cases: list[dict]) -> str:
    rois = cohort["rois"]
    changed = {n: r for n, r in rois.items() if r["changed"]}
    out = ["<h2>Utility</h2><h3>ROIs</h3>",
           "<p class='note'>Preserved ratio: voxels of the original ROI still in the defaced ROI. Dice and HD95 "
           "(pooled 95th percentile of surface distances, mm) compare the ROI before and after.</p>"]
    if changed:
        out.append(bar_chart(list(changed), {"mean preserved ratio": ([r["mean_preserved_ratio"] for r in
                                                                        changed.values()], ORIGINAL_COLOUR),
                                             "mean Dice": ([r["mean_dice"] for r in changed.values()],
                                                           DEFACED_COLOUR)},
                             "ROIs that changed", width=max(520, 60 * len(changed))))
    out.append(table(["ROI", "role", "cases", "changed in", "min preserved", "mean preserved", "mean Dice",
                      "max HD95 mm"],
                     [[n, r["role"], r["cases"], r["changed"], r["min_preserved_ratio"], r["mean_preserved_ratio"],
                       r["mean_dice"], r["max_hd95_mm"]] for n, r in rois.items()]))
    rows, dvh = [], []
    for case in cases:
        for d in case["doses"]:
            rows.append([f"{case['patient']}/{case['scan']}", d["dose"], d["max_gy"], d["max_abs_diff_gy"],
                         d["mean_abs_diff_body_gy"], d["max_abs_diff_outside_removal_gy"], d["voxels_changed"]])
            for e in d["dvh"]:
                dvh.append([f"{case['patient']}/{case['scan']}", e["roi"],
                            *(e[w][k] for k in ("D95", "D2", "Dmean") for w in ("before", "after")),
                            e["max_abs_voxel_diff_gy"]])
    out += ["<h3>Dose</h3>", table(["case", "dose", "max Gy", "max |Δ| Gy", "mean |Δ| in body Gy",
                                    "max |Δ| outside removal Gy", "voxels changed"], rows),
            "<h3>DVH of protected ROIs (Gy)</h3>",
            "<p class='note'>Dose sampled trilinearly at the ROI's CT voxels; the last column is the largest "
            "change of a dose-grid voxel whose centre lies in the ROI.</p>",
            table(["case", "ROI", "D95 before", "D95 after", "D2 before", "D2 after", "Dmean before", "Dmean after",
                   "max |Δ| dose voxel in ROI"], dvh)]
    return "".join(out)


def summary_html(results: dict) -> str:
    cohort, cases = results["cohort"], results["cases"]
    head = (f"<h1>deface-ts evaluation</h1><p>{cohort['pairs']} pairs, {cohort['patients']} patients; detectors: "
            f"{html.escape(', '.join(cohort['detectors']) or 'none')}; views: "
            f"{', '.join(f'{a:g}' for a in cohort['angles'])} degrees.</p>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>deface-ts evaluation</title>"
            f"<style>{STYLE}</style></head><body>{head}{privacy_section(cohort, cases)}"
            f"{utility_section(cohort, cases)}</body></html>\n")


# ------------------------------------------------------------------------------------------ results.csv
CSV_COLUMNS = ("patient", "scan", "original", "defaced", "ct_voxels_changed", "detections_original",
               "detections_defaced", "agreeing_views_original", "agreeing_views_defaced",
               "embedding_distance_to_own_original", "rois_changed", "min_preserved_ratio", "min_dice",
               "max_hd95_mm", "protected_min_preserved_ratio", "max_abs_dose_diff_gy", "mean_abs_dose_diff_body_gy",
               "max_abs_dose_diff_outside_removal_gy", "max_abs_dvh_difference_protected_gy")


def case_row(case: dict) -> dict:
    """One flat CSV row: counts over views and detectors, extremes over ROIs and doses."""
    row = {k: case[k] for k in ("patient", "scan", "original", "defaced", "ct_voxels_changed")}
    if "faces" in case:
        for kind in ("original", "defaced"):
            row[f"detections_{kind}"] = sum(s is not None for v in case["faces"]["found"][kind].values()
                                            for s in v.values())
            row[f"agreeing_views_{kind}"] = sum(case["faces"]["agreeing"][kind].values())
        row["embedding_distance_to_own_original"] = case.get("embedding_distance_to_own_original")
    rois = case["rois"]
    changed = [r for r in rois if r["changed"]]
    protected = {e["roi"] for d in case["doses"] for e in d["dvh"]}
    pick = lambda key, rs, f: f([r[key] for r in rs if r[key] is not None], default=None)  # noqa: E731
    row.update(rois_changed=len(changed), min_preserved_ratio=pick("preserved_ratio", rois, min),
               min_dice=pick("dice", rois, min), max_hd95_mm=pick("hd95_mm", rois, max),
               protected_min_preserved_ratio=pick("preserved_ratio", [r for r in rois if r["name"] in protected], min))
    doses = case["doses"]
    row.update(max_abs_dose_diff_gy=max((d["max_abs_diff_gy"] for d in doses), default=None),
               mean_abs_dose_diff_body_gy=max((d["mean_abs_diff_body_gy"] or 0.0 for d in doses), default=None),
               max_abs_dose_diff_outside_removal_gy=max((d["max_abs_diff_outside_removal_gy"] for d in doses),
                                                           default=None),
               max_abs_dvh_difference_protected_gy=max((abs(v) for d in doses for e in d["dvh"]
                                                        for v in e["difference"].values() if v is not None),
                                                       default=None))
    return row


def write_csv(path: Path, cases: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        for case in cases:
            writer.writerow({k: ("" if v is None else v) for k, v in case_row(case).items()})
