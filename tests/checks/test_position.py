"""Patient position: from the header, or from the image axes when PatientPosition is empty, checked on the anatomy."""

from __future__ import annotations

import pytest

from deface_ts.checks.position import decide_position, position_from_orientation
from deface_ts.errors import InputError
from deface_ts.geometry.masks import body_from_hu
from deface_ts.geometry.volume import Volume
from deface_ts.io.dicom.case import load_case
from deface_ts.locate.base import Eye, FaceLocation
from deface_ts.locate.ct_eyes import CtEyeLocator


@pytest.mark.parametrize("position", ["HFS", "HFP", "FFS", "FFP"])
def test_position_from_the_image_axes(phantom_cache, position):
    case = load_case(phantom_cache(include_eyes=False, position=position).folder)
    assert case.ct.patient_position == position  # the phantom writes it: the axes must say the same
    ct = case.ct.hu
    location = CtEyeLocator().locate(ct)
    decided = decide_position(ct, body_from_hu(ct.array, -400.0), location, "")
    assert decided["value"] == position and "PatientPosition empty" in decided["how"]
    assert "checked on the anatomy" in decided["how"]
    told = decide_position(ct, body_from_hu(ct.array, -400.0), location, position)
    assert told == {"value": position, "how": f"PatientPosition {position} in the header; checked on the anatomy "
                                             "(eyes in front, skull above)"}


def test_a_header_that_contradicts_the_anatomy_stops_the_case(phantom_cache):
    """A supine scan whose column direction claims the wrong way (rows running anterior): the face is behind."""
    ct = load_case(phantom_cache(include_eyes=False).folder).ct.hu
    location = CtEyeLocator().locate(ct)
    wrong = ct.affine.copy()
    wrong[:3, 1] *= -1  # the row index now runs anterior
    wrong[:3, 3] = ct.affine[:3, 3] + ct.affine[:3, 1] * (ct.shape[1] - 1)  # same field of view
    mislabelled = Volume(ct.array, wrong)
    eyes = []
    for eye in location.eyes:
        index = ct.lps_to_index(eye.centre_mm[None])
        eyes.append(Eye(eye.source, eye.side, mislabelled.index_to_lps(index)[0], eye.mask))
    with pytest.raises(InputError, match="eyes lie in the back half of the head"):
        decide_position(mislabelled, body_from_hu(ct.array, -400.0), FaceLocation("eyes", eyes), "")
    assert position_from_orientation(wrong) == "FFP"  # what the axes alone would have said


@pytest.mark.parametrize("top_mm, problem", [(10.0, True), (30.0, False)])
def test_a_head_that_ends_at_the_eyes_is_flagged(phantom_cache, top_mm, problem):
    """The body cut off 10 mm above the eyes: the skull does not rise 20 mm above them (in a whole head: the
    superior axis points the wrong way); cut 30 mm above, it passes, the anatomy read from a grid sample."""
    import numpy as np

    from deface_ts.checks.position import anatomy_problems
    from deface_ts.geometry.volume import SUPERIOR

    ct = load_case(phantom_cache(include_eyes=False).folder).ct.hu
    location = CtEyeLocator().locate(ct)
    eyes_z = float(np.mean([e.centre_mm @ SUPERIOR for e in location.eyes]))
    body = body_from_hu(ct.array, -400.0)
    height = ct.axis_coordinate(SUPERIOR)
    body &= height <= eyes_z + top_mm
    assert ("the head does not extend above the eyes" in anatomy_problems(ct, body, location)) == problem
