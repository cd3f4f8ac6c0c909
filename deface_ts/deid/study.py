"""``deface-ts deid IN OUT``: the header de-identification of a DICOM folder, without face removal.

Every DICOM file under IN is written to OUT under a new name (modality and a
number: original file names can hold names and IDs), with the same transfer
syntax and bit-identical pixel data. Secondary captures and other objects
whose pixels may hold burned-in text are refused: cleaning pixels is out of scope.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from deface_ts import __version__
from deface_ts.config import DeidConfig
from deface_ts.deid.identifiers import read_element
from deface_ts.deid.session import (
    check_output,
    linkage_path,
    prepare,
    summary,
    write_linkage,
)
from deface_ts.errors import ConfigError, InputError
from deface_ts.io.output import atomic_output

# SOP classes whose pixels are often a picture of a screen or a form (PS3.15 E.1: Clean Pixel Data Option).
# File Meta Information Group Length, Version, Media Storage SOP Class and Instance, Transfer Syntax,
# Implementation Class UID.
_FILE_META_TYPE_1 = (0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012)
_BURNED_IN = ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.104.1")


def read_folder(folder: Path) -> list[tuple[Path, Dataset]]:
    """Every DICOM file under ``folder``, in path order; other files are counted, not read."""
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: not a folder")
    found: list[tuple[Path, Dataset]] = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, EOFError, OSError):
            continue
        except Exception as exc:
            raise InputError(f"{path}: unreadable DICOM file ({exc.__class__.__name__}: {exc})") from None
        sop_class = _text(ds, 0x00080016)
        if sop_class.startswith(_BURNED_IN) or _text(ds, 0x00280301) == "YES":  # BurnedInAnnotation
            raise InputError(f"{path}: {sop_class or '?'} may hold burned-in text in its pixels; "
                             "deface-ts does not clean pixel data: remove such objects first")
        found.append((path, ds))
    if not found:
        raise InputError(f"{folder}: no DICOM file found")
    return found


def output_names(datasets: list[Dataset]) -> list[str]:
    """``CT_0001.dcm``, ``RTSTRUCT_0001.dcm``...: numbered per modality in input order."""
    counts: dict[str, int] = {}
    names = []
    for ds in datasets:
        modality = "".join(c for c in _text(ds, 0x00080060) if c.isalnum()) or "OT"
        counts[modality] = counts.get(modality, 0) + 1
        names.append(f"{modality}_{counts[modality]:04d}.dcm")
    return names


def complete_file_meta(ds: Dataset) -> bool:
    """Whether ``ds`` has a preamble and every Type 1 file meta element (PS3.10 7.1), as the de-identification
    writes them; else pydicom's enforce_file_format must add them."""
    meta = getattr(ds, "file_meta", None)
    return (meta is not None and len(getattr(ds, "preamble", None) or b"") == 128
            and all(tag in meta for tag in _FILE_META_TYPE_1))


def _text(ds: Dataset, tag: int) -> str:
    """A CS or UI value (ASCII in every character set), read without converting the element in ``ds`` (see
    :func:`read_element`)."""
    element = ds.get_item(tag)
    if element is None:
        return ""
    if isinstance(element.value, bytes):
        return element.value.decode("ascii", "replace").strip("\x00 ")
    return str(read_element(ds, tag).value or "").strip()


def deidentify_folder(input: Path, output: Path, config: DeidConfig, *, patient_id: str | None = None,
                      overwrite: bool = False) -> dict:
    """De-identify the headers of every DICOM file under ``input`` into ``output``; return the report."""
    start = time.perf_counter()
    files = read_folder(Path(input))
    datasets = [ds for _, ds in files]
    deid = prepare(datasets, config, patient_id, where=str(input))
    if deid is None:
        raise ConfigError("deid: profile 'off' would copy the headers unchanged; choose rt-research or basic")
    linkage = linkage_path(Path(output), config.linkage)
    with atomic_output(Path(output), [Path(input)], overwrite) as tmp:
        names = output_names(datasets)
        with pydicom_config.disable_value_validation():  # malformed input values pass through, never abort
            for ds, name in zip(datasets, names):
                new = deid.dataset(ds)
                new.save_as(tmp / name, enforce_file_format=not complete_file_meta(new))
        report = {"deface_ts_version": __version__, "command": "deid", "files": names, "deid": summary(deid),
                  "timings_s": {"deid": round(time.perf_counter() - start, 3)}}
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
        check_output(tmp, deid)
        report["linkage"] = str(write_linkage(linkage, deid))  # before the output appears: never one without it
    return report
