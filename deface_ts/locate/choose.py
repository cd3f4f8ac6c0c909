"""Which locator finds the face: the configured method, or for ``auto`` the strongest the case allows.

Eye landmarks come, in this order, from an eye mask (NIfTI input), the RTSTRUCT's
eye ROIs, TotalSegmentator's head_glands_cavities, or the CT itself
(:mod:`deface_ts.locate.ct_eyes`); ``auto`` prefers union > face > eyes > the
weight-free route (CT eyes cross-checked by the render locator,
:mod:`deface_ts.locate.weightless`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from deface_ts.choices import Method
from deface_ts.config import Config
from deface_ts.errors import InputError
from deface_ts.io.dicom.rtstruct import Structures
from deface_ts.locate.base import Locator
from deface_ts.locate.eyes import MaskEyeLocator, RoiEyeLocator, eye_rois

if TYPE_CHECKING:
    from deface_ts.locate.totalseg.runtime import TotalSegOptions

# TotalSegmentator's modules are imported where a method needs them: `--method eyes` with eye ROIs never does.


def make_locator(config: Config, structures: Structures | None = None, eyes_mask: np.ndarray | None = None,
                 eyes_source: str = "") -> Locator:
    """The locator the configured method names; ``auto`` picks the strongest one available."""
    eye_locator: Locator | None = None
    if eyes_mask is not None:
        eye_locator = MaskEyeLocator(eyes_mask, eyes_source)
    elif structures is not None and eye_rois(structures, config.eyes):
        eye_locator = RoiEyeLocator(structures, config.eyes)
    method: str = config.method
    if method == "auto":
        method = auto_method(totalseg_options(config), eye_locator is not None)
    if method == "eyes":
        if eye_locator is not None:
            return eye_locator
        return _eyes_without_landmarks(totalseg_options(config), structures, config)
    if method == "weightless":
        return weight_free_locator(config, structures, cross_check=True)
    if method in ("face", "union"):
        from deface_ts.locate.totalseg.runtime import TotalSegLocator

        return TotalSegLocator(method, totalseg_options(config), eye_locator)
    if method == "render":
        from deface_ts.locate.render import RenderLocator

        return RenderLocator(backend=config.verify.backend, detectors=tuple(config.verify.detectors) or None)
    raise InputError(f"unknown method {config.method!r}")


def _eyes_without_landmarks(options: TotalSegOptions, structures: Structures | None, config: Config) -> Locator:
    """Method ``eyes`` without eye ROIs or mask: TotalSegmentator's eyes where installed, else the CT's own."""
    from deface_ts.locate.totalseg import weights
    from deface_ts.locate.totalseg.runtime import TotalSegEyeLocator, using_home

    with using_home(options):
        installed = "head_glands_cavities" in weights.available_tasks()
    if installed:
        return TotalSegEyeLocator(options)
    return weight_free_locator(config, structures, cross_check=False)


def weight_free_locator(config: Config, structures: Structures | None, cross_check: bool) -> Locator:
    """The CT eye finder; with ``cross_check`` the render locator checks it (or stands in) where detectors exist."""
    from deface_ts.locate.ct_eyes import CtEyeLocator
    from deface_ts.locate.render import LANDMARK_DETECTORS, RenderLocator
    from deface_ts.locate.weightless import WeightFreeLocator, why_weight_free
    from deface_ts.vision import faces

    render = None
    # Installed, not yet proven to run: proving it loads the detectors here, and the render locator runs in a
    # forked child (`WeightFreeLocator`); one that does not run fails there, and the CT's eyes stand alone.
    if cross_check and any(d in LANDMARK_DETECTORS for d in faces.installed_detectors()):
        render = RenderLocator(backend=config.verify.backend, detectors=tuple(config.verify.detectors) or None)
    return WeightFreeLocator(CtEyeLocator(), render, why=why_weight_free(structures))


def auto_method(options: TotalSegOptions, has_eyes: bool) -> Method | Literal["weightless"]:
    """``auto``: union > face > eyes (ROIs, mask or TotalSegmentator) > weightless (CT eyes checked by a render)."""
    from deface_ts.locate.totalseg import weights
    from deface_ts.locate.totalseg.runtime import choose_method, using_home

    with using_home(options):
        tasks = weights.available_tasks()
    try:
        return choose_method(tasks, has_eyes)
    except InputError:
        return "weightless"


def totalseg_options(config: Config) -> TotalSegOptions:
    from deface_ts.locate.totalseg.runtime import TotalSegOptions

    ts = config.totalseg
    return TotalSegOptions(device=ts.device, threads=ts.threads, home=Path(ts.home) if ts.home else None,
                           crop=ts.crop, body_hu=config.region.body_hu, keep_models=ts.keep_models)
