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

import numpy as np
from scipy import ndimage

from deface_ts.choices import VERIFY_ANGLES
from deface_ts.geometry.volume import Volume
from deface_ts.vision import vtk_render
from deface_ts.vision.cameras import Camera, Render, check_not_blank
from deface_ts.vision.raycast import render_numpy
from deface_ts.vision.skin import skin_field, strip_immobilisation

log = logging.getLogger(__name__)


def render_views(ct: Volume, angles: tuple[float, ...] = VERIFY_ANGLES, *, backend: str = "auto",
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
    return {render.angle: render for render in _render(field, cameras, threshold_hu, backend)}


def render_poses(field: Volume, poses: list[tuple[float, float]], *, backend: str = "auto", pixel_mm: float = 1.0,
                 threshold_hu: float = -300.0) -> list[Render]:
    """Render a prepared skin field (`deface_ts.vision.skin.skin_field`) from (yaw, pitch) poses in degrees.

    Yaw turns the camera about the superior axis as in `render_views`; pitch tilts it to see a flexed (+)
    or extended (-) head from the front (`Camera.around`). The field is made once by the caller, so a
    search over many poses pays for the skin and the surface once.
    """
    if backend not in ("auto", "vtk", "numpy"):
        raise ValueError(f"backend must be 'auto', 'vtk' or 'numpy', got {backend!r}")
    cameras = [Camera.around(field, float(yaw), pixel_mm, pitch=float(pitch)) for yaw, pitch in poses]
    return _render(field, cameras, threshold_hu, backend)


def _render(field: Volume, cameras: list[Camera], threshold_hu: float, backend: str) -> list[Render]:
    """VTK where asked for or (``auto``) where it works, else the numpy ray caster; never a blank view."""
    if backend in ("auto", "vtk"):
        try:
            renders = vtk_render.render_vtk(field, cameras, threshold_hu)
            for render in renders:
                check_not_blank(render)
            return renders
        except Exception as exc:
            if backend == "vtk":
                raise
            # The field is known to hold a surface, so a failure here is VTK's/OpenGL's: use the ray caster.
            log.warning("VTK rendering failed (%s); using the numpy ray caster", exc)
    dilated = ndimage.grey_dilation(field.array, size=(3, 3, 3))
    renders = [render_numpy(field, dilated, camera, threshold_hu) for camera in cameras]
    for render in renders:
        check_not_blank(render)
    return renders
