"""report.json, typed: what a case's run did, read back by the CLI, batch and evaluate.

The report is JSON so that any tool can read it; these TypedDicts are its one
written-down shape, so a key renamed here is renamed everywhere mypy looks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from deface_ts import __version__
from deface_ts.config import Config
from deface_ts.geometry.volume import Volume
from deface_ts.locate.base import FaceLocation
from deface_ts.removal.apply import DoseEntry, RoiEntry
from deface_ts.removal.plan import RULES, RemovalPlan


class Removed(TypedDict):
    """What the removal took: voxels, tissue, and per rule and protecting ROI."""

    voxels: int
    tissue_voxels: int
    tissue_volume_cc: float
    brain_side_cc: float | None  # tissue the skull encloses that the plan removes (None: keep_brain off)
    by_rule_voxels: dict[str, int]
    kept_by_protection_voxels: dict[str, int]
    protection_labels: dict[str, str]
    rule_labels: dict[str, str]


class Report(TypedDict, total=False):
    """report.json of one case (``total=False``: sections present only where they apply)."""

    deface_ts_version: str
    method: str
    region: str
    locator_notes: list[str]
    plan_notes: list[str]
    landmarks: dict[str, Any]
    removed: Removed
    config: dict[str, Any]
    timings_s: dict[str, float]
    post_check: dict[str, Any]
    verify: dict[str, Any]  # checks.verify.visual_check: mode, status, detections per view
    qc_pictures: dict[str, str]  # picture name -> path relative to the case folder
    rois: list[RoiEntry]
    dose: list[DoseEntry]
    body_volume_cc: dict[str, float]
    input: dict[str, Any]
    output: dict[str, Any]
    versions: dict[str, str]
    patient_position: dict[str, Any]  # checks.position.decide_position: value and how it was decided
    deid: dict[str, Any]  # header de-identification: profile, key fingerprint, pseudonym, echo scan


def build_report(ct: Volume, location: FaceLocation, plan: RemovalPlan, config: Config,
                 timings: dict[str, float], check: dict[str, Any]) -> Report:
    """The sections every input kind shares; the pipeline adds input, output, ROIs, dose, verification."""
    tissue, rules = plan.removed_counts(ct.array, config.region.body_hu)
    return Report(
        deface_ts_version=__version__,
        method=location.method,
        region=config.region.kind,
        locator_notes=location.notes,
        plan_notes=plan.notes,
        landmarks=plan.landmarks.__dict__,
        removed=Removed(
            voxels=int(np.count_nonzero(plan.removed)),
            tissue_voxels=tissue,
            tissue_volume_cc=round(tissue * ct.voxel_cc, 3),
            brain_side_cc=plan.brain_side_removed_cc,
            by_rule_voxels=rules,
            kept_by_protection_voxels=plan.kept_by,
            protection_labels={str(k): v for k, v in plan.protection_labels.items()},
            rule_labels={str(k): v for k, v in RULES.items()},
        ),
        config=config.to_dict(),
        timings_s=timings,
        post_check=check,
        versions=versions(),
    )


def versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour the result depends on."""
    from importlib.metadata import version

    return {name: version(name) for name in ("numpy", "pydicom", "nibabel", "scipy", "scikit-image")}


def write_report(path: Path, report: Report) -> None:
    Path(path).write_text(json.dumps(report, indent=2))


def read_report(path: Path) -> Report:
    """report.json of a finished case (the done marker of batch)."""
    report: Report = json.loads(Path(path).read_text())
    return report
