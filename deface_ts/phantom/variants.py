"""Scans of a head as real acquisitions vary them: the head pitched, thick or coarse slices, a cut field of view.

Each variant is a CT `Volume` in, a CT `Volume` out, with landmark points (LPS, mm) carried along where the
variant moves them, so a test knows where the eyes are afterwards. They work on the phantom and on a real head
alike; the locators' tests use them to show that one set of parameters survives what real scans do.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from deface_ts.geometry.volume import ANTERIOR, LEFT, SUPERIOR, Volume

AIR_HU = -1000.0


def pitched(ct: Volume, degrees: float, points: dict[str, np.ndarray], centre_mm: np.ndarray | None = None
            ) -> tuple[Volume, dict[str, np.ndarray]]:
    """The head rotated about the patient's left-right axis on the same grid: + flexes (chin to chest), - extends.

    A rigid rotation in patient millimetres (so anisotropic voxels stay honest), about ``centre_mm``
    (default: the grid's centre); air comes in where the rotation leaves the grid. Returns the
    rotated CT and ``points`` moved with it.
    """
    rotation = rotation_about(LEFT, np.radians(degrees))
    centre = ct.index_to_lps(((np.array(ct.shape) - 1) / 2.0)[None])[0] if centre_mm is None else centre_mm
    # output voxel -> LPS -> rotated back -> input voxel: one affine map in index space
    inverse = np.linalg.inv(ct.affine)
    matrix = inverse[:3, :3] @ rotation.T @ ct.affine[:3, :3]
    offset = inverse[:3, :3] @ (rotation.T @ (ct.affine[:3, 3] - centre) + centre) + inverse[:3, 3]
    hu = ndimage.affine_transform(ct.array.astype(np.float32), matrix, offset, order=1, cval=AIR_HU)
    moved = {name: rotation @ (np.asarray(p, dtype=float) - centre) + centre for name, p in points.items()}
    return ct.with_array(hu.astype(np.float32)), moved


def rotation_about(axis: np.ndarray, radians: float) -> np.ndarray:
    """3x3 right-handed rotation by ``radians`` about a unit ``axis`` (Rodrigues).

    About LEFT (+x in LPS), a positive angle turns ANTERIOR (-y) towards INFERIOR (-z): the nose goes down.
    """
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(radians) * k + (1.0 - np.cos(radians)) * k @ k


def coarse(ct: Volume, factors: tuple[int, int, int]) -> Volume:
    """Blocks of ``factors`` voxels (slice, row, column) averaged into one, as a scanner reconstructs thicker voxels.

    The block's centre is the new voxel's centre, so points keep their coordinates.
    """
    f = np.asarray(factors, dtype=int)
    n = np.array(ct.shape) // f
    hu = ct.array[:n[0] * f[0], :n[1] * f[1], :n[2] * f[2]].astype(np.float32)
    hu = hu.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5))
    affine = ct.affine.copy()
    affine[:3, :3] = ct.affine[:3, :3] * f
    affine[:3, 3] = ct.index_to_lps(((f - 1) / 2.0)[None])[0]
    return Volume(hu, affine)


def to_spacing(ct: Volume, mm: tuple[float, float, float]) -> Volume:
    """`coarse` with the whole-voxel factors nearest to a target spacing (slice, row, column) in mm."""
    factors = np.maximum(1, np.rint(np.asarray(mm, dtype=float) / ct.spacing)).astype(int)
    return coarse(ct, (int(factors[0]), int(factors[1]), int(factors[2])))


def cut_field(ct: Volume, above_mm: float | None = None, below_mm: float | None = None) -> Volume:
    """Only the slices whose centres lie between ``below_mm`` and ``above_mm`` on the superior axis (None: no limit).

    A planning scan of the neck can start at the brow, one of the brain can stop at the lips: the
    grid ends there, as the scanner's range did.
    """
    axis, _ = ct.axis_of(SUPERIOR)
    if axis != 0:
        raise ValueError(f"cut_field cuts slices; the superior axis is array axis {axis}, not the slice axis")
    height = ct.index_to_lps(np.stack([np.arange(ct.shape[0]), np.zeros(ct.shape[0]), np.zeros(ct.shape[0])], 1))
    height = height @ SUPERIOR
    keep = np.ones(ct.shape[0], dtype=bool)
    if above_mm is not None:
        keep &= height <= above_mm
    if below_mm is not None:
        keep &= height >= below_mm
    kept = np.flatnonzero(keep)
    if kept.size == 0:
        raise ValueError(f"no slice lies between {below_mm} and {above_mm} mm")
    return ct.crop((slice(int(kept[0]), int(kept[-1]) + 1), slice(None), slice(None)))


def metal_streaks(ct: Volume, metal_mm: list[np.ndarray], *, spread_mm: float = 6.0, streaks: int = 12,
                  amplitude_hu: float = 1000.0, width_mm: float = 1.5, falloff_mm: float = 80.0,
                  metal_radius_mm: float = 2.5, seed: int = 0) -> Volume:
    """Dental metal (fillings, crowns) and the streaks it casts: alternately bright and dark lines through it.

    Filtered back-projection smears the photon starvation behind metal into straight lines radiating
    from it in the reconstruction plane, dark along the most attenuated paths and bright beside them,
    hundreds to a thousand HU strong, fading with distance. The lines lie in the slices through the
    metal (within ``spread_mm`` of it: slice sensitivity and helical interpolation), so on a head
    extended on the head rest the fillings' slices cross the skull base. The angles are random
    (``seed``); the signs alternate, so dark streaks cut into bone and bright ones draw bone-dense
    lines through soft tissue and brain.
    """
    axis, _ = ct.axis_of(SUPERIOR)
    if axis != 0:
        raise ValueError(f"metal_streaks works in axial slices; the superior axis is array axis {axis}")
    hu = ct.array.astype(np.float32).copy()
    left, anterior = ct.axis_coordinate(LEFT)[0], ct.axis_coordinate(ANTERIOR)[0]  # in-plane, the same per slice
    height = ct.axis_coordinate(SUPERIOR)[:, 0, 0]
    angles = np.random.default_rng(seed).uniform(0.0, np.pi, streaks)
    for point in metal_mm:
        dx, dy = left - float(point @ LEFT), anterior - float(point @ ANTERIOR)
        fade = np.exp(-np.hypot(dx, dy) / falloff_mm)
        pattern = np.zeros(left.shape, dtype=np.float32)
        for n, angle in enumerate(angles):
            across = dx * np.sin(angle) - dy * np.cos(angle)  # distance from the line through the metal
            sign = -1.0 if n % 2 == 0 else 1.0
            pattern += (sign * amplitude_hu * np.exp(-0.5 * (across / width_mm) ** 2) * fade).astype(np.float32)
        hu[np.abs(height - float(point @ SUPERIOR)) <= spread_mm] += pattern
        metal = np.hypot(dx, dy)[None] ** 2 + (height - float(point @ SUPERIOR))[:, None, None] ** 2
        hu[metal <= metal_radius_mm**2] = 3071.0  # the metal itself, saturated
    return ct.with_array(np.clip(hu, -1024.0, 3071.0))
