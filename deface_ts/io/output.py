"""Atomic output folders: everything is written to a temporary sibling, then renamed into place.

A run killed without a chance to clean up (SIGKILL: a Slurm time limit, the OOM killer) leaves its temporary
sibling ``.OUT.xxxx.tmp/``. Each one carries a marker naming the host and process that made it, so the next run
for the same output removes those whose process is gone, and leaves alone what another tool made or a live
run (here or on another host) still writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deface_ts.errors import OutputError

#: The marker inside a temporary folder this tool made; removed before the folder becomes the output.
MARKER = ".deface-ts-run.json"


def check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse outputs that would mix with, sit inside, or contain the input."""
    out = Path(output).resolve()
    for source in inputs:
        src = Path(source).resolve()
        if src.is_dir() and (out == src or src in out.parents):
            raise OutputError(f"{output}: output lies inside the input folder {src}; choose a folder outside it")
        if out == src or out in src.parents:
            raise OutputError(f"{output}: output folder would contain the input {src}; choose another folder")
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"{output}: exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise OutputError(f"{output}: folder exists and is not empty (use --overwrite to replace it)")


@dataclass(frozen=True)
class TemporaryFolder:
    """A temporary folder of some output, as its marker describes it."""

    path: Path
    host: str
    pid: int
    live: bool  # its process still runs (or runs on another host, where this one cannot tell)


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks after boot), None when there is no such process.

    Compared with the marker's record, so a recycled PID does not pass for the run that made the folder.
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    if Path("/proc/self/stat").exists():
        return _process_start(pid) is not None and _process_start(pid) == started
    try:  # without /proc: whether the PID exists at all
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_folders(output: Path) -> list[TemporaryFolder]:
    """The temporary folders this tool made for ``output`` (the ones with a readable marker)."""
    output = Path(output)
    found = []
    for path in sorted(output.parent.glob(f".{output.name}.*.tmp")):
        try:
            record = json.loads((path / MARKER).read_text())
            host, pid, started = str(record["host"]), int(record["pid"]), record.get("started")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or not readable as ours: never touched
        live = host != socket.gethostname() or _alive(pid, started)
        found.append(TemporaryFolder(path, host, pid, live))
    return found


def remove_stale(output: Path) -> list[Path]:
    """Remove the temporary folders of ``output`` left by runs of this host whose process is gone."""
    removed = []
    for folder in temporary_folders(output):
        if not folder.live:
            shutil.rmtree(folder.path, ignore_errors=True)
            removed.append(folder.path)
    return removed


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (os.umask sets it for every thread)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(output: Path, inputs: list[Path], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``output`` only if the block succeeds.

    On any error the temporary folder is removed and ``output`` is untouched. The
    output folder's permissions follow the umask, as a folder made by mkdir would
    (mkdtemp makes it 0700, which hides a curator's results from colleagues).
    """
    output = Path(output)
    check_output(output, inputs, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(output)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        pid = os.getpid()
        (tmp / MARKER).write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                              "started": _process_start(pid)}))
        yield tmp
        (tmp / MARKER).unlink()
        os.chmod(tmp, 0o777 & ~_umask())
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
            os.rename(output, old / "previous")
            os.rename(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
