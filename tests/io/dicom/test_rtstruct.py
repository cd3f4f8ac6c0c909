"""RTSTRUCT rasterisation (even-odd, several contours per slice) and exact re-contouring."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from deface_ts.geometry.masks import BoxMask
from deface_ts.io import nifti
from deface_ts.io.dicom.case import load_case
from deface_ts.io.dicom.rtstruct import changed_slices, contour_slice, fill_even_odd, rasterise, roi_role
from tests.checkers import dice, plastimatch_convert, requires_plastimatch, resample_nearest


@pytest.mark.parametrize(
    "name, kind, role",
    [("BODY", "", "body"), ("External", "EXTERNAL", "body"), ("PTV_70", "", "ptv"), ("CTV high", "CTV", "ctv"),
     ("gtv_p", "", "gtv"), ("Parotid_L", "ORGAN", "oar"), ("z_ring", "AVOIDANCE", "other"), ("Foo", "PTV", "ptv")],
)
def test_roles_from_type_and_name(name, kind, role):
    assert roi_role(name, kind) == role


def test_hole_and_two_contours_per_slice(phantom):
    structures = load_case(phantom.folder).structures
    holed = [r for r in structures.rois if r.name == phantom.roi_names["hole"]][0]
    twin = [r for r in structures.rois if r.name == phantom.roi_names["two_contours"]][0]
    # the holed ROI: some slice has two contours (outer + inner) and its mask is a ring, not a disc
    counts = np.bincount([k for k in holed.contour_slices if k is not None])
    k = int(np.argmax(counts))
    assert counts[k] >= 2
    ring = holed.mask.array[k - holed.mask.offset[0]]
    from scipy import ndimage

    assert ndimage.binary_fill_holes(ring).sum() > ring.sum()  # the inner contour is a hole
    counts = np.bincount([k for k in twin.contour_slices if k is not None])
    assert counts.max() >= 2


def test_recontour_reproduces_any_mask_exactly(phantom):
    """Contours from contour_slice, rasterised again, give back the same voxels (holes and islands)."""
    case = load_case(phantom.folder)
    ct = case.ct.hu
    rng = np.random.default_rng(0)
    mask = np.zeros(ct.shape, dtype=bool)
    mask[10, 20:60, 30:70] = True
    mask[10, 30:40, 40:50] = False  # hole
    mask[10, 45:50, 45:48] = True  # island in the hole region? no: inside the ring
    mask[11] = rng.random(ct.shape[1:]) > 0.7  # salt and pepper: many tiny contours
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    contours = []
    for k in (10, 11):
        for polygon in contour_slice(mask[k]):
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            points = ct.index_to_lps(np.column_stack([np.full(len(polygon), float(k)), polygon]))
            c.ContourData = [f"{v:.3f}" for v in points.ravel()]
            contours.append(c)
    item.ContourSequence = Sequence(contours)
    back, _, _ = rasterise(item, ct)
    assert np.array_equal(back.full(ct.shape), mask)


@requires_plastimatch
def test_masks_agree_with_plastimatch(phantom, tmp_path):
    case = load_case(phantom.folder)
    out = tmp_path / "pl"
    plastimatch_convert(["--input", str(phantom.folder), "--output-prefix", str(out), "--prefix-format", "nii.gz",
                         "--xor-contours", "--output-img", str(tmp_path / "ct.nii.gz")])
    files = {p.name[: -len(".nii.gz")]: p for p in out.glob("*.nii.gz")}
    checked = 0
    for roi in case.structures.rois:
        if not roi.volume_voxels:
            continue
        wanted = roi.name.replace("_", " ").lower()
        matches = [p for stem, p in files.items() if stem.replace("_", " ").lower() == wanted]
        assert matches, f"plastimatch wrote no mask for {roi.name!r}: {sorted(files)}"
        theirs = resample_nearest(nifti.load(matches[0]), case.ct.hu) > 0
        ours = roi.mask.full(case.ct.hu.shape)
        assert theirs.shape == ours.shape
        assert dice(ours, theirs) >= 0.98, roi.name
        checked += 1
    assert checked >= 15


def _cord_in_a_copy(phantom, folder):
    """A copy of the phantom study, its RTSTRUCT (path, dataset) and the cord's ROIContourSequence item."""
    from tests.conftest import copy_study

    copy_study(phantom, folder)
    path = folder / phantom.rtstruct_file.relative_to(phantom.folder)
    ds = pydicom.dcmread(path)
    name = phantom.roi_names["cord"]
    number = next(int(r.ROINumber) for r in ds.StructureSetROISequence if r.ROIName == name)
    return path, ds, name, next(c for c in ds.ROIContourSequence if int(c.ReferencedROINumber) == number)


def test_contours_outside_the_ct_are_named_in_a_warning(phantom, tmp_path):
    folder = tmp_path / "outside"
    path, ds, name, item = _cord_in_a_copy(phantom, folder)
    contour = item.ContourSequence[0]
    points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
    points[:, 2] -= 500.0  # far below the first slice
    contour.ContourData = [f"{v:.3f}" for v in points.ravel()]
    ds.save_as(path)
    case = load_case(folder)
    assert any(name in w and "outside the CT" in w for w in case.warnings)
    assert case.structures.get(name).volume_voxels > 0


def test_changed_slices_inside_and_outside_the_old_box():
    full = np.zeros((12, 20, 20), dtype=bool)
    full[3:8, 5:10, 5:10] = True
    old = BoxMask.from_full(full)
    assert changed_slices(old, full) == []
    new = full.copy()
    new[4, 6, 6] = False  # inside the box
    new[10, 0, 0] = True  # a slice outside the box
    new[5, 19, 19] = True  # a slice inside the box's range, a voxel outside it
    assert changed_slices(old, new) == [4, 5, 10]
    empty = BoxMask.from_full(np.zeros_like(full))
    assert changed_slices(empty, full) == [3, 4, 5, 6, 7]


def test_contours_of_a_cropped_slice_are_in_full_slice_coordinates():
    rng = np.random.default_rng(3)
    mask = np.zeros((64, 80), dtype=bool)
    mask[20:50, 30:70] = rng.random((30, 40)) > 0.35
    polygons = contour_slice(mask)
    assert np.array_equal(fill_even_odd(polygons, mask.shape), mask)
    assert contour_slice(np.zeros((5, 5), dtype=bool)) == []


@pytest.mark.parametrize("raw, expected", [
    (b"1\\2\\3\\4.5\\-5\\+6E+1", [[1, 2, 3], [4.5, -5, 60]]),
    (b"1\\2\\3\\", [[1, 2, 3]]),  # the empty last value some exports leave
    (b" 1\\ 2 \\3\x00", [[1, 2, 3]]),
    (b"1\\2", None),
    (b"1\\nan\\3", None),
    (b"", []),
])
def test_contour_data_from_raw_bytes(raw, expected):
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    from deface_ts.io.dicom.rtstruct import _contour_points

    item = Dataset()
    item[0x30060050] = RawDataElement(Tag(0x30060050), "DS", len(raw), raw, 0, False, True)
    if expected is None:
        with pytest.raises(ValueError, match="ContourData"):
            _contour_points(item)
    else:
        assert _contour_points(item).reshape(-1, 3).tolist() == expected


def test_contour_without_points_is_ignored_with_a_warning(phantom, tmp_path):
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    folder = tmp_path / "empty"
    path, ds, name, item = _cord_in_a_copy(phantom, folder)
    item.ContourSequence[0][0x30060050] = RawDataElement(Tag(0x30060050), "DS", 0, b"", 0, False, True)
    item.ContourSequence[0].NumberOfContourPoints = 0
    ds.save_as(path)
    case = load_case(folder)
    assert any(name in w and "1 contour(s) without points were ignored" in w for w in case.warnings)
    roi = case.structures.get(name)
    assert roi.volume_voxels > 0 and roi.contour_slices[0] is None
