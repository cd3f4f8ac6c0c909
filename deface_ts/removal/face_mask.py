"""The removal region of a face mask (TotalSegmentator's ``face``): grown, filled to the front, optionally cut flat.

Locators only report the mask they found; the planner builds the region here, as it
builds the eye-landmark region in :mod:`deface_ts.removal.plan`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from deface_ts.errors import PrivacyError
from deface_ts.geometry.masks import dilate_mm
from deface_ts.geometry.view import AnatomicalView
from deface_ts.geometry.volume import Volume
from deface_ts.locate.base import Eye, anterior_pole

#: Half the width of the face band whose deepest face-mask point sets each slice's flat cut (eyes at ±32 mm).
FACE_HALF_WIDTH_MM = 40.0
#: The flat cut lies at most this far behind the most anterior face-mask voxel of its slice.
FLAT_MAX_DEPTH_MM = 35.0


def face_region_from_mask(ct: Volume, face_mask: np.ndarray, margin_mm: float, flatten_mm: float = 0.0) -> np.ndarray:
    """Removal region from a face mask: the mask grown by ``margin_mm``, plus everything in front of it.

    "In front" is along the patient's anterior direction from the affine: each
    line of voxels running anterior is filled from the mask's most posterior
    voxel on it to the edge of the image, so no shell of skin survives in front
    of a mask that lies under the surface, and whatever lies in front of the
    face (air, immobilisation mask) goes too.
    """
    face_mask = np.asarray(face_mask, dtype=bool)
    if face_mask.shape != ct.shape:
        raise ValueError(f"face mask shape {face_mask.shape} does not match the CT {ct.shape}")
    if not face_mask.any():
        raise PrivacyError("the face mask is empty; cannot locate the face")
    grown = dilate_mm(ct, face_mask, margin_mm)
    try:
        view = AnatomicalView.of(ct)
    except ValueError as exc:
        raise PrivacyError(f"cannot fill in front of the face mask: {exc}") from None
    grown_view = view.view(grown)
    filled = np.logical_or.accumulate(grown_view, axis=1)  # view axis 1 runs posterior → anterior
    if flatten_mm > 0:
        filled |= _flat_cut(grown_view, flatten_mm, view)
    return np.ascontiguousarray(view.unview(filled))


def _flat_cut(grown_view: np.ndarray, window_mm: float, view: AnatomicalView) -> np.ndarray:
    """Per slice, everything anterior of the mask's most posterior voxel, across the full width.

    Filling in front of a face mask keeps the mask's back surface, and a mask of
    roughly constant thickness has the face's relief there, which face detectors
    find (docs/calibration.md, "Face-mask region"). So each slice is cut flat at
    the deepest point of the mask within ``window_mm`` above or below it, the way
    the eye-landmark method cuts one plane.
    """
    s_count, a_count, _ = grown_view.shape
    # Depth from the central band only (the face's width): at the top of the head a mask that wraps round the
    # scalp would otherwise put the deepest point at the sides and the cut through the brain.
    l_mm = view.coordinates[2]
    columns = np.flatnonzero(grown_view.any(axis=(0, 1)))
    centre = float(np.mean(l_mm[columns]))
    band = np.abs(l_mm - centre) <= FACE_HALF_WIDTH_MM
    central = grown_view[:, :, band]
    present = central.any(axis=(1, 2))
    along_a = np.asarray(central.any(axis=2))
    deepest = np.where(present, np.argmax(along_a, axis=1), a_count)
    front = np.where(present, a_count - 1 - np.argmax(along_a[:, ::-1], axis=1), 0)
    step = abs(float(view.coordinates[0][1] - view.coordinates[0][0])) if s_count > 1 else 1.0
    half = int(round(window_mm / step))
    windowed = ndimage.minimum_filter1d(deepest, size=2 * half + 1, mode="nearest")
    # Never deeper than FLAT_MAX_DEPTH_MM behind the slice's most anterior mask voxel (the nose is ~30 mm
    # in front of the eyes): near the top of the head the window would otherwise reach the brain.
    a_step = abs(float(view.coordinates[1][1] - view.coordinates[1][0])) if a_count > 1 else 1.0
    windowed = np.maximum(windowed, front - int(np.ceil(FLAT_MAX_DEPTH_MM / a_step)))
    flat = np.zeros(grown_view.shape, dtype=bool)
    for k in np.flatnonzero(present):
        flat[k, windowed[k]:, :] = True
    return flat


def uncovered_eyes(ct: Volume, region: np.ndarray, eyes: list[Eye]) -> list[Eye]:
    """Eyes whose anterior pole lies outside ``region`` (the face mask must cover the front of each eye)."""
    return [e for e in eyes if not region[anterior_pole(ct, e.mask)]]
