"""The cranial cavity: what the skull encloses, found so that real skulls do not leak.

Real bone is not the phantom's: orbital roofs and the frontal sinus' back wall
are a millimetre thin and partial-volumed to 150-250 HU, the cribriform plate
and the foramina are holes, metal streaks cut dark lines through the skull. A
voxel-wise flood from the outside air leaks through any of them, and then the
frontal lobes count as "outside" (issue 11: 18 cc of brain removed on a real
planning CT). So the enclosure is decided on ~2 mm blocks:

* a block is bone when any of its voxels is (max-pooling: a 1 mm wall at 200 HU
  next to 1000 HU bone still closes its block);
* gaps narrower than twice ``close_mm`` are closed (foramina, thin dehiscences,
  streaks), a ball in millimetres whatever the voxel size;
* free blocks connected to air outside the body are outside; the rest are
  enclosed. The orbits (35-40 mm open to the front) stay open.

Back on the full grid, every non-bone voxel of an enclosed block, or of a bone
block touching one, is cavity: a thin layer of brain against the inner table is
kept even where the blocks straddle it.

A skull with a hole wider than the closing (a craniectomy: InVesalius' real head
in the tests has one over the right frontal lobe) encloses nothing there, so above
the eyes a second test joins the first: per axial slice, the convex hull of the
skull (`skull_envelope`). Above the orbits a slice of the skull is a closed
convex ring, and its hull spans a defect by a chord. The brain bulging beyond the
chord (a few mm under a 40 mm defect) is not covered: growing the hull to cover it
keeps the brow and forehead skin, whose edges on the cut surface a face detector
reads as a face (seen on the phantom); on the real head the chord alone removes no
brain. A voxel touching the brain side is kept too (partial volume at a thin sinus
roof, seen on the real head).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from deface_ts.errors import DefaceError


class CavityError(DefaceError):
    """The planned removal reaches into the cranial cavity: the case stops (brain is never removed)."""


def _ball(radius_mm: float, step_mm: np.ndarray) -> np.ndarray:
    reach = np.floor(radius_mm / step_mm + 1e-6).astype(int)
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in reach)]
    return sum((g * s) ** 2 for g, s in zip(grid, step_mm)) <= radius_mm**2


def _blocks(array: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(B0, B1, B2, f0*f1*f2) view of ``array`` padded at its far ends by edge values to whole blocks."""
    pad = [(0, int(-n % f)) for n, f in zip(array.shape, factors)]
    padded = np.pad(array, pad, mode="edge")
    shape = np.array(padded.shape) // factors
    blocks = padded.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
    return blocks.transpose(0, 2, 4, 1, 3, 5).reshape(*shape, -1)


def cranial_cavity(hu: np.ndarray, body: np.ndarray, spacing: np.ndarray, bone_hu: float,
                   block_mm: float = 2.0, close_mm: float = 4.0) -> np.ndarray:
    """Non-bone voxels of ``hu`` that the skull encloses (no bone-free path to air outside ``body``).

    Parameters
    ----------
    hu, body
        HU and the patient body on one grid (any axis order). Outside is the air
        outside ``body``, sinus and nasal air included where ``body`` leaves them
        out: kept tissue there would stand out of the cut surface as a pattern a
        face detector reads as a face. The array's faces are closed.
    spacing
        Voxel size (mm) along the three array axes.
    bone_hu
        Bone threshold (config ``region.bone_hu``).
    block_mm, close_mm
        Block size of the enclosure test, and the radius of the closing that
        seals gaps in the skull.
    """
    spacing = np.asarray(spacing, dtype=float)
    factors = np.maximum(np.rint(block_mm / spacing).astype(int), 1)
    step = factors * spacing
    sealed = _blocks(hu, factors).max(axis=-1) > bone_hu
    ball = _ball(close_mm, step)
    # Dilation then erosion with the border counted as bone: a closing that never opens the array's faces.
    closed = ndimage.binary_erosion(ndimage.binary_dilation(sealed, ball), ball, border_value=1) | sealed
    air = _blocks(~body, factors).mean(axis=-1) > 0.5
    labels, count = ndimage.label(~closed)
    outside = np.bincount(labels[air & ~closed], minlength=count + 1) > 0
    outside[0] = True
    enclosed = ~outside[labels]
    kept = enclosed | (ndimage.binary_dilation(enclosed) & closed)
    full = kept
    for axis, f in enumerate(factors):
        full = np.repeat(full, f, axis=axis)
    full = full[: hu.shape[0], : hu.shape[1], : hu.shape[2]]
    return full & (hu <= bone_hu)


def skull_envelope(hu: np.ndarray, body: np.ndarray, spacing: np.ndarray, bone_hu: float,
                   block_mm: float = 2.0) -> np.ndarray:
    """Non-bone voxels inside each axial slice's convex hull of the skull (axis 0 must be superior).

    Only bone inside ``body`` counts: head holders and boards lie apart from the
    patient. Built on ~2 mm blocks (max-pooled bone, as in `cranial_cavity`).
    """
    from skimage.morphology import convex_hull_image

    spacing = np.asarray(spacing, dtype=float)
    factors = np.array([1, *np.maximum(np.rint(block_mm / spacing[1:]).astype(int), 1)])
    bone = _blocks((hu > bone_hu) & body, factors).max(axis=-1)
    hull = np.zeros(bone.shape, dtype=bool)
    for k in np.flatnonzero(bone.any(axis=(1, 2))):
        hull[k] = convex_hull_image(bone[k])
    for axis in (1, 2):
        hull = np.repeat(hull, factors[axis], axis=axis)
    return hull[:, : hu.shape[1], : hu.shape[2]] & (hu <= bone_hu)


def brain_side(hu: np.ndarray, body: np.ndarray, spacing: np.ndarray, bone_hu: float, s_from: int,
               s_envelope: int) -> np.ndarray:
    """What removal must never touch, on an anatomical view's grid (axes superior, anterior, left).

    From view slice ``s_from`` up: the cranial cavity (`cranial_cavity`) found in the
    whole head and in the part anterior of its middle (a leak behind, through the
    skull base' foramina, cannot reach the front then); from ``s_envelope`` up the
    skull's envelope (`skull_envelope`), which spans a skull defect. (Not in the eye
    band alone: closed at its lowest slice, the nasal cavity would count as enclosed,
    and its turbinates, kept, stand out of the cut surface like a face.)
    """
    out = np.zeros(hu.shape, dtype=bool)
    s_from, s_envelope = max(int(s_from), 0), max(int(s_envelope), 0)
    if s_from >= hu.shape[0]:
        return out
    out[s_from:] = cranial_cavity(hu[s_from:], body[s_from:], spacing, bone_hu)
    front = hu.shape[1] // 2
    out[s_from:, front:] |= cranial_cavity(hu[s_from:, front:], body[s_from:, front:], spacing, bone_hu)
    if s_envelope < hu.shape[0]:
        out[s_envelope:] |= skull_envelope(hu[s_envelope:], body[s_envelope:], spacing, bone_hu)
    # A voxel touching the cranial cavity (its largest part, not a sinus pocket) is partly brain (partial
    # volume): it stays too, unless it is bone.
    labels, count = ndimage.label(out[s_from:])
    if count:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        cavity = labels == int(np.argmax(sizes))
        out[s_from:] |= ndimage.binary_dilation(cavity) & (hu[s_from:] <= bone_hu)
    return out
