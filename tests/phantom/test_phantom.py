"""The phantom study itself: valid DICOM, one anatomy in patient space, contours that give back the masks.

The reader here is deliberately independent of deface_ts.io.dicom (pydicom plus a tiny even-odd rasteriser),
so a bug in the product's loader cannot hide a bug in its test data.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from skimage.draw import polygon as fill_polygon

from deface_ts.geometry.volume import ANTERIOR, Volume, affine_from_dicom
from deface_ts.io.dicom.case import load_case
from deface_ts.phantom import write_phantom_study
from deface_ts.phantom.anatomy import EYE_KEYS, ROIS, PhantomOptions, evaluate, evaluate_boxes, phantom_hu
from deface_ts.phantom.surfaces import CHIN, EYE_CENTRES, NOSE_TIP
from tests.checkers import dciodvfy_errors, dice, requires_dciodvfy
from tests.conftest import SMALL

#: ~96 x 96 x 48 with 2.5-3 mm voxels: every position in a couple of seconds.
TINY = {"rows": 96, "columns": 96, "pixel_spacing": 2.5, "slices": 48, "slice_thickness": 4.0}
BRAIN = np.array([0.0, 10.0, 60.0])


def read_ct(files: list[Path]) -> Volume:
    """HU and affine of a CT series, slices sorted along the normal (never by InstanceNumber or name)."""
    datasets = [pydicom.dcmread(f) for f in files]
    orientation = np.asarray(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(orientation[:3], orientation[3:])
    datasets.sort(key=lambda ds: float(np.asarray(ds.ImagePositionPatient, float) @ normal))
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in datasets])
    step = float(np.diff(positions @ normal).mean())
    spacing = [float(v) for v in datasets[0].PixelSpacing]
    affine = affine_from_dicom(positions[0], orientation, (step, spacing[0], spacing[1]))
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets])
    return Volume(hu.astype(np.float32), affine)


def sample(ct: Volume, points: np.ndarray) -> np.ndarray:
    index = np.rint(ct.lps_to_index(np.atleast_2d(points))).astype(int)
    return ct.array[tuple(index.T)]


def rasterise(ds: pydicom.Dataset, name: str, ct: Volume) -> tuple[np.ndarray, int]:
    """Even-odd fill of one ROI's contours on the CT grid; also the most contours found on one slice."""
    number = next(int(r.ROINumber) for r in ds.StructureSetROISequence if r.ROIName == name)
    item = next(c for c in ds.ROIContourSequence if int(c.ReferencedROINumber) == number)
    mask = np.zeros(ct.shape, dtype=bool)
    per_slice: dict[int, int] = {}
    for contour in item.get("ContourSequence", []):
        points = np.asarray(contour.ContourData, float).reshape(-1, 3)
        assert int(contour.NumberOfContourPoints) == len(points) and contour.ContourGeometricType == "CLOSED_PLANAR"
        index = ct.lps_to_index(points)
        k = int(np.rint(index[0, 0]))
        assert np.allclose(index[:, 0], k, atol=1e-3)  # every point lies on its slice
        rr, cc = fill_polygon(index[:, 1], index[:, 2], ct.shape[1:])
        layer = np.zeros(ct.shape[1:], dtype=bool)
        layer[rr, cc] = True
        mask[k] ^= layer  # even-odd: an inner contour is a hole
        per_slice[k] = per_slice.get(k, 0) + 1
    return mask, max(per_slice.values(), default=0)


@requires_dciodvfy
@pytest.mark.parametrize("options", [{}, {"stored_dtype": "uint16", "dose_bits": 16, "position": "FFS"},
                                     {"position": "HFP", "roi_naming": "legacy", "fov_padding": True,
                                      "rescale_slope": 0.5}])
def test_every_object_is_valid(phantom_cache, tmp_path, options):
    study = phantom_cache(**options)
    for path in [study.ct_files[0], study.ct_files[-1], study.rtstruct_file, study.rtplan_file, study.rtdose_file]:
        assert dciodvfy_errors(path, tmp_path) == [], path


@pytest.fixture(scope="module")
def positions(tmp_path_factory):
    root = tmp_path_factory.mktemp("positions")
    return {p: write_phantom_study(root / p, PhantomOptions(position=p, **TINY)) for p in ("HFS", "HFP", "FFS", "FFP")}


def test_same_anatomy_in_patient_space_for_every_position(positions):
    points = np.array([EYE_CENTRES["left"], EYE_CENTRES["right"], NOSE_TIP, NOSE_TIP + 5 * ANTERIOR, BRAIN, CHIN,
                       CHIN + 8 * ANTERIOR, [0.0, 30.0, -80.0]])  # the last one: spinal cord
    truth = phantom_hu(points)
    assert np.all((truth[:2] > 0) & (truth[:2] < 20))  # vitreous
    assert truth[2] > -150 and truth[3] == -1000.0 and truth[6] == -1000.0  # nose tip, then air
    assert 20 < truth[4] < 50 and truth[7] == 35.0  # brain, cord
    values = {}
    for position, study in positions.items():
        ct = read_ct(study.ct_files)
        assert np.allclose(ct.affine, study.ct_affine, atol=1e-3)
        values[position] = sample(ct, points)
        assert np.abs(values[position] - truth).max() < 50, (position, values[position], truth)
    for position in ("HFP", "FFS", "FFP"):
        assert np.abs(values[position] - values["HFS"]).max() < 60


def test_positions_change_only_the_layout(positions):
    for position, study in positions.items():
        datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in study.ct_files]
        orientation = np.asarray(datasets[0].ImageOrientationPatient, float)
        normal = np.cross(orientation[:3], orientation[3:])
        along = np.array([np.asarray(ds.ImagePositionPatient, float) @ normal for ds in datasets])
        numbers = np.array([int(ds.InstanceNumber) for ds in datasets])
        assert all(ds.PatientPosition == position for ds in datasets)
        by_name = along[np.argsort([f.name for f in study.ct_files])]
        assert not (np.all(np.diff(by_name) > 0) or np.all(np.diff(by_name) < 0))  # names say nothing
        by_number = along[np.argsort(numbers)]
        against = position.startswith("FF")  # feet-first is numbered against the slice normal
        assert np.all(np.diff(by_number) < 0) if against else np.all(np.diff(by_number) > 0)


def test_face_shape_and_air():
    hu, masks, affine = evaluate(PhantomOptions(**TINY, air_noise_hu=0.0))
    ct = Volume(hu, affine)
    body = masks["body"]
    assert np.all(hu[~body] == -1000.0)  # without air noise: no structure in the air around the patient
    noisy, _, _ = evaluate(PhantomOptions(**TINY))  # by default the air is noisy, as a real scanner's
    assert 6.0 < noisy[~body].std() < 10.0 and abs(noisy[~body].mean() + 1000.0) < 0.5
    assert hu[body].std() > 0
    points = ct.index_to_lps(np.argwhere(body))
    tip = points[np.argmax(points @ ANTERIOR)]
    assert np.linalg.norm(tip - NOSE_TIP) < 6.0  # the nose is the most anterior point of the patient
    eye_plane = EYE_CENTRES["left"] @ ANTERIOR
    assert tip @ ANTERIOR - eye_plane > 35  # ... well in front of the eyes
    lens = phantom_hu(EYE_CENTRES["left"] + 9.5 * ANTERIOR)
    assert 60 < lens[0] < 120


def test_written_contours_give_back_the_masks(phantom_cache):
    study = phantom_cache()
    _, masks, _ = evaluate_boxes(PhantomOptions(**SMALL))  # the options of the session's default phantom
    ct = read_ct(study.ct_files)
    rs = pydicom.dcmread(study.rtstruct_file)
    assert len(rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
               .RTReferencedSeriesSequence[0].ContourImageSequence) == len(study.ct_files)
    types = {int(o.ReferencedROINumber): o.RTROIInterpretedType for o in rs.RTROIObservationsSequence}
    numbers = {r.ROIName: int(r.ROINumber) for r in rs.StructureSetROISequence}
    assert set(numbers) == set(study.roi_names.values()) and len(numbers) == len(ROIS)
    for key, name in study.roi_names.items():
        assert types[numbers[name]] == ROIS[key][1]
        analytic = masks[key].full(ct.shape)
        written, most = rasterise(rs, name, ct)
        assert analytic.any(), key
        assert dice(written, analytic) >= 0.99, key
        if key == "two_contours":
            assert most == 2  # left and right nodes on the same slice
        if key == "hole":
            assert most == 2  # an outer contour and the spinal canal
            canal = np.array([[0.0, 30.0, -90.0]])  # the spinal canal: inside the ring, not in the ROI
            assert not written[tuple(np.rint(ct.lps_to_index(canal)[0]).astype(int))] and sample(ct, canal)[0] < 60


def test_ptv_reaches_into_the_face_in_front_of_the_eyes(phantom):
    rs = pydicom.dcmread(phantom.rtstruct_file)
    number = next(int(r.ROINumber) for r in rs.StructureSetROISequence if r.ROIName == phantom.roi_names["ptv_face"])
    item = next(c for c in rs.ROIContourSequence if int(c.ReferencedROINumber) == number)
    points = np.concatenate([np.asarray(c.ContourData, float).reshape(-1, 3) for c in item.ContourSequence])
    eye_plane = np.mean([c @ ANTERIOR for c in phantom.eye_centres.values()])
    assert (points @ ANTERIOR).max() > eye_plane + 20


def test_dose_grid_is_coarse_offset_and_hot_in_the_targets(phantom):
    ds = pydicom.dcmread(phantom.rtdose_file)
    assert int(ds.BitsAllocated) == 32 and ds.DoseUnits == "GY" and float(ds.GridFrameOffsetVector[0]) == 0.0
    assert list(ds.ImageOrientationPatient) == list(pydicom.dcmread(phantom.ct_files[0]).ImageOrientationPatient)
    assert ds.FrameOfReferenceUID == phantom.frame_of_reference_uid
    plan = pydicom.dcmread(phantom.rtplan_file)
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID
    offset = np.linalg.solve(phantom.ct_affine, [*map(float, ds.ImagePositionPatient), 1.0])[:3]
    assert np.abs(offset - np.rint(offset)).max() > 0.1  # not on CT voxel centres
    gy = ds.pixel_array * float(ds.DoseGridScaling)
    assert gy.shape[1] * float(ds.PixelSpacing[0]) < 128 * 2.0  # covers the body, not the whole CT
    assert 60 < gy.max() < 75
    case = load_case(phantom.folder)  # and the product reads it back consistently
    dose = case.doses[0].gy
    targets = np.array([[8.0, -58.0, -24.0], [-32.0, 2.0, -100.0]])  # PTV_70 and PTV_54 centres
    hot = dose.array[tuple(np.rint(dose.lps_to_index(targets)).astype(int).T)]
    assert hot[0] > 65 and 45 < hot[1] < 60


def test_no_eyes_option_drops_every_eye_structure(phantom_cache):
    study = phantom_cache(include_eyes=False)
    names = {r.ROIName for r in pydicom.dcmread(study.rtstruct_file).StructureSetROISequence}
    assert not any("eye" in n.lower() or "lens" in n.lower() or "globe" in n.lower() for n in names)
    assert not EYE_KEYS & set(study.roi_names)


def test_naming_styles_and_encodings(phantom_cache):
    legacy = phantom_cache(roi_naming="legacy", stored_dtype="uint16", include_plan=False, include_dose=False)
    assert legacy.roi_names["eye_left"] == "OPTIC GLOBE L" and legacy.roi_names["body"] == "External"
    assert legacy.rtplan_file is None and legacy.rtdose_file is None
    ds = pydicom.dcmread(legacy.ct_files[0])
    assert ds.PixelRepresentation == 0 and float(ds.RescaleIntercept) == -1024.0
    assert phantom_cache(roi_naming="tg263").roi_names["parotid_left"] == "Glnd_Parotid_L"


def test_anatomy_the_product_relies_on(phantom):
    case = load_case(phantom.folder)
    roles = {r.name: r.role for r in case.structures.rois}
    assert roles[phantom.roi_names["body"]] == "body" and roles[phantom.roi_names["gtv"]] == "gtv"
    assert np.array_equal(case.ct.hu.affine.round(3), phantom.ct_affine.round(3))


def test_deterministic_and_fast(tmp_path):
    options = PhantomOptions(**TINY)
    a, b = write_phantom_study(tmp_path / "a", options), write_phantom_study(tmp_path / "b", options)
    assert a.series_instance_uid == b.series_instance_uid and a.ct_sop_instance_uids == b.ct_sop_instance_uids
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a.ct_files, b.ct_files))
    other = write_phantom_study(tmp_path / "c", PhantomOptions(**TINY, seed=1))
    assert other.study_instance_uid != a.study_instance_uid
    start = time.perf_counter()
    evaluate_boxes(PhantomOptions(rows=128, columns=128, pixel_spacing=2.0, slices=64, slice_thickness=3.0))
    assert time.perf_counter() - start < 1.0

