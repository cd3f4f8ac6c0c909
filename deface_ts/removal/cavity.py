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

Metal draws the other kind of streak: bone-bright and air-dark lines through the
brain in its slices. In the slices near metal the hull of the brain side's
brain-like voxels spans them (`keep_streaks`), so brain under an artefact is not
taken for skull or air.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from deface_ts.geometry.masks import ball, bounding_box, largest_component, slabs

#: The orbital roof lies ~5 mm above the globe (an orbit is ~35 mm tall, the globe 24 mm). Lower, a slice's
#: skull hull holds the orbits' tops and the nasal root, which kept stand out of the cut surface like a face.
ORBIT_ROOF_MM = 6.0
#: Metal: denser than bone (cortical bone reads up to ~2,000 HU, enamel ~2,500; titanium and amalgam saturate the scale).
METAL_HU = 3000.0
#: Streaks lie in the slices through the metal; this far above and below a metal voxel (mm) a slice may hold them.
STREAK_BAND_MM = 10.0
#: A voxel half brain (20-40 HU), half bone or air reads anywhere from about -30 to 60 HU; fat (-100) is not brain.
PARTIAL_BRAIN_HU = (-30.0, 60.0)


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
    reach = (np.array(ball(close_mm, factors * spacing).shape) - 1) // 2  # the closing ball's radius in blocks
    out = np.zeros(hu.shape, dtype=bool)
    extent = _occupied_box(hu, body, bone_hu)
    if extent is None:
        return out  # all air: nothing is enclosed (every block is free air joined to the outside)
    # The work is cropped to the box of body and bone (the rest of the field is air) widened by a margin of
    # 2 * reach + 2 blocks per axis, its start on the block grid, its end on it or at the array's end.
    # The result in the box equals the uncropped one, and outside it is False, because:
    # * the crop's blocks are the uncropped blocks (same start, whole blocks, the same edge padding at the
    #   array's far end; an inner crop face is a block boundary), so ``sealed`` and ``air`` are their restriction;
    # * every block outside the body/bone box is air and not sealed; the dilation reaches ``reach`` blocks from
    #   sealed ones, so the reach + 2 layers inside an inner crop face are not dilated. The erosion (border_value=1)
    #   differs only where its ball crosses an inner crop face, i.e. in the outer ``reach`` layers, where the
    #   centre itself is not dilated: eroded False in both. So ``closed`` is the uncropped one in the box, and
    #   uncropped it is False outside (neither dilated nor sealed);
    # * outside the box every block is free air, so any uncropped free component leaving the box is outside;
    #   each of its pieces in the crop touches an inner crop face, where the layer is free air: outside too.
    #   A component inside the box is the same component with the same air blocks. So ``enclosed`` is equal
    #   in the box and False beyond, and so is its one-block dilation & closed (the face layer is not enclosed).
    lo, hi = [], []
    for axis, (e, f, r) in enumerate(zip(extent, factors, reach)):
        margin = 2 * int(r) + 2
        first, last = int(e.start) // f - margin, (int(e.stop) - 1) // f + 1 + margin
        lo.append(max(first, 0) * int(f))
        hi.append(min(last * int(f), hu.shape[axis]))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out[box] = _cranial_cavity(hu[box], body[box], factors, spacing, bone_hu, close_mm)
    return out


def _occupied_box(hu: np.ndarray, body: np.ndarray, bone_hu: float) -> tuple[slice, ...] | None:
    """`bounding_box` of ``body | (hu > bone_hu)``, taken slab by slab (`slabs`)."""
    profiles = [np.zeros(n, dtype=bool) for n in hu.shape]
    for block in slabs(hu.shape[0]):
        occupied = np.greater(hu[block], bone_hu)
        occupied |= body[block]
        profiles[0][block] = occupied.any(axis=(1, 2))
        profiles[1] |= occupied.any(axis=(0, 2))
        profiles[2] |= occupied.any(axis=(0, 1))
    box = []
    for profile in profiles:
        hits = np.flatnonzero(profile)
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _cranial_cavity(hu: np.ndarray, body: np.ndarray, factors: np.ndarray, spacing: np.ndarray, bone_hu: float,
                    close_mm: float) -> np.ndarray:
    """`cranial_cavity` on the whole of ``hu`` (blocks of ``factors`` voxels from index 0), uncropped."""
    step = factors * spacing
    sealed = _blocks(hu, factors).max(axis=-1) > bone_hu
    element = ball(close_mm, step)
    # Dilation then erosion with the border counted as bone: a closing that never opens the array's faces.
    closed = ndimage.binary_erosion(ndimage.binary_dilation(sealed, element), element, border_value=1) | sealed
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


def _hull(mask: np.ndarray) -> np.ndarray:
    """Convex hull of a 2-D mask: voxels whose centres lie in the hull of each row's two extreme voxels.

    A convex polygon covers one interval per row: from the lower convex envelope of the rows' first
    columns to the upper concave envelope of their last ones (each envelope also bounds the other side's
    points, which lie beyond it on their row), filled vectorised. skimage's convex_hull_image, which also
    takes voxels the hull only grazes, is 10x slower on 512x512; scipy's Qhull gives the same hull but
    costs a 0.1 s import of scipy.spatial for a few hundred points a slice.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    out = np.zeros(mask.shape, dtype=bool)
    if rows.size == 0:
        return out
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    if _collinear(rows, first, last):  # no area: the hull is the mask's own voxels
        return mask.copy()
    y = np.arange(rows[0], rows[-1] + 1, dtype=float)
    lower, upper = _envelope(rows, first, 1), _envelope(rows, last, -1)
    lo = np.interp(y, rows[lower], first[lower])
    hi = np.interp(y, rows[upper], last[upper])
    columns = np.arange(mask.shape[1])[None, :]
    out[rows[0]:rows[-1] + 1] = (columns >= lo[:, None] - 1e-6) & (columns <= hi[:, None] + 1e-6)
    return out | mask


def _envelope(rows: np.ndarray, columns: np.ndarray, side: int) -> list[int]:
    """Vertices of the lower convex (``side`` 1) or upper concave (-1) envelope of the points (row, column),
    rows increasing: Andrew's monotone chain, one pass."""
    r, c = rows.tolist(), columns.tolist()
    keep: list[int] = []
    for i in range(len(r)):
        while len(keep) >= 2:
            o, a = keep[-2], keep[-1]
            if side * ((r[a] - r[o]) * (c[i] - c[o]) - (c[a] - c[o]) * (r[i] - r[o])) > 0:
                break
            keep.pop()
        keep.append(i)
    return keep


def _collinear(rows: np.ndarray, first: np.ndarray, last: np.ndarray) -> bool:
    """Every extreme point on one line (one row, or one straight column of single voxels)."""
    points = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(np.int64)
    d = points - points[0]
    moved = np.flatnonzero(d.any(axis=1))
    if moved.size == 0:
        return True
    u = d[moved[0]]
    return not np.any(d[:, 0] * u[1] - d[:, 1] * u[0])


def skull_envelope(hu: np.ndarray, body: np.ndarray, bone_hu: float) -> np.ndarray:
    """Non-bone voxels inside each axial slice's convex hull of the skull (axis 0 must be superior).

    Only bone inside ``body`` counts: head holders and boards lie apart from the patient.
    """
    bone = (hu > bone_hu) & body
    out = np.zeros(hu.shape, dtype=bool)
    for k in np.flatnonzero(bone.any(axis=(1, 2))):
        out[k] = _hull(bone[k]) & ~bone[k]
    return out


def metal_band(hu: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Per axial slice (axis 0 superior): whether it lies within ``STREAK_BAND_MM`` of a voxel of metal."""
    metal = np.flatnonzero(hu.max(axis=(1, 2)) >= METAL_HU)  # no boolean temporary: 2x faster than (hu >= x).any()
    band = np.zeros(hu.shape[0], dtype=bool)
    reach = int(np.ceil(STREAK_BAND_MM / float(spacing[0])))
    for k in metal:
        band[max(int(k) - reach, 0): int(k) + reach + 1] = True
    return band


def keep_streaks(side: np.ndarray, hu: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``side`` plus, in the slices near metal, every voxel within the convex hull of its brain-like voxels
    (added to ``side`` in place, and returned).

    Metal (a plate or screws in the frontal bone, dental fillings) casts straight lines through its slices,
    alternately dark and hundreds of HU bright. A bright line across the brain reads as bone, a dark one as
    air: the cavity, the envelope and the brain-like columns under it leave them out, and in front of the cut
    plane the forehead rule would take them, brain under the artefact (issue 11: ~3 cc of the Brain ROI
    behind a forehead plate on the phantom, dark lines in the frontal lobes of the real head). The lines
    split a slice's brain into wedges; the hull of the wedges spans the lines between them, up to the inner
    table, which stays outside it (the brain's section is convex there, the skull round it). Slices without
    metal near are left as they are. An opening of the bone (lines are narrower than the skull) was tried
    first: a disc wide enough to take the lines out also takes thin skull, and the hull then cuts into the
    brain.
    """
    for k in np.flatnonzero(metal_band(hu, spacing)):
        wedges = side[k] & (hu[k] >= PARTIAL_BRAIN_HU[0]) & (hu[k] <= PARTIAL_BRAIN_HU[1])
        if wedges.any():
            side[k] |= _hull(wedges)
    return side


def brain_side(hu: np.ndarray, body: np.ndarray, spacing: np.ndarray, bone_hu: float, s_from: int,
               s_envelope: int, a_from: int = 0) -> np.ndarray:
    """What removal must never touch, on an anatomical view's grid (axes superior, anterior, left).

    From view slice ``s_from`` up, the cranial cavity (`cranial_cavity`), found in the
    whole head (not in the eye band alone: closed at its lowest slice, the nasal cavity
    would count as enclosed, and its turbinates, kept, stand out of the cut surface
    like a face). From ``ORBIT_ROOF_MM`` above ``s_envelope`` (the slice above the
    eyes) up, the skull's envelope (`skull_envelope`), which spans a skull defect;
    below that, brain-like voxels straight under it down to the orbital roofs; and
    soft tissue touching the cavity (partial volume).
    """
    out = np.zeros(hu.shape, dtype=bool)
    s_from = max(int(s_from), 0)
    s_envelope = max(int(s_envelope) + int(np.ceil(ORBIT_ROOF_MM / float(spacing[0]))), 0)
    if s_from >= hu.shape[0]:
        return out
    out[s_from:] = cranial_cavity(hu[s_from:], body[s_from:], spacing, bone_hu)
    if s_envelope < hu.shape[0]:
        out[s_envelope:] |= skull_envelope(hu[s_envelope:], body[s_envelope:], bone_hu)
    # The rest only matters where removal may happen, anterior of view index ``a_from``.
    front = out[:, max(int(a_from) - 1, 0):]
    hu_front = hu[:, max(int(a_from) - 1, 0):]
    # Between the eyes and the envelope the frontal lobes lie on the orbital roofs: brain-like voxels straight
    # below the brain side are brain until bone (the roof), air or fat (sinus, orbit) interrupts the column.
    for k in range(min(s_envelope, hu.shape[0]) - 1 if s_envelope < hu.shape[0] else -1, s_from - 1, -1):
        front[k] |= front[k + 1] & (hu_front[k] >= PARTIAL_BRAIN_HU[0]) & (hu_front[k] <= PARTIAL_BRAIN_HU[1])
    # Near metal, what the brain's wedges span (streaks bright and dark) is brain side too.
    keep_streaks(out[s_from:], hu[s_from:], spacing)  # in place: a view of the slab
    # A soft-tissue voxel touching the cranial cavity (its largest part, not a sinus pocket) is partly brain
    # (partial volume at a thin sinus roof): it stays too. Fat and air round the skull are not brain.
    # Worked in the box of the brain side grown by the dilation's one voxel (clipped to the array): every
    # component lies in it, ``label`` numbers them in the same raster order (a translation keeps it), so the
    # largest is the same one, and its dilation never reaches past the box. Outside, nothing changes.
    brain = front[s_from:]
    box = bounding_box(brain, 1)
    if box is None:
        return out
    cavity = largest_component(brain[box])
    hu_box = hu_front[s_from:][box]
    soft = (hu_box >= PARTIAL_BRAIN_HU[0]) & (hu_box <= PARTIAL_BRAIN_HU[1])
    brain[box] |= ndimage.binary_dilation(cavity) & soft
    return out
