"""De-identification inside `deface-ts deface` and `batch`: on by default, off on request, fail closed."""

from __future__ import annotations

import csv
import json

import pydicom
import pytest

from deface_ts.apps.cli import main
from tests.deid.phi_study import PATIENT_ID, write_phi_study
from tests.deid.test_deid_headers import planted_in

FAST = ["--method", "eyes", "--verify", "off"]


@pytest.fixture(scope="module")
def phi(tmp_path_factory):
    return write_phi_study(tmp_path_factory.mktemp("phi-deface") / "study")


@pytest.fixture(scope="module")
def defaced(phi, tmp_path_factory):
    out = tmp_path_factory.mktemp("deface") / "out"
    assert main(["deface", str(phi.folder), str(out), *FAST, "--patient-id", "HN-017"]) == 0
    return out


def test_deface_deidentifies_by_default(phi, defaced):
    assert planted_in(defaced, phi.original_uids) == []  # DICOM, NIfTI, QC pictures, report, file names
    text = (defaced / "report.json").read_text()
    assert str(phi.folder) not in text
    report = json.loads(text)
    assert report["deid"]["profile"] == "rt-research" and report["deid"]["patient_id"] == "HN-017"
    assert any(option.startswith("113102") for option in report["deid"]["options"])
    ct = pydicom.dcmread(defaced / "dicom" / "CT_0001.dcm")
    assert (ct.PatientID, ct.PatientIdentityRemoved, ct.RecognizableVisualFeatures) == ("HN-017", "YES", "NO")
    codes = {item.CodeValue for item in ct.DeidentificationMethodCodeSequence}
    assert {"113100", "113102", "113107", "113108"} <= codes
    linkage = defaced.parent / "out.linkage.csv"
    assert {"kind": "PatientID", "original": PATIENT_ID, "new": "HN-017"} in list(csv.DictReader(linkage.read_text().splitlines()))


def test_deface_with_deid_off_keeps_headers(phi, tmp_path):
    out = tmp_path / "out"
    assert main(["deface", str(phi.folder), str(out), *FAST, "--deid", "off", "--no-nifti"]) == 0
    ct = pydicom.dcmread(out / "dicom" / "CT_0001.dcm")
    assert (str(ct.PatientName), ct.PatientID, ct.InstitutionName) == ("Smithson^Johanna^Q", PATIENT_ID,
                                                                       "St Elsewhere Hospital")
    assert json.loads((out / "report.json").read_text())["deid"]["profile"] == "off"
    assert not (tmp_path / "out.linkage.csv").exists()


def test_deface_broken_profile_fails_closed(phi, tmp_path, capsys):
    profile = tmp_path / "keeps-reviewer.yaml"
    profile.write_text("actions:\n  ReviewerName: K\n")
    out = tmp_path / "out"
    assert main(["deface", str(phi.folder), str(out), *FAST, "--deid", str(profile)]) == 6
    err = capsys.readouterr().err
    assert "dicom/RTPLAN.dcm: ReviewerName (" in err and "Gregory" not in err and "House" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keeps-reviewer.yaml"]  # no output, no linkage


def test_linkage_inside_output_is_refused(phi, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["deface", str(phi.folder), str(out), *FAST, "--linkage", str(out / "linkage.csv")]) == 4
    assert "outside the output folder" in capsys.readouterr().err and not out.exists()


def test_batch_pseudonyms_from_manifest_and_one_linkage_folder(phi, tmp_path, capsys):
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,input,patient_id\nfirst,{phi.folder},HN-001\nsecond,{phi.folder},\n")
    root = tmp_path / "shared"
    assert main(["batch", str(manifest), str(root), *FAST, "--no-nifti"]) == 0
    first = pydicom.dcmread(root / "first" / "dicom" / "RTPLAN.dcm")
    second = pydicom.dcmread(root / "second" / "dicom" / "RTPLAN.dcm")
    assert first.PatientID == "HN-001" and second.PatientID.startswith("ANON-")
    # One patient, one key: the two cases share dates and UIDs, so they stay linked.
    assert (first.StudyInstanceUID, first.RTPlanDate) == (second.StudyInstanceUID, second.RTPlanDate)
    assert sorted(p.name for p in (tmp_path / "shared.linkage").iterdir()) == ["first.csv", "second.csv"]
    assert not any(p.name.endswith(".csv") for p in root.rglob("*"))


def test_batch_linkage_inside_output_root_is_refused(phi, tmp_path):
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,input\nfirst,{phi.folder}\n")
    root = tmp_path / "shared"
    assert main(["batch", str(manifest), str(root), *FAST, "--linkage", str(root / "keys")]) == 4
    assert "outside the output root" in json.loads((root / "first.failed.json").read_text())["message"]
