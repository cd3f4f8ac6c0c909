"""The CT eye finder on a 512x512x200 head (target <= 1 s on 2 cores), and on the real head if installed.

With --whole-case it also times the whole `deface` case with method auto on the 512x512x180 phantom without
eye ROIs (CT eyes cross-checked by the render locator) against the same case with eye ROIs and --method
eyes. Target: auto without ROIs <= 1.5x the eyes-method case.

Run: .venv/bin/python benchmarks/bench_ct_eyes.py [--whole-case] [WORKDIR]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import phantom

from deface_ts.config import load_config
from deface_ts.geometry.volume import Volume
from deface_ts.locate.ct_eyes import CtEyeLocator
from deface_ts.phantom import EYE_CENTRES, PhantomOptions
from deface_ts.phantom.anatomy import evaluate_boxes
from deface_ts.pipeline import deface

REPEATS = 7
#: 512 x 512 x 200 at the two pixel sizes that bound real head CTs: ~1 mm (every voxel sampled) and 0.5 mm.
GRIDS = {"0.98 mm pixels, 1.25 mm slices": {"pixel_spacing": 0.98, "slice_thickness": 1.25},
         "0.5 mm pixels, 1.0 mm slices": {"pixel_spacing": 0.5, "slice_thickness": 1.0}}


def time_finder(ct: Volume, label: str, truth: dict | None = None) -> None:
    locator = CtEyeLocator()
    locator.locate(ct)  # first call: imports and page faults
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        location = locator.locate(ct)
        seconds.append(time.perf_counter() - start)
    line = f"  {label:<44} median {median(seconds):.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f})"
    if truth:
        error = max(np.linalg.norm(e.centre_mm - truth[e.side]) for e in location.eyes)
        line += f"; farthest eye from truth {error:.2f} mm"
    print(line)


def whole_case(work: Path) -> None:
    seconds = {}
    for label, options, method in (("eyes (eye ROIs)", {}, "eyes"), ("auto (no eye ROIs)", {"include_eyes": False}, "auto")):
        folder = phantom(work / ("study" if options else "study-eyes"), **options)
        runs = []
        for n in range(3):
            out = work / f"out-{method}-{n}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            deface(folder, out, load_config(None, {"method": method}))
            runs.append(time.perf_counter() - start)
        seconds[label] = median(runs)
        print(f"  whole case, {label:<28} median {seconds[label]:.2f} s ({', '.join(f'{s:.2f}' for s in runs)})")
    ratio = seconds["auto (no eye ROIs)"] / seconds["eyes (eye ROIs)"]
    print(f"  ratio auto / eyes: {ratio:.2f} (target <= 1.5)")


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    work = Path(args[0]) if args else Path(tempfile.gettempdir()) / "deface-ts-bench"
    work.mkdir(parents=True, exist_ok=True)
    print("CT eye finder (CtEyeLocator.locate), 512x512x200, int16:")
    for label, grid in GRIDS.items():
        hu, _, affine = evaluate_boxes(PhantomOptions(rows=512, columns=512, slices=200, include_eyes=False, **grid))
        time_finder(Volume(np.rint(hu).astype(np.int16), affine), label, EYE_CENTRES)
    try:
        from tests.real_heads import cranium_folder, load_cranium

        if (cranium_folder() / "matrix.dat").exists():
            time_finder(load_cranium(), "real head (Cranium, 256x256x108)")
    except ImportError:
        pass
    if "--whole-case" in argv:
        whole_case(work)


if __name__ == "__main__":
    main(sys.argv[1:])
