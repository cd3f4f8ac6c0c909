"""Eye landmarks from RTSTRUCT eye ROIs (the rule of defaceRT, O'Sullivan-Steben et al.) or from an eye mask image."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from deface_ts.config import EyesConfig
from deface_ts.errors import PrivacyError
from deface_ts.geometry.volume import Volume
from deface_ts.io.dicom.rtstruct import Roi, Structures
from deface_ts.locate.base import Eye, FaceLocation


def is_eye_name(name: str, config: EyesConfig) -> bool:
    lowered = name.strip().lower()
    if any(re.search(p, lowered) for p in config.exclude):
        return False
    return any(re.search(p, lowered) for p in config.include)


def eye_rois(structures: Structures, config: EyesConfig) -> list[Roi]:
    return [r for r in structures.rois if is_eye_name(r.name, config) and r.volume_voxels > 0]


def _eyes(ct: Volume, named_masks: list[tuple[str, np.ndarray, np.ndarray]]) -> list[Eye]:
    """Eyes from (source, full mask, voxel indices); sides from the patient-left coordinate."""
    centres = [ct.index_to_lps(index.mean(axis=0)[None])[0] for _, _, index in named_masks]
    midline = float(np.mean([c[0] for c in centres]))
    eyes = []
    for (source, mask, _), centre in zip(named_masks, centres):
        side = ("left" if centre[0] > midline else "right") if len(named_masks) > 1 else "unknown"
        eyes.append(Eye(source, side, centre, mask))
    return eyes


@dataclass
class RoiEyeLocator:
    """Eyes from the RTSTRUCT's eye ROIs, found by configurable name patterns."""

    structures: Structures | None
    config: EyesConfig
    name: str = "eyes"

    def locate(self, ct: Volume) -> FaceLocation:
        if self.structures is None:
            raise PrivacyError("no RTSTRUCT in the input, so no eye ROIs to locate the face; nothing was written")
        rois = eye_rois(self.structures, self.config)
        if not rois:
            seen = ", ".join(f"'{r.name}'" for r in self.structures.rois) or "none"
            raise PrivacyError(
                f"{self.structures.file.path}: no eye ROI found (ROIs seen: {seen}); "
                "add a name pattern with --eye-pattern or use another method. Nothing was written."
            )
        eyes = _eyes(ct, [(r.name, r.mask.full(ct.shape), np.argwhere(r.mask.array) + r.mask.offset) for r in rois])
        return FaceLocation(self.name, eyes, notes=[f"eye ROIs: {', '.join(r.name for r in rois)}"])


@dataclass
class MaskEyeLocator:
    """Eyes from a mask image on the CT grid (any non-zero label); each connected blob is one eye."""

    mask: np.ndarray
    source: str
    name: str = "eyes"

    def locate(self, ct: Volume) -> FaceLocation:
        labels, count = ndimage.label(self.mask > 0)
        if count == 0:
            raise PrivacyError(f"{self.source}: eye mask is empty; cannot locate the face. Nothing was written.")
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=range(1, count + 1))
        keep = [n + 1 for n in np.argsort(sizes)[::-1][:2] if sizes[n] >= 0.1 * sizes.max()]
        blobs = [labels == n for n in keep]
        eyes = _eyes(ct, [(f"{self.source}#{n}", blob, np.argwhere(blob)) for n, blob in zip(keep, blobs)])
        return FaceLocation(self.name, eyes, notes=[f"eye mask: {self.source} ({len(eyes)} blob(s))"])
