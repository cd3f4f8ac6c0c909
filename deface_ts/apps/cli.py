"""Command line: parse, build options, call the library, print. No logic here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# Before numpy loads OpenBLAS: deface-ts multiplies only skinny matrices ((N, 3) points by a 3x3 affine), where
# OpenBLAS's threads cost 30x (260 ms instead of 8 ms for a dose grid's 300,000 points on a busy 2-core
# machine) and gain nothing. A user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from deface_ts import __version__, choices
from deface_ts.apps.lazy import defer_imports, import_pydicom_lean
from deface_ts.apps.progress import StageProgress, process_age_s
from deface_ts.errors import DefaceError

if TYPE_CHECKING:
    from deface_ts.report import Report

Subcommands = argparse._SubParsersAction  # argparse's subcommand registry (what add_subparsers returns)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deface-ts", description="Remove the face from head-and-neck radiotherapy CT.")
    parser.add_argument("--version", action="version", version=f"deface-ts {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_info(sub)
    _add_convert(sub)
    _add_deface(sub)
    _add_batch(sub)
    _add_deid(sub)
    _add_demo(sub)
    _add_models(sub)
    _add_evaluate(sub)
    _add_phantom(sub)
    return parser


def _add_info(sub: Subcommands) -> None:
    info = sub.add_parser("info", help="describe a DICOM study folder (headers only)")
    info.add_argument("input", type=Path)
    info.add_argument("--series", help="SeriesInstanceUID of the CT series to describe")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _add_convert(sub: Subcommands) -> None:
    convert = sub.add_parser("convert", help="convert a DICOM-RT study to NIfTI (CT, ROI masks, dose)")
    convert.add_argument("input", type=Path)
    convert.add_argument("output", type=Path)
    convert.add_argument("--series", help="SeriesInstanceUID of the CT series to convert")
    convert.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def _add_deface(sub: Subcommands) -> None:
    deface = sub.add_parser("deface", help="remove the face from a DICOM-RT study or a NIfTI CT")
    deface.add_argument("input", type=Path, help="DICOM study folder, or a NIfTI CT (.nii/.nii.gz)")
    deface.add_argument("output", type=Path, help="output folder (must not exist or be empty)")
    _deface_options(deface)


def _add_batch(sub: Subcommands) -> None:
    batch = sub.add_parser("batch", help="deface the cases of a manifest CSV (one per Slurm array task, or all)",
                           description="MANIFEST: CSV with columns case, input[, series, patient_id]. Each case is "
                           "written to "
                           "OUTPUT_ROOT/<case>; done cases are skipped, a failed case leaves <case>.failed.json; the linkage of "
                           "each case goes to OUTPUT_ROOT.linkage/<case>.csv (or --linkage FOLDER). "
                           "Without --index the task number comes from $SLURM_ARRAY_TASK_ID; with neither, "
                           "every case runs in turn.")
    batch.add_argument("manifest", type=Path)
    batch.add_argument("output_root", type=Path)
    batch.add_argument("--index", type=int, help="0-based manifest row to run (default: $SLURM_ARRAY_TASK_ID)")
    batch.add_argument("--status", action="store_true",
                       help="print done/failed/pending cases, write OUTPUT_ROOT/batch_status.csv and .html, and exit")
    batch.add_argument("--submit", action="store_true", help="submit pending and failed cases as a Slurm array job")
    batch.add_argument("--max-parallel", type=int, metavar="K", help="with --submit: at most K tasks at once")
    batch.add_argument("--sbatch-option", action="append", default=[], metavar="OPT",
                       help="with --submit: extra #SBATCH line, e.g. '--mem=8G' (repeatable)")
    _deface_options(batch, for_demo=True, overwrite=False)  # a case is done once; its folder is never replaced


def _add_deid(sub: Subcommands) -> None:
    deid = sub.add_parser("deid", help="de-identify the headers of a DICOM-RT folder (no face removal)",
                          description="Every DICOM file under INPUT is written to OUTPUT with its headers "
                          "de-identified (PS3.15 Annex E, profile rt-research by default) and its pixel data "
                          "bit-identical; the old -> new linkage goes to a file outside OUTPUT.")
    deid.add_argument("input", type=Path)
    deid.add_argument("output", type=Path)
    deid.add_argument("--config", help="YAML configuration (its deid: section is used)")
    deid.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    _deid_options(deid)


def _add_demo(sub: Subcommands) -> None:
    demo = sub.add_parser("demo", help="generate the built-in phantom study and deface it")
    demo.add_argument("output", type=Path, nargs="?", default=Path("demo-output"))
    demo.add_argument("--matrix", type=int, default=256)
    demo.add_argument("--slices", type=int, default=120)
    demo.add_argument("--position", default="HFS", choices=choices.POSITIONS)
    _deface_options(demo, for_demo=True)


def _add_models(sub: Subcommands) -> None:
    models = sub.add_parser("models", help="TotalSegmentator weights: status, import, licence")
    models.add_argument("--home", type=Path, help="TotalSegmentator home (default: $TOTALSEG_HOME_DIR or ~/.totalsegmentator)")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    status = models_sub.add_parser("status", help="tasks present, where, licence, usage statistics")
    status.add_argument("--json", action="store_true", help="print machine-readable JSON")
    imp = models_sub.add_parser("import", help="copy weights from a zip or folder into the weights folder")
    imp.add_argument("path", type=Path)
    imp.add_argument("--overwrite", action="store_true", help="replace models already present")
    licence = models_sub.add_parser("licence", help="record the licence number of the face task (offline)")
    licence.add_argument("number")


def _add_evaluate(sub: Subcommands) -> None:
    evaluate = sub.add_parser("evaluate", help="privacy and utility over original/defaced pairs")
    evaluate.add_argument("output", type=Path, help="folder for results.json, results.csv and summary.html")
    evaluate.add_argument("--pairs", type=Path, help="CSV with columns original, defaced, patient[, scan]")
    evaluate.add_argument("--originals", type=Path, help="folder of original case folders (with --defaced)")
    evaluate.add_argument("--defaced", type=Path, help="folder of defaced case folders, matched by name")
    evaluate.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def _add_phantom(sub: Subcommands) -> None:
    phantom = sub.add_parser("phantom", help="write a synthetic head-and-neck DICOM-RT study")
    phantom.add_argument("output", type=Path)
    phantom.add_argument("--position", default="HFS", choices=choices.POSITIONS)
    phantom.add_argument("--matrix", type=int, default=256)
    phantom.add_argument("--slices", type=int, default=120)
    phantom.add_argument("--pixel-spacing", type=float, default=1.0)
    phantom.add_argument("--slice-thickness", type=float, default=2.0)
    phantom.add_argument("--no-eyes", action="store_true", help="omit eye and lens ROIs")


def _deface_options(parser: argparse.ArgumentParser, for_demo: bool = False, overwrite: bool = True) -> None:
    parser.add_argument("--config", help="YAML configuration (a path, or a name in configs/: hnc, public)")
    parser.add_argument("--method", choices=choices.METHODS,
                        help="face locator (default from the config: auto, the strongest available; eyes without "
                             "eye ROIs or weights finds the globes in the CT)")
    parser.add_argument("--verify", choices=choices.VERIFY_MODES,
                        help="render the result and look for a face (default enforce: a face fails the case)")
    parser.add_argument("--device", help="TotalSegmentator device: auto, cpu, gpu or gpu:N")
    parser.add_argument("--threads", type=int, help="torch CPU threads for TotalSegmentator")
    parser.add_argument("--region", choices=choices.REGION_KINDS, help="full face (default) or defaceRT's upper box")
    parser.add_argument("--protect", action="append", default=[], metavar="REGEX",
                        help="also protect ROIs whose name matches (repeatable), e.g. '^brain$'")
    parser.add_argument("--protect-margin", type=float, metavar="MM", help="margin around protected ROIs")
    parser.add_argument("--eye-pattern", action="append", default=[], metavar="REGEX",
                        help="extra eye ROI name pattern (repeatable)")
    parser.add_argument("--fill-hu", type=float, help="HU of removed voxels (default -1000)")
    parser.add_argument("--noise", action="store_true", default=None, help="noise-matched air in the removed region")
    parser.add_argument("--uid-salt", help="make new UIDs deterministic with this salt (with --deid off; "
                        "de-identified UIDs are keyed by the de-identification key)")
    parser.add_argument("--no-nifti", action="store_true", help="skip NIfTI copies of the result")
    parser.add_argument("--no-pictures", action="store_true", help="skip the QC pictures (renders, slices, dose)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress line (it shows only when stderr is a terminal anyway)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON summary on stdout instead of the text report (errors too)")
    if overwrite:
        parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    _deid_options(parser, patient_id=not for_demo)
    if not for_demo:
        parser.add_argument("--series", help="SeriesInstanceUID of the CT series")
        parser.add_argument("--eyes-mask", type=Path, help="NIfTI input: eye mask on the CT grid")
        parser.add_argument("--protect-mask", type=Path, action="append", default=[],
                            help="NIfTI input: mask of voxels never to change (repeatable)")


def _deid_options(parser: argparse.ArgumentParser, patient_id: bool = True) -> None:
    parser.add_argument("--deid", metavar="PROFILE", help="header de-identification: rt-research (default), basic, "
                        "off, or a YAML file overriding actions per attribute keyword")
    parser.add_argument("--deid-key", metavar="FILE", help="secret key file (mode 600); default $DEFACE_TS_DEID_KEY, "
                        "else ~/.config/deface-ts/deid.key, created on first use")
    parser.add_argument("--linkage", metavar="FILE", help="where the old -> new IDs and UIDs go (outside the output)")
    if patient_id:
        parser.add_argument("--patient-id", help="pseudonym for PatientID and PatientName (default: keyed hash)")


def _config(args: argparse.Namespace):
    from deface_ts.config import load_config

    base = load_config(args.config)
    overrides = {
        "method": args.method,
        "verify.mode": args.verify,
        "totalseg.device": args.device,
        "totalseg.threads": args.threads,
        "region.kind": args.region,
        "protect.margin_mm": args.protect_margin,
        "fill.hu": args.fill_hu,
        "fill.noise": args.noise,
        "output.uid_salt": args.uid_salt,
        "output.nifti": False if args.no_nifti else None,
        "verify.pictures": False if args.no_pictures else None,
        "protect.patterns": base.protect.patterns + args.protect if args.protect else None,
        "eyes.include": base.eyes.include + args.eye_pattern if args.eye_pattern else None,
        "deid.profile": args.deid,
        "deid.key_file": args.deid_key,
        "deid.linkage": str(args.linkage) if args.linkage else None,
    }
    return load_config(args.config, overrides)


def _print_report(report: Report) -> None:
    removed = report["removed"]
    print(f"defaced: {report['output']['folder']}")
    print(f"  method {report['method']}, region {report['region']}; removed {removed['tissue_volume_cc']} cc of tissue")
    for name, kept in removed["kept_by_protection_voxels"].items():
        print(f"  protected {name}: kept {kept} voxels of the face region")
    for roi in report.get("rois", []):
        if roi["status"] in ("clipped", "removed"):
            print(f"  ROI {roi['name']}: {roi['status']} ({roi['preserved_ratio']:.3f} preserved)")
    check = report["post_check"]
    print("  post-check: " + ("passed" if check.get("passed") else "SKIPPED"))
    print(f"  verify: {report['verify']['status']}")
    deid = report.get("deid", {})
    if "key_fingerprint" in deid:
        print(f"  headers: {deid['profile']} (key {deid['key_fingerprint']}), patient {deid['patient_id']}; "
              "echo scan passed")
    elif deid:
        print("  headers: NOT de-identified (--deid off)")
    print(f"  report: {Path(report['output']['folder']) / 'report.json'}")


def _summary(report: Report, progress: StageProgress) -> dict:
    """The ``--json`` summary of one defaced case: where it went, what was removed, what was checked, how long."""
    return {
        "status": "done",
        "exit_code": 0,
        "output": report["output"]["folder"],
        "report": str(Path(report["output"]["folder"]) / "report.json"),
        "method": report["method"],
        "removed_tissue_cc": report["removed"]["tissue_volume_cc"],
        "post_check": "passed" if report["post_check"].get("passed") else "skipped",
        "verify": report["verify"]["status"],
        "timings_s": report["timings_s"],
        "process": {"start_to_first_stage_s": progress.start_to_first_stage_s, "wall_s": process_age_s()},
    }


def _show(report: Report, progress: StageProgress, as_json: bool) -> None:
    progress.clear()
    if as_json:
        print(json.dumps(_summary(report, progress), indent=2))
    else:
        _print_report(report)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    defer_imports()
    import_pydicom_lean()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    progress = StageProgress(quiet=getattr(args, "quiet", False))
    try:
        return _run(args, progress)
    except DefaceError as exc:
        progress.clear()
        print(f"deface-ts: error: {exc}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"status": "failed", "exit_code": exc.exit_code, "error": exc.__class__.__name__,
                              "message": str(exc)}, indent=2))
        return exc.exit_code
    finally:
        progress.clear()


def _run(args: argparse.Namespace, progress: StageProgress) -> int:
    commands = {"info": _info, "convert": _convert, "deface": _deface, "deid": _deid, "demo": _demo, "batch": _batch,
                "models": _models, "evaluate": _evaluate, "phantom": _phantom}
    return commands[args.command](args, progress)


def _info(args: argparse.Namespace, progress: StageProgress) -> int:
    from deface_ts.apps.info import describe, format_summary

    summary = describe(args.input, args.series)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _convert(args: argparse.Namespace, progress: StageProgress) -> int:
    from deface_ts.apps.convert import convert

    print(convert(args.input, args.output, args.series, args.overwrite))
    return 0


def _deface(args: argparse.Namespace, progress: StageProgress) -> int:
    from deface_ts.pipeline import deface

    report = deface(args.input, args.output, _config(args), series_uid=args.series, overwrite=args.overwrite,
                    eyes_mask=args.eyes_mask, protect_masks=args.protect_mask, patient_id=args.patient_id,
                    linkage=args.linkage, progress=progress)
    _show(report, progress, args.json)
    return 0


def _deid(args: argparse.Namespace, progress: StageProgress) -> int:
    from deface_ts.config import load_config
    from deface_ts.deid.study import deidentify_folder

    config = load_config(args.config, {"deid.profile": args.deid, "deid.key_file": args.deid_key,
                                       "deid.linkage": args.linkage})
    done = deidentify_folder(args.input, args.output, config.deid, patient_id=args.patient_id,
                             overwrite=args.overwrite)
    print(f"de-identified: {args.output} ({len(done['files'])} files, profile {done['deid']['profile']}, "
          f"key {done['deid']['key_fingerprint']}); linkage: {done['linkage']}")
    return 0


def _demo(args: argparse.Namespace, progress: StageProgress) -> int:
    from deface_ts.io.output import check_output
    from deface_ts.phantom import PhantomOptions, write_phantom_study
    from deface_ts.pipeline import deface

    config = _config(args)  # a bad option fails before anything is written
    check_output(args.output, [], args.overwrite)
    options = PhantomOptions(position=args.position, rows=args.matrix, columns=args.matrix, slices=args.slices)
    study = write_phantom_study(args.output / "input", options)
    if not args.json:
        print(f"phantom study: {study.folder}")
    report = deface(study.folder, args.output / "defaced", config, overwrite=True, progress=progress)
    _show(report, progress, args.json)
    return 0


def _evaluate(args: argparse.Namespace, progress: StageProgress) -> int:
    from deface_ts.errors import InputError
    from deface_ts.reporting.evaluate import evaluate
    from deface_ts.reporting.pairs import pairs_from_roots, read_pairs

    if args.pairs is not None:
        pairs = read_pairs(args.pairs)
    elif args.originals is not None and args.defaced is not None:
        pairs = pairs_from_roots(args.originals, args.defaced)
    else:
        raise InputError("evaluate needs --pairs CSV, or --originals and --defaced folders")
    evaluate(pairs, args.output, overwrite=args.overwrite)
    print(f"evaluated {len(pairs)} pair(s): {args.output / 'summary.html'}")
    return 0


def _phantom(args: argparse.Namespace, progress: StageProgress) -> int:
    from deface_ts.phantom import PhantomOptions, write_phantom_study

    options = PhantomOptions(
        position=args.position, rows=args.matrix, columns=args.matrix, slices=args.slices,
        pixel_spacing=args.pixel_spacing, slice_thickness=args.slice_thickness, include_eyes=not args.no_eyes,
    )
    study = write_phantom_study(args.output, options)
    print(study.folder)
    return 0


def _batch(args: argparse.Namespace, progress: StageProgress) -> int:
    from deface_ts.apps import batch

    cases = batch.read_manifest(args.manifest)
    if args.status:
        states = batch.status(cases, args.output_root)
        print(", ".join(f"{name} {len(names)}" for name, names in states.items()) + f" (of {len(cases)})")
        for record in batch.failures(cases, args.output_root):
            print(f"  failed {record['case']} (exit {record['exit_code']}): {record['message']}")
        for folder in batch.temporaries(cases, args.output_root):
            owner = (f"in use by process {folder.pid} on {folder.host}" if folder.live else
                     f"left by process {folder.pid}, which is gone; removed when the case runs again")
            print(f"  temporary folder {folder.path}: {owner}")
        table, page = batch.write_summary(cases, args.output_root)
        print(f"per case: {table}, {page}")
        return 0
    config = _config(args)
    if args.submit:
        job, script = batch.submit(args.manifest, args.output_root, cases, config,
                                   max_parallel=args.max_parallel, sbatch_options=args.sbatch_option)
        print(f"submitted Slurm array job {job} ({script}); logs in {args.output_root / 'slurm'}")
        return 0
    results = batch.run(cases, args.output_root, config, batch.task_index(args.index, cases), progress)
    progress.clear()
    if args.json:
        print(json.dumps({"exit_code": batch.exit_code(results), "cases": [
            {"case": r.case.name, "status": r.status, "exit_code": r.exit_code, "message": r.message}
            for r in results]}, indent=2))
        return batch.exit_code(results)
    for result in results:
        print(f"{result.case.name}: {result.status}" + (f" (exit {result.exit_code}): {result.message}"
                                                         if result.status == "failed" else f" ({result.message})"))
    failed = [r for r in results if r.status == "failed"]
    if len(results) > 1:
        print(f"{len(results) - len(failed)} of {len(results)} cases done or already done; {len(failed)} failed")
    return batch.exit_code(results)


def _models(args: argparse.Namespace, progress: StageProgress) -> int:
    from deface_ts.locate.totalseg import weights

    if args.home is not None:
        os.environ["TOTALSEG_HOME_DIR"] = str(args.home)
    if args.models_command == "status":
        status = weights.status()
        if args.json:
            print(json.dumps(status, indent=2))
            return 0
        print(f"weights folder: {status['weights_dir']}")
        for name, task in status["tasks"].items():
            state = "ready" if name in status["available"] else ("complete" if task["complete"] else "missing")
            licence = " (licensed)" if task["licensed"] else ""
            print(f"  {name:22s} dataset {task['dataset']}{licence}: {state}  {task['folder']}")
        print(f"licence: {status['licence']}; usage statistics: {status['usage_statistics']}")
        print(f"TotalSegmentator {status['totalsegmentator_version']}, torch {status['torch_version']}")
    elif args.models_command == "import":
        imported = weights.import_weights(args.path, overwrite=args.overwrite)
        print(f"imported: {', '.join(imported)} into {weights.weights_dir()}")
    elif args.models_command == "licence":
        path = weights.set_licence(args.number)
        print(f"licence recorded in {path} (usage statistics off)")
    return 0


def run() -> None:
    """The console script: :func:`main`, then the process ends without the interpreter's teardown.

    Freeing a finished case object by object (every header element of every slice, the arrays) takes
    0.2-0.3 s on the 2-core machine after the output is complete. The output streams and logging are
    flushed first; by then every file is closed and every forked child joined. An unexpected exception
    leaves through the normal exit, with its traceback.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
