"""CT Image series → HU volume with an LPS affine, and stored values for exact write-back."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from deface_ts.errors import InputError
from deface_ts.forked import Forked, shared_array
from deface_ts.geometry.volume import Volume, affine_from_dicom
from deface_ts.io.dicom.study import DicomFile

#: Positions may differ from a perfect grid by this much (mm) before we call it an error.
POSITION_TOLERANCE_MM = 0.05


@dataclass
class CtSeries:
    """A loaded CT series.

    Attributes
    ----------
    files
        The slices' files, sorted by position along the slice normal.
    datasets
        The full datasets (with PixelData) in the same order; the writer copies them.
    slope, intercept
        Per-slice RescaleSlope / RescaleIntercept (PS3.3 C.11.1.1.2).
    hu
        Hounsfield units on the CT grid: int16 when exact, else float32. Do not modify in place.
    stored_dtype
        The stored values' type (BitsAllocated, PixelRepresentation).
    kept_stored
        The stored values (slice, row, column) when HU is not an exact integer shift of them; None when it is,
        and they are derived from ``hu`` (see :attr:`stored`): one CT-sized array in memory instead of two.
    """

    files: list[DicomFile]
    datasets: list[Dataset]
    slope: np.ndarray
    intercept: np.ndarray
    hu: Volume
    stored_dtype: np.dtype
    kept_stored: np.ndarray | None = field(default=None, repr=False)

    @property
    def stored(self) -> np.ndarray:
        """Stored pixel values of the whole series (slice, row, column), original dtype."""
        if self.kept_stored is not None:
            return self.kept_stored
        return np.stack([self.stored_slice(k) for k in range(self.hu.shape[0])])

    def stored_slice(self, k: int) -> np.ndarray:
        """Stored values of slice ``k`` (a new array)."""
        if self.kept_stored is not None:
            return self.kept_stored[k].copy()
        # Exact by construction (load_ct): HU = stored + intercept, the intercept an integer, both in int16.
        stored = self.hu.array[k] - np.int16(self.intercept[k])
        return stored.view(self.stored_dtype) if self.stored_dtype.itemsize == 2 else stored.astype(self.stored_dtype)

    @property
    def affine(self) -> np.ndarray:
        return self.hu.affine

    @property
    def patient_position(self) -> str:
        return str(self.datasets[0].get("PatientPosition", ""))

    def stored_from_hu(self, hu: np.ndarray, k: int) -> np.ndarray:
        """Stored values of slice ``k`` for HU values, rounded and clipped to the stored range."""
        ds = self.datasets[k]
        dtype = self.stored_dtype
        bits = int(ds.get("BitsStored", dtype.itemsize * 8))
        if int(ds.PixelRepresentation) == 1:
            low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        else:
            low, high = 0, 2**bits - 1
        values = np.rint((hu - self.intercept[k]) / self.slope[k])
        return np.clip(values, low, high).astype(dtype)


def _geometry_error(files: list[DicomFile], message: str) -> InputError:
    return InputError(f"{files[0].path.parent}: CT series {files[0].header.SeriesInstanceUID}: {message}")


def slice_geometry(files: list[DicomFile]) -> tuple[list[DicomFile], np.ndarray, np.ndarray, float]:
    """Sort slices along the normal and check the stack is a regular grid.

    Returns sorted files, ImageOrientationPatient, first ImagePositionPatient and the slice step.
    """
    frames = {str(f.header.get("FrameOfReferenceUID", "")) for f in files}
    if len(frames) != 1:
        raise _geometry_error(files, f"slices belong to {len(frames)} frames of reference: {sorted(frames)}")
    for f in files:
        for attribute in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
            if attribute not in f.header:
                raise InputError(f"{f.path}: CT image lacks {attribute}")
    orientation = np.array(files[0].header.ImageOrientationPatient, dtype=float)
    for f in files[1:]:
        if not np.allclose(np.array(f.header.ImageOrientationPatient, dtype=float), orientation, atol=1e-4):
            raise InputError(f"{f.path}: ImageOrientationPatient differs from {files[0].path}")
        if (f.header.Rows, f.header.Columns) != (files[0].header.Rows, files[0].header.Columns):
            raise InputError(f"{f.path}: image size differs from {files[0].path}")
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise _geometry_error(files, f"ImageOrientationPatient {orientation.tolist()} is not orthonormal")
    normal = np.cross(row, col)
    positions = np.array([f.header.ImagePositionPatient for f in files], dtype=float)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    files = [files[i] for i in order]
    positions, along = positions[order], along[order]
    if len(files) > 1 and np.any(np.diff(along) < POSITION_TOLERANCE_MM):
        k = int(np.argmin(np.diff(along)))
        raise InputError(f"{files[k + 1].path}: same slice position as {files[k].path}")
    _check_no_tilt(files, positions, along, normal)
    single = float(files[0].header.get("SliceThickness", 1.0) or 1.0)
    step = _regular_step(files, along) if len(files) > 1 else single
    return files, orientation, positions[0], step


def _check_no_tilt(files: list[DicomFile], positions: np.ndarray, along: np.ndarray, normal: np.ndarray) -> None:
    """Gantry tilt shows as slice origins drifting in the image plane (PS3.3 C.7.6.2.1.1): refused."""
    in_plane = positions - positions[0] - np.outer(along - along[0], normal)
    drift = np.linalg.norm(in_plane, axis=1)
    if drift.max() > POSITION_TOLERANCE_MM * 10:
        extent = along[-1] - along[0]
        angle = np.degrees(np.arctan2(drift[-1], extent)) if extent else 0.0
        tilt = files[0].header.get("GantryDetectorTilt", "?")
        raise _geometry_error(
            files,
            f"slices are sheared (gantry tilt about {angle:.1f} degrees, GantryDetectorTilt {tilt}); "
            "resample the series to an orthogonal grid before defacing",
        )


def _regular_step(files: list[DicomFile], along: np.ndarray) -> float:
    """The slice step of sorted slices; a gap (missing slices) or uneven spacing is refused, naming the files."""
    gaps = np.diff(along)
    step = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - step) > max(POSITION_TOLERANCE_MM, 0.01 * step))
    if bad.size:
        k = int(bad[0])
        missing = gaps[k] / step
        if abs(missing - round(missing)) < 0.05 and round(missing) >= 2:
            raise _geometry_error(
                files,
                f"{int(round(missing)) - 1} slice(s) missing between {files[k].path.name} "
                f"(at {along[k]:.2f} mm) and {files[k + 1].path.name} (at {along[k + 1]:.2f} mm)",
            )
        raise _geometry_error(
            files,
            f"non-uniform slice spacing: {gaps[k]:.3f} mm between {files[k].path.name} and "
            f"{files[k + 1].path.name}, {step:.3f} mm elsewhere",
        )
    return step


def _hounsfield(stored: np.ndarray, slope: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, bool]:
    """HU = stored * slope + intercept, as int16 when that is exact (nearly always), else float32.

    Returns (HU, exact). int16 halves the memory of the largest array in the pipeline; when exact, 16-bit stored
    values are turned into HU in their own buffer (``stored`` is overwritten), so the series holds one
    CT-sized array, from which the writer derives the stored values slice by slice.
    """
    if stored.dtype in (np.int16, np.uint16):
        if _hu_in_place(stored, slope, intercept):
            return stored.view(np.int16), True
    elif (shift := _exact_shift(stored, slope, intercept)) is not None:  # 8- or 32-bit stored values
        return stored.astype(np.int16) + np.int16(shift), True
    scaled = stored.astype(np.float32) * slope[:, None, None].astype(np.float32)
    scaled += intercept[:, None, None].astype(np.float32)
    return scaled, False


def _exact_shift(stored: np.ndarray, slope: np.ndarray, intercept: np.ndarray) -> int | None:
    """The intercept when HU = stored + intercept is an integer shift that int16 holds for every voxel; else None."""
    if np.all(slope == 1.0) and np.all(intercept == intercept[0]) and float(intercept[0]).is_integer():
        shift = int(intercept[0])
        low, high = int(stored.min()) + shift, int(stored.max()) + shift
        if -32768 <= low and high <= 32767 and int(stored.max()) <= 32767:
            return shift
    return None


def _hu_in_place(stored: np.ndarray, slope: np.ndarray, intercept: np.ndarray) -> bool:
    """16-bit stored values whose HU are an exact int16 shift of them become those HU in their own buffer;
    whether they did (else ``stored`` is unchanged)."""
    shift = _exact_shift(stored, slope, intercept) if stored.dtype in (np.int16, np.uint16) else None
    if shift is None:
        return False
    if shift:
        stored.view(np.int16)[...] += np.int16(shift)
    return True


def decode_to_hu(files: list[DicomFile], stored: np.ndarray, slope: np.ndarray, intercept: np.ndarray) -> bool:
    """`decode_slices`, then HU in place where exact (`_hu_in_place`); whether they are HU now."""
    decode_slices(files, stored)
    return _hu_in_place(stored, slope, intercept)


def stored_type(header: Dataset) -> np.dtype:
    """The type pydicom decodes a slice's stored values to (BitsAllocated, PixelRepresentation; PS3.3 C.7.6.3)."""
    bits = int(header.get("BitsAllocated", 16))
    if bits not in (8, 16, 32):
        raise InputError(f"BitsAllocated {bits} is not a CT's (8, 16 or 32)")
    return np.dtype(f"{'i' if int(header.get('PixelRepresentation', 0)) == 1 else 'u'}{bits // 8}")


def decode_slices(files: list[DicomFile], stored: np.ndarray) -> None:
    """Each file's pixel data decoded into its slice of ``stored`` (slice, row, column)."""
    for k, f in enumerate(files):
        try:
            # From the file, not the dataset: decoding a dataset loads its PixelData bytes into it (another
            # CT-sized copy held until the end), and Dataset.pixel_array also keeps the decoded array. The
            # writer reads an unchanged slice's bytes when it copies them.
            array = pixel_array(f.path)
        except Exception as exc:  # decoders raise many kinds; the file name is what matters
            raise InputError(f"{f.path}: cannot read CT pixel data ({exc.__class__.__name__}: {exc})") from exc
        if array.ndim != 2:
            raise InputError(f"{f.path}: expected a single-frame CT image, got pixel array of shape {array.shape}")
        if array.shape != stored.shape[1:] or array.dtype != stored.dtype:
            raise InputError(f"{f.path}: pixel data decodes to {array.dtype} {array.shape}, not the series' "
                             f"{stored.dtype} {stored.shape[1:]} (Rows, Columns, BitsAllocated and PixelRepresentation "
                             f"of {files[0].path.name})")
        stored[k] = array


class PendingCt:
    """A CT series being loaded: its grid known from the headers at once, its pixels decoded in a forked child
    (`deface_ts.forked`) into memory both processes share, while the caller reads the other objects of the study.

    ``grid`` is the CT's geometry with no values (its array a zero-strided view): enough to rasterise
    structures or place a dose. :meth:`result` waits for the pixels and returns the loaded series.
    """

    def __init__(self, files: list[DicomFile], beside: bool = True, buffer: np.ndarray | None = None) -> None:
        """``buffer``: memory of the series' shape to decode into (and turn into HU in, when exact), if its items
        are the stored values' size; else a new array is used."""
        self.files, orientation, origin, step = slice_geometry(files)
        header = self.files[0].header
        spacing = header.PixelSpacing
        self.affine = affine_from_dicom(origin, orientation, (step, float(spacing[0]), float(spacing[1])))
        shape = (len(self.files), int(header.Rows), int(header.Columns))
        try:
            dtype = stored_type(header)
        except InputError as exc:
            raise InputError(f"{self.files[0].path}: {exc}") from None
        self.grid = Volume(np.broadcast_to(np.zeros((), dtype), shape), self.affine)
        if buffer is not None and buffer.shape == shape and buffer.dtype.itemsize == dtype.itemsize:
            self._stored = buffer.view(dtype)
        else:
            self._stored = shared_array(shape, dtype) if beside else np.empty(shape, dtype)
        datasets = [f.header for f in self.files]  # parsed by discover, pixel data deferred
        self.slope = np.array([float(ds.get("RescaleSlope", 1.0)) for ds in datasets])
        self.intercept = np.array([float(ds.get("RescaleIntercept", 0.0)) for ds in datasets])
        # The child turns the values into HU too where that is done in place (the usual case).
        self._job = Forked(decode_to_hu, self.files, self._stored, self.slope, self.intercept, fork=beside)

    def result(self) -> CtSeries:
        if self._job.result():
            hu, exact = self._stored.view(np.int16), True
        else:
            hu, exact = _hounsfield(self._stored, self.slope, self.intercept)
        return CtSeries(self.files, [f.header for f in self.files], self.slope, self.intercept,
                        Volume(hu, self.affine), self._stored.dtype, None if exact else self._stored)

    def stop(self) -> None:
        """Stop the decoding child (the caller failed before it needed the pixels)."""
        self._job.stop()


def load_ct(files: list[DicomFile], buffer: np.ndarray | None = None) -> CtSeries:
    """Load a CT series here: sort by geometry, decode pixels, apply the rescale (in ``buffer`` where it fits:
    `PendingCt`)."""
    return PendingCt(files, beside=False, buffer=buffer).result()
