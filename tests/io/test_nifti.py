"""NIfTI outputs: what io.nifti writes is nibabel's own NIfTI-1 byte for byte, gzip-compressed by python-isal."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from deface_ts.geometry.volume import Volume
from deface_ts.io import nifti


def _volume(dtype) -> Volume:
    rng = np.random.default_rng(7)
    array = rng.integers(-1024, 2000, size=(7, 33, 21)).astype(dtype)
    affine = np.array([[2.5, 0, 0, -40.0], [0, 0.9, 0, 12.0], [0, 0, 1.1, -3.0], [0, 0, 0, 1]])[[1, 2, 0, 3]]
    return Volume(array, affine)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.uint16, np.float32])
def test_compressed_nifti_is_nibabels_own_bytes(tmp_path, dtype):
    volume = _volume(dtype)
    path = nifti.save(volume, tmp_path / "v.nii.gz")
    with gzip.open(path) as stream:  # the standard library's gzip reads what ISA-L wrote
        written = stream.read()
    assert written == nifti.to_nifti(volume).to_bytes()
    back = nifti.load(path, dtype=dtype)
    assert np.array_equal(back.array, volume.array) and np.allclose(back.affine, volume.affine)
    assert nib.load(path).get_data_dtype() == np.dtype(dtype)
    (tmp_path / "again").mkdir()
    again = nifti.save(volume, tmp_path / "again" / "v.nii.gz")
    assert again.read_bytes() == path.read_bytes()  # no time stamp in the gzip header: the same bytes each time


def test_uncompressed_nifti_is_written_by_nibabel(tmp_path):
    volume = _volume(np.int16)
    path = nifti.save(volume, tmp_path / "v.nii")
    assert path.read_bytes() == nifti.to_nifti(volume).to_bytes()
