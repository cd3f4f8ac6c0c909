"""A Case groups one patient's CT series with its structures, plan and dose."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deface_ts.errors import InputError
from deface_ts.forked import fork_is_safe
from deface_ts.geometry.volume import Volume
from deface_ts.io.dicom.ct import CtSeries, PendingCt
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


def check_dose_on_ct(dose: Dose, ct: Volume) -> None:
    """Refuse a dose grid with no point inside the CT's volume: it is not this CT's dose (another frame of
    reference, or the wrong file), and carrying it over unchanged would hide the mistake.

    The grid's eight corner points in the CT's index space bound every dose point (both grids are regular).
    """
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in dose.gy.shape])), dtype=float)
    index = ct.lps_to_index(dose.gy.index_to_lps(corners))
    low, high = index.min(axis=0), index.max(axis=0)
    if np.any(high < -0.5) or np.any(low > np.array(ct.shape) - 0.5):
        dose_mm = dose.gy.index_to_lps(corners)
        ct_mm = ct.index_to_lps(np.array(list(itertools.product(*[(0, n - 1) for n in ct.shape])), dtype=float))
        raise InputError(
            f"{dose.file.path}: the RTDOSE grid (LPS {_extent(dose_mm)} mm) lies entirely outside the CT "
            f"(LPS {_extent(ct_mm)} mm): not this CT's dose (another frame of reference or the wrong file)")


def _extent(points: np.ndarray) -> str:
    return " x ".join(f"{lo:.0f}..{hi:.0f}" for lo, hi in zip(points.min(axis=0), points.max(axis=0)))


def load_case(root: Path, series_uid: str | None = None, meanwhile: Callable[[], None] | None = None) -> Case:
    """Discover the study under ``root`` and load every object of it.

    The CT's pixels are decoded in a forked child (`PendingCt`) while this process reads the RTSTRUCT (its ROIs
    rasterised on the CT's grid, known from the headers), the RTPLAN and the RTDOSE, then runs ``meanwhile``:
    pydicom's parsing holds the GIL, and a machine has two cores.
    """
    files = select(discover(Path(root)), series_uid)
    pending = PendingCt(files.ct, beside=fork_is_safe())
    try:
        grid = pending.grid
        structures = load_structures(files.rtstruct, grid, files.frame_of_reference) if files.rtstruct else None
        rtplan = load_plan(files.rtplan) if files.rtplan else None
        doses = [load_dose(d) for d in files.rtdose]
        for dose in doses:
            check_dose_on_ct(dose, grid)
        if meanwhile is not None:
            meanwhile()
        ct = pending.result()
    except BaseException:
        pending.stop()
        raise
    case = Case(files, ct, structures, rtplan, doses)
    for warning in case.warnings:
        log.warning(warning)
    return case
