"""Render + detect for one 512x512x180 phantom case: strip the immobilisation, render 6 views, run the
verification detectors on each. Target: <= 5 s per case on 2 cores (render + detect, CT already loaded).

Run: .venv/bin/python benchmarks/bench_render.py [WORKDIR] [--backend vtk|numpy|both]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stages, phantom  # noqa: E402

from deface_ts.choices import VERIFY_ANGLES  # noqa: E402
from deface_ts.io.dicom.ct import load_ct  # noqa: E402
from deface_ts.io.dicom.study import discover, select  # noqa: E402
from deface_ts.vision import faces, render, vtk_render  # noqa: E402
from deface_ts.vision.skin import strip_immobilisation  # noqa: E402

TARGET_S = 5.0


def one_case(ct, backend: str, detectors: list[str]) -> tuple[Stages, dict]:
    stages = Stages()
    with stages.stage("strip immobilisation"):
        skin = strip_immobilisation(ct.array, ct.spacing)
    with stages.stage(f"render 6 views ({backend})"):
        views = render.render_views(ct, VERIFY_ANGLES, backend=backend, skin=skin)
    with stages.stage(f"detect ({', '.join(detectors)})"):
        found = {angle: faces.valid_detections(view, faces.detect(view.image, detectors))
                 for angle, view in views.items()}
    return stages, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", type=Path, default=Path(tempfile.gettempdir()) / "deface-ts-bench")
    parser.add_argument("--backend", choices=("vtk", "numpy", "both"), default="both")
    args = parser.parse_args()
    study = phantom(args.workdir / "study")
    ct = load_ct(select(discover(study)).ct).hu
    detectors = [name for name in faces.VERIFY_DETECTORS if name in faces.available_detectors()]
    if len(detectors) < 2:
        sys.exit(f"need at least two of {faces.VERIFY_DETECTORS} installed, have {detectors}")
    # warm-up outside the timing: model loading happens once per process, not once per case
    faces.detect(np.zeros((64, 64, 3), np.uint8), detectors)
    backends = ["vtk", "numpy"] if args.backend == "both" else [args.backend]
    if "vtk" in backends and not vtk_render.vtk_available():
        print("VTK offscreen rendering unavailable here: numpy only")
        backends = ["numpy"]
    for backend in backends:
        stages, found = one_case(ct, backend, detectors)
        stages.print(f"render + detect, {backend}, CT {ct.shape} at {np.round(ct.spacing, 2).tolist()} mm")
        total = sum(seconds for _, seconds, _ in stages.rows)
        print(f"  total {total:.2f} s (target <= {TARGET_S:.0f} s)")
        for angle in found:
            names = sorted({d.detector for d in found[angle]})
            print(f"  {angle:+4.0f} deg: {', '.join(names) or 'no face'}")


if __name__ == "__main__":
    main()
