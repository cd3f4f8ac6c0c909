"""Write-back: identity round trip, linked references, valid IODs, exact ROI changes, dose dtype."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from deface_ts.io import nifti
from deface_ts.io.dicom.case import load_case
from deface_ts.io.dicom.uids import UidMap
from deface_ts.io.dicom.writer import Changes, write_case
from deface_ts.io.output import atomic_output
from tests.checkers import (
    dciodvfy_errors,
    plastimatch_convert,
    requires_dciodvfy,
    requires_plastimatch,
    resample_nearest,
)
from tests.conftest import copy_study


@pytest.fixture(scope="module")
def identity(tmp_path_factory, phantom_cache):
    study = phantom_cache()
    case = load_case(study.folder)
    out = tmp_path_factory.mktemp("identity") / "out"
    written = write_case(case, Changes(), out)
    return study, case, written, load_case(out)


def test_identity_round_trip_is_bit_identical(identity):
    _, case, written, again = identity
    assert np.array_equal(again.ct.stored, case.ct.stored)
    assert again.ct.stored.dtype == case.ct.stored.dtype
    for before, after in zip(case.structures.rois, again.structures.rois):
        assert before.name == after.name
        a = before.contour.get("ContourSequence", []) if before.contour else []
        b = after.contour.get("ContourSequence", []) if after.contour else []
        assert [list(c.ContourData) for c in a] == [list(c.ContourData) for c in b]
    for d0, d1 in zip(case.doses, again.doses):
        assert np.array_equal(d0.stored, d1.stored) and d0.stored.dtype == d1.stored.dtype
        assert d0.scaling == d1.scaling


def test_new_uids_and_every_reference_resolves(identity):
    _, case, written, again = identity
    old_sops = {ds.SOPInstanceUID for ds in case.ct.datasets}
    new_sops = {ds.SOPInstanceUID for ds in again.ct.datasets}
    assert not old_sops & new_sops
    assert again.files.series_uid != case.files.series_uid
    assert again.files.frame_of_reference == case.files.frame_of_reference
    for ds in again.ct.datasets:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    # RTSTRUCT → new CT (series and every contour image), RTPLAN → RTSTRUCT, RTDOSE → RTPLAN
    rs = again.structures.dataset
    series = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == again.files.series_uid
    for item in rs.ROIContourSequence:
        for contour in item.get("ContourSequence", []):
            for image in contour.get("ContourImageSequence", []):
                assert image.ReferencedSOPInstanceUID in new_sops
    assert again.rtplan.dataset.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    plan_uid = again.rtplan.dataset.SOPInstanceUID
    assert again.doses[0].dataset.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan_uid
    assert not again.files.warnings
    # no old SOP Instance UID survives anywhere in the new RT objects
    for path in [written.rtstruct, written.rtplan, *written.doses]:
        text = path.read_bytes()
        for uid in list(old_sops)[:20] + [case.structures.dataset.SOPInstanceUID]:
            assert uid.encode() not in text


@requires_dciodvfy
def test_written_objects_are_valid(identity, tmp_path):
    """dciodvfy on every written object (each CT slice too): no error beyond those of the input."""
    study, case, written, _ = identity
    pairs = [(study.ct_files[0], ct) for ct in written.ct_files]
    known: dict = {}
    for original, new in pairs + [(study.rtstruct_file, written.rtstruct), (study.rtplan_file, written.rtplan),
                                  (study.rtdose_file, written.doses[0])]:
        if original not in known:
            known[original] = {e.split(" ", 1)[-1] for e in dciodvfy_errors(original, tmp_path)}
        after = [e for e in dciodvfy_errors(new, tmp_path) if e.split(" ", 1)[-1] not in known[original]]
        assert after == [], new


def test_changes_write_exactly_what_changed(phantom, tmp_path):
    case = load_case(phantom.folder)
    ct = case.ct.hu
    mask = np.zeros(ct.shape, dtype=bool)
    mask[20:30, 10:40, 40:90] = True
    body = [r for r in case.structures.rois if r.role == "body"][0]
    new_body = body.mask.full(ct.shape) & ~mask
    dose_zero = np.zeros(case.doses[0].stored.shape, dtype=bool)
    dose_zero[:5] = True
    changes = Changes(ct_mask=mask, ct_hu=-1000.0, rois={body.number: new_body}, dose_zero=[dose_zero], defaced=True)
    write_case(case, changes, tmp_path / "out", UidMap("test"))
    again = load_case(tmp_path / "out")
    assert np.all(again.ct.hu.array[mask] == -1000)
    assert np.array_equal(again.ct.stored[~mask], case.ct.stored[~mask])
    new_roi = again.structures.get(body.name)
    assert np.array_equal(new_roi.mask.full(ct.shape), new_body)
    for item in again.structures.dataset.ROIContourSequence:
        for contour in item.get("ContourSequence", []):
            assert int(contour.NumberOfContourPoints) * 3 == len(contour.ContourData)
    # untouched ROIs keep their ContourData exactly; the body keeps unchanged slices exactly
    for before in case.structures.rois:
        if before.number != body.number and before.contour is not None:
            after = again.structures.get(before.name)
            assert [list(c.ContourData) for c in before.contour.ContourSequence] == \
                [list(c.ContourData) for c in after.contour.ContourSequence]
    unchanged = [c for c, k in zip(body.contour.ContourSequence, body.contour_slices)
                 if k is not None and not 20 <= k < 30]
    after_data = [list(c.ContourData) for c in new_roi.contour.ContourSequence]
    assert all(list(c.ContourData) in after_data for c in unchanged)
    d0, d1 = case.doses[0], again.doses[0]
    assert d1.stored.dtype == d0.stored.dtype and d1.dataset.BitsAllocated == d0.dataset.BitsAllocated
    assert np.all(d1.stored[:5] == 0) and np.array_equal(d1.stored[5:], d0.stored[5:])
    ds = again.ct.datasets[0]
    assert ds.ImageType[0] == "DERIVED" and ds.RecognizableVisualFeatures == "NO"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113102"


@pytest.mark.parametrize("implicit", [False, True])
def test_contours_made_in_the_forked_child_write_the_same_bytes(phantom_cache, tmp_path, implicit):
    """write_case contours the changed ROIs in a forked child: the RTSTRUCT is byte-identical to contouring inline."""
    from deface_ts.io.dicom.writer import write_rtstruct

    study = phantom_cache()
    folder = copy_study(study, tmp_path / "study")
    if implicit:  # an implicit-VR RTSTRUCT: the new items take its encoding
        path = folder / study.rtstruct_file.relative_to(study.folder)
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    case = load_case(folder)
    body = case.structures.by_role("body")[0]
    cut = body.mask.full(case.ct.hu.shape)
    cut[:, :, :60] = False
    changes = Changes(rois={body.number: cut})
    write_case(case, changes, tmp_path / "forked", UidMap("same"))
    uids = UidMap("same")
    for ds in case.ct.datasets:
        uids.new(ds.SOPInstanceUID)
    for ds in (case.ct.datasets[0], case.structures.dataset):
        uids.new(ds.SOPInstanceUID)
        uids.new(ds.SeriesInstanceUID)
    write_rtstruct(case, changes, tmp_path / "inline.dcm", uids)  # no contours given: made here, in this process
    assert (tmp_path / "forked" / "RTSTRUCT.dcm").read_bytes() == (tmp_path / "inline.dcm").read_bytes()


def test_stored_values_clip_to_the_stored_range(phantom_cache, tmp_path):
    case = load_case(phantom_cache(stored_dtype="uint16").folder)
    mask = np.zeros(case.ct.hu.shape, dtype=bool)
    mask[5, :4, :4] = True
    write_case(case, Changes(ct_mask=mask, ct_hu=-5000.0), tmp_path / "out")
    again = load_case(tmp_path / "out")
    assert again.ct.stored.dtype == np.uint16
    assert np.all(again.ct.stored[mask] == 0)  # -5000 HU clipped to stored 0 (= -1024 HU)


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output(out, [tmp_path / "input"]) as tmp:
            (tmp / "partial.dcm").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


@requires_plastimatch
def test_plastimatch_reads_written_set(identity, tmp_path):
    _, case, written, _ = identity
    plastimatch_convert(["--input", str(written.folder), "--output-img", str(tmp_path / "ct.nii.gz"),
                         "--output-prefix", str(tmp_path / "ss"), "--prefix-format", "nii.gz", "--xor-contours"])
    plastimatch_convert(["--input-dose-img", str(written.doses[0]), "--output-dose-img", str(tmp_path / "dose.nii.gz")])
    assert len(list((tmp_path / "ss").glob("*.nii.gz"))) >= 15
    ct = nifti.load(tmp_path / "ct.nii.gz")
    assert np.array_equal(resample_nearest(ct, case.ct.hu), case.ct.hu.array)
    dose = nifti.load(tmp_path / "dose.nii.gz")
    ours = case.doses[0].gy
    assert np.allclose(resample_nearest(dose, ours), ours.array, atol=1e-3 * ours.array.max())


def _parse_everything(ds):
    for element in ds:  # iterating converts each raw element, nested sequences too
        if element.VR == "SQ":
            for item in element.value:
                _parse_everything(item)


@pytest.mark.parametrize("implicit", [False, True])
def test_raw_sequences_are_remapped_as_pydicom_writes_parsed_ones(phantom_cache, tmp_path, implicit):
    """Unparsed sequences are remapped once per distinct value and written as bytes: same file as the slow path."""
    study = phantom_cache()
    ds = pydicom.dcmread(study.rtstruct_file)
    ds.StructureSetROISequence[0].ROIName = "Parotide_gauche_é"  # non-ASCII text inside an item (ISO_IR 100)
    source = tmp_path / "rs.dcm"
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(source, enforce_file_format=True)
    ct_uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in study.ct_files]

    def remap_and_write(dataset, name):
        uids = UidMap(salt="fixed")
        for uid in ct_uids + [dataset.SOPInstanceUID]:
            uids.new(uid)
        out = uids.remap(dataset)
        out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        out.save_as(tmp_path / name, enforce_file_format=True)
        return out, uids

    raw = pydicom.dcmread(source)
    tag = pydicom.tag.Tag("ROIContourSequence")
    assert raw.get_item(tag).is_raw  # the fast path is taken
    fast, uids = remap_and_write(raw, "fast.dcm")
    assert fast.get_item(tag).is_raw and len(uids._sequences) > 0
    parsed = pydicom.dcmread(source)
    _parse_everything(parsed)
    remap_and_write(parsed, "slow.dcm")
    assert (tmp_path / "fast.dcm").read_bytes() == (tmp_path / "slow.dcm").read_bytes()

    again = pydicom.dcmread(tmp_path / "fast.dcm")
    assert again.StructureSetROISequence[0].ROIName == "Parotide_gauche_é"
    new_ct = {uids.get(uid) for uid in ct_uids}
    referenced = {image.ReferencedSOPInstanceUID for item in again.ROIContourSequence
                  for contour in item.ContourSequence for image in contour.ContourImageSequence}
    assert referenced and referenced <= new_ct


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("vr, value", [("DA", "20250310"), ("UI", "2.25.1234567"), ("LO", "ANON-1A2B"),
                                       ("PN", None), ("US", 0), ("DS", ["1.5", "-2"]), ("UT", "ANONYMIZED")])
def test_encoded_element_writes_the_same_bytes(tmp_path, implicit, vr, value):
    """A value encoded once and written as raw bytes into every CT slice must be what pydicom writes itself."""
    from pydicom.dataelem import DataElement, RawDataElement
    from pydicom.dataset import Dataset

    from deface_ts.io.dicom.uids import encode_element

    tag = {"DA": 0x00080020, "UI": 0x00081155, "LO": 0x00100020, "PN": 0x00080090, "US": 0x00280010,
           "DS": 0x00200037, "UT": 0x00204000}[vr]
    like = RawDataElement(tag, None if implicit else vr, 0, b"", 0, implicit, True)
    written = []
    for element in (DataElement(tag, vr, value), encode_element(DataElement(tag, vr, value), like)):
        ds = Dataset()
        ds[tag] = element
        path = tmp_path / f"{len(written)}.dcm"
        ds.save_as(path, implicit_vr=implicit, little_endian=True)
        written.append(path.read_bytes())
    assert written[0] == written[1]
