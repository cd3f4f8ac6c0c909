"""Header de-identification on the 512x512x180 benchmark study, against two baselines.

* ``deface-ts deid`` alone against the floor: pydicom reading and writing the same files with no processing.
  Target: ratio <= 1.5.
* ``deface`` with de-identification (rt-research, the default) against ``deface --deid off``.
  Target: de-identification adds <= 20 %.

Runs alternate so both sides see the same page cache and machine load; medians of REPEATS.
Run: .venv/bin/python benchmarks/bench_deid.py [WORKDIR]
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import phantom  # noqa: E402

from deface_ts.config import DeidConfig, load_config  # noqa: E402
from deface_ts.deid.study import deidentify_folder  # noqa: E402
from deface_ts.pipeline import deface  # noqa: E402

REPEATS = 3


def timed(function, *args, **kwargs) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def floor(files: list[Path], out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for n, path in enumerate(files):
        pydicom.dcmread(path).save_as(out / f"{n}.dcm")


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.with_name(path.name + ".linkage.csv").unlink(missing_ok=True)
    return path


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir()) / "deface-ts-bench-deid"
    study = phantom(work / "study")
    files = sorted(study.rglob("*.dcm"))
    key = work / "bench.key"
    key.write_text("benchmark-key-not-a-secret-0001\n")
    key.chmod(0o600)
    deid_config = DeidConfig(key_file=str(key))
    print(f"phantom: {study} ({len(files)} files); {REPEATS} alternating runs, medians")

    floors, deids = [], []
    for _ in range(REPEATS):
        floors.append(timed(floor, files, work / "floor-out")[0])
        deids.append(timed(deidentify_folder, study, fresh(work / "deid-out"), deid_config)[0])
    print(f"floor (pydicom read + write)      {median(floors):6.2f} s")
    print(f"deface-ts deid                    {median(deids):6.2f} s   ratio {median(deids) / median(floors):.2f} "
          "(target <= 1.5)")

    on_config = load_config(overrides={"deid.key_file": str(key)})
    off_config = load_config(overrides={"deid.profile": "off"})
    on, off, stages = [], [], {}
    for _ in range(REPEATS):
        off.append(timed(deface, study, fresh(work / "deface-off"), off_config)[0])
        seconds, report = timed(deface, study, fresh(work / "deface-on"), on_config)
        on.append(seconds)
        stages = report["timings_s"]  # type: ignore[index]
    print(f"deface --deid off                 {median(off):6.2f} s")
    print(f"deface (deid rt-research)         {median(on):6.2f} s   +{100 * (median(on) / median(off) - 1):.1f} % "
          "(target <= 20 %)")
    print("  stages of the last deid run: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(f"machine: {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
