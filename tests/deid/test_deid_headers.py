"""Header de-identification of a PHI-laden DICOM-RT study through `deface-ts deid` and `deface-ts deface`.

Independent of the tool's own echo scan, every output byte is searched for the planted values.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import stat
from pathlib import Path

import pydicom
import pytest

from deface_ts.apps.cli import main
from deface_ts.deid.table import EDITION, load_table
from tests.checkers import (
    dciodvfy_errors,
    plastimatch_convert,
    requires_dciodvfy,
    requires_plastimatch,
)
from tests.deid.phi_study import (
    DATES,
    PATIENT_ID,
    PHI_ROI,
    PLANTED,
    REVIEW_DATE,
    write_phi_study,
)


@pytest.fixture(scope="module")
def phi(tmp_path_factory):
    return write_phi_study(tmp_path_factory.mktemp("phi") / "study")


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "site.key"
    path.write_text("a-site-secret-of-enough-length-1\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def deid_run(phi, tmp_path_factory):
    """`deface-ts deid` with one key; module-scoped: several tests read the same output."""
    root = tmp_path_factory.mktemp("deid-run")
    key = root / "site.key"
    key.write_text("a-site-secret-of-enough-length-1\n")
    key.chmod(0o600)
    out = root / "out"
    assert main(["deid", str(phi.folder), str(out), "--deid-key", str(key)]) == 0
    return out, key


def planted_in(folder: Path, originals: set[str]) -> list[str]:
    """(file, value) pairs of planted values or original UIDs found anywhere in the bytes of ``folder``."""
    found = []
    for path in folder.rglob("*"):
        data = path.read_bytes().lower() if path.is_file() else b""
        for value in PLANTED + sorted(originals):
            if value.lower().encode() in data or value.lower() in str(path).lower():
                found.append(f"{path.name}: {value}")
    return found


def datasets(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]


def walk(ds: pydicom.Dataset):
    for element in ds:
        yield element
        if element.VR == "SQ":
            for item in element.value:
                yield from walk(item)


def test_table_is_packaged_with_its_edition():
    table = load_table()
    assert table.edition == EDITION == "2026c"
    assert table.action(0x00100010) == "Z"  # PatientName
    assert table.action(0x00081155) == "U"  # ReferencedSOPInstanceUID
    assert table.action(0x60023000) == "X"  # Overlay Data, repeating group 60xx
    assert table.action(0x300A00C2) is None  # Beam Name: missing from the table, hence the RT list
    assert {row["basic"] for row in table.by_tag.values()} <= {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D",
                                                                "X/Z/U*"}


def test_deid_leaves_no_identifier_and_keeps_pixels(phi, deid_run):
    out, _ = deid_run
    assert planted_in(out, phi.original_uids) == []
    report = json.loads((out / "report.json").read_text())
    assert str(phi.folder) not in (out / "report.json").read_text()
    assert report["deid"]["echo_scan"].startswith("passed")
    originals = {str(ds.SOPInstanceUID): ds for ds in datasets(phi.folder)}
    linkage = {row["original"]: row["new"] for row in csv.DictReader((out.parent / "out.linkage.csv").read_text().splitlines())}
    for ds in datasets(out):
        assert not any(e.tag.is_private for e in walk(ds)), "private element left"
        assert ds.PatientID == ds.PatientName == report["deid"]["patient_id"]
        assert (ds.PatientSex, ds.PatientAge) == ("F", "066Y")  # Retain Patient Characteristics
        original = originals[next(old for old, new in linkage.items() if new == ds.SOPInstanceUID)]
        if "PixelData" in ds:
            assert ds.PixelData == original.PixelData
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def day(text: str) -> dt.date:
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def test_deid_shifts_every_date_by_one_offset(phi, deid_run):
    out, _ = deid_run
    shifted = {str(ds.Modality): ds for ds in datasets(out)}
    offset = day(shifted["CT"].StudyDate) - day(DATES["CT"])
    assert offset.days != 0 and offset.days % 7 == 0
    assert day(shifted["RTSTRUCT"].StructureSetDate) - day(DATES["RTSTRUCT"]) == offset
    assert day(shifted["RTPLAN"].RTPlanDate) - day(DATES["RTPLAN"]) == offset
    assert day(shifted["RTPLAN"].ReviewDate) - day(REVIEW_DATE) == offset
    assert day(shifted["RTDOSE"].ContentDate) - day(DATES["RTDOSE"]) == offset
    assert shifted["RTPLAN"].ReviewTime == "101500"  # times kept
    assert shifted["CT"].PatientBirthDate == ""


def test_deid_references_stay_closed(phi, deid_run):
    out, _ = deid_run
    objects = datasets(out)
    # The RTReferencedStudySequence references the study itself (Study Component Management SOP class).
    sops = {str(ds.SOPInstanceUID) for ds in objects} | {str(ds.StudyInstanceUID) for ds in objects}
    frames = {str(ds.FrameOfReferenceUID) for ds in objects if "FrameOfReferenceUID" in ds}
    assert len(frames) == 1 and len({str(ds.StudyInstanceUID) for ds in objects}) == 1
    referenced = [str(e.value) for ds in objects for e in walk(ds) if e.keyword == "ReferencedSOPInstanceUID"]
    assert referenced and set(referenced) <= sops
    frame_refs = {str(e.value) for ds in objects for e in walk(ds)
                  if e.keyword in ("ReferencedFrameOfReferenceUID", "FrameOfReferenceUID")}
    assert frame_refs == frames


def test_deid_rt_text_and_roi_names(phi, deid_run):
    out, _ = deid_run
    by_modality = {str(ds.Modality): ds for ds in datasets(out)}
    plan, structures = by_modality["RTPLAN"], by_modality["RTSTRUCT"]
    assert "RTPlanName" not in plan and "ToleranceTableLabel" not in plan.ToleranceTableSequence[0]
    assert all(b.TreatmentMachineName == "" for b in plan.BeamSequence)
    # Each beam keeps a label of its own, from its number, so a physicist still tells them apart.
    assert [(b.BeamName, b.BeamDescription) for b in plan.BeamSequence] == [
        (f"BEAM {b.BeamNumber}", f"BEAM {b.BeamNumber}") for b in plan.BeamSequence]
    assert len(plan.BeamSequence) > 1 and {int(r.ReferencedBeamNumber) for g in plan.FractionGroupSequence
                                           for r in g.ReferencedBeamSequence} == {b.BeamNumber for b in plan.BeamSequence}
    names = {item.ROIName for item in structures.StructureSetROISequence}
    original = {item.ROIName for item in pydicom.dcmread(phi.folder / "structures.dcm").StructureSetROISequence}
    assert PHI_ROI not in names and (original - {PHI_ROI}) <= names  # PTV/GTV/OAR names untouched
    report = json.loads((out / "report.json").read_text())
    assert report["deid"]["renamed_rois"] == sorted(names - original)


def test_basic_profile_keeps_no_date_and_no_characteristic(phi, tmp_path, key):
    out = tmp_path / "basic"
    assert main(["deid", str(phi.folder), str(out), "--deid-key", str(key), "--deid", "basic"]) == 0
    assert planted_in(out, phi.original_uids) == []
    plan = pydicom.dcmread(out / "RTPLAN_0001.dcm")
    assert plan.RTPlanDate == "19000101" and plan.get("StructureSetDate") is None and plan.StudyDate == ""
    assert "PatientSex" not in plan or plan.PatientSex == ""
    assert [c.CodeValue for c in plan.DeidentificationMethodCodeSequence] == ["113100"]
    assert "LongitudinalTemporalInformationModified" not in plan


def test_deid_is_deterministic_per_key(phi, deid_run, tmp_path, key):
    out, first_key = deid_run
    again = tmp_path / "again"
    assert main(["deid", str(phi.folder), str(again), "--deid-key", str(first_key)]) == 0
    for path in out.glob("*.dcm"):
        assert (again / path.name).read_bytes() == path.read_bytes()
    other = tmp_path / "other"
    os.environ["DEFACE_TS_DEID_KEY"] = "another-secret-entirely-different"
    try:
        assert main(["deid", str(phi.folder), str(other)]) == 0
    finally:
        del os.environ["DEFACE_TS_DEID_KEY"]
    a, b = pydicom.dcmread(out / "RTPLAN_0001.dcm"), pydicom.dcmread(other / "RTPLAN_0001.dcm")
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.PatientID != b.PatientID and a.RTPlanDate != b.RTPlanDate


def test_deid_linkage_outside_output(phi, deid_run):
    out, key = deid_run
    linkage = out.parent / "out.linkage.csv"
    assert stat.S_IMODE(linkage.stat().st_mode) == 0o600
    rows = list(csv.DictReader(linkage.read_text().splitlines()))
    assert {"kind": "PatientID", "original": PATIENT_ID, "new": pydicom.dcmread(out / "CT_0001.dcm").PatientID} in rows
    assert {r["original"] for r in rows if r["kind"] == "UID"} >= phi.original_uids
    assert key.read_text().strip() not in linkage.read_text() + (out / "report.json").read_text()


def test_auto_key_is_private_and_reused(phi, tmp_path, deid_key_home):
    assert main(["deid", str(phi.folder), str(tmp_path / "a")]) == 0
    key_file = deid_key_home / "deface-ts" / "deid.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert main(["deid", str(phi.folder), str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "CT_0001.dcm").read_bytes() == (tmp_path / "b" / "CT_0001.dcm").read_bytes()


def test_key_readable_by_others_is_refused(phi, tmp_path, key, capsys):
    key.chmod(0o644)
    assert main(["deid", str(phi.folder), str(tmp_path / "out"), "--deid-key", str(key)]) == 5
    assert "chmod 600" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_broken_profile_echo_is_caught_and_nothing_written(phi, tmp_path, key, capsys):
    profile = tmp_path / "broken.yaml"
    profile.write_text("base: rt-research\nactions:\n  InstitutionName: K\n")
    out = tmp_path / "out"
    assert main(["deid", str(phi.folder), str(out), "--deid-key", str(key), "--deid", str(profile)]) == 6
    err = capsys.readouterr().err
    assert "InstitutionName (InstitutionName)" in err and "Elsewhere" not in err
    assert not out.exists() and not (tmp_path / "out.linkage.csv").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_echo_in_private_un_bytes_is_caught(phi, tmp_path, key, capsys):
    """A profile that kept private elements would leak the implicit-VR dose's UN block: the scan reads bytes."""
    from deface_ts.config import DeidConfig
    from deface_ts.deid.session import check_output, prepare
    from deface_ts.deid.study import read_folder

    files = read_folder(phi.folder)
    deid = prepare([ds for _, ds in files], DeidConfig(key_file=str(key)))
    dose = next(ds for _, ds in files if ds.Modality == "RTDOSE")
    out = tmp_path / "scan"
    out.mkdir()
    kept = deid.dataset(dose)
    kept.add(dose[0x32530010])
    kept.add(dose[0x32531002])
    kept.save_as(out / "RTDOSE.dcm", enforce_file_format=True)
    with pytest.raises(Exception) as error:
        check_output(out, deid)
    assert "RTDOSE.dcm: (3253,1002) (PatientID)" in str(error.value) and PATIENT_ID not in str(error.value)


def test_safe_private_is_opt_in_and_still_scanned(phi, tmp_path, key, capsys):
    profile = tmp_path / "safe.yaml"
    profile.write_text("safe_private: ['GOTHAM TPS 1.0:04']\n")  # the block's software version only
    out = tmp_path / "out"
    assert main(["deid", str(phi.folder), str(out), "--deid-key", str(key), "--deid", str(profile)]) == 0
    plan = pydicom.dcmread(out / "RTPLAN_0001.dcm")
    kept = [e for e in walk(plan) if e.tag.is_private]
    assert {(e.tag.element & 0xFF) for e in kept if e.tag.element > 0xFF} == {0x04}
    assert any(c.startswith("113111") for c in json.loads((out / "report.json").read_text())["deid"]["options"])
    profile.write_text("safe_private: ['GOTHAM TPS 1.0:02']\n")  # the MRN: the echo scan stops it
    assert main(["deid", str(phi.folder), str(tmp_path / "leak"), "--deid-key", str(key), "--deid", str(profile)]) == 6
    assert "(PatientID)" in capsys.readouterr().err and not (tmp_path / "leak").exists()


@pytest.mark.parametrize("entry", ["GOTHAM TPS 1.0:03:UI", "GOTHAM TPS 1.0:03"])
def test_safe_private_uids_are_remapped_whatever_their_vr(phi, tmp_path, key, entry):
    """The vendor block's element 03 holds the StudyInstanceUID: as UI in the explicit-VR files, as UN in the
    implicit-VR dose. Kept as safe, it gets the new UID in both, declared a UID element or not."""
    profile = tmp_path / "safe.yaml"
    profile.write_text(f"safe_private: ['{entry}', 'GOTHAM TPS 1.0:04']\n")
    out = tmp_path / "out"
    assert main(["deid", str(phi.folder), str(out), "--deid-key", str(key), "--deid", str(profile)]) == 0
    dose, plan = pydicom.dcmread(out / "RTDOSE_0001.dcm"), pydicom.dcmread(out / "RTPLAN_0001.dcm")
    assert dose.is_implicit_VR and not plan.is_implicit_VR
    for ds in (dose, plan):
        uid = ds[0x32531003]
        value = uid.value.decode().rstrip("\x00 ") if isinstance(uid.value, bytes) else str(uid.value)
        assert value == ds.StudyInstanceUID and value not in phi.original_uids
    assert pydicom.dcmread(out / "RTDOSE_0001.dcm")[0x32531004].value.rstrip(b"\x00 ") == b"TPS 7.1"


@requires_dciodvfy
def test_deid_output_is_no_less_valid(phi, deid_run, tmp_path):
    out, _ = deid_run
    inputs = {str(ds.Modality): p for p in sorted(phi.folder.iterdir()) if (ds := pydicom.dcmread(p, stop_before_pixels=True))}
    for path in sorted(out.glob("*_0001.dcm")):
        modality = path.name.split("_")[0]
        assert len(dciodvfy_errors(path, tmp_path)) <= len(dciodvfy_errors(inputs[modality], tmp_path)), path.name


@requires_plastimatch
def test_plastimatch_reads_deid_set(phi, deid_run, tmp_path):
    """A planning-system-like reader sees the same CT, the same number of structures and the dose."""
    import numpy as np

    from deface_ts.io import nifti

    out, _ = deid_run
    for name, folder in (("in", phi.folder), ("out", out)):
        plastimatch_convert(["--input", str(folder), "--output-img", str(tmp_path / f"{name}.nii.gz"),
                             "--output-prefix", str(tmp_path / f"{name}_rois"), "--prefix-format", "nii.gz",
                             "--xor-contours", "--output-dose-img", str(tmp_path / f"{name}_dose.nii.gz")])
    assert np.array_equal(nifti.load(tmp_path / "in.nii.gz").array, nifti.load(tmp_path / "out.nii.gz").array)
    assert np.array_equal(nifti.load(tmp_path / "in_dose.nii.gz").array, nifti.load(tmp_path / "out_dose.nii.gz").array)
    rois = [len(list((tmp_path / f"{name}_rois").glob("*.nii.gz"))) for name in ("in", "out")]
    assert rois[0] == rois[1] >= 15


@pytest.mark.parametrize("planted, kind", [(b"Smithson", "PatientName component"), (DATES["CT"].encode(), "date")])
def test_echo_in_contour_data_is_caught(phi, deid_run, tmp_path, key, planted, kind):
    """ContourData is megabytes of numbers that the scan searches by its rarest letter first: a name or a date
    written into it (a malformed DS) is still found, and named by its attribute path."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    from deface_ts.config import DeidConfig
    from deface_ts.deid.session import check_output, prepare
    from deface_ts.deid.study import read_folder

    deid = prepare([ds for _, ds in read_folder(phi.folder)], DeidConfig(key_file=str(key)))
    out, _ = deid_run
    structures = pydicom.dcmread(out / "RTSTRUCT_0001.dcm")
    contour = structures.ROIContourSequence[-1].ContourSequence[-1]
    value = b"\\".join([str(v).encode() for v in contour.ContourData[:-1]] + [planted])
    value += b" " * (len(value) % 2)
    tag = BaseTag(0x30060050)
    contour._dict[tag] = RawDataElement(tag, "DS", len(value), value, 0, False, True)  # written as it is
    scan = tmp_path / "scan"
    scan.mkdir()
    structures.save_as(scan / "RTSTRUCT.dcm", enforce_file_format=True)
    with pytest.raises(Exception) as error:
        check_output(scan, deid)
    assert f"ContourData ({kind})" in str(error.value) and planted.decode() not in str(error.value)


def test_input_datasets_are_left_as_read(phi, key):
    """De-identification copies: the read datasets keep their elements, file meta and preamble. The CT slices'
    elements stay the very objects read (not converted in place), which is what lets the unchanged ones be written
    back as their bytes."""
    from deface_ts.config import DeidConfig
    from deface_ts.deid.session import prepare
    from deface_ts.deid.study import read_folder

    datasets = [ds for _, ds in read_folder(phi.folder)]
    before = [(dict(ds._dict), dict(ds.file_meta._dict), ds.preamble) for ds in datasets]
    deid = prepare(datasets, DeidConfig(key_file=str(key)))
    outputs = [deid.dataset(ds) for ds in datasets]
    for ds, out, (elements, meta, preamble) in zip(datasets, outputs, before):
        assert set(ds._dict) == set(elements) and dict(ds.file_meta._dict) == meta and ds.preamble == preamble
        assert out.file_meta is not ds.file_meta and "PatientName" in ds
        if ds.Modality == "CT":
            assert all(ds._dict[tag] is element for tag, element in elements.items() if tag != 0x00080060)
