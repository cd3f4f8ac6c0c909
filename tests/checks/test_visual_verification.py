"""VisualVerification: when it forks, what it does when the pipeline stops early, and when it runs inline."""

from __future__ import annotations

import threading

import pytest

from deface_ts.checks import verify
from deface_ts.checks.verify import VisualVerification
from deface_ts.config import VerifyConfig
from deface_ts.forked import fork_is_safe


def test_no_fork_while_another_thread_runs():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not fork_is_safe()
    finally:
        stop.set()
        thread.join()


def test_verify_off_starts_nothing_and_says_so(face_ct, tmp_path):
    with VisualVerification(face_ct, VerifyConfig(mode="off"), tmp_path / "failed", None) as verification:
        assert verification._job is None
        assert verification.judge(face_ct) == ({"mode": "off", "status": "not verified (verify off)"}, None)


def test_a_pipeline_that_stops_early_stops_the_child(face_ct, tmp_path, monkeypatch):
    pytest.importorskip("vtk")
    monkeypatch.setattr(verify, "fork_is_safe", lambda: True)
    with VisualVerification(face_ct, VerifyConfig(), tmp_path / "failed", None) as verification:
        assert verification._job is not None
        process = verification._job._process
        assert process.is_alive()
    assert not process.is_alive() and verification._job is None and not (tmp_path / "failed").exists()


def test_an_unforkable_process_judges_inline(face_ct, tmp_path, monkeypatch):
    pytest.importorskip("vtk")
    monkeypatch.setattr(verify, "fork_is_safe", lambda: False)
    with VisualVerification(face_ct, VerifyConfig(mode="report"), tmp_path / "failed", None) as verification:
        assert verification._job is None
        result, renders = verification.judge(face_ct)  # the original itself: a face is plainly there
    assert result["ran"] == "in the pipeline" and result["decided_by"] == "detection"
    assert renders is not None and set(renders[0]) == set(renders[1])
