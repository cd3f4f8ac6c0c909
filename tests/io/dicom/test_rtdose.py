"""RTDOSE: Gy from DoseGridScaling on the dose's own grid; GridFrameOffsetVector relative or absolute."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from deface_ts.errors import InputError
from deface_ts.io.dicom.rtdose import load_dose
from deface_ts.io.dicom.study import discover


def _dose_file(folder):
    return discover(folder).rtdoses[0]


def _edit_dose(study, tmp_path, edit):
    ds = pydicom.dcmread(study.rtdose_file)
    edit(ds)
    folder = tmp_path / "dose"
    folder.mkdir()
    ds.save_as(folder / "dose.dcm")
    return _dose_file(folder)


def test_gray_from_scaling_and_own_grid(phantom):
    dose = load_dose(_dose_file(phantom.folder))
    ds = pydicom.dcmread(phantom.rtdose_file)
    assert np.allclose(dose.gy.array, ds.pixel_array * float(ds.DoseGridScaling), rtol=1e-6)
    assert np.allclose(dose.gy.affine[:3, 3], np.asarray(ds.ImagePositionPatient, float))
    assert np.allclose(dose.gy.spacing, [float(ds.GridFrameOffsetVector[1]) - float(ds.GridFrameOffsetVector[0]),
                                         *map(float, ds.PixelSpacing)])


def test_absolute_frame_offsets_give_the_same_grid(phantom, tmp_path):
    relative = load_dose(_dose_file(phantom.folder))

    def to_absolute(ds):
        z = float(ds.ImagePositionPatient[2])
        ds.GridFrameOffsetVector = [f"{z + float(v):.3f}" for v in ds.GridFrameOffsetVector]

    absolute = load_dose(_edit_dose(phantom, tmp_path, to_absolute))
    assert float(pydicom.dcmread(absolute.file.path).GridFrameOffsetVector[0]) != 0.0
    assert np.allclose(absolute.gy.affine, relative.gy.affine, atol=1e-3)
    assert np.array_equal(absolute.gy.array, relative.gy.array)


def test_absolute_offsets_on_an_oblique_grid_are_refused(phantom, tmp_path):
    def oblique_absolute(ds):
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
        ds.GridFrameOffsetVector = [f"{5.0 + float(v):.3f}" for v in ds.GridFrameOffsetVector]

    with pytest.raises(InputError, match="absolute GridFrameOffsetVector is only defined for axial"):
        load_dose(_edit_dose(phantom, tmp_path, oblique_absolute))


def test_uneven_frames_are_named(phantom, tmp_path):
    def uneven(ds):
        offsets = [float(v) for v in ds.GridFrameOffsetVector]
        offsets[5] += 1.0
        ds.GridFrameOffsetVector = [f"{v:.3f}" for v in offsets]

    with pytest.raises(InputError, match=r"dose\.dcm: dose frames are not evenly spaced"):
        load_dose(_edit_dose(phantom, tmp_path, uneven))


def test_offsets_neither_relative_nor_absolute_are_refused(phantom, tmp_path):
    def shifted(ds):
        ds.GridFrameOffsetVector = [f"{2.5 + float(v):.3f}" for v in ds.GridFrameOffsetVector]

    with pytest.raises(InputError, match=r"starts at 2\.500 mm, neither 0 \(relative\) nor"):
        load_dose(_edit_dose(phantom, tmp_path, shifted))


@pytest.mark.parametrize("shift_mm, inside", [((0, 0, 0), True), ((150, 0, 0), True), ((400, 0, 0), False),
                                              ((0, -400, 0), False), ((0, 0, 500), False), ((0, 0, -500), False)])
def test_a_dose_grid_entirely_outside_the_ct_is_refused(phantom, tmp_path, shift_mm, inside):
    """One dose point inside the CT is enough (a dose grid may extend past the CT); none is another CT's dose."""
    from deface_ts.io.dicom.case import check_dose_on_ct, load_case

    ct = load_case(phantom.folder).ct.hu
    dose = load_dose(_edit_dose(phantom, tmp_path, lambda ds: setattr(
        ds, "ImagePositionPatient", [float(v) + s for v, s in zip(ds.ImagePositionPatient, shift_mm)])))
    if inside:
        check_dose_on_ct(dose, ct)
    else:
        with pytest.raises(InputError, match=r"dose\.dcm: the RTDOSE grid .* lies entirely outside the CT"):
            check_dose_on_ct(dose, ct)
