"""AnatomicalView: any axis-aligned grid shown as (superior, anterior, left), as numpy views and as a Volume."""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.geometry.view import AnatomicalView
from deface_ts.geometry.volume import ANTERIOR, LEFT, SUPERIOR, Volume, affine_from_dicom
from deface_ts.phantom.anatomy import ORIENTATIONS


def grid(position: str, flip_slices: bool = False) -> Volume:
    orientation = np.array(ORIENTATIONS[position], dtype=float)
    step = -2.0 if flip_slices else 2.0
    affine = affine_from_dicom(np.array([-40.0, 25.0, 70.0]), orientation, (step, 1.5, 1.0))
    return Volume(np.random.default_rng(0).random((5, 6, 7)).astype(np.float32), affine)


@pytest.mark.parametrize("flip_slices", [False, True])
@pytest.mark.parametrize("position", sorted(ORIENTATIONS))
def test_view_axes_increase_superior_anterior_left(position, flip_slices):
    volume = grid(position, flip_slices)
    view = AnatomicalView.of(volume)
    for axis, direction in enumerate((SUPERIOR, ANTERIOR, LEFT)):
        assert np.all(np.diff(view.coordinates[axis]) > 0)
        # The coordinate of each view index is that of the source voxel the view shows there.
        along = view.view(volume.axis_coordinate(direction) + np.zeros(volume.shape, np.float32))
        assert np.allclose(np.moveaxis(along, axis, 0)[:, 0, 0], view.coordinates[axis], atol=1e-4)
    assert np.array_equal(view.unview(view.view(volume.array)), volume.array)


@pytest.mark.parametrize("position", sorted(ORIENTATIONS))
def test_view_as_a_volume_keeps_every_voxel_in_place(position):
    volume = grid(position, flip_slices=position.startswith("F"))
    view = AnatomicalView.of(volume)
    shown = view.volume(volume)
    assert np.shares_memory(shown.array, volume.array)  # a view, not a copy
    index = np.argwhere(np.ones(shown.shape, bool))
    source = np.rint(volume.lps_to_index(shown.index_to_lps(index))).astype(int)
    assert np.array_equal(shown.array[tuple(index.T)], volume.array[tuple(source.T)])
    # Its axes are the anatomical directions, positive.
    unit = shown.affine[:3, :3] / shown.spacing
    assert np.allclose(unit, np.column_stack([SUPERIOR, ANTERIOR, LEFT]))


def test_oblique_grid_is_refused_with_the_reason():
    angle = np.radians(10.0)
    orientation = np.array([np.cos(angle), np.sin(angle), 0.0, -np.sin(angle), np.cos(angle), 0.0])
    volume = Volume(np.zeros((3, 3, 3)), affine_from_dicom(np.zeros(3), orientation, (1.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match="oblique"):
        AnatomicalView.of(volume)
