"""The numpy ray caster: a coarse-to-fine ray march with Lambert shading from the depth map (scipy only).

A dependable fallback where VTK finds no offscreen OpenGL; same cameras, same geometry.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from deface_ts.geometry.volume import Volume
from deface_ts.vision.cameras import Camera, Render, corners_lps, shade
from deface_ts.vision.skin import AIR_HU


def render_numpy(field: Volume, dilated: np.ndarray, camera: Camera, threshold_hu: float,
                  coarse_mm: float = 3.0) -> Render:
    """Ray-march the field: a coarse pass finds each ray's first hit, a fine pass refines it to sub-voxel.

    The coarse pass samples ``dilated`` (the field after a 3x3x3 grey dilation)
    so that structures thinner than its step (the nose's edge, an ear) are not
    stepped over, and it runs only over the pixels where the field projects.
    """
    inverse = np.linalg.inv(field.affine)
    h, w = camera.shape
    voxel = float(field.spacing.min())
    # pixels onto which the field's box projects (the camera's margin is background)
    corners = corners_lps(field) - camera.origin
    xy = np.stack([corners @ camera.right, corners @ camera.down], 1)
    x0, y0 = np.maximum(np.floor(xy.min(axis=0) / camera.pixel_mm).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(xy.max(axis=0) / camera.pixel_mm).astype(int) + 1, (w, h))
    steps = int(np.ceil(camera.depth_range / coarse_mm)) + 1
    # output index (row, column, step) -> input index (k, j, i)
    columns = np.stack([camera.down * camera.pixel_mm, camera.right * camera.pixel_mm, camera.ray * coarse_mm], 1)
    start = camera.origin + x0 * camera.pixel_mm * camera.right + y0 * camera.pixel_mm * camera.down
    # nearest-neighbour sampling is enough here: the dilation already makes the coarse pass conservative
    above = ndimage.affine_transform(dilated, inverse[:3, :3] @ columns, inverse[:3, :3] @ start + inverse[:3, 3],
                                     output_shape=(y1 - y0, x1 - x0, steps), order=0, cval=AIR_HU,
                                     prefilter=False) > threshold_hu
    depth = np.full((h, w), np.nan, dtype=np.float32)
    rows, cols = np.nonzero(above.any(axis=2))
    # The dilated field crosses the threshold up to ~sqrt(3) of the largest voxel side before the skin, and the
    # nearest-neighbour sample half a voxel either way: search that band around the first coarse hit.
    reach = 2.5 * float(field.spacing.max())
    fine_mm = voxel / 2.0
    count = int(np.ceil((coarse_mm + 2.0 * reach) / fine_mm)) + 1
    while rows.size:  # a ray that grazes the dilated field but misses the skin gets its next coarse hit
        first = np.argmax(above[rows, cols], axis=1)
        refined = _refine(field, inverse, camera, rows + y0, cols + x0, (first - 1) * coarse_mm - reach,
                          fine_mm, count, threshold_hu)
        found = np.isfinite(refined)
        depth[rows[found] + y0, cols[found] + x0] = refined[found]
        rows, cols, first = rows[~found], cols[~found], first[~found]
        skip = first + int(np.ceil(reach / coarse_mm)) + 1
        above[rows, cols] &= np.arange(above.shape[2])[None, :] >= skip[:, None]
        again = above[rows, cols].any(axis=1)
        rows, cols = rows[again], cols[again]
    return Render(camera.angle, shade(depth, camera.pixel_mm), depth, camera.origin, camera.right, camera.down,
                  camera.ray, camera.pixel_mm, "numpy", camera.pitch)


def _refine(field: Volume, inverse: np.ndarray, camera: Camera, rows: np.ndarray, cols: np.ndarray,
            start: np.ndarray, fine_mm: float, count: int, threshold_hu: float) -> np.ndarray:
    """First threshold crossing (mm) of each ray within [start, start + count * fine_mm]; NaN if none."""
    # in index space: the ray's first sample plus multiples of one fine step
    plane = (camera.origin + (cols[:, None] * camera.pixel_mm) * camera.right
             + (rows[:, None] * camera.pixel_mm) * camera.down + start[:, None] * camera.ray)
    base = (plane @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.float32)
    step = (inverse[:3, :3] @ camera.ray * fine_mm).astype(np.float32)
    n_steps = np.arange(count, dtype=np.float32)
    coordinates = base.T[:, :, None] + step[:, None, None] * n_steps[None, None, :]
    values = ndimage.map_coordinates(field.array, coordinates.reshape(3, -1), order=1, cval=AIR_HU,
                                     prefilter=False).reshape(len(rows), count)
    inside = values > threshold_hu
    n = np.argmax(inside, axis=1)
    ray = np.arange(len(n))
    before = np.clip(n - 1, 0, None)
    v0, v1 = values[ray, before], values[ray, n]
    rise = np.where(v1 > v0, v1 - v0, 1.0)
    frac = np.where(n > 0, np.clip((threshold_hu - v0) / rise, 0.0, 1.0), 0.0)
    return np.where(inside.any(axis=1), start + (before + frac) * fine_mm, np.nan)
