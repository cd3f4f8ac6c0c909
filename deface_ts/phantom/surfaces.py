"""The phantom's head as implicit surfaces: signed depths (mm, positive inside) in patient coordinates.

Landmarks (eyes, nose tip, chin) and the face's proportions (:class:`FaceShape`) live
here because the surfaces are drawn around them; :mod:`deface_ts.phantom.anatomy`
paints the tissues from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EYE_CENTRES = {"left": np.array([32.0, -54.0, 0.0]), "right": np.array([-32.0, -54.0, 0.0])}
EYE_RADIUS = 12.0
NOSE_TIP = np.array([0.0, -96.0, -30.0])  # 3.5 mm under the skin of the nose tip
CHIN = np.array([0.0, -78.0, -84.0])  # 4 mm under the skin of the chin
AIR_HU = -1000.0

# Midline skin profile of the face without nose, lips and chin: (z, y) in mm.
PROFILE = ((-120, -70), (-95, -74), (-82, -76), (-72, -74), (-65, -77), (-57, -78), (-45, -78), (-35, -76),
            (-20, -76), (0, -78), (10, -77), (20, -81), (40, -80))
FACE_HALF_WIDTH = ((-120, 40), (-100, 40), (-80, 46), (-60, 54), (-40, 60), (-20, 66), (0, 70), (40, 70))
FACE_AXIS_Y = -10.0  # the face is the front half of an elliptic cylinder centred here in every slice
CRANIUM = ((0.0, 12.0, 30.0), (76.0, 94.0, 94.0))  # scalp surface; skull 6 mm in, inner table 12 mm in
# Small ellipsoids (centre, radii, blend mm) on the skin: a positive blend adds, a negative one carves.
SKIN_PIECES = [
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


#: The original phantom's face.
DEFAULT_FACE = FaceShape()


def interp(v: np.ndarray, points) -> np.ndarray:
    xp, fp = zip(*points)
    return np.interp(v.ravel(), xp, fp).reshape(v.shape).astype(np.float32)


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum (a union of signed depths, positive inside): fillets of size ~k mm where surfaces meet."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.maximum(a, b) + h * h * (k / 4.0)


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -smax(-a, -b, k)


def quadric(x, y, z, c, r) -> np.ndarray:
    """Normalised ellipsoid quadratic, < 1 inside."""
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2


def ellipsoid_depth(x, y, z, c, r) -> np.ndarray:
    """Approximate signed depth (mm, positive inside) under an ellipsoid's surface; exact on spheres.

    The k0 (k0 - 1) / k1 bound (Quilez) is accurate near the surface, where the skin and fat layers need it.
    """
    px, py, pz = x - (c[0] - 1e-3), y - c[1], z - c[2]  # the offset keeps the centre itself off 0 / 0
    k0 = np.sqrt((px / r[0]) ** 2 + (py / r[1]) ** 2 + (pz / r[2]) ** 2)
    k1 = np.sqrt((px / r[0] ** 2) ** 2 + (py / r[1] ** 2) ** 2 + (pz / r[2] ** 2) ** 2)
    return -k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def ellipse_depth(x, y, c, r) -> np.ndarray:
    """The same in one axial plane: depth under an elliptic cylinder along z."""
    px, py = x - (c[0] - 1e-3), y - c[1]
    k0 = np.sqrt((px / r[0]) ** 2 + (py / r[1]) ** 2)
    k1 = np.sqrt((px / r[0] ** 2) ** 2 + (py / r[1] ** 2) ** 2)
    return -k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def bump(x, z, cx, cz, sx, sz, height) -> np.ndarray:
    return height * np.exp(-(((x - cx) / sx) ** 2) - ((z - cz) / sz) ** 2)


def face_relief(x: np.ndarray, z: np.ndarray, shape: FaceShape = DEFAULT_FACE) -> np.ndarray:
    """Forward displacement (mm) of the face's skin over a smooth elliptic base: brow, nose, lips, chin.

    A height field over the coronal (x, z) plane: cheap (2-D) and what a face detector sees in a render.
    """
    ax = np.abs(x)
    relief = 9.0 * shape.brow * np.exp(-(((z - 11.0) / 5.0) ** 2) - (x / 42.0) ** 6)  # brow ridge
    relief = relief + bump(ax, z, 38.0, -24.0, 14.0, 12.0, 6.0 * shape.cheeks)  # cheek bones
    for c in EYE_CENTRES.values():  # orbits: the skin sinks around each eye (the lid is added as a sphere)
        relief = relief - 14.0 * shape.orbits * np.exp(-((((x - c[0]) / 14.0) ** 2 + ((z - c[2]) / 10.0) ** 2) ** 2))
    zn = 4.0 + (z - 4.0) / shape.nose_length  # the nose hangs from its root at z = 4
    height = shape.nose_projection * interp(zn, ((-37, 0), (-34, 15), (-31, 22), (-29, 23.5), (-24, 19), (-12, 10),
                                                   (-2, 4), (4, 0)))
    width = shape.nose_width * interp(zn, ((-37, 16), (-30, 14), (-24, 11), (-10, 8), (4, 7)))
    nose = height * np.clip(1.0 - (x / width) ** 2, 0.0, 1.0) ** 1.5
    alae = bump(ax, z, 12.0 * shape.nose_width, 4.0 - 36.0 * shape.nose_length, 5.0, 4.0, 9.0 * shape.nose_projection)
    relief = relief + smax(nose, alae, 3.0)
    zm = z - shape.mouth_shift_mm
    lips = bump(x, zm, 0.0, -51.0, 21.0, 3.5, 4.0 * shape.lips) * np.exp(-((x / 24.0) ** 4))
    lips = lips + bump(x, zm, 0.0, -62.0, 20.0, 3.5, 4.0 * shape.lips) * np.exp(-((x / 22.0) ** 4))
    mouth = 7.0 * np.exp(-(((zm + 56.5) / 1.3) ** 2) - (x / 24.0) ** 8)  # the mouth line between the lips
    chin = bump(x, z, 0.0, -84.0, 18.0, 8.0, 6.0 * shape.chin)
    return relief + lips - mouth + chin


def face_depth(x, y, z, shape: FaceShape = DEFAULT_FACE) -> np.ndarray:
    """Depth under the face: an elliptic cylinder per slice, displaced forward by the relief, capped below
    along the jaw line (the chin and the underside of the jaw) and above inside the cranium."""
    y_front = interp(z, PROFILE)
    half_width = interp(z, FACE_HALF_WIDTH) * np.float32(shape.face_width)
    base = ellipse_depth(x, y, (0.0, FACE_AXIS_Y), (half_width, FACE_AXIS_Y - y_front))
    h = 0.5
    relief = face_relief(x, z, shape)
    gx = (face_relief(x + h, z, shape) - face_relief(x - h, z, shape)) / (2 * h)
    gz = (face_relief(x, z + h, shape) - face_relief(x, z - h, shape)) / (2 * h)
    # A displaced surface is closer than its displacement says where it slopes: divide by the slope norm.
    front = (base + relief) / np.sqrt(1.0 + gx * gx + gz * gz)
    jaw_line = -97.0 + 27.0 * (x / 48.0) ** 2
    return smin(smin(front, z - jaw_line, 6.0), 36.0 - z, 4.0)


def floor_z(y) -> np.ndarray:
    """Cranial floor: anterior fossa over the orbits, middle and posterior fossae lower down."""
    return -14.0 + 34.0 / (1.0 + np.exp((y + 20.0) / 3.0))


def segment_distance(x, y, z, a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = np.clip(((x - a[0]) * d[0] + (y - a[1]) * d[1] + (z - a[2]) * d[2]) / (d @ d), 0.0, 1.0)
    return np.sqrt((x - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 + (z - a[2] - t * d[2]) ** 2)
