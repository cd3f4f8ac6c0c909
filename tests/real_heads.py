"""A real head CT for the tests: Debian's invesalius-examples ``Cranium.inv3`` (scripts/setup.sh installs it).

``matrix.dat`` is raw little-endian int16 HU, shape (108, 256, 256) = (slice, row, column) per ``main.plist``,
spacing (0.957, 0.957, 1.5) mm = (column, row, slice). The orientation was read from the data itself (see
tests/test_real_head.py::test_orientation_read_from_the_anatomy): slice 0 is at the upper lip and slice 107 at
the vertex (slices run inferior → superior); row 0 holds the head holder's arc behind the head and the last rows
the eyes and nose (rows run posterior → anterior, InVesalius flipped them for display). Columns are taken to run
towards the patient's left, as in every axial DICOM image of a supine head: left and right cannot be told apart
from a head CT's anatomy, and nothing here depends on that choice (the eyes are a symmetric pair).

The loader flips the rows so that the array is laid out as a head-first-supine scanner writes it
(ImageOrientationPatient 1\\0\\0\\0\\1\\0), and the writers store it as a DICOM CT series (without
PatientPosition, as the real planning CTs in issue 11 came) or as NIfTI, for end-to-end command-line tests.
"""

from __future__ import annotations

import os
import plistlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from deface_ts.geometry.volume import Volume, affine_from_dicom


def cranium_folder() -> Path:
    """Where scripts/setup.sh puts Cranium's matrix.dat and main.plist."""
    base = os.environ.get("DEFACE_TS_DATA") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deface-ts"
    return Path(base) / "invesalius" / "Cranium"


def load_cranium(folder: Path | None = None) -> Volume:
    """The Cranium head as HU (int16) on an HFS-laid-out grid: rows run anterior → posterior, slices upward."""
    folder = Path(folder or cranium_folder())
    header = plistlib.loads((folder / "main.plist").read_bytes())
    shape = tuple(int(n) for n in header["matrix"]["shape"])
    spacing_x, spacing_y, spacing_z = (float(v) for v in header["spacing"])
    raw = np.fromfile(folder / "matrix.dat", dtype="<i2")
    if raw.size != int(np.prod(shape)):
        raise ValueError(f"{folder / 'matrix.dat'}: {raw.size} values, main.plist says shape {shape}")
    hu = np.ascontiguousarray(raw.reshape(shape)[:, ::-1, :])
    # The image centre at the patient-coordinate origin's x and y, the lowest slice at z = 0.
    position = (-(shape[2] - 1) / 2 * spacing_x, -(shape[1] - 1) / 2 * spacing_y, 0.0)
    affine = affine_from_dicom(np.array(position), np.array([1, 0, 0, 0, 1, 0], float),
                               (spacing_z, spacing_y, spacing_x))
    return Volume(hu.astype(np.int16), affine)


def write_ct_series(ct: Volume, folder: Path, patient_position: str | None = None) -> list[Path]:
    """One CT Image file per slice (int16, intercept 0); PatientPosition written only when given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    spacing = ct.spacing
    orientation = np.concatenate([ct.affine[:3, 2] / spacing[2], ct.affine[:3, 1] / spacing[1]])
    files = []
    for k in range(ct.shape[0]):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Cranium^InVesalius", "CRANIUM"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20120914", "120000", "1", 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        if patient_position is not None:
            ds.PatientPosition = patient_position
        ds.ImagePositionPatient = [round(float(v), 4) for v in ct.index_to_lps(np.array([[k, 0, 0]]))[0]]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
        ds.SliceThickness = float(spacing[0])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = ct.shape[1], ct.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0.0, 1.0
        ds.PixelData = np.asarray(ct.array[k], dtype=np.int16).tobytes()
        path = folder / f"ct_{k:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    return files
