"""Offscreen renders of the skin of a CT, as a person or a face detector would see the patient.

The skin is the surface at ``threshold_hu`` once the immobilisation mask and the
couch are stripped. The orthographic camera is set in LPS from the affine, never
from array axes, so HFS, HFP, FFS and FFP scans give the same upright views.
Angles rotate about the superior axis: 0° looks at the face from the anterior,
+90° from the patient's left; image columns run to the camera's right (the
patient's left at 0°), rows run inferior.

Backends with the same geometry: ``vtk`` (flying-edges iso-surface, OpenGL
offscreen through EGL or OSMesa, no X server; ~0.1 s a view with Mesa llvmpipe)
and ``numpy`` (a coarse-to-fine ray march with Lambert shading from the depth
map; scipy only). Each render keeps its depth map and camera, so a pixel maps
back to the LPS point it shows (to back-project 2-D landmarks).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage

from deface_ts.errors import PrivacyError
from deface_ts.geometry.volume import ANTERIOR, LEFT, SUPERIOR, Volume, ball, bounding_box

log = logging.getLogger(__name__)

#: The views the verification renders (degrees about the superior axis, + towards the patient's left).
DEFAULT_ANGLES = (0.0, 30.0, -30.0, 45.0, -45.0, 90.0)
#: Skin tone (RGB) of the rendered surface: detectors trained on photographs expect one.
SKIN_RGB = np.array([224.0, 186.0, 160.0])
#: Mid-grey background and a wide margin around the head: on the phantom, all four detectors found the face
#: in more views this way than on black or white or with the head filling the image (most photographs
#: show a face with some context around it).
BACKGROUND_RGB = np.array([128.0, 128.0, 128.0])
PAD_MM = 60.0
AIR_HU = -1000.0


class BlankRenderError(PrivacyError):
    """A render shows no surface (or a uniform image): nothing could be verified, so fail closed."""


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

    @property
    def mask(self) -> np.ndarray:
        """Pixels whose ray hits the skin."""
        return np.isfinite(self.depth)

    @property
    def points(self) -> np.ndarray:
        """(H, W, 3) LPS point (mm) shown by each pixel; NaN on the background."""
        rows, cols = np.indices(self.depth.shape, dtype=np.float64)
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


# ------------------------------------------------------------------------------------------ skin surface
def strip_immobilisation(hu: np.ndarray, spacing: np.ndarray | tuple[float, float, float], *,
                         threshold_hu: float = -300.0, opening_mm: float = 3.0, margin_mm: float = 2.0,
                         work_mm: float = 2.0) -> np.ndarray:
    """Patient skin mask without the thermoplastic mask, the couch and the head rest.

    The shell is a perforated sheet 2–3 mm thick a few mm in front of the skin:
    an opening wider than the sheet removes it, the largest connected component
    drops the couch. Both run on a ``work_mm`` grid (they only decide which
    object is the patient); the result is the full-resolution threshold within
    ``margin_mm`` of that object, so the face keeps its detail.

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

    Returns
    -------
    numpy.ndarray
        bool mask on the CT grid.
    """
    spacing = np.asarray(spacing, dtype=float)
    above = hu > threshold_hu
    if not above.any():
        return above
    box = bounding_box(above, margin=1)
    crop = above[box]
    factors = np.maximum(1, np.floor(work_mm / spacing + 1e-6)).astype(int)
    coarse = _block_mean(crop, factors) > 0.5  # a thin sheet averages below one half and thins out here
    coarse_spacing = spacing * factors
    # Opening by a ball of radius r with exact (anisotropic) distances: erode, then dilate. Outside the crop
    # counts as patient in the erosion, as for a distance transform, which measures to background voxels only.
    eroded = ndimage.binary_erosion(coarse, structure=ball(opening_mm, coarse_spacing), border_value=1)
    if not eroded.any():
        raise BlankRenderError(f"no part of the patient is thicker than {2 * opening_mm} mm above {threshold_hu} HU")
    patient = _largest_component(eroded)
    reach = ndimage.binary_dilation(patient, structure=ball(opening_mm + margin_mm, coarse_spacing))
    keep = _pad_to(reach.repeat(factors[0], 0).repeat(factors[1], 1).repeat(factors[2], 2), crop.shape)
    out = np.zeros_like(above)
    out[box] = crop & keep
    return out


def _block_mean(mask: np.ndarray, factors: np.ndarray) -> np.ndarray:
    padded = _pad_to(mask.astype(np.float32), tuple(-(-n // f) * f for n, f in zip(mask.shape, factors)))
    blocks = [v for n, f in zip(padded.shape, factors) for v in (n // f, f)]
    return padded.reshape(blocks).mean(axis=(1, 3, 5))


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=array.dtype)
    region = tuple(slice(0, min(a, s)) for a, s in zip(array.shape, shape))
    out[region] = array[region]
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return labels > 0
    return labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1


def skin_field(ct: Volume, skin: np.ndarray, threshold_hu: float = -300.0, smooth_mm: float = 1.0) -> Volume:
    """HU cropped to the skin's bounding box, air outside the skin mask, lightly smoothed.

    Rendering this field at ``threshold_hu`` shows the skin with the partial-volume
    (sub-voxel) position of the real HU, without the stripped objects. The
    Gaussian (``smooth_mm``, per axis in voxels of that axis) removes the voxel
    staircase, which thick slices turn into stripes across the face that
    detectors read as edges.
    """
    if not skin.any():
        raise BlankRenderError(f"the CT has no skin surface above {threshold_hu} HU to render")
    box = bounding_box(skin, margin=3)
    field = np.where(skin[box], np.clip(ct.array[box], AIR_HU, 200.0), AIR_HU).astype(np.float32)
    if smooth_mm > 0:
        field = ndimage.gaussian_filter(field, smooth_mm / ct.spacing, mode="nearest")
    affine = ct.affine.copy()
    affine[:3, 3] = ct.index_to_lps(np.array([[b.start for b in box]]))[0]
    return Volume(field, affine)


# ------------------------------------------------------------------------------------------- cameras
@dataclass(frozen=True)
class Camera:
    """An orthographic camera looking along ``ray`` with the patient's superior axis up."""

    angle: float
    origin: np.ndarray  # LPS of pixel (0, 0) on the image plane (the plane touches the field's bounds)
    right: np.ndarray
    down: np.ndarray
    ray: np.ndarray
    pixel_mm: float
    shape: tuple[int, int]  # (H, W)
    depth_range: float  # mm from the image plane to the far side of the field

    @classmethod
    def around(cls, field: Volume, angle: float, pixel_mm: float, pad_mm: float = PAD_MM) -> Camera:
        theta = np.radians(angle)
        towards_camera = np.cos(theta) * ANTERIOR + np.sin(theta) * LEFT
        ray = -towards_camera
        down = -SUPERIOR
        right = np.cross(ray, SUPERIOR)  # the patient's left at 0°: we face the patient
        lps = _corners_lps(field)
        u, v, t = lps @ right, lps @ down, lps @ ray
        pad_px = int(np.ceil(pad_mm / pixel_mm))
        width = int(np.ceil((u.max() - u.min()) / pixel_mm)) + 2 * pad_px
        height = int(np.ceil((v.max() - v.min()) / pixel_mm)) + 2 * pad_px
        origin = ((u.min() - (pad_px - 0.5) * pixel_mm) * right + (v.min() - (pad_px - 0.5) * pixel_mm) * down
                  + (t.min() - 1.0) * ray)
        return cls(float(angle), origin, right, down, ray, float(pixel_mm), (height, width),
                   float(t.max() - t.min() + 2.0))

    @classmethod
    def like(cls, other: Render, field: Volume) -> Camera:
        """The camera of an earlier render (same pixels), its image plane moved in front of ``field``."""
        t = _corners_lps(field) @ other.ray
        plane = min(float(other.origin @ other.ray), float(t.min()) - 1.0)
        origin = other.origin + (plane - other.origin @ other.ray) * other.ray
        return cls(other.angle, origin, other.right, other.down, other.ray, other.pixel_mm, other.depth.shape,
                   float(t.max()) - plane + 1.0)


def _corners_lps(field: Volume) -> np.ndarray:
    """The 8 outer corners (voxel edges, not centres) of the field's grid in LPS."""
    k, j, i = field.shape
    return field.index_to_lps(np.array([[a, b, c] for a in (-0.5, k - 0.5) for b in (-0.5, j - 0.5)
                                        for c in (-0.5, i - 0.5)]))


def _shade(depth: np.ndarray, pixel_mm: float) -> np.ndarray:
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


# ------------------------------------------------------------------------------------------- numpy
def _render_numpy(field: Volume, dilated: np.ndarray, camera: Camera, threshold_hu: float,
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
    corners = _corners_lps(field) - camera.origin
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
    return Render(camera.angle, _shade(depth, camera.pixel_mm), depth, camera.origin, camera.right, camera.down,
                  camera.ray, camera.pixel_mm, "numpy")


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


# ------------------------------------------------------------------------------------------- vtk
@cache
def vtk_available() -> bool:
    """True when vtk imports and an offscreen OpenGL context (EGL or OSMesa) can be made (checked once)."""
    try:
        _offscreen_window()
    except Exception as exc:  # ImportError, or no usable OpenGL driver
        log.debug("vtk backend unavailable: %s", exc)
        return False
    return True


def _offscreen_window():
    """An offscreen render window: EGL, then OSMesa (no X server needed), then VTK's own choice.

    ``VTK_DEFAULT_OPENGL_WINDOW`` set by the user wins, as VTK documents.
    """
    import vtkmodules.vtkRenderingOpenGL2 as gl
    from vtkmodules.vtkRenderingCore import vtkRenderWindow

    names = [] if os.environ.get("VTK_DEFAULT_OPENGL_WINDOW") else ["vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow"]
    for name in names:
        cls = getattr(gl, name, None)
        if cls is None:
            continue
        window = cls()
        window.SetOffScreenRendering(1)
        if window.SupportsOpenGL():
            return window
    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    if not window.SupportsOpenGL():
        raise RuntimeError("VTK found no offscreen OpenGL (install Mesa's libegl1/libgl1-mesa-dri or libosmesa6)")
    return window


def _vtk_surface(field: Volume, threshold_hu: float):
    """Flying-edges iso-surface of the field, moved into LPS by the field's affine."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkCommonMath import vtkMatrix4x4
    from vtkmodules.vtkCommonTransforms import vtkTransform
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D
    from vtkmodules.vtkFiltersGeneral import vtkTransformFilter

    image = vtkImageData()
    k, j, i = field.shape
    image.SetDimensions(i, j, k)  # VTK's x runs fastest: x = column i, y = row j, z = slice k
    image.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(field.array).ravel(), deep=True))
    surface = vtkFlyingEdges3D()
    surface.SetInputData(image)
    surface.SetValue(0, threshold_hu)
    surface.ComputeNormalsOn()
    surface.ComputeScalarsOff()
    # (i, j, k) -> LPS; a mirroring affine is fine: normals go through the inverse transpose
    matrix = vtkMatrix4x4()
    matrix.DeepCopy(field.affine[:, [2, 1, 0, 3]].ravel().tolist())
    transform = vtkTransform()
    transform.SetMatrix(matrix)
    moved = vtkTransformFilter()
    moved.SetTransform(transform)
    moved.SetInputConnection(surface.GetOutputPort())
    moved.Update()
    return moved.GetOutput()


def _grab(window, buffer: str) -> np.ndarray:
    """The window's RGB or Z buffer as a flat numpy array (rows bottom-up)."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()  # offscreen contexts have no front buffer to read
    grab.ShouldRerenderOff()  # the caller has rendered this view already
    grab.SetInputBufferTypeToZBuffer() if buffer == "z" else grab.SetInputBufferTypeToRGB()
    grab.Update()
    return vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())


def _render_vtk(field: Volume, cameras: list[Camera], threshold_hu: float) -> list[Render]:
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL mapper before one is made)
    from vtkmodules.vtkRenderingCore import vtkActor, vtkLight, vtkPolyDataMapper, vtkRenderer

    mesh = _vtk_surface(field, threshold_hu)
    if mesh.GetNumberOfPoints() == 0:
        raise BlankRenderError(f"the iso-surface at {threshold_hu} HU is empty")
    mapper = vtkPolyDataMapper()
    mapper.SetInputData(mesh)
    mapper.ScalarVisibilityOff()
    actor = vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*(SKIN_RGB / 255.0))
    actor.GetProperty().SetAmbient(0.12)
    actor.GetProperty().SetDiffuse(0.88)
    renderer = vtkRenderer()
    renderer.AddActor(actor)
    renderer.SetBackground(*(BACKGROUND_RGB / 255.0))
    renderer.AutomaticLightCreationOff()
    # Same lights as the numpy shading: a headlight and a key light from above, in camera space.
    for position, intensity in (((0.0, 0.0, 1.0), 0.55), ((0.0, 0.6, 1.0), 0.45)):
        light = vtkLight()
        light.SetLightTypeToCameraLight()
        light.SetPosition(*position)
        light.SetFocalPoint(0.0, 0.0, 0.0)
        light.SetIntensity(intensity)
        renderer.AddLight(light)
    window = _offscreen_window()
    window.SetMultiSamples(0)  # multisampling costs llvmpipe 4x the time and the detectors need no antialiasing
    window.AddRenderer(renderer)
    renders = []
    for camera in cameras:
        h, w = camera.shape
        window.SetSize(w, h)
        vcam = renderer.GetActiveCamera()
        vcam.ParallelProjectionOn()
        centre_plane = camera.origin + ((w - 1) / 2) * camera.pixel_mm * camera.right + (
            (h - 1) / 2) * camera.pixel_mm * camera.down
        vcam.SetPosition(*(centre_plane - 10.0 * camera.ray))  # 10 mm in front of the plane: near clip at 0 depth
        vcam.SetFocalPoint(*centre_plane)
        vcam.SetViewUp(*(-camera.down))
        vcam.SetParallelScale(h * camera.pixel_mm / 2.0)
        near, far = 10.0, 10.0 + camera.depth_range
        vcam.SetClippingRange(near, far)
        window.Render()
        image = _grab(window, "rgb").reshape(h, w, 3)[::-1].copy()  # OpenGL rows run bottom-up
        z = _grab(window, "z").reshape(h, w)[::-1]
        # Orthographic: window depth is linear between the clipping planes.
        depth = np.where(z < 1.0, near + z * (far - near) - 10.0, np.nan).astype(np.float32)
        renders.append(Render(camera.angle, image, depth, camera.origin, camera.right, camera.down, camera.ray,
                              camera.pixel_mm, "vtk"))
    window.Finalize()
    return renders


# ------------------------------------------------------------------------------------------- entry point
def render_views(ct: Volume, angles: tuple[float, ...] = DEFAULT_ANGLES, *, backend: str = "auto",
                 pixel_mm: float = 1.0, threshold_hu: float = -300.0, strip: bool = True,
                 skin: np.ndarray | None = None, frame: dict[float, Render] | None = None,
                 opening_mm: float = 3.0, margin_mm: float = 2.0) -> dict[float, Render]:
    """Render the skin surface of a CT from several angles about the patient's superior axis.

    Parameters
    ----------
    ct
        CT in HU on any axis orientation (the camera is set from the affine).
    angles
        Degrees; 0 = from the anterior, + towards the patient's left.
    backend
        "vtk", "numpy" or "auto" (VTK when an offscreen OpenGL context can be made).
    pixel_mm
        Pixel size of the orthographic images.
    threshold_hu
        Skin iso-level.
    strip
        Remove the immobilisation mask and couch first (`strip_immobilisation`).
    opening_mm, margin_mm
        `strip_immobilisation`'s opening radius and skin margin.
    skin
        A skin mask to use instead (CT grid); overrides ``strip``.
    frame
        Earlier renders (e.g. of the CT before defacing) whose cameras to reuse,
        so that pixel (row, column) is the same ray in both; their angles are
        used and ``angles`` and ``pixel_mm`` are ignored. Depths then differ by
        the planes' offset: compare ``depth + origin @ ray``.

    Returns
    -------
    dict
        angle → `Render`.

    Raises
    ------
    BlankRenderError
        When there is no surface or a view comes out uniform: never pass blind.
    """
    if backend not in ("auto", "vtk", "numpy"):
        raise ValueError(f"backend must be 'auto', 'vtk' or 'numpy', got {backend!r}")
    if skin is None:
        skin = strip_immobilisation(ct.array, ct.spacing, threshold_hu=threshold_hu, opening_mm=opening_mm,
                                    margin_mm=margin_mm) if strip else (
            ct.array > threshold_hu)
    field = skin_field(ct, skin, threshold_hu)
    if frame is not None:
        cameras = [Camera.like(view, field) for view in frame.values()]
    else:
        cameras = [Camera.around(field, float(a), pixel_mm) for a in angles]
    renders: list[Render] | None = None
    if backend in ("auto", "vtk"):
        try:
            renders = _render_vtk(field, cameras, threshold_hu)
            for render in renders:
                check_not_blank(render)
        except Exception as exc:
            if backend == "vtk":
                raise
            # The field is known to hold a surface, so a failure here is VTK's/OpenGL's: use the ray caster.
            log.warning("VTK rendering failed (%s); using the numpy ray caster", exc)
            renders = None
    if renders is None:
        dilated = ndimage.grey_dilation(field.array, size=(3, 3, 3))
        renders = [_render_numpy(field, dilated, camera, threshold_hu) for camera in cameras]
        for render in renders:
            check_not_blank(render)
    return {render.angle: render for render in renders}


def check_not_blank(render: Render, min_fraction: float = 0.01) -> None:
    """Raise BlankRenderError when a render shows (almost) no surface or a uniform image."""
    covered = float(render.mask.mean())
    if covered < min_fraction:
        raise BlankRenderError(f"{render.backend} render at {render.angle:g}° shows no surface "
                               f"({covered:.1%} of pixels hit)")
    grey = render.image.mean(axis=2)[render.mask]
    if grey.size and float(grey.std()) < 1.0:
        raise BlankRenderError(f"{render.backend} render at {render.angle:g}° is uniform; nothing to verify")
