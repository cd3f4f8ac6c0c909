"""Timing and peak-memory helpers shared by the benchmarks."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from deface_ts.phantom import PhantomOptions, write_phantom_study

#: The size the issues name: 512 x 512 x ~180, ~25 ROIs, dose grid.
FULL = dict(rows=512, columns=512, pixel_spacing=0.98, slices=180, slice_thickness=1.25)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Stages:
    """Wall time and peak resident memory of each stage (RSS sampled every 5 ms)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    @contextmanager
    def stage(self, name: str):
        peak = [rss_mb()]
        done = threading.Event()

        def sample():
            while not done.wait(0.005):
                peak[0] = max(peak[0], rss_mb())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            done.set()
            thread.join()
            self.rows.append((name, elapsed, max(peak[0], rss_mb())))

    def total(self) -> float:
        return sum(seconds for _, seconds, _ in self.rows)

    def print(self, title: str) -> None:
        print(f"\n{title}")
        print(f"  {'stage':<34} {'seconds':>8} {'peak RSS MB':>12}")
        for name, seconds, peak in self.rows:
            print(f"  {name:<34} {seconds:8.2f} {peak:12.0f}")


def median(runs: list[Stages]) -> Stages:
    """Per stage, the median time and the largest peak over repeated runs of the same stages."""
    out = Stages()
    for i, (name, _, _) in enumerate(runs[0].rows):
        seconds = sorted(run.rows[i][1] for run in runs)
        out.rows.append((name, seconds[len(seconds) // 2], max(run.rows[i][2] for run in runs)))
    return out


def phantom(folder: Path, **options):
    if (folder / ".done").exists():
        from deface_ts.dicom.study import discover

        return folder
    write_phantom_study(folder, PhantomOptions(**{**FULL, **options}))
    (folder / ".done").write_text("")
    return folder
