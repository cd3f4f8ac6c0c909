"""QC pictures of real defaced phantoms: valid PNGs, upright for any patient position, overlays where the masks are."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deface_ts.config import load_config
from deface_ts.geometry.view import AnatomicalView
from deface_ts.geometry.volume import LEFT, Volume, affine_from_dicom
from deface_ts.io import nifti
from deface_ts.io.dicom.case import load_case
from deface_ts.phantom import CHIN, EYE_CENTRES
from deface_ts.pipeline import deface
from deface_ts.reporting import qc

POSITIONS = ["HFS", "FFP"]  # FFP flips the superior and the anterior axes of the array relative to HFS
ANGLES = (0.0, 45.0, -45.0)


def defacing_config():
    # verify off: this file tests the pictures, not the visual verification (tests/test_deface.py does)
    return load_config(None, {"method": "eyes", "verify.mode": "off"})


@pytest.fixture(scope="module")
def defaced(phantom_cache, tmp_path_factory):
    """position → (before case, after case, removal mask, protection mask, output folder) of a real defacing."""
    out = {}
    for position in POSITIONS:
        study = phantom_cache(position=position)
        folder = tmp_path_factory.mktemp("qc") / position
        deface(study.folder, folder, defacing_config())
        removed = nifti.load(folder / "nifti" / "removal_mask.nii.gz").array > 0
        protected = nifti.load(folder / "nifti" / "protection_mask.nii.gz").array > 0
        out[position] = (load_case(study.folder), load_case(folder / "dicom"), removed, protected, folder)
    return out


@pytest.fixture(scope="module")
def pictures(defaced, tmp_path_factory):
    """position → (folder, returned names) of the QC pictures; renders only for HFS (they cost the most)."""
    out = {}
    for position, (before, after, removed, protected, _) in defaced.items():
        renders_before = renders_after = None
        if position == "HFS":
            from deface_ts.vision.render import render_views

            renders_before = render_views(before.ct.hu, ANGLES)
            renders_after = render_views(after.ct.hu, frame=renders_before)
        folder = tmp_path_factory.mktemp("pictures") / position
        names = qc.write_qc_pictures(folder, before.ct.hu, after.ct.hu, removed, protected,
                                     list(EYE_CENTRES.values()), before.doses[0].gy, after.doses[0].gy,
                                     renders_before, renders_after)
        out[position] = (folder, names)
    return out


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def panels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The before and after panels of a one-row slice picture (layout: title, labels, two equal panels)."""
    h, w = image.shape[:2]
    top = 2 * qc.GAP + 2 * qc.LABEL_H
    width = (w - 3 * qc.GAP) // 2
    rows = slice(top, h - qc.GAP)
    return image[rows, qc.GAP:qc.GAP + width], image[rows, 2 * qc.GAP + width:2 * qc.GAP + 2 * width]


def tinted(image: np.ndarray, colour: str) -> np.ndarray:
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    # overlays are blended at 45 %: red leads its other channels by >= 85, green by >= 58, grey by 0
    return (r - np.maximum(g, b) > 40) if colour == "red" else (g - np.maximum(r, b) > 40)


def ball(ct: Volume, centre_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    k, j, i = np.indices(ct.shape)
    points = ct.index_to_lps(np.stack([k, j, i], axis=-1).reshape(-1, 3))
    return (np.linalg.norm(points - centre_mm, axis=1) <= radius_mm).reshape(ct.shape)


def test_pictures_are_valid_nonblank_pngs(pictures):
    folder, names = pictures["HFS"]
    assert set(names) == {"renders", "axial", "sagittal", "dose"}
    for name, file in names.items():
        path = folder / file
        with Image.open(path) as image:
            image.verify()  # a complete, uncorrupted PNG
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB" and min(image.size) >= 200, (name, image.size)
        pixels = rgb(path)
        assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, name
    # without renders, no render picture
    assert set(pictures["FFP"][1]) == {"renders", "axial", "sagittal", "dose"} - {"renders"}


@pytest.mark.parametrize("position", POSITIONS)
def test_slices_are_upright_for_any_patient_position(defaced, tmp_path, position):
    """Mark a ball between the eyes as removed and one at the chin as protected: eyes above chin, face on the left."""
    before, after, _, _, _ = defaced[position]
    ct = before.ct.hu
    eyes_mid = (EYE_CENTRES["left"] + EYE_CENTRES["right"]) / 2.0
    removed, protected = ball(ct, eyes_mid, 8.0), ball(ct, CHIN, 8.0)
    names = qc.write_qc_pictures(tmp_path, ct, after.ct.hu, removed, protected, list(EYE_CENTRES.values()))
    panel, _ = panels(rgb(tmp_path / names["sagittal"]))
    eyes_rc, chin_rc = np.argwhere(tinted(panel, "red")).mean(axis=0), np.argwhere(tinted(panel, "green")).mean(axis=0)
    assert eyes_rc[0] < chin_rc[0]  # superior at the top
    assert eyes_rc[1] < panel.shape[1] / 2 and chin_rc[1] < panel.shape[1] / 2  # anterior on the left
    # axial: a ball on the patient's left eye lands on the image's right, in the anterior (upper) half
    left_eye = ball(ct, EYE_CENTRES["left"], 8.0)
    names = qc.write_qc_pictures(tmp_path, ct, after.ct.hu, left_eye, np.zeros_like(left_eye),
                                 list(EYE_CENTRES.values()))
    panel, _ = panels(rgb(tmp_path / names["axial"]))
    row, col = np.argwhere(tinted(panel, "red")).mean(axis=0)
    assert col > panel.shape[1] / 2 and row < panel.shape[0] / 2


@pytest.mark.parametrize("position", POSITIONS)
def test_removal_overlay_is_where_the_removal_mask_is(defaced, pictures, position):
    before, _, removed, protected, _ = defaced[position]
    folder, names = pictures[position]
    # the midline sagittal slice of the mask, found independently of qc: nearest to x = 0 mm between the eyes
    view = AnatomicalView.of(before.ct.hu)
    midline = float((EYE_CENTRES["left"] + EYE_CENTRES["right"]) @ LEFT) / 2.0
    column = int(np.argmin(np.abs(view.coordinates[2] - midline)))
    mask_slice = view.view(removed & ~protected)[:, :, column]
    panel_before, panel_after = panels(rgb(folder / names["sagittal"]))
    red = tinted(panel_before, "red")
    assert red.any()
    # the red area is the mask's area (as a fraction of the slice: independent of the display scale)
    assert abs(red.mean() - mask_slice.mean()) < 0.01, (red.mean(), mask_slice.mean())
    # ... in front: the removal lies anterior of the eyes, on the left of an upright sagittal slice
    assert np.argwhere(red)[:, 1].max() < panel_before.shape[1] * 0.6
    # and where it is red before, the after panel shows air (black in the soft-tissue window)
    assert (panel_after[red] < 30).all()
    # protected voxels (the PTV reaching into the face, with margin) are green, and the same grey after
    green = tinted(panel_before, "green")
    assert green.sum() > 100
    grey_before = (panel_before[green][:, 1] - qc.OVERLAY_ALPHA * qc.PROTECTED_RGB[1]) / (1 - qc.OVERLAY_ALPHA)
    assert np.abs(grey_before - panel_after[green][:, 1]).max() <= 3


def test_dose_picture_shows_dose_removed_in_front(pictures):
    folder, names = pictures["HFS"]
    image = rgb(folder / names["dose"])
    h, w = image.shape[:2]
    half = (w - 3 * qc.GAP) // 2
    top = 2 * qc.GAP + 2 * qc.LABEL_H

    def coloured(panel):  # dose colour: saturated (the CT under it is grey)
        return (panel.max(axis=2) - panel.min(axis=2)) > 60

    axial_before = image[top:top + half, qc.GAP:qc.GAP + half]
    axial_after = image[top:top + half, 2 * qc.GAP + half:2 * qc.GAP + 2 * half]
    before, after = coloured(axial_before), coloured(axial_after)
    assert before.sum() > after.sum() > 0
    front = slice(0, half // 3)  # anterior third: the removed face held dose that is now zero
    assert before[front].sum() > 2 * after[front].sum()


def test_pictures_of_a_full_size_ct_take_about_a_second(tmp_path):
    affine = affine_from_dicom(np.array([-250.0, -250.0, -200.0]), (1, 0, 0, 0, 1, 0), (2.0, 0.977, 0.977))
    hu = np.full((180, 512, 512), -1000, dtype=np.int16)
    hu[:, 100:420, 120:400] = 40
    ct = Volume(hu, affine)
    removed = np.zeros(hu.shape, dtype=bool)
    removed[90:, 100:180] = True
    dose = Volume(np.linspace(0, 70, 100 * 120 * 120, dtype=np.float32).reshape(100, 120, 120),
                  affine_from_dicom(np.array([-150.0, -150.0, -150.0]), (1, 0, 0, 0, 1, 0), (3.0, 2.5, 2.5)))
    start = time.perf_counter()
    names = qc.write_qc_pictures(tmp_path, ct, ct.with_array(np.where(removed, -1000, hu).astype(np.int16)), removed,
                                 np.zeros_like(removed), [np.array([30.0, -60.0, 0.0]), np.array([-30.0, -60.0, 0.0])],
                                 dose, dose)
    seconds = time.perf_counter() - start
    assert set(names) == {"axial", "sagittal", "dose"}
    assert seconds < 3.0, seconds  # ~0.2 s here; generous for shared CI cores
