"""The CT eye finder on the phantom in every position (no eye ROIs), its refusals, and the weight-free route.

Phantoms are written to DICOM and read back; the render locator that cross-checks
the CT eyes is the real one (real renders, real detectors); a second locator that
disagrees is a real eye-mask locator given a shifted mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from deface_ts.apps.cli import main
from deface_ts.errors import PrivacyError
from deface_ts.geometry.volume import LEFT, Volume
from deface_ts.io.dicom.case import load_case
from deface_ts.locate.ct_eyes import WATER_HU, Candidate, CtEyeLocator, pair_problems
from deface_ts.locate.eyes import MaskEyeLocator
from deface_ts.locate.render import sphere_mask
from deface_ts.locate.weightless import AGREEMENT_MM, WeightFreeLocator
from deface_ts.phantom import EYE_CENTRES
from tests.conftest import copy_study, tree_digest

POSITIONS = ["HFS", "HFP", "FFS", "FFP"]


def blank_globes(folder: Path, hu: float = -90.0) -> None:
    """Fill both globes of a phantom study's CT with orbital fat (as after enucleation), in place."""
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        if ds.Modality != "CT":
            continue
        rows, cols = np.indices((int(ds.Rows), int(ds.Columns)))
        orientation = np.asarray(ds.ImageOrientationPatient, float)
        spacing = [float(v) for v in ds.PixelSpacing]
        points = (np.asarray(ds.ImagePositionPatient, float)
                  + cols[..., None] * spacing[1] * orientation[:3] + rows[..., None] * spacing[0] * orientation[3:])
        inside = np.zeros(rows.shape, dtype=bool)
        for centre in EYE_CENTRES.values():
            inside |= np.linalg.norm(points - centre, axis=-1) <= 13.0
        if inside.any():
            stored = ds.pixel_array.copy()
            stored[inside] = np.rint((hu - float(ds.RescaleIntercept)) / float(ds.RescaleSlope))
            ds.PixelData = stored.astype(stored.dtype).tobytes()
            ds.save_as(path)


@pytest.fixture(scope="module")
def eyeless(phantom_cache):
    return lambda position="HFS": load_case(phantom_cache(include_eyes=False, position=position).folder).ct.hu


@pytest.mark.parametrize("position", POSITIONS)
def test_globes_found_in_every_position(eyeless, position):
    ct = eyeless(position)
    location = CtEyeLocator().locate(ct)
    assert sorted(e.side for e in location.eyes) == ["left", "right"]
    for eye in location.eyes:
        assert eye.source == "ct"
        assert np.linalg.norm(eye.centre_mm - EYE_CENTRES[eye.side]) < 3.0, (position, eye.side, eye.centre_mm)
        assert eye.mask[tuple(np.rint(ct.lps_to_index(eye.centre_mm[None])[0]).astype(int))]
    assert "confidence 1.00" in location.notes[0]


def test_the_same_parameters_find_the_globes_at_fine_resolution(phantom_cache):
    """1 mm pixels, 2 mm slices (the phantom's full size): same finder, same parameters."""
    ct = load_case(phantom_cache(include_eyes=False, rows=256, columns=256, pixel_spacing=1.0, slices=120,
                                 slice_thickness=2.0).folder).ct.hu
    for eye in CtEyeLocator().locate(ct).eyes:
        assert np.linalg.norm(eye.centre_mm - EYE_CENTRES[eye.side]) < 2.0


def test_a_head_without_globes_is_refused(phantom_cache, tmp_path):
    folder = copy_study(phantom_cache(include_eyes=False), tmp_path / "study")
    blank_globes(folder)
    ct = load_case(folder).ct.hu
    assert ct.array[tuple(np.rint(ct.lps_to_index(EYE_CENTRES["left"][None])[0]).astype(int))] < WATER_HU[0]
    with pytest.raises(PrivacyError, match="CT eye finder found no pair of eye globes"):
        CtEyeLocator().locate(ct)


def test_a_lone_globe_is_refused(eyeless):
    """One globe filled with fat: the other alone is no pair, whatever its score."""
    ct = eyeless()
    hu = ct.array.copy()
    hu[sphere_mask(ct, EYE_CENTRES["left"], 13.0)] = -90.0
    with pytest.raises(PrivacyError, match="no pair"):
        CtEyeLocator().locate(Volume(hu, ct.affine))


def test_pair_checks_name_what_is_wrong():
    def at(s, a, left):
        return Candidate((0, 0, 0), np.array([s, a, left], float), 1.0, 0.5)

    assert pair_problems(at(0, 0, 31), at(0, 0, -31)) == []
    assert "apart" in pair_problems(at(0, 0, 15), at(0, 0, -15))[0]
    assert "apart" in pair_problems(at(0, 0, 50), at(0, 0, -50))[0]
    assert "not side by side" in pair_problems(at(20, 0, 31), at(0, 0, -31))[0]
    assert "not side by side" in pair_problems(at(0, 20, 31), at(0, 0, -31))[0]


def test_cross_check_agrees_and_refuses_a_disagreement(eyeless):
    ct = eyeless()
    truth = np.zeros(ct.shape, dtype=bool)
    for centre in EYE_CENTRES.values():
        truth |= sphere_mask(ct, centre, 12.0)
    location = WeightFreeLocator(CtEyeLocator(), MaskEyeLocator(truth, "truth")).locate(ct)
    assert {e.source for e in location.eyes} == {"ct"} and "confirmed" in location.notes[0]
    shift = AGREEMENT_MM + 4.0
    shifted = np.zeros(ct.shape, dtype=bool)
    for centre in EYE_CENTRES.values():
        shifted |= sphere_mask(ct, centre + shift * LEFT * np.sign(centre[0]), 12.0)
    with pytest.raises(PrivacyError, match="disagree on the eyes") as error:
        WeightFreeLocator(CtEyeLocator(), MaskEyeLocator(shifted, "shifted")).locate(ct)
    assert "--eyes-mask" in str(error.value) and "models status" in str(error.value)


def test_method_eyes_falls_back_to_the_ct(phantom_cache, tmp_path):
    study = phantom_cache(include_eyes=False)
    out = tmp_path / "out"
    assert main(["deface", str(study.folder), str(out), "--method", "eyes"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "eyes" and sorted(report["landmarks"]["eye_centres_mm"]) == ["left:ct", "right:ct"]
    assert report["verify"]["status"].startswith("verified") and report["removed"]["brain_side_cc"] == 0.0


def test_no_eye_roi_and_no_globes_fails_with_next_steps(phantom_cache, tmp_path, capsys):
    folder = copy_study(phantom_cache(include_eyes=False), tmp_path / "study")
    blank_globes(folder)
    before = tree_digest(folder)
    assert main(["deface", str(folder), str(tmp_path / "out"), "--method", "eyes"]) == 6
    err = capsys.readouterr().err
    assert "no eye ROI found" in err and "'BODY'" in err and "CT eye finder" in err
    assert "--eye-pattern" in err and "--eyes-mask" in err and "models status" in err and "Nothing was written" in err
    assert not (tmp_path / "out").exists() and tree_digest(folder) == before
