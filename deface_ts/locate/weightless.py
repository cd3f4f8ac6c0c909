"""The weight-free way to the eyes: the CT eye finder, cross-checked by the render locator where it runs.

``auto`` uses this when the RTSTRUCT has no eye ROI and no TotalSegmentator
weights are installed (`deface_ts.locate.choose.make_locator`); ``--method eyes``
uses the CT eye finder alone as its last source. Two independent estimates
of the same globes (fluid density in the CT; face landmarks on a skin render)
must agree: a disagreement means one of them found something else, and the
case stops. Where only one of them finds the eyes, its answer is used and the
report says the other failed and why (the visual verification after defacing
still fails the case if a face survives). When both fail, the error lists what
the user can do next.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from deface_ts.errors import PrivacyError
from deface_ts.forked import Forked, fork_is_safe
from deface_ts.geometry.masks import BoxMask
from deface_ts.geometry.volume import Volume
from deface_ts.locate.base import Eye, FaceLocation, Locator
from deface_ts.locate.ct_eyes import CtEyeLocator

#: The two estimates of one eye must lie within a globe radius of each other: then each centre lies inside
#: the globe the other one found. Farther apart, at least one of them is not on that globe.
AGREEMENT_MM = 12.0
#: What a user can do when no weight-free source finds the eyes (appended to the final error).
NEXT_STEPS = ("add eye ROIs to the RTSTRUCT (names like Eye_L/Eye_R, Globe_L, 'OPTIC GLOBE L'; other names with "
              "--eye-pattern), give an eye mask with --eyes-mask (NIfTI input), or install TotalSegmentator's "
              "head_glands_cavities or face weights (deface-ts models status). Nothing was written.")


@dataclass
class WeightFreeLocator:
    """CT eyes first; the render locator (when given) checks them, or stands in when they are not found.

    Attributes
    ----------
    ct_eyes
        The CT eye finder.
    render
        The render locator, or None where no face detector with landmarks is installed.
    why
        Why this route was taken (no eye ROI, no weights), the start of the final error.
    """

    ct_eyes: CtEyeLocator
    render: Locator | None = None
    why: str = ""
    name: str = "eyes"

    def locate(self, ct: Volume) -> FaceLocation:
        found, failures = {}, {}
        # The render locator (VTK, detectors, holding the GIL) runs in a forked child beside the CT eye finder,
        # where this process has not yet loaded them: then the visual verification can fork later too.
        rendering = Forked(_compact, self.render, ct) if self.render is not None and fork_is_safe() else None
        with rendering or nullcontext():
            for label, locator in (("CT eye finder", self.ct_eyes), ("render locator", self.render)):
                if locator is None:
                    continue
                try:
                    found[label] = (_expand(rendering.result(), ct) if rendering is not None and locator is self.render
                                    else locator.locate(ct))
                except PrivacyError as exc:
                    failures[label] = str(exc).replace(" Nothing was written.", "").rstrip(".")
        if not found:
            tried = "; ".join(f"{label}: {message}" for label, message in failures.items())
            raise PrivacyError(f"{self.why + '; ' if self.why else ''}{tried}. To go on, {NEXT_STEPS}")
        if len(found) == 2:
            return self._agreed(found["CT eye finder"], found["render locator"])
        (label, location), = found.items()
        notes = [f"eyes from the {label} alone"] + [f"{other} failed: {message}" for other, message in failures.items()]
        if self.render is None and label == "CT eye finder":
            notes = ["eyes from the CT (no face detector with landmarks installed for a cross-check)"]
        return FaceLocation(location.method, location.eyes, location.face_mask, notes + location.notes)

    def _agreed(self, ct_found: FaceLocation, rendered: FaceLocation) -> FaceLocation:
        """The CT's eyes (voxel-exact), once the render's agree with them side by side."""
        distances = agreement(ct_found, rendered)
        worst = max(distances.values())
        summary = ", ".join(f"{side} {d:.1f} mm" for side, d in sorted(distances.items()))
        if worst > AGREEMENT_MM:
            raise PrivacyError(f"the CT eye finder and the render locator disagree on the eyes ({summary} apart; "
                               f"at most {AGREEMENT_MM:g} mm allowed): the face cannot be located with confidence. "
                               f"To go on, {NEXT_STEPS}")
        notes = [f"eyes from the CT, confirmed by the render locator ({summary} apart; tolerance {AGREEMENT_MM:g} mm)"]
        return FaceLocation(ct_found.method, ct_found.eyes, None, notes + ct_found.notes + rendered.notes)


def _compact(locator: Locator, ct: Volume) -> FaceLocation:
    """The locator's finding with each eye's mask in its box (CT-sized masks are not worth pickling)."""
    location = locator.locate(ct)
    eyes = [Eye(e.source, e.side, e.centre_mm, BoxMask.from_full(e.mask)) for e in location.eyes]  # type: ignore[arg-type]
    return FaceLocation(location.method, eyes, location.face_mask, location.notes)


def _expand(location: FaceLocation, ct: Volume) -> FaceLocation:
    eyes = [Eye(e.source, e.side, e.centre_mm, e.mask.full(ct.shape)) for e in location.eyes]  # type: ignore[attr-defined]
    return FaceLocation(location.method, eyes, location.face_mask, location.notes)


def agreement(a: FaceLocation, b: FaceLocation) -> dict[str, float]:
    """Distance (mm) between two locators' eye centres, per side; inf for a side one of them lacks."""
    centres = {e.side: e.centre_mm for e in b.eyes}
    out = {}
    for eye in a.eyes:
        other = centres.get(eye.side)
        out[eye.side] = float(np.linalg.norm(eye.centre_mm - other)) if other is not None else float("inf")
    return out


def why_weight_free(structures) -> str:
    """Why no eye ROI, eye mask or weights gave the eyes (the start of the weight-free route's error)."""
    if structures is None:
        return ("no eye ROIs (no RTSTRUCT) or eye mask (--eyes-mask, NIfTI input) and no TotalSegmentator "
                "eye weights")
    seen = ", ".join(f"'{r.name}'" for r in structures.rois) or "none"
    return (f"{structures.file.path}: no eye ROI found (ROIs seen: {seen}; other names with --eye-pattern) "
            "and no TotalSegmentator eye weights")
