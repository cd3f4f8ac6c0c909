"""Discover, load and write a 512x512x180 phantom study next to the floor: pydicom reading and writing
the same files with no processing. Target: load + write <= 2x the floor.

Run: .venv/bin/python benchmarks/bench_core.py [WORKDIR]
"""

from __future__ import annotations

import gc
import shutil
import sys
import tempfile
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stages, median, phantom  # noqa: E402

from deface_ts.io.dicom.case import Case  # noqa: E402
from deface_ts.io.dicom.ct import load_ct  # noqa: E402
from deface_ts.io.dicom.rtdose import load_dose  # noqa: E402
from deface_ts.io.dicom.rtplan import load_plan  # noqa: E402
from deface_ts.io.dicom.rtstruct import load_structures  # noqa: E402
from deface_ts.io.dicom.study import discover, select  # noqa: E402
from deface_ts.io.dicom.writer import Changes, write_case  # noqa: E402

REPEATS = 5


def floor_run(files: list[Path], out: Path) -> Stages:
    floor = Stages()
    with floor.stage("floor: pydicom read + decode"):
        datasets = [pydicom.dcmread(p) for p in files]
        for ds in datasets:
            if "PixelData" in ds:
                _ = ds.pixel_array
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    with floor.stage("floor: pydicom write"):
        for n, ds in enumerate(datasets):
            ds.save_as(out / f"{n}.dcm")
    return floor


def core_run(study: Path, out: Path) -> tuple[Stages, str]:
    stages = Stages()
    with stages.stage("discover (headers)"):
        found = select(discover(study))
    with stages.stage("load CT"):
        ct = load_ct(found.ct)
    with stages.stage("load RTSTRUCT (rasterise)"):
        structures = load_structures(found.rtstruct, ct.hu, found.frame_of_reference)
    with stages.stage("load RTDOSE + RTPLAN"):
        doses = [load_dose(d) for d in found.rtdose]
        plan = load_plan(found.rtplan) if found.rtplan else None
    case = Case(found, ct, structures, plan, doses)
    shutil.rmtree(out, ignore_errors=True)
    with stages.stage("write (identity)"):
        write_case(case, Changes(), out)
    return stages, f"{ct.hu.shape}, {len(structures.rois)} ROIs, dose {doses[0].gy.shape}"


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir()) / "deface-ts-bench"
    study = phantom(work / "study")
    files = sorted(p for p in study.rglob("*.dcm"))
    print(f"phantom: {study} ({len(files)} files); {REPEATS} alternating runs of floor and core, medians")
    floors, cores = [], []
    for _ in range(REPEATS):
        # Alternate, so both see the same page cache and machine load; each starts from a collected heap so
        # that neither pays for the other's garbage (the collector stays on while they run).
        gc.collect()
        floors.append(floor_run(files, work / "floor-out"))
        gc.collect()
        stages, what = core_run(study, work / "write-out")
        cores.append(stages)
    median(floors).print(f"Floor on {len(files)} files")
    median(cores).print(f"deface-ts core ({what})")
    ratios = sorted(c.total() / f.total() for f, c in zip(floors, cores))
    floor_total, ours = median(floors).total(), median(cores).total()
    print(f"\n  total {ours:.2f} s vs floor {floor_total:.2f} s (medians): "
          f"ratio {ours / floor_total:.2f} (target <= 2)")
    print(f"  ratio per run: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
