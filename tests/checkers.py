"""The independent checkers from Debian: dciodvfy (dicom3tools) and plastimatch."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

requires_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                       reason="dicom3tools not installed (scripts/setup.sh --tests installs it)")
requires_plastimatch = pytest.mark.skipif(shutil.which("plastimatch") is None,
                                          reason="plastimatch not installed (scripts/setup.sh --tests installs it)")


def dciodvfy_errors(path: Path, tmp: Path | None = None) -> list[str]:
    """Error lines dciodvfy reports for one file.

    Debian's dciodvfy aborts on 32-bit RTDOSE pixel data (a tool bug): such a
    dose is validated through a 16-bit copy with the same header.
    """
    path = Path(path)
    ds = pydicom.dcmread(path)
    if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2" and int(ds.BitsAllocated) == 32:
        frames = ds.pixel_array
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelData = np.clip(frames, 0, 65535).astype(np.uint16).tobytes()
        path = (tmp or path.parent) / (path.name + ".16bit.dcm")
        ds.save_as(path, enforce_file_format=True)
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def plastimatch_convert(args: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(["plastimatch", "convert", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"plastimatch convert failed: {result.stdout}\n{result.stderr}"
    return result


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def safe_plastimatch_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def resample_nearest(src, like):
    """``src`` (a Volume) sampled at the voxel centres of ``like`` through patient coordinates."""
    k, j, i = np.indices(like.shape).reshape(3, -1)
    index = np.rint(src.lps_to_index(like.index_to_lps(np.column_stack([k, j, i])))).astype(int)
    inside = np.all((index >= 0) & (index < np.array(src.shape)), axis=1)
    out = np.zeros(index.shape[0], dtype=src.array.dtype)
    out[inside] = src.array[tuple(index[inside].T)]
    return out.reshape(like.shape)
