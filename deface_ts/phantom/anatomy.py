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

#: ImageOrientationPatient per patient position (row direction, column direction).
ORIENTATIONS = {
    "HFS": (1, 0, 0, 0, 1, 0),
    "HFP": (-1, 0, 0, 0, -1, 0),
    "FFS": (-1, 0, 0, 0, 1, 0),
    "FFP": (1, 0, 0, 0, -1, 0),
}
EYE_CENTRES = {"left": np.array([32.0, -54.0, 0.0]), "right": np.array([-32.0, -54.0, 0.0])}
EYE_RADIUS = 12.0
NOSE_TIP = np.array([0.0, -96.0, -30.0])  # 3.5 mm under the skin of the nose tip
CHIN = np.array([0.0, -78.0, -84.0])  # 4 mm under the skin of the chin
AIR_HU = -1000.0

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

# Midline skin profile of the face without nose, lips and chin: (z, y) in mm.
_PROFILE = ((-120, -70), (-95, -74), (-82, -76), (-72, -74), (-65, -77), (-57, -78), (-45, -78), (-35, -76),
            (-20, -76), (0, -78), (10, -77), (20, -81), (40, -80))
_FACE_HALF_WIDTH = ((-120, 40), (-100, 40), (-80, 46), (-60, 54), (-40, 60), (-20, 66), (0, 70), (40, 70))
_FACE_AXIS_Y = -10.0  # the face is the front half of an elliptic cylinder centred here in every slice
_CRANIUM = ((0.0, 12.0, 30.0), (76.0, 94.0, 94.0))  # scalp surface; skull 6 mm in, inner table 12 mm in
# Small ellipsoids (centre, radii, blend mm) on the skin: a positive blend adds, a negative one carves.
_SKIN_PIECES = [
    *((tuple(c), (14.5, 14.5, 14.5), 1.5) for c in EYE_CENTRES.values()),  # eyelids over the globes
    *(((s * 76.0, 10.0, -6.0), (6.0, 15.0, 28.0), 3.0) for s in (1, -1)),  # ears
    *(((s * 82.0, 12.0, -9.0), (4.5, 8.0, 11.0), -1.5) for s in (1, -1)),  # their conchae
    *(((s * 7.0, -89.0, -36.0), (3.5, 5.0, 3.0), -1.0) for s in (1, -1)),  # nostrils
]


@dataclass(frozen=True)
class FaceShape:
    """The proportions of the phantom's face; the defaults are the original phantom.

    Varying them gives distinct synthetic people for calibrating verification
    (scripts/calibrate_verify.py): the identity threshold must hold across faces,
    not on one. Scales are relative (1 = default), shifts in mm.
    """

    nose_length: float = 1.0  # the nose's superior-inferior extent, about its root
    nose_width: float = 1.0
    nose_projection: float = 1.0  # how far the nose stands out of the face
    brow: float = 1.0  # brow ridge height
    cheeks: float = 1.0  # cheekbone height
    orbits: float = 1.0  # how deep the skin sinks around the eyes
    lips: float = 1.0  # lip fullness
    mouth_shift_mm: float = 0.0  # the mouth moved superior (+) or inferior (-)
    chin: float = 1.0  # chin projection
    face_width: float = 1.0  # half-width of the face at every level

    def __post_init__(self) -> None:
        for name in ("nose_length", "nose_width", "nose_projection", "face_width"):
            if not 0.5 <= getattr(self, name) <= 1.6:
                raise ValueError(f"FaceShape.{name} must lie in 0.5..1.6, got {getattr(self, name)}")


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


# ------------------------------------------------------------------------------------------ implicit fields
def _interp(v: np.ndarray, points) -> np.ndarray:
    xp, fp = zip(*points)
    return np.interp(v.ravel(), xp, fp).reshape(v.shape).astype(np.float32)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum (a union of signed depths, positive inside): fillets of size ~k mm where surfaces meet."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.maximum(a, b) + h * h * (k / 4.0)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -_smax(-a, -b, k)


def _q(x, y, z, c, r) -> np.ndarray:
    """Normalised ellipsoid quadratic, < 1 inside."""
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2


def _ellipsoid_depth(x, y, z, c, r) -> np.ndarray:
    """Approximate signed depth (mm, positive inside) under an ellipsoid's surface; exact on spheres.

    The k0 (k0 - 1) / k1 bound (Quilez) is accurate near the surface, where the skin and fat layers need it.
    """
    px, py, pz = x - (c[0] - 1e-3), y - c[1], z - c[2]  # the offset keeps the centre itself off 0 / 0
    k0 = np.sqrt((px / r[0]) ** 2 + (py / r[1]) ** 2 + (pz / r[2]) ** 2)
    k1 = np.sqrt((px / r[0] ** 2) ** 2 + (py / r[1] ** 2) ** 2 + (pz / r[2] ** 2) ** 2)
    return -k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _ellipse_depth(x, y, c, r) -> np.ndarray:
    """The same in one axial plane: depth under an elliptic cylinder along z."""
    px, py = x - (c[0] - 1e-3), y - c[1]
    k0 = np.sqrt((px / r[0]) ** 2 + (py / r[1]) ** 2)
    k1 = np.sqrt((px / r[0] ** 2) ** 2 + (py / r[1] ** 2) ** 2)
    return -k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _bump(x, z, cx, cz, sx, sz, height) -> np.ndarray:
    return height * np.exp(-(((x - cx) / sx) ** 2) - ((z - cz) / sz) ** 2)


def face_relief(x: np.ndarray, z: np.ndarray, shape: FaceShape = FaceShape()) -> np.ndarray:
    """Forward displacement (mm) of the face's skin over a smooth elliptic base: brow, nose, lips, chin.

    A height field over the coronal (x, z) plane: cheap (2-D) and what a face detector sees in a render.
    """
    ax = np.abs(x)
    relief = 9.0 * shape.brow * np.exp(-(((z - 11.0) / 5.0) ** 2) - (x / 42.0) ** 6)  # brow ridge
    relief = relief + _bump(ax, z, 38.0, -24.0, 14.0, 12.0, 6.0 * shape.cheeks)  # cheek bones
    for c in EYE_CENTRES.values():  # orbits: the skin sinks around each eye (the lid is added as a sphere)
        relief = relief - 14.0 * shape.orbits * np.exp(-((((x - c[0]) / 14.0) ** 2 + ((z - c[2]) / 10.0) ** 2) ** 2))
    zn = 4.0 + (z - 4.0) / shape.nose_length  # the nose hangs from its root at z = 4
    height = shape.nose_projection * _interp(zn, ((-37, 0), (-34, 15), (-31, 22), (-29, 23.5), (-24, 19), (-12, 10),
                                                   (-2, 4), (4, 0)))
    width = shape.nose_width * _interp(zn, ((-37, 16), (-30, 14), (-24, 11), (-10, 8), (4, 7)))
    nose = height * np.clip(1.0 - (x / width) ** 2, 0.0, 1.0) ** 1.5
    alae = _bump(ax, z, 12.0 * shape.nose_width, 4.0 - 36.0 * shape.nose_length, 5.0, 4.0, 9.0 * shape.nose_projection)
    relief = relief + _smax(nose, alae, 3.0)
    zm = z - shape.mouth_shift_mm
    lips = _bump(x, zm, 0.0, -51.0, 21.0, 3.5, 4.0 * shape.lips) * np.exp(-((x / 24.0) ** 4))
    lips = lips + _bump(x, zm, 0.0, -62.0, 20.0, 3.5, 4.0 * shape.lips) * np.exp(-((x / 22.0) ** 4))
    mouth = 7.0 * np.exp(-(((zm + 56.5) / 1.3) ** 2) - (x / 24.0) ** 8)  # the mouth line between the lips
    chin = _bump(x, z, 0.0, -84.0, 18.0, 8.0, 6.0 * shape.chin)
    return relief + lips - mouth + chin


def _face_depth(x, y, z, shape: FaceShape = FaceShape()) -> np.ndarray:
    """Depth under the face: an elliptic cylinder per slice, displaced forward by the relief, capped below
    along the jaw line (the chin and the underside of the jaw) and above inside the cranium."""
    y_front = _interp(z, _PROFILE)
    half_width = _interp(z, _FACE_HALF_WIDTH) * np.float32(shape.face_width)
    base = _ellipse_depth(x, y, (0.0, _FACE_AXIS_Y), (half_width, _FACE_AXIS_Y - y_front))
    h = 0.5
    relief = face_relief(x, z, shape)
    gx = (face_relief(x + h, z, shape) - face_relief(x - h, z, shape)) / (2 * h)
    gz = (face_relief(x, z + h, shape) - face_relief(x, z - h, shape)) / (2 * h)
    # A displaced surface is closer than its displacement says where it slopes: divide by the slope norm.
    front = (base + relief) / np.sqrt(1.0 + gx * gx + gz * gz)
    jaw_line = -97.0 + 27.0 * (x / 48.0) ** 2
    return _smin(_smin(front, z - jaw_line, 6.0), 36.0 - z, 4.0)


def _floor_z(y) -> np.ndarray:
    """Cranial floor: anterior fossa over the orbits, middle and posterior fossae lower down."""
    return -14.0 + 34.0 / (1.0 + np.exp((y + 20.0) / 3.0))


def _segment_distance(x, y, z, a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = np.clip(((x - a[0]) * d[0] + (y - a[1]) * d[1] + (z - a[2]) * d[2]) / (d @ d), 0.0, 1.0)
    return np.sqrt((x - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 + (z - a[2] - t * d[2]) ** 2)


# ------------------------------------------------------------------------------------------ the canvas
@dataclass
class _Region:
    """An axis-aligned block of the grid and the patient coordinates of its voxel centres."""

    start: tuple[int, int, int]
    z: np.ndarray  # 1-D, one per slice
    y: np.ndarray  # one per row
    x: np.ndarray  # one per column

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.z), len(self.y), len(self.x))

    @property
    def index(self) -> tuple[slice, slice, slice]:
        return tuple(slice(s, s + n) for s, n in zip(self.start, self.shape))  # type: ignore[return-value]

    def grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (x, y, z) coordinates."""
        return self.x[None, None, :], self.y[None, :, None], self.z[:, None, None]

    def sub(self, lo, hi) -> _Region | None:
        """The part whose voxel centres lie in the LPS box ``lo``..``hi`` (x, y, z); None if empty."""
        start, vectors = [], []
        for v, s, a in zip((self.z, self.y, self.x), self.start, (2, 1, 0)):
            found = np.flatnonzero((v >= lo[a]) & (v <= hi[a]))  # coordinates are monotonic: one run
            if found.size == 0:
                return None
            start.append(s + int(found[0]))
            vectors.append(v[found[0] : found[-1] + 1])
        return _Region(tuple(start), *vectors)  # type: ignore[arg-type]

    def chunks(self, slices: int = 16) -> Iterator[tuple[slice, _Region]]:
        """Slabs of a few slices, so temporaries stay small and in cache."""
        for k in range(0, len(self.z), slices):
            part = slice(k, min(k + slices, len(self.z)))
            yield part, _Region((self.start[0] + k, *self.start[1:]), self.z[part], self.y, self.x)


def _local(outer: tuple[int, ...], outer_shape, inner: tuple[int, ...], inner_shape):
    """Slices of the overlap of two boxes, in each box's own indices (None if they do not overlap)."""
    lo = np.maximum(outer, inner)
    hi = np.minimum(np.add(outer, outer_shape), np.add(inner, inner_shape))
    if np.any(hi <= lo):
        return None
    a = tuple(slice(int(l - o), int(h - o)) for l, h, o in zip(lo, hi, outer))
    b = tuple(slice(int(l - i), int(h - i)) for l, h, i in zip(lo, hi, inner))
    return a, b


class _Canvas:
    """HU array and box masks under construction on an axis-aligned grid."""

    def __init__(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
        self.all = _Region((0, 0, 0), *(np.asarray(v, dtype=np.float32) for v in (z, y, x)))
        self.hu = np.full(self.all.shape, AIR_HU, dtype=np.float32)
        self.masks: dict[str, BoxMask] = {}
        self.skin_depth: tuple[_Region, np.ndarray] | None = None  # depth (mm) under the skin in the body box

    def region(self, lo, hi) -> _Region | None:
        return self.all.sub(np.asarray(lo, float), np.asarray(hi, float))

    def lookup(self, key: str, region: _Region) -> np.ndarray:
        out = np.zeros(region.shape, dtype=bool)
        box = self.masks.get(key)
        if box is not None:
            overlap = _local(region.start, region.shape, box.offset, box.array.shape)
            if overlap:
                out[overlap[0]] = box.array[overlap[1]]
        return out

    def paint(self, region: _Region | None, mask: np.ndarray | bool, hu: float, key: str | None = None) -> None:
        """Set ``hu`` where ``mask`` is inside the body (nothing is ever painted into outside air)."""
        if region is None:
            return
        inside = np.broadcast_to(mask, region.shape) & self.lookup("body", region)
        self.hu[region.index][inside] = hu
        if key is not None:
            self.keep(key, region, inside)

    def keep(self, key: str, region: _Region, mask: np.ndarray) -> None:
        """OR ``mask`` into ROI ``key``, growing its box as needed (ROIs may have separate parts)."""
        old = self.masks.get(key)
        if old is None:
            self.masks[key] = BoxMask(region.start, mask.copy())
            return
        lo = np.minimum(old.offset, region.start)
        hi = np.maximum(np.add(old.offset, old.array.shape), np.add(region.start, region.shape))
        if np.any(lo != old.offset) or np.any(hi != np.add(old.offset, old.array.shape)):
            grown = BoxMask((int(lo[0]), int(lo[1]), int(lo[2])), np.zeros(tuple(hi - lo), dtype=bool))
            grown.array[_local(grown.offset, grown.array.shape, old.offset, old.array.shape)[0]] = old.array
            old = self.masks[key] = grown
        inner = _local(old.offset, old.array.shape, region.start, region.shape)
        old.array[inner[0]] |= mask[inner[1]]


# ------------------------------------------------------------------------------------------ the anatomy
def _paint_body(cv: _Canvas, shape: FaceShape) -> _Region | None:
    """Skin surface as one smooth union of cranium, face, neck, eyelids and ears; skin, fat and muscle by depth."""
    region = cv.region((-90, -112, -1e9), (90, 112, 130))
    if region is None:
        return None
    body = np.zeros(region.shape, dtype=bool)
    depth = np.zeros(region.shape, dtype=np.float32)
    for part, slab in region.chunks():
        x, y, z = slab.grid()
        d = _smax(_ellipsoid_depth(x, y, z, *_CRANIUM), _face_depth(x, y, z, shape), 10.0)
        neck = np.minimum(_ellipse_depth(x, y, (0.0, 15.0), (55.0, 58.0)), -20.0 - z)  # ends inside the head
        d = _smax(d, neck, 8.0)
        for c, r, k in _SKIN_PIECES:  # small pieces only inside their own boxes
            sub = slab.sub(np.subtract(c, r) - abs(k) - 1, np.add(c, r) + abs(k) + 1)
            if sub is not None:
                inner = _local(slab.start, slab.shape, sub.start, sub.shape)[0]
                piece = _ellipsoid_depth(*sub.grid(), c, r)
                d[inner] = _smax(d[inner], piece, k) if k > 0 else _smin(d[inner], -piece, -k)
        body[part], depth[part] = d > 0, d
    cv.keep("body", region, body)
    hu = cv.hu[region.index]
    hu[body] = 40.0  # muscle and skin
    hu[body & (depth > 1.5) & (depth < 7.0)] = -100.0  # subcutaneous fat
    nose = region.sub((-18, -112, -40), (18, -82, 4))  # the nose is cartilage and dense tissue, not fat
    if nose is not None:
        inner = _local(region.start, region.shape, nose.start, nose.shape)[0]
        hu[inner][body[inner]] = 40.0
    cv.skin_depth = (region, depth)
    return region


def _paint_skull_and_brain(cv: _Canvas) -> None:
    c, r = np.array(_CRANIUM[0]), np.array(_CRANIUM[1])
    region = cv.region(c - r + 6, c + r - 6)
    if region is None:
        return
    for _, slab in region.chunks():
        x, y, z = slab.grid()
        floor = _floor_z(y)
        above = z > floor - 4
        inner = _q(x, y, z, c, r - 12) <= 1
        skull = (_q(x, y, z, c, r - 6) <= 1) & ~inner & above
        cv.paint(slab, skull, 1300.0)  # cortical tables
        cv.paint(slab, skull & (_q(x, y, z, c, r - 8) <= 1) & (_q(x, y, z, c, r - 10) > 1), 600.0)  # diploe
        cv.paint(slab, inner & above & (z <= floor), 900.0)  # skull base
        cv.paint(slab, inner & (z > floor), 10.0)  # CSF around the brain
        cv.paint(slab, (_q(x, y, z, c, r - 14) <= 1) & (z > floor + 2), 35.0, "brain")


def _ellipsoid(cv: _Canvas, c, r, hu: float, key: str | None = None, wall: float = 0.0, wall_hu: float = 0.0) -> None:
    """Paint an ellipsoid, optionally inside a bony wall ``wall`` mm thick."""
    c, r = np.asarray(c, float), np.asarray(r, float)
    region = cv.region(c - r - wall, c + r + wall)
    if region is None:
        return
    x, y, z = region.grid()
    if wall:
        cv.paint(region, _q(x, y, z, c, r + wall) <= 1, wall_hu)
    cv.paint(region, _q(x, y, z, c, r) <= 1, hu, key)


def _paint_face(cv: _Canvas) -> None:
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
            cv.paint(region, _q(x, y, z, c - (0, 9.5, 0), (4.5, 2.0, 4.5)) <= 1, 90.0, f"lens_{side}")
            if side == "left":
                cv.keep("eye_left_prv", region, (d2 <= 15**2) & cv.lookup("body", region))
                cv.keep("eye_ring", region, (d2 > 15**2) & (d2 <= 20**2) & cv.lookup("body", region))
        start, end = c + (0, EYE_RADIUS - 2, 0), np.array([sign * 6, -12, 6])
        region = cv.region(np.minimum(start, end) - 3, np.maximum(start, end) + 3)
        if region is not None:
            x, y, z = region.grid()
            nerve = (_segment_distance(x, y, z, start, end) <= 2.5) & (_q(x, y, z, c, (EYE_RADIUS,) * 3) > 1)
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


def _paint_neck(cv: _Canvas) -> None:
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
        yc = _interp(z, ((-85, -22), (-70, -6)))
        rx, ry = _interp(z, ((-85, 8), (-70, 13))), _interp(z, ((-85, 8), (-70, 6)))
        cv.paint(region, (x / rx) ** 2 + ((y - yc) / ry) ** 2 <= 1, -990.0)  # pharynx, larynx, trachea
    _ellipsoid(cv, (0, 26, -4), (10, 11, 22), 35.0, "brainstem")
    for s, side in ((1, "left"), (-1, "right")):
        _ellipsoid(cv, (s * 46, 22, -38), (6, 12, 15), 15.0, f"parotid_{side}")
        _ellipsoid(cv, (s * 36, -2, -100), (7, 8, 14), 30.0, "two_contours")


def _keep_targets(cv: _Canvas) -> None:
    """Target volumes change no HU: PTV_70 runs from the sinuses into the face in front of the eyes."""
    for key, c, r in (("ptv_face", (8, -58, -24), (20, 28, 18)), ("ctv", (8, -58, -24), (15, 22, 13)),
                      ("gtv", (8, -58, -24), (10, 13, 9)), ("ptv_neck", (-32, 2, -105), (14, 16, 20))):
        region = cv.region(np.subtract(c, r), np.add(c, r))
        if region is not None:
            x, y, z = region.grid()
            cv.keep(key, region, (_q(x, y, z, c, r) <= 1) & cv.lookup("body", region))


def evaluate_grid(z: np.ndarray, y: np.ndarray, x: np.ndarray, noise_hu: float = 0.0, seed: int = 0,
                  air_noise_hu: float = 0.0, face: FaceShape = FaceShape()) -> tuple[np.ndarray, dict[str, BoxMask]]:
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
    cv = _Canvas(z, y, x)
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

