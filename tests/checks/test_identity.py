"""The identity rule and the calibrated detection rule on phantom variants and synthetic people.

Real renders, real detectors, dlib's real ResNet descriptor; the CTs are defaced in memory by
the product's locate → plan → apply (`deface_volume`). The partial defacings keep nose, lips or
chin; each must fail verification (post-check and visual check together, as in the pipeline),
and the correct defacing must pass on every subject.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deface_ts.checks import identity as rule
from deface_ts.checks.post_check import post_check_volume
from deface_ts.checks.verify import visual_check
from deface_ts.config import VerifyConfig, load_config
from deface_ts.errors import PrivacyError
from deface_ts.geometry.volume import Volume
from deface_ts.phantom import evaluate
from deface_ts.phantom.people import people, scan_options
from deface_ts.removal.apply import deface_volume
from deface_ts.vision import faces, identity
from deface_ts.vision.render import render_views

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: Phantom variants (patient positions) and synthetic people, on the small acquisition to keep the suite fast.
SUBJECTS = {"phantom_HFS": (0, "HFS"), "phantom_FFP": (0, "FFP"), "person1_HFP": (1, "HFP"), "person2_HFS": (2, "HFS")}
PARTIAL = {"upper": {"region.kind": "upper"}, "forward_10mm": {"region.plane_offset_mm": -10.0},
           "forward_20mm": {"region.plane_offset_mm": -20.0}, "forward_30mm": {"region.plane_offset_mm": -30.0}}


def needs_identity() -> None:
    pytest.importorskip("vtk")
    if len([d for d in faces.VERIFY_DETECTORS if d in faces.available_detectors()]) < 2 or not identity.available():
        pytest.skip("face detectors or dlib's recognition weights not installed (scripts/setup.sh installs them)")


@pytest.fixture(scope="session")
def subjects() -> dict[str, tuple[Volume, np.ndarray, np.ndarray]]:
    needs_identity()
    rule.start_worker()  # as the pipeline's verification does
    shapes = people(3)
    out = {}
    for name, (person, position) in SUBJECTS.items():
        hu, masks, affine = evaluate(scan_options(shapes[person], "small", position=position))
        out[name] = (Volume(hu, affine), masks["eye_left"] | masks["eye_right"], masks["ptv_face"])
    return out


def verify(subject, overrides: dict, tmp_path: Path, mode: str = "enforce") -> dict:
    """Deface in memory, then the pipeline's two checks of the result: post-check, then visual check."""
    ct, eyes, ptv = subject
    config = load_config(None, {**overrides, "verify.mode": mode})
    after, plan, location = deface_volume(ct, eyes, [("PTV", ptv)], config)
    if mode == "enforce":
        post_check_volume(after, ct, plan, location, config)
    eyes_mm = np.array([e.centre_mm for e in location.eyes])
    result, _, _ = visual_check(ct, after, config.verify, tmp_path / "failed", eyes_mm)
    return result


@pytest.mark.parametrize("name", SUBJECTS)
def test_correct_defacing_passes_on_every_subject(subjects, tmp_path, name):
    result = verify(subjects[name], {}, tmp_path)
    assert result["decided_by"] == "verified" and result["status"].startswith("verified")
    threshold = VerifyConfig().identity_threshold
    assert result["identity"]["threshold"] == threshold and result["identity"]["distance"] >= threshold
    # per view: what the detectors saw, the distance and the threshold, as report.json carries them
    assert set(result["views"]) == {"0", "30", "-30", "45", "-45"}
    for angle, view in result["views"].items():
        assert view["identity_threshold"] == threshold and not view["face_counted"]
        # the identity rule judges the near-frontal views (within ±30°) only
        assert (view["identity_distance"] is not None) == (abs(float(angle)) <= rule.MAX_ANGLE)


@pytest.mark.parametrize("defacing", PARTIAL)
@pytest.mark.parametrize("name", SUBJECTS)
def test_partial_defacing_fails_verification_on_every_subject(subjects, tmp_path, name, defacing):
    with pytest.raises(PrivacyError) as failed:
        verify(subjects[name], PARTIAL[defacing], tmp_path)
    message = str(failed.value)
    assert "post-check" in message or "visible" in message or "recognisable" in message


@pytest.mark.parametrize("name", SUBJECTS)
def test_upper_region_is_refused_by_the_visual_check_itself(subjects, tmp_path, name):
    """defaceRT's box passes the post-check (its eyes are inside the region): the visual check must refuse it."""
    report = verify(subjects[name], PARTIAL["upper"], tmp_path, mode="report")
    assert report["decided_by"] in ("detection", "identity")
    if report["decided_by"] == "identity":
        assert report["identity"]["distance"] < report["identity"]["threshold"]
    with pytest.raises(PrivacyError, match="visible after defacing|recognisable after defacing"):
        verify(subjects[name], PARTIAL["upper"], tmp_path)
    assert list((tmp_path / "failed").glob("verify.json"))


def test_landmark_box_judges_when_no_detector_found_the_original(subjects):
    """The same verdicts with no detection on the original: the box comes from the eyes and the nose tip."""
    ct, eyes, ptv = subjects["phantom_HFS"]
    angles = tuple(VerifyConfig().angles)
    before = render_views(ct, angles)
    verdicts = {}
    for kind, overrides in (("full", {}), ("upper", PARTIAL["upper"])):
        after_ct, _, location = deface_volume(ct, eyes, [("PTV", ptv)], load_config(None, overrides))
        eyes_mm = np.array([e.centre_mm for e in location.eyes])
        boxes = rule.face_boxes(before, {}, eyes_mm)
        assert set(boxes) == {a for a in angles if abs(a) <= rule.MAX_ANGLE}
        assert {b.source for b in boxes.values()} == {"landmarks"}
        after = render_views(after_ct, frame=before)
        verdicts[kind] = rule.judge(boxes, rule.descriptors(before, boxes), rule.descriptors(after, boxes),
                                    VerifyConfig().identity_threshold, eyes_mm)
    assert not verdicts["full"].recognisable and verdicts["upper"].recognisable
    assert not rule.judge({}, {}, {}, 0.5, None).judged
    assert "no eye landmarks" in rule.judge({}, {}, {}, 0.5, None).reason


def test_same_person_rescanned_stays_below_the_threshold(subjects):
    """Two scans of one person (other grid, noise, position) are recognisably the same: the rule's other side."""
    ct, _, _ = subjects["person2_HFS"]
    other_hu, _, other_affine = evaluate(scan_options(people(3)[2], "thick"))
    before = render_views(ct, (0.0, 30.0, -30.0))
    seen = faces.faces_in_views(before, list(faces.VERIFY_DETECTORS))
    boxes = rule.face_boxes(before, seen, None)
    again = render_views(Volume(other_hu, other_affine), frame=before)
    result = rule.judge(boxes, rule.descriptors(before, boxes), rule.descriptors(again, boxes),
                        VerifyConfig().identity_threshold, None)
    assert result.judged and result.distance < result.threshold


def test_threshold_is_the_documented_calibration():
    calibration = json.loads((DOCS / "verification_calibration.json").read_text())
    summary = calibration["summary"]
    assert VerifyConfig().identity_threshold == summary["threshold"]
    assert summary["same_person"]["max"] < summary["different_person"]["max"] <= summary["threshold"]
    assert summary["defacings"]["full"]["distance"]["min"] >= summary["threshold"]
    assert f"{summary['threshold']:.2f}" in (DOCS / "verification.md").read_text()


def test_worker_gives_the_descriptors_computed_here_bit_for_bit(subjects):
    """dlib's network in the worker process and in this one: the same numbers, so the calibration holds for both."""
    assert rule.start_worker()
    assert identity.worker_pid() not in (None, os.getpid())
    ct, _, _ = subjects["phantom_HFS"]
    views = render_views(ct, (0.0, 30.0, -30.0))
    boxes = rule.face_boxes(views, faces.faces_in_views(views, list(faces.VERIFY_DETECTORS)), None)
    assert len(boxes) == 3
    from_worker = rule.descriptors(views, boxes)
    for angle, box in boxes.items():
        here = identity.descriptor(views[angle], box)  # dlib's own chip cut and embedding in this process
        assert np.array_equal(from_worker[angle], here)


def test_a_dead_worker_is_replaced_by_this_process(subjects):
    """A worker killed (out of memory, say) between two cases: the descriptors are computed here, unchanged."""
    ct, _, _ = subjects["phantom_FFP"]
    views = render_views(ct, (0.0,))
    boxes = rule.face_boxes(views, faces.faces_in_views(views, list(faces.VERIFY_DETECTORS)), None)
    assert rule.start_worker()
    expected = rule.descriptors(views, boxes)
    pid = identity.worker_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):  # dead, not yet reaped: the executor's own thread reaps it
        time.sleep(0.01)
    try:
        assert np.array_equal(rule.descriptors(views, boxes)[0.0], expected[0.0])
        assert identity.worker_pid() is None
        assert np.array_equal(rule.descriptors(views, boxes)[0.0], expected[0.0])  # later cases: a thread here
    finally:
        rule.start_worker()  # the other tests run with a worker, as the pipeline does


def test_the_worker_leaves_when_its_parent_is_killed(tmp_path):
    """A pipeline killed outright (SIGKILL, the out-of-memory killer) must not leave its worker behind."""
    needs_identity()
    script = ("import os, time\nfrom deface_ts.vision import identity\nassert identity.start_worker()\n"
              "identity.Descriptors({}).result()\nprint(identity.worker_pid(), flush=True)\ntime.sleep(60)\n")
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)})
    worker = int(parent.stdout.readline())  # type: ignore[union-attr]
    assert _alive(worker)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
