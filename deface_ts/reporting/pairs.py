"""Original/defaced pairs for ``deface-ts evaluate``: from a CSV, or by matching two folders' cases."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import pydicom

from deface_ts.errors import InputError
from deface_ts.report import Report, read_report

log = logging.getLogger(__name__)


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
