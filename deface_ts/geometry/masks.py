"""Masks on the CT grid: bounding boxes, a mask stored in its box, components, dilation, the body."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from deface_ts.geometry.volume import Volume


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


def slabs(length: int, size: int = 16) -> list[slice]:
    """Consecutive blocks of ``size`` slices covering ``length``: whole-volume masks worked block by block make
    no CT-sized temporaries (fresh memory the kernel zeroes, 0.05-0.1 s each at 512x512x141)."""
    return [slice(start, start + size) for start in range(0, length, size)]


@dataclass
class BoxMask:
    """A boolean mask stored as its bounding box on a larger grid (saves memory for ~25 ROIs)."""

    offset: tuple[int, int, int]
    array: np.ndarray

    @property
    def box(self) -> tuple[slice, slice, slice]:
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.array.shape))  # type: ignore[return-value]

    def full(self, shape: tuple[int, int, int]) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        out[self.box] = self.array
        return out

    @classmethod
    def from_full(cls, mask: np.ndarray) -> BoxMask:
        box = bounding_box(mask)
        if box is None:
            return cls((0, 0, 0), np.zeros((0, 0, 0), dtype=bool))
        return cls((box[0].start, box[1].start, box[2].start), mask[box].copy())

    def count(self) -> int:
        return int(self.array.sum())


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of ``mask`` (all False when the mask is empty)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def body_from_hu(hu: np.ndarray, threshold: float) -> np.ndarray:
    """Patient body from HU: largest connected component above ``threshold``, holes filled per slice."""
    body = largest_component(hu > threshold)
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def dilate_mm(grid: Volume, mask: np.ndarray, margin_mm: float) -> np.ndarray:
    """``mask`` grown by ``margin_mm`` (a Euclidean :func:`ball` on the grid's spacing), inside its box.

    Returns ``mask`` itself when the margin is under one voxel or the mask is empty.
    """
    if not _radius(grid, margin_mm).any() or not mask.any():
        return mask
    box, grown = dilate_in_box(grid, mask, margin_mm)
    out = np.zeros(grid.shape, dtype=bool)
    out[box] = grown
    return out


def dilate_in_box(grid: Volume, mask: np.ndarray | BoxMask,
                  margin_mm: float) -> tuple[tuple[slice, ...] | None, np.ndarray]:
    """``mask`` (on the grid, or stored in its box) grown by ``margin_mm`` as (box, grown voxels in the box).

    (None, empty) for an empty mask. The dilation inside a box holding every voxel of the mask plus the
    margin equals the whole-grid one there: outside the grid counts as empty either way.
    """
    radius = _radius(grid, margin_mm)
    if isinstance(mask, BoxMask):
        if not mask.array.any():
            return None, np.zeros((0, 0, 0), dtype=bool)
        box = tuple(slice(max(b.start - r, 0), min(b.stop + r, n)) for b, r, n in zip(mask.box, radius, grid.shape))
        inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(mask.box, box))
        sub = np.zeros(tuple(g.stop - g.start for g in box), dtype=bool)
        sub[inner] = mask.array
    else:
        found = bounding_box(mask, radius)
        if found is None:
            return None, np.zeros((0, 0, 0), dtype=bool)
        box, sub = found, mask[found]
    if not radius.any():
        return box, sub.copy()
    return box, ndimage.binary_dilation(sub, structure=ball(margin_mm, grid.spacing))


def _radius(grid: Volume, margin_mm: float) -> np.ndarray:
    """Whole voxels per axis within ``margin_mm``."""
    return np.maximum(np.floor(margin_mm / grid.spacing + 1e-6), 0).astype(int)


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
