"""Scenes for the render, detector and verification tests: the phantom at face resolution, good and bad defacings,
an immobilisation shell and couch. The ``face_ct`` fixture (conftest.py) is the phantom's CT built from these."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from deface_ts.geometry.view import AnatomicalView
from deface_ts.geometry.volume import ANTERIOR, LEFT, SUPERIOR, Volume
from deface_ts.io.dicom.ct import load_ct
from deface_ts.io.dicom.study import discover, select
from deface_ts.phantom import EYE_CENTRES
from deface_ts.vision import vtk_render
from deface_ts.vision.cameras import Render

#: 1 mm pixels and 2 mm slices: fine enough for a face a detector recognises (the 2 mm/3 mm suite default is not).
FACE_PHANTOM = dict(rows=256, columns=256, pixel_spacing=1.0, slices=120, slice_thickness=2.0)
BACKENDS = ["vtk", "numpy"]


def needs_backend(backend: str) -> None:
    """Skip when VTK is not installed; fail when it is installed but cannot open an offscreen context."""
    if backend == "vtk":
        pytest.importorskip("vtk")
        assert vtk_render.vtk_available(), \
            "vtk is installed but found no offscreen OpenGL (apt: libegl1 libegl-mesa0 libgl1-mesa-dri, or libosmesa6)"


def load_phantom_ct(study) -> Volume:
    """The phantom's CT read back from its DICOM files (the path a real case takes)."""
    return load_ct(select(discover(study.folder)).ct).hu


def save_png(renders: dict[float, Render], name: str) -> None:
    folder = os.environ.get("DEFACE_TS_RENDER_PNG")
    if not folder:
        return
    from PIL import Image

    Path(folder).mkdir(parents=True, exist_ok=True)
    for angle, view in renders.items():
        Image.fromarray(view.image).save(Path(folder) / f"{name}_{view.backend}_{angle:+04.0f}.png")


# ------------------------------------------------------------------------------ phantom modifications
def deface_box(ct: Volume, chin_mm: float = -100.0) -> Volume:
    """The face region set to air: anterior of the coronal plane through the eye centres, chin to top."""
    eye_anterior = float(EYE_CENTRES["left"] @ ANTERIOR)
    hu = ct.array.copy()
    hu[(ct.axis_coordinate(ANTERIOR) > eye_anterior) & (ct.axis_coordinate(SUPERIOR) > chin_mm)] = -1000.0
    return ct.with_array(hu)


def shave(ct: Volume, depth_mm: float = 5.0, chin_mm: float = -100.0, threshold: float = -300.0) -> Volume:
    """A deliberately bad defacing: the outermost ``depth_mm`` of the face seen from the front becomes air."""
    view = AnatomicalView.of(ct)
    hu = ct.array.copy()
    body = view.view(hu) > threshold
    anterior = view.coordinates[1]
    front = anterior[body.shape[1] - 1 - np.argmax(body[:, ::-1, :], axis=1)]  # most anterior tissue per (S, L)
    cut = (anterior[None, :, None] > front[:, None, :] - depth_mm) & body.any(axis=1)[:, None, :]
    cut &= (view.coordinates[0] > chin_mm)[:, None, None]
    view.view(hu)[cut] = -1000.0  # the view is a numpy view of hu
    return ct.with_array(hu)


def add_shell_and_couch(ct: Volume, gap_mm: float = 4.0, thickness_mm: float = 2.5) -> Volume:
    """A perforated thermoplastic shell ``gap_mm`` in front of the skin, a base plate joining it to a couch."""
    hu = ct.array.copy()
    body = hu > -300
    outside = ndimage.distance_transform_edt(~body, sampling=ct.spacing)
    anterior, left, superior = (ct.axis_coordinate(d) for d in (ANTERIOR, LEFT, SUPERIOR))
    holes = (np.mod(left, 10.0) - 5.0) ** 2 + (np.mod(superior, 10.0) - 5.0) ** 2 < 2.0**2
    shell = (outside > gap_mm) & (outside <= gap_mm + thickness_mm) & (anterior > -10.0) & ~holes
    hu[shell] = 120.0
    back = float(anterior[body].min())  # most posterior skin (anterior coordinate)
    couch = (anterior < back - 30.0) & (anterior > back - 42.0)
    hu[couch] = 250.0
    # base plate: two 4 mm struts from the shell's lateral edge down to the couch
    plate = (np.abs(np.abs(left) - 95.0) < 2.0) & (anterior < -5.0) & (anterior > back - 31.0) & ~body
    hu[plate] = 200.0
    return ct.with_array(hu)
