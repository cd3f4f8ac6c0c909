"""Command line: parse, build options, call the library, print. No logic here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from deface_ts import __version__
from deface_ts.errors import DefaceError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deface-ts", description="Remove the face from head-and-neck radiotherapy CT.")
    parser.add_argument("--version", action="version", version=f"deface-ts {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a DICOM study folder (headers only)")
    info.add_argument("input", type=Path)
    info.add_argument("--series", help="SeriesInstanceUID of the CT series to describe")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")

    convert = sub.add_parser("convert", help="convert a DICOM-RT study to NIfTI (CT, ROI masks, dose)")
    convert.add_argument("input", type=Path)
    convert.add_argument("output", type=Path)
    convert.add_argument("--series", help="SeriesInstanceUID of the CT series to convert")
    convert.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    phantom = sub.add_parser("phantom", help="write a synthetic head-and-neck DICOM-RT study")
    phantom.add_argument("output", type=Path)
    phantom.add_argument("--position", default="HFS", choices=["HFS", "HFP", "FFS", "FFP"])
    phantom.add_argument("--matrix", type=int, default=256)
    phantom.add_argument("--slices", type=int, default=120)
    phantom.add_argument("--pixel-spacing", type=float, default=1.0)
    phantom.add_argument("--slice-thickness", type=float, default=2.0)
    phantom.add_argument("--no-eyes", action="store_true", help="omit eye and lens ROIs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return _run(args)
    except DefaceError as exc:
        print(f"deface-ts: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    if args.command == "info":
        from deface_ts.info import describe, format_summary

        summary = describe(args.input, args.series)
        print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    elif args.command == "convert":
        from deface_ts.convert import convert

        print(convert(args.input, args.output, args.series, args.overwrite))
    elif args.command == "phantom":
        from deface_ts.phantom import PhantomOptions, write_phantom_study

        options = PhantomOptions(
            position=args.position, rows=args.matrix, columns=args.matrix, slices=args.slices,
            pixel_spacing=args.pixel_spacing, slice_thickness=args.slice_thickness, include_eyes=not args.no_eyes,
        )
        study = write_phantom_study(args.output, options)
        print(study.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
