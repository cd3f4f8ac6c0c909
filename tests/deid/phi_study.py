"""A PHI-laden DICOM-RT study: the phantom plus every identifying attribute a real export carries.

Names, IDs, dates, institution, addresses, physicians, RT labels that name the
patient, nested copies in sequences, a vendor private block with name and MRN
(also inside a beam), an ROI whose name holds the patient's name, and the dose
rewritten as Implicit VR Little Endian so its private elements read as UN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from deface_ts.phantom import PhantomOptions, write_phantom_study
from tests.conftest import SMALL

PATIENT_ID = "MRN8675309"
# Every value planted below that must not leave the tool (searched case-insensitively in every output byte).
PLANTED = [
    "Smithson", "Johanna", PATIENT_ID, "19581224", "ACC55501", "St Elsewhere Hospital", "12 Harbour Road",
    "Kildare", "Welby", "GOTHAMLINAC7", "GothamTrueBeam", "555-0199", "OLD4471", "House", "Gregory", "20250310",
    "20250312", "20250314", "20250315", "20250316",
]
DATES = {"CT": "20250310", "RTSTRUCT": "20250312", "RTPLAN": "20250314", "RTDOSE": "20250316"}
REVIEW_DATE = "20250315"
PHI_ROI = "z_ring_Smithson"


@dataclass
class PhiStudy:
    folder: Path
    original_uids: set[str]


def _patient(ds: Dataset, modality: str) -> None:
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Smithson^Johanna^Q", PATIENT_ID, "19581224"
    ds.PatientAddress, ds.PatientTelephoneNumbers, ds.OtherPatientIDs = "12 Harbour Road", "555-0199", "OLD4471"
    ds.PatientSex, ds.PatientAge, ds.PatientWeight = "F", "066Y", 61.5
    ds.AccessionNumber, ds.InstitutionName = "ACC55501", "St Elsewhere Hospital"
    ds.InstitutionAddress = "12 Harbour Road, Gotham"
    ds.ReferringPhysicianName, ds.OperatorsName, ds.StationName = "Kildare^James", "Welby^Marcus", "GOTHAMLINAC7"
    ds.StudyDate = ds.SeriesDate = ds.InstanceCreationDate = DATES["CT"]
    ds.StudyDescription = "HN planning Smithson"
    if modality != "CT":
        ds.SeriesDate = ds.InstanceCreationDate = DATES[modality]
    other = Dataset()  # a nested copy of the patient's identity
    other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID = PATIENT_ID, "St Elsewhere Hospital", "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    _private_block(ds)


def _private_block(ds: Dataset) -> None:
    """A vendor block such as treatment-planning systems write: the name, the MRN and a UID."""
    block = ds.private_block(0x3253, "GOTHAM TPS 1.0", create=True)
    block.add_new(0x01, "LO", "Smithson^Johanna")
    block.add_new(0x02, "LO", PATIENT_ID)
    block.add_new(0x03, "UI", str(ds.get("StudyInstanceUID", "1.2.3")))
    block.add_new(0x04, "LO", "TPS 7.1")  # nothing identifying: what a safe-private list may keep


def _plan(ds: Dataset) -> None:
    ds.RTPlanLabel, ds.RTPlanName, ds.RTPlanDescription = "SMITHSON_HN", "Johanna HN", "plan for MRN8675309"
    ds.RTPlanDate = DATES["RTPLAN"]
    ds.ReviewDate, ds.ReviewTime, ds.ReviewerName = REVIEW_DATE, "101500", "House^Gregory"
    ds.ApprovalStatus = "APPROVED"
    tolerance = Dataset()
    tolerance.ToleranceTableNumber, tolerance.ToleranceTableLabel = 1, "Smithson TT"
    ds.ToleranceTableSequence = Sequence([tolerance])
    for beam in ds.BeamSequence:
        beam.BeamName, beam.BeamDescription = f"Smithson {beam.BeamNumber}", "Johanna field"
        beam.TreatmentMachineName, beam.ReferencedToleranceTableNumber = "GothamTrueBeam", 1
        _private_block(beam)
    for group in ds.FractionGroupSequence:
        group.FractionGroupDescription = "Johanna fractions"


def _structures(ds: Dataset) -> None:
    ds.StructureSetLabel, ds.StructureSetName = "SMITHSON", "Johanna structures"
    ds.StructureSetDescription, ds.StructureSetDate = "contoured for MRN8675309", DATES["RTSTRUCT"]
    for item in ds.StructureSetROISequence:
        if item.ROIName == "z_ring_eval":
            item.ROIName = PHI_ROI
        item.ROIDescription = "Smithson"
    for item in ds.RTROIObservationsSequence:
        item.ROIInterpreter, item.ROIObservationLabel = "House^Gregory", "Johanna"


def write_phi_study(folder: Path, **options) -> PhiStudy:
    """The small phantom with PHI planted in every object; the dose file is Implicit VR Little Endian."""
    study = write_phantom_study(folder, PhantomOptions(**{**SMALL, **options}))
    uids: set[str] = set()
    for path in sorted(study.folder.iterdir()):
        ds = pydicom.dcmread(path)
        modality = str(ds.Modality)
        _patient(ds, modality)
        if modality == "RTPLAN":
            _plan(ds)
        elif modality == "RTSTRUCT":
            _structures(ds)
        elif modality == "RTDOSE":
            ds.ContentDate = DATES["RTDOSE"]
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            ds.ContentDate = ds.AcquisitionDate = DATES["CT"]
        uids |= {str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)}
        uids |= {str(ds.FrameOfReferenceUID)} if "FrameOfReferenceUID" in ds else set()
        ds.save_as(path, implicit_vr=modality == "RTDOSE", little_endian=True, enforce_file_format=True)
    return PhiStudy(study.folder, uids)
