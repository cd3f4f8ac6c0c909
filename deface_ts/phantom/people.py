"""Distinct synthetic people and repeat scans of each: the calibration set of verification.

A person is the phantom with other face proportions (:class:`FaceShape`); a scan is one
acquisition of that person (matrix, slice thickness, noise seed, position in the field).
scripts/calibrate_verify.py measures same-person and different-person face distances on
them, and the tests check the calibrated rules on a few.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deface_ts.phantom.anatomy import PhantomOptions
from deface_ts.phantom.surfaces import FaceShape

#: The scans of each person: fine and coarse grids, other noise, the patient shifted in the field.
ACQUISITIONS: dict[str, dict[str, Any]] = {
    "fine": dict(rows=256, columns=256, pixel_spacing=1.0, slices=120, slice_thickness=2.0, seed=0),
    "thick": dict(rows=256, columns=256, pixel_spacing=1.0, slices=96, slice_thickness=2.5, seed=1,
                  shift_mm=(3.0, -2.0, 4.0)),
    "small": dict(rows=128, columns=128, pixel_spacing=2.0, slices=64, slice_thickness=3.0, seed=2,
                  shift_mm=(-4.0, 3.0, -5.0)),
}
#: Ranges the face proportions are drawn from; wide enough that the people look different to a person.
SHAPE_RANGES = {
    "nose_length": (0.8, 1.2), "nose_width": (0.75, 1.35), "nose_projection": (0.7, 1.25), "brow": (0.5, 1.5),
    "cheeks": (0.3, 1.7), "orbits": (0.6, 1.3), "lips": (0.4, 1.8), "mouth_shift_mm": (-5.0, 5.0),
    "chin": (0.3, 1.8), "face_width": (0.88, 1.12),
}


def people(count: int, seed: int = 14) -> list[FaceShape]:
    """``count`` faces: the default phantom first, then proportions drawn uniformly from `SHAPE_RANGES`."""
    rng = np.random.default_rng(seed)
    drawn = [FaceShape(**{k: round(float(rng.uniform(*r)), 3) for k, r in SHAPE_RANGES.items()})
             for _ in range(count - 1)]
    return [FaceShape(), *drawn]


def scan_options(face: FaceShape, acquisition: str, **overrides) -> PhantomOptions:
    """The phantom options of one person in one acquisition (overrides: e.g. another patient position)."""
    return PhantomOptions(face=face, **{**ACQUISITIONS[acquisition], **overrides})
