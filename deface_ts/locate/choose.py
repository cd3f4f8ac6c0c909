"""Which locator finds the face: the configured method, or for ``auto`` the strongest the case allows.

Eye landmarks come, in this order, from an eye mask (NIfTI input), the RTSTRUCT's
eye ROIs, or TotalSegmentator's head_glands_cavities; ``auto`` prefers
union > face > eyes > render (face detectors on a skin render).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deface_ts.choices import Method
from deface_ts.config import Config
from deface_ts.errors import InputError, PrivacyError
from deface_ts.io.dicom.rtstruct import Structures
from deface_ts.locate.base import Locator
from deface_ts.locate.eyes import MaskEyeLocator, RoiEyeLocator, eye_rois
from deface_ts.locate.totalseg import weights
from deface_ts.locate.totalseg.runtime import (
    TotalSegEyeLocator,
    TotalSegLocator,
    TotalSegOptions,
    choose_method,
    using_home,
)


def make_locator(config: Config, structures: Structures | None = None, eyes_mask: np.ndarray | None = None,
                 eyes_source: str = "") -> Locator:
    """The locator the configured method names; ``auto`` picks the strongest one available."""
    options = totalseg_options(config)
    eye_locator: Locator | None = None
    if eyes_mask is not None:
        eye_locator = MaskEyeLocator(eyes_mask, eyes_source)
    elif structures is not None and eye_rois(structures, config.eyes):
        eye_locator = RoiEyeLocator(structures, config.eyes)
    method = config.method
    if method == "auto":
        method = auto_method(options, eye_locator is not None)
    if method == "eyes":
        if eye_locator is not None:
            return eye_locator
        return _totalseg_eyes(options, structures, eyes_mask is not None, config)
    if method in ("face", "union"):
        return TotalSegLocator(method, options, eye_locator)
    if method == "render":
        from deface_ts.locate.render import RenderLocator

        return RenderLocator(backend=config.verify.backend, detectors=tuple(config.verify.detectors) or None)
    raise InputError(f"unknown method {config.method!r}")


def _totalseg_eyes(options: TotalSegOptions, structures: Structures | None, has_mask: bool, config: Config) -> Locator:
    """Method ``eyes`` without eye ROIs or mask: TotalSegmentator's eyes, else the error that says what to do."""
    with using_home(options):
        installed = "head_glands_cavities" in weights.available_tasks()
    if installed:
        return TotalSegEyeLocator(options)
    if structures is None:
        raise PrivacyError("no eye landmarks: NIfTI input needs --eyes-mask, or TotalSegmentator's "
                           "head_glands_cavities weights (deface-ts models status). Nothing was written.")
    return RoiEyeLocator(structures, config.eyes)  # raises the error that names the ROIs seen


def auto_method(options: TotalSegOptions, has_eyes: bool) -> Method:
    """``auto``: union > face > eyes (ROIs, mask or TotalSegmentator) > render (face detectors)."""
    with using_home(options):
        tasks = weights.available_tasks()
    try:
        return choose_method(tasks, has_eyes)
    except InputError:
        from deface_ts.vision import faces

        if faces.available_detectors():
            return "render"
        raise PrivacyError("no way to locate the face: no eye ROI or eye mask, no TotalSegmentator weights "
                           "(deface-ts models status) and no face detector installed. Nothing was written.") from None


def totalseg_options(config: Config) -> TotalSegOptions:
    ts = config.totalseg
    return TotalSegOptions(device=ts.device, threads=ts.threads, home=Path(ts.home) if ts.home else None,
                           crop=ts.crop, body_hu=config.region.body_hu, keep_models=ts.keep_models)
