"""The brain side of the removal region on skulls the phantom does not have: a craniectomy and partial-volume bone.

The phantom is read back from its DICOM files; its frontal bone is then opened (a 40 mm defect filled with
soft tissue, as after a craniectomy) or thinned to partial-volume values (150-240 HU, under the bone threshold).
The phantom's own Brain ROI is the truth: no voxel of it may be removed, and the report's figure must say so.
"""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.config import EyesConfig, load_config
from deface_ts.errors import CavityError
from deface_ts.geometry.masks import body_from_hu
from deface_ts.geometry.volume import ANTERIOR, SUPERIOR, Volume
from deface_ts.io.dicom.case import load_case
from deface_ts.locate.eyes import RoiEyeLocator
from deface_ts.removal.plan import check_brain_side, plan_removal


@pytest.fixture(scope="module")
def case(phantom_cache):
    return load_case(phantom_cache(rows=192, columns=192, pixel_spacing=1.3, slices=90, slice_thickness=2.5).folder)


def frontal_patch(ct: Volume, radius_mm: float) -> np.ndarray:
    """Voxels of the skull within ``radius_mm`` of the forehead's midline point 30 mm above the eyes."""
    centre = np.array([0.0, -73.0, 35.0])  # in the frontal bone (outer table ~76 mm in front of the skull's axis)
    index = np.argwhere(np.ones(ct.shape, dtype=bool))
    near = np.linalg.norm(ct.index_to_lps(index) - centre, axis=1) <= radius_mm
    patch = np.zeros(ct.shape, dtype=bool)
    patch[tuple(index[near].T)] = True
    return patch & (ct.array > 250)


@pytest.mark.parametrize("change", ["craniectomy", "partial-volume bone"])
def test_no_brain_removed_through_a_weak_skull(case, change):
    ct = case.ct.hu
    weak = weakened(ct, change)
    hu = weak.array
    brain = next(r for r in case.structures.rois if r.name == "Brain").mask.full(ct.shape)
    config = load_config()
    location = RoiEyeLocator(case.structures, EyesConfig()).locate(weak)
    plan = plan_removal(weak, body_from_hu(hu, config.region.body_hu), location, [], config)
    # The frontal lobes reach in front of the cut plane above the eyes (defaceRT's box removes them) ...
    points = ct.index_to_lps(np.argwhere(brain))
    in_front = (points @ ANTERIOR >= plan.landmarks.cut_plane_anterior_mm) & (points[:, 2] >= plan.landmarks.inferior_eye_mm)
    assert in_front.sum() > 100
    assert not plan.removed[brain].any()  # ... and none of them is removed
    assert plan.brain_side_removed_cc == 0.0


def weakened(ct: Volume, change: str) -> Volume:
    """The phantom's frontal bone opened (a craniectomy filled with soft tissue) or thinned to partial volume."""
    hu = ct.array.astype(np.float32).copy()
    patch = frontal_patch(ct, 20.0)
    assert patch.sum() > 50
    if change == "craniectomy":
        hu[patch] = 40.0
    elif change == "partial-volume bone":
        hu[patch] = np.linspace(150.0, 240.0, int(patch.sum()))
    return Volume(hu, ct.affine)


@pytest.mark.parametrize("method", ["face", "union"])
@pytest.mark.parametrize("change", ["intact skull", "craniectomy", "partial-volume bone"])
def test_a_face_mask_reaching_into_the_cavity_removes_no_brain(case, change, method):
    """A face mask 45 mm deep from the nose up to the forehead takes in the frontal lobes (through the skull):
    its region keeps the same brain side as the eye region, through an intact, opened or thinned frontal bone."""
    from deface_ts.locate.base import FaceLocation

    ct = weakened(case.ct.hu, change)
    brain = next(r for r in case.structures.rois if r.name == "Brain").mask.full(ct.shape)
    config = load_config()
    body = body_from_hu(ct.array, config.region.body_hu)
    deep = body & (ct.axis_coordinate(ANTERIOR) > 52.0) & (ct.axis_coordinate(SUPERIOR) < 60.0)
    assert (deep & brain).sum() > 200  # the mask itself reaches into the brain
    eyes = RoiEyeLocator(case.structures, EyesConfig()).locate(ct).eyes
    plan = plan_removal(ct, body, FaceLocation(method, eyes, face_mask=deep), [], config)
    assert (plan.provenance == 5).sum() > 1000  # the face mask's region is there ...
    assert not plan.removed[brain].any() and plan.brain_side_removed_cc == 0.0  # ... and takes no brain


def test_a_plan_reaching_into_the_brain_is_refused(case):
    """The check after planning catches any rule: here the region is forced over the brain."""
    ct = case.ct.hu
    config = load_config()
    location = RoiEyeLocator(case.structures, EyesConfig()).locate(ct)
    plan = plan_removal(ct, body_from_hu(ct.array, config.region.body_hu), location, [], config)
    brain = next(r for r in case.structures.rois if r.name == "Brain").mask.full(ct.shape)
    plan.provenance[brain] = 3
    plan.removed = (plan.provenance > 0) & ~plan.protected
    cavity = np.zeros(ct.shape, dtype=bool)
    cavity[brain] = True
    with pytest.raises(CavityError, match="reaches .* cc into the cranial cavity"):
        check_brain_side(ct, plan, cavity)


def _phantom(name: str) -> Volume:
    """The phantom in one of the four positions, or off-centre in a wider field ("shifted")."""
    from deface_ts.phantom import PhantomOptions, evaluate

    if name == "shifted":
        options = PhantomOptions(rows=160, columns=140, pixel_spacing=1.7, slices=70, slice_thickness=2.5,
                                 noise_hu=0.0, shift_mm=(45.0, -35.0, 25.0))
    else:
        options = PhantomOptions(rows=128, columns=128, pixel_spacing=2.0, slices=64, slice_thickness=3.0,
                                 noise_hu=0.0, position=name)
    hu, _, affine = evaluate(options)
    return Volume(hu, affine)


def _assert_cropped_equals_uncropped(ct: Volume) -> None:
    from deface_ts.geometry.view import AnatomicalView
    from deface_ts.removal.cavity import _cranial_cavity, brain_side, cranial_cavity
    from deface_ts.removal.plan import view_spacing

    config = load_config().region
    view = AnatomicalView.of(ct)
    hu, body = view.view(ct.array), view.view(body_from_hu(ct.array, config.body_hu))
    spacing = view_spacing(ct, view)
    factors = np.maximum(np.rint(2.0 / spacing).astype(int), 1)
    # Slabs from every eighth of the view up, as brain_side passes them from the eyes up (the block grid starts
    # at the slab's first slice); a slab reaching far below the eyes encloses nothing (the cavity opens into the
    # nasal cavity and the orbits), the higher ones do.
    enclosing = 0
    for start in range(0, hu.shape[0], max(hu.shape[0] // 8, 1)):
        cropped = cranial_cavity(hu[start:], body[start:], spacing, config.bone_hu)
        full = _cranial_cavity(hu[start:], body[start:], factors, spacing, config.bone_hu, 4.0)
        assert np.array_equal(cropped, full), start
        enclosing += int(full.sum() > 1000)
    assert enclosing >= 2  # real cavities compared, not only empty masks
    # The whole brain side, against its straightforward form, from the middle of the view and from two thirds
    # up, the envelope a few slices higher, removal from the front half or everywhere.
    n, rows = hu.shape[0], hu.shape[1]
    for s_from, s_envelope, a_from in ((n // 2, n // 2 + 3, rows // 2), (2 * n // 3, 2 * n // 3, 0)):
        expected = _brain_side_reference(hu, body, spacing, config.bone_hu, s_from, s_envelope, a_from)
        assert expected.sum() > 1000
        assert np.array_equal(brain_side(hu, body, spacing, config.bone_hu, s_from, s_envelope, a_from), expected)


def _brain_side_reference(hu, body, spacing, bone_hu, s_from, s_envelope, a_from):
    """`brain_side` as first written: every step over the whole slab (no crop to the head)."""
    from scipy import ndimage

    from deface_ts.removal.cavity import ORBIT_ROOF_MM, PARTIAL_BRAIN_HU, _cranial_cavity, skull_envelope

    out = np.zeros(hu.shape, dtype=bool)
    s_envelope = max(int(s_envelope) + int(np.ceil(ORBIT_ROOF_MM / float(spacing[0]))), 0)
    factors = np.maximum(np.rint(2.0 / spacing).astype(int), 1)
    out[s_from:] = _cranial_cavity(hu[s_from:], body[s_from:], factors, spacing, bone_hu, 4.0)
    if s_envelope < hu.shape[0]:
        out[s_envelope:] |= skull_envelope(hu[s_envelope:], body[s_envelope:], bone_hu)
    front = out[:, max(int(a_from) - 1, 0):]
    hu_front = hu[:, max(int(a_from) - 1, 0):]
    for k in range(min(s_envelope, hu.shape[0]) - 1 if s_envelope < hu.shape[0] else -1, s_from - 1, -1):
        front[k] |= front[k + 1] & (hu_front[k] >= PARTIAL_BRAIN_HU[0]) & (hu_front[k] <= PARTIAL_BRAIN_HU[1])
    labels, count = ndimage.label(front[s_from:])
    if count:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        cavity = labels == int(np.argmax(sizes))
        soft = (hu_front[s_from:] >= PARTIAL_BRAIN_HU[0]) & (hu_front[s_from:] <= PARTIAL_BRAIN_HU[1])
        front[s_from:] |= ndimage.binary_dilation(cavity) & soft
    return out


@pytest.mark.parametrize("name", ["HFS", "HFP", "FFS", "FFP", "shifted"])
def test_cranial_cavity_cropped_to_the_head_equals_the_uncropped_one(name):
    """The crop to the head's box (plus a margin past every reach) changes no voxel of the cavity."""
    _assert_cropped_equals_uncropped(_phantom(name))


def test_cranial_cavity_cropped_equals_the_uncropped_one_on_the_real_head():
    from tests.real_heads import cranium_folder, load_cranium

    folder = cranium_folder()
    if not (folder / "matrix.dat").exists():
        pytest.skip(f"InVesalius' Cranium head CT not found in {folder} (scripts/setup.sh installs it)")
    _assert_cropped_equals_uncropped(load_cranium(folder))


@pytest.mark.parametrize("start", [20, 21, 23])
def test_cranial_cavity_crop_keeps_an_opening_on_the_box_face_open(start):
    """A bone cup filled with tissue flush with its rim, open where the body's box ends: not enclosed.

    Cropped to the box with no margin, the opening's blocks are tissue, not air, and the cup would count
    as enclosed; the margin's ring of free air joins it to the outside, as uncropped.
    """
    from deface_ts.removal.cavity import _cranial_cavity, cranial_cavity

    grid = np.indices((64, 64, 64)).astype(float)
    radius = np.sqrt((grid[0] - 32) ** 2 + (grid[1] - 32) ** 2 + (grid[2] - start) ** 2)
    cup = grid[2] >= start
    hu = np.full((64, 64, 64), -1000.0, dtype=np.float32)
    hu[cup & (radius <= 17)] = 1000.0
    hu[cup & (radius < 14)] = 40.0
    body = cup & (radius <= 17)
    spacing = np.array([1.0, 1.0, 1.0])
    full = _cranial_cavity(hu, body, np.array([2, 2, 2]), spacing, 250.0, 4.0)
    assert not full.any()
    assert np.array_equal(cranial_cavity(hu, body, spacing, 250.0), full)
    closed = hu.copy()
    closed[:, :, start - 3:start] = 1000.0  # a lid: now the cup encloses its tissue
    assert cranial_cavity(closed, body | (closed > 250), spacing, 250.0)[32, 32, start + 5]


@pytest.mark.parametrize("change", ["craniectomy", "partial-volume bone"])
def test_brain_side_cropped_equals_the_uncropped_one_through_a_weak_skull(case, change):
    """The weak skulls above: the partial-volume ring reaches past the brain side's box (the defect's tissue)."""
    ct = case.ct.hu
    hu = ct.array.astype(np.float32).copy()
    patch = frontal_patch(ct, 20.0)
    hu[patch] = 40.0 if change == "craniectomy" else np.linspace(150.0, 240.0, int(patch.sum()))
    _assert_cropped_equals_uncropped(Volume(hu, ct.affine))


# ------------------------------------------------------------------------------ metal streaks
#: Fillings in two molars and an incisor (the phantom's teeth: z -66 to -48, the arch's back at y ~ -36).
FILLINGS = {"left molar": np.array([24.0, -36.0, -57.0]), "right molar": np.array([-24.0, -36.0, -57.0]),
            "incisor": np.array([14.0, -60.0, -57.0])}
#: Titanium plates repairing both orbital floors (under the globes, whose centres are at z = 0).
ORBITAL_PLATES = {"left": np.array([30.0, -52.0, -14.0]), "right": np.array([-30.0, -52.0, -14.0])}


def _moved(ct: Volume, mask: np.ndarray, degrees: float, centre: np.ndarray) -> np.ndarray:
    from deface_ts.phantom.variants import pitched

    return pitched(ct.with_array(mask.astype(np.float32)), degrees, {}, centre_mm=centre)[0].array > 0.5


@pytest.mark.parametrize("metal", ["fillings, head extended 25°", "orbital floor plates"])
def test_metal_streaks_remove_no_brain_and_change_no_removal(case, metal):
    """Streaks 1000 HU strong, bright and dark, through the lower face and the skull base (the fillings' slices
    on an extended head cross the posterior fossa) or through the eye band and the middle fossae (orbital plates):
    the cavity test keeps, in front of the cut plane, all of the brain it kept without them; the removal is the
    same voxels, and no brain goes."""
    from deface_ts.geometry.view import AnatomicalView
    from deface_ts.locate.base import Eye, FaceLocation
    from deface_ts.phantom.variants import metal_streaks, pitched
    from deface_ts.removal.cavity import brain_side
    from deface_ts.removal.plan import view_spacing

    ct, structures = case.ct.hu, case.structures
    masks = {r.name: r.mask.full(ct.shape) for r in structures.rois if r.name in ("Brain", "Eye_L", "Eye_R")}
    metal_points = ORBITAL_PLATES
    if metal.startswith("fillings"):
        centre = np.array([0.0, 0.0, -20.0])
        ct, metal_points = pitched(ct, -25.0, FILLINGS, centre_mm=centre)
        masks = {name: _moved(case.ct.hu, mask, -25.0, centre) for name, mask in masks.items()}
    eyes = [Eye(name, side, ct.index_to_lps(np.argwhere(masks[name])).mean(axis=0), masks[name])
            for side, name in (("left", "Eye_L"), ("right", "Eye_R"))]
    streaked = metal_streaks(ct, list(metal_points.values()), amplitude_hu=1000.0)
    brain = masks["Brain"]
    in_metal_slices = np.abs(ct.axis_coordinate(SUPERIOR) - min(p[2] for p in metal_points.values())) <= 6.0
    assert (brain & in_metal_slices).sum() > 1000  # the streaks cross the brain
    assert (np.abs(streaked.array - ct.array) > 300).sum() > 5000  # and they are strong
    config = load_config()
    plans, kept = [], []
    for scan in (ct, streaked):
        body = body_from_hu(scan.array, config.region.body_hu)
        plans.append(plan_removal(scan, body, FaceLocation("eyes", eyes), [], config))
        view = AnatomicalView.of(scan)
        low = int(np.flatnonzero(view.view(eyes[0].mask | eyes[1].mask).any(axis=(1, 2)))[0])
        side = brain_side(view.view(scan.array), view.view(body), view_spacing(scan, view), config.region.bone_hu,
                          low, low)
        kept.append(view.unview(side) & brain)
    clean, with_streaks = plans
    # The cavity test holds where removal can happen: anterior of the cut plane it keeps every brain voxel it
    # kept without the streaks. (Dark streaks through the floor of the slab's lowest slices, far behind the
    # eyes, can open a few there: the orbital plates' cost ~1 % of the brain side, none of it near the face.)
    lost = ct.index_to_lps(np.argwhere(kept[0] & ~kept[1]))
    assert kept[0].sum() > 10000 and not (lost @ ANTERIOR >= clean.landmarks.cut_plane_anterior_mm).any()
    assert not with_streaks.removed[brain].any() and with_streaks.brain_side_removed_cc == 0.0
    assert np.array_equal(with_streaks.removed, clean.removed)


def _qhull_fill(mask: np.ndarray) -> np.ndarray:
    """Reference for cavity._hull: scipy's Qhull polygon of the rows' extreme voxels, filled row by row."""
    from scipy.spatial import ConvexHull, QhullError

    rows = np.flatnonzero(mask.any(axis=1))
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    points = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(float)
    try:
        corners = points[ConvexHull(points).vertices]
    except QhullError:
        return mask.copy()
    out = np.zeros(mask.shape, dtype=bool)
    a, b = corners, np.roll(corners, -1, axis=0)
    for y in range(rows[0], rows[-1] + 1):
        xs = [a[i, 1] + (y - a[i, 0]) * (b[i, 1] - a[i, 1]) / (b[i, 0] - a[i, 0]) for i in range(len(a))
              if min(a[i, 0], b[i, 0]) <= y <= max(a[i, 0], b[i, 0]) and a[i, 0] != b[i, 0]]
        if xs:
            columns = np.arange(mask.shape[1])
            out[y] = (columns >= min(xs) - 1e-6) & (columns <= max(xs) + 1e-6)
    return out | mask


def test_hull_is_the_convex_polygon_qhull_gives():
    """The monotone-chain hull fills exactly what Qhull's polygon covers: random points, single rows and
    columns (no area), lines, and every bone slice of the phantom along each axis."""
    from deface_ts.phantom import PhantomOptions, evaluate
    from deface_ts.removal.cavity import _hull

    rng = np.random.default_rng(7)
    masks = []
    for n in range(400):
        m = np.zeros((30, 40), dtype=bool)
        if n % 4 == 0:
            m[rng.integers(0, 30), rng.integers(0, 40, 3)] = True  # one row
        elif n % 4 == 1:
            m[rng.integers(0, 30, 4), rng.integers(0, 40)] = True  # one column
        else:
            m[rng.integers(0, 30, 2 + n % 7), rng.integers(0, 40, 2 + n % 7)] = True
        masks.append(m)
    hu, _, _ = evaluate(PhantomOptions(position="FFP"))
    for axis in range(3):
        bone = np.moveaxis(hu > 250, axis, 0)
        masks += [bone[k] for k in range(0, bone.shape[0], 3) if bone[k].any()]
    assert all(np.array_equal(_hull(m), _qhull_fill(m)) for m in masks)


#: Metal in the frontal bone, above the eyes (globe centres at z = 0; the forehead's outer table at y ~ -76):
#: a plate on the midline, two screws of a fixation, a tall plate down the forehead, a screw off to the side.
FRONTAL_METAL = {
    "midline plate": [np.array([0.0, -76.0, 35.0])],
    "two screws": [np.array([20.0, -72.0, 25.0]), np.array([-20.0, -72.0, 45.0])],
    "tall plate": [np.array([0.0, -77.0, z]) for z in (15.0, 25.0, 35.0, 45.0)],
    "side screw": [np.array([40.0, -62.0, 30.0])],
}


@pytest.mark.parametrize("amplitude", [600.0, 1000.0])
@pytest.mark.parametrize("metal", sorted(FRONTAL_METAL))
def test_metal_in_the_frontal_bone_removes_no_brain(case, metal, amplitude):
    """Streaks from metal in the forehead draw bone-bright lines through the frontal lobes, in front of the cut
    plane. Read as bone, they went with the skull by the forehead rule (0.6-3.6 cc of the Brain ROI on these,
    and the report said 0 cc: the check used the same bone). Kept now: no brain voxel goes, what goes is a
    subset of what goes without the metal, and the report's figure is the truth's."""
    from deface_ts.phantom.variants import metal_streaks

    ct = case.ct.hu
    brain = next(r for r in case.structures.rois if r.name == "Brain").mask.full(ct.shape)
    config = load_config()
    location = RoiEyeLocator(case.structures, EyesConfig()).locate(ct)
    streaked = metal_streaks(ct, FRONTAL_METAL[metal], amplitude_hu=amplitude)
    bright_brain = brain & (streaked.array > config.region.bone_hu)
    assert bright_brain.sum() > 100  # the streaks do cross the brain as bone
    plan = plan_removal(streaked, body_from_hu(streaked.array, config.region.body_hu), location, [], config)
    clean = plan_removal(ct, body_from_hu(ct.array, config.region.body_hu), location, [], config)
    points = ct.index_to_lps(np.argwhere(bright_brain))
    assert (points @ ANTERIOR >= plan.landmarks.cut_plane_anterior_mm).sum() > 20  # some lie where removal happens
    assert not plan.removed[brain].any() and plan.brain_side_removed_cc == 0.0
    assert not (plan.removed & ~clean.removed).any()


def test_keep_streaks_spans_the_lines_not_the_skull():
    """One slice: a skull ring round a brain disc, a bright line across the brain from metal in the ring. The line's
    voxels join the brain side; the ring does not; without metal nothing changes."""
    from deface_ts.removal.cavity import METAL_HU, keep_streaks

    y, x = np.mgrid[:101, :101] - 50.0
    r = np.hypot(y, x)
    hu = np.full((5, 101, 101), -1000.0)
    hu[:, r <= 45] = 1200.0  # skull
    hu[:, r < 38] = 35.0  # brain
    line = (np.abs(x) <= 1.5) & (r < 38)
    hu[:, line] = 700.0  # a bright streak across the brain
    side = np.broadcast_to((r < 38) & ~line, hu.shape).copy()
    spacing = np.array([2.0, 1.0, 1.0])
    assert np.array_equal(keep_streaks(side.copy(), hu, spacing), side)  # no metal: as it was
    hu[2, 5, 50] = METAL_HU + 71.0  # metal in the ring, in the middle slice
    kept = keep_streaks(side.copy(), hu, spacing)
    assert kept[:, line].all()  # every slice within the streak band (10 mm: all five)
    assert not kept[:, r > 38].any()  # the ring stays skull


def test_a_head_with_a_frontal_plate_is_defaced_and_verified(case, tmp_path):
    """End to end, the tall plate down the forehead at full strength: the face goes and the renders show none
    (what the streaks leave in the plate's slices is no face), the Brain ROI is whole, the report says 0 cc."""
    from deface_ts.io import nifti
    from deface_ts.phantom.variants import metal_streaks
    from deface_ts.pipeline import deface

    ct = case.ct.hu
    brain = next(r for r in case.structures.rois if r.name == "Brain").mask.full(ct.shape)
    location = RoiEyeLocator(case.structures, EyesConfig()).locate(ct)
    streaked = metal_streaks(ct, FRONTAL_METAL["tall plate"], amplitude_hu=1000.0)
    nifti.save(streaked, tmp_path / "ct.nii.gz", dtype=np.int16)
    nifti.save(streaked.with_array(location.eye_mask().astype(np.uint8)), tmp_path / "eyes.nii.gz")
    report = deface(tmp_path / "ct.nii.gz", tmp_path / "out", load_config(None, {"method": "eyes"}),
                    eyes_mask=tmp_path / "eyes.nii.gz")
    assert report["verify"]["status"].startswith("verified") and report["removed"]["brain_side_cc"] == 0.0
    removal = nifti.load(tmp_path / "out" / "removal_mask.nii.gz").array > 0
    assert removal.sum() > 10000 and not (removal & brain).any()
