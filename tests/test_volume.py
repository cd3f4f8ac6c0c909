"""Volume helpers."""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.geometry.volume import bounding_box


def test_bounding_box_with_margins_clipped_to_the_array():
    mask = np.zeros((10, 12, 14), dtype=bool)
    mask[2, 3, 4] = mask[5, 9, 13] = True
    assert bounding_box(mask) == (slice(2, 6), slice(3, 10), slice(4, 14))
    assert bounding_box(mask, 1) == (slice(1, 7), slice(2, 11), slice(3, 14))
    assert bounding_box(mask, np.array([0, 5, 2])) == (slice(2, 6), slice(0, 12), slice(2, 14))
    assert bounding_box(np.zeros((3, 3, 3), dtype=bool)) is None


@pytest.mark.parametrize("spacing, radius", [((1.25, 1.96, 1.96), 3.0), ((3.0, 2.0, 2.0), 5.0), ((1.0, 1.0, 1.0), 2.0),
                                             ((2.5, 0.98, 0.98), 4.0)])
def test_ball_erosion_and_dilation_equal_distance_transforms(spacing, radius):
    """What the skin stripping and the protection margins rely on: morphology by `ball` is the exact
    Euclidean opening/dilation a distance transform gives, on anisotropic grids too."""
    from scipy import ndimage

    from deface_ts.geometry.volume import ball

    mask = ndimage.binary_opening(np.random.default_rng(7).random((30, 40, 40)) > 0.35)
    element = ball(radius, spacing)
    eroded = ndimage.binary_erosion(mask, structure=element, border_value=1)
    assert np.array_equal(eroded, ndimage.distance_transform_edt(mask, sampling=spacing) > radius)
    dilated = ndimage.binary_dilation(mask, structure=element)
    assert np.array_equal(dilated, ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius)
