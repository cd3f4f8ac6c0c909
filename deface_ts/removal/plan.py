"""RemovalPlan: which voxels to remove (face region minus protected structures), and why.

The region is built in an anatomical view of the CT (superior, anterior, left
array axes, from the affine), so the same patient lying HFS, HFP, FFS or FFP
gets the same removal in patient space.

Region ``upper`` is defaceRT's box (seed 000): anterior of the coronal plane
through the eyes' antero-posterior midpoint, from the inferior-most eye boundary
(minus a margin) to the top of the image, full width.

Region ``full`` (default) keeps that cut plane, because a flat plane leaves no
trace of the face's shape on the new surface (a layer peeled at constant depth
would keep the face's relief, shifted), and changes two things:

* below the eyes it continues down the same plane over the nose, lips and chin,
  to the slice where the midline skin profile falls behind the plane for good
  (the chin–neck angle) plus a margin, so that a surface render shows no face;
* from the eyes up it removes only what lies in front of the cranial cavity: skin,
  soft tissue, eyes and bone connected to the outside air, never tissue the
  skull encloses. defaceRT's box takes ~47 cc of frontal lobe here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from deface_ts.config import Config, RegionConfig
from deface_ts.errors import PrivacyError
from deface_ts.geometry.volume import ANTERIOR, SUPERIOR, AnatomicalView, Volume, bounding_box
from deface_ts.locate.base import FaceLocation
from deface_ts.removal.cavity import CavityError, brain_side, enclosed_voxels

#: Provenance labels of removed voxels (report and removal-mask NIfTI).
RULES = {1: "eye band (anterior of the eye plane)", 2: "forehead (outside the cranial cavity)",
         3: "lower face (nose, lips, chin)", 4: "defaceRT box (eyes and above)", 5: "face mask"}


@dataclass
class Landmarks:
    """Eye landmarks in patient coordinates (mm)."""

    eye_centres_mm: dict[str, list[float]]
    cut_plane_anterior_mm: float | None  # anterior coordinate (-y) of the cut plane (None: face mask only)
    inferior_eye_mm: float | None  # superior coordinate of the lowest eye voxel
    superior_eye_mm: float | None
    lower_limit_mm: float  # superior coordinate where the removal stops
    chin_found: bool


@dataclass
class RemovalPlan:
    """Voxels to remove and voxels kept, with provenance, on the CT grid."""

    rule: np.ndarray  # uint8 label per voxel of the face region (0 outside); see RULES
    protected: np.ndarray  # bool: never changed
    kept_by: dict[str, int]  # ROI name → region voxels it kept
    landmarks: Landmarks
    notes: list[str] = field(default_factory=list)
    removed: np.ndarray = field(init=False, repr=False)  # bool: region minus protected, computed once
    protected_by: np.ndarray | None = field(default=None, repr=False)  # uint16 label of the protecting ROI
    protection_labels: dict[int, str] = field(default_factory=dict)
    brain_side_removed_cc: float | None = None  # removed tissue the skull encloses (None: keep_brain off)

    def __post_init__(self) -> None:
        self.removed = (self.rule > 0) & ~self.protected

    @property
    def region(self) -> np.ndarray:
        return self.rule > 0


def body_from_hu(hu: np.ndarray, threshold: float) -> np.ndarray:
    """Patient body from HU: largest connected component above ``threshold``, holes filled per slice."""
    body = hu > threshold
    labels, count = ndimage.label(body)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        body = labels == int(np.argmax(sizes))
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def view_spacing(ct: Volume, view: AnatomicalView) -> np.ndarray:
    """Voxel size (mm) along the view's superior, anterior and left axes."""
    return np.array([ct.spacing[a] for a in view.axes])


def _index_at_or_above(coordinates: np.ndarray, value: float) -> int:
    """First index whose coordinate is ≥ value (coordinates increase)."""
    return int(np.searchsorted(coordinates, value - 1e-6, side="left"))


def _chin_limit(body: np.ndarray, view: AnatomicalView, cut: int, s_eye: int, mid_l: float,
                config: RegionConfig) -> tuple[int, bool]:
    """View index (superior axis) where removal below the eyes stops.

    Walk down from the eyes along the midline band; the chin ends where the
    most anterior skin falls behind the cut plane for at least 5 mm.
    """
    s, _, l = view.coordinates
    band = np.abs(l - mid_l) <= 25.0
    ds = abs(s[1] - s[0]) if len(s) > 1 else 1.0
    lowest = _index_at_or_above(s, s[s_eye] - config.chin_search_mm)
    run_needed = max(1, int(np.ceil(5.0 / ds)))
    run = 0
    for k in range(s_eye, lowest - 1, -1):
        in_front = body[k][cut:, band].any()
        run = 0 if in_front else run + 1
        if run >= run_needed:
            chin = k + run_needed - 1  # last slice still crossed by the face is just above
            return max(_index_at_or_above(s, s[chin] - config.chin_margin_mm), 0), True
    return lowest, False


def face_region(ct: Volume, body: np.ndarray, location: FaceLocation, config: RegionConfig,
                eye_margin_mm: float) -> tuple[np.ndarray, Landmarks, np.ndarray | None]:
    """Rule-labelled face region on the CT grid from eye landmarks (and the locator's face mask, if any).

    Also returns the brain side (`deface_ts.removal.cavity.brain_side`) from the
    lowest eye voxel up, when ``keep_brain`` is on, for the check after planning.
    """
    try:
        view = AnatomicalView.of(ct)
    except ValueError as exc:
        raise PrivacyError(f"cannot plan the removal: {exc}") from None
    s, a, l = view.coordinates
    eyes = view.view(location.eye_mask())
    idx = np.argwhere(eyes)
    if idx.size == 0:
        raise PrivacyError("eye landmarks are empty; cannot locate the face")
    a_mid = (a[idx[:, 1].min()] + a[idx[:, 1].max()]) / 2.0
    # The plane passes through the AP midpoint (defaceRT), and never in front of an eye's centre voxel,
    # so the landmarks themselves are always inside the region (the post-check demands it).
    centres = [float(a[np.argmin(np.abs(a - e.centre_mm @ ANTERIOR))]) for e in location.eyes]
    a_mid = min([a_mid, *centres])
    cut = _index_at_or_above(a, a_mid - config.plane_offset_mm)  # voxels on the plane are removed too
    s_inf, s_sup = int(idx[:, 0].min()), int(idx[:, 0].max())
    s_low_eye = _index_at_or_above(s, s[s_inf] - eye_margin_mm)
    mid_l = float(np.mean(l[idx[:, 2]]))
    rule = np.zeros(eyes.shape, dtype=np.uint8)
    chin_found = False
    if config.kind == "upper":
        rule[s_low_eye:, cut:, :] = 4
        lower = s_low_eye
    else:
        lower, chin_found = _chin_limit(view.view(body), view, cut, s_inf, mid_l, config)
        rule[lower:s_low_eye, cut:, :] = 3
        rule[s_low_eye : s_sup + 1, cut:, :] = 1
        rule[s_sup + 1 :, cut:, :] = 2
    if location.face_mask is not None:  # method union: the face mask adds what the eye region misses
        rule[(rule == 0) & view.view(location.face_mask)] = 5
    brain = None
    if config.keep_brain:
        brain = brain_side(view.view(ct.array), view.view(body), view_spacing(ct, view), config.bone_hu,
                           s_low_eye, s_sup + 1, a_from=cut)
    if brain is not None and (config.kind != "upper" or location.face_mask is not None):
        # Eye band and forehead: keep what the skull encloses (brain, sinuses); the open front goes.
        # defaceRT's box (upper) stays exact: there only face-mask voxels are trimmed.
        slab = rule[s_low_eye:, cut:, :]
        inside = brain[s_low_eye:, cut:, :]
        if config.kind == "upper":
            inside = inside & (slab == 5)
        slab[inside] = 0
    landmarks = Landmarks(
        eye_centres_mm={f"{e.side}:{e.source}": [round(float(v), 2) for v in e.centre_mm] for e in location.eyes},
        cut_plane_anterior_mm=round(float(a_mid - config.plane_offset_mm), 2),
        inferior_eye_mm=round(float(s[s_inf]), 2),
        superior_eye_mm=round(float(s[s_sup]), 2),
        lower_limit_mm=round(float(s[lower]) if lower < len(s) else float(s[-1]), 2),
        chin_found=chin_found,
    )
    brain_lps = np.ascontiguousarray(view.unview(brain)) if brain is not None else None
    return np.ascontiguousarray(view.unview(rule)), landmarks, brain_lps


def dilate_mm(ct: Volume, mask: np.ndarray, margin_mm: float) -> np.ndarray:
    """``mask`` grown by an ellipsoid of ``margin_mm`` (voxel units from the CT spacing), inside its bounding box.

    Returns ``mask`` itself when the margin is under one voxel or the mask is empty.
    """
    radius = np.maximum(np.floor(margin_mm / ct.spacing + 1e-6), 0).astype(int)
    if not radius.any() or not mask.any():
        return mask
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    element = sum((g * sp / margin_mm) ** 2 for g, sp in zip(grid, ct.spacing)) <= 1.0
    box = bounding_box(mask, radius)
    out = np.zeros(ct.shape, dtype=bool)
    out[box] = ndimage.binary_dilation(mask[box], structure=element)
    return out


def protection_mask(ct: Volume, masks: list[tuple[str, np.ndarray]], margin_mm: float) -> list[tuple[str, np.ndarray]]:
    """Each protected ROI grown by ``margin_mm`` (ellipsoidal element in voxel units of the CT grid)."""
    return [(name, dilate_mm(ct, mask, margin_mm)) for name, mask in masks]


def _keep_cranial_cavity(ct: Volume, body: np.ndarray, rule: np.ndarray, config: RegionConfig,
                         location: FaceLocation) -> tuple[np.ndarray, np.ndarray]:
    """Take what the skull encloses out of a face-mask-only region (rule 5); also return it, for the check.

    The enclosure test (`deface_ts.removal.cavity.enclosed_voxels`) runs on the slab from
    the lowest eye voxel up, anterior of the eyes' centres: lower down the cranial cavity
    opens into the neck through the skull base, further back into the orbits. Without
    eye landmarks the slab is the face mask's upper half, 30 mm behind the skin's front.
    (The eye region's brain side, `cavity.brain_side`, is not used here: its envelope and
    partial-volume ring kept parts of a deep face mask that the verification read as a
    face on the phantom; a face mask over a skull defect is not protected by it.)
    """
    view = AnatomicalView.of(ct)
    r = view.view(rule).copy()
    s_idx = np.flatnonzero((r == 5).any(axis=(1, 2)))
    brain = np.zeros(r.shape, dtype=bool)
    if s_idx.size == 0:
        return rule, brain
    a = view.coordinates[1]
    if location.eyes:
        low = int(np.flatnonzero(view.view(location.eye_mask()).any(axis=(1, 2)))[0])
        front = _index_at_or_above(a, min(float(e.centre_mm @ ANTERIOR) for e in location.eyes))
    else:
        low = int((s_idx[0] + s_idx[-1]) // 2)
        skin = np.flatnonzero(view.view(body)[low:].any(axis=(0, 2)))
        front = _index_at_or_above(a, float(a[skin[-1]]) - 30.0) if skin.size else 0
    slab = (slice(low, s_idx[-1] + 1), slice(front, None), slice(None))
    brain[slab] = enclosed_voxels(view.view(ct.array)[slab], view.view(body)[slab], config.bone_hu)
    r[brain & (r == 5)] = 0
    return np.ascontiguousarray(view.unview(r)), np.ascontiguousarray(view.unview(brain))


def mask_region(ct: Volume, body: np.ndarray, location: FaceLocation,
                config: RegionConfig) -> tuple[np.ndarray, Landmarks, np.ndarray | None]:
    """Region of a face-mask locator (method ``face``): the mask as given (rule 5), minus the cranial cavity.

    The locator already grew the mask and filled it to the front of the image; with
    ``keep_brain`` what the skull encloses inside the mask's bounding box is kept,
    as for the eye-landmark region.
    """
    rule = np.where(location.face_mask, 5, 0).astype(np.uint8)
    idx = np.argwhere(location.face_mask)
    if idx.size == 0:
        raise PrivacyError("the face mask is empty; cannot locate the face")
    brain = None
    if config.keep_brain:
        rule, brain = _keep_cranial_cavity(ct, body, rule, config, location)
    superior = ct.index_to_lps(idx[:: max(1, len(idx) // 20000)]) @ SUPERIOR
    landmarks = Landmarks(
        eye_centres_mm={f"{e.side}:{e.source}": [round(float(v), 2) for v in e.centre_mm] for e in location.eyes},
        cut_plane_anterior_mm=None, inferior_eye_mm=None, superior_eye_mm=None,
        lower_limit_mm=round(float(superior.min()), 2), chin_found=False,
    )
    return rule, landmarks, brain


def plan_removal(ct: Volume, body: np.ndarray, location: FaceLocation, protected: list[tuple[str, np.ndarray]],
                 config: Config) -> RemovalPlan:
    """Face region (rule-labelled) minus protected structures (with margin).

    Eye landmarks give rules 1-4; a face mask adds rule 5 (method ``union``) or,
    for method ``face`` or a locator without eyes, is the whole region.
    """
    if location.face_mask is not None and (location.method == "face" or not location.eyes):
        rule, landmarks, brain = mask_region(ct, body, location, config.region)
    else:
        rule, landmarks, brain = face_region(ct, body, location, config.region, config.eyes.margin_mm)
    grown = protection_mask(ct, protected, config.protect.margin_mm)
    protected_any = np.zeros(ct.shape, dtype=bool)
    kept_by: dict[str, int] = {}
    labels: dict[int, str] = {}
    protected_by = np.zeros(ct.shape, dtype=np.uint16)  # per voxel: the first protecting ROI (1-based)
    region = rule > 0
    for number, (name, mask) in enumerate(grown, start=1):
        first = mask & ~protected_any
        kept_by[name] = int((first & region).sum())
        protected_by[first] = number
        labels[number] = name
        protected_any |= mask
    plan = RemovalPlan(rule, protected_any, kept_by, landmarks)
    plan.protected_by, plan.protection_labels = protected_by, labels
    if brain is not None:
        # defaceRT's box (region upper) is kept exact on purpose: there the figure is a reported cost.
        check_brain_side(ct, plan, brain, enforce=config.region.kind != "upper")
    return plan


def check_brain_side(ct: Volume, plan: RemovalPlan, brain: np.ndarray, enforce: bool = True) -> None:
    """Record the brain-side tissue the plan removes, by any rule; with ``enforce`` a plan removing any is refused.

    The rules above the eyes already leave the brain side out; this catches every
    other way in (the lower-face rule, a face mask, a future rule).
    """
    reached = plan.removed & brain
    plan.brain_side_removed_cc = round(int(reached.sum()) * float(np.prod(ct.spacing)) / 1000.0, 3)
    if enforce and reached.any():
        rules = ", ".join(f"{RULES[int(n)]}: {int((plan.rule[reached] == n).sum())}" for n in np.unique(plan.rule[reached]))
        box = bounding_box(reached)
        corner = ct.index_to_lps(np.array([[b.start for b in box]]))[0] if box else np.zeros(3)
        raise CavityError(f"the planned removal reaches {plan.brain_side_removed_cc} cc into the cranial cavity "
                          f"(voxels by rule: {rules}; near LPS {np.round(corner, 1).tolist()} mm): brain is never "
                          "removed. Check the eye landmarks (--method eyes with eye ROIs) or the region settings. "
                          "Nothing was written.")
