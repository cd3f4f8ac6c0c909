"""CT loading: geometry from the headers, HU from the rescale, agreement with independent converters."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from deface_ts.errors import InputError
from deface_ts.geometry.volume import ANTERIOR, SUPERIOR
from deface_ts.io.dicom.case import load_case
from tests.conftest import copy_study


@pytest.mark.parametrize("position", ["HFS", "HFP", "FFS", "FFP"])
def test_ct_matches_simpleitk_voxel_for_voxel(phantom_cache, position):
    study = phantom_cache(position=position)
    case = load_case(study.folder)
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(study.folder), study.series_instance_uid)
    image = reader.Execute() if False else sitk.ReadImage(list(files))
    reference = sitk.GetArrayFromImage(image).astype(np.float32)  # (z, y, x) in ITK's own slice order
    # ITK geometry is LPS too: map each of our voxels to ITK's index through patient coordinates.
    ours = case.ct.hu
    corners = np.array([[0, 0, 0], [ours.shape[0] - 1, 0, 0], [0, ours.shape[1] - 1, 0], [0, 0, ours.shape[2] - 1]])
    for index in corners:
        point = ours.index_to_lps(index[None])[0]
        itk_index = image.TransformPhysicalPointToIndex(point.tolist())
        assert np.allclose(image.TransformIndexToPhysicalPoint(itk_index), point, atol=1e-3)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    origin = np.array(image.GetOrigin())
    itk_affine = np.eye(4)
    itk_affine[:3, :3] = direction * spacing  # columns: x, y, z index steps
    itk_affine[:3, 3] = origin
    # Our (k, j, i) index -> ITK (x=i, y=j, z=k') index through both affines.
    k, j, i = np.indices(ours.shape).reshape(3, -1)
    lps = ours.index_to_lps(np.column_stack([k, j, i]))
    itk_index = np.rint(np.linalg.solve(itk_affine[:3, :3], (lps - origin).T).T).astype(int)
    assert np.allclose(itk_index @ itk_affine[:3, :3].T + origin, lps, atol=1e-3)
    values = reference[itk_index[:, 2], itk_index[:, 1], itk_index[:, 0]]
    assert np.array_equal(values, ours.array.ravel())


def test_same_anatomy_in_patient_space_for_every_position(phantom_cache):
    """The phantom is one patient scanned four ways: HU at the same LPS points must agree."""
    samples = None
    for position in ["HFS", "HFP", "FFS", "FFP"]:
        study = phantom_cache(position=position)
        ct = load_case(study.folder).ct.hu
        points = np.array([study.eye_centres["left"], study.eye_centres["right"]])
        index = np.rint(ct.lps_to_index(points)).astype(int)
        values = ct.array[tuple(index.T)]
        if samples is None:
            samples = values
        assert np.allclose(values, samples, atol=60), position  # noise differs, anatomy must not
        # anterior and superior come from the affine: the eyes are anterior of the head centre
        centre = ct.index_to_lps(np.array(ct.shape)[None] / 2.0)[0]
        assert (points.mean(axis=0) - centre) @ ANTERIOR > 40
        assert abs((points[0] - points[1]) @ SUPERIOR) < 5


def test_rescale_and_unsigned_storage(phantom_cache):
    signed = load_case(phantom_cache(stored_dtype="int16").folder).ct
    unsigned = load_case(phantom_cache(stored_dtype="uint16").folder).ct
    assert unsigned.stored.dtype == np.uint16 and signed.stored.dtype == np.int16
    assert np.all(unsigned.intercept == -1024)
    assert np.allclose(unsigned.hu.array, np.clip(signed.hu.array, -1024, 3071), atol=1.0)  # 12 bits stored
    assert unsigned.hu.array.min() >= -1024 - 1e-3


@pytest.mark.parametrize("dtype", ["int16", "uint16"])
def test_one_ct_array_and_stored_values_exact_per_slice(phantom_cache, dtype):
    """HU replace the stored values in their buffer when exact; each slice's stored values come back bit for
    bit, as the files hold them (the writer copies unchanged voxels from them)."""
    ct = load_case(phantom_cache(stored_dtype=dtype).folder).ct
    assert ct.kept_stored is None and ct.hu.array.dtype == np.int16
    for k, file in enumerate(ct.files):
        expected = pydicom.dcmread(file.path).pixel_array
        stored = ct.stored_slice(k)
        assert stored.dtype == expected.dtype == np.dtype(dtype) and np.array_equal(stored, expected)
    assert np.array_equal(ct.stored, np.stack([pydicom.dcmread(f.path).pixel_array for f in ct.files]))


def test_sorting_ignores_instance_number_and_file_names(phantom_cache, tmp_path):
    study = phantom_cache(position="FFS")
    folder = copy_study(study, tmp_path / "shuffled")
    reference = load_case(study.folder).ct.hu.array
    files = sorted((folder).rglob("*.dcm"))
    rng = np.random.default_rng(1)
    for path in files:
        ds = pydicom.dcmread(path)
        if ds.Modality == "CT":
            ds.InstanceNumber = int(rng.integers(1, 1000))
            ds.save_as(path)
            path.rename(path.with_name(f"x{rng.integers(1e9)}.dcm"))
    assert np.array_equal(load_case(folder).ct.hu.array, reference)


def _ct_files(folder):
    out = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if ds.Modality == "CT":
                out.append((float(np.dot(ds.ImagePositionPatient, [0, 0, 1])), path))
    return [p for _, p in sorted(out)]


def test_missing_slice_is_named(phantom, tmp_path):
    folder = copy_study(phantom, tmp_path / "gap")
    files = _ct_files(folder)
    files[10].unlink()
    with pytest.raises(InputError, match=r"1 slice\(s\) missing between"):
        load_case(folder)


def test_non_uniform_spacing_is_refused(phantom, tmp_path):
    folder = copy_study(phantom, tmp_path / "uneven")
    path = _ct_files(folder)[20]
    ds = pydicom.dcmread(path)
    position = [float(v) for v in ds.ImagePositionPatient]
    position[2] += 1.0
    ds.ImagePositionPatient = position
    ds.save_as(path)
    with pytest.raises(InputError, match="non-uniform slice spacing"):
        load_case(folder)


def test_gantry_tilt_is_refused(phantom, tmp_path):
    folder = copy_study(phantom, tmp_path / "tilt")
    for n, path in enumerate(_ct_files(folder)):
        ds = pydicom.dcmread(path)
        position = [float(v) for v in ds.ImagePositionPatient]
        position[1] += n * 0.5  # sheared stack, as a tilted gantry produces
        ds.ImagePositionPatient = position
        ds.GantryDetectorTilt = 9.5
        ds.save_as(path)
    with pytest.raises(InputError, match="gantry tilt"):
        load_case(folder)


def test_truncated_ct_file_is_named(phantom, tmp_path):
    folder = copy_study(phantom, tmp_path / "truncated")
    path = _ct_files(folder)[5]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=path.name):
        load_case(folder)


def test_compressed_transfer_syntax_is_decoded(phantom, tmp_path):
    from pydicom.uid import RLELossless

    folder = copy_study(phantom, tmp_path / "rle")
    for path in _ct_files(folder):
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    assert np.array_equal(load_case(folder).ct.hu.array, load_case(phantom.folder).ct.hu.array)


def test_pixels_decoded_beside_equal_those_decoded_here(phantom_cache):
    """load_case decodes the CT in a forked child while it reads the RTSTRUCT on the grid from the headers."""
    from deface_ts.io.dicom.ct import PendingCt, load_ct
    from deface_ts.io.dicom.study import discover, select

    study = phantom_cache()
    files = select(discover(study.folder)).ct
    pending = PendingCt(files, beside=True)
    header = files[0].header
    assert pending.grid.shape == (len(files), header.Rows, header.Columns) and pending.grid.array.strides == (0, 0, 0)
    beside = pending.result()
    here = load_ct(files)
    assert beside.hu.array.dtype == np.int16 and np.array_equal(beside.hu.array, here.hu.array)
    assert np.array_equal(beside.hu.affine, here.hu.affine) and beside.stored_dtype == here.stored_dtype
    case = load_case(study.folder)
    assert np.array_equal(case.ct.hu.array, here.hu.array)
    body = next(r for r in case.structures.rois if r.role == "body")
    assert body.volume_voxels > 0 and body.mask.full(case.ct.hu.shape).any()


def test_a_slice_decoding_to_another_type_is_refused_by_name(phantom, tmp_path):
    folder = copy_study(phantom, tmp_path / "in")
    paths = _ct_files(folder)
    ds = pydicom.dcmread(paths[4])
    ds.PixelRepresentation = 1 - int(ds.PixelRepresentation)  # the same bytes read as the other signedness
    ds.save_as(paths[4])
    with pytest.raises(InputError) as error:
        load_case(folder)
    assert str(paths[4]) in str(error.value) and "decodes to" in str(error.value)


def test_an_error_while_the_ct_decodes_leaves_no_child(phantom, tmp_path):
    """An unreadable RTSTRUCT is found while the child decodes: the child is stopped, the error names the file."""
    import multiprocessing

    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    folder = copy_study(phantom, tmp_path / "in")
    path = folder / phantom.rtstruct_file.relative_to(phantom.folder)
    ds = pydicom.dcmread(path)
    text = b"1.0\\abc\\2.0 "
    ds.ROIContourSequence[0].ContourSequence[0][0x30060050] = RawDataElement(Tag(0x30060050), "DS", len(text), text,
                                                                              0, False, True)
    ds.save_as(path)
    running = set(multiprocessing.active_children())  # workers other tests of this process left running
    with pytest.raises(InputError, match="unreadable contour"):
        load_case(folder)
    assert set(multiprocessing.active_children()) <= running


def test_a_ct_of_12_bits_allocated_is_refused_by_name(phantom, tmp_path):
    folder = copy_study(phantom, tmp_path / "in")
    paths = _ct_files(folder)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.BitsAllocated = 12
        ds.save_as(path)
    with pytest.raises(InputError, match="BitsAllocated 12 is not a CT's"):
        load_case(folder)


def test_hu_not_an_integer_shift_come_as_float_beside_the_stored_values(phantom, tmp_path):
    """A slice with RescaleSlope 0.5: the decoding child leaves the stored values, HU are float32 here."""
    folder = copy_study(phantom, tmp_path / "in")
    paths = _ct_files(folder)
    ds = pydicom.dcmread(paths[2])
    ds.RescaleSlope = 0.5
    ds.save_as(paths[2])
    ct = load_case(folder).ct
    assert ct.hu.array.dtype == np.float32 and ct.kept_stored is not None
    for k, file in enumerate(ct.files):
        raw = pydicom.dcmread(file.path)
        expected = raw.pixel_array * float(raw.RescaleSlope) + float(raw.RescaleIntercept)
        assert np.array_equal(ct.hu.array[k], expected.astype(np.float32))
        assert np.array_equal(ct.stored_slice(k), raw.pixel_array)
