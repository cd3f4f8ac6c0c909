"""Patient position: read from the header, or decided from ImageOrientationPatient and checked on the anatomy.

Geometry never depends on PatientPosition (0018,5100): every direction comes from
the affine (ImageOrientationPatient, PS3.3 C.7.6.2.1.1). But the report states the
position, and real planning CTs often leave it empty, so it is decided, never
guessed silently: an axial scanner writes its image rows along the table's x axis
and its columns along y, so the signs of the row and column directions give the
position (HFS 1\\0\\0\\0\\1\\0, HFP -1\\0\\0\\0\\-1\\0, FFS -1\\0\\0\\0\\1\\0, FFP 1\\0\\0\\0\\-1\\0;
PS3.3 C.7.6.2.1.1 figures). The anatomy then checks the orientation itself: the
eyes found lie in the front half of the head, and the skull rises above them. A
header that contradicts the anatomy stops the case (the removal would be planned
on the back of the head).
"""

from __future__ import annotations

import numpy as np

from deface_ts.errors import InputError
from deface_ts.geometry.volume import ANTERIOR, SUPERIOR, Volume
from deface_ts.locate.base import FaceLocation

#: Signs of the row direction's x and the column direction's y per axial position.
AXIAL_POSITIONS = {(1, 1): "HFS", (-1, -1): "HFP", (-1, 1): "FFS", (1, -1): "FFP"}


def position_from_orientation(affine: np.ndarray) -> str | None:
    """HFS/HFP/FFS/FFP from the image axes (within 10°), None for decubitus, sagittal or oblique images."""
    unit = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    row, column = unit[:, 2], unit[:, 1]  # column index i runs along the row; row index j down the column
    if abs(row[0]) < np.cos(np.radians(10)) or abs(column[1]) < np.cos(np.radians(10)):
        return None
    return AXIAL_POSITIONS[(int(np.sign(row[0])), int(np.sign(column[1])))]


def anatomy_problems(ct: Volume, body: np.ndarray, location: FaceLocation) -> list[str]:
    """What in the anatomy contradicts the affine's patient axes; empty when the face is in front and the skull on top."""
    if not location.eyes:
        return []
    middle = np.mean([e.centre_mm for e in location.eyes], axis=0)
    # Every step-th voxel per axis (<= ~2 M voxels looked at) is enough for a centroid and the head's top (off by
    # at most step - 1 voxels, against 20 mm). Listing every body voxel first (np.argwhere(body)) took 0.16-0.38 s.
    step = max(1, int(np.ceil((body.size / 2_000_000) ** (1 / 3))))
    points = ct.index_to_lps(np.argwhere(body[::step, ::step, ::step]) * step)
    if len(points) == 0:
        return []
    problems = []
    if (middle - points.mean(axis=0)) @ ANTERIOR <= 0:
        problems.append("the eyes lie in the back half of the head")
    if (points @ SUPERIOR).max() - middle @ SUPERIOR < 20.0:
        problems.append("the head does not extend above the eyes")
    return problems


def decide_position(ct: Volume, body: np.ndarray, location: FaceLocation, header: str | None) -> dict:
    """The report's patient position: the header's value or the orientation's, and how it was decided.

    ``header`` is the CT's PatientPosition ("" when empty), None for input without DICOM header (NIfTI).
    """
    missing = "no DICOM header (NIfTI)" if header is None else "PatientPosition empty"
    from_axes = position_from_orientation(ct.affine)
    problems = anatomy_problems(ct, body, location)
    if problems:
        raise InputError(f"the image orientation contradicts the anatomy ({'; '.join(problems)}): "
                         "check ImageOrientationPatient and the scan direction. Nothing was written.")
    header = (header or "").strip().upper()
    anatomy = "checked on the anatomy (eyes in front, skull above)" if location.eyes else "no eye landmarks to check"
    if header:
        how = f"PatientPosition {header} in the header"
        if from_axes and from_axes != header:
            how += f" (image axes look {from_axes}; geometry follows the image axes, not this tag)"
        return {"value": header, "how": f"{how}; {anatomy}"}
    if from_axes is None:
        return {"value": None, "how": f"{missing} and the image is not axial: not decided; geometry from the "
                                      f"image axes, {anatomy}"}
    return {"value": from_axes, "how": f"{missing}: {from_axes} from the image axes; {anatomy}"}
