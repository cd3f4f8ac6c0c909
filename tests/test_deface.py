"""`deface-ts deface` with the eye-landmark method: removal, protection, RT consistency, fail-closed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from deface_ts.apps.cli import main
from deface_ts.config import EyesConfig, load_config
from deface_ts.errors import PrivacyError
from deface_ts.io import nifti
from deface_ts.io.dicom.case import load_case
from deface_ts.locate.eyes import is_eye_name
from deface_ts.pipeline import deface
from tests.checkers import (
    dciodvfy_errors,
    plastimatch_convert,
    requires_dciodvfy,
    requires_plastimatch,
    resample_nearest,
)
from tests.conftest import tree_digest


@pytest.fixture(scope="module")
def defaced(phantom_cache, tmp_path_factory):
    """Each position defaced once with the default (full) region."""
    results = {}
    for position in ("HFS", "HFP", "FFS"):
        study = phantom_cache(position=position)
        out = tmp_path_factory.mktemp("deface") / position
        before = tree_digest(study.folder)
        report = deface(study.folder, out, load_config())
        assert tree_digest(study.folder) == before
        results[position] = (study, out, report, load_case(study.folder), load_case(out / "dicom"))
    return results


@pytest.mark.parametrize("position", ["HFS", "HFP", "FFS"])
def test_face_removed_targets_kept(defaced, position):
    study, out, report, before, after = defaced[position]
    ct0, ct1 = before.ct.hu, after.ct.hu
    removal = nifti.load(out / "nifti" / "removal_mask.nii.gz").array > 0
    # the face is air now: nose tip, eye centres
    for point in [study.nose_tip, study.eye_centres["left"], study.eye_centres["right"]]:
        index = tuple(np.rint(ct1.lps_to_index(np.asarray(point)[None])[0]).astype(int))
        assert ct0.array[index] > -400 and ct1.array[index] == -1000
    # everything outside the removal is bit-identical
    assert np.array_equal(after.ct.stored[~removal], before.ct.stored[~removal])
    # the PTV reaching into the face keeps every voxel, in the CT and in the RTSTRUCT
    ptv_name = study.roi_names["ptv_face"]
    ptv = before.structures.get(ptv_name).mask.full(ct0.shape)
    labels = nifti.load(out / "nifti" / "protection_mask.nii.gz").array
    assert (ptv & (labels > 0)).sum() == ptv.sum()
    names = report["removed"]["protection_labels"]
    assert {names[str(int(v))] for v in np.unique(labels[ptv])} == {ptv_name}  # provenance: kept by the PTV
    assert np.array_equal(ct1.array[ptv], ct0.array[ptv])
    entry = next(r for r in report["rois"] if r["name"] == ptv_name)
    assert entry["status"] == "protected" and entry["preserved_ratio"] == 1.0
    assert report["removed"]["kept_by_protection_voxels"][ptv_name] > 0  # it really reached into the face
    def contour_data(case):
        return [list(c.ContourData) for c in case.structures.get(ptv_name).contour.ContourSequence]

    assert contour_data(after) == contour_data(before)
    # the brain is never removed
    brain = next(r for r in report["rois"] if r["name"] == study.roi_names["brain"])
    assert brain["preserved_ratio"] == 1.0


@pytest.mark.parametrize("position", ["HFS", "HFP", "FFS"])
def test_body_follows_new_skin_and_eyes_vanish(defaced, position):
    study, out, report, before, after = defaced[position]
    removal = nifti.load(out / "nifti" / "removal_mask.nii.gz").array > 0
    body_name = study.roi_names["body"]
    body0 = before.structures.get(body_name).mask.full(before.ct.hu.shape)
    body1 = after.structures.get(body_name).mask.full(before.ct.hu.shape)
    assert np.array_equal(body1, body0 & ~removal)
    assert report["body_volume_cc"]["after"] < report["body_volume_cc"]["before"]
    eye = next(r for r in report["rois"] if r["name"] == study.roi_names["eye_left"])
    assert eye["status"] == "clipped" and eye["preserved_ratio"] < 0.6  # the front half of the globe goes
    lens = next(r for r in report["rois"] if r["name"] == study.roi_names["lens_left"])
    assert lens["status"] == "removed" and lens["voxels_after"] == 0
    assert study.roi_names["lens_left"] in [r.name for r in after.structures.rois]  # the entry is kept
    for item in after.structures.dataset.ROIContourSequence:
        for contour in item.get("ContourSequence", []):
            assert int(contour.NumberOfContourPoints) * 3 == len(contour.ContourData)


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_dose_zero_in_removed_region_identical_elsewhere(defaced, position):
    study, out, report, before, after = defaced[position]
    removal = nifti.load(out / "nifti" / "removal_mask.nii.gz")
    protection = nifti.load(out / "nifti" / "protection_mask.nii.gz")
    d0, d1 = before.doses[0], after.doses[0]
    in_removed = resample_nearest(removal, d0.gy) > 0
    # dose points one grid step around protected points are kept (interpolated DVHs of targets stay exact)
    near = ndimage.binary_dilation(resample_nearest(protection, d0.gy) > 0, structure=np.ones((3, 3, 3), bool))
    zeroed = in_removed & ~near
    assert zeroed.any() and np.all(d1.stored[zeroed] == 0)
    assert np.array_equal(d1.stored[~zeroed], d0.stored[~zeroed])
    kept = in_removed & near
    assert kept.any() and np.any(d1.stored[kept] > 0)
    assert d1.stored.dtype == d0.stored.dtype and d1.scaling == d0.scaling
    assert report["dose"][0]["max_dose_removed_gy"] > 0


def test_same_removal_in_patient_space_for_every_position(defaced):
    reference = nifti.load(defaced["HFS"][1] / "nifti" / "removal_mask.nii.gz")
    for position in ("HFP", "FFS"):
        other = nifti.load(defaced[position][1] / "nifti" / "removal_mask.nii.gz")
        moved = resample_nearest(other, reference) > 0
        ref = reference.array > 0
        assert 2 * (moved & ref).sum() / (moved.sum() + ref.sum()) > 0.99, position


@requires_dciodvfy
def test_outputs_valid_and_linked(defaced, tmp_path):
    study, out, report, before, after = defaced["HFS"]
    files = [sorted((out / "dicom").glob("CT_*.dcm"))[0], out / "dicom" / "RTSTRUCT.dcm",
             out / "dicom" / "RTPLAN.dcm", out / "dicom" / "RTDOSE_1.dcm"]
    originals = [study.ct_files[0], study.rtstruct_file, study.rtplan_file, study.rtdose_file]
    for original, new in zip(originals, files):
        known = {e.split(" ", 1)[-1] for e in dciodvfy_errors(original, tmp_path)}
        assert [e for e in dciodvfy_errors(new, tmp_path) if e.split(" ", 1)[-1] not in known] == []
    assert report["post_check"]["passed"] and report["post_check"]["references_resolved"]
    assert after.ct.datasets[0].RecognizableVisualFeatures == "NO"
    # With header de-identification on (the default) the old -> new UIDs are in the linkage file, not the report.
    linkage = [line.split(",") for line in (out.parent / f"{out.name}.linkage.csv").read_text().splitlines()]
    uids = {old: new for kind, old, new in linkage if kind == "UID"}
    assert uids and not set(uids.values()) & set(uids) and "uids" not in report["output"]
    assert str(after.ct.datasets[0].SOPInstanceUID) in set(uids.values())


@requires_plastimatch
def test_plastimatch_reads_defaced_set(defaced, tmp_path):
    _, out, _, _, _ = defaced["HFP"]
    plastimatch_convert(["--input", str(out / "dicom"), "--output-img", str(tmp_path / "ct.nii.gz"),
                         "--output-prefix", str(tmp_path / "ss"), "--prefix-format", "nii.gz", "--xor-contours"])
    plastimatch_convert(["--input-dose-img", str(out / "dicom" / "RTDOSE_1.dcm"), "--output-dose-img", str(tmp_path / "d.nii.gz")])
    assert (tmp_path / "ct.nii.gz").exists() and (tmp_path / "d.nii.gz").exists()


def test_report_contents(defaced):
    _, out, report, _, _ = defaced["HFS"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["method"] == "eyes" and saved["region"] == "full"
    assert len(saved["landmarks"]["eye_centres_mm"]) == 2 and saved["landmarks"]["chin_found"]
    assert saved["removed"]["tissue_volume_cc"] > 10
    assert set(saved["timings_s"]) >= {"load", "segment", "plan", "apply", "write", "verify"}
    assert saved["config"]["protect"]["roles"] == ["ptv", "ctv", "gtv"]
    assert "pydicom" in saved["versions"]


def test_upper_region_is_defacert_box(phantom_cache, tmp_path):
    """The region itself; verification refuses this box (tests/test_verify.py), so it only reports here."""
    study = phantom_cache()
    report = deface(study.folder, tmp_path / "out", load_config(None, {"region.kind": "upper",
                                                                        "verify.mode": "report"}))
    assert report["verify"]["decided_by"] in ("detection", "identity")
    ct = load_case(tmp_path / "out" / "dicom").ct.hu
    index = tuple(np.rint(ct.lps_to_index(np.asarray(study.nose_tip)[None])[0]).astype(int))
    assert ct.array[index] > -400  # defaceRT's box leaves the lower nose
    assert report["region"] == "upper"
    lowest = report["landmarks"]["inferior_eye_mm"]
    removal = nifti.load(tmp_path / "out" / "nifti" / "removal_mask.nii.gz")
    k = np.argwhere(removal.array > 0)
    assert removal.index_to_lps(k)[:, 2].min() >= lowest - 5.0 - 1e-3


@pytest.mark.parametrize(
    "name, eye",
    [("Eye_L", True), ("Eye Lt", True), ("Globe_R", True), ("OPTIC GLOBE L", True), ("Orbit_R", True),
     ("EYE LEFT", True), ("eyes", True), ("Lens_L", False), ("Eye_L_PRV", False), ("z_eye_ring", False),
     ("OpticNerve_L", False), ("Eye_L+3mm", False), ("Cornea_R", False), ("Brainstem", False), ("Eyebrow", False),
     ("EyeL", True), ("LEye", True), ("Bulbus_L", True), ("Eye_L_1", True)],
)
def test_eye_name_rules(name, eye):
    assert is_eye_name(name, EyesConfig()) is eye


def test_legacy_names_and_protect_pattern(phantom_cache, tmp_path):
    study = phantom_cache(roi_naming="legacy")
    assert main(["deface", str(study.folder), str(tmp_path / "out"), "--protect", "^mandible$|mandible",
                 "--protect-margin", "2"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    mandible = next(r for r in report["rois"] if "mandible" in r["name"].lower())
    assert mandible["status"] == "protected" and mandible["preserved_ratio"] == 1.0
    assert report["config"]["protect"]["margin_mm"] == 2.0


def test_noise_matched_fill(phantom_cache, tmp_path):
    study = phantom_cache()
    deface(study.folder, tmp_path / "out", load_config(None, {"fill.noise": True}))
    ct = nifti.load(tmp_path / "out" / "nifti" / "ct_defaced.nii.gz").array
    removal = nifti.load(tmp_path / "out" / "nifti" / "removal_mask.nii.gz").array > 0
    values = ct[removal]
    assert values.std() > 1.0 and abs(values.mean() + 1000) < 5 and values.max() < -400


def test_nifti_in_nifti_out(phantom_cache, tmp_path, capsys):
    study = phantom_cache()
    assert main(["convert", str(study.folder), str(tmp_path / "nii")]) == 0
    sidecar = json.loads((tmp_path / "nii" / "convert.json").read_text())
    files = {r["name"]: tmp_path / "nii" / r["file"] for r in sidecar["rois"]}
    ct = nifti.load(tmp_path / "nii" / "ct.nii.gz")
    eyes = (nifti.load(files[study.roi_names["eye_left"]]).array > 0) | (nifti.load(files[study.roi_names["eye_right"]]).array > 0)
    nifti.save(ct.with_array(eyes.astype(np.uint8)), tmp_path / "eyes.nii.gz")
    ptv = files[study.roi_names["ptv_face"]]
    out = tmp_path / "out"
    assert main(["deface", str(tmp_path / "nii" / "ct.nii.gz"), str(out), "--eyes-mask", str(tmp_path / "eyes.nii.gz"),
                 "--protect-mask", str(ptv)]) == 0
    defaced_ct = nifti.load(out / "ct_defaced.nii.gz")
    removal = nifti.load(out / "removal_mask.nii.gz").array > 0
    ptv_mask = nifti.load(ptv).array > 0
    assert removal.any() and not (removal & ptv_mask).any()
    assert np.array_equal(defaced_ct.array[~removal], ct.array[~removal])
    report_text = (out / "report.json").read_text()
    assert json.loads(report_text)["post_check"]["passed"]
    # De-identification on (the default): no input path in the report, a file name may name the patient.
    assert str(tmp_path / "nii") not in report_text and "ct.nii.gz" not in report_text and "eyes.nii.gz" not in report_text
    assert json.loads(report_text)["removed"]["kept_by_protection_voxels"]["protection mask 1"] > 0
    # method eyes without a mask or TotalSegmentator weights: the eyes come from the CT itself
    assert main(["deface", str(tmp_path / "nii" / "ct.nii.gz"), str(tmp_path / "out2"), "--method", "eyes"]) == 0
    eyes = json.loads((tmp_path / "out2" / "report.json").read_text())["landmarks"]["eye_centres_mm"]
    assert sorted(eyes) == ["left:ct", "right:ct"]
    empty = tmp_path / "empty.nii.gz"
    nifti.save(ct.with_array(np.zeros(ct.shape, np.uint8)), empty)
    assert main(["deface", str(tmp_path / "nii" / "ct.nii.gz"), str(tmp_path / "out3"), "--eyes-mask", str(empty)]) == 6
    assert "eye mask is empty" in capsys.readouterr().err and not (tmp_path / "out3").exists()


def test_post_check_fails_closed_on_leftover_face(defaced):
    from deface_ts.checks.post_check import post_check_volume
    from deface_ts.locate.eyes import RoiEyeLocator
    from deface_ts.removal.plan import RemovalPlan

    study, out, report, before, after = defaced["HFS"]
    rule = (nifti.load(out / "nifti" / "removal_mask.nii.gz").array).astype(np.uint8)
    plan = RemovalPlan(rule, np.zeros(rule.shape, bool), {}, None)
    location = RoiEyeLocator(before.structures, load_config().eyes).locate(before.ct.hu)
    assert post_check_volume(after.ct.hu, before.ct.hu, plan, location, load_config())["passed"]
    with pytest.raises(PrivacyError, match="body voxels remain"):
        post_check_volume(before.ct.hu, before.ct.hu, plan, location, load_config())  # the un-defaced CT


def test_post_check_reads_the_written_ct_into_the_shared_memory_it_is_given(defaced):
    """The written slices decode straight into ``into`` (16-bit values, exact HU): the same HU as a plain load."""
    from deface_ts.checks.post_check import post_check_ct
    from deface_ts.forked import shared_array
    from deface_ts.locate.eyes import RoiEyeLocator
    from deface_ts.removal.plan import RemovalPlan

    study, out, report, before, after = defaced["HFS"]
    rule = (nifti.load(out / "nifti" / "removal_mask.nii.gz").array).astype(np.uint8)
    plan = RemovalPlan(rule, np.zeros(rule.shape, bool), {}, None)
    location = RoiEyeLocator(before.structures, load_config().eyes).locate(before.ct.hu)
    into = shared_array(before.ct.hu.shape, before.ct.hu.array.dtype)
    told = []
    paths = [f.path for f in after.files.ct]
    assert post_check_ct(paths, before.ct.hu, plan, location, load_config(), into, lambda: told.append(1))["passed"]
    assert told == [1] and into.dtype == np.int16 and np.array_equal(into, after.ct.hu.array)


def test_post_check_of_the_written_files_fails_closed(phantom, tmp_path, monkeypatch):
    """A writer that leaves the face in the CT files (the forked re-read must see it), and one that writes an
    RTSTRUCT linked to nothing: both cases fail, nothing is written, the input is untouched."""
    from deface_ts.io.dicom import writer

    before = tree_digest(phantom.folder)
    write_ct = writer.write_ct
    monkeypatch.setattr(writer, "write_ct", lambda case, changes, *args: write_ct(case, writer.Changes(), *args))
    with pytest.raises(PrivacyError, match="post-check: .* body voxels remain in the removal region"):
        deface(phantom.folder, tmp_path / "out", load_config())
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    monkeypatch.setattr(writer, "write_ct", write_ct)

    def unlinked(ds, patient: str | None):
        ds.ReferencedFrameOfReferenceSequence = []
        ds.PatientID = patient or ds.PatientID
        return ds

    write_rtstruct = writer.write_rtstruct
    for patient, error in ((None, "the written set does not hold together: .*RTSTRUCT is in frame of reference"),
                           ("someone else", ".*: the written RTSTRUCT does not reference the written CT")):
        monkeypatch.setattr(writer, "write_rtstruct", lambda case, changes, path, uids, transform, contours, p=patient: (
            write_rtstruct(case, changes, path, uids, lambda ds: unlinked(transform(ds) if transform else ds, p),
                           contours)))
        with pytest.raises(PrivacyError, match=f"post-check: {error}"):
            deface(phantom.folder, tmp_path / "out", load_config())
        assert not (tmp_path / "out").exists() and tree_digest(phantom.folder) == before
