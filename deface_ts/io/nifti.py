"""The NIfTI boundary: LPS (slice, row, column) volumes ↔ nibabel RAS images, converted here only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deface_ts.geometry.volume import LPS_TO_RAS, Volume

if TYPE_CHECKING:
    import nibabel as nib

# (k, j, i) array axes become NIfTI's (i, j, k): permute the affine's index columns to match.
_KJI_TO_IJK = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def to_nifti(volume: Volume, dtype=None) -> nib.Nifti1Image:
    # nibabel is imported where it is used: at module level it costs a DICOM-only run 0.2 s of start-up.
    import nibabel as nib

    array = volume.array if dtype is None else volume.array.astype(dtype, copy=False)
    affine = LPS_TO_RAS @ volume.affine @ _KJI_TO_IJK
    # A C-ordered (k, j, i) array is a Fortran-ordered (i, j, k) one: NIfTI's own layout, so no copy.
    image = nib.Nifti1Image(array.transpose(2, 1, 0), affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


def from_nifti(image: nib.spatialimages.SpatialImage, dtype=np.float32) -> Volume:
    array = np.asanyarray(image.dataobj)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"expected a 3-D image, got shape {array.shape}")
    affine = LPS_TO_RAS @ image.affine @ _KJI_TO_IJK
    return Volume(np.ascontiguousarray(array.transpose(2, 1, 0)).astype(dtype, copy=False), affine)


def save(volume: Volume, path: Path, dtype=None) -> Path:
    """``volume`` as a NIfTI-1 file (gzip-compressed when the name ends in .gz)."""
    import nibabel as nib

    image = to_nifti(volume, dtype)
    if not str(path).endswith(".gz"):
        nib.save(image, str(path))
        return Path(path)
    # Compressed by Intel's ISA-L (python-isal) rather than nibabel's zlib: the same gzip format at the same
    # ratio, 3x faster (a 512x512x141 int16 CT: 0.19 s against 0.59 s of CPU on the 2-core machine, where the
    # NIfTI copies share the cores with the DICOM writing and the verification). mtime 0: the same volume
    # always gives the same bytes.
    from isal import igzip

    with igzip.IGzipFile(str(path), "wb", compresslevel=1, mtime=0) as stream:
        image.to_file_map({"image": nib.FileHolder(str(path), fileobj=stream)})
    return Path(path)


def load(path: Path, dtype=np.float32) -> Volume:
    import nibabel as nib

    image = nib.load(str(path))
    assert isinstance(image, nib.spatialimages.SpatialImage), f"{path}: not a spatial image"
    return from_nifti(image, dtype)
