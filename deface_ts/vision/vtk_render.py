"""VTK offscreen renders: flying-edges iso-surface, OpenGL through EGL or OSMesa (no X server).

~0.1 s a view with Mesa llvmpipe. VTK is imported only when a render is asked for.
"""

from __future__ import annotations

import logging
import os
from functools import cache

import numpy as np

from deface_ts.errors import BlankRenderError
from deface_ts.geometry.volume import Volume
from deface_ts.vision.cameras import BACKGROUND_RGB, SKIN_RGB, Camera, Render

log = logging.getLogger(__name__)


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


def render_vtk(field: Volume, cameras: list[Camera], threshold_hu: float) -> list[Render]:
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
                              camera.pixel_mm, "vtk", camera.pitch))
    window.Finalize()
    return renders
