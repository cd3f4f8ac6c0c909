"""Batch runs over a manifest: done markers, failure records, resumption, task index, exit codes."""

from __future__ import annotations

import csv
import json
import re

import pytest

from deface_ts.apps.batch import array_spec, read_manifest, sbatch_script
from deface_ts.apps.cli import main
from tests import slurm_cluster
from tests.conftest import copy_study

requires_slurm = pytest.mark.skipif(not slurm_cluster.available(),
                                    reason="Slurm and munge not installed (scripts/setup.sh --tests installs them)")


def _manifest(path, rows, header="case,input"):
    path.write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n")
    return path


@pytest.fixture
def three_cases(phantom, tmp_path):
    """Cases a and c are the phantom; b is an empty folder (a named input error, exit 3)."""
    (tmp_path / "inputs" / "b").mkdir(parents=True)
    manifest = _manifest(tmp_path / "cases.csv", [("a", str(phantom.folder)), ("b", "inputs/b"),
                                                   ("c", str(phantom.folder))])
    return manifest, tmp_path / "out"


def test_all_cases_in_turn_then_resume(three_cases, phantom, tmp_path, capsys):
    manifest, out = three_cases
    assert main(["batch", str(manifest), str(out), "--no-nifti"]) == 3  # b failed, a and c still ran
    printed = capsys.readouterr().out
    assert "a: done" in printed and "c: done" in printed and "b: failed (exit 3)" in printed
    assert (out / "a" / "report.json").is_file() and (out / "c" / "report.json").is_file()
    record = json.loads((out / "b.failed.json").read_text())
    assert record["exit_code"] == 3 and record["error"] == "InputError" and "empty" in record["message"]
    assert sorted(p.name for p in out.iterdir()) == ["a", "b.failed.json", "c"]  # no partial or temporary folder

    assert main(["batch", str(manifest), str(out), "--status"]) == 0
    status = capsys.readouterr().out
    assert "done 2, failed 1, pending 0 (of 3)" in status and "failed b (exit 3)" in status
    with open(out / "batch_status.csv", newline="") as handle:
        rows = {row["case"]: row for row in csv.DictReader(handle)}
    assert [rows[c]["state"] for c in "abc"] == ["done", "failed", "done"]
    assert rows["b"]["exit_code"] == "3" and "empty" in rows["b"]["message"]
    assert rows["a"]["verify"].startswith("verified") and float(rows["a"]["removed_tissue_cc"]) > 0
    page = (out / "batch_status.html").read_text()
    assert "3 cases" in page and "2 done, 1 failed, 0 pending" in page and "folder is empty" in page
    pictures = re.findall(r"<img src='([^']+)'", page)
    assert len(pictures) == 2 and all((out / p).is_file() for p in pictures)  # a/qc/renders.png, c/...

    stamp = (out / "a" / "report.json").stat().st_mtime_ns
    assert main(["batch", str(manifest), str(out), "--no-nifti"]) == 3
    assert "a: skipped (already done)" in capsys.readouterr().out
    assert (out / "a" / "report.json").stat().st_mtime_ns == stamp  # done cases are not redone

    (tmp_path / "inputs" / "b").rmdir()
    copy_study(phantom, tmp_path / "inputs" / "b")  # the input is fixed: the case now passes
    assert main(["batch", str(manifest), str(out), "--no-nifti", "--index", "1"]) == 0
    assert (out / "b" / "report.json").is_file() and not (out / "b.failed.json").exists()


def test_slurm_task_id_selects_one_case_and_its_exit_code(three_cases, monkeypatch, capsys):
    manifest, out = three_cases
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    assert main(["batch", str(manifest), str(out)]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["b.failed.json"]
    assert json.loads((out / "b.failed.json").read_text())["slurm_job"] == "77_1"
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert main(["batch", str(manifest), str(out), "--no-nifti"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b.failed.json"]
    assert main(["batch", str(manifest), str(out), "--index", "3"]) == 3
    assert "task index 3 is outside the manifest's cases 0-2" in capsys.readouterr().err


@pytest.mark.parametrize("header, rows, message", [
    ("case,path", [("a", "x")], "needs the columns case, input[, series]; missing input"),
    ("case,input", [("a", "x"), ("a", "y")], "line 3: case 'a' is already listed on line 2"),
    ("case,input", [("../up", "x")], "line 2: case name '../up' must be"),
    ("case,input", [("a", "")], "line 2: case 'a' has no input"),
    ("case,input", [("slurm", "x")], "line 2: case name 'slurm' is taken by batch's own files"),
    ("case,input", [("p1.verify-failed", "x")], "case name 'p1.verify-failed' is taken"),
    ("case,input", [], "manifest lists no cases"),
])
def test_manifest_errors_name_the_line(tmp_path, capsys, header, rows, message):
    manifest = _manifest(tmp_path / "bad.csv", rows, header)
    assert main(["batch", str(manifest), str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert str(manifest) in err and message in err
    assert not (tmp_path / "out").exists()


def test_manifest_paths_are_relative_to_it_and_series_optional(tmp_path):
    manifest = _manifest(tmp_path / "m.csv", [("p1", "data/p1", "1.2.3"), ("p2", "/abs/p2", "")], "case,input,series")
    cases = read_manifest(manifest)
    assert [(c.index, c.name, c.series) for c in cases] == [(0, "p1", "1.2.3"), (1, "p2", None)]
    assert cases[0].input == (tmp_path / "data" / "p1").resolve() and str(cases[1].input) == "/abs/p2"


def test_array_spec_and_script():
    assert array_spec([7, 0, 1, 2, 5, 8]) == "0-2,5,7-8"
    assert array_spec([3], max_parallel=4) == "3%4"
    script = sbatch_script("/m.csv", "/out", [0, 2], ["--config", "/out/slurm/c.yaml"], sbatch_options=["--mem=8G"])
    assert "#SBATCH --array=0,2\n" in script and "#SBATCH --mem=8G\n" in script
    assert "#SBATCH --output=/out/slurm/%A_%a.log" in script
    assert "-m deface_ts.apps.cli batch /m.csv /out --config /out/slurm/c.yaml" in script


@requires_slurm
def test_array_job_on_a_real_slurm_cluster(three_cases, tmp_path, monkeypatch, capsys):
    """slurmctld + slurmd + munged: one task per case, exit codes in scontrol, resubmission of the failed case."""
    manifest, out = three_cases
    with slurm_cluster.one_node_cluster(tmp_path / "cluster") as env:
        monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
        assert main(["batch", str(manifest), str(out), "--submit", "--no-nifti", "--max-parallel", "2"]) == 0
        job = capsys.readouterr().out.split("submitted Slurm array job ")[1].split()[0]
        tasks = slurm_cluster.wait_for_job(job, env)
        assert {task: fields["ExitCode"] for task, fields in tasks.items()} == {"0": "0:0", "1": "3:0", "2": "0:0"}
        assert (out / "a" / "report.json").is_file() and (out / "c" / "report.json").is_file()
        assert not (out / "a" / "nifti").exists()  # the options of the submission reached the tasks
        assert json.loads((out / "b.failed.json").read_text())["slurm_job"] == f"{job}_1"
        assert "b: failed (exit 3)" in (out / "slurm" / f"{job}_1.log").read_text()

        assert main(["batch", str(manifest), str(out), "--submit"]) == 0  # only what is not done goes again
        again = capsys.readouterr().out.split("submitted Slurm array job ")[1].split()[0]
        assert "#SBATCH --array=1\n" in (out / "slurm" / f"array-{again}.sbatch").read_text()
        assert "#SBATCH --array=0-2%2\n" in (out / "slurm" / f"array-{job}.sbatch").read_text()
        assert len(list((out / "slurm").glob("config-*.yaml"))) == 2
        assert {t: f["ExitCode"] for t, f in slurm_cluster.wait_for_job(again, env).items()} == {"1": "3:0"}


def test_a_case_that_failed_verification_is_retried_and_cleaned(phantom, tmp_path, capsys):
    """Exit 6 with the failure pictures kept; a later run with a sound config passes and removes both records."""
    manifest = _manifest(tmp_path / "cases.csv", [("p", str(phantom.folder))])
    out = tmp_path / "out"
    bad = tmp_path / "bad.yaml"  # cut plane 25 mm anterior: the face survives and verification refuses it
    bad.write_text("region:\n  plane_offset_mm: -25.0\n  chin_margin_mm: 0.0\npost_check: false\n")
    assert main(["batch", str(manifest), str(out), "--config", str(bad), "--no-nifti"]) == 6
    assert json.loads((out / "p.failed.json").read_text())["error"] == "PrivacyError"
    assert list((out / "p.verify-failed").glob("verify_failed_*.png")) and not (out / "p").exists()
    assert main(["batch", str(manifest), str(out), "--no-nifti"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p"]


def test_status_lists_temporary_folders_of_killed_runs(three_cases, capsys):
    from tests.io.test_output import _killed_run

    manifest, out = three_cases
    _killed_run(out / "a")
    assert main(["batch", str(manifest), str(out), "--status"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"temporary folder .*/\.a\.\w+\.tmp: left by process \d+, which is gone", printed), printed
    assert "done 0, failed 0, pending 3" in printed
