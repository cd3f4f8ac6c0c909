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


def bounding_box(mask: np.ndarray, margin: int | np.ndarray = 0) -> tuple[slice, ...] | None:
    """Index box of the true voxels of ``mask`` grown by ``margin`` (per axis allowed), clipped to the array.

    None for an empty mask. Projections per axis: ``np.argwhere`` would list every true voxel (millions for a brain).
    """
    margins = np.broadcast_to(np.asarray(margin, dtype=int), (mask.ndim,))
    box = []
    for axis, (n, m) in enumerate(zip(mask.shape, margins)):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - int(m), 0), min(int(hits[-1]) + 1 + int(m), n)))
    return tuple(box)


def ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Structuring element: the voxels within ``radius_mm`` of the centre voxel on a grid of ``spacing`` (mm).

    Eroding a mask by it keeps the voxels farther than ``radius_mm`` from any background voxel, and dilating
    adds those within ``radius_mm`` of the mask: what Euclidean distance transforms with ``sampling=spacing``
    give, for a fraction of their time on small radii.
    """
    spacing = np.asarray(spacing, dtype=float)
    radius = np.maximum(np.floor(radius_mm / spacing + 1e-6), 0).astype(int)
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    return sum((g * s) ** 2 for g, s in zip(grid, spacing)) <= radius_mm * radius_mm


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
        return self.array.shape  # type: ignore[return-value]

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

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same grid, another array."""
        if array.shape != self.shape:
            raise ValueError(f"Array shape {array.shape} does not match grid {self.shape}.")
        return Volume(array, self.affine.copy())


@dataclass(frozen=True)
class AnatomicalView:
    """Axis permutation and flips that show an axis-aligned array as (superior, anterior, left).

    Planning in this view turns "anterior of a coronal plane, above an axial
    plane" into array slicing. ``view`` and ``unview`` are numpy views, no copies.
    """

    axes: tuple[int, int, int]  # source array axis for view axes (S, A, L)
    flips: tuple[bool, bool, bool]  # flip the view axis so indices increase in the S, A, L direction
    coordinates: tuple[np.ndarray, np.ndarray, np.ndarray]  # mm along S, A and L of each view index

    @classmethod
    def of(cls, volume: Volume, tolerance_degrees: float = 1.0) -> "AnatomicalView":
        unit = volume.affine[:3, :3] / volume.spacing
        axes, flips, coordinates = [], [], []
        for direction in (SUPERIOR, ANTERIOR, LEFT):
            dots = unit.T @ direction
            axis = int(np.argmax(np.abs(dots)))
            if np.degrees(np.arccos(min(1.0, abs(dots[axis])))) > tolerance_degrees:
                raise ValueError(
                    "image axes are oblique to the patient axes (more than "
                    f"{tolerance_degrees} degrees); resample to an axis-aligned grid first"
                )
            axes.append(axis)
            flip = dots[axis] < 0
            flips.append(bool(flip))
            n = volume.shape[axis]
            steps = np.arange(n)[::-1] if flip else np.arange(n)
            index = np.zeros((n, 3))
            index[:, axis] = steps
            coordinates.append(volume.index_to_lps(index) @ direction)
        if len(set(axes)) != 3:
            raise ValueError("image axes do not map one-to-one onto the patient axes")
        return cls(tuple(axes), tuple(flips), tuple(coordinates))  # type: ignore[arg-type]

    def view(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.axes)
        return out[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]

    def unview(self, array: np.ndarray) -> np.ndarray:
        flipped = array[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]
        return np.transpose(flipped, np.argsort(self.axes))
