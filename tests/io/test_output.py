"""Atomic output folders: permissions follow the umask; temporary folders of killed runs are cleaned."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from deface_ts.io.output import MARKER, atomic_output, remove_stale, temporary_folders

# A run killed with SIGKILL in the middle of writing (a Slurm time limit, the OOM killer): nothing of this
# process can clean up, so its temporary folder stays behind with partial files.
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from deface_ts.io.output import atomic_output
    with atomic_output(sys.argv[1], []) as tmp:
        (tmp / "CT_0001.dcm").write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
""")


def _killed_run(output) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", KILLED_RUN, str(output)], env=env, capture_output=True)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_output_folder_follows_the_umask(tmp_path, umask_027):
    with atomic_output(tmp_path / "out", []) as tmp:
        (tmp / "report.json").write_text("{}")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750
    assert not (tmp_path / "out" / MARKER).exists()  # the marker never reaches the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_killed_runs_folder_is_listed_then_removed_by_the_next_run(tmp_path):
    output = tmp_path / "case"
    _killed_run(output)
    left = temporary_folders(output)
    assert len(left) == 1 and not left[0].live and (left[0].path / "CT_0001.dcm").exists()
    assert left[0].host == socket.gethostname()
    with atomic_output(output, []) as tmp:
        (tmp / "report.json").write_text("{}")
    assert not left[0].path.exists() and temporary_folders(output) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]


def test_only_our_dead_runs_are_removed(tmp_path):
    output = tmp_path / "case"
    _killed_run(output)
    [dead] = temporary_folders(output)
    # Another tool's folder with the same name pattern (no marker), a live run of this process, one of
    # another host, and a dead run of a different output: all kept.
    foreign = tmp_path / ".case.foreign.tmp"
    foreign.mkdir()
    with atomic_output(output, []) as running:
        assert [f.path for f in temporary_folders(output) if f.live] == [running]
        elsewhere = tmp_path / ".case.remote.tmp"
        elsewhere.mkdir()
        (elsewhere / MARKER).write_text(json.dumps({"host": "another-node", "pid": 1, "started": "1"}))
        _killed_run(tmp_path / "other")
        assert remove_stale(output) == []  # the dead run was removed when this run started
        assert not dead.path.exists() and running.exists() and foreign.exists() and elsewhere.exists()
        assert [f.live for f in temporary_folders(output) if f.path == elsewhere] == [True]
        (running / "report.json").write_text("{}")
    assert len(temporary_folders(tmp_path / "other")) == 1


def test_a_recycled_pid_does_not_keep_a_dead_runs_folder(tmp_path):
    """The marker records the process's start time: another process with the same PID is not its owner."""
    folder = tmp_path / ".case.abcd.tmp"
    folder.mkdir()
    (folder / MARKER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "0"}))
    [found] = temporary_folders(tmp_path / "case")
    assert not found.live
    assert remove_stale(tmp_path / "case") == [folder] and not folder.exists()
