"""`deface-ts convert`: the CT agrees voxel for voxel and in affine with independent converters."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from deface_ts.apps.cli import main
from deface_ts.io import nifti
from deface_ts.io.dicom.case import load_case
from tests.checkers import plastimatch_convert, requires_plastimatch


def _same_grid_and_values(theirs, ours):
    """Every voxel centre of ours is a voxel centre of theirs (any axis order) with the same value."""
    k, j, i = np.indices(ours.shape).reshape(3, -1)
    index = theirs.lps_to_index(ours.index_to_lps(np.column_stack([k, j, i])))
    assert np.abs(index - np.rint(index)).max() < 1e-3, "grids differ"
    index = np.rint(index).astype(int)
    assert sorted(theirs.shape) == sorted(ours.shape)
    assert np.array_equal(theirs.array[tuple(index.T)].reshape(ours.shape), ours.array)


@pytest.fixture(scope="module")
def converted(phantom_cache, tmp_path_factory):
    out = {}
    for position in ("HFS", "FFS", "HFP"):
        study = phantom_cache(position=position)
        folder = tmp_path_factory.mktemp("convert") / position
        assert main(["convert", str(study.folder), str(folder)]) == 0
        out[position] = (study, folder)
    return out


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP"])
def test_ct_agrees_with_dicom2nifti(converted, tmp_path, position):
    import dicom2nifti

    study, folder = converted[position]
    ct_only = tmp_path / "ct"
    ct_only.mkdir()
    for path in study.ct_files:
        shutil.copy(path, ct_only / path.name)
    dicom2nifti.dicom_series_to_nifti(str(ct_only), str(tmp_path / "d2n.nii.gz"), reorient_nifti=False)
    ours = nifti.load(folder / "ct.nii.gz")
    theirs = nifti.load(tmp_path / "d2n.nii.gz")
    _same_grid_and_values(theirs, ours)


@requires_plastimatch
@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_ct_agrees_with_plastimatch(converted, tmp_path, position):
    study, folder = converted[position]
    ct_only = tmp_path / "ct"
    ct_only.mkdir()
    for path in study.ct_files:
        shutil.copy(path, ct_only / path.name)
    plastimatch_convert(["--input", str(ct_only), "--output-img", str(tmp_path / "pl.nii.gz")])
    _same_grid_and_values(nifti.load(tmp_path / "pl.nii.gz"), nifti.load(folder / "ct.nii.gz"))


def test_sidecar_masks_and_dose(converted):
    study, folder = converted["HFS"]
    sidecar = json.loads((folder / "convert.json").read_text())
    case = load_case(study.folder)
    assert {r["name"] for r in sidecar["rois"]} == {r.name for r in case.structures.rois}
    for entry in sidecar["rois"]:
        mask = nifti.load(folder / entry["file"])
        roi = case.structures.get(entry["name"])
        assert int((mask.array > 0).sum()) == roi.volume_voxels
        assert entry["role"] == roi.role
    dose = nifti.load(folder / sidecar["doses"][0]["file"])
    assert np.allclose(dose.array, case.doses[0].gy.array)
    assert np.allclose(dose.affine, case.doses[0].gy.affine)
    # the NIfTI affine is RAS: the first axis of the HFS CT (columns) runs to patient left = RAS -x
    image = nib.load(str(folder / "ct.nii.gz"))
    assert image.affine[0, 0] < 0
