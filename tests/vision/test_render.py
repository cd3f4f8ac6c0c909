"""Surface renders of the phantom: geometry, both backends, immobilisation stripping, fail-closed checks.

The renders are real: VTK offscreen (EGL/OSMesa) and the numpy ray caster, of
the phantom written to DICOM and read back. Set DEFACE_TS_RENDER_PNG to a folder
to keep the PNGs for a look.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deface_ts.choices import VERIFY_ANGLES
from deface_ts.errors import BlankRenderError
from deface_ts.geometry.volume import Volume
from deface_ts.phantom import EYE_CENTRES, NOSE_TIP, PhantomOptions, evaluate
from deface_ts.vision import cameras, vtk_render
from deface_ts.vision.cameras import Render
from deface_ts.vision.render import render_views
from deface_ts.vision.skin import patient_reach, skin_within, strip_immobilisation
from tests.vision.scenes import (
    BACKENDS,
    add_shell_and_couch,
    needs_backend,
    save_png,
)


# ------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("backend", BACKENDS)
def test_frontal_render_is_upright_and_back_projects_to_the_nose(face_ct, backend):
    needs_backend(backend)
    views = render_views(face_ct, angles=(0.0, 90.0), backend=backend)
    save_png(views, "phantom")
    front = views[0.0]
    assert front.backend == backend and front.image.dtype == np.uint8 and front.image.shape[2] == 3
    # the most anterior skin point is the nose tip; it back-projects to the phantom's nose
    row, col = np.unravel_index(np.nanargmin(front.depth), front.depth.shape)
    nose = front.pixel_to_lps([[col, row]])[0]
    assert np.linalg.norm(nose - NOSE_TIP) < 5.0, nose
    # upright: the eyes are above the nose; we face the patient: their left is on the image's right
    eyes = front.lps_to_pixel(np.array([EYE_CENTRES["right"], EYE_CENTRES["left"]]))
    assert eyes[:, 1].max() < front.lps_to_pixel(NOSE_TIP[None])[0, 1]
    assert eyes[0, 0] < eyes[1, 0]
    # profile from the patient's left: the nose points to the image's left, the back of the head to the right
    side = views[90.0]
    assert side.lps_to_pixel(NOSE_TIP[None])[0, 0] < side.lps_to_pixel(np.array([[0.0, 90.0, -30.0]]))[0, 0]
    # every hit pixel maps onto a point on the skin (within a voxel of the threshold surface)
    points = front.points[front.mask]
    index = np.rint(face_ct.lps_to_index(points[:: max(1, len(points) // 2000)])).astype(int)
    inside = np.all((index >= 0) & (index < np.array(face_ct.shape)), axis=1)
    body = ndimage.binary_dilation(face_ct.array > -300, iterations=2)
    assert body[tuple(index[inside].T)].mean() > 0.97


def test_vtk_and_numpy_backends_agree(face_ct):
    needs_backend("vtk")
    angles = (*VERIFY_ANGLES, 90.0)  # and a profile, where the two renderers differ most
    by_vtk = render_views(face_ct, angles=angles, backend="vtk")
    by_numpy = render_views(face_ct, angles=angles, backend="numpy")
    for angle in angles:
        a, b = by_vtk[angle], by_numpy[angle]
        assert a.depth.shape == b.depth.shape
        both = a.mask & b.mask
        assert both.sum() / (a.mask | b.mask).sum() > 0.97  # silhouettes
        assert np.median(np.abs(a.depth[both] - b.depth[both])) < 0.5  # mm


@pytest.mark.parametrize("position", ["HFP", "FFS", "FFP"])
def test_same_render_for_every_patient_position(position):
    """The camera comes from the affine: a prone or feet-first scan renders the same face."""
    small = dict(rows=128, columns=128, pixel_spacing=2.0, slices=64, slice_thickness=3.0)
    views = {}
    for pos in ("HFS", position):
        hu, _, affine = evaluate(PhantomOptions(position=pos, **small))
        views[pos] = render_views(Volume(hu, affine), angles=(0.0, 45.0), backend="numpy")
    for angle in (0.0, 45.0):
        a, b = views["HFS"][angle], views[position][angle]
        assert a.depth.shape == b.depth.shape and np.allclose(a.origin, b.origin)
        both = a.mask & b.mask
        assert (a.mask ^ b.mask).sum() < 0.002 * a.mask.size
        assert np.median(np.abs(a.depth[both] - b.depth[both])) < 0.3
        assert np.abs(a.image.astype(int) - b.image).mean() < 2.0


# ------------------------------------------------------------------------------ immobilisation
def test_strip_immobilisation_removes_shell_and_couch(face_ct):
    masked = add_shell_and_couch(face_ct)
    body = face_ct.array > -300
    stripped = strip_immobilisation(masked.array, masked.spacing)
    shell_and_couch = (masked.array > -300) & ~body
    assert shell_and_couch.sum() > 50_000
    assert (stripped & shell_and_couch).sum() < 0.001 * shell_and_couch.sum()
    assert (stripped & body).sum() > 0.995 * body.sum()


def test_the_defaced_skin_within_the_original_reach_shows_all_its_own_stripping_would(face_ct):
    """The verification renders the written CT's skin within the original's patient reach (no second
    stripping): every voxel the written CT's own stripping keeps is shown, and no shell or couch."""
    masked = add_shell_and_couch(face_ct)
    reach = patient_reach(masked.array, masked.spacing)
    assert np.array_equal(skin_within(masked.array, reach), strip_immobilisation(masked.array, masked.spacing))
    shell_and_couch = (masked.array > -300) & ~(face_ct.array > -300)
    for cut in (0.2, 0.35, 0.5):  # removal takes tissue away (air in front of a coronal cut through the head)
        defaced = masked.array.copy()
        body = face_ct.array > -300
        front = np.flatnonzero(body.any(axis=(0, 2)))
        plane = int(front[0] + cut * (front[-1] - front[0]))
        defaced[:, :plane][body[:, :plane]] = -1000
        own = strip_immobilisation(defaced, masked.spacing)
        within = skin_within(defaced, reach)
        assert own.sum() > 0 and not (own & ~within).any()
        assert not (within & ~(defaced > -300)).any() and not (within & shell_and_couch).any()


@pytest.mark.parametrize("factors", [(1, 2, 2), (3, 2, 2), (1, 3, 3), (2, 1, 1)])
def test_blocks_mostly_true_are_those_whose_mean_exceeds_a_half(factors):
    from deface_ts.vision.skin import _mostly

    mask = np.random.default_rng(1).random((37, 45, 52)) > 0.5  # no axis a multiple of every factor: padded
    f = np.array(factors)
    padded = np.zeros(tuple(-(-n // k) * k for n, k in zip(mask.shape, f)), dtype=float)
    padded[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    mean = padded.reshape(padded.shape[0] // f[0], f[0], padded.shape[1] // f[1], f[1], padded.shape[2] // f[2],
                          f[2]).mean(axis=(1, 3, 5))
    assert np.array_equal(_mostly(mask, f), mean > 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stripped_render_shows_the_skin_not_the_shell(face_ct, backend):
    needs_backend(backend)
    masked = add_shell_and_couch(face_ct)
    plain = render_views(face_ct, angles=(0.0,), backend=backend)
    stripped = render_views(masked, backend=backend, frame=plain)[0.0]
    raw = render_views(masked, backend=backend, strip=False, frame=plain)[0.0]
    plain = plain[0.0]
    save_png({0.0: stripped}, "shell_stripped")
    save_png({0.0: raw}, "shell_raw")
    face = plain.mask & stripped.mask & raw.mask
    along = [view.depth[face] + view.origin @ view.ray for view in (plain, stripped, raw)]  # same rays, any plane
    assert np.median(np.abs(along[1] - along[0])) < 0.3
    assert np.median(along[0] - along[2]) > 3.0  # unstripped, the shell hides the skin


# ------------------------------------------------------------------------------ fail closed
@pytest.mark.parametrize("backend", BACKENDS)
def test_blank_volume_raises(backend):
    needs_backend(backend)
    air = Volume(np.full((20, 30, 30), -1000.0, dtype=np.float32), np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(BlankRenderError):
        render_views(air, angles=(0.0,), backend=backend)


def test_uniform_render_raises():
    depth = np.full((50, 60), 10.0, dtype=np.float32)
    flat = Render(0.0, np.full((50, 60, 3), 128, np.uint8), depth, np.zeros(3), np.array([1.0, 0, 0]),
                  np.array([0, 0, -1.0]), np.array([0, 1.0, 0]), 1.0, "numpy")
    with pytest.raises(BlankRenderError, match="uniform"):
        cameras.check_not_blank(flat)
    empty = Render(0.0, flat.image, np.full_like(depth, np.nan), flat.origin, flat.right, flat.down, flat.ray,
                   1.0, "numpy")
    with pytest.raises(BlankRenderError, match="no surface"):
        cameras.check_not_blank(empty)


def test_auto_falls_back_to_numpy_when_vtk_fails(monkeypatch):
    hu, _, affine = evaluate(PhantomOptions(rows=96, columns=96, pixel_spacing=2.5, slices=40, slice_thickness=4.0))
    ct = Volume(hu, affine)

    def broken(*args, **kwargs):
        raise RuntimeError("no OpenGL")

    monkeypatch.setattr(vtk_render, "render_vtk", broken)
    views = render_views(ct, angles=(0.0,), backend="auto")
    assert views[0.0].backend == "numpy"
    with pytest.raises(RuntimeError):
        render_views(ct, angles=(0.0,), backend="vtk")
    with pytest.raises(ValueError):
        render_views(ct, backend="opengl")
