"""What the identity check adds to a case's verification (target: <= 0.5 s), on the 512x512x180 phantom.

Times, in one warm process (models loaded before timing, CT in memory, VTK renders where available), with
the descriptor worker forked first, as the pipeline's verification child forks it (in the pipeline the
original's half runs beside planning and writing, so this in-process figure is an upper bound):

* ``verify with identity``: `visual_check` as the pipeline runs it (renders, detectors, identity; dlib's
  network in the worker process);
* ``verify without identity``: the same renders and detectors in the same order, without the identity
  step;
* ``identity alone``: face boxes and dlib's descriptors of the three judged views of both CTs, waited for
  one CT after the other, nothing overlapped.

``a Python thread beside the descriptors`` says whether overlap can hide them: how far a pure-Python loop in
a second thread gets while three descriptors are computed, against the same loop alone for as long (100 %:
the descriptors leave this process's GIL free; near 0 %: they hold it, and a thread beside them only takes
turns), for descriptors computed in this process and in the worker.

Each figure is a median over alternated runs; ``identity adds`` is the median of the paired differences
(with minus without, run next to each other), and beside it the CPU seconds the identity adds (this process,
any child it joined and the worker), which do not grow when other jobs share the cores. On a machine whose
second core is busy with other jobs, the worker's CPU seconds come back as wall time.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_identity.py [WORKDIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import phantom

from deface_ts.checks import identity as rule
from deface_ts.checks.verify import verify_detectors, visual_check
from deface_ts.config import load_config
from deface_ts.io.dicom.case import load_case
from deface_ts.removal.apply import deface_volume
from deface_ts.vision import faces, identity
from deface_ts.vision.render import render_views

TARGET_S = 0.5


def without_identity(before, after, config, detectors) -> None:
    """The verification's renders and detections in the order `visual_check` runs them, no identity step:
    the original's half (`look_at_original`: render, detect), then the written CT's (`judge_written`)."""
    options = dict(backend=config.backend, threshold_hu=config.skin_hu, opening_mm=config.strip_opening_mm,
                   margin_mm=config.strip_margin_mm)
    views = render_views(before, tuple(config.angles), **options)
    faces.faces_in_views(views, detectors)
    after_views = render_views(after, frame=views, **options)
    faces.faces_in_views(after_views, detectors)


def identity_alone(before, after, config, eyes_mm, detectors) -> tuple[float, float]:
    """Wall and CPU seconds of the identity step alone (CPU time does not grow when other jobs share the cores)."""
    views = render_views(before, tuple(config.angles), backend=config.backend)
    seen = faces.faces_in_views(views, detectors)
    after_views = render_views(after, frame=views, backend=config.backend)
    start, cpu = time.perf_counter(), cpu_seconds()
    boxes = rule.face_boxes(views, seen, eyes_mm)
    rule.judge(boxes, rule.descriptors(views, boxes), rule.descriptors(after_views, boxes),
               config.identity_threshold, eyes_mm)
    return time.perf_counter() - start, cpu_seconds() - cpu


def python_share_beside(work) -> float:
    """A counting Python thread's progress while ``work`` runs, as a fraction of its progress alone as long."""
    count, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1

    def counted(seconds: float | None) -> tuple[int, float]:
        count[0] = 0
        stop.clear()
        thread = threading.Thread(target=spin)
        start = time.perf_counter()
        thread.start()
        work() if seconds is None else time.sleep(seconds)
        stop.set()
        thread.join()
        return count[0], time.perf_counter() - start

    beside, seconds = counted(None)
    alone, _ = counted(seconds)
    return beside / max(alone, 1)


ARMS = ("verify with identity", "verify with identity in a thread", "verify without identity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", type=Path, default=Path(tempfile.gettempdir()) / "deface-ts-bench")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quiet-cpu", type=float, default=0.3,
                        help="a pair counts as quiet when other processes used less CPU than this (seconds)")
    args = parser.parse_args()
    assert rule.start_worker(), "no descriptor worker (dlib's weights missing, or no fork here)"
    case = load_case(phantom(args.workdir / "study"))
    ct = case.ct.hu
    eyes = np.zeros(ct.shape, dtype=bool)
    for roi in case.structures.rois:
        if roi.name in ("Eye_L", "Eye_R"):
            eyes |= roi.mask.full(ct.shape)
    config = load_config()
    after, _, location = deface_volume(ct, eyes, [], config)
    eyes_mm = np.array([e.centre_mm for e in location.eyes])
    detectors = verify_detectors(config.verify)
    faces.detect(np.zeros((64, 64, 3), np.uint8), detectors)  # models load once per process, not per case
    # the worker's network and this process's, and the predictor, load before the clock starts
    rule.descriptors(render_views(ct, (0.0,)), {0.0: identity.FaceBox((0, 0, 64, 64), "warm-up")})
    identity.descriptor(render_views(ct, (0.0,))[0.0], identity.FaceBox((0, 0, 64, 64), "warm-up"))
    runs = {"verify with identity": lambda: visual_check(ct, after, config.verify, args.workdir / "failed", eyes_mm),
            "verify with identity in a thread": lambda: in_a_thread(
                lambda: visual_check(ct, after, config.verify, args.workdir / "failed", eyes_mm)),
            "verify without identity": lambda: without_identity(ct, after, config.verify, detectors)}
    timings: dict[str, list[float]] = {}
    for _ in range(args.repeat):  # alternated, so a slow spell of the shared machine hits every arm
        for name in ARMS:
            for key, value in zip((name, f"{name}, CPU time", f"{name}, others' CPU"), timed(runs[name])):
                timings.setdefault(key, []).append(value)
        for key, value in zip(("identity alone", "identity alone, CPU time"),
                              identity_alone(ct, after, config.verify, eyes_mm, detectors)):
            timings.setdefault(key, []).append(value)
    print(f"CT {ct.shape} at {np.round(ct.spacing, 2).tolist()} mm, {len(config.verify.angles)} views, "
          f"detectors {', '.join(detectors)}; medians of {args.repeat}")
    for name, values in timings.items():
        print(f"  {name}: {np.median(values):.2f} s  (runs {', '.join(f'{v:.2f}' for v in values)})")
    print_shares(ct, detectors)
    for name in ARMS[:2]:
        print_added(timings, name, args.quiet_cpu)
    print(f"  load average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")


def timed(run) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (this process, joined children, the worker), and the CPU seconds every other
    process on the machine used meanwhile (from /proc/stat): near 0 the run had the machine to itself."""
    start, cpu, machine = time.perf_counter(), cpu_seconds(), machine_busy_seconds()
    run()
    wall, used = time.perf_counter() - start, cpu_seconds() - cpu
    return wall, used, max(machine_busy_seconds() - machine - used, 0.0)


def in_a_thread(run) -> None:
    """``run`` with dlib's network in a thread of this process (the arrangement before the worker)."""
    worker, identity._worker = identity._worker, None
    try:
        run()
    finally:
        identity._worker = worker


def print_shares(ct, detectors) -> None:
    view = render_views(ct, (0.0,))[0.0]
    box = identity.box_from_detections(faces.faces_in_views({0.0: view}, detectors)[0.0])
    assert box is not None, "no detector found the phantom's face in the frontal view"
    chips = {float(n): identity.face_chip(view, box) for n in range(3)}
    for where, work in (("in this process", lambda: identity._describe(chips)),
                        ("in the worker", lambda: identity.Descriptors(chips).result())):
        values = [python_share_beside(work) for _ in range(3)]
        print(f"  a Python thread beside 3 descriptors {where}: {np.median(values):.0%} of its speed alone "
              f"(runs {', '.join(f'{v:.0%}' for v in values)})")


def print_added(timings: dict[str, list[float]], name: str, quiet_cpu: float) -> None:
    """The paired differences against the arm without identity: all pairs, and the pairs nothing else disturbed."""
    base = "verify without identity"
    added = np.subtract(timings[name], timings[base])
    cpu = np.subtract(timings[f"{name}, CPU time"], timings[f"{base}, CPU time"])
    others = np.maximum(timings[f"{name}, others' CPU"], timings[f"{base}, others' CPU"])
    quiet = others < quiet_cpu
    label = name.replace("verify with identity", "identity").strip() or "identity"
    print(f"  {label} adds {np.median(added):.2f} s per case (median of {len(added)} paired differences: "
          f"{', '.join(f'{v:.2f}' for v in added)}; target <= {TARGET_S} s), {np.median(cpu):.2f} s of CPU")
    if quiet.any():
        print(f"    in the {quiet.sum()} pairs where other processes used < {quiet_cpu} s of CPU: "
              f"{np.median(added[quiet]):.2f} s ({', '.join(f'{v:.2f}' for v in added[quiet])})")
    else:
        print(f"    no pair ran with other processes under {quiet_cpu} s of CPU: rerun on a quiet machine")


def cpu_seconds() -> float:
    """CPU seconds of this process, of its joined children and of the descriptor worker (not joined: it lives on)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system + worker_cpu_seconds()


def worker_cpu_seconds() -> float:
    """user + system seconds of the descriptor worker, from /proc/PID/stat (fields 14 and 15, in clock ticks)."""
    pid = identity.worker_pid()
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (/proc/stat: every field but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
