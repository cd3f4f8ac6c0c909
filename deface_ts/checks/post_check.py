"""The post-check: the written files re-read and checked by numbers before the output folder appears.

* :func:`post_check_volume`: no body tissue left in the removal region, every eye landmark
  inside it, nothing changed outside it.
* :func:`post_check_ct`: the written CT slices re-read (in the pipeline, by a forked child
  while the RT objects are written) and checked with :func:`post_check_volume`.
* :func:`post_check_links`: the written set linked as the input was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from deface_ts.config import Config
from deface_ts.errors import InputError, PrivacyError
from deface_ts.geometry.volume import Volume
from deface_ts.io.dicom.case import Case
from deface_ts.io.dicom.ct import load_ct
from deface_ts.io.dicom.study import StudyFiles, discover, read_header, select
from deface_ts.locate.base import FaceLocation, anterior_pole
from deface_ts.removal.plan import RemovalPlan


def post_check_volume(written: Volume, original: Volume, plan: RemovalPlan, location: FaceLocation,
                      config: Config) -> dict:
    """Checks on a written CT volume; raises PrivacyError when one fails."""
    if not written.same_grid(original):
        raise PrivacyError("post-check: the written CT is not on the input grid")
    removed = plan.removed
    leftover, changed = _leftover_and_changed(written.array, original.array, removed, config.region.body_hu)
    if leftover:
        raise PrivacyError(f"post-check: {leftover} body voxels remain in the removal region of the written CT")
    for eye in location.eyes:
        if location.method == "face":
            # A face mask must cover the front of each eye (its cornea), not necessarily the centre.
            index, what = anterior_pole(written, eye.mask), "front"
        else:
            index = tuple(np.clip(np.rint(written.lps_to_index(eye.centre_mm[None])[0]).astype(int), 0,
                                  np.array(written.shape) - 1))
            what = "centre"
        if not plan.provenance[index]:
            raise PrivacyError(f"post-check: the {what} of eye landmark '{eye.source}' (centre "
                               f"{eye.centre_mm.round(1).tolist()} mm) is not inside the removal region")
    if changed:
        raise PrivacyError(f"post-check: {changed} voxels outside the removal region differ from the input")
    return {"passed": True, "tissue_voxels_left_in_region": 0, "eyes_inside_region": len(location.eyes),
            "voxels_changed_outside_removal": 0}


def _leftover_and_changed(written: np.ndarray, original: np.ndarray, removed: np.ndarray,
                          body_hu: float) -> tuple[int, int]:
    """Body voxels left in the removal region, and voxels changed outside it.

    Compared slice by slice: whole-volume comparisons make five CT-sized temporaries (180 MB at 512x512x141)
    and gathering a mask's voxels first copies tens of millions of them.
    """
    leftover = changed = 0
    for after, before, gone in zip(written, original, removed):
        leftover += int(np.count_nonzero((after > body_hu) & gone))
        changed += int(np.count_nonzero((after != before) & ~gone))
    return leftover, changed


def post_check_ct(paths: list[Path], original: Volume, plan: RemovalPlan, location: FaceLocation, config: Config,
                  into: np.ndarray | None = None, then: Callable[[], None] | None = None) -> dict:
    """Re-read the written CT slices and check them (:func:`post_check_volume`); copy what was read into ``into``
    and call ``then`` before checking.

    The pipeline runs this in a forked child while it writes the RT objects (``into`` is then memory shared
    with the caller and the visual verification's child, which ``then`` tells to render it: the two checks
    run side by side, and the output appears only when both passed), so only the CT's own files are read here.
    """
    # Decoded straight into ``into`` where its items are the stored values' size (int16 HU from 16-bit values,
    # the usual case): no second CT-sized array in this child, and no copy.
    written = hand_on(load_ct([read_header(p) for p in paths], buffer=into).hu, original, into, then)
    return post_check_volume(written, original, plan, location, config) if config.post_check else {"skipped": True}


def hand_on(written: Volume, original: Volume, into: np.ndarray | None = None,
            then: Callable[[], None] | None = None) -> Volume:
    """The written CT read back, in ``into`` (copied there unless read into it) with ``then`` told, before it
    is checked (`VisualVerification.hand_off`); refused when it is not on the input's grid or of its type."""
    if not written.same_grid(original):
        raise PrivacyError("post-check: the written CT is not on the input grid")
    if into is None:
        return written
    if into.dtype != written.array.dtype:
        raise PrivacyError(f"post-check: the written CT holds {written.array.dtype} values, the input {into.dtype}")
    if not np.shares_memory(into, written.array):
        into[...] = written.array
    if then is not None:
        then()
    return written.with_array(into)


def post_check_links(folder: Path, case: Case) -> tuple[StudyFiles, dict]:
    """The set written in ``folder`` is linked as the input was: RTSTRUCT → CT, RTPLAN → RTSTRUCT, RTDOSE → RTPLAN.

    Found by the same discovery as an input; the RTSTRUCT is read whole, every contour item.
    """
    try:
        written = select(discover(folder))
    except InputError as exc:  # our own output: not an input error but a failed check
        raise PrivacyError(f"post-check: the written set does not hold together: {exc}") from exc
    if case.structures is not None:
        if written.rtstruct is None:
            raise PrivacyError(f"post-check: {folder}: the written RTSTRUCT does not reference the written CT")
        contours = pydicom.dcmread(written.rtstruct.path).get("ROIContourSequence", [])
        if len(contours) != len(case.structures.dataset.get("ROIContourSequence", [])):
            raise PrivacyError(f"post-check: {written.rtstruct.path}: {len(contours)} ROI contours written, "
                               f"{len(case.structures.dataset.ROIContourSequence)} read")
    if case.rtplan is not None and written.rtplan is None:
        raise PrivacyError(f"post-check: {folder}: the written RTPLAN does not reference the written RTSTRUCT")
    if len(written.rtdose) != len(case.doses):
        raise PrivacyError(f"post-check: {folder}: {len(written.rtdose)} of {len(case.doses)} doses link to the set")
    if len(written.warnings) > len(case.files.warnings):
        raise PrivacyError(f"post-check: {folder}: written set is not fully linked: {written.warnings}")
    return written, {"series_instance_uid": written.series_uid, "references_resolved": True}
