"""The anatomical view: an axis-aligned volume shown as (superior, anterior, left) array axes.

Planning in this view turns "anterior of a coronal plane, above an axial plane"
into array slicing, whatever the patient position (HFS, HFP, FFS, FFP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deface_ts.geometry.volume import ANTERIOR, LEFT, SUPERIOR, Volume


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
    def of(cls, volume: Volume, tolerance_degrees: float = 1.0) -> AnatomicalView:
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

    def volume(self, volume: Volume) -> Volume:
        """``volume`` in this view: array axes (S, A, L), with the affine that keeps patient coordinates."""
        source = np.zeros((4, 4))  # view index (s, a, l, 1) -> source index (k, j, i, 1)
        source[3, 3] = 1.0
        for view_axis, (axis, flip) in enumerate(zip(self.axes, self.flips)):
            n = volume.shape[axis]
            source[axis, view_axis] = -1.0 if flip else 1.0
            source[axis, 3] = n - 1 if flip else 0.0
        return Volume(self.view(volume.array), volume.affine @ source)
