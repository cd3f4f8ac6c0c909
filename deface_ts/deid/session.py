"""One de-identification run for one patient: prepare it from the input, check the output, write the linkage.

Used by the deface pipeline (headers of the defaced set) and by ``deface-ts
deid`` (headers only). The report part holds no input path, no original UID
and neither key nor date offset: only the key's fingerprint.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

from pydicom.dataset import Dataset

from deface_ts.config import DeidConfig
from deface_ts.deid.echo import scan_folder
from deface_ts.deid.headers import HeaderDeidentifier
from deface_ts.deid.identifiers import collect, read_element
from deface_ts.deid.keys import load_key
from deface_ts.deid.profile import load_profile
from deface_ts.errors import ConfigError, InputError, OutputError, PrivacyError

#: How many echoes an error message lists (the report of a failed case is not written).
_LISTED = 10


def prepare(datasets: list[Dataset], config: DeidConfig, patient_id: str | None = None,
            defaced: bool = False, where: str = "input") -> HeaderDeidentifier | None:
    """The de-identifier for these datasets (one patient), or None when the profile is ``off``."""
    profile = load_profile(config.profile)
    if profile is None:
        return None
    patients = sorted({str(read_element(ds, 0x00100020).value or "") if 0x00100020 in ds else "" for ds in datasets})
    if len(patients) != 1:
        raise InputError(f"{where}: objects of {len(patients)} different PatientIDs; de-identification keys "
                         "dates and pseudonym per patient, so one run takes one patient")
    key = load_key(config.key_file)
    parsed: dict = {}
    identifiers = collect(datasets, profile.table, parsed)
    pseudonym = patient_id if patient_id is not None else key.pseudonym(patients[0])
    if not pseudonym.strip() or identifiers.contains(pseudonym):
        raise ConfigError(f"patient ID {pseudonym!r}: empty, or holds an identifier of the patient it replaces")
    uids = key.uid_map()
    for uid in sorted(identifiers.uids):  # every original UID is mapped, wherever it appears
        uids.new(uid)
    return HeaderDeidentifier(profile, key, patients[0], pseudonym, identifiers, uids, defaced=defaced, parsed=parsed)


def check_output(folder: Path, deid: HeaderDeidentifier) -> None:
    """The echo scan: any identifying value of the input under ``folder`` fails the case (exit 6)."""
    findings = scan_folder(folder, deid.identifiers)
    if findings:
        listed = "; ".join(findings[:_LISTED]) + (f"; and {len(findings) - _LISTED} more" if len(findings) > _LISTED else "")
        raise PrivacyError(f"de-identification: {len(findings)} identifying value(s) of the input found in the "
                           f"output: {listed}. Nothing was written.")


def summary(deid: HeaderDeidentifier) -> dict:
    return {
        "profile": deid.profile.name,
        "table": f"DICOM PS3.15 Table E.1-1, edition {deid.profile.edition}",
        "options": [f"{code} {meaning}" for code, meaning in deid.profile.options]
        + (["113102 Clean Recognizable Visual Features Option"] if deid.defaced else []),
        "key_fingerprint": deid.key.fingerprint,
        "key_source": deid.key.source.split(" ")[0],
        "patient_id": deid.pseudonym,
        "dates": "shifted by one whole-week offset per patient (not recorded here)" if deid.profile.shift_dates
        else "emptied or replaced",
        "private_elements_removed": deid.private_removed,
        "cleaned_attributes": sorted(set(deid.cleaned)),
        "renamed_rois": sorted(deid.renamed.values()),
        "malformed_dates_emptied": sorted(set(deid.malformed_dates)),
        "identifiers_too_short_to_scan": sorted(deid.identifiers.too_short),
        "echo_scan": "passed: no identifying value of the input in any output file",
    }


def apply_to_report(report: dict, deid: HeaderDeidentifier, input: Path) -> dict:
    """The pipeline's report without input paths, original UIDs or identifying ROI names, with the deid summary."""
    report = dict(report)
    warnings = report.get("input", {}).get("warnings", [])
    report["input"] = {"warnings": f"{len(warnings)} (not listed: they name input files and UIDs)"}
    report["output"] = {k: v for k, v in report.get("output", {}).items() if k != "uids"}
    report["deid"] = summary(deid)
    folders = {str(Path(input)), str(Path(input).resolve())}
    return sanitise(report, deid.renamed, folders)


def sanitise(value, renamed: dict[str, str], folders: set[str]):
    """``value`` (report JSON) with ROI names that held an identifier renamed and input paths hidden."""
    if isinstance(value, dict):
        return {sanitise(k, renamed, folders): sanitise(v, renamed, folders) for k, v in value.items()}
    if isinstance(value, list):
        return [sanitise(v, renamed, folders) for v in value]
    if not isinstance(value, str):
        return value
    if any(folder in value for folder in folders):
        return "(an input file)"
    return renamed.get(value, value)


def linkage_path(output: Path, requested: str | Path | None) -> Path:
    """Where the linkage file goes: ``requested``, else beside the output folder; never inside it."""
    path = Path(requested) if requested else Path(output).parent / f"{Path(output).name}.linkage.csv"
    if Path(output).resolve() in path.resolve().parents:
        raise OutputError(f"{path}: the linkage file must lie outside the output folder {output}, "
                          "which is what gets shared")
    return path


def write_linkage(path: Path, deid: HeaderDeidentifier) -> Path:
    """Old → new patient ID, date offset and UIDs, mode 600, written atomically (the only re-identifying file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 600
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["kind", "original", "new"])
            writer.writerow(["PatientID", deid.original_patient_id, deid.pseudonym])
            writer.writerow(["date_offset_days", "", deid.offset.days])
            writer.writerow(["key_fingerprint", "", deid.key.fingerprint])
            for old, new in sorted(deid.uids.mapping.items()):
                writer.writerow(["UID", old, new])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
