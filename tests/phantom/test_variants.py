"""The scan variants the locator and cavity tests rely on: each must do to the head what its name says."""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.geometry.volume import SUPERIOR, Volume
from deface_ts.phantom import EYE_CENTRES, NOSE_TIP, PhantomOptions, evaluate
from deface_ts.phantom.variants import coarse, cut_field, metal_streaks, pitched, to_spacing


@pytest.fixture(scope="module")
def head() -> Volume:
    hu, _, affine = evaluate(PhantomOptions(position="FFS", rows=96, columns=96, pixel_spacing=2.5, slices=100,
                                            slice_thickness=2.0, noise_hu=0.0, air_noise_hu=0.0))
    return Volume(hu, affine)


def test_coarse_voxels_average_blocks_and_keep_coordinates(head):
    thick = coarse(head, (3, 1, 1))
    assert np.allclose(thick.spacing, [6.0, 2.5, 2.5]) and thick.shape == (33, 96, 96)
    # every thick voxel is the mean of the three thin ones whose centres it spans
    assert np.allclose(thick.array[10], head.array[30:33].mean(axis=0), atol=1e-3)
    assert np.allclose(thick.index_to_lps(np.array([[10, 0, 0]])), head.index_to_lps(np.array([[31, 0, 0]])))
    assert to_spacing(head, (5.0, 5.0, 5.0)).spacing.tolist() == pytest.approx([4.0, 5.0, 5.0])  # nearest factors


def test_cut_field_keeps_the_slices_between_the_limits(head):
    cut = cut_field(head, above_mm=16.0, below_mm=-62.0)
    height = cut.index_to_lps(np.argwhere(np.ones(cut.shape, bool))[:: 96 * 96]) @ SUPERIOR
    assert height.max() <= 16.0 and height.min() >= -62.0 and height.max() > 14.0 and height.min() < -60.0
    assert cut.sample(EYE_CENTRES["left"][None])[0] == pytest.approx(head.sample(EYE_CENTRES["left"][None])[0])
    with pytest.raises(ValueError, match="no slice"):
        cut_field(head, above_mm=-500.0)


def test_pitched_is_a_rigid_rotation_about_the_left_axis(head):
    turned, moved = pitched(head, -20.0, {"nose": NOSE_TIP, "eye": EYE_CENTRES["left"]})
    # distances between points survive; extension lifts the nose
    assert np.linalg.norm(moved["nose"] - moved["eye"]) == pytest.approx(np.linalg.norm(NOSE_TIP - EYE_CENTRES["left"]))
    assert moved["nose"] @ SUPERIOR > NOSE_TIP @ SUPERIOR
    assert turned.sample(moved["eye"][None])[0] == pytest.approx(head.sample(EYE_CENTRES["left"][None])[0], abs=30.0)


def test_metal_streaks_lie_in_the_metal_slices_bright_and_dark(head):
    metal = np.array([20.0, -40.0, -57.0])
    streaked = metal_streaks(head, [metal], spread_mm=6.0, amplitude_hu=1000.0)
    change = streaked.array - head.array
    height = head.axis_coordinate(SUPERIOR)
    near = np.abs(height - metal[2]) <= 6.0
    assert not change[~near & (np.abs(height - metal[2]) > 9.0)].any()  # nothing outside the metal's slices
    assert (change[near] > 300).sum() > 500 and (change[near] < -300).sum() > 500  # both kinds of streak
    nearest = tuple(np.rint(head.lps_to_index(metal[None])[0]).astype(int))
    assert streaked.array[nearest] == 3071.0  # the metal itself, saturated
