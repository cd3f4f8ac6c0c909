"""The small protocol every face locator (eye ROIs, eye masks, TotalSegmentator, render) follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from deface_ts.geometry.masks import bounding_box
from deface_ts.geometry.volume import Volume


@dataclass
class Eye:
    """One eye landmark: its source, side and voxels on the CT grid."""

    source: str  # ROI name or mask label
    side: str  # "left", "right" or "unknown" (from the patient's left, via the affine)
    centre_mm: np.ndarray  # LPS
    mask: np.ndarray  # bool, CT grid

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())


@dataclass
class FaceLocation:
    """What a locator found, nothing more: the planner builds every removal region from it.

    ``face_mask`` is the face as segmented (bool, CT grid), not yet grown or filled;
    eye-landmark methods have none.
    """

    method: str
    eyes: list[Eye]
    face_mask: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def eye_mask(self) -> np.ndarray:
        # Written in each eye's box only: a fresh np.zeros stays unbacked memory where nothing is written,
        # where zeros_like and a whole-volume |= would make a CT-sized bool array resident.
        mask = np.zeros(self.eyes[0].mask.shape, dtype=bool)
        for eye in self.eyes:
            box = bounding_box(eye.mask)
            if box is not None:
                mask[box] |= eye.mask[box]
        return mask


class Locator(Protocol):
    """Finds the face of one CT. Raises PrivacyError when it cannot: never deface blindly."""

    name: str

    def locate(self, ct: Volume) -> FaceLocation: ...



def anterior_pole(ct: Volume, mask: np.ndarray) -> tuple[int, int, int]:
    """Index of the most anterior voxel of ``mask`` (an eye's cornea), from the affine."""
    idx = np.argwhere(mask)
    anterior = -ct.index_to_lps(idx)[:, 1]  # LPS +y is posterior
    return tuple(int(v) for v in idx[int(np.argmax(anterior))])  # type: ignore[return-value]
