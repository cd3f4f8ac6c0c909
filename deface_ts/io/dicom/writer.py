"""Write a derived DICOM-RT set: copies of the originals with only what changed replaced.

Every object gets a new SOPInstanceUID and SeriesInstanceUID from one UidMap,
and every reference to them (RTSTRUCT → CT, RTPLAN → RTSTRUCT, RTDOSE → RTPLAN,
file meta) is remapped through the same map, so the set stays linked. Study and
frame of reference are kept: geometry and study are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from deface_ts import __version__
from deface_ts.forked import Forked
from deface_ts.io.dicom.case import Case
from deface_ts.io.dicom.rtstruct import recontour
from deface_ts.io.dicom.uids import UidMap


@dataclass
class Changes:
    """What differs between the loaded case and the case to write.

    Attributes
    ----------
    ct_mask
        Voxels (CT grid) whose HU value changes; None: CT unchanged.
    ct_hu
        New HU values of the voxels of ``ct_mask``: one value for all, or one per voxel in the mask's C order
        (``hu[ct_mask] = ct_hu``).
    rois
        ROI number → new mask on the CT grid (full array). ROIs not named keep their contours exactly.
    dose_zero
        One boolean mask per dose (dose grid) of voxels set to 0; None: dose unchanged.
    defaced
        Mark the CT as derived with recognisable features removed (PS3.15 E.3.1).
    """

    ct_mask: np.ndarray | None = None
    ct_hu: np.ndarray | float | None = None
    rois: dict[int, np.ndarray] = field(default_factory=dict)
    dose_zero: list[np.ndarray | None] = field(default_factory=list)
    defaced: bool = False


@dataclass
class Written:
    folder: Path
    ct_files: list[Path]
    rtstruct: Path | None
    rtplan: Path | None
    doses: list[Path]
    uids: dict[str, str]


def _set(ds: Dataset, keyword: str, vr: str, value) -> None:
    """Assign by replacing the element, never mutating one shared with the original dataset."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, f"not a DICOM keyword: {keyword}"
    ds[tag] = DataElement(tag, vr, value)


#: A last change to each dataset before it is saved (header de-identification); it returns a new dataset.
Transform = Callable[[Dataset], Dataset]


def _save(ds: Dataset, path: Path, transform: Transform | None = None) -> None:
    _set(ds.file_meta, "MediaStorageSOPInstanceUID", "UI", ds.SOPInstanceUID)
    (transform(ds) if transform is not None else ds).save_as(path, enforce_file_format=True)


def _new_identity(ds: Dataset, uids: UidMap) -> Dataset:
    uids.new(ds.SOPInstanceUID)
    uids.new(ds.SeriesInstanceUID)
    return uids.remap(ds)


def _mark_defaced(ds: Dataset) -> None:
    """Derived image with recognisable visual features cleaned (PS3.3 C.7.6.1, C.12.1; DCM 113102)."""
    image_type = list(ds.get("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"]))
    image_type[0] = "DERIVED"
    if len(image_type) < 2:
        image_type.append("SECONDARY")
    _set(ds, "ImageType", "CS", image_type)
    description = str(ds.get("SeriesDescription", "")).strip()
    _set(ds, "SeriesDescription", "LO", (description + " defaced").strip()[:64])
    _set(ds, "RecognizableVisualFeatures", "CS", "NO")
    code = Dataset()
    code.CodeValue = "113102"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Clean Recognizable Visual Features Option"
    _set(ds, "DeidentificationMethodCodeSequence", "SQ", Sequence([code]))
    _set(ds, "DeidentificationMethod", "LO", f"deface-ts {__version__}: face removed")


def write_ct(case: Case, changes: Changes, folder: Path, uids: UidMap, transform: Transform | None = None) -> list[Path]:
    ct = case.ct
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    mask, new_hu = changes.ct_mask, np.asarray(changes.ct_hu, dtype=np.float64)
    if mask is not None and new_hu.ndim:  # one value per masked voxel: slice k's run starts at start[k]
        start = np.concatenate([[0], np.cumsum([np.count_nonzero(m) for m in mask])])
    for k, original in enumerate(ct.datasets):
        ds = _new_identity(original, uids)
        transfer = original.file_meta.TransferSyntaxUID
        if mask is not None and mask[k].any():
            stored = ct.stored_slice(k)
            hu = new_hu[start[k]:start[k + 1]] if new_hu.ndim else new_hu
            stored[mask[k]] = ct.stored_from_hu(hu, k)
            _set(ds, "PixelData", "OB" if stored.dtype.itemsize == 1 else "OW", stored.tobytes())
            if transfer.is_compressed:
                _set(ds.file_meta, "TransferSyntaxUID", "UI", ExplicitVRLittleEndian)
        elif transfer.is_compressed:
            # The writer re-encodes nothing: a compressed input slice is written uncompressed, same values.
            _set(ds, "PixelData", "OW", ct.stored_slice(k).tobytes())
            _set(ds.file_meta, "TransferSyntaxUID", "UI", ExplicitVRLittleEndian)
        if changes.defaced:
            _mark_defaced(ds)
        path = folder / f"CT_{k + 1:04d}.dcm"
        _save(ds, path, transform)
        paths.append(path)
    return paths


def recontoured(case: Case, changes: Changes, sop_uids: list[str]) -> list[Dataset | None]:
    """New ROIContourSequence items of the ROIs ``changes`` names (None: the item stays), in the file's order.

    ``sop_uids``: the written CT slices' SOPInstanceUIDs, for ContourImageSequence.
    """
    assert case.structures is not None
    items: list[Dataset | None] = []
    for original, roi in zip(case.structures.dataset.ROIContourSequence, _rois_in_contour_order(case)):
        changed = roi is not None and roi.number in changes.rois
        items.append(recontour(roi, changes.rois[roi.number], case.ct.hu, sop_uids, original) if changed else None)
    return items


def write_rtstruct(case: Case, changes: Changes, path: Path, uids: UidMap, transform: Transform | None = None,
                   contours: list[Dataset | None] | None = None) -> Path:
    """The RTSTRUCT with its changed ROIs contoured again (``contours``: :func:`recontoured`'s items, when they
    were made beforehand)."""
    structures = case.structures
    assert structures is not None
    ds = _new_identity(structures.dataset, uids)
    if changes.rois:
        if contours is None:
            contours = recontoured(case, changes, [uids.get(d.SOPInstanceUID) for d in case.ct.datasets])
        items = [original if new is None else uids.remap(new) for original, new in zip(ds.ROIContourSequence, contours)]
        _set(ds, "ROIContourSequence", "SQ", Sequence(items))
    _save(ds, path, transform)
    return path


def _rois_in_contour_order(case: Case):
    by_number = {roi.number: roi for roi in case.structures.rois}  # type: ignore[union-attr]
    for item in case.structures.dataset.ROIContourSequence:  # type: ignore[union-attr]
        yield by_number.get(int(item.get("ReferencedROINumber", -1)))


def write_dose(case: Case, index: int, zero: np.ndarray | None, path: Path, uids: UidMap,
               transform: Transform | None = None) -> Path:
    dose = case.doses[index]
    ds = _new_identity(dose.dataset, uids)
    if zero is not None and zero.any():
        stored = dose.stored.copy()
        stored[zero] = 0
        if dose.dataset.file_meta.TransferSyntaxUID.is_compressed:
            _set(ds.file_meta, "TransferSyntaxUID", "UI", ExplicitVRLittleEndian)
        _set(ds, "PixelData", "OW", stored.reshape(dose.dataset.pixel_array.shape).tobytes())
    _save(ds, path, transform)
    return path


def write_case(case: Case, changes: Changes, folder: Path, uids: UidMap | None = None,
               transform: Transform | None = None, ct_written: Callable[[list[Path]], None] | None = None) -> Written:
    """Write the derived set into ``folder`` (which the caller made atomic); ``transform`` each dataset last.

    The CT series is written first; ``ct_written`` is told its files before the RT objects are written (the
    pipeline starts checking them there).

    Value validation is off while writing: every value is either copied from
    the input (real headers carry malformed dates and the like, which must
    pass through untouched rather than abort the case) or generated here.
    """
    with config.disable_value_validation():
        return _write_case(case, changes, folder, uids or UidMap(), transform, ct_written)


def _write_case(case: Case, changes: Changes, folder: Path, uids: UidMap, transform: Transform | None,
                ct_written: Callable[[list[Path]], None] | None) -> Written:
    # Reserve UIDs of every object first so cross-references resolve whatever the writing order.
    for ds in case.ct.datasets:
        uids.new(ds.SOPInstanceUID)
    others = [o.dataset for o in (case.structures, case.rtplan) if o is not None] + [d.dataset for d in case.doses]
    for ds in [case.ct.datasets[0], *others]:
        uids.new(ds.SOPInstanceUID)
        uids.new(ds.SeriesInstanceUID)
    contours = None
    if case.structures is not None and changes.rois:
        # Contouring the changed ROIs again (numpy, skimage and pydicom, holding the GIL) runs in a forked child
        # while this process writes the CT slices.
        contours = Forked(recontoured, case, changes, [uids.get(d.SOPInstanceUID) for d in case.ct.datasets])
    try:
        ct_files = write_ct(case, changes, folder, uids, transform)
        if ct_written is not None:
            ct_written(ct_files)
        rtstruct = None
        if case.structures is not None:
            rtstruct = write_rtstruct(case, changes, folder / "RTSTRUCT.dcm", uids, transform,
                                      contours.result() if contours is not None else None)
    finally:
        if contours is not None:
            contours.stop()
    rtplan = None
    if case.rtplan is not None:
        rtplan = folder / "RTPLAN.dcm"
        _save(_new_identity(case.rtplan.dataset, uids), rtplan, transform)
    doses = []
    for n in range(len(case.doses)):
        zero = changes.dose_zero[n] if n < len(changes.dose_zero) else None
        doses.append(write_dose(case, n, zero, folder / f"RTDOSE_{n + 1}.dcm", uids, transform))
    return Written(folder, ct_files, rtstruct, rtplan, doses, dict(uids.mapping))
