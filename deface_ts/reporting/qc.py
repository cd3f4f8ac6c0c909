"""QC pictures of one defaced case: what a person should look at before sharing it.

Four PNGs, all drawn upright whatever the patient position (slices through
`AnatomicalView`, renders from cameras set from the affine):

* ``renders.png``: the skin surface before (top row) and after (bottom row),
  one column per view angle;
* ``axial_eyes.png``: the axial CT slice through the eye centres, before with
  the removal (red) and the protected voxels (green) overlaid, and after;
* ``sagittal_eyes.png``: the midline sagittal slice between the eye centres
  (nose, lips and chin lie there), laid out the same way;
* ``dose.png``: dose before and after, resampled (trilinear) onto the same
  axial and sagittal CT slices and drawn over the CT, on one colour scale.

Axial slices follow the radiological convention (anterior at the top, the
patient's right on the image's left); sagittal slices put superior at the top
and anterior on the left. Pixels are square in millimetres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deface_ts.geometry.view import AnatomicalView
from deface_ts.geometry.volume import LEFT, SUPERIOR, Volume

#: Head-and-neck soft-tissue window (HU): level, width.
CT_WINDOW = (40.0, 400.0)
REMOVED_RGB = (230, 40, 40)
PROTECTED_RGB = (40, 200, 70)
OVERLAY_ALPHA = 0.45
#: Dose below this fraction of the colour scale's maximum is not coloured.
DOSE_FLOOR = 0.05
#: Colour map anchors (fraction of max → RGB): blue, cyan, green, yellow, red.
_DOSE_COLOURS = np.array([[0, 0, 200], [0, 200, 230], [40, 200, 40], [240, 220, 0], [220, 20, 20]], dtype=float)
BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
GAP = 8
LABEL_H = 16

FILES = {"renders": "renders.png", "axial": "axial_eyes.png", "sagittal": "sagittal_eyes.png", "dose": "dose.png"}


# ------------------------------------------------------------------------------------------ slices
class Slicer:
    """Upright 2-D slices of volumes on one CT grid, through one point."""

    def __init__(self, ct: Volume, centre_mm: np.ndarray) -> None:
        self.ct = ct
        self.view = AnatomicalView.of(ct)
        s, a, left = self.view.coordinates
        self.s = int(np.argmin(np.abs(s - float(centre_mm @ SUPERIOR))))
        self.l = int(np.argmin(np.abs(left - float(centre_mm @ LEFT))))
        step = [abs(c[1] - c[0]) if len(c) > 1 else 1.0 for c in (s, a, left)]
        self.step_s, self.step_a, self.step_l = step

    def axial(self, array: np.ndarray) -> np.ndarray:
        """(anterior → posterior rows, right → left columns) at the eyes' level."""
        return self.view.view(array)[self.s][::-1, :]

    def sagittal(self, array: np.ndarray) -> np.ndarray:
        """(superior → inferior rows, anterior → posterior columns) at the midline between the eyes."""
        return self.view.view(array)[:, :, self.l][::-1, ::-1]

    def scale(self, plane: str) -> tuple[float, float]:
        """(row, column) size of a pixel in mm for the plane."""
        return (self.step_a, self.step_l) if plane == "axial" else (self.step_s, self.step_a)

    def index_grid(self, plane: str) -> np.ndarray:
        """(3, H, W) CT (k, j, i) indices of the pixels of the upright slice."""
        k, j, i = np.indices(self.ct.shape, sparse=True)
        full = [np.broadcast_to(a, self.ct.shape) for a in (k, j, i)]
        cut = self.axial if plane == "axial" else self.sagittal
        return np.stack([cut(a) for a in full]).astype(np.float64)


def window(hu: np.ndarray, level_width: tuple[float, float] = CT_WINDOW) -> np.ndarray:
    """HU → grey uint8 in a display window."""
    level, width = level_width
    grey = (hu.astype(np.float32) - (level - width / 2.0)) / width
    return (np.clip(grey, 0.0, 1.0) * 255.0).astype(np.uint8)


def overlay(grey: np.ndarray, layers: list[tuple[np.ndarray, tuple[int, int, int]]],
            alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend coloured masks onto a grey image (later layers on top)."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for mask, colour in layers:
        rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * np.asarray(colour, np.float32)
    return rgb.astype(np.uint8)


def dose_colours(fraction: np.ndarray) -> np.ndarray:
    """Fractions 0..1 → RGB float (H, W, 3) on a blue-to-red scale."""
    anchors = np.linspace(0.0, 1.0, len(_DOSE_COLOURS))
    f = np.clip(fraction, 0.0, 1.0)
    return np.stack([np.interp(f, anchors, _DOSE_COLOURS[:, c]) for c in range(3)], axis=-1)


def dose_on_slice(dose: Volume, ct: Volume, indices: np.ndarray) -> np.ndarray:
    """Dose (Gy) at the CT voxel centres of a slice, trilinear, 0 outside the dose grid."""
    return dose.sample(ct.index_to_lps(indices.reshape(3, -1).T)).reshape(indices.shape[1:])


def paint_dose(grey: np.ndarray, gy: np.ndarray, max_gy: float) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if max_gy <= 0:
        return rgb.astype(np.uint8)
    fraction = gy / max_gy
    shown = fraction >= DOSE_FLOOR
    rgb[shown] = 0.4 * rgb[shown] + 0.6 * dose_colours(fraction[shown])
    return rgb.astype(np.uint8)


# ------------------------------------------------------------------------------------------ layout
def to_image(rgb: np.ndarray, pixel_mm: tuple[float, float], display_mm: float) -> Image.Image:
    """An RGB array with (row, column) pixel size ``pixel_mm`` resampled to square ``display_mm`` pixels."""
    h, w = rgb.shape[:2]
    size = (max(1, round(w * pixel_mm[1] / display_mm)), max(1, round(h * pixel_mm[0] / display_mm)))
    return Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.Resampling.NEAREST)


def grid(rows: list[list[tuple[str, Image.Image]]], title: str = "") -> Image.Image:
    """Panels with a label above each, rows by columns, on a dark background, under an optional title."""
    widths = [max(row[c][1].width for row in rows if c < len(row)) for c in range(max(len(r) for r in rows))]
    heights = [max(panel.height for _, panel in row) + LABEL_H for row in rows]
    top = LABEL_H + GAP if title else 0
    out = Image.new("RGB", (sum(widths) + GAP * (len(widths) + 1), top + sum(heights) + GAP * (len(heights) + 1)),
                    BACKGROUND)
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((GAP + 2, GAP), title, fill=TEXT)
    y = GAP + top
    for row, height in zip(rows, heights):
        x = GAP
        for (label, panel), width in zip(row, widths):
            draw.text((x + 2, y + 2), label, fill=TEXT)
            out.paste(panel, (x, y + LABEL_H))
            x += width + GAP
        y += height + GAP
    return out


def colour_bar(max_gy: float, width: int = 220, height: int = 14) -> Image.Image:
    bar = dose_colours(np.tile(np.linspace(0.0, 1.0, width), (height, 1))).astype(np.uint8)
    out = Image.new("RGB", (width + 90, height + 4), BACKGROUND)
    out.paste(Image.fromarray(bar), (0, 2))
    ImageDraw.Draw(out).text((width + 6, 3), f"0-{max_gy:.1f} Gy", fill=TEXT)
    return out


def save_png(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG", compress_level=3)


# ------------------------------------------------------------------------------------------ pictures
def slice_pictures(slicer: Slicer, before: Volume, after: Volume, removed: np.ndarray, protected: np.ndarray,
                   plane: str, display_mm: float) -> Image.Image:
    cut = slicer.axial if plane == "axial" else slicer.sagittal
    scale = slicer.scale(plane)
    marked = overlay(window(cut(before.array)), [(cut(removed), REMOVED_RGB), (cut(protected), PROTECTED_RGB)])
    plain_after = overlay(window(cut(after.array)), [])
    where = "at the eyes' level" if plane == "axial" else "at the midline between the eyes"
    panels = [("before", to_image(marked, scale, display_mm)), ("after", to_image(plain_after, scale, display_mm))]
    return grid([panels], title=f"{plane} {where}; removed red, protected green")


def dose_picture(slicer: Slicer, before: Volume, after: Volume, dose_before: Volume, dose_after: Volume,
                 display_mm: float) -> Image.Image:
    max_gy = float(dose_before.array.max())
    rows = []
    for plane in ("axial", "sagittal"):
        indices = slicer.index_grid(plane)
        cut = slicer.axial if plane == "axial" else slicer.sagittal
        scale = slicer.scale(plane)
        panels = []
        for label, ct, dose in (("before", before, dose_before), ("after", after, dose_after)):
            rgb = paint_dose(window(cut(ct.array)), dose_on_slice(dose, ct, indices), max_gy)
            panels.append((f"{label}, {plane}", to_image(rgb, scale, display_mm)))
        rows.append(panels)
    rows.append([("", colour_bar(max_gy))])
    return grid(rows, title="dose on the CT slices (trilinear from the dose grid)")


def render_picture(renders_before: dict, renders_after: dict) -> Image.Image | None:
    angles = sorted(set(renders_before) & set(renders_after))
    if not angles:
        return None
    rows = [[(f"{label} {angle:+.0f} deg", Image.fromarray(renders[angle].image)) for angle in angles]
            for label, renders in (("before", renders_before), ("after", renders_after))]
    return grid(rows, title="skin surface renders (0 deg = anterior, + towards the patient's left)")


def eye_level_centre(ct: Volume, eye_centres_mm: list[np.ndarray], removed: np.ndarray) -> np.ndarray:
    """Mean of the eye centres; without eyes, the centre of the removal (or of the image)."""
    if len(eye_centres_mm):
        return np.mean(np.asarray(eye_centres_mm, dtype=float).reshape(-1, 3), axis=0)
    where = np.argwhere(removed) if removed.any() else np.array([np.array(ct.shape) / 2.0])
    return ct.index_to_lps(where.mean(axis=0)[None])[0]


def write_qc_pictures(folder: Path, before: Volume, after: Volume, removed: np.ndarray, protected: np.ndarray,
                      eye_centres_mm: list[np.ndarray], dose_before: Volume | None = None,
                      dose_after: Volume | None = None, renders_before: dict | None = None,
                      renders_after: dict | None = None) -> dict[str, str]:
    """Write the QC PNGs of one case into ``folder``.

    Parameters
    ----------
    folder
        Created if missing.
    before, after
        CT (HU) before and after defacing, on the same axis-aligned grid.
    removed, protected
        Boolean masks on that grid (`RemovalPlan.removed`, `RemovalPlan.protected`).
    eye_centres_mm
        LPS eye centres; the slices pass through their mean (the removal's centre without them).
    dose_before, dose_after
        One dose (Gy) before and after, each on its own grid; ``dose.png`` only when both are given.
    renders_before, renders_after
        angle → `Render`; ``renders.png`` shows the angles both hold (pass the after renders made with
        ``frame=renders_before`` so both rows show the same rays).

    Returns
    -------
    dict
        Picture name ("renders", "axial", "sagittal", "dose") → file name inside ``folder``.
    """
    folder = Path(folder)
    if after.shape != before.shape or removed.shape != before.shape or protected.shape != before.shape:
        raise ValueError(f"QC pictures need one grid: before {before.shape}, after {after.shape}, "
                         f"removed {removed.shape}, protected {protected.shape}")
    folder.mkdir(parents=True, exist_ok=True)
    slicer = Slicer(before, eye_level_centre(before, eye_centres_mm, removed))
    # Square display pixels no larger than the finest voxel step, and slices at least ~400 pixels across.
    extent_mm = max(n * step for n, step in zip((len(c) for c in slicer.view.coordinates),
                                                 (slicer.step_s, slicer.step_a, slicer.step_l)))
    display_mm = float(min(slicer.step_s, slicer.step_a, slicer.step_l, extent_mm / 400.0))
    pictures: dict[str, Image.Image] = {
        "axial": slice_pictures(slicer, before, after, removed, protected, "axial", display_mm),
        "sagittal": slice_pictures(slicer, before, after, removed, protected, "sagittal", display_mm),
    }
    if dose_before is not None and dose_after is not None:
        pictures["dose"] = dose_picture(slicer, before, after, dose_before, dose_after, display_mm)
    written = {}
    for name, picture in pictures.items():
        save_png(picture, folder / FILES[name])
        written[name] = FILES[name]
    if renders_before and renders_after:
        written.update(write_render_picture(folder, renders_before, renders_after))
    return written


def write_render_picture(folder: Path, renders_before: dict, renders_after: dict) -> dict[str, str]:
    """``renders.png`` in ``folder`` (see :func:`write_qc_pictures`); {} when the two hold no common angle."""
    picture = render_picture(renders_before, renders_after)
    if picture is None:
        return {}
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_png(picture, Path(folder) / FILES["renders"])
    return {"renders": FILES["renders"]}
