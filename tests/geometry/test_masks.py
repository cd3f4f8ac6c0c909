"""Masks on the CT grid: bounding box, BoxMask, largest component, body from HU, dilation in mm."""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.geometry.masks import BoxMask, ball, body_from_hu, bounding_box, dilate_mm, largest_component
from deface_ts.geometry.volume import Volume


def test_bounding_box_with_margins_clipped_to_the_array():
    mask = np.zeros((10, 12, 14), dtype=bool)
    mask[2, 3, 4] = mask[5, 9, 13] = True
    assert bounding_box(mask) == (slice(2, 6), slice(3, 10), slice(4, 14))
    assert bounding_box(mask, 1) == (slice(1, 7), slice(2, 11), slice(3, 14))
    assert bounding_box(mask, np.array([0, 5, 2])) == (slice(2, 6), slice(0, 12), slice(2, 14))
    assert bounding_box(np.zeros((3, 3, 3), dtype=bool)) is None


def test_box_mask_round_trip_and_empty():
    mask = np.zeros((6, 7, 8), dtype=bool)
    mask[1:3, 2, 4:7] = True
    boxed = BoxMask.from_full(mask)
    assert boxed.offset == (1, 2, 4) and boxed.array.shape == (2, 1, 3) and boxed.count() == 6
    assert np.array_equal(boxed.full(mask.shape), mask)
    empty = BoxMask.from_full(np.zeros_like(mask))
    assert empty.count() == 0 and not empty.full(mask.shape).any()


def test_largest_component_and_body_from_hu():
    hu = np.full((3, 20, 20), -1000.0)
    hu[:, 2:15, 2:15] = 40.0  # the patient
    hu[:, 6:9, 6:9] = -1000.0  # air inside (a sinus): filled per slice
    hu[:, 17:19, 17:19] = 40.0  # a couch fragment: smaller, dropped
    body = body_from_hu(hu, -400.0)
    assert body[:, 7, 7].all() and not body[:, 18, 18].any() and body.sum() == 3 * 13 * 13
    assert not largest_component(np.zeros((2, 2, 2), bool)).any()


def test_dilate_mm_uses_the_grid_spacing():
    grid = Volume(np.zeros((9, 9, 9)), np.diag([3.0, 1.0, 1.0, 1.0]))
    mask = np.zeros(grid.shape, dtype=bool)
    mask[4, 4, 4] = True
    grown = dilate_mm(grid, mask, 3.0)
    assert grown[4, 4, 1] and grown[4, 4, 7] and not grown[4, 4, 0]  # 3 mm = 3 columns
    assert grown[3, 4, 4] and grown[5, 4, 4] and not grown[2, 4, 4]  # 3 mm = 1 slice
    assert dilate_mm(grid, mask, 0.5) is mask  # under one voxel: unchanged


@pytest.mark.parametrize("spacing, radius", [((1.25, 1.96, 1.96), 3.0), ((3.0, 2.0, 2.0), 5.0), ((1.0, 1.0, 1.0), 2.0),
                                             ((2.5, 0.98, 0.98), 4.0)])
def test_ball_erosion_and_dilation_equal_distance_transforms(spacing, radius):
    """What the skin stripping and the protection margins rely on: morphology by `ball` is the exact
    Euclidean opening/dilation a distance transform gives, on anisotropic grids too."""
    from scipy import ndimage

    mask = ndimage.binary_opening(np.random.default_rng(7).random((30, 40, 40)) > 0.35)
    element = ball(radius, spacing)
    eroded = ndimage.binary_erosion(mask, structure=element, border_value=1)
    assert np.array_equal(eroded, ndimage.distance_transform_edt(mask, sampling=spacing) > radius)
    dilated = ndimage.binary_dilation(mask, structure=element)
    assert np.array_equal(dilated, ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius)
