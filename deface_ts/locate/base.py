"""The small protocol every face locator (eye ROIs, eye masks, TotalSegmentator, render) follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

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
        mask = np.zeros_like(self.eyes[0].mask)
        for eye in self.eyes:
            mask |= eye.mask
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
