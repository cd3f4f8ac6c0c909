"""Eye landmarks found in the CT itself: no weights, no ROIs, no render (``--method eyes``, source ``ct``).

The globes are balls of water (the vitreous, 0-40 HU) of radius ~12 mm, each
sitting in orbital fat inside a bony orbit, the pair side by side 55-70 mm apart
near the front of the face. The search runs on a coarse grid (~2 mm blocks,
built in the anatomical view so HFS, HFP, FFS and FFP scans are searched alike):

1. per block, the fraction of water, fat and bone voxels (full-resolution
   thresholds, block means: a 1 mm orbital wall still counts);
2. per candidate centre, the water fraction in a ball of 0.6 globe radius (clear
   of the lens) and the fat fraction in a shell just outside the globe's
   posterior half (brain, muscle and glands have no fat around them);
3. local maxima become candidates; pairs must lie side by side at an adult
   interocular distance, roll and yaw limited (`pair_problems`), each eye under
   the anterior skin with bone over it (the orbital roof) (`eye_problems`);
4. the best pair's centres are refined on the full grid (`find_globe`).

A pair that fails any check is refused: the locator raises PrivacyError naming
what was wrong with the best candidates, and never returns a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from deface_ts.errors import PrivacyError
from deface_ts.geometry.view import AnatomicalView
from deface_ts.geometry.volume import Volume
from deface_ts.locate.base import Eye, FaceLocation
from deface_ts.locate.render import FAT_HU, sphere_mask

#: Centre-to-centre distance of the globes: adults 55-70 mm; the bounds leave room for children and noise.
EYE_DISTANCE_MM = (48.0, 80.0)
#: The two globes of a head rolled or turned on the head rest are still within this of each other (mm)
#: along the superior and anterior axes (a 10° roll moves one 62 mm-apart eye ~11 mm).
EYE_OFFSET_MM = 14.0
#: The skin over the globe's centre: globe radius (12) + lid (2-4) + slack for swollen lids or a mask.
SKIN_IN_FRONT_MM = (8.0, 32.0)
#: The orbital roof lies over each globe: bone within this distance (mm) above the globe's surface.
ROOF_ABOVE_MM = 14.0
BONE_HU = 250.0
#: The vitreous is 99 % water: 0-20 HU on a calibrated scanner (14 +- 9 HU per voxel in the real head of the
#: tests). Muscle (extraocular, facial, masseter) is 40-60 HU, so the band stops between the two: a cheek of
#: muscle under subcutaneous fat is not a globe. (The render locator's wider band only has to tell the globe
#: from the fat around it.)
WATER_HU = (-25.0, 35.0)
#: Candidates must hold at least this much water in the inner ball and fat behind the globe.
MIN_WATER, MIN_FAT = 0.7, 0.15


@dataclass
class Candidate:
    """A possible globe centre on the coarse grid: view index, (S, A, L) mm, and its two fractions."""

    index: tuple[int, int, int]
    sal_mm: np.ndarray
    water: float
    fat: float

    @property
    def score(self) -> float:
        return self.water + min(self.fat, 0.5)


@dataclass
class CtEyeLocator:
    """Eyes from the globes' fluid density in their fat-filled orbits (see the module docstring).

    Attributes
    ----------
    eye_radius_mm
        Radius of the globe (adult: 11-13 mm): the kernels' size and the sphere drawn as each eye.
    grid_mm
        Block size of the coarse search grid.
    min_confidence
        Pairs scoring below this (`confidence`, 0-1) are refused.
    name
        The method name recorded in the report.
    """

    eye_radius_mm: float = 12.0
    grid_mm: float = 2.0
    min_confidence: float = 0.5
    name: str = "eyes"

    def locate(self, ct: Volume) -> FaceLocation:
        try:
            view = AnatomicalView.of(ct)
        except ValueError as exc:
            raise PrivacyError(f"CT eye finder: {exc}. Nothing was written.") from None
        grid = CoarseGrid.of(ct, view, self.grid_mm)
        candidates = find_candidates(grid, self.eye_radius_mm)
        pair, problems = best_pair(grid, candidates, self.eye_radius_mm)
        if pair is None:
            raise PrivacyError("CT eye finder found no pair of eye globes"
                               + (f" ({'; '.join(problems[:4])})" if problems else " (no fluid ball in fat)")
                               + ". Nothing was written.")
        score = confidence(pair)
        if score < self.min_confidence:
            raise PrivacyError(f"CT eye finder: best pair has confidence {score:.2f} (< {self.min_confidence:g}); "
                               "refused. Nothing was written.")
        return self._location(ct, grid, pair, score)

    def _location(self, ct: Volume, grid: CoarseGrid, pair: tuple[Candidate, Candidate], score: float) -> FaceLocation:
        centres = [grid.lps(c) for c in pair]
        left_first = centres[0][0] > centres[1][0]  # LPS +x is the patient's left
        eyes, moved = [], []
        for side, centre in zip(("left", "right") if left_first else ("right", "left"), centres):
            # Refine on the full grid: the coarse centre is good to about a block.
            refined = refine_centre(ct, centre, self.eye_radius_mm)
            if refined is not None:
                moved.append(f"{side} {np.linalg.norm(refined - centre):.1f} mm")
                centre = refined
            eyes.append(Eye("ct", side, centre, sphere_mask(ct, centre, self.eye_radius_mm)))
        eyes.sort(key=lambda e: e.side)
        distance = float(np.linalg.norm(eyes[0].centre_mm - eyes[1].centre_mm))
        notes = [(f"eyes from the CT (globe finder): confidence {score:.2f}, centres {distance:.0f} mm apart, "
                  f"water {pair[0].water:.2f}/{pair[1].water:.2f}, fat behind {pair[0].fat:.2f}/{pair[1].fat:.2f}"),
                 "refined on the full grid (moved by): " + (", ".join(moved) or "not refined")]
        return FaceLocation(self.name, eyes, notes=notes)


@dataclass
class CoarseGrid:
    """Block fractions of water, fat and bone (and body) in the anatomical view (S, A, L axes)."""

    water: np.ndarray
    fat: np.ndarray
    bone: np.ndarray
    body: np.ndarray
    step_mm: np.ndarray  # block size along S, A, L
    origin_mm: np.ndarray  # (S, A, L) mm of block (0, 0, 0)'s centre
    view: AnatomicalView
    ct: Volume
    stride: np.ndarray  # view voxels per fine sample along S, A, L
    offset: np.ndarray  # view voxel of block (0, 0, 0)'s first sample (the crop behind the face)

    @classmethod
    def of(cls, ct: Volume, view: AnatomicalView, grid_mm: float) -> CoarseGrid:
        spacing = np.array([ct.spacing[a] for a in view.axes])
        # Sub-millimetre pixels are sampled every ~1 mm first: a globe is 24 mm across, and a 1 mm orbital
        # roof still shows in a 1 mm sample. This keeps a 512x512 head within the time budget.
        stride = np.maximum(np.floor(1.0 / spacing + 1e-6).astype(int), 1)
        factors = np.maximum(np.rint(grid_mm / (spacing * stride)).astype(int), 1)
        hu = view.view(ct.array)
        box = _search_box(hu, spacing)
        offset = np.array([b.start for b in box])
        hu = hu[box][:: stride[0], :: stride[1], :: stride[2]]
        shape = np.array(hu.shape) // factors
        hu = hu[: shape[0] * factors[0], : shape[1] * factors[1], : shape[2] * factors[2]]
        blocks = _classes(hu).reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
        blocks = blocks.transpose(0, 2, 4, 1, 3, 5).reshape(*shape, -1)
        total = float(blocks.shape[-1])

        def fraction(value: int) -> np.ndarray:
            return np.count_nonzero(blocks == value, axis=-1).astype(np.float32) / total

        step = factors * stride * spacing
        origin = (np.array([c[0] for c in view.coordinates]) + offset * spacing
                  + (factors - 1) / 2.0 * stride * spacing)
        return cls(fraction(1), fraction(2), fraction(3), fraction(4) < 0.5, step, origin, view, ct, stride, offset)

    def sal(self, index) -> np.ndarray:
        return self.origin_mm + np.asarray(index, dtype=float) * self.step_mm

    def lps(self, candidate: Candidate) -> np.ndarray:
        """Candidate centre in LPS mm, through the view's axes and the CT's affine."""
        full = np.zeros(3)
        steps = self.step_mm / np.array([self.ct.spacing[a] for a in self.view.axes])
        for n, (axis, flip) in enumerate(zip(self.view.axes, self.view.flips)):
            # block centre in view voxel units: blocks of ``steps`` voxels sampled every ``stride``
            position = (self.offset[n] + candidate.index[n] * steps[n]
                        + (steps[n] / self.stride[n] - 1) / 2.0 * self.stride[n])
            full[axis] = self.ct.shape[axis] - 1 - position if flip else position
        return self.ct.index_to_lps(full[None])[0]


#: The globes' centres lie at most ~45 mm behind the most anterior point of the head (the nose tip, or a mask
#: a few mm in front of it); the search keeps this much, which also holds the fat shell behind them.
FRONT_DEPTH_MM = 90.0
#: Voxel classes: 0 other, 1 water, 2 fat, 3 bone, 4 air.
_AIR_HU = -400.0


def _classify(hu: np.ndarray) -> np.ndarray:
    label = np.zeros(hu.shape, dtype=np.uint8)
    label[(hu >= WATER_HU[0]) & (hu <= WATER_HU[1])] = 1
    label[(hu >= FAT_HU[0]) & (hu < FAT_HU[1])] = 2
    label[hu > BONE_HU] = 3
    label[hu <= _AIR_HU] = 4
    return label


#: int16 HU (most CTs) are classified by one table lookup instead of eight comparisons per voxel.
_INT16_CLASSES = _classify(np.arange(65536, dtype=np.uint16).view(np.int16))


def _classes(hu: np.ndarray) -> np.ndarray:
    if hu.dtype == np.int16:
        return _INT16_CLASSES[hu.view(np.uint16)]
    return _classify(hu)


def _search_box(hu: np.ndarray, spacing: np.ndarray) -> tuple[slice, slice, slice]:
    """The part of the view worth searching: the body's extent (+ a margin), ``FRONT_DEPTH_MM`` deep.

    Found on a ~4 mm sample; a few voxels per plane are needed, so noise specks in the air do not count.
    """
    step = np.maximum(np.rint(4.0 / spacing).astype(int), 1)
    sample = hu[:: step[0], :: step[1], :: step[2]] > _AIR_HU
    margin = np.ceil(20.0 / spacing).astype(int)
    box = []
    for axis in range(3):
        planes = np.flatnonzero(sample.sum(axis=tuple(a for a in range(3) if a != axis)) >= 3)
        if planes.size == 0:
            return (slice(None),) * 3
        first, last = int(planes[0]) * step[axis], int(planes[-1]) * step[axis]
        if axis == 1:  # anterior: from the front of the head back
            first = last - int(np.ceil(FRONT_DEPTH_MM / spacing[1]))
        box.append(slice(max(first - margin[axis], 0), min(last + step[axis] + margin[axis], hu.shape[axis])))
    return tuple(box)  # type: ignore[return-value]


def refine_centre(ct: Volume, estimate_mm: np.ndarray, radius_mm: float, steps: int = 6) -> np.ndarray | None:
    """Mean shift on the full grid: the centroid of the vitreous voxels within one globe radius, repeated.

    A ball of the globe's own size around an estimate off by d holds the
    globe's water on one side and fat or bone on the other, so its water
    centroid lies about d/2 closer to the true centre (a smaller ball would sit
    still anywhere inside the globe). The lens, denser than the vitreous, is
    left out and pulls the result back by well under a millimetre. None when
    the ball holds too little water (the coarse estimate stays).
    """
    reach = np.ceil((radius_mm + 4.0) / ct.spacing).astype(int)
    centre = np.asarray(estimate_mm, dtype=float)
    index = np.rint(ct.lps_to_index(centre[None])[0]).astype(int)
    lo, hi = np.maximum(index - reach, 0), np.minimum(index + reach + 1, ct.shape)
    if np.any(hi <= lo):
        return None
    box = ct.array[tuple(slice(a, b) for a, b in zip(lo, hi))]
    water = np.argwhere((box >= WATER_HU[0]) & (box <= WATER_HU[1])) + lo
    if len(water) == 0:
        return None
    points = ct.index_to_lps(water)
    for _ in range(steps):
        near = np.linalg.norm(points - centre, axis=1) <= radius_mm
        ball = 4.0 / 3.0 * np.pi * radius_mm**3 / float(np.prod(ct.spacing))
        if near.sum() < 0.5 * ball:
            return None
        centre = points[near].mean(axis=0)
    return centre


def _ball_offsets(step_mm: np.ndarray, radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    reach = np.ceil(radius_mm / step_mm).astype(int)
    grids = np.meshgrid(*(np.arange(-r, r + 1) * s for r, s in zip(reach, step_mm)), indexing="ij")
    return np.stack(grids, axis=-1), np.sqrt(sum(g**2 for g in grids))


def find_candidates(grid: CoarseGrid, radius_mm: float, keep: int = 24) -> list[Candidate]:
    """Local maxima of water-in-ball + fat-behind-globe, strongest first."""
    mm, distance = _ball_offsets(grid.step_mm, radius_mm + 5.0)
    inner = distance <= 0.6 * radius_mm
    # View axis 1 is anterior: "behind" is a negative offset along it.
    shell = (distance > radius_mm + 0.5) & (distance <= radius_mm + 5.0) & (mm[..., 1] < 0)
    # float32 kernels keep the FFTs in single precision (fractions need no more)
    water_in = signal.fftconvolve(grid.water, (inner / inner.sum())[::-1, ::-1, ::-1].astype(np.float32), mode="same")
    fat_behind = signal.fftconvolve(grid.fat, (shell / shell.sum())[::-1, ::-1, ::-1].astype(np.float32), mode="same")
    score = water_in + np.minimum(fat_behind, 0.5)
    score[(water_in < MIN_WATER) | (fat_behind < MIN_FAT) | ~grid.body] = 0.0
    size = np.maximum(np.rint(radius_mm / grid.step_mm).astype(int), 1) * 2 + 1
    peaks = (score > 0) & (score == ndimage.maximum_filter(score, size=tuple(size)))
    index = np.argwhere(peaks)
    order = np.argsort(score[tuple(index.T)])[::-1][:keep]
    found = []
    for n in order:
        s, a, l = (int(v) for v in index[n])
        found.append(Candidate((s, a, l), grid.sal(index[n]), float(water_in[s, a, l]), float(fat_behind[s, a, l])))
    return found


def pair_problems(a: Candidate, b: Candidate) -> list[str]:
    """Why two candidates are not a left-right pair of globes; empty when they are."""
    delta = np.abs(a.sal_mm - b.sal_mm)  # superior, anterior, left
    distance = float(np.linalg.norm(delta))
    problems = []
    if not EYE_DISTANCE_MM[0] <= distance <= EYE_DISTANCE_MM[1]:
        problems.append(f"{distance:.0f} mm apart (expected {EYE_DISTANCE_MM[0]:g}-{EYE_DISTANCE_MM[1]:g})")
    if delta[0] > EYE_OFFSET_MM or delta[1] > EYE_OFFSET_MM:
        problems.append(f"not side by side ({delta[0]:.0f} mm apart vertically, {delta[1]:.0f} mm front to back)")
    return problems


def eye_problems(grid: CoarseGrid, c: Candidate, radius_mm: float) -> list[str]:
    """Why one candidate is not a globe in an orbit (skin in front, orbital roof above); empty when it is."""
    s, a, l = c.index
    problems = []
    front = np.flatnonzero(grid.body[s, a:, l])  # along the anterior axis from the centre
    skin_mm = (front[-1] + 0.5) * grid.step_mm[1] if front.size else 0.0
    if not SKIN_IN_FRONT_MM[0] <= skin_mm <= SKIN_IN_FRONT_MM[1]:
        problems.append(f"skin {skin_mm:.0f} mm in front of the centre (expected {SKIN_IN_FRONT_MM[0]:g}-"
                        f"{SKIN_IN_FRONT_MM[1]:g})")
    reach = int(np.ceil((radius_mm + ROOF_ABOVE_MM) / grid.step_mm[0]))
    lo_l, hi_l = max(l - 1, 0), l + 2
    above = grid.bone[s + 1 : s + reach + 1, max(a - 2, 0) : a + 3, lo_l:hi_l]
    if not (above > 0.15).any():
        problems.append(f"no bone within {ROOF_ABOVE_MM:g} mm above the globe (orbital roof)")
    return problems


def best_pair(grid: CoarseGrid, candidates: list[Candidate],
              radius_mm: float) -> tuple[tuple[Candidate, Candidate] | None, list[str]]:
    """The highest-scoring pair that passes every anatomy check, and what was wrong with better ones."""
    pairs = [(a, b) for n, a in enumerate(candidates) for b in candidates[n + 1:]]
    pairs.sort(key=lambda p: -(p[0].score + p[1].score))
    problems: list[str] = []
    for a, b in pairs:
        trouble = pair_problems(a, b)
        if not trouble:
            trouble = [f"{side} eye: {p}" for side, c in (("one", a), ("other", b)) for p in eye_problems(grid, c, radius_mm)]
        if not trouble:
            return (a, b), problems
        if len(problems) < 8:
            problems.append(f"pair at {_mm(a.sal_mm)}/{_mm(b.sal_mm)} (superior, anterior, left mm): {', '.join(trouble)}")
    return None, problems


def confidence(pair: tuple[Candidate, Candidate]) -> float:
    """0-1: both globes full of water and wrapped in fat behind, and alike (a real pair is symmetric)."""
    per_eye = [0.5 * min(1.0, (c.water - 0.5) / 0.4) + 0.5 * min(1.0, c.fat / 0.4) for c in pair]
    return float(max(0.0, min(per_eye)) * (1.0 - min(1.0, abs(per_eye[0] - per_eye[1]))))


def _mm(point: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in point) + ")"
