"""Timing and peak-memory helpers shared by the benchmarks."""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path

import pydicom

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


#: Planning systems add optimisation copies of ROIs; four bring the phantom's 21 ROIs to the issues' ~25.
EXTRA_ROIS = {"PTV_70": "PTV_70_opt", "Parotid_L": "Parotid_L_avoid", "Parotid_R": "Parotid_R_avoid",
              "SpinalCord": "SpinalCord_PRV05"}


def add_optimisation_rois(rtstruct: Path) -> None:
    ds = pydicom.dcmread(rtstruct)
    numbers = {str(item.ROIName): int(item.ROINumber) for item in ds.StructureSetROISequence}
    number = max(numbers.values()) + 1
    for source, name in EXTRA_ROIS.items():
        old = numbers[source]
        info = deepcopy(next(i for i in ds.StructureSetROISequence if int(i.ROINumber) == old))
        info.ROINumber, info.ROIName = number, name
        contour = deepcopy(next(c for c in ds.ROIContourSequence if int(c.ReferencedROINumber) == old))
        contour.ReferencedROINumber = number
        observation = deepcopy(next(o for o in ds.RTROIObservationsSequence if int(o.ReferencedROINumber) == old))
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType = "CONTROL"
        ds.StructureSetROISequence.append(info)
        ds.ROIContourSequence.append(contour)
        ds.RTROIObservationsSequence.append(observation)
        number += 1
    ds.save_as(rtstruct)


def phantom(folder: Path, **options):
    """The benchmark study: 512 x 512 x 180 phantom, 25 ROIs, dose and plan (written once, then reused)."""
    done = folder / ".done-25-rois"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    study = write_phantom_study(folder, PhantomOptions(**{**FULL, **options}))
    add_optimisation_rois(study.rtstruct_file)
    done.write_text("")
    return folder
