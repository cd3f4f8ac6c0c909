"""RT Plan: read for its references and summary; the writer remaps its UIDs (it carries PHI too)."""

from __future__ import annotations

from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from deface_ts.errors import InputError
from deface_ts.io.dicom.study import DicomFile


@dataclass
class RtPlan:
    """An RT Plan (photon or ion): kept whole for the writer; label, beams and fractions for the summary."""

    file: DicomFile
    dataset: Dataset

    def summary(self) -> dict:
        groups = self.dataset.get("FractionGroupSequence", [])
        fractions = [int(g.get("NumberOfFractionsPlanned", 0) or 0) for g in groups]
        return {"label": self.label, "beams": self.beams, "fractions": sum(fractions), "file": str(self.file.path)}

    @property
    def label(self) -> str:
        return str(self.dataset.get("RTPlanLabel", ""))

    @property
    def beams(self) -> int:
        return len(self.dataset.get("BeamSequence", self.dataset.get("IonBeamSequence", [])))


def load_plan(file: DicomFile) -> RtPlan:
    try:
        return RtPlan(file, pydicom.dcmread(file.path))
    except Exception as exc:
        raise InputError(f"{file.path}: cannot read RTPLAN ({exc.__class__.__name__}: {exc})") from exc
