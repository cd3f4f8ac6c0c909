"""What a user waits for: the `deface-ts` command as a subprocess, wall time and peak RSS of the whole process.

The in-process benchmarks (bench_core, bench_deface) time stages after the imports; this one times the process
from fork to exit, on a 512x512x141 phantom with RTSTRUCT (25 ROIs), RTPLAN and RTDOSE, in alternating runs of:

- floor: a plain pydicom read (with pixel decoding) + write of every file of the study, in a fresh process;
- like for like: ``deface IN OUT --method eyes --verify off --no-nifti --no-pictures`` (defaceRT's job);
- default: ``deface IN OUT`` (visual verification, QC pictures, NIfTI copies).

Targets on the 2-core machine: like for like <= 2.0 s and <= 600 MiB; default <= 5 s; process start to the
first stage (imports, argument parsing, configuration) <= 0.3 s, read from the CLI's ``--json`` summary.
Run: .venv/bin/python benchmarks/bench_cli.py [WORKDIR] [--runs N] [--peer COMMAND]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import phantom  # noqa: E402

SLICES = 141

FLOOR = """
import sys, pathlib, pydicom
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir()
for n, path in enumerate(sorted(src.rglob("*.dcm"))):
    ds = pydicom.dcmread(path)
    if "PixelData" in ds:
        ds.pixel_array
    ds.save_as(out / f"{n}.dcm")
"""


@dataclass
class Runs:
    label: str
    command: list[str]
    wall_s: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    startup_s: list[float] = field(default_factory=list)


def run_once(command: list[str], out: Path) -> tuple[float, float, float, dict | None]:
    """One run in its own process: wall seconds, the child's peak RSS in MiB, its CPU seconds (user + system:
    steadier than wall time when other work shares the machine) and its --json summary."""
    shutil.rmtree(out, ignore_errors=True)
    read, write = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: stdout into the pipe, stderr to /dev/null, then exec the command
        os.close(read)
        os.dup2(write, 1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        os.execvp(command[0], command)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit {os.waitstatus_to_exitcode(status)}")
    text = b"".join(chunks).decode().strip()
    summary = json.loads(text) if text.startswith("{") else None
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, summary  # ru_maxrss: KiB on Linux


def cli() -> list[str]:
    script = Path(sys.executable).parent / "deface-ts"
    return [str(script)] if script.exists() else [sys.executable, "-m", "deface_ts.apps.cli"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", nargs="?", type=Path, default=Path(tempfile.gettempdir()) / "deface-ts-bench-cli")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peer", help="another tool's command, run in the same alternation with the output folder "
                        "appended (e.g. a local defaceRT set up outside this repository: its code is not ours to ship)")
    args = parser.parse_args()
    study = phantom(args.work / "study", slices=SLICES)
    out = args.work / "out"
    runs = [
        Runs("pydicom read + write (floor)", [sys.executable, "-c", FLOOR, str(study), str(out)]),
        Runs("deface --method eyes, no verify/pictures/NIfTI", cli() + [
            "deface", str(study), str(out), "--method", "eyes", "--verify", "off", "--no-nifti", "--no-pictures",
            "--quiet", "--json"]),
        Runs("deface (defaults)", cli() + ["deface", str(study), str(out), "--quiet", "--json"]),
    ]
    if args.peer:
        runs.insert(1, Runs(f"peer: {args.peer}"[:48], [*shlex.split(args.peer), str(out)]))
    print(f"phantom: {study} (512x512x{SLICES}); {args.runs} alternating runs, medians")
    for _ in range(args.runs):
        for entry in runs:
            wall, rss, cpu, summary = run_once(entry.command, out)
            entry.wall_s.append(wall)
            entry.rss_mib.append(rss)
            entry.cpu_s.append(cpu)
            if summary is not None:
                entry.startup_s.append(summary["process"]["start_to_first_stage_s"])
    print(f"\n  {'whole process (fork to exit)':<48} {'wall s':>8} {'range':>13} {'CPU s':>6} {'peak RSS MiB':>13} "
          f"{'start to first stage s':>23}")
    for entry in runs:
        startup = f"{statistics.median(entry.startup_s):.2f}" if entry.startup_s else "—"
        print(f"  {entry.label:<48} {statistics.median(entry.wall_s):8.2f} "
              f"{min(entry.wall_s):6.2f}-{max(entry.wall_s):<6.2f} {statistics.median(entry.cpu_s):6.2f} "
              f"{statistics.median(entry.rss_mib):13.0f} {startup:>23}")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
