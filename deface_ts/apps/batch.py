"""Many cases from a manifest: one per Slurm array task, or all in turn on a workstation.

The manifest is a CSV with the columns ``case`` (the output folder's name),
``input`` (a DICOM study folder or a NIfTI CT; relative to the manifest) and
optionally ``series`` (a SeriesInstanceUID) and ``patient_id`` (the pseudonym
of the de-identified headers). The de-identification linkage of the run goes
outside the output root: ``OUTPUT_ROOT.linkage/<case>.csv``. Case ``c`` is written to
``OUTPUT_ROOT/c``; the pipeline renames that folder into place only when the
case passed every check, so its ``report.json`` is the done marker:

* idempotent and resumable: a case with a report is skipped;
* one failure never stops the others: it leaves ``OUTPUT_ROOT/c.failed.json``
  (error, exit code) and nothing else, and a later success removes it;
* a task exits with the case's own exit code (3 input, 4 output, 5 config,
  6 privacy, 7 model), so ``sacct``/``scontrol`` show why a task failed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deface_ts.apps.progress import StageProgress
from deface_ts.config import Config
from deface_ts.errors import DefaceError, InputError, OutputError
from deface_ts.io.output import TemporaryFolder, temporary_folders
from deface_ts.report import read_report

log = logging.getLogger(__name__)

_CASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Names in the output root that batch itself writes: Slurm scripts and logs, the summary, failure records and
#: the pictures of a failed verification (OUT.verify-failed beside a case's folder).
_RESERVED = ("slurm", "batch_status.csv")
_RESERVED_SUFFIXES = (".failed.json", ".verify-failed")
#: Exit code of a case that failed on an unexpected error (a bug): not one of DefaceError's codes.
UNEXPECTED_EXIT = 1


@dataclass(frozen=True)
class BatchCase:
    index: int  # 0-based row of the manifest: the Slurm array task id
    name: str
    input: Path
    series: str | None = None
    patient_id: str | None = None  # pseudonym for the de-identified headers (manifest column patient_id)


@dataclass(frozen=True)
class CaseResult:
    case: BatchCase
    status: str  # done, skipped (already done), failed
    exit_code: int
    message: str = ""


def read_manifest(path: Path) -> list[BatchCase]:
    """The cases of a manifest CSV; every problem names the file and line."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise InputError(f"{path}: manifest not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV manifest ({exc})") from None
    if not rows:
        raise InputError(f"{path}: manifest lists no cases (columns: case, input[, series])")
    missing = {"case", "input"} - set(rows[0])
    if missing:
        raise InputError(f"{path}: manifest needs the columns case, input[, series]; missing {', '.join(sorted(missing))}")
    cases: list[BatchCase] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        line = index + 2  # line 1 is the header
        name = (row.get("case") or "").strip()
        source = (row.get("input") or "").strip()
        if not _CASE_NAME.match(name):
            raise InputError(f"{path}, line {line}: case name {name!r} must be letters, digits, '.', '_' or '-' "
                             "(it becomes a folder name)")
        if name in _RESERVED or name.endswith(_RESERVED_SUFFIXES):
            raise InputError(f"{path}, line {line}: case name {name!r} is taken by batch's own files in the "
                             f"output root ({', '.join(_RESERVED)}, *{', *'.join(_RESERVED_SUFFIXES)})")
        if name in seen:
            raise InputError(f"{path}, line {line}: case {name!r} is already listed on line {seen[name]}")
        if not source:
            raise InputError(f"{path}, line {line}: case {name!r} has no input")
        seen[name] = line
        series = (row.get("series") or "").strip() or None
        patient_id = (row.get("patient_id") or "").strip() or None
        cases.append(BatchCase(index, name, (path.parent / source).resolve(), series, patient_id))
    return cases


def is_done(output_root: Path, case: BatchCase) -> bool:
    return (Path(output_root) / case.name / "report.json").is_file()


def failure_record(output_root: Path, case: BatchCase) -> Path:
    return Path(output_root) / f"{case.name}.failed.json"


def run_case(case: BatchCase, output_root: Path, config: Config,
             progress: StageProgress | None = None) -> CaseResult:
    """Deface one case unless it is done; a failure is recorded next to the outputs, never raised."""
    from deface_ts.pipeline import deface

    output_root = Path(output_root)
    record = failure_record(output_root, case)
    if is_done(output_root, case):
        return CaseResult(case, "skipped", 0, "already done")
    start = time.perf_counter()
    try:
        deface(case.input, output_root / case.name, config, series_uid=case.series, patient_id=case.patient_id,
               linkage=linkage_folder(output_root, config) / f"{case.name}.csv", progress=progress)
    except DefaceError as exc:
        _write_record(record, case, exc.exit_code, str(exc), exc.__class__.__name__)
        return CaseResult(case, "failed", exc.exit_code, str(exc))
    except Exception as exc:  # a bug must not stop the other cases: keep its traceback for the report
        message = f"unexpected {exc.__class__.__name__}: {exc}"
        _write_record(record, case, UNEXPECTED_EXIT, message, exc.__class__.__name__, traceback.format_exc())
        return CaseResult(case, "failed", UNEXPECTED_EXIT, message)
    # An earlier attempt's failure record and verification pictures no longer describe this case.
    record.unlink(missing_ok=True)
    shutil.rmtree(output_root / f"{case.name}.verify-failed", ignore_errors=True)
    return CaseResult(case, "done", 0, f"{time.perf_counter() - start:.1f} s")


def linkage_folder(output_root: Path, config: Config) -> Path:
    """One folder of linkage files for the run, outside the output root (which is what gets shared)."""
    folder = Path(config.deid.linkage) if config.deid.linkage else Path(output_root).parent / f"{Path(output_root).name}.linkage"
    root = Path(output_root).resolve()
    if folder.resolve() == root or root in folder.resolve().parents:
        raise OutputError(f"{folder}: the linkage folder must lie outside the output root {output_root}, "
                          "which is what gets shared")
    return folder


def _write_record(path: Path, case: BatchCase, code: int, message: str, kind: str, trace: str | None = None) -> None:
    record = {"case": case.name, "index": case.index, "input": str(case.input), "series": case.series,
              "exit_code": code, "error": kind, "message": message,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "slurm_job": _slurm_job()}
    if trace:
        record["traceback"] = trace
    path.parent.mkdir(parents=True, exist_ok=True)
    with _replace(path) as handle:
        json.dump(record, handle, indent=2)


def _slurm_job() -> str | None:
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else os.environ.get("SLURM_JOB_ID")


def task_index(index: int | None, cases: list[BatchCase]) -> int | None:
    """The case to run: ``index``, else $SLURM_ARRAY_TASK_ID, else None (all cases in turn)."""
    if index is None and os.environ.get("SLURM_ARRAY_TASK_ID"):
        try:
            index = int(os.environ["SLURM_ARRAY_TASK_ID"])
        except ValueError:
            raise InputError(f"SLURM_ARRAY_TASK_ID={os.environ['SLURM_ARRAY_TASK_ID']!r} is not a task number") from None
    if index is not None and not 0 <= index < len(cases):
        raise InputError(f"task index {index} is outside the manifest's cases 0-{len(cases) - 1}")
    return index


def run(cases: list[BatchCase], output_root: Path, config: Config, index: int | None = None,
        progress: StageProgress | None = None) -> list[CaseResult]:
    """Run one case (``index``) or every case in turn; results in manifest order."""
    chosen = cases if index is None else [cases[index]]
    results = []
    for number, case in enumerate(chosen, 1):
        if progress is not None:
            progress.case(number, len(chosen), case.name)
        result = run_case(case, output_root, config, progress)
        log.info("case %s: %s %s", case.name, result.status, result.message)
        results.append(result)
    return results


def exit_code(results: list[CaseResult]) -> int:
    """One task: its case's own code (sacct shows why). Several cases: the first failure's, after all ran."""
    return next((r.exit_code for r in results if r.status == "failed"), 0)


def failures(cases: list[BatchCase], output_root: Path) -> list[dict]:
    """The failure records of the cases that are not done, in manifest order."""
    return [json.loads(failure_record(output_root, c).read_text()) for c in cases
            if not is_done(output_root, c) and failure_record(output_root, c).is_file()]


def status(cases: list[BatchCase], output_root: Path) -> dict[str, list[str]]:
    """Case names by state: done, failed (with a failure record), pending."""
    states: dict[str, list[str]] = {"done": [], "failed": [], "pending": []}
    for case in cases:
        if is_done(output_root, case):
            states["done"].append(case.name)
        elif failure_record(output_root, case).is_file():
            states["failed"].append(case.name)
        else:
            states["pending"].append(case.name)
    return states


def temporaries(cases: list[BatchCase], output_root: Path) -> list[TemporaryFolder]:
    """The cases' temporary output folders: of runs still going, or left by killed runs (removed when the
    case runs again)."""
    return [folder for case in cases for folder in temporary_folders(Path(output_root) / case.name)]


SUMMARY_COLUMNS = ["case", "state", "exit_code", "message", "method", "removed_tissue_cc", "verify", "seconds",
                   "input"]


def write_summary(cases: list[BatchCase], output_root: Path) -> tuple[Path, Path]:
    """``batch_status.csv`` and ``batch_status.html`` in the output root: one row per case with its state and,
    when done, its report's key numbers; the page shows each done case's before/after renders for review."""
    output_root = Path(output_root)
    rows, renders = [], []
    for case in cases:
        row: dict[str, object] = dict.fromkeys(SUMMARY_COLUMNS, "")
        row.update(case=case.name, input=str(case.input), state="pending")
        picture = None
        if is_done(output_root, case):
            report = read_report(output_root / case.name / "report.json")
            row.update(state="done", exit_code=0, method=report["method"],
                       removed_tissue_cc=report["removed"]["tissue_volume_cc"],
                       verify=report["verify"]["status"], seconds=round(sum(report["timings_s"].values()), 1))
            if report.get("qc_pictures", {}).get("renders"):
                picture = f"{case.name}/{report['qc_pictures']['renders']}"
        elif failure_record(output_root, case).is_file():
            record = json.loads(failure_record(output_root, case).read_text())
            row.update(state="failed", exit_code=record.get("exit_code", ""), message=record.get("message", ""))
        rows.append(row)
        renders.append(picture)
    output_root.mkdir(parents=True, exist_ok=True)
    table = output_root / "batch_status.csv"
    with _replace(table) as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    page = output_root / "batch_status.html"
    with _replace(page) as handle:
        handle.write(_summary_page(rows, renders))
    return table, page


def _summary_page(rows: list[dict], renders: list[str | None]) -> str:
    from html import escape

    from deface_ts.reporting.html import STYLE

    counts = {state: sum(r["state"] == state for r in rows) for state in ("done", "failed", "pending")}
    header = ["case", "state", "exit", "method", "removed tissue (cc)", "verification", "seconds", "renders / error"]
    lines = [f"<!doctype html><meta charset='utf-8'><title>deface-ts batch</title><style>{STYLE}"
             "td{vertical-align:top}.failed{color:#b00}</style>",
             f"<h1>deface-ts batch: {len(rows)} cases</h1><p>" + ", ".join(f"{n} {s}" for s, n in counts.items()) + "</p>",
             "<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"]
    for row, picture in zip(rows, renders):
        last = (f"<a href='{escape(picture)}'><img src='{escape(picture)}' width='480' alt='renders'></a>" if picture
                else f"<span class='failed'>{escape(str(row['message']))}</span>")
        cells = [row["case"], row["state"], row["exit_code"], row["method"], row["removed_tissue_cc"], row["verify"],
                 row["seconds"]]
        lines.append(f"<tr class='{row['state']}'>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells)
                     + f"<td>{last}</td></tr>")
    return "\n".join(lines + ["</table>"])


@contextlib.contextmanager
def _replace(path: Path):
    """Write ``path`` through a temporary file beside it, renamed into place when complete."""
    with tempfile.NamedTemporaryFile("w", newline="", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        try:
            yield handle
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.replace(handle.name, path)


def array_spec(indices: list[int], max_parallel: int | None = None) -> str:
    """Slurm --array value for task ids, consecutive ids as ranges: [0, 1, 2, 5] → '0-2,5'."""
    parts: list[tuple[int, int]] = []
    for index in sorted(indices):
        if parts and parts[-1][1] == index - 1:
            parts[-1] = (parts[-1][0], index)
        else:
            parts.append((index, index))
    spec = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)
    return f"{spec}%{max_parallel}" if max_parallel else spec


def sbatch_script(manifest: Path, output_root: Path, indices: list[int], deface_args: list[str], *,
                  max_parallel: int | None = None, sbatch_options: Sequence[str] = ()) -> str:
    """A Slurm batch script whose array tasks run ``deface-ts batch`` on one case each."""
    logs = Path(output_root).resolve() / "slurm"
    command = [sys.executable, "-m", "deface_ts.apps.cli", "batch", str(Path(manifest).resolve()),
               str(Path(output_root).resolve()), *deface_args]
    lines = ["#!/bin/bash", "#SBATCH --job-name=deface-ts", f"#SBATCH --array={array_spec(indices, max_parallel)}",
             f"#SBATCH --output={logs}/%A_%a.log"]
    lines += [f"#SBATCH {option}" for option in sbatch_options]
    # The task number comes from $SLURM_ARRAY_TASK_ID inside `deface-ts batch`.
    lines += ["set -euo pipefail", f"exec {shlex.join(command)}", ""]
    return "\n".join(lines)


def submit(manifest: Path, output_root: Path, cases: list[BatchCase], config: Config, *,
           max_parallel: int | None = None, sbatch_options: Sequence[str] = (), sbatch: str = "sbatch") -> tuple[str, Path]:
    """Submit the pending and failed cases as one Slurm array job; returns (job id, script path).

    The tasks read ``config`` from a file written here, one per submission: later edits of a config file, or
    another submission with other options, do not change tasks that are still queued.
    """
    import yaml

    todo = [c.index for c in cases if not is_done(output_root, c)]
    if not todo:
        raise InputError(f"{output_root}: every case of {manifest} is done; nothing to submit")
    saved = unique_file(Path(output_root) / "slurm", "config", ".yaml")
    saved.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    script = unique_file(Path(output_root) / "slurm", "array", ".sbatch")
    script.write_text(sbatch_script(manifest, output_root, todo, ["--config", str(saved.resolve())],
                                    max_parallel=max_parallel, sbatch_options=sbatch_options))
    try:
        done = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True)
    except FileNotFoundError:
        raise InputError(f"{sbatch}: Slurm's sbatch is not installed or not on PATH") from None
    if done.returncode != 0:
        raise InputError(f"sbatch refused {script}: {done.stderr.strip() or done.stdout.strip()}")
    job = done.stdout.strip().split(";")[0]
    named = script.with_name(f"array-{job}.sbatch")  # sbatch keeps its own copy; the name says which job
    script.rename(named)
    return job, named


def unique_file(folder: Path, stem: str, suffix: str) -> Path:
    """A new, empty file ``folder/stem-<time>-<random><suffix>`` that no earlier submission wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=suffix, dir=folder)
    os.close(handle)
    return Path(name)
