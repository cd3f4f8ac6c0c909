"""A synthetic head-and-neck patient for tests and ``deface-ts demo``.

The anatomy is defined once, analytically, in patient coordinates (DICOM LPS,
mm; eyes at z = 0, face towards -y) by smooth implicit surfaces. The same patient
can be "scanned" lying HFS, HFP, FFS or FFP: only ImageOrientationPatient, slice
order and array layout change, so a test can demand the same result in patient
space for every position. :mod:`deface_ts.phantom.dicom` writes the study.

Every scan is axis-aligned, so each array axis samples one patient coordinate
(slice -> z, row -> y, column -> x) and every field below is a sum of broadcast
1-D ramps evaluated only inside the bounding box of its structure: a
512 x 512 x 180 head takes about a second.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deface_ts.geometry.masks import BoxMask
from deface_ts.geometry.volume import affine_from_dicom
from deface_ts.phantom.canvas import Canvas, Region, local_index
from deface_ts.phantom.surfaces import (
    CHIN,
    CRANIUM,
    DEFAULT_FACE,
    EYE_CENTRES,
    EYE_RADIUS,
    SKIN_PIECES,
    FaceShape,
    ellipse_depth,
    ellipsoid_depth,
    face_depth,
    floor_z,
    interp,
    quadric,
    segment_distance,
    smax,
    smin,
)

#: ImageOrientationPatient per patient position (row direction, column direction).
ORIENTATIONS = {
    "HFS": (1, 0, 0, 0, 1, 0),
    "HFP": (-1, 0, 0, 0, -1, 0),
    "FFS": (-1, 0, 0, 0, 1, 0),
    "FFP": (1, 0, 0, 0, -1, 0),
}

# canonical key -> (standard, tg263, legacy) ROI name, RTROIInterpretedType
ROIS = {
    "body": (("BODY", "External", "External"), "EXTERNAL"),
    "ptv_face": (("PTV_70", "PTV_High", "PTV 70Gy"), "PTV"),
    "ptv_neck": (("PTV_54", "PTV_Low", "PTV 54Gy"), "PTV"),
    "ctv": (("CTV_70", "CTV_High", "CTV 70Gy"), "CTV"),
    "gtv": (("GTV", "GTV_Primary", "GTV primary"), "GTV"),
    "eye_left": (("Eye_L", "Eye_L", "OPTIC GLOBE L"), "ORGAN"),
    "eye_right": (("Eye_R", "Eye_R", "EYE RIGHT"), "ORGAN"),
    "lens_left": (("Lens_L", "Lens_L", "Lt Lens"), "ORGAN"),
    "lens_right": (("Lens_R", "Lens_R", "Rt Lens"), "ORGAN"),
    "eye_left_prv": (("Eye_L_PRV", "Eye_L_PRV03", "OPTIC GLOBE L PRV"), "AVOIDANCE"),
    "eye_ring": (("z_ring_eval", "z_ring_eval", "z ring eye"), "AVOIDANCE"),
    "optic_left": (("OpticNerve_L", "OpticNrv_L", "Lt Optic Nerve"), "ORGAN"),
    "optic_right": (("OpticNerve_R", "OpticNrv_R", "Rt Optic Nerve"), "ORGAN"),
    "brain": (("Brain", "Brain", "BRAIN"), "ORGAN"),
    "brainstem": (("Brainstem", "Brainstem", "BRAIN STEM"), "ORGAN"),
    "cord": (("SpinalCord", "SpinalCord", "SPINAL CORD"), "ORGAN"),
    "parotid_left": (("Parotid_L", "Glnd_Parotid_L", "Lt Parotid"), "ORGAN"),
    "parotid_right": (("Parotid_R", "Glnd_Parotid_R", "Rt Parotid"), "ORGAN"),
    "mandible": (("Mandible", "Bone_Mandible", "MANDIBLE"), "ORGAN"),
    "two_contours": (("LN_Neck", "LN_Neck_II", "Nodes neck"), "ORGAN"),  # left and right level II: 2 contours
    "hole": (("Vertebra_C", "Bone_Cervical", "C-SPINE"), "ORGAN"),  # a ring around the spinal canal
}
EYE_KEYS = frozenset({"eye_left", "eye_right", "lens_left", "lens_right", "eye_left_prv", "eye_ring"})
NAMING_STYLES = ("standard", "tg263", "legacy")

@dataclass
class PhantomOptions:
    """How to scan and store the phantom (geometry, pixel encoding, ROI naming, objects)."""

    position: str = "HFS"
    rows: int = 256
    columns: int = 256
    pixel_spacing: float = 1.0
    slices: int = 120
    slice_thickness: float = 2.0
    stored_dtype: str = "int16"  # int16 (PixelRepresentation 1) or uint16 (PixelRepresentation 0, intercept -1024)
    rescale_slope: float = 1.0
    roi_naming: str = "standard"  # standard, tg263 or legacy
    include_eyes: bool = True
    include_dose: bool = True
    include_plan: bool = True
    dose_bits: int = 32
    noise_hu: float = 8.0
    seed: int = 0
    patient_id: str = "PHANTOM001"
    patient_name: str = "Doe^Jane"
    air_noise_hu: float = 8.0  # noise in the air around the patient too, as real scanners have (0: exactly -1000)
    fov_padding: bool = False  # int16 only: -3024 (PixelPaddingValue) outside the circular reconstruction field
    face: FaceShape = field(default_factory=FaceShape)  # the face's proportions: another synthetic person
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # where the patient lies in the scan field (LPS)

    def __post_init__(self) -> None:
        if self.position not in ORIENTATIONS:
            raise ValueError(f"position must be one of {', '.join(ORIENTATIONS)}, got {self.position!r}")
        if self.stored_dtype not in ("int16", "uint16"):
            raise ValueError(f"stored_dtype must be 'int16' or 'uint16', got {self.stored_dtype!r}")
        if self.roi_naming not in NAMING_STYLES:
            raise ValueError(f"roi_naming must be one of {', '.join(NAMING_STYLES)}, got {self.roi_naming!r}")
        if self.dose_bits not in (16, 32):
            raise ValueError(f"dose_bits must be 16 or 32, got {self.dose_bits}")


@dataclass
class PhantomStudy:
    """What was written, for tests to use as ground truth."""

    folder: Path
    ct_files: list[Path]
    rtstruct_file: Path
    rtdose_file: Path | None
    rtplan_file: Path | None
    series_instance_uid: str
    frame_of_reference_uid: str
    study_instance_uid: str
    ct_affine: np.ndarray  # (slice, row, column) -> LPS, slices sorted along the normal
    eye_centres: dict[str, np.ndarray]
    nose_tip: np.ndarray
    roi_names: dict[str, str] = field(default_factory=dict)  # canonical key -> written ROI name
    chin: np.ndarray = field(default_factory=lambda: CHIN.copy())
    ct_sop_instance_uids: list[str] = field(default_factory=list)  # in slice (affine) order


class FullMasks(Mapping):
    """Read-only ``{key: full-size bool array}`` view of box masks, built on access (saves ~1 GB at 512^2)."""

    def __init__(self, boxes: dict[str, BoxMask], shape: tuple[int, int, int]) -> None:
        self.boxes, self.shape = boxes, shape

    def __getitem__(self, key: str) -> np.ndarray:
        return self.boxes[key].full(self.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.boxes)

    def __len__(self) -> int:
        return len(self.boxes)


def roi_name(key: str, naming: str) -> str:
    """The ROI name written for canonical ``key`` in naming style ``naming``."""
    return ROIS[key][0][NAMING_STYLES.index(naming)]


# ------------------------------------------------------------------------------------------ the anatomy
def _paint_body(cv: Canvas, shape: FaceShape) -> Region | None:
    """Skin surface as one smooth union of cranium, face, neck, eyelids and ears; skin, fat and muscle by depth."""
    region = cv.region((-90, -112, -1e9), (90, 112, 130))
    if region is None:
        return None
    body = np.zeros(region.shape, dtype=bool)
    depth = np.zeros(region.shape, dtype=np.float32)
    for part, slab in region.chunks():
        x, y, z = slab.grid()
        d = smax(ellipsoid_depth(x, y, z, *CRANIUM), face_depth(x, y, z, shape), 10.0)
        neck = np.minimum(ellipse_depth(x, y, (0.0, 15.0), (55.0, 58.0)), -20.0 - z)  # ends inside the head
        d = smax(d, neck, 8.0)
        for c, r, k in SKIN_PIECES:  # small pieces only inside their own boxes
            sub = slab.sub(np.subtract(c, r) - abs(k) - 1, np.add(c, r) + abs(k) + 1)
            if sub is not None:
                inner = local_index(slab.start, slab.shape, sub.start, sub.shape)[0]
                piece = ellipsoid_depth(*sub.grid(), c, r)
                d[inner] = smax(d[inner], piece, k) if k > 0 else smin(d[inner], -piece, -k)
        body[part], depth[part] = d > 0, d
    cv.keep("body", region, body)
    hu = cv.hu[region.index]
    hu[body] = 40.0  # muscle and skin
    hu[body & (depth > 1.5) & (depth < 7.0)] = -100.0  # subcutaneous fat
    nose = region.sub((-18, -112, -40), (18, -82, 4))  # the nose is cartilage and dense tissue, not fat
    if nose is not None:
        inner = local_index(region.start, region.shape, nose.start, nose.shape)[0]
        hu[inner][body[inner]] = 40.0
    cv.skin_depth = (region, depth)
    return region


def _paint_skull_and_brain(cv: Canvas) -> None:
    c, r = np.array(CRANIUM[0]), np.array(CRANIUM[1])
    region = cv.region(c - r + 6, c + r - 6)
    if region is None:
        return
    for _, slab in region.chunks():
        x, y, z = slab.grid()
        floor = floor_z(y)
        above = z > floor - 4
        inner = quadric(x, y, z, c, r - 12) <= 1
        skull = (quadric(x, y, z, c, r - 6) <= 1) & ~inner & above
        cv.paint(slab, skull, 1300.0)  # cortical tables
        cv.paint(slab, skull & (quadric(x, y, z, c, r - 8) <= 1) & (quadric(x, y, z, c, r - 10) > 1), 600.0)  # diploe
        cv.paint(slab, inner & above & (z <= floor), 900.0)  # skull base
        cv.paint(slab, inner & (z > floor), 10.0)  # CSF around the brain
        cv.paint(slab, (quadric(x, y, z, c, r - 14) <= 1) & (z > floor + 2), 35.0, "brain")


def _ellipsoid(cv: Canvas, c, r, hu: float, key: str | None = None, wall: float = 0.0, wall_hu: float = 0.0) -> None:
    """Paint an ellipsoid, optionally inside a bony wall ``wall`` mm thick."""
    c, r = np.asarray(c, float), np.asarray(r, float)
    region = cv.region(c - r - wall, c + r + wall)
    if region is None:
        return
    x, y, z = region.grid()
    if wall:
        cv.paint(region, quadric(x, y, z, c, r + wall) <= 1, wall_hu)
    cv.paint(region, quadric(x, y, z, c, r) <= 1, hu, key)


def _paint_face(cv: Canvas) -> None:
    """Orbits and eyes, nasal cavity and sinuses, palate, teeth, mandible."""
    for side, c in EYE_CENTRES.items():
        sign = 1.0 if side == "left" else -1.0
        region = cv.region(c - 20, c + 20)
        if region is not None:
            x, y, z = region.grid()
            d2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
            cv.paint(region, (d2 <= 18**2) & (d2 > 16**2) & (y > c[1] - 6), 1000.0)  # bony orbit, open in front
            cv.paint(region, (d2 <= 16**2) & (y > c[1] - 14), -80.0)  # orbital fat
            cv.paint(region, d2 <= EYE_RADIUS**2, 10.0, f"eye_{side}")  # vitreous
            cv.paint(region, quadric(x, y, z, c - (0, 9.5, 0), (4.5, 2.0, 4.5)) <= 1, 90.0, f"lens_{side}")
            if side == "left":
                cv.keep("eye_left_prv", region, (d2 <= 15**2) & cv.lookup("body", region))
                cv.keep("eye_ring", region, (d2 > 15**2) & (d2 <= 20**2) & cv.lookup("body", region))
        start, end = c + (0, EYE_RADIUS - 2, 0), np.array([sign * 6, -12, 6])
        region = cv.region(np.minimum(start, end) - 3, np.maximum(start, end) + 3)
        if region is not None:
            x, y, z = region.grid()
            nerve = (segment_distance(x, y, z, start, end) <= 2.5) & (quadric(x, y, z, c, (EYE_RADIUS,) * 3) > 1)
            cv.paint(region, nerve, 30.0, f"optic_{side}")
    for s in (1, -1):
        # Maxillary sinuses, behind the eyes' coronal plane: a cut there must not open them (three holes in
        # a flat cut surface are a face to a detector).
        _ellipsoid(cv, (s * 30, -32, -30), (13, 12, 13), -980.0, wall=2.0, wall_hu=900.0)
    _ellipsoid(cv, (0, -50, -22), (11, 20, 17), -990.0)  # nasal cavity
    _ellipsoid(cv, (0, -18, -18), (10, 12, 8), -990.0)  # nasopharynx
    region = cv.region((-1.2, -68, -36), (1.2, -32, -8))
    cv.paint(region, True, 300.0)  # nasal septum
    region = cv.region((-26, -70, -44), (26, -20, -40))
    if region is not None:
        x, y, z = region.grid()
        cv.paint(region, (x / 26) ** 2 + ((y + 20) / 50) ** 2 <= 1, 1000.0)  # hard palate
    region = cv.region((-48, -75, -100), (48, 12, -28))
    if region is not None:
        x, y, z = region.grid()
        low = -97.0 + 27.0 * (x / 48.0) ** 2 + 5.0  # the bone's lower border follows the jaw line
        u = (x / 44) ** 2 + ((y + 4) / 66) ** 2
        arch = (u <= 1) & (u > 0.72) & (y < 0) & (z >= low) & (z <= -62)
        ramus = (np.abs(x) >= 38) & (np.abs(x) <= 46) & (y >= -6) & (y <= 10) & (z >= low) & (z <= -28)
        cv.paint(region, arch | ramus, 1300.0, "mandible")
        t = (x / 30) ** 2 + ((y + 8) / 60) ** 2
        cv.paint(region, (t <= 1) & (t > 0.75) & (y < -30) & (z > -66) & (z < -48) & (np.abs(z + 57) > 0.6), 2500.0)


def _paint_neck(cv: Canvas) -> None:
    """Cervical spine with canal and cord, airway, brainstem, parotids, lymph nodes."""
    region = cv.region((-15, 0, -1e9), (15, 60, -38))
    if region is not None:
        x, y, z = region.grid()
        canal = x**2 + (y - 30) ** 2
        bone = ((canal > 7**2) & (canal <= 12**2)) | (x**2 + (y - 12) ** 2 <= 9**2) | ((np.abs(x) < 3) & (y >= 40))
        cv.paint(region, bone, 700.0, "hole")
        cv.paint(region, canal <= 7**2, 10.0)
    region = cv.region((-5, 25, -1e9), (5, 35, -24))
    if region is not None:
        x, y, z = region.grid()
        cv.paint(region, x**2 + (y - 30) ** 2 <= 4.5**2, 35.0, "cord")
    region = cv.region((-13, -30, -1e9), (13, 0, -20))
    if region is not None:
        x, y, z = region.grid()
        yc = interp(z, ((-85, -22), (-70, -6)))
        rx, ry = interp(z, ((-85, 8), (-70, 13))), interp(z, ((-85, 8), (-70, 6)))
        cv.paint(region, (x / rx) ** 2 + ((y - yc) / ry) ** 2 <= 1, -990.0)  # pharynx, larynx, trachea
    _ellipsoid(cv, (0, 26, -4), (10, 11, 22), 35.0, "brainstem")
    for s, side in ((1, "left"), (-1, "right")):
        _ellipsoid(cv, (s * 46, 22, -38), (6, 12, 15), 15.0, f"parotid_{side}")
        _ellipsoid(cv, (s * 36, -2, -100), (7, 8, 14), 30.0, "two_contours")


def _keep_targets(cv: Canvas) -> None:
    """Target volumes change no HU: PTV_70 runs from the sinuses into the face in front of the eyes."""
    for key, c, r in (("ptv_face", (8, -58, -24), (20, 28, 18)), ("ctv", (8, -58, -24), (15, 22, 13)),
                      ("gtv", (8, -58, -24), (10, 13, 9)), ("ptv_neck", (-32, 2, -105), (14, 16, 20))):
        region = cv.region(np.subtract(c, r), np.add(c, r))
        if region is not None:
            x, y, z = region.grid()
            cv.keep(key, region, (quadric(x, y, z, c, r) <= 1) & cv.lookup("body", region))


def evaluate_grid(z: np.ndarray, y: np.ndarray, x: np.ndarray, noise_hu: float = 0.0, seed: int = 0,
                  air_noise_hu: float = 0.0, face: FaceShape = DEFAULT_FACE) -> tuple[np.ndarray, dict[str, BoxMask]]:
    """HU (float32, indexed (z, y, x) as given) and ROI box masks on an axis-aligned grid.

    Parameters
    ----------
    z, y, x
        Monotonic LPS coordinates (mm) of the slices, rows and columns (descending is fine).
    noise_hu
        Sigma of the gaussian noise added inside the body only; outside air stays exactly -1000.
    seed
        Seed of the noise.
    air_noise_hu
        Sigma of the noise in the air outside the body (default none).
    face
        The face's proportions (default: the original phantom).
    """
    cv = Canvas(z, y, x)
    body = _paint_body(cv, face)
    if body is None:
        return cv.hu, cv.masks
    _paint_skull_and_brain(cv)
    _paint_face(cv)
    _paint_neck(cv)
    _keep_targets(cv)
    region, depth = cv.skin_depth  # type: ignore[misc]
    hu, inside = cv.hu[region.index], cv.masks["body"].array
    hu[inside & (depth < 1.5)] = 40.0  # skin covers whatever lies just beneath it
    if noise_hu > 0:
        rng = np.random.default_rng(seed)
        for part, _ in region.chunks():
            noise = rng.standard_normal(hu[part].shape, dtype=np.float32) * np.float32(noise_hu)
            hu[part] += noise * inside[part]
    if air_noise_hu > 0:
        rng = np.random.default_rng([seed, 1])
        for part, slab in cv.all.chunks():
            noise = rng.standard_normal(slab.shape, dtype=np.float32) * np.float32(air_noise_hu)
            cv.hu[part] += noise * ~cv.lookup("body", slab)
    return cv.hu, cv.masks


def phantom_hu(points_lps: np.ndarray) -> np.ndarray:
    """Noise-free HU of the phantom at (N, 3) LPS points (mm): ground truth for any scan of it."""
    points = np.atleast_2d(np.asarray(points_lps, dtype=float))
    return np.array([evaluate_grid(p[2:3], p[1:2], p[0:1])[0][0, 0, 0] for p in points], dtype=np.float32)


def ct_affine(options: PhantomOptions) -> np.ndarray:
    """(slice, row, column) -> LPS affine of the scan, slices ascending along the normal.

    The field is centred on x = y = 0 and the eyes sit 58 % up the scan (both moved by ``shift_mm``); feet-first scans have the
    normal pointing inferior, so their slice 0 is the top of the head.
    """
    orientation = np.array(ORIENTATIONS[options.position], dtype=float)
    row, col = orientation[:3], orientation[3:]
    shift = np.asarray(options.shift_mm, dtype=float)
    corner = (-row * (options.columns - 1) / 2 * options.pixel_spacing - col * (options.rows - 1) / 2 * options.pixel_spacing
              - shift[:3])
    extent = (options.slices - 1) * options.slice_thickness
    z = np.round(-0.58 * extent - shift[2] + np.arange(options.slices) * options.slice_thickness, 4)
    first = z[0] if np.cross(row, col)[2] > 0 else z[-1]
    spacing = (options.slice_thickness, options.pixel_spacing, options.pixel_spacing)
    return affine_from_dicom(np.array([corner[0], corner[1], first]), orientation, spacing)


def evaluate_boxes(options: PhantomOptions) -> tuple[np.ndarray, dict[str, BoxMask], np.ndarray]:
    """HU, ROI box masks and affine of the CT ``options`` describe (memory-light form of :func:`evaluate`)."""
    affine = ct_affine(options)
    k, j, i = (np.arange(n) for n in (options.slices, options.rows, options.columns))
    z = affine[2, 3] + k * affine[2, 0]  # every position is axis-aligned: one coordinate per axis
    y = affine[1, 3] + j * affine[1, 1]
    x = affine[0, 3] + i * affine[0, 2]
    hu, masks = evaluate_grid(z, y, x, options.noise_hu, options.seed, options.air_noise_hu, options.face)
    return hu, masks, affine


def evaluate(options: PhantomOptions) -> tuple[np.ndarray, Mapping[str, np.ndarray], np.ndarray]:
    """HU (float32), full-size ROI masks (built on access) and the affine of the CT ``options`` describe."""
    hu, masks, affine = evaluate_boxes(options)
    return hu, FullMasks(masks, hu.shape), affine

