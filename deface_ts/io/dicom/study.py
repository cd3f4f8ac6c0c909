"""Discovery: which files of a folder tree form one radiotherapy study.

Files are grouped by content (SOPClassUID, Modality and UID references),
never by file name: RS*/RD* prefixes are a habit of some systems, not a rule.
Only headers are parsed here: values larger than ``DEFER_SIZE`` (pixel data,
big sequences) are left on disk and read by pydicom when first used, so
loading the chosen CT series later reads each slice's pixels without parsing
its header a second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from deface_ts.errors import InputError

log = logging.getLogger(__name__)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_ION_PLAN = "1.2.840.10008.5.1.4.1.1.481.8"

#: Values larger than this are read when first accessed (pydicom's deferred read).
DEFER_SIZE = "64 KB"


@dataclass
class DicomFile:
    """One DICOM file and its dataset; values over ``DEFER_SIZE`` (pixel data) are read on first use."""

    path: Path
    header: Dataset

    @property
    def sop_class(self) -> str:
        return str(self.header.get("SOPClassUID", ""))

    @property
    def sop_instance(self) -> str:
        return str(self.header.get("SOPInstanceUID", ""))


@dataclass
class StudyFiles:
    """The files of one CT series and the RT objects that belong to it."""

    ct: list[DicomFile]
    rtstruct: DicomFile | None = None
    rtplan: DicomFile | None = None
    rtdose: list[DicomFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def series_uid(self) -> str:
        return str(self.ct[0].header.SeriesInstanceUID)

    @property
    def frame_of_reference(self) -> str:
        return str(self.ct[0].header.get("FrameOfReferenceUID", ""))

    @property
    def all_paths(self) -> list[Path]:
        rt = [f for f in (self.rtstruct, self.rtplan) if f is not None]
        return [f.path for f in self.ct + rt + self.rtdose]


@dataclass
class Discovery:
    """Everything readable under a folder, grouped by kind."""

    root: Path
    ct_series: dict[str, list[DicomFile]]
    rtstructs: list[DicomFile]
    rtplans: list[DicomFile]
    rtdoses: list[DicomFile]
    skipped: list[tuple[Path, str]]


def _uids(items, attribute: str) -> set[str]:
    return {str(item.get(attribute, "")) for item in items or []} - {""}


def structure_set_references(header: Dataset) -> tuple[set[str], set[str]]:
    """(frames of reference, CT series UIDs) an RTSTRUCT header points at."""
    frames: set[str] = set()
    series: set[str] = set()
    for frame in header.get("ReferencedFrameOfReferenceSequence", []):
        frames.add(str(frame.get("FrameOfReferenceUID", "")))
        for study in frame.get("RTReferencedStudySequence", []):
            series |= _uids(study.get("RTReferencedSeriesSequence", []), "SeriesInstanceUID")
    return frames - {""}, series


def plan_structure_set(header: Dataset) -> set[str]:
    return _uids(header.get("ReferencedStructureSetSequence", []), "ReferencedSOPInstanceUID")


def dose_plans(header: Dataset) -> set[str]:
    return _uids(header.get("ReferencedRTPlanSequence", []), "ReferencedSOPInstanceUID")


def read_header(path: Path) -> DicomFile:
    """One file's header, values over ``DEFER_SIZE`` left on disk until used."""
    return DicomFile(path, pydicom.dcmread(path, defer_size=DEFER_SIZE))


def discover(root: Path) -> Discovery:
    """Read the header of every file under ``root`` and group them by kind.

    Files that are not DICOM, or whose header cannot be parsed, are listed in
    ``skipped`` with the reason; they only become an error if they were needed.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: input does not exist.")
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    if not paths:
        raise InputError(f"{root}: folder is empty, no DICOM files to read.")
    found = Discovery(root, {}, [], [], [], [])
    for path in paths:
        try:
            item = read_header(path)
            sop_class = item.sop_class
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
            found.skipped.append((path, f"not a readable DICOM file ({exc.__class__.__name__}: {exc})"))
            continue
        header = item.header
        if sop_class == CT_IMAGE:
            if "SeriesInstanceUID" not in header:
                found.skipped.append((path, "CT image without SeriesInstanceUID"))
                continue
            found.ct_series.setdefault(str(header.SeriesInstanceUID), []).append(item)
        elif sop_class == RT_STRUCT:
            found.rtstructs.append(item)
        elif sop_class in (RT_PLAN, RT_ION_PLAN):
            found.rtplans.append(item)
        elif sop_class == RT_DOSE:
            found.rtdoses.append(item)
        else:
            found.skipped.append((path, f"unused object (Modality {header.get('Modality', '?')})"))
    for path, reason in found.skipped:
        log.info("skipped %s: %s", path, reason)
    return found


def describe_series(files: list[DicomFile]) -> str:
    h = files[0].header
    return (
        f"{h.SeriesInstanceUID} (patient {h.get('PatientID', '?')}, "
        f"'{h.get('SeriesDescription', '')}', {len(files)} slices)"
    )


def select(found: Discovery, series_uid: str | None = None) -> StudyFiles:
    """Pick the CT series and the RT objects that reference it.

    The chain is CT series ← RTSTRUCT (frame of reference / referenced series)
    ← RTPLAN (ReferencedStructureSetSequence) ← RTDOSE (ReferencedRTPlanSequence).
    """
    if not found.ct_series:
        raise InputError(f"{found.root}: no CT image series found" + _skipped_note(found))
    if series_uid is None:
        if len(found.ct_series) > 1:
            choices = "\n  ".join(describe_series(f) for f in found.ct_series.values())
            raise InputError(
                f"{found.root}: {len(found.ct_series)} CT series found; choose one with --series UID:\n  {choices}"
            )
        series_uid = next(iter(found.ct_series))
    if series_uid not in found.ct_series:
        raise InputError(f"{found.root}: no CT series with SeriesInstanceUID {series_uid}")
    study = StudyFiles(ct=found.ct_series[series_uid], skipped=list(found.skipped))
    _select_rtstruct(found, study, series_uid)
    if study.rtstruct is not None:
        plans = [p for p in found.rtplans if study.rtstruct.sop_instance in plan_structure_set(p.header)]
        if len(plans) > 1:
            raise InputError(f"{found.root}: several RTPLANs reference the RTSTRUCT: {[str(p.path) for p in plans]}")
        study.rtplan = plans[0] if plans else None
    for dose in found.rtdoses:
        referenced = dose_plans(dose.header)
        if study.rtplan is not None and study.rtplan.sop_instance in referenced:
            study.rtdose.append(dose)
        elif str(dose.header.get("FrameOfReferenceUID", "")) == study.frame_of_reference:
            study.rtdose.append(dose)
            study.warnings.append(
                f"{dose.path}: RTDOSE references RTPLAN {', '.join(sorted(referenced)) or '(none)'}, "
                "which is not in the input; loaded because its frame of reference matches the CT"
            )
    return study


def _select_rtstruct(found: Discovery, study: StudyFiles, series_uid: str) -> None:
    """The RTSTRUCT that lists the CT series, else one in its frame of reference; one of the patient's in
    another frame of reference is an error (a wrong CT or a wrong file)."""
    frame = study.frame_of_reference
    patient = str(study.ct[0].header.get("PatientID", ""))
    by_series, by_frame, foreign = [], [], []
    for rs in found.rtstructs:
        frames, series = structure_set_references(rs.header)
        if series_uid in series:
            by_series.append(rs)
        elif frame in frames:
            by_frame.append(rs)
        elif str(rs.header.get("PatientID", "")) == patient:
            foreign.append((rs, frames))
    candidates = by_series or by_frame
    if len(candidates) > 1:
        names = ", ".join(str(c.path) for c in candidates)
        raise InputError(f"{found.root}: several RTSTRUCTs reference CT series {series_uid}: {names}")
    if candidates:
        study.rtstruct = candidates[0]
        if not by_series:
            study.warnings.append(
                f"{study.rtstruct.path}: RTSTRUCT does not list CT series {series_uid}; matched by frame of reference"
            )
    elif foreign:
        rs, frames = foreign[0]
        raise InputError(
            f"{rs.path}: RTSTRUCT is in frame of reference {', '.join(sorted(frames)) or '(none)'}, "
            f"but CT series {series_uid} is in {frame}"
        )


def _skipped_note(found: Discovery) -> str:
    if not found.skipped:
        return "."
    lines = "\n  ".join(f"{p}: {r}" for p, r in found.skipped[:10])
    more = f"\n  ... and {len(found.skipped) - 10} more" if len(found.skipped) > 10 else ""
    return f"; unreadable or unused files:\n  {lines}{more}"
