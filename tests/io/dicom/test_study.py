"""Discovery by content, selection of the CT series and its RT objects, and `info`."""

from __future__ import annotations

import json
import shutil

import pydicom
import pytest

from deface_ts.apps.cli import main
from deface_ts.apps.info import describe
from deface_ts.errors import InputError
from deface_ts.io.dicom.study import discover, select
from tests.conftest import copy_study


def test_finds_every_object_by_content_not_name(phantom, tmp_path):
    folder = copy_study(phantom, tmp_path / "renamed")
    for n, path in enumerate(sorted(folder.rglob("*.dcm"))):
        path.rename(folder / f"file{n:04d}.bin")  # flatten and hide the kind from the name
    study = select(discover(folder))
    assert len(study.ct) == len(phantom.ct_files)
    assert study.rtstruct is not None and study.rtplan is not None and len(study.rtdose) == 1
    assert not study.warnings


def test_info_summary_and_json(phantom, capsys):
    summary = describe(phantom.folder)
    assert summary["ct"]["patient_position"] == "HFS"
    assert summary["ct"]["slices"] == len(phantom.ct_files)
    roles = {r["name"]: r["role"] for r in summary["rtstruct"]["rois"]}
    assert roles[phantom.roi_names["body"]] == "body"
    assert roles[phantom.roi_names["ptv_face"]] == "ptv"
    assert summary["rtdose"][0]["bits"] in (16, 32)
    assert main(["info", str(phantom.folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ct"]["series_instance_uid"] == phantom.series_instance_uid
    assert main(["info", str(phantom.folder)]) == 0
    text = capsys.readouterr().out
    assert "HFS" in text and phantom.roi_names["ptv_face"] in text and "RTDOSE" in text


def test_two_series_need_a_choice(phantom_cache, tmp_path):
    a, b = phantom_cache(seed=1, patient_id="P1"), phantom_cache(seed=2, patient_id="P2")
    shutil.copytree(a.folder, tmp_path / "tree" / "a")
    shutil.copytree(b.folder, tmp_path / "tree" / "b")
    found = discover(tmp_path / "tree")
    with pytest.raises(InputError, match="2 CT series found; choose one with --series") as error:
        select(found)
    assert a.series_instance_uid in str(error.value) and b.series_instance_uid in str(error.value)
    chosen = select(found, b.series_instance_uid)
    assert chosen.rtstruct is not None and str(chosen.rtstruct.path).startswith(str(tmp_path / "tree" / "b"))
    assert len(chosen.rtdose) == 1


def test_dose_without_its_plan_warns_and_loads(phantom, tmp_path):
    folder = copy_study(phantom, tmp_path / "noplan")
    (folder / phantom.rtplan_file.relative_to(phantom.folder)).unlink()
    study = select(discover(folder))
    assert study.rtplan is None and len(study.rtdose) == 1
    assert any("RTPLAN" in w and "not in the input" in w for w in study.warnings)


def test_rtstruct_of_another_frame_of_reference_is_an_error(phantom, tmp_path):
    folder = copy_study(phantom, tmp_path / "otherfor")
    path = folder / phantom.rtstruct_file.relative_to(phantom.folder)
    ds = pydicom.dcmread(path)
    for frame in ds.ReferencedFrameOfReferenceSequence:
        frame.FrameOfReferenceUID = "1.2.3.4.5"
        for st in frame.RTReferencedStudySequence:
            for se in st.RTReferencedSeriesSequence:
                se.SeriesInstanceUID = "1.2.3.4.6"
    ds.save_as(path)
    with pytest.raises(InputError, match="frame of reference"):
        select(discover(folder))


def test_unreadable_files_are_reported_and_skipped(phantom, tmp_path):
    folder = copy_study(phantom, tmp_path / "junk")
    (folder / "notes.txt").write_text("not dicom")
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    found = discover(folder)
    skipped = {p.name for p, _ in found.skipped}
    assert {"notes.txt", "broken.dcm"} <= skipped
    assert len(select(found).ct) == len(phantom.ct_files)


def test_empty_folder_and_no_ct(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        discover(tmp_path / "empty")
    (tmp_path / "noct").mkdir()
    (tmp_path / "noct" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no CT image series"):
        select(discover(tmp_path / "noct"))
