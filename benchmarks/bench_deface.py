"""End-to-end `deface` on a 512x512x180 phantom with ~25 ROIs and dose: wall time and peak memory per stage.

Targets on a 2-core machine: whole case <= 10 s, everything except reading and writing <= 3 s, peak <= 3 GB.
Run: .venv/bin/python benchmarks/bench_deface.py [WORKDIR]
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import phantom  # noqa: E402

from deface_ts.config import load_config  # noqa: E402
from deface_ts.pipeline import deface  # noqa: E402


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir()) / "deface-ts-bench"
    study = phantom(work / "study")
    out = work / "defaced"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    report = deface(study, out, load_config())
    total = time.perf_counter() - start
    timings = report["timings_s"]
    print(f"{'stage':<10} {'seconds':>8}")
    for name, seconds in timings.items():
        print(f"{name:<10} {seconds:8.2f}")
    core = sum(timings.get(k, 0.0) for k in ("segment", "plan", "apply"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"whole case {total:.2f} s (target <= 10); segment+plan+apply {core:.2f} s (target <= 3); "
          f"peak RSS {peak:.0f} MB (target <= 3072)")


if __name__ == "__main__":
    main()
