"""Write the phantom of :mod:`deface_ts.phantom.anatomy` as a DICOM-RT study: CT series, RTSTRUCT, RTPLAN, RTDOSE.

Every object is meant to pass dciodvfy without errors. Real-world traps are built
in on purpose: CT file names are random and InstanceNumbers run against the
geometry for feet-first scans, so a reader must sort by ImagePositionPatient;
the dose grid is coarser than the CT and offset from it by a non-integer number
of voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid
from skimage.measure import find_contours

from deface_ts.geometry.masks import BoxMask
from deface_ts.geometry.volume import Volume, affine_from_dicom
from deface_ts.phantom.anatomy import (
    EYE_KEYS,
    ORIENTATIONS,
    ROIS,
    PhantomOptions,
    PhantomStudy,
    evaluate_boxes,
    roi_name,
)
from deface_ts.phantom.surfaces import CHIN, EYE_CENTRES, NOSE_TIP

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # the RTReferencedStudySequence's retired SOP class
PADDING_HU = -3024
_CONTOUR_DATA = 0x30060050
_DATE, _TIME = "20260101", "120000"


def _uid(options: PhantomOptions, *parts) -> str:
    """A UID that depends only on the seed, patient and ``parts``: the same options give the same study."""
    return generate_uid(entropy_srcs=["deface-ts phantom", options.patient_id, str(options.seed), *map(str, parts)])


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
    return item


def _base(options: PhantomOptions, sop_class: str, sop_uid: str, modality: str, series_uid: str,
          study_uid: str, frame_uid: str | None = None) -> Dataset:
    """SOP Common, Patient, General Study, General Series, General Equipment (and Frame of Reference)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = UID(sop_class), UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = _DATE, _TIME
    ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime = _DATE, _TIME, _DATE, _TIME
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.OperatorsName = "", "", ""
    ds.Modality = modality
    ds.Manufacturer, ds.ManufacturerModelName = "deface-ts", "analytic model"
    ds.StationName, ds.SoftwareVersions = "SIMCT01", "1"
    ds.StudyDescription = "Head and neck phantom"
    ds.SeriesDescription = {"CT": "Planning CT", "RTSTRUCT": "Structures", "RTPLAN": "Plan", "RTDOSE": "Dose"}[modality]
    ds.PatientName, ds.PatientID = options.patient_name, options.patient_id
    ds.PatientBirthDate, ds.PatientSex = "19600101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyID, ds.SeriesNumber = "1", {"CT": 1, "RTSTRUCT": 2, "RTPLAN": 3, "RTDOSE": 4}[modality]
    if frame_uid is not None:
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
    return ds


def write_phantom_study(folder: Path, options: PhantomOptions | None = None) -> PhantomStudy:
    """Write the phantom's CT series, RTSTRUCT, RTDOSE and RTPLAN into ``folder`` (created if needed).

    File names and InstanceNumbers are deliberately unrelated to geometry.
    """
    folder, options = Path(folder), options or PhantomOptions()
    folder.mkdir(parents=True, exist_ok=True)
    hu, masks, affine = evaluate_boxes(options)
    ct = Volume(hu, affine)
    study_uid, frame_uid = _uid(options, "study"), _uid(options, "frame")
    series_uid = _uid(options, "ct series", options.position)
    rtstruct_uid, plan_uid = _uid(options, "rtstruct", options.position), _uid(options, "rtplan", options.position)
    ct_files, sop_uids = _write_ct(folder, options, ct, study_uid, series_uid, frame_uid)
    keys = [k for k in ROIS if options.include_eyes or k not in EYE_KEYS]
    roi_names = {key: roi_name(key, options.roi_naming) for key in keys}
    rtstruct_file = folder / "structures.dcm"
    rs = _rtstruct(options, ct, masks, keys, roi_names, sop_uids, rtstruct_uid, study_uid, series_uid, frame_uid)
    rs.save_as(rtstruct_file, enforce_file_format=True)
    rtplan_file = rtdose_file = None
    if options.include_plan:
        rtplan_file = folder / "plan.dcm"
        _rtplan(options, plan_uid, rtstruct_uid, study_uid, frame_uid).save_as(rtplan_file, enforce_file_format=True)
    if options.include_dose:
        rtdose_file = folder / "dose.dcm"
        # The plan is referenced even when not written: a study missing its plan is a case to handle.
        dose = _rtdose(options, ct, masks["body"], study_uid, frame_uid, plan_uid)
        dose.save_as(rtdose_file, enforce_file_format=True)
    return PhantomStudy(folder, ct_files, rtstruct_file, rtdose_file, rtplan_file, series_uid, frame_uid, study_uid,
                        affine, {k: v.copy() for k, v in EYE_CENTRES.items()}, NOSE_TIP.copy(), roi_names,
                        CHIN.copy(), sop_uids)


# ---------------------------------------------------------------------------------------------------- CT
def _write_ct(folder: Path, options: PhantomOptions, ct: Volume, study_uid: str, series_uid: str,
              frame_uid: str) -> tuple[list[Path], list[str]]:
    """One file per slice; returns files and SOPInstanceUIDs in slice (affine) order."""
    unsigned = options.stored_dtype == "uint16"
    intercept = -1024.0 if unsigned else 0.0
    low, high = (0, 4095) if unsigned else (-32768, 32767)
    padding = None
    if options.fov_padding and not unsigned:
        j, i = np.indices(ct.shape[1:])
        radius = min(ct.shape[1:]) / 2.0
        padding = (j - (ct.shape[1] - 1) / 2) ** 2 + (i - (ct.shape[2] - 1) / 2) ** 2 > radius**2
    rng = np.random.default_rng(options.seed + 1)
    names = rng.permutation(len(ct.array))
    files, uids = [], []
    for k in range(ct.shape[0]):
        sop = _uid(options, "ct", options.position, k)
        ds = _base(options, CT_IMAGE_STORAGE, sop, "CT", series_uid, study_uid, frame_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ContentDate, ds.ContentTime = _DATE, _TIME
        ds.AcquisitionDate, ds.AcquisitionTime = _DATE, _TIME
        ds.PatientPosition = options.position
        ds.BodyPartExamined = "HEADNECK"
        # Feet-first scans are numbered from the other end: readers must sort by position, not number.
        ds.InstanceNumber = int(ct.shape[0] - k if options.position.startswith("FF") else k + 1)
        ds.AcquisitionNumber = 1
        position = ct.index_to_lps(np.array([[k, 0, 0]]))[0]
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.ImageOrientationPatient = list(ORIENTATIONS[options.position])
        ds.SliceThickness = options.slice_thickness
        ds.SliceLocation = round(float(position[2]), 4)
        ds.PixelSpacing = [options.pixel_spacing, options.pixel_spacing]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = options.rows, options.columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, (12 if unsigned else 16), (11 if unsigned else 15)
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, options.rescale_slope, "HU"
        ds.KVP, ds.ConvolutionKernel, ds.ReconstructionDiameter = 120, "STANDARD", options.columns * options.pixel_spacing
        ds.WindowCenter, ds.WindowWidth = 40, 400
        stored = np.clip(np.rint((ct.array[k] - intercept) / options.rescale_slope), low, high)
        if padding is not None:
            stored[padding] = PADDING_HU
            ds.PixelPaddingValue = PADDING_HU
        ds.PixelData = stored.astype(np.uint16 if unsigned else np.int16).tobytes()
        path = folder / f"img{names[k]:05d}_{rng.integers(1_000_000):06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        uids.append(sop)
    return files, uids


# ---------------------------------------------------------------------------------------------- RTSTRUCT
def polygons(mask_slice: np.ndarray) -> list[np.ndarray]:
    """Closed (row, column) polygons whose centre-inside even-odd fill is exactly ``mask_slice``.

    The level-0.5 iso-line of the one-voxel padded mask runs through edge midpoints, so no pixel centre
    lies on it; holes come out as separate inner polygons. Every traced vertex is kept.
    """
    out = []
    for line in find_contours(np.pad(mask_slice.astype(np.float32), 1), 0.5):
        if len(line) > 3 and np.allclose(line[0], line[-1]):
            line = line[:-1]  # CLOSED_PLANAR: the last point connects to the first implicitly
        out.append(line - 1.0)
    return out


def _contour_data(points: np.ndarray) -> RawDataElement:
    """ContourData as raw DS bytes (mm, 3 decimals): pydicom's DS objects cost seconds on a 512^2 BODY."""
    text = "\\".join(map("{:.3f}".format, points.ravel().tolist())).encode("ascii")
    if len(text) % 2:
        text += b" "  # DS values are padded to even length with a space (PS3.5 6.2)
    return RawDataElement(BaseTag(_CONTOUR_DATA), "DS", len(text), text, 0, False, True)


def _contours(ct: Volume, box: BoxMask, sop_uids: list[str]) -> Sequence:
    """Per axial slice, one CLOSED_PLANAR contour per boundary (outer and holes), at the slice's exact z."""
    items = Sequence()
    for dk in np.flatnonzero(box.array.any(axis=(1, 2))):
        k = box.offset[0] + int(dk)
        for polygon in polygons(box.array[dk]):
            index = np.column_stack([np.full(len(polygon), float(k)), polygon + box.offset[1:]])
            points = ct.index_to_lps(index)
            points[:, 2] = ct.index_to_lps(np.array([[k, 0, 0]]))[0, 2]  # no rounding drift off the slice
            item = Dataset()
            item.ContourImageSequence = Sequence([_reference(CT_IMAGE_STORAGE, sop_uids[k])])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(points)
            item[_CONTOUR_DATA] = _contour_data(points)
            items.append(item)
    return items


def _rtstruct(options: PhantomOptions, ct: Volume, masks: dict[str, BoxMask], keys: list[str],
              names: dict[str, str], sop_uids: list[str], rtstruct_uid: str, study_uid: str, series_uid: str,
              frame_uid: str) -> Dataset:
    rs = _base(options, RT_STRUCTURE_SET_STORAGE, rtstruct_uid, "RTSTRUCT",
               _uid(options, "rs series", options.position), study_uid, frame_uid)
    rs.InstanceNumber = 1
    rs.StructureSetLabel, rs.StructureSetName = "PHANTOM", "Phantom structures"
    rs.StructureSetDate, rs.StructureSetTime = _DATE, _TIME
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ContourImageSequence = Sequence([_reference(CT_IMAGE_STORAGE, uid) for uid in sop_uids])
    study = _reference(STUDY_COMPONENT_MANAGEMENT, study_uid)
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID, frame.RTReferencedStudySequence = frame_uid, Sequence([study])
    rs.ReferencedFrameOfReferenceSequence = Sequence([frame])
    rng = np.random.default_rng(options.seed + 2)
    rois, contours, observations = Sequence(), Sequence(), Sequence()
    for number, key in enumerate(keys, start=1):
        info = Dataset()
        info.ROINumber, info.ReferencedFrameOfReferenceUID, info.ROIName = number, frame_uid, names[key]
        info.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(info)
        item = Dataset()
        item.ROIDisplayColor = [int(v) for v in rng.integers(0, 256, 3)]
        item.ReferencedROINumber = number
        if key in masks:
            sequence = _contours(ct, masks[key], sop_uids)
            if len(sequence):
                item.ContourSequence = sequence
        contours.append(item)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType, observation.ROIInterpreter = ROIS[key][1], ""
        observations.append(observation)
    rs.StructureSetROISequence, rs.ROIContourSequence, rs.RTROIObservationsSequence = rois, contours, observations
    rs.ApprovalStatus = "UNAPPROVED"
    return rs


# ------------------------------------------------------------------------------------------------ RTPLAN
def _rtplan(options: PhantomOptions, plan_uid: str, rtstruct_uid: str, study_uid: str, frame_uid: str) -> Dataset:
    """A minimal static three-field photon plan (RT General Plan, Patient Setup, Fraction, Beams)."""
    plan = _base(options, RT_PLAN_STORAGE, plan_uid, "RTPLAN", _uid(options, "plan series", options.position),
                 study_uid, frame_uid)
    plan.InstanceNumber = 1
    plan.RTPlanLabel, plan.RTPlanName, plan.RTPlanGeometry = "HN_70", "Head and neck 70 Gy", "PATIENT"
    plan.RTPlanDate, plan.RTPlanTime = _DATE, _TIME
    plan.ReferencedStructureSetSequence = Sequence([_reference(RT_STRUCTURE_SET_STORAGE, rtstruct_uid)])
    beams, refs = Sequence(), Sequence()
    for number, angle in enumerate((0, 120, 240), start=1):
        beam = Dataset()
        beam.BeamNumber, beam.BeamName, beam.BeamType, beam.RadiationType = number, f"B{number}", "STATIC", "PHOTON"
        beam.TreatmentMachineName, beam.PrimaryDosimeterUnit, beam.SourceAxisDistance = "LINAC", "MU", 1000.0
        beam.TreatmentDeliveryType = "TREATMENT"
        beam.NumberOfWedges = beam.NumberOfCompensators = beam.NumberOfBoli = beam.NumberOfBlocks = 0
        beam.FinalCumulativeMetersetWeight, beam.NumberOfControlPoints = 1.0, 2
        beam.ReferencedPatientSetupNumber = 1
        devices = Sequence()
        for kind in ("ASYMX", "ASYMY"):
            device = Dataset()
            device.RTBeamLimitingDeviceType, device.NumberOfLeafJawPairs = kind, 1
            devices.append(device)
        beam.BeamLimitingDeviceSequence = devices
        points = Sequence()
        for index, weight in enumerate((0.0, 1.0)):
            cp = Dataset()
            cp.ControlPointIndex, cp.CumulativeMetersetWeight = index, weight
            if index == 0:  # the first control point carries the full machine state (PS3.3 C.8.8.14.5)
                cp.NominalBeamEnergy, cp.GantryAngle, cp.GantryRotationDirection = 6.0, float(angle), "NONE"
                cp.BeamLimitingDeviceAngle, cp.BeamLimitingDeviceRotationDirection = 0.0, "NONE"
                cp.PatientSupportAngle, cp.PatientSupportRotationDirection = 0.0, "NONE"
                cp.TableTopEccentricAngle, cp.TableTopEccentricRotationDirection = 0.0, "NONE"
                cp.IsocenterPosition = [0.0, -20.0, -40.0]
                cp.SourceToSurfaceDistance = 900.0
                jaws = Sequence()
                for kind in ("ASYMX", "ASYMY"):
                    jaw = Dataset()
                    jaw.RTBeamLimitingDeviceType, jaw.LeafJawPositions = kind, [-60.0, 60.0]
                    jaws.append(jaw)
                cp.BeamLimitingDevicePositionSequence = jaws
            points.append(cp)
        beam.ControlPointSequence = points
        beams.append(beam)
        ref = Dataset()
        ref.ReferencedBeamNumber, ref.BeamMeterset = number, 150.0
        refs.append(ref)
    plan.BeamSequence = beams
    group = Dataset()
    group.FractionGroupNumber, group.NumberOfFractionsPlanned = 1, 35
    group.NumberOfBeams, group.NumberOfBrachyApplicationSetups = len(beams), 0
    group.ReferencedBeamSequence = refs
    plan.FractionGroupSequence = Sequence([group])
    setup = Dataset()
    setup.PatientSetupNumber, setup.PatientPosition = 1, options.position
    plan.PatientSetupSequence = Sequence([setup])
    plan.ApprovalStatus = "UNAPPROVED"
    return plan


# ------------------------------------------------------------------------------------------------ RTDOSE
def dose_gy(points: np.ndarray) -> np.ndarray:
    """The planned dose (Gy) at (N, 3) LPS points: 70 Gy over PTV_70 (reaching into the face), 54 Gy over
    PTV_54, sigmoid fall-off and a low-dose bath."""
    def blob(centre, radii, gy):
        d = np.sqrt((((points - centre) / radii) ** 2).sum(axis=1))
        return gy / (1.0 + np.exp((d - 1.0) * 6.0))

    return np.maximum.reduce([blob((8, -58, -24), (26, 34, 24), 70.0), blob((-32, 2, -105), (20, 22, 26), 54.0),
                              blob((0, -10, -60), (60, 70, 80), 12.0)])


def _rtdose(options: PhantomOptions, ct: Volume, body: BoxMask, study_uid: str, frame_uid: str,
            plan_uid: str) -> Dataset:
    """A 3 mm dose grid over the body's bounding box plus 4.3 mm (not a whole number of CT voxels).

    No ReferencedStructureSetSequence: with it the IOD would require an RT DVH module.
    """
    spacing = 3.0
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]) * (np.array(body.array.shape) - 1)
    points = ct.index_to_lps(corners + body.offset)
    lo, hi = points.min(axis=0) - 4.3, points.max(axis=0) + 4.3
    orientation = ORIENTATIONS[options.position]
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    shape = tuple(int(np.ceil((hi[a] - lo[a]) / spacing)) + 1 for a in (2, 1, 0))
    # The first voxel sits at the corner the orientation starts from; frames ascend in z (first offset 0).
    start = np.array([lo[0] if row[0] > 0 else hi[0], lo[1] if col[1] > 0 else hi[1], lo[2]])
    affine = affine_from_dicom(start, np.asarray(orientation, float), (spacing, spacing, spacing))
    if np.cross(row, col)[2] < 0:
        affine[:3, 0] *= -1
    grid = Volume(np.zeros(shape, np.float32), affine)
    dose = dose_gy(grid.index_to_lps(np.indices(shape).reshape(3, -1).T)).reshape(shape)
    bits = options.dose_bits
    scaling = float(dose.max()) / (2**bits - 1) * 1.0001
    stored = np.rint(dose / scaling).astype(np.uint32 if bits == 32 else np.uint16)
    ds = _base(options, RT_DOSE_STORAGE, _uid(options, "rtdose", options.position), "RTDOSE",
               _uid(options, "dose series", options.position), study_uid, frame_uid)
    ds.ContentDate, ds.ContentTime = _DATE, _TIME
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [round(float(v), 4) for v in affine[:3, 3]]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = spacing
    ds.NumberOfFrames = shape[0]
    ds.FrameIncrementPointer = 0x3004000C  # frames are located by GridFrameOffsetVector
    normal_step = float(affine[:3, 0] @ np.cross(row, col))
    ds.GridFrameOffsetVector = [round(n * normal_step, 4) for n in range(shape[0])]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = shape[1], shape[2]
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = f"{scaling:.6e}"
    ds.ReferencedRTPlanSequence = Sequence([_reference(RT_PLAN_STORAGE, plan_uid)])
    ds.PixelData = stored.tobytes()
    return ds
