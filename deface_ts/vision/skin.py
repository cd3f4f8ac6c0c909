"""The skin surface of a CT: the patient stripped of immobilisation mask and couch, as a smooth HU field.

The immobilisation shell is a perforated sheet a few mm in front of the skin: an
opening wider than the sheet removes it and the largest component is the patient.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from deface_ts.errors import BlankRenderError
from deface_ts.geometry.masks import BoxMask, ball, bounding_box, largest_component
from deface_ts.geometry.volume import Volume

AIR_HU = -1000.0


def strip_immobilisation(hu: np.ndarray, spacing: np.ndarray | tuple[float, float, float], *,
                         threshold_hu: float = -300.0, opening_mm: float = 3.0, margin_mm: float = 2.0,
                         work_mm: float = 2.0) -> np.ndarray:
    """Patient skin mask without the thermoplastic mask, the couch and the head rest: the voxels above
    ``threshold_hu`` within `patient_reach` (parameters there); a bool mask on the CT grid."""
    reach = patient_reach(hu, spacing, threshold_hu=threshold_hu, opening_mm=opening_mm, margin_mm=margin_mm,
                          work_mm=work_mm)
    return skin_within(hu, reach, threshold_hu)


def skin_within(hu: np.ndarray, reach: BoxMask, threshold_hu: float = -300.0) -> np.ndarray:
    """The voxels of ``hu`` above ``threshold_hu`` within ``reach`` (a `patient_reach` on the same grid).

    With the original's reach, the skin of the defaced CT: removal only takes tissue away, and erosion and
    dilation are monotone, so the defaced patient's own reach (the patient still the largest object) lies
    within the original's. This shows every written voxel the defaced CT's own stripping would show, and no
    shell or couch the original's stripping took away.
    """
    out = np.zeros(hu.shape, dtype=bool)
    box = reach.box
    out[box] = (hu[box] > threshold_hu) & reach.array
    return out


def patient_reach(hu: np.ndarray, spacing: np.ndarray | tuple[float, float, float], *,
                  threshold_hu: float = -300.0, opening_mm: float = 3.0, margin_mm: float = 2.0,
                  work_mm: float = 2.0) -> BoxMask:
    """Where the patient is, the thermoplastic mask, the couch and the head rest left out.

    The shell is a perforated sheet 2–3 mm thick a few mm in front of the skin:
    an opening wider than the sheet removes it, the largest connected component
    drops the couch. Both run on a ``work_mm`` grid (they only decide which
    object is the patient); the reach is the region within ``margin_mm`` of that
    object, at full resolution, in the box of the voxels above ``threshold_hu``:
    the skin is the threshold within it (`skin_within`), so the face keeps its detail.

    Parameters
    ----------
    hu
        CT in Hounsfield units, (slice, row, column).
    spacing
        Voxel size (mm) along (slice, row, column).
    threshold_hu
        Skin iso-level; air is below it.
    opening_mm
        Radius of the opening ball: sheets thinner than twice this vanish.
    margin_mm
        How far (mm) from the opened patient the full-resolution threshold is
        kept: a shell closer than this to the skin stays (it touches the face).
    work_mm
        Grid size for the opening and the component labelling.
    """
    spacing = np.asarray(spacing, dtype=float)
    above = hu > threshold_hu
    box = bounding_box(above, margin=1)
    if box is None:
        return BoxMask((0, 0, 0), np.zeros((0, 0, 0), dtype=bool))
    crop = above[box]
    factors = np.maximum(1, np.floor(work_mm / spacing + 1e-6)).astype(int)
    coarse = _mostly(crop, factors)  # a thin sheet fills less than half its blocks and thins out here
    coarse_spacing = spacing * factors
    # Opening by a ball of radius r with exact (anisotropic) distances: erode, then dilate. Outside the crop
    # counts as patient in the erosion, as for a distance transform, which measures to background voxels only.
    eroded = ndimage.binary_erosion(coarse, structure=ball(opening_mm, coarse_spacing), border_value=1)
    if not eroded.any():
        raise BlankRenderError(f"no part of the patient is thicker than {2 * opening_mm} mm above {threshold_hu} HU")
    patient = largest_component(eroded)
    reach = ndimage.binary_dilation(patient, structure=ball(opening_mm + margin_mm, coarse_spacing))
    keep = _pad_to(reach.repeat(factors[0], 0).repeat(factors[1], 1).repeat(factors[2], 2), crop.shape)
    return BoxMask((box[0].start, box[1].start, box[2].start), keep)


def _mostly(mask: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Blocks of ``factors`` voxels (the last ones padded with False) more than half of which are True.

    Counted in integers on the bool mask: a float copy of it cost four times its memory, fresh pages the
    kernel zeroes (0.05-0.1 s at 512x512x141).
    """
    shape = tuple(-(-n // f) * f for n, f in zip(mask.shape, factors))
    padded = mask if mask.shape == shape else _pad_to(mask, shape)
    blocks = [v for n, f in zip(padded.shape, factors) for v in (n // f, f)]
    counts = padded.reshape(blocks).sum(axis=(1, 3, 5), dtype=np.int32)
    return 2 * counts > int(np.prod(factors))


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=array.dtype)
    region = tuple(slice(0, min(a, s)) for a, s in zip(array.shape, shape))
    out[region] = array[region]
    return out


def skin_field(ct: Volume, skin: np.ndarray, threshold_hu: float = -300.0, smooth_mm: float = 1.0,
               smooth_voxels: float = 0.0) -> Volume:
    """HU cropped to the skin's bounding box, air outside the skin mask, lightly smoothed.

    Rendering this field at ``threshold_hu`` shows the skin with the partial-volume
    (sub-voxel) position of the real HU, without the stripped objects. The
    Gaussian removes the voxel staircase, which thick slices turn into stripes
    across the face that detectors read as edges. Its sigma along each axis is
    ``smooth_mm`` or ``smooth_voxels`` of that axis' spacing, whichever is
    larger: a fixed 1 mm barely touches 3-5 mm slices, a fraction of the
    spacing blurs each step into a slope whatever the spacing.
    """
    if not skin.any():
        raise BlankRenderError(f"the CT has no skin surface above {threshold_hu} HU to render")
    box = bounding_box(skin, margin=3)
    assert box is not None  # skin.any() above
    # In float32 from the start, in place: through float64 (np.clip of int16 HU with float bounds) it made two
    # box-sized float64 temporaries, ~0.15 s of fresh memory on the 2-core machine.
    crop = ct.crop(box)
    field = crop.array.astype(np.float32)
    np.clip(field, AIR_HU, 200.0, out=field)
    np.copyto(field, np.float32(AIR_HU), where=~skin[box])
    sigma_mm = np.maximum(smooth_mm, smooth_voxels * ct.spacing)
    if np.any(sigma_mm > 0):
        field = ndimage.gaussian_filter(field, sigma_mm / ct.spacing, mode="nearest")
    return crop.with_array(field)
