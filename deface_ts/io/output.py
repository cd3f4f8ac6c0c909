"""Atomic output folders: everything is written to a temporary sibling, then renamed into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from deface_ts.errors import OutputError


def check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse outputs that would mix with, sit inside, or contain the input."""
    out = Path(output).resolve()
    for source in inputs:
        src = Path(source).resolve()
        if src.is_dir() and (out == src or src in out.parents):
            raise OutputError(f"{output}: output lies inside the input folder {src}; choose a folder outside it")
        if out == src or out in src.parents:
            raise OutputError(f"{output}: output folder would contain the input {src}; choose another folder")
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"{output}: exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise OutputError(f"{output}: folder exists and is not empty (use --overwrite to replace it)")


@contextlib.contextmanager
def atomic_output(output: Path, inputs: list[Path], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``output`` only if the block succeeds.

    On any error the temporary folder is removed and ``output`` is untouched.
    """
    output = Path(output)
    check_output(output, inputs, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        yield tmp
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
            os.rename(output, old / "previous")
            os.rename(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
