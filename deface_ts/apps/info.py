"""`deface-ts info`: what a folder holds, from headers only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deface_ts.io.dicom.ct import slice_geometry
from deface_ts.io.dicom.rtdose import frame_offsets
from deface_ts.io.dicom.rtstruct import roi_role
from deface_ts.io.dicom.study import DicomFile, Discovery, StudyFiles, discover, select


def describe(root: Path, series_uid: str | None = None) -> dict:
    """A JSON-ready summary of the study under ``root`` (the chosen or only CT series)."""
    found = discover(Path(root))
    study = select(found, series_uid)
    return summarise(found, study)


def summarise(found: Discovery, study: StudyFiles) -> dict:
    files, orientation, origin, step = slice_geometry(study.ct)
    h = files[0].header
    summary: dict = {
        "input": str(found.root),
        "patient_id": str(h.get("PatientID", "")),
        "study_instance_uid": str(h.get("StudyInstanceUID", "")),
        "series": [
            {"series_instance_uid": uid, "slices": len(f), "description": str(f[0].header.get("SeriesDescription", ""))}
            for uid, f in found.ct_series.items()
        ],
        "ct": {
            "series_instance_uid": study.series_uid,
            "frame_of_reference_uid": study.frame_of_reference,
            "patient_position": str(h.get("PatientPosition", "")),
            "orientation": [round(float(v), 6) for v in orientation],
            "slices": len(files),
            "rows": int(h.Rows),
            "columns": int(h.Columns),
            "spacing_mm": [round(step, 4), float(h.PixelSpacing[0]), float(h.PixelSpacing[1])],
            "first_position_mm": [round(float(v), 3) for v in origin],
            "transfer_syntax": str(files[0].header.file_meta.get("TransferSyntaxUID", "")),
        },
        "rtstruct": None,
        "rtplan": None,
        "rtdose": [],
        "warnings": study.warnings,
        "skipped": [{"file": str(p), "reason": r} for p, r in found.skipped],
    }
    summary["rtstruct"] = _rtstruct_summary(study.rtstruct) if study.rtstruct is not None else None
    if study.rtplan is not None:
        p = study.rtplan.header
        summary["rtplan"] = {
            "file": str(study.rtplan.path),
            "label": str(p.get("RTPlanLabel", "")),
            "beams": len(p.get("BeamSequence", p.get("IonBeamSequence", []))),
        }
    summary["rtdose"] = [_dose_summary(dose) for dose in study.rtdose]
    return summary


def _rtstruct_summary(file: DicomFile) -> dict:
    rs = file.header
    types = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", ""))
             for o in rs.get("RTROIObservationsSequence", [])}
    counts = {int(c.ReferencedROINumber): len(c.get("ContourSequence", [])) for c in rs.get("ROIContourSequence", [])}
    rois = [{"number": int(r.ROINumber), "name": str(r.ROIName), "type": types.get(int(r.ROINumber), ""),
             "role": roi_role(str(r.ROIName), types.get(int(r.ROINumber), "")),
             "contours": counts.get(int(r.ROINumber), 0)} for r in rs.get("StructureSetROISequence", [])]
    return {"file": str(file.path), "label": str(rs.get("StructureSetLabel", "")), "rois": rois}


def _dose_summary(dose: DicomFile) -> dict:
    d = dose.header
    offsets = frame_offsets(d, dose.path)
    step = round(float(np.median(np.diff(offsets))), 4) if len(offsets) > 1 else None
    return {"file": str(dose.path), "grid": [len(offsets), int(d.Rows), int(d.Columns)],
            "spacing_mm": [step, float(d.PixelSpacing[0]), float(d.PixelSpacing[1])],
            "summation": str(d.get("DoseSummationType", "")), "bits": int(d.BitsAllocated),
            "scaling": float(d.DoseGridScaling)}


def format_summary(summary: dict) -> str:
    ct = summary["ct"]
    lines = [
        f"Input        {summary['input']}",
        f"Patient      {summary['patient_id']}",
        f"CT series    {ct['series_instance_uid']} ({ct['patient_position']}, {ct['slices']} slices of "
        f"{ct['rows']}x{ct['columns']}, spacing {' x '.join(str(s) for s in ct['spacing_mm'])} mm)",
        f"Orientation  {ct['orientation']}",
    ]
    if len(summary["series"]) > 1:
        lines.append(f"Other series {len(summary['series']) - 1}")
    rs = summary["rtstruct"]
    if rs:
        lines.append(f"RTSTRUCT     {rs['file']} ({len(rs['rois'])} ROIs)")
        width = max(len(r["name"]) for r in rs["rois"]) if rs["rois"] else 4
        for r in rs["rois"]:
            lines.append(f"  {r['number']:>4}  {r['name']:<{width}}  {r['role']:<5}  {r['type'] or '-'}  "
                         f"({r['contours']} contours)")
    else:
        lines.append("RTSTRUCT     none")
    plan = summary["rtplan"]
    lines.append(f"RTPLAN       {plan['file']} ('{plan['label']}', {plan['beams']} beams)" if plan
                 else "RTPLAN       none")
    for d in summary["rtdose"]:
        lines.append(f"RTDOSE       {d['file']} (grid {d['grid']}, spacing {d['spacing_mm']} mm, "
                     f"{d['summation']}, {d['bits']}-bit)")
    if not summary["rtdose"]:
        lines.append("RTDOSE       none")
    for w in summary["warnings"]:
        lines.append(f"warning: {w}")
    if summary["skipped"]:
        listed = "; ".join(f"{s['file']} ({s['reason']})" for s in summary["skipped"][:5])
        lines.append(f"skipped {len(summary['skipped'])} file(s): {listed}")
    return "\n".join(lines)
