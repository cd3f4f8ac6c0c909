"""Discover, load and write a 512x512x180 phantom study next to the floor: pydicom reading and writing
the same files with no processing. Target: load + write <= 2x the floor.

Run: .venv/bin/python benchmarks/bench_core.py [WORKDIR]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stages, phantom  # noqa: E402

from deface_ts.dicom.ct import load_ct  # noqa: E402
from deface_ts.dicom.case import Case  # noqa: E402
from deface_ts.dicom.rtdose import load_dose  # noqa: E402
from deface_ts.dicom.rtplan import load_plan  # noqa: E402
from deface_ts.dicom.rtstruct import load_structures  # noqa: E402
from deface_ts.dicom.study import discover, select  # noqa: E402
from deface_ts.dicom.writer import Changes, write_case  # noqa: E402


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir()) / "deface-ts-bench"
    study = phantom(work / "study")
    files = sorted(p for p in study.rglob("*.dcm"))
    print(f"phantom: {study} ({len(files)} files)")
    stages = Stages()

    floor = Stages()
    with floor.stage("floor: pydicom read + decode"):
        datasets = [pydicom.dcmread(p) for p in files]
        for ds in datasets:
            if "PixelData" in ds:
                ds.pixel_array
    out = work / "floor-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    with floor.stage("floor: pydicom write"):
        for n, ds in enumerate(datasets):
            ds.save_as(out / f"{n}.dcm")
    del datasets

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
    out = work / "write-out"
    shutil.rmtree(out, ignore_errors=True)
    with stages.stage("write (identity)"):
        write_case(case, Changes(), out)
    floor.print(f"Floor on {len(files)} files")
    stages.print(f"deface-ts core ({ct.hu.shape}, {len(structures.rois)} ROIs, dose {doses[0].gy.shape})")
    floor_total = sum(s for _, s, _ in floor.rows)
    ours = sum(s for _, s, _ in stages.rows)
    print(f"\n  total {ours:.2f} s vs floor {floor_total:.2f} s: ratio {ours / floor_total:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
