"""Time TotalSegmentator's ``face`` stage on a 512 x 512 x 180 head: cropped to the face vs the whole image.

The model folder holds nnU-Net's default 3d_fullres U-Net for 1.5 mm CT (the
face model's architecture, 31 M parameters, 128^3 patches) with random weights:
the predictions mean nothing, the arithmetic is the real model's. TotalSegmentator
and nnU-Net run unmodified through deface-ts's ``run_task``.

    .venv/bin/python benchmarks/bench_totalseg.py [--threads 2] [--skip-uncropped] [--whole-case]

Targets: crop ≥ 4x faster than uncropped; whole case on 2 CPU cores ≤ 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def sliding_windows(shape_mm, spacing=1.5, patch=128, step=0.5) -> int:
    """Number of nnU-Net tiles for an image of this extent (mm) at ``spacing``."""
    import math

    count = 1
    for extent in shape_mm:
        n = max(patch, int(round(extent / spacing)))
        count *= 1 if n == patch else math.ceil((n - patch) / (patch * step)) + 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "deface-ts-bench-totalseg")
    parser.add_argument("--skip-uncropped", action="store_true", help="the uncropped call takes minutes on a CPU")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--whole-case", action="store_true",
                        help="also time a whole deface case (method union) on the DICOM phantom of bench_deface.py")
    args = parser.parse_args()

    import numpy as np
    from common import FULL, Stages
    from nnunet_models import write_architecture_model, write_licence_config

    from deface_ts.geometry.volume import Volume
    from deface_ts.locate.totalseg import runtime
    from deface_ts.phantom import PhantomOptions, evaluate

    home = args.workdir / "home"
    write_licence_config(home)
    write_architecture_model(home / "nnunet" / "results", "face")
    os.environ["TOTALSEG_HOME_DIR"] = str(home)

    start = time.perf_counter()
    hu, _, affine = evaluate(PhantomOptions(**FULL))
    ct = Volume(hu, affine)
    print(f"phantom {ct.shape} ({ct.spacing.round(2).tolist()} mm) built in {time.perf_counter() - start:.1f} s")

    stages = Stages()
    small_hu, _, small_affine = evaluate(PhantomOptions(rows=96, columns=96, pixel_spacing=2.5, slices=48,
                                                        slice_thickness=4.0))
    with stages.stage("first call: imports + model load (small CT)"):
        runtime.run_task(Volume(small_hu, small_affine), "face",
                          runtime.TotalSegOptions(device=args.device, threads=args.threads), anterior_only=True)
    options = runtime.TotalSegOptions(device=args.device, threads=args.threads)
    box = runtime.head_box(ct, options, anterior_only=True)
    crop_shape = [int(s.stop - s.start) for s in box]
    crop_mm = np.array(crop_shape) * ct.spacing
    full_mm = np.array(ct.shape) * ct.spacing
    with stages.stage("face, cropped to the face"):
        cropped = runtime.run_task(ct, "face", options, anterior_only=True)
    if not args.skip_uncropped:
        with stages.stage("face, whole image (no crop)"):
            runtime.run_task(ct, "face", runtime.TotalSegOptions(device=args.device, threads=args.threads,
                                                                   crop=False), anterior_only=True)
    stages.print(f"TotalSegmentator face stage, {args.threads} CPU thread(s), device {args.device}")
    print(f"  crop {crop_shape} voxels = {crop_mm.round(0).tolist()} mm "
          f"({np.prod(crop_shape) / np.prod(ct.shape):.1%} of the image); "
          f"nnU-Net tiles: {sliding_windows(crop_mm)} cropped vs {sliding_windows(full_mm)} whole")
    rows = {name: (seconds, peak) for name, seconds, peak in stages.rows}
    result = {"image": list(ct.shape), "crop": crop_shape, "threads": args.threads, "device": args.device,
              "stages": {name: {"seconds": round(s, 2), "peak_rss_mb": round(p)} for name, (s, p) in rows.items()},
              "face_voxels": int((cropped == 1).sum())}
    if not args.skip_uncropped:
        speedup = rows["face, whole image (no crop)"][0] / rows["face, cropped to the face"][0]
        result["speedup"] = round(speedup, 2)
        print(f"  speed-up from cropping: {speedup:.1f}x (target >= 4x)")
    if args.whole_case:
        result["whole_case"] = whole_case(args)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_totalseg.json").write_text(json.dumps(result, indent=2))


def whole_case(args) -> dict:
    """One ``deface`` of the 512 x 512 x 180 DICOM phantom with method union, in a fresh process state.

    With random weights the face mask means nothing (the eye region still defaces the phantom, so the
    case runs through); the point is the time of every stage with the real architecture.
    """
    import resource
    import shutil

    from common import phantom

    from deface_ts.config import load_config
    from deface_ts.errors import DefaceError
    from deface_ts.pipeline import deface

    study = phantom(Path(tempfile.gettempdir()) / "deface-ts-bench" / "study")
    out = args.workdir / "whole-case"
    shutil.rmtree(out, ignore_errors=True)
    config = load_config(None, {"method": "union", "totalseg.device": args.device, "totalseg.threads": args.threads,
                                "verify.mode": "report"})
    start = time.perf_counter()
    try:
        report = deface(study, out, config)
        outcome, timings = "written", report["timings_s"]
    except DefaceError as exc:
        outcome, timings = f"failed: {exc}", {}
    seconds = time.perf_counter() - start
    print(f"\nwhole case, method union, {args.threads} thread(s): {seconds:.1f} s (target <= 60 s); {outcome}")
    for stage, value in timings.items():
        print(f"  {stage:12s} {value:7.2f} s")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return {"seconds": round(seconds, 2), "outcome": outcome, "stages": timings}


if __name__ == "__main__":  # nnU-Net may spawn workers: they re-import this file
    main()
