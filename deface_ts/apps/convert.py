"""`deface-ts convert`: a DICOM-RT study as NIfTI (CT, one mask per ROI, dose) plus a JSON sidecar."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from deface_ts.geometry.volume import Volume
from deface_ts.io import nifti
from deface_ts.io.dicom.case import Case, load_case
from deface_ts.io.output import atomic_output


def safe_name(name: str, taken: set[str]) -> str:
    """A file-name-safe, unique version of an ROI name."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "roi"
    candidate, n = base, 2
    while candidate.lower() in taken:
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate.lower())
    return candidate


def write_nifti_set(case: Case, folder: Path, ct: Volume | None = None,
                    masks: dict[int, np.ndarray] | None = None) -> dict:
    """Write CT, ROI masks and doses as NIfTI into ``folder``; return the sidecar dictionary."""
    folder.mkdir(parents=True, exist_ok=True)
    ct = ct if ct is not None else case.ct.hu  # int16 HU when exact, see dicom.ct
    nifti.save(ct, folder / "ct.nii.gz")
    sidecar: dict = {"ct": "ct.nii.gz", "rois": [], "doses": []}
    if case.structures is not None:
        (folder / "masks").mkdir(exist_ok=True)
        taken: set[str] = set()
        for roi in case.structures.rois:
            mask = (masks or {}).get(roi.number)
            if mask is None:
                mask = roi.mask.full(ct.shape)
            name = f"masks/{safe_name(roi.name, taken)}.nii.gz"
            nifti.save(ct.with_array(mask.astype(np.uint8)), folder / name)
            sidecar["rois"].append(
                {"number": roi.number, "name": roi.name, "role": roi.role, "type": roi.interpreted_type,
                 "file": name, "voxels": int(mask.sum())}
            )
    for n, dose in enumerate(case.doses, start=1):
        name = f"dose_{n}.nii.gz"
        nifti.save(dose.gy, folder / name)
        sidecar["doses"].append({"file": name, "units": "Gy", "summation": dose.summation,
                                 "source": str(dose.file.path)})
    return sidecar


def convert(input: Path, output: Path, series_uid: str | None = None, overwrite: bool = False) -> Path:
    case = load_case(Path(input), series_uid)
    with atomic_output(Path(output), [Path(input)], overwrite) as tmp:
        sidecar = write_nifti_set(case, tmp)
        sidecar["series_instance_uid"] = case.files.series_uid
        sidecar["warnings"] = case.warnings
        (tmp / "convert.json").write_text(json.dumps(sidecar, indent=2))
    return Path(output)
