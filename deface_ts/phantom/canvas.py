"""The canvas the phantom is painted on: HU and ROI masks, filled only inside each structure's box of the grid.

Every scan is axis-aligned, so a region is a box of index ranges with one patient
coordinate per axis, and every field is evaluated on broadcast 1-D ramps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from deface_ts.geometry.masks import BoxMask
from deface_ts.phantom.surfaces import AIR_HU


@dataclass
class Region:
    """An axis-aligned block of the grid and the patient coordinates of its voxel centres."""

    start: tuple[int, int, int]
    z: np.ndarray  # 1-D, one per slice
    y: np.ndarray  # one per row
    x: np.ndarray  # one per column

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.z), len(self.y), len(self.x))

    @property
    def index(self) -> tuple[slice, slice, slice]:
        return tuple(slice(s, s + n) for s, n in zip(self.start, self.shape))  # type: ignore[return-value]

    def grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (x, y, z) coordinates."""
        return self.x[None, None, :], self.y[None, :, None], self.z[:, None, None]

    def sub(self, lo, hi) -> Region | None:
        """The part whose voxel centres lie in the LPS box ``lo``..``hi`` (x, y, z); None if empty."""
        start, vectors = [], []
        for v, s, a in zip((self.z, self.y, self.x), self.start, (2, 1, 0)):
            found = np.flatnonzero((v >= lo[a]) & (v <= hi[a]))  # coordinates are monotonic: one run
            if found.size == 0:
                return None
            start.append(s + int(found[0]))
            vectors.append(v[found[0] : found[-1] + 1])
        return Region(tuple(start), *vectors)  # type: ignore[arg-type]

    def chunks(self, slices: int = 16) -> Iterator[tuple[slice, Region]]:
        """Slabs of a few slices, so temporaries stay small and in cache."""
        for k in range(0, len(self.z), slices):
            part = slice(k, min(k + slices, len(self.z)))
            yield part, Region((self.start[0] + k, *self.start[1:]), self.z[part], self.y, self.x)


def local_index(outer: tuple[int, ...], outer_shape, inner: tuple[int, ...], inner_shape):
    """Slices of the overlap of two boxes, in each box's own indices (None if they do not overlap)."""
    lo = np.maximum(outer, inner)
    hi = np.minimum(np.add(outer, outer_shape), np.add(inner, inner_shape))
    if np.any(hi <= lo):
        return None
    a = tuple(slice(int(l - o), int(h - o)) for l, h, o in zip(lo, hi, outer))
    b = tuple(slice(int(l - i), int(h - i)) for l, h, i in zip(lo, hi, inner))
    return a, b


class Canvas:
    """HU array and box masks under construction on an axis-aligned grid."""

    def __init__(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
        self.all = Region((0, 0, 0), *(np.asarray(v, dtype=np.float32) for v in (z, y, x)))
        self.hu = np.full(self.all.shape, AIR_HU, dtype=np.float32)
        self.masks: dict[str, BoxMask] = {}
        self.skin_depth: tuple[Region, np.ndarray] | None = None  # depth (mm) under the skin in the body box

    def region(self, lo, hi) -> Region | None:
        return self.all.sub(np.asarray(lo, float), np.asarray(hi, float))

    def lookup(self, key: str, region: Region) -> np.ndarray:
        out = np.zeros(region.shape, dtype=bool)
        box = self.masks.get(key)
        if box is not None:
            overlap = local_index(region.start, region.shape, box.offset, box.array.shape)
            if overlap:
                out[overlap[0]] = box.array[overlap[1]]
        return out

    def paint(self, region: Region | None, mask: np.ndarray | bool, hu: float, key: str | None = None) -> None:
        """Set ``hu`` where ``mask`` is inside the body (nothing is ever painted into outside air)."""
        if region is None:
            return
        inside = np.broadcast_to(mask, region.shape) & self.lookup("body", region)
        self.hu[region.index][inside] = hu
        if key is not None:
            self.keep(key, region, inside)

    def keep(self, key: str, region: Region, mask: np.ndarray) -> None:
        """OR ``mask`` into ROI ``key``, growing its box as needed (ROIs may have separate parts)."""
        old = self.masks.get(key)
        if old is None:
            self.masks[key] = BoxMask(region.start, mask.copy())
            return
        lo = np.minimum(old.offset, region.start)
        hi = np.maximum(np.add(old.offset, old.array.shape), np.add(region.start, region.shape))
        if np.any(lo != old.offset) or np.any(hi != np.add(old.offset, old.array.shape)):
            grown = BoxMask((int(lo[0]), int(lo[1]), int(lo[2])), np.zeros(tuple(hi - lo), dtype=bool))
            grown.array[local_index(grown.offset, grown.array.shape, old.offset, old.array.shape)[0]] = old.array
            old = self.masks[key] = grown
        inner = local_index(old.offset, old.array.shape, region.start, region.shape)
        old.array[inner[0]] |= mask[inner[1]]
