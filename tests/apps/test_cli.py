"""The command line's own output: a JSON summary for scripts, progress only for a person at a terminal, and no
third-party chatter on stderr."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from deface_ts.apps.cli import main
from deface_ts.apps.progress import StageProgress, process_age_s
from deface_ts.config import load_config
from deface_ts.pipeline import deface
from tests.apps.test_batch import _manifest

LIKE_FOR_LIKE = ["--method", "eyes", "--verify", "off", "--no-nifti", "--no-pictures"]
STAGES = ["load", "segment", "plan", "apply", "write", "post_check", "verify"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "deface_ts.apps.cli", *args], capture_output=True, text=True,
                          env=env)


def test_json_summary_and_nothing_else(phantom, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["deface", str(phantom.folder), str(out), *LIKE_FOR_LIKE, "--json"]) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out)
    assert printed.err == ""  # stderr is not a terminal here: no progress line
    assert summary["status"] == "done" and summary["exit_code"] == 0 and summary["method"] == "eyes"
    assert Path(summary["report"]) == out / "report.json" and summary["post_check"] == "passed"
    assert summary["verify"].startswith("not verified") and list(summary["timings_s"]) == STAGES
    report = json.loads((out / "report.json").read_text())
    assert summary["removed_tissue_cc"] == report["removed"]["tissue_volume_cc"] > 0
    process = summary["process"]
    assert 0 < process["start_to_first_stage_s"] < process["wall_s"]
    assert not (out / "qc").exists() and not (out / "nifti").exists()  # --no-pictures, --no-nifti


def test_json_failure_names_the_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["deface", str(tmp_path / "empty"), str(tmp_path / "out"), "--json"]) == 3
    printed = capsys.readouterr()
    failure = json.loads(printed.out)
    assert failure["status"] == "failed" and failure["exit_code"] == 3 and failure["error"] == "InputError"
    assert str(tmp_path / "empty") in failure["message"] and "deface-ts: error:" in printed.err


def _terminal():
    """A real pseudo-terminal: what a person's shell gives the process as stderr."""
    leader, follower = os.openpty()
    return os.fdopen(leader, "rb", buffering=0), open(follower, "w")


def _read(leader) -> str:
    """Everything written to the terminal: the kernel hands pty output over asynchronously, so read until it
    stays quiet for half a second."""
    chunks = []
    while select.select([leader], [], [], 0.5)[0]:
        chunk = os.read(leader.fileno(), 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_shows_each_stage_on_a_terminal_unless_quiet(phantom, tmp_path, quiet):
    leader, terminal = _terminal()
    with leader, terminal:
        progress = StageProgress(quiet=quiet, stream=terminal)
        config = load_config(None, {"method": "eyes", "verify.mode": "off", "output.nifti": False})
        deface(phantom.folder, tmp_path / "out", config, progress=progress)
        progress.clear()
        shown = _read(leader)
    if quiet:
        assert shown == ""
    else:
        for stage in STAGES:
            assert f"deface-ts: {stage} (" in shown
        assert shown.endswith("\r\033[K")  # cleared: results print on a clean line
    assert progress.start_to_first_stage_s is not None and progress.start_to_first_stage_s <= process_age_s()


def test_progress_is_off_when_stderr_is_not_a_terminal(tmp_path):
    with open(tmp_path / "log", "w") as log:
        progress = StageProgress(stream=log)
        progress("load")
        progress.clear()
    assert not progress.enabled and (tmp_path / "log").read_text() == ""


def test_batch_progress_counts_cases(phantom, tmp_path):
    from deface_ts.apps import batch

    manifest = _manifest(tmp_path / "cases.csv", [("a", str(phantom.folder)), ("b", str(phantom.folder))])
    leader, terminal = _terminal()
    with leader, terminal:
        progress = StageProgress(stream=terminal)
        config = load_config(None, {"method": "eyes", "verify.mode": "off", "output.nifti": False})
        results = batch.run(batch.read_manifest(manifest), tmp_path / "out", config, progress=progress)
        shown = _read(leader)
    assert [r.status for r in results] == ["done", "done"]
    assert "deface-ts: case 1/2 a: write (" in shown and "deface-ts: case 2/2 b: post_check (" in shown


def test_batch_json(phantom, tmp_path, capsys):
    manifest = _manifest(tmp_path / "cases.csv", [("a", str(phantom.folder)), ("b", "missing")])
    assert main(["batch", str(manifest), str(tmp_path / "out"), *LIKE_FOR_LIKE[:4], "--no-nifti", "--json"]) == 3
    summary = json.loads(capsys.readouterr().out)
    assert summary["exit_code"] == 3
    assert [(c["case"], c["status"], c["exit_code"]) for c in summary["cases"]] == [("a", "done", 0),
                                                                                  ("b", "failed", 3)]


def test_default_run_writes_nothing_but_ours_to_stderr(phantom, tmp_path):
    """Verification runs every detector (mediapipe's TensorFlow Lite and absl log on their first frame):
    stderr of a successful run stays empty, stdout carries the report."""
    pytest.importorskip("mediapipe")
    done = _cli("deface", str(phantom.folder), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "verify: verified" in done.stdout


def test_the_console_script_exits_with_the_code_and_all_its_output(phantom, tmp_path):
    """run() ends the process without the interpreter's teardown: the exit code and every line still arrive."""
    done = _cli("deface", str(phantom.folder), str(tmp_path / "out"), "--method", "eyes", "--verify", "off", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "done" and Path(summary["report"]).exists()
    failed = _cli("deface", str(tmp_path / "missing"), str(tmp_path / "out2"), "--json")
    assert failed.returncode == 3 and "does not exist" in failed.stderr
    assert json.loads(failed.stdout)["exit_code"] == 3 and not (tmp_path / "out2").exists()
