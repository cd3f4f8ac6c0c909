"""A Case groups one patient's CT series with its structures, plan and dose."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from deface_ts.io.dicom.ct import CtSeries, load_ct
from deface_ts.io.dicom.rtdose import Dose, load_dose
from deface_ts.io.dicom.rtplan import RtPlan, load_plan
from deface_ts.io.dicom.rtstruct import Structures, load_structures
from deface_ts.io.dicom.study import StudyFiles, discover, select

log = logging.getLogger(__name__)


@dataclass
class Case:
    """A loaded radiotherapy study: CT, and where present RTSTRUCT, RTPLAN and RTDOSE(s)."""

    files: StudyFiles
    ct: CtSeries
    structures: Structures | None = None
    rtplan: RtPlan | None = None  # the RT Plan object (not the removal plan)
    doses: list[Dose] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return self.files.warnings + (self.structures.warnings if self.structures else [])


def load_case(root: Path, series_uid: str | None = None) -> Case:
    """Discover the study under ``root`` and load every object of it."""
    files = select(discover(Path(root)), series_uid)
    ct = load_ct(files.ct)
    structures = load_structures(files.rtstruct, ct.hu, files.frame_of_reference) if files.rtstruct else None
    rtplan = load_plan(files.rtplan) if files.rtplan else None
    doses = [load_dose(d) for d in files.rtdose]
    case = Case(files, ct, structures, rtplan, doses)
    for warning in case.warnings:
        log.warning(warning)
    return case
