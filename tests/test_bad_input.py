"""Bad input through the command line: a named error, exit code ≠ 0, nothing written, input untouched."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from deface_ts.apps.cli import main
from tests.conftest import copy_study, tree_digest


def _ct_paths(folder):
    items = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if ds.get("Modality") == "CT":
                items.append((float(ds.ImagePositionPatient[2]), path))
    return [p for _, p in sorted(items)]


def empty(study, folder):
    folder.mkdir()


def no_ct(study, folder):
    copy_study(study, folder)
    for path in _ct_paths(folder):
        path.unlink()


def two_series(study, folder):
    copy_study(study, folder / "a")
    copy_study(study, folder / "b")
    for path in _ct_paths(folder / "b"):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.save_as(path)


def missing_slice(study, folder):
    copy_study(study, folder)
    _ct_paths(folder)[7].unlink()


def uneven(study, folder):
    copy_study(study, folder)
    path = _ct_paths(folder)[9]
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1]),
                               float(ds.ImagePositionPatient[2]) + 0.9]
    ds.save_as(path)


def tilted(study, folder):
    copy_study(study, folder)
    for n, path in enumerate(_ct_paths(folder)):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1]) + 0.4 * n,
                                   float(ds.ImagePositionPatient[2])]
        ds.save_as(path)


def other_frame(study, folder):
    copy_study(study, folder)
    path = folder / study.rtstruct_file.relative_to(study.folder)
    ds = pydicom.dcmread(path)
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3"
    ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.4"
    ds.save_as(path)


def bad_contour(study, folder):
    copy_study(study, folder)
    path = folder / study.rtstruct_file.relative_to(study.folder)
    ds = pydicom.dcmread(path)
    contour = ds.ROIContourSequence[2].ContourSequence[0]
    text = b"1.0\\abc\\2.0 "  # a coordinate that is not a number
    contour[0x30060050] = RawDataElement(Tag(0x30060050), "DS", len(text), text, 0, False, True)
    ds.save_as(path)


def dose_elsewhere(study, folder):
    """The dose of this plan and frame of reference, but its grid 2 m away from the CT (a wrong file)."""
    copy_study(study, folder)
    path = folder / study.rtdose_file.relative_to(study.folder)
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [float(v) + 2000.0 for v in ds.ImagePositionPatient]
    ds.save_as(path)


def truncated_needed(study, folder):
    copy_study(study, folder)
    path = _ct_paths(folder)[3]
    path.write_bytes(path.read_bytes()[:-5000])


CASES = [
    (empty, "empty", 3),
    (no_ct, "no CT image series", 3),
    (two_series, "choose one with --series", 3),
    (missing_slice, "missing between", 3),
    (uneven, "non-uniform slice spacing", 3),
    (tilted, "gantry tilt", 3),
    (other_frame, "frame of reference", 3),
    (truncated_needed, "cannot read CT pixel data", 3),
    (dose_elsewhere, "dose.dcm: the RTDOSE grid (LPS ", 3),
    (bad_contour, "unreadable contour (could not convert string 'abc'", 3),
]


@pytest.mark.parametrize("command", ["convert", "deface"])
@pytest.mark.parametrize("make, message, code", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input(phantom, tmp_path, capsys, command, make, message, code):
    folder = tmp_path / "input"
    make(phantom, folder)
    before = tree_digest(folder)
    out = tmp_path / "out"
    assert main([command, str(folder), str(out)]) == code
    err = capsys.readouterr().err
    assert message in err and "error" in err
    assert not out.exists()
    assert tree_digest(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input"]  # no temporary folder left behind


@pytest.mark.parametrize("command", ["convert", "deface"])
def test_output_rules(phantom, tmp_path, capsys, command):
    folder = copy_study(phantom, tmp_path / "input")
    before = tree_digest(folder)
    inside = folder / "out"
    assert main([command, str(folder), str(inside)]) == 4
    assert "inside the input" in capsys.readouterr().err and not inside.exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main([command, str(folder), str(busy)]) == 4
    assert "--overwrite" in capsys.readouterr().err
    assert (busy / "keep.txt").read_text() == "mine"
    assert main([command, str(folder), str(busy), "--overwrite"]) == 0
    assert not (busy / "keep.txt").exists()
    assert tree_digest(folder) == before


def test_dose_without_plan_still_defaces(phantom, tmp_path, capsys):
    folder = copy_study(phantom, tmp_path / "input")
    (folder / phantom.rtplan_file.relative_to(phantom.folder)).unlink()
    assert main(["deface", str(folder), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "dicom" / "RTDOSE_1.dcm").exists()
