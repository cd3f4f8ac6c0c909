"""Orthographic cameras about the patient's superior axis (tilted up or down for a pitched head), their renders, shading.

Every render keeps its depth map and camera, so a pixel maps back to the LPS
point it shows (to back-project 2-D landmarks) and an LPS point to its pixel.
Skin tone, background and margin were measured on the phantom: docs/calibration.md, "Renders".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from deface_ts.errors import BlankRenderError
from deface_ts.geometry.volume import ANTERIOR, LEFT, SUPERIOR, Volume

SKIN_RGB = np.array([224.0, 186.0, 160.0])
BACKGROUND_RGB = np.array([128.0, 128.0, 128.0])
PAD_MM = 60.0


@dataclass
class Render:
    """One view of the skin surface.

    Attributes
    ----------
    angle
        Degrees about the superior axis (0 = anterior, +90 = the patient's left).
    image
        (H, W, 3) uint8 RGB, row 0 at the top (superior).
    depth
        (H, W) float32 distance (mm) from the image plane along ``ray`` to the
        surface; NaN where the ray hits nothing.
    origin
        LPS point (mm) on the image plane at the centre of pixel (row 0, column 0).
    right, down, ray
        LPS unit vectors of increasing column, increasing row and the viewing direction.
    pixel_mm
        Pixel size (mm), the same along rows and columns (orthographic camera).
    backend
        "vtk" or "numpy".
    pitch
        Degrees the camera is tilted about its horizontal axis: + looks at the face from below, as a head
        flexed chin-to-chest by that much must be seen to be frontal; 0 keeps the superior axis up.
    """

    angle: float
    image: np.ndarray
    depth: np.ndarray
    origin: np.ndarray
    right: np.ndarray
    down: np.ndarray
    ray: np.ndarray
    pixel_mm: float
    backend: str
    pitch: float = 0.0

    @property
    def mask(self) -> np.ndarray:
        """Pixels whose ray hits the skin."""
        return np.isfinite(self.depth)

    @property
    def points(self) -> np.ndarray:
        """(H, W, 3) LPS point (mm) shown by each pixel; NaN on the background."""
        rows, cols = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in self.depth.shape), indexing="ij")
        return (self.origin + cols[..., None] * self.pixel_mm * self.right
                + rows[..., None] * self.pixel_mm * self.down + self.depth[..., None] * self.ray)

    def pixel_to_lps(self, xy: np.ndarray) -> np.ndarray:
        """Back-project (N, 2) pixel positions (x = column, y = row, floats) onto the surface.

        The depth is taken from the nearest pixel (a bilinear blend would mix the
        face with the background at the silhouette); NaN where it shows no surface.
        """
        xy = np.atleast_2d(np.asarray(xy, dtype=np.float64))
        h, w = self.depth.shape
        col = np.clip(np.rint(xy[:, 0]).astype(int), 0, w - 1)
        row = np.clip(np.rint(xy[:, 1]).astype(int), 0, h - 1)
        depth = self.depth[row, col].astype(np.float64)
        return (self.origin + xy[:, :1] * self.pixel_mm * self.right + xy[:, 1:2] * self.pixel_mm * self.down
                + depth[:, None] * self.ray)

    def lps_to_pixel(self, points: np.ndarray) -> np.ndarray:
        """Project (N, 3) LPS points to (N, 2) pixel positions (x = column, y = row)."""
        rel = np.atleast_2d(np.asarray(points, dtype=np.float64)) - self.origin
        return np.stack([rel @ self.right, rel @ self.down], axis=1) / self.pixel_mm


@dataclass(frozen=True)
class Camera:
    """An orthographic camera looking along ``ray`` with the patient's superior axis up (tilted by ``pitch``)."""

    angle: float
    origin: np.ndarray  # LPS of pixel (0, 0) on the image plane (the plane touches the field's bounds)
    right: np.ndarray
    down: np.ndarray
    ray: np.ndarray
    pixel_mm: float
    shape: tuple[int, int]  # (H, W)
    depth_range: float  # mm from the image plane to the far side of the field
    pitch: float = 0.0  # degrees; + sees the face from below (a flexed head), - from above (an extended one)

    @classmethod
    def around(cls, field: Volume, angle: float, pixel_mm: float, pad_mm: float = PAD_MM,
               pitch: float = 0.0) -> Camera:
        theta, phi = np.radians(angle), np.radians(pitch)
        level = np.cos(theta) * ANTERIOR + np.sin(theta) * LEFT
        # Tilting about the camera's horizontal axis: a head flexed by phi turns its face's normal from
        # anterior towards inferior, and its superior axis towards anterior, by the same phi.
        towards_camera = np.cos(phi) * level - np.sin(phi) * SUPERIOR
        up = np.cos(phi) * SUPERIOR + np.sin(phi) * level
        ray = -towards_camera
        down = -up
        right = np.cross(ray, up)  # the patient's left at 0°: we face the patient
        lps = corners_lps(field)
        u, v, t = lps @ right, lps @ down, lps @ ray
        pad_px = int(np.ceil(pad_mm / pixel_mm))
        width = int(np.ceil((u.max() - u.min()) / pixel_mm)) + 2 * pad_px
        height = int(np.ceil((v.max() - v.min()) / pixel_mm)) + 2 * pad_px
        origin = ((u.min() - (pad_px - 0.5) * pixel_mm) * right + (v.min() - (pad_px - 0.5) * pixel_mm) * down
                  + (t.min() - 1.0) * ray)
        return cls(float(angle), origin, right, down, ray, float(pixel_mm), (height, width),
                   float(t.max() - t.min() + 2.0), float(pitch))

    @classmethod
    def like(cls, other: Render, field: Volume) -> Camera:
        """The camera of an earlier render (same pixels), its image plane moved in front of ``field``."""
        t = corners_lps(field) @ other.ray
        plane = min(float(other.origin @ other.ray), float(t.min()) - 1.0)
        origin = other.origin + (plane - other.origin @ other.ray) * other.ray
        return cls(other.angle, origin, other.right, other.down, other.ray, other.pixel_mm, other.depth.shape,
                   float(t.max()) - plane + 1.0, other.pitch)


def corners_lps(field: Volume) -> np.ndarray:
    """The 8 outer corners (voxel edges, not centres) of the field's grid in LPS."""
    k, j, i = field.shape
    return field.index_to_lps(np.array([[a, b, c] for a in (-0.5, k - 0.5) for b in (-0.5, j - 0.5)
                                        for c in (-0.5, i - 0.5)]))


def shade(depth: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Lambert shading of a depth map: a headlight plus a key light from above, skin coloured.

    The light from above darkens the eye sockets and under the nose and chin as
    in a photograph, which is what the detectors were trained on.
    """
    hit = np.isfinite(depth)
    filled = np.where(hit, depth, np.nanmax(depth) if hit.any() else 0.0)
    smooth = ndimage.gaussian_filter(filled, 0.8)
    gy, gx = np.gradient(smooth, pixel_mm)
    normal = np.stack([gx, gy, np.ones_like(gx)], axis=-1)  # (right, down, towards camera)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    key = np.array([0.0, -0.6, 1.0]) / np.linalg.norm([0.0, -0.6, 1.0])
    diffuse = 0.55 * np.clip(normal[..., 2], 0, 1) + 0.45 * np.clip(normal @ key, 0, 1)
    shade = 0.12 + 0.88 * diffuse
    image = np.where(hit[..., None], shade[..., None] * SKIN_RGB, BACKGROUND_RGB)
    return np.clip(image, 0, 255).astype(np.uint8)


def check_not_blank(render: Render, min_fraction: float = 0.01) -> None:
    """Raise BlankRenderError when a render shows (almost) no surface or a uniform image."""
    covered = float(render.mask.mean())
    if covered < min_fraction:
        raise BlankRenderError(f"{render.backend} render at {render.angle:g}° shows no surface "
                               f"({covered:.1%} of pixels hit)")
    grey = render.image.mean(axis=2)[render.mask]
    if grey.size and float(grey.std()) < 1.0:
        raise BlankRenderError(f"{render.backend} render at {render.angle:g}° is uniform; nothing to verify")
