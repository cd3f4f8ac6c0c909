"""The one geometry currency of deface-ts: an array with a 4x4 affine in DICOM LPS.

Array axes are (slice, row, column) = (k, j, i), the order in which DICOM stores
pixels, and ``affine @ [k, j, i, 1]`` gives the voxel centre in patient
coordinates (mm) in DICOM's LPS convention (+x = patient left, +y = posterior,
+z = superior; PS3.3 C.7.6.2.1.1). Anterior, superior and left are always taken
from the affine, never from array axes: patients lie head-first or feet-first,
supine or prone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Unit vectors of anatomical directions in LPS patient coordinates.
LEFT = np.array([1.0, 0.0, 0.0])
POSTERIOR = np.array([0.0, 1.0, 0.0])
SUPERIOR = np.array([0.0, 0.0, 1.0])
ANTERIOR = -POSTERIOR
RIGHT = -LEFT
INFERIOR = -SUPERIOR

#: Flips LPS to RAS (and back): used only at the NIfTI boundary.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def affine_from_dicom(
    position: np.ndarray, orientation: np.ndarray, spacing: tuple[float, float, float]
) -> np.ndarray:
    """Build the (slice, row, column) → LPS affine of an image stack.

    Parameters
    ----------
    position
        ImagePositionPatient of the first slice (mm).
    orientation
        ImageOrientationPatient: direction of increasing column index (along a
        row) followed by direction of increasing row index.
    spacing
        (slice step along the normal, row spacing, column spacing) in mm; the
        slice step may be negative, PixelSpacing is (row, column) spacing.
    """
    orientation = np.asarray(orientation, dtype=float)
    along_row = orientation[:3]  # column index i increases this way
    along_col = orientation[3:]  # row index j increases this way
    normal = np.cross(along_row, along_col)
    affine = np.eye(4)
    affine[:3, 0] = normal * spacing[0]
    affine[:3, 1] = along_col * spacing[1]
    affine[:3, 2] = along_row * spacing[2]
    affine[:3, 3] = np.asarray(position, dtype=float)
    return affine


@dataclass
class Volume:
    """An image or mask on a regular grid in patient space.

    Attributes
    ----------
    array
        3-D array indexed (slice, row, column).
    affine
        4x4 matrix mapping (slice, row, column, 1) to LPS millimetres.
    """

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=float)
        if self.affine.shape != (4, 4):
            raise ValueError(f"Affine matrix must have shape (4, 4), got {self.affine.shape}.")
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3-D, got shape {self.array.shape}.")

    @property
    def shape(self) -> tuple[int, int, int]:
        k, j, i = self.array.shape
        return k, j, i

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size (mm) along (slice, row, column)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def index_to_lps(self, index: np.ndarray) -> np.ndarray:
        """Map (N, 3) (k, j, i) indices (float allowed) to (N, 3) LPS points."""
        index = np.asarray(index, dtype=float)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_index(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) LPS points to continuous (k, j, i) indices."""
        inverse = np.linalg.inv(self.affine)
        points = np.asarray(points, dtype=float)
        return points @ inverse[:3, :3].T + inverse[:3, 3]

    def sample(self, points: np.ndarray) -> np.ndarray:
        """Trilinear values at (N, 3) LPS points; 0 outside the grid (e.g. dose at CT voxel centres)."""
        from scipy import ndimage

        index = self.lps_to_index(points).T
        return ndimage.map_coordinates(self.array, index, order=1, mode="constant", cval=0.0, prefilter=False)

    def axis_coordinate(self, direction: np.ndarray) -> np.ndarray:
        """Signed distance (mm) of every voxel centre along ``direction`` (LPS unit vector).

        Returned as a broadcastable (K, J, I) float32 array built from three
        1-D ramps, so it costs one full-size array, not three.
        """
        direction = np.asarray(direction, dtype=float)
        k, j, i = (np.arange(n, dtype=np.float64) for n in self.shape)
        steps = self.affine[:3, :3].T @ direction  # mm per index step along k, j, i
        origin = float(self.affine[:3, 3] @ direction)
        return (
            (k * steps[0])[:, None, None]
            + (j * steps[1])[None, :, None]
            + (i * steps[2])[None, None, :]
            + origin
        ).astype(np.float32)

    def axis_of(self, direction: np.ndarray) -> tuple[int, int]:
        """Array axis most aligned with ``direction`` and the sign (+1/-1) of that alignment."""
        unit = self.affine[:3, :3] / self.spacing
        dots = unit.T @ np.asarray(direction, dtype=float)
        axis = int(np.argmax(np.abs(dots)))
        return axis, int(np.sign(dots[axis]))

    @property
    def voxel_cc(self) -> float:
        """Volume of one voxel in cubic centimetres."""
        return float(np.prod(self.spacing)) / 1000.0

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        """True when ``other`` has this shape and (within ``atol_mm``) this affine."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol_mm))

    def crop(self, box: tuple[slice, ...]) -> Volume:
        """The sub-volume ``box`` (index slices, step 1) with its affine moved to the box's corner.

        The result covers the same patient coordinates as those voxels of ``self``.
        """
        starts = [b.indices(n)[0] for b, n in zip(box, self.shape)]
        affine = self.affine.copy()
        affine[:3, 3] = self.index_to_lps(np.array([starts]))[0]
        return Volume(np.ascontiguousarray(self.array[tuple(box)]), affine)

    def paste(self, part: Volume, fill: float | bool = 0) -> Volume:
        """``part`` (a crop of this grid) placed back on this grid; ``fill`` elsewhere.

        Raises ValueError when ``part`` is not an integer shift of this grid inside it.
        """
        corner = self.lps_to_index(part.affine[None, :3, 3])[0]
        start = np.rint(corner).astype(int)
        if (not np.allclose(corner, start, atol=1e-3) or not np.allclose(part.affine[:3, :3], self.affine[:3, :3])
                or (start < 0).any() or (start + part.shape > np.array(self.shape)).any()):
            raise ValueError("Volume to paste is not a crop of this grid.")
        out = np.full(self.shape, fill, dtype=part.array.dtype)
        out[tuple(slice(s, s + n) for s, n in zip(start, part.shape))] = part.array
        return Volume(out, self.affine.copy())

    def with_array(self, array: np.ndarray) -> Volume:
        """Same grid, another array."""
        if array.shape != self.shape:
            raise ValueError(f"Array shape {array.shape} does not match grid {self.shape}.")
        return Volume(array, self.affine.copy())
