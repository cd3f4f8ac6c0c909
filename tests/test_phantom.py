"""The phantom study itself: valid DICOM, one anatomy in patient space, the features tests rely on."""

from __future__ import annotations

import numpy as np
import pytest

from deface_ts.dicom.case import load_case
from deface_ts.volume import ANTERIOR
from tests.checkers import dciodvfy_errors, requires_dciodvfy


@requires_dciodvfy
@pytest.mark.parametrize("options", [dict(), dict(stored_dtype="uint16", dose_bits=16, position="FFS")])
def test_every_object_is_valid(phantom_cache, tmp_path, options):
    study = phantom_cache(**options)
    for path in [study.ct_files[0], study.ct_files[-1], study.rtstruct_file, study.rtplan_file, study.rtdose_file]:
        assert dciodvfy_errors(path, tmp_path) == [], path


def test_anatomy_the_tests_rely_on(phantom):
    case = load_case(phantom.folder)
    ct = case.ct.hu

    def hu(point):
        return float(ct.array[tuple(np.rint(ct.lps_to_index(np.asarray(point)[None])[0]).astype(int))])

    for side in ("left", "right"):
        assert -20 < hu(phantom.eye_centres[side]) < 40  # vitreous
    assert hu(phantom.nose_tip) > -200 and hu(phantom.nose_tip + 8 * ANTERIOR) < -900  # skin, then air
    ptv = case.structures.get(phantom.roi_names["ptv_face"]).mask
    eye_plane = np.mean([c @ ANTERIOR for c in phantom.eye_centres.values()])
    points = ct.index_to_lps(np.argwhere(ptv.array) + ptv.offset)
    assert (points @ ANTERIOR).max() > eye_plane + 10  # the PTV reaches into the face
    brain = case.structures.get(phantom.roi_names["brain"]).mask
    assert brain.count() > 0
    roles = {r.name: r.role for r in case.structures.rois}
    assert roles[phantom.roi_names["body"]] == "body" and roles[phantom.roi_names["gtv"]] == "gtv"
    assert len(case.structures.rois) >= 20


def test_no_eyes_option_drops_every_eye_structure(phantom_cache):
    study = phantom_cache(include_eyes=False)
    names = {r.name for r in load_case(study.folder).structures.rois}
    assert not any("eye" in n.lower() or "lens" in n.lower() for n in names)
