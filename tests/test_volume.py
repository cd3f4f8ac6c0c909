"""Volume helpers."""

from __future__ import annotations

import numpy as np

from deface_ts.geometry.volume import bounding_box


def test_bounding_box_with_margins_clipped_to_the_array():
    mask = np.zeros((10, 12, 14), dtype=bool)
    mask[2, 3, 4] = mask[5, 9, 13] = True
    assert bounding_box(mask) == (slice(2, 6), slice(3, 10), slice(4, 14))
    assert bounding_box(mask, 1) == (slice(1, 7), slice(2, 11), slice(3, 14))
    assert bounding_box(mask, np.array([0, 5, 2])) == (slice(2, 6), slice(0, 12), slice(2, 14))
    assert bounding_box(np.zeros((3, 3, 3), dtype=bool)) is None
