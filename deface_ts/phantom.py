"""A synthetic head-and-neck DICOM-RT study: CT, RTSTRUCT, RTDOSE and RTPLAN written with pydicom.

The anatomy is defined once, analytically, in patient coordinates (DICOM LPS, mm;
eyes at z = 0, face towards -y). The same patient can be "scanned" lying HFS, HFP,
FFS or FFP: only ImageOrientationPatient, slice order and array layout change,
so a test can demand the same result in patient space for every position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: ImageOrientationPatient per patient position (row direction, column direction).
ORIENTATIONS = {
    "HFS": (1, 0, 0, 0, 1, 0),
    "HFP": (-1, 0, 0, 0, -1, 0),
    "FFS": (-1, 0, 0, 0, 1, 0),
    "FFP": (1, 0, 0, 0, -1, 0),
}

EYE_CENTRES = {"left": np.array([32.0, -54.0, 0.0]), "right": np.array([-32.0, -54.0, 0.0])}
NOSE_TIP = np.array([0.0, -96.0, -30.0])  # 4 mm under the skin of the nose tip
# Midline skin profile (LPS y of the skin at x = 0) as a function of z: chin, lips, nose base, nasion, brow.
_PROFILE_Z = (-100, -93, -85, -70, -62, -57, -52, -46, -40, -4, 5, 25)
_PROFILE_Y = (-40, -76, -85, -84, -88, -84, -88, -86, -83, -80, -84, -84)


@dataclass
class PhantomOptions:
    position: str = "HFS"
    rows: int = 256
    columns: int = 256
    pixel_spacing: float = 1.0
    slices: int = 120
    slice_thickness: float = 2.0
    stored_dtype: str = "int16"  # int16 (PixelRepresentation 1) or uint16 (PixelRepresentation 0, intercept -1024)
    rescale_slope: float = 1.0
    roi_naming: str = "standard"  # standard, tg263 or legacy
    include_eyes: bool = True
    include_dose: bool = True
    include_plan: bool = True
    dose_bits: int = 32
    noise_hu: float = 8.0
    seed: int = 0
    patient_id: str = "PHANTOM001"
    patient_name: str = "Phantom^Head"


@dataclass
class PhantomStudy:
    folder: Path
    ct_files: list[Path]
    rtstruct_file: Path
    rtdose_file: Path | None
    rtplan_file: Path | None
    series_instance_uid: str
    frame_of_reference_uid: str
    study_instance_uid: str
    ct_affine: np.ndarray
    eye_centres: dict[str, np.ndarray]
    nose_tip: np.ndarray
    roi_names: dict[str, str] = field(default_factory=dict)


# canonical key -> (standard, tg263, legacy) name, RTROIInterpretedType
ROIS = {
    "body": (("BODY", "External", "External"), "EXTERNAL"),
    "ptv_face": (("PTV_70", "PTV_High", "PTV 70Gy"), "PTV"),
    "ptv_neck": (("PTV_54", "PTV_Low", "PTV 54Gy"), "PTV"),
    "ctv": (("CTV_70", "CTV_High", "CTV 70Gy"), "CTV"),
    "gtv": (("GTV", "GTV_Primary", "GTV primary"), "GTV"),
    "eye_left": (("Eye_L", "Eye_L", "OPTIC GLOBE L"), "ORGAN"),
    "eye_right": (("Eye_R", "Eye_R", "EYE RIGHT"), "ORGAN"),
    "lens_left": (("Lens_L", "Lens_L", "Lt Lens"), "ORGAN"),
    "lens_right": (("Lens_R", "Lens_R", "Rt Lens"), "ORGAN"),
    "eye_left_prv": (("Eye_L_PRV", "Eye_L_PRV03", "OPTIC GLOBE L PRV"), "AVOIDANCE"),
    "eye_ring": (("z_ring_eval", "z_ring_eval", "z ring eye"), "AVOIDANCE"),
    "optic_left": (("OpticNerve_L", "OpticNrv_L", "Lt Optic Nerve"), "ORGAN"),
    "optic_right": (("OpticNerve_R", "OpticNrv_R", "Rt Optic Nerve"), "ORGAN"),
    "brain": (("Brain", "Brain", "BRAIN"), "ORGAN"),
    "brainstem": (("Brainstem", "Brainstem", "BRAIN STEM"), "ORGAN"),
    "cord": (("SpinalCord", "SpinalCord", "SPINAL CORD"), "ORGAN"),
    "parotid_left": (("Parotid_L", "Glnd_Parotid_L", "Lt Parotid"), "ORGAN"),
    "parotid_right": (("Parotid_R", "Glnd_Parotid_R", "Rt Parotid"), "ORGAN"),
    "mandible": (("Mandible", "Bone_Mandible", "MANDIBLE"), "ORGAN"),
    "two_contours": (("LN_Neck", "LN_Neck_II", "Nodes neck"), "ORGAN"),
    "hole": (("Vertebra_C", "Bone_Cervical", "C-SPINE"), "ORGAN"),
}
EYE_KEYS = {"eye_left", "eye_right", "lens_left", "lens_right", "eye_left_prv", "eye_ring"}


def _ell(x, y, z, c, r):
    """Normalised ellipsoid field: < 1 inside."""
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2


def anatomy(x: np.ndarray, y: np.ndarray, z: float, noise: np.ndarray | None = None,
            pixels_per_mm: float = 1.0) -> tuple[np.ndarray, dict]:
    """HU and ROI masks on one axial plane z (mm) for point arrays x, y (LPS mm, same shape)."""
    zz = np.full_like(x, z)
    cranium = _ell(x, y, zz, (0, 10, 30), (75, 95, 95)) <= 1
    # The face: a block whose front follows a midline profile (brow, nasion, lips, chin) curving back laterally.
    front = np.interp(z, _PROFILE_Z, _PROFILE_Y) + 0.008 * x**2
    for c in EYE_CENTRES.values():  # the skin dips a little over each eye
        front = front + 4.0 * np.exp(-((x - c[0]) ** 2 + (z - c[2]) ** 2) / (2 * 11.0**2))
    width = np.interp(z, (-100, -85, -40, 25), (30, 45, 66, 70))
    face = (z > -100) & (z < 25) & ((x / width) ** 2 + ((y - 5) / 95) ** 2 <= 1) & (y >= front)
    # The nose: a triangular ridge from the nasion to a tip 20 mm in front of the face.
    nose_line = np.interp(z, (-48, -40, -30, -4), (-82, -96, -100, -80))
    nose = (z > -48) & (z < -4) & (y >= nose_line + 1.9 * np.abs(x)) & (y < -60)
    ears = (_ell(x, y, zz, (72, 8, 0), (9, 14, 26)) <= 1) | (_ell(x, y, zz, (-72, 8, 0), (9, 14, 26)) <= 1)
    neck = (z < -55) & ((x / 55) ** 2 + ((y - 18) / 58) ** 2 <= 1)
    body = cranium | face | nose | ears | neck
    if abs(z + 57) <= 1.0:  # the mouth line between the lips
        body &= ~((y < -79) & (np.abs(x) < 20))
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(body)  # pixels; in-plane depth under the skin, for the fat layer
    depth = depth / pixels_per_mm
    head = 1.0 - np.minimum(depth, 6.0) / 6.0
    hu = np.full(x.shape, -1000.0, dtype=np.float32)
    hu[body] = 40.0
    # subcutaneous fat a few mm under the skin
    hu[body & (head > 0.2) & (head < 0.8)] = -90.0

    masks: dict[str, np.ndarray] = {"body": body}
    inner = _ell(x, y, zz, (0, 10, 30), (66, 86, 86))
    outer = _ell(x, y, zz, (0, 10, 30), (71, 91, 91))
    eyes = {side: ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) for side, c in EYE_CENTRES.items()}
    orbit = np.minimum(eyes["left"], eyes["right"])
    skull_level = z > -20
    # The cranial floor: anterior fossa on the orbital roofs, middle/posterior fossae lower down.
    floor = np.where(y < -15, 16.0, -16.0)
    if skull_level:
        skull = (outer <= 1) & (inner > 1) & (z > floor - 4)  # the face below the forehead has no vault
        hu[skull] = 1100.0
        hu[skull & (_ell(x, y, zz, (0, 10, 30), (68.5, 88.5, 88.5)) <= 1)] = 500.0  # diploe
        base = (inner <= 1) & (z > floor - 4) & (z <= floor)
        hu[base] = 900.0
        brain = (inner <= 1) & (z > floor) & (z < 118)
        hu[brain] = 35.0
        masks["brain"] = brain
    else:
        masks["brain"] = np.zeros_like(body)
    # orbits: fat with a bony wall, open to the front
    orbit_fat = (orbit <= 18**2) & body & (y > -62) & (z < 12)
    hu[orbit_fat] = -80.0
    orbit_wall = (orbit > 18**2) & (orbit <= 20**2) & (y > -62) & body & (z < 12)
    hu[orbit_wall] = 900.0
    for side, c in EYE_CENTRES.items():
        eye = eyes[side] <= 12.0**2
        hu[eye] = 10.0
        lens = _ell(x, y, zz, (c[0], c[1] - 9.5, c[2]), (4.5, 2.0, 4.5)) <= 1
        hu[lens] = 90.0
        masks[f"eye_{side}"] = eye
        masks[f"lens_{side}"] = lens
        sign = 1 if side == "left" else -1
        t = (y - c[1]) / (10 - c[1] + 12)  # optic nerve: from the back of the eye towards the chiasm
        nerve_x = c[0] + t * (sign * 8 - c[0])
        nerve = (t > 0.15) & (t < 1) & ((x - nerve_x) ** 2 + (z - 0) ** 2 <= 2.5**2)
        masks[f"optic_{side}"] = nerve
    masks["eye_left_prv"] = eyes["left"] <= 15.0**2
    masks["eye_ring"] = (eyes["left"] > 15.0**2) & (eyes["left"] <= 20.0**2) & body
    # nasal cavity and maxillary sinuses (air)
    nasal = (_ell(x, y, zz, (0, -50, -24), (10, 18, 16)) <= 1) | (_ell(x, y, zz, (28, -40, -28), (12, 14, 12)) <= 1) | (
        _ell(x, y, zz, (-28, -40, -28), (12, 14, 12)) <= 1)
    hu[nasal] = -960.0
    # mandible: a U of bone
    if -95 < z < -45:
        u = (x / 46) ** 2 + ((y + 8) / 72) ** 2
        mandible = (u <= 1) & (u > 0.8) & (y < 0) & body
        hu[mandible] = 1300.0
    else:
        mandible = np.zeros_like(body)
    masks["mandible"] = mandible
    # cervical spine with canal and cord, trachea
    r = np.sqrt(x**2 + (y - 26) ** 2)
    if z < -35:
        vertebra = (r <= 13) & (r > 6)
        hu[vertebra] = 700.0
        cord = r <= 4.5
        hu[r <= 6] = 20.0
        hu[cord] = 35.0
    else:
        vertebra = cord = np.zeros_like(body)
    masks["hole"], masks["cord"] = vertebra, cord
    if z < -75:
        hu[(x**2 + (y + 22) ** 2) <= 8**2] = -990.0
    masks["brainstem"] = (_ell(x, y, zz, (0, 22, -5), (11, 11, 22)) <= 1) & body
    for side, sx in (("left", 1), ("right", -1)):
        parotid = (_ell(x, y, zz, (sx * 52, 8, -42), (11, 17, 20)) <= 1) & body
        hu[parotid] = 15.0
        masks[f"parotid_{side}"] = parotid
    nodes = ((_ell(x, y, zz, (40, -5, -100), (8, 9, 14)) <= 1) | (_ell(x, y, zz, (-40, -5, -100), (8, 9, 14)) <= 1)) & body
    masks["two_contours"] = nodes
    ptv = (_ell(x, y, zz, (8, -58, -24), (20, 28, 18)) <= 1) & body
    masks["ptv_face"] = ptv
    masks["ctv"] = (_ell(x, y, zz, (8, -58, -24), (15, 22, 13)) <= 1) & body
    masks["gtv"] = (_ell(x, y, zz, (8, -58, -24), (10, 13, 9)) <= 1) & body
    masks["ptv_neck"] = (_ell(x, y, zz, (-32, 2, -105), (14, 16, 20)) <= 1) & body
    if noise is not None:  # scanner noise everywhere, air included, as in real CT
        hu += noise
    return hu, masks


def _roi_name(key: str, naming: str) -> str:
    names, _ = ROIS[key]
    return names[("standard", "tg263", "legacy").index(naming)]


def ct_grid(options: PhantomOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(orientation, first position, slice positions z) of the scan; eyes sit ~55 % up the field."""
    orientation = np.array(ORIENTATIONS[options.position], dtype=float)
    row, col = orientation[:3], orientation[3:]
    half_w = (options.columns - 1) / 2 * options.pixel_spacing
    half_h = (options.rows - 1) / 2 * options.pixel_spacing
    corner = -row * half_w - col * half_h  # the first pixel sits at the grid's (-row, -col) corner
    extent = (options.slices - 1) * options.slice_thickness
    z = -0.58 * extent + np.arange(options.slices) * options.slice_thickness
    return orientation, corner, np.round(z, 4)


def evaluate(options: PhantomOptions) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """HU (float32) and ROI masks on the CT grid, slices in ascending z; returns the affine too."""
    from deface_ts.volume import affine_from_dicom

    orientation, corner, zs = ct_grid(options)
    row, col = orientation[:3], orientation[3:]
    i = np.arange(options.columns) * options.pixel_spacing
    j = np.arange(options.rows) * options.pixel_spacing
    x = corner[0] + row[0] * i[None, :] + col[0] * j[:, None]
    y = corner[1] + row[1] * i[None, :] + col[1] * j[:, None]
    rng = np.random.default_rng(options.seed)
    hu = np.empty((len(zs), options.rows, options.columns), dtype=np.float32)
    masks: dict[str, np.ndarray] = {}
    scale = 1.0 / options.pixel_spacing
    for k, z in enumerate(zs):
        noise = rng.normal(0, options.noise_hu, x.shape).astype(np.float32) if options.noise_hu else None
        slice_hu, slice_masks = anatomy(x, y, float(z), noise, pixels_per_mm=scale)
        hu[k] = slice_hu
        for key, mask in slice_masks.items():
            masks.setdefault(key, np.zeros(hu.shape, dtype=bool))[k] = mask
    normal_step = options.slice_thickness
    affine = affine_from_dicom(np.array([corner[0], corner[1], zs[0]]), orientation, (normal_step, options.pixel_spacing, options.pixel_spacing))
    if np.cross(row, col)[2] < 0:  # feet-first: the normal points inferior, so index 0 is the top slice
        hu, masks = hu[::-1].copy(), {k: v[::-1].copy() for k, v in masks.items()}
        affine = affine_from_dicom(np.array([corner[0], corner[1], zs[-1]]), orientation, (normal_step, options.pixel_spacing, options.pixel_spacing))
    return hu, masks, affine


# ----------------------------------------------------------------------------------------------- DICOM
def _uid(options: PhantomOptions, *parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["deface-ts phantom", options.patient_id, str(options.seed), *map(str, parts)])


def _base(options: PhantomOptions, sop_class: str, sop_uid: str, modality: str, series_uid: str, study_uid: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.StudyTime = ds.SeriesTime = "120000"
    if modality in ("CT", "RTDOSE"):
        ds.ContentDate, ds.ContentTime = "20260101", "120000"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "deface-ts phantom"
    ds.ReferringPhysicianName = ""
    ds.PatientName, ds.PatientID = options.patient_name, options.patient_id
    ds.PatientBirthDate, ds.PatientSex = "19600101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyID, ds.SeriesNumber = "1", {"CT": 1, "RTSTRUCT": 2, "RTPLAN": 3, "RTDOSE": 4}[modality]
    ds.OperatorsName = ""
    return ds


def _code_item(ds):
    return ds


def write_phantom_study(folder: Path, options: PhantomOptions = PhantomOptions()) -> PhantomStudy:
    """Write CT slices, RTSTRUCT, RTDOSE and RTPLAN of the phantom into ``folder``."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from deface_ts.dicom.rtstruct import contour_slice
    from deface_ts.volume import Volume

    if options.position not in ORIENTATIONS:
        raise ValueError(f"position must be one of {', '.join(ORIENTATIONS)}, got {options.position!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hu, masks, affine = evaluate(options)
    ct = Volume(hu, affine)
    study_uid, frame_uid = _uid(options, "study"), _uid(options, "frame")
    series_uid = _uid(options, "ct series", options.position)
    orientation = ORIENTATIONS[options.position]
    rng = np.random.default_rng(options.seed + 1)

    # --- CT: file names and InstanceNumbers deliberately unrelated to geometry
    unsigned = options.stored_dtype == "uint16"
    intercept = -1024.0 if unsigned else 0.0
    low, high = (0, 4095) if unsigned else (-32768, 32767)
    ct_files, sop_uids = [], []
    names = rng.permutation(len(hu))
    for k in range(len(hu)):
        sop = _uid(options, "ct", options.position, k)
        ds = _base(options, "1.2.840.10008.5.1.4.1.1.2", sop, "CT", series_uid, study_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = options.position
        ds.BodyPartExamined = "HEADNECK"
        ds.InstanceNumber = int(len(hu) - k if options.position.startswith("FF") else k + 1)
        ds.ImagePositionPatient = [round(float(v), 4) for v in ct.index_to_lps(np.array([[k, 0, 0]]))[0]]
        ds.ImageOrientationPatient = list(orientation)
        ds.SliceThickness = options.slice_thickness
        ds.SliceLocation = round(float(ds.ImagePositionPatient[2]), 4)
        ds.PixelSpacing = [options.pixel_spacing, options.pixel_spacing]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = options.rows, options.columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, (12 if unsigned else 16), (11 if unsigned else 15)
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, options.rescale_slope, "HU"
        ds.KVP, ds.AcquisitionNumber = 120, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        stored = np.clip(np.rint((hu[k] - intercept) / options.rescale_slope), low, high)
        ds.PixelData = stored.astype(np.uint16 if unsigned else np.int16).tobytes()
        path = folder / f"img{names[k]:05d}_{rng.integers(1_000_000):06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        ct_files.append(path)
        sop_uids.append(sop)

    # --- RTSTRUCT
    naming = options.roi_naming
    keys = [k for k in ROIS if options.include_eyes or k not in EYE_KEYS]
    rs_uid = _uid(options, "rtstruct", options.position)
    rs = _base(options, "1.2.840.10008.5.1.4.1.1.481.3", rs_uid, "RTSTRUCT", _uid(options, "rs series", options.position), study_uid)
    rs.FrameOfReferenceUID, rs.PositionReferenceIndicator = frame_uid, ""
    rs.StructureSetLabel, rs.StructureSetName = "PHANTOM", "Phantom structures"
    rs.StructureSetDate, rs.StructureSetTime = "20260101", "120000"
    images = Sequence()
    for sop in sop_uids:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", sop
        images.append(item)
    series = Dataset()
    series.SeriesInstanceUID, series.ContourImageSequence = series_uid, images
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = study_uid
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID, frame.RTReferencedStudySequence = frame_uid, Sequence([study])
    rs.ReferencedFrameOfReferenceSequence = Sequence([frame])
    rois, contours, observations = Sequence(), Sequence(), Sequence()
    roi_names = {}
    for number, key in enumerate(keys, start=1):
        name = _roi_name(key, naming)
        roi_names[key] = name
        info = Dataset()
        info.ROINumber, info.ReferencedFrameOfReferenceUID, info.ROIName = number, frame_uid, name
        info.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(info)
        item = Dataset()
        item.ROIDisplayColor = [int(v) for v in rng.integers(0, 256, 3)]
        item.ReferencedROINumber = number
        sequence = Sequence()
        mask = masks[key]
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            rows = np.flatnonzero(mask[k].any(axis=1))
            cols = np.flatnonzero(mask[k].any(axis=0))
            box = mask[k, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            for polygon in contour_slice(box):
                polygon = polygon + [rows[0], cols[0]]
                points = ct.index_to_lps(np.column_stack([np.full(len(polygon), float(k)), polygon]))
                c = Dataset()
                image = Dataset()
                image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", sop_uids[k]
                c.ContourImageSequence = Sequence([image])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(points)
                c.ContourData = [f"{v:.3f}" for v in points.ravel()]
                sequence.append(c)
        if len(sequence):
            item.ContourSequence = sequence
        contours.append(item)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = number, number
        obs.RTROIInterpretedType, obs.ROIInterpreter = ROIS[key][1], ""
        observations.append(obs)
    rs.StructureSetROISequence, rs.ROIContourSequence, rs.RTROIObservationsSequence = rois, contours, observations
    rs.ApprovalStatus = "UNAPPROVED"
    rtstruct_file = folder / "structures.dcm"
    rs.save_as(rtstruct_file, enforce_file_format=True)

    # --- RTPLAN
    plan_uid = _uid(options, "rtplan", options.position)
    rtplan_file = None
    if options.include_plan:
        plan = _base(options, "1.2.840.10008.5.1.4.1.1.481.5", plan_uid, "RTPLAN", _uid(options, "plan series", options.position), study_uid)
        plan.FrameOfReferenceUID = frame_uid
        plan.PositionReferenceIndicator = ""
        plan.RTPlanLabel, plan.RTPlanName, plan.RTPlanGeometry = "HN_70", "Head and neck 70 Gy", "PATIENT"
        plan.RTPlanDate, plan.RTPlanTime = "20260101", "120000"
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.481.3", rs_uid
        plan.ReferencedStructureSetSequence = Sequence([ref])
        beams, refs = Sequence(), Sequence()
        for n, angle in enumerate((0, 120, 240), start=1):
            beam = Dataset()
            beam.BeamNumber, beam.BeamName, beam.BeamType, beam.RadiationType = n, f"B{n}", "STATIC", "PHOTON"
            beam.TreatmentMachineName, beam.PrimaryDosimeterUnit, beam.SourceAxisDistance = "LINAC", "MU", 1000.0
            beam.TreatmentDeliveryType = "TREATMENT"
            beam.NumberOfWedges = beam.NumberOfCompensators = beam.NumberOfBoli = beam.NumberOfBlocks = 0
            beam.FinalCumulativeMetersetWeight, beam.NumberOfControlPoints = 1.0, 2
            beam.ReferencedPatientSetupNumber = 1
            collimators = Sequence()
            for kind in ("ASYMX", "ASYMY"):
                item = Dataset()
                item.RTBeamLimitingDeviceType, item.NumberOfLeafJawPairs = kind, 1
                collimators.append(item)
            beam.BeamLimitingDeviceSequence = collimators
            points = Sequence()
            for index, weight in enumerate((0.0, 1.0)):
                cp = Dataset()
                cp.ControlPointIndex, cp.CumulativeMetersetWeight = index, weight
                if index == 0:
                    cp.NominalBeamEnergy, cp.GantryAngle, cp.GantryRotationDirection = 6.0, float(angle), "NONE"
                    cp.BeamLimitingDeviceAngle, cp.BeamLimitingDeviceRotationDirection = 0.0, "NONE"
                    cp.PatientSupportAngle, cp.PatientSupportRotationDirection = 0.0, "NONE"
                    cp.TableTopEccentricAngle, cp.TableTopEccentricRotationDirection = 0.0, "NONE"
                    cp.IsocenterPosition = [0.0, -20.0, -40.0]
                    cp.SourceToSurfaceDistance = 900.0
                    jaws = Sequence()
                    for kind in ("ASYMX", "ASYMY"):
                        item = Dataset()
                        item.RTBeamLimitingDeviceType, item.LeafJawPositions = kind, [-60.0, 60.0]
                        jaws.append(item)
                    cp.BeamLimitingDevicePositionSequence = jaws
                points.append(cp)
            beam.ControlPointSequence = points
            beams.append(beam)
            r = Dataset()
            r.ReferencedBeamNumber, r.BeamMeterset = n, 150.0
            refs.append(r)
        plan.BeamSequence = beams
        group = Dataset()
        group.FractionGroupNumber, group.NumberOfFractionsPlanned = 1, 35
        group.NumberOfBeams, group.NumberOfBrachyApplicationSetups = 3, 0
        group.ReferencedBeamSequence = refs
        plan.FractionGroupSequence = Sequence([group])
        setup = Dataset()
        setup.PatientSetupNumber, setup.PatientPosition = 1, options.position
        plan.PatientSetupSequence = Sequence([setup])
        plan.ApprovalStatus = "UNAPPROVED"
        rtplan_file = folder / "plan.dcm"
        plan.save_as(rtplan_file, enforce_file_format=True)

    # --- RTDOSE on a coarser grid, offset from the CT by a non-integer number of voxels
    rtdose_file = None
    if options.include_dose:
        rtdose_file = folder / "dose.dcm"
        _write_dose(options, ct, masks, rtdose_file, study_uid, frame_uid, plan_uid, rs_uid, orientation)

    return PhantomStudy(folder, ct_files, rtstruct_file, rtdose_file, rtplan_file, series_uid, frame_uid, study_uid,
                        affine, {k: v.copy() for k, v in EYE_CENTRES.items()}, NOSE_TIP.copy(), roi_names)


def _write_dose(options, ct, masks, path, study_uid, frame_uid, plan_uid, rs_uid, orientation) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from deface_ts.volume import Volume, affine_from_dicom

    spacing = 3.0
    body_index = np.argwhere(masks["body"])
    lo, hi = ct.index_to_lps(body_index.min(axis=0)[None])[0], ct.index_to_lps(body_index.max(axis=0)[None])[0]
    lo, hi = np.minimum(lo, hi) - 4.3, np.maximum(lo, hi) + 4.3
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    shape = tuple(int(np.ceil((hi[a] - lo[a]) / spacing)) + 1 for a in (2, 1, 0))
    # first voxel at the corner the orientation starts from; frames ascend in z (relative offsets, first 0)
    start = np.array([lo[0] if row[0] > 0 else hi[0], lo[1] if col[1] > 0 else hi[1], lo[2]])
    affine = affine_from_dicom(start, orientation, (spacing, spacing, spacing))
    if np.cross(row, col)[2] < 0:
        affine[:3, 0] *= -1
    grid = Volume(np.zeros(shape, np.float32), affine)
    points = grid.index_to_lps(np.indices(shape).reshape(3, -1).T)
    def blob(centre, radii, gy):
        d = (((points - centre) / radii) ** 2).sum(axis=1)
        return gy / (1 + np.exp((np.sqrt(d) - 1.0) * 6))
    dose = np.maximum(blob((8, -58, -24), (26, 34, 24), 70.0), blob((-32, 2, -105), (20, 22, 26), 54.0))
    dose = dose.reshape(shape)
    bits = options.dose_bits
    scaling = float(dose.max()) / (2**bits - 1) * 1.0001
    stored = np.rint(dose / scaling).astype(np.uint32 if bits == 32 else np.uint16)
    ds = _base(options, "1.2.840.10008.5.1.4.1.1.481.2", _uid(options, "rtdose", options.position), "RTDOSE",
               _uid(options, "dose series", options.position), study_uid)
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [round(float(v), 4) for v in affine[:3, 3]]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = spacing
    ds.NumberOfFrames = shape[0]
    ds.FrameIncrementPointer = 0x3004000C
    normal_step = float(affine[:3, 0] @ np.cross(row, col))
    ds.GridFrameOffsetVector = [round(n * normal_step, 4) for n in range(shape[0])]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = shape[1], shape[2]
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = f"{scaling:.6e}"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.481.5", plan_uid
    ds.ReferencedRTPlanSequence = Sequence([ref])
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
