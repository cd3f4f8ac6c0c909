"""Volume: the affine and the operations callers would otherwise rebuild (crop, paste, same grid, voxel volume)."""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.geometry.volume import ANTERIOR, LEFT, SUPERIOR, Volume, affine_from_dicom
from deface_ts.phantom.anatomy import ORIENTATIONS


def oblique_volume() -> Volume:
    """A small grid with unequal spacing, a rotation and an offset: no shortcut through the identity works."""
    angle = np.radians(20.0)
    row = np.array([np.cos(angle), np.sin(angle), 0.0])
    col = np.array([-np.sin(angle), np.cos(angle), 0.0])
    affine = affine_from_dicom(np.array([-30.0, 12.5, 100.0]), np.concatenate([row, col]), (2.5, 0.8, 1.2))
    return Volume(np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8), affine)


def test_construction_checks_the_affine_and_the_array():
    with pytest.raises(ValueError, match=r"Affine matrix must have shape \(4, 4\)"):
        Volume(np.zeros((2, 2, 2)), np.eye(3))
    with pytest.raises(ValueError, match="must be 3-D"):
        Volume(np.zeros((2, 2)), np.eye(4))
    with pytest.raises(ValueError, match="does not match grid"):
        oblique_volume().with_array(np.zeros((2, 2, 2)))


def test_index_and_patient_coordinates_are_inverse():
    volume = oblique_volume()
    index = np.array([[0, 0, 0], [5, 6, 7], [2.5, 3.25, 1.0]])
    assert np.allclose(volume.lps_to_index(volume.index_to_lps(index)), index)
    assert np.allclose(volume.spacing, [2.5, 0.8, 1.2])
    assert volume.voxel_cc == pytest.approx(2.5 * 0.8 * 1.2 / 1000.0)


def test_crop_keeps_patient_coordinates_and_paste_puts_it_back():
    volume = oblique_volume()
    box = (slice(1, 4), slice(2, 7), slice(3, 5))
    part = volume.crop(box)
    assert part.shape == (3, 5, 2) and np.array_equal(part.array, volume.array[box])
    # A voxel of the crop lies where the same voxel of the whole volume lies.
    assert np.allclose(part.index_to_lps(np.array([[0, 0, 0], [2, 4, 1]])),
                       volume.index_to_lps(np.array([[1, 2, 3], [3, 6, 4]])))
    back = volume.paste(part, fill=-1.0)
    assert back.same_grid(volume)
    assert np.array_equal(back.array[box], volume.array[box])
    outside = np.ones(volume.shape, bool)
    outside[box] = False
    assert (back.array[outside] == -1.0).all()


def test_paste_refuses_what_is_not_a_crop_of_the_grid():
    volume = oblique_volume()
    part = volume.crop((slice(0, 2), slice(0, 2), slice(0, 2)))
    shifted = Volume(part.array, part.affine.copy())
    shifted.affine[:3, 3] += 0.3  # a fraction of a voxel: another grid
    with pytest.raises(ValueError, match="not a crop of this grid"):
        volume.paste(shifted)
    outside = Volume(part.array, part.affine.copy())
    outside.affine[:3, 3] = volume.index_to_lps(np.array([[5, 6, 7]]))[0]  # runs off the far corner
    with pytest.raises(ValueError, match="not a crop of this grid"):
        volume.paste(outside)


def test_same_grid_compares_shape_and_affine():
    volume = oblique_volume()
    assert volume.same_grid(volume.with_array(np.zeros(volume.shape)))
    moved = Volume(volume.array, volume.affine.copy())
    moved.affine[0, 3] += 0.01
    assert not volume.same_grid(moved) and volume.same_grid(moved, atol_mm=0.02)
    assert not volume.same_grid(volume.crop((slice(0, 5), slice(None), slice(None))))


@pytest.mark.parametrize("position", sorted(ORIENTATIONS))
def test_axis_coordinate_follows_the_affine_in_every_position(position):
    orientation = np.array(ORIENTATIONS[position], dtype=float)
    affine = affine_from_dicom(np.array([10.0, -20.0, 30.0]), orientation, (3.0, 2.0, 1.0))
    volume = Volume(np.zeros((4, 5, 6)), affine)
    for direction in (ANTERIOR, SUPERIOR, LEFT):
        along = volume.axis_coordinate(direction)
        index = np.argwhere(np.ones(volume.shape, bool))
        assert np.allclose(along.ravel(), volume.index_to_lps(index) @ direction, atol=1e-4)
