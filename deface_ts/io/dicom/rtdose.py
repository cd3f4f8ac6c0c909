"""RT Dose → dose in Gy on its own grid, and write-back that keeps dtype, bits and scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from deface_ts.errors import InputError
from deface_ts.geometry.volume import Volume, affine_from_dicom
from deface_ts.io.dicom.study import DicomFile


@dataclass
class Dose:
    """A loaded RTDOSE grid.

    ``stored`` keeps the raw unsigned values; ``gy = stored * DoseGridScaling``.
    """

    file: DicomFile
    dataset: Dataset
    stored: np.ndarray
    scaling: float
    gy: Volume

    @property
    def summation(self) -> str:
        return str(self.dataset.get("DoseSummationType", ""))


def frame_offsets(ds: Dataset, path) -> np.ndarray:
    """Frame positions along the normal, relative to ImagePositionPatient (PS3.3 C.8.8.3.2).

    The first value 0 means relative offsets; otherwise they are absolute z
    coordinates, which the standard allows only for axial [1,0,0,0,1,0] grids.
    """
    frames = int(ds.get("NumberOfFrames", 1))
    if "GridFrameOffsetVector" not in ds:
        if frames == 1:
            return np.zeros(1)
        raise InputError(f"{path}: multi-frame RTDOSE without GridFrameOffsetVector")
    offsets = np.atleast_1d(np.asarray(ds.GridFrameOffsetVector, dtype=float))
    if len(offsets) != frames:
        raise InputError(f"{path}: GridFrameOffsetVector has {len(offsets)} values for {frames} frames")
    if offsets[0] != 0.0:
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        if not np.allclose(orientation, [1, 0, 0, 0, 1, 0], atol=1e-4):
            raise InputError(f"{path}: absolute GridFrameOffsetVector is only defined for axial dose grids")
        offsets = offsets - float(ds.ImagePositionPatient[2])
        if abs(offsets[0]) > 0.01:
            raise InputError(
                f"{path}: GridFrameOffsetVector starts at {offsets[0] + float(ds.ImagePositionPatient[2]):.3f} mm, "
                f"neither 0 (relative) nor the ImagePositionPatient z "
                f"{float(ds.ImagePositionPatient[2]):.3f} (absolute)"
            )
    return offsets


def load_dose(file: DicomFile) -> Dose:
    """Read an RTDOSE grid; its geometry comes from its own header, not the CT's."""
    try:
        ds = pydicom.dcmread(file.path)
        stored = ds.pixel_array
    except Exception as exc:
        raise InputError(f"{file.path}: cannot read RTDOSE ({exc.__class__.__name__}: {exc})") from exc
    for attribute in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "DoseGridScaling"):
        if attribute not in ds:
            raise InputError(f"{file.path}: RTDOSE lacks {attribute}")
    if stored.ndim == 2:
        stored = stored[None]
    offsets = frame_offsets(ds, file.path)
    steps = np.diff(offsets)
    step = float(steps[0]) if len(steps) else float(ds.get("SliceThickness", 1.0) or 1.0)
    if len(steps) and np.abs(steps - step).max() > 0.01:
        raise InputError(f"{file.path}: dose frames are not evenly spaced (GridFrameOffsetVector {offsets.tolist()})")
    spacing = ds.PixelSpacing
    position, orientation = np.asarray(ds.ImagePositionPatient, float), np.asarray(ds.ImageOrientationPatient, float)
    affine = affine_from_dicom(position, orientation, (step, float(spacing[0]), float(spacing[1])))
    scaling = float(ds.DoseGridScaling)
    gy = Volume((stored * scaling).astype(np.float32), affine)
    return Dose(file, ds, stored, scaling, gy)
