"""`qc.png`: what a radiologist checks at a glance (docs/method.md sections 1 and 4).

Mid-coronal and mid-sagittal planes through the head centre, sampled in world space (so oblique
scans look like straight ones), in the radiological convention: coronal with the patient's right
on the viewer's left, sagittal with anterior on the left, superior up; patient-orientation letters
at each panel's edges. Overlaid: head and lesion outlines, the fitted sphere, the JIC zone
boundaries and the weight-bearing span's ends (coronal; a default span is drawn as such, never as
an acetabular edge), the antero-posterior region boundaries (sagittal), and the lesion's contact
with the head surface exactly as the necrotic arcs measured it. A third panel shows the head
depression (docs/method.md section 6) on the vertical plane through the head centre and the
deepest point the measurement reported: the reference sphere, and the head's outline over the
weight-bearing surface coloured by its depth below the sphere as the scan's grid images it, with
the depth and the ARCO 2019 stage (or the detection limit it stays under) in the panel's title and
in the picture's title. A fourth panel shows the head and lesion surfaces seen from the front: a
shaded depth map of their meshes (z-buffered in numpy, the faint head over and under the opaque
lesion), drawn as one image.

The picture is rasterised here with numpy and Pillow, without a plotting library (importing and
laying out a matplotlib figure cost more than everything else in the picture): images are resampled
bilinearly into their panels, outlines come from contourpy (as matplotlib's contour() did), lines,
markers and text are drawn with ``ImageDraw`` at :data:`SUPERSAMPLE` times the final size and the
whole picture is then halved by averaging, which anti-aliases them. Text is set in DejaVu Sans, the
face of the earlier matplotlib picture, read from matplotlib's font folder without importing
matplotlib (else from the system's fonts, else Pillow's own). The depth colours are matplotlib's
``plasma`` map, interpolated from :data:`PLASMA_ANCHORS`. The PNG is written by Pillow at zlib level
:data:`PNG_COMPRESS_LEVEL`. :func:`qc_picture` returns the pixels together with a record of what was
drawn where (:class:`QCPicture`, :class:`PanelRecord`), which the tests read.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.geometry.affine import mm_to_index
from pipeline.geometry.frame import HeadFrame, plane_points, sample_planes
from pipeline.geometry.mesh import mask_mesh
from pipeline.measures.location import surface_contact

MAX_FACES = 6000

#: zlib level of qc.png: 1 encodes about 4x faster than the default 6 for a file about 10 % larger
#: (the same pixels).
PNG_COMPRESS_LEVEL = 1

#: Pixels across the 3D panel's depth map (its side is 2.4 head radii, about 0.2 mm a pixel).
VIEW_PIXELS = 280

#: Colour and opacity of each surface in the 3D panel: the faint head, the opaque lesion.
HEAD_RGBA = (0.69, 0.69, 0.69, 0.2)
LESION_RGBA = (1.0, 0.19, 0.19, 0.85)
BACKGROUND_RGB = (0.957, 0.957, 0.957)

#: Depth colour scale of the depression panel, mm: 0 to twice the IIIA/IIIB border, so that a
#: IIIB depression is at the scale's upper half on every scan (deeper ones saturate).
DEPTH_MAX_MM = 4.0
DEPTH_CMAP = "plasma"

#: matplotlib's ``plasma`` colour map (0-255 RGB) at 17 evenly spaced points from 0 to 1;
#: interpolated linearly between them it stays within 5/255 of the 256-colour map.
PLASMA_ANCHORS = (
    (13, 8, 135), (49, 5, 151), (76, 2, 161), (102, 0, 167), (126, 3, 168), (149, 17, 161),
    (170, 35, 149), (188, 53, 135), (204, 71, 120), (218, 90, 106), (230, 108, 92), (240, 128, 78),
    (248, 149, 64), (253, 172, 51), (253, 197, 39), (248, 223, 37), (240, 249, 33),
)

#: Elevation of the 3D panel's viewpoint above the horizontal, degrees (a little from above, so
#: the weight-bearing dome shows).
VIEW_ELEVATION_DEG = 15.0

#: Size of qc.png (width, height), pixels; it is drawn SUPERSAMPLE times larger and then reduced
#: by averaging SUPERSAMPLE x SUPERSAMPLE blocks (anti-aliased lines and text).
SIZE = (1700, 500)
SUPERSAMPLE = 2
#: Pixels of qc.png per typographic point: sizes below are in points, as on a 100 dpi figure.
PX_PER_PT = 100 / 72

HEAD_COLOUR, LESION_COLOUR, SPHERE_COLOUR = "#33d17a", "#ff4040", "#9ad7ff"
CONTACT_COLOUR, ZONE_COLOUR = "#ff9d00", "#ffd34d"
#: A weight-bearing span's default end (assumed, dashed grey) and a found acetabular edge (magenta).
DEFAULT_END_COLOUR, EDGE_COLOUR = "#b8b8b8", "#ff66ff"

_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))

#: World (RAS) direction each 2D panel shows on the viewer's left: coronal images are displayed
#: as seen from the front (patient's right on the left), sagittal ones with anterior on the left.
VIEWER_LEFT = {"coronal": np.array([1.0, 0.0, 0.0]), "sagittal": np.array([0.0, 1.0, 0.0])}


def sample_image_plane(data: np.ndarray, affine: np.ndarray, frame: HeadFrame, plane: str,
                       a_mm: np.ndarray, w_mm: np.ndarray) -> np.ndarray:
    """Image intensities on a mid-plane pixel grid (trilinear; 0 outside the field of view)."""
    return _sample(data, affine, plane_points(frame, plane, a_mm, w_mm))


# --------------------------------------------------------------------------------------------
# orientation
# --------------------------------------------------------------------------------------------
def direction_letter(direction) -> str:
    """Patient-orientation letter (R/L, A/P, S/I) of a world RAS direction: its largest component."""
    d = np.asarray(direction, dtype=np.float64).reshape(3)
    k = int(np.argmax(np.abs(d)))
    return _AXIS_LETTERS[k][0 if d[k] > 0 else 1]


def panel_axes(frame: HeadFrame, plane: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """World directions of a 2D panel's increasing screen x and screen y, and whether the sampled
    horizontal coordinate (u or v) is drawn reversed.

    Derived from the sampling itself (:func:`pipeline.geometry.frame.plane_points`), so the letters and the
    display follow whatever direction the plane is sampled in (e_lat flips with the side).
    """
    grid = plane_points(frame, plane, np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    e_a = grid[1, 0] - grid[0, 0]
    e_w = grid[0, 1] - grid[0, 0]
    reversed_a = float(e_a @ VIEWER_LEFT[plane]) > 0
    return (-e_a if reversed_a else e_a), e_w, reversed_a


def edge_letters(screen_right, screen_up) -> dict:
    """Letters for the left, right, top and bottom edges of a view with these world directions."""
    right, up = np.asarray(screen_right, float), np.asarray(screen_up, float)
    return {"left": direction_letter(-right), "right": direction_letter(right),
            "top": direction_letter(up), "bottom": direction_letter(-up)}


def anterior_view_basis(elevation_deg: float = VIEW_ELEVATION_DEG) -> np.ndarray:
    """Rows: world directions of the 3D panel's screen right, screen up and toward the viewer.

    The viewer stands in front of the patient (anterior, raised by ``elevation_deg``) facing
    them, so the patient's left is on the viewer's right.
    """
    e = np.radians(elevation_deg)
    toward_viewer = np.array([0.0, np.cos(e), np.sin(e)])
    right = np.array([-1.0, 0.0, 0.0])
    up = np.cross(toward_viewer, right)
    return np.stack([right, up, toward_viewer])


def project_anterior_view(points_mm, center, elevation_deg: float = VIEW_ELEVATION_DEG) -> np.ndarray:
    """RAS mm points -> 3D panel coordinates (..., 3): screen x, screen y (mm from ``center``) and
    depth (mm toward the viewer; larger is nearer). Orthographic."""
    return (np.asarray(points_mm, dtype=np.float64) - np.asarray(center, float)) @ anterior_view_basis(elevation_deg).T


# --------------------------------------------------------------------------------------------
# what was drawn where
# --------------------------------------------------------------------------------------------
class Drawn(NamedTuple):
    """One thing drawn on a panel, in the panel's data coordinates (mm).

    ``xy`` is (n, 2) points (a line's vertices, a marker's or dots' centres) or, for per-segment
    colours ("depression-depth"), (n, 2, 2) segments with their ``values`` (depth, mm). ``colour``
    is RGB 0-255 (None: per segment), ``dash`` the (on, off) pattern in points (None: solid),
    ``label`` the legend's wording (None: not in the legend).
    """

    gid: str
    xy: np.ndarray
    colour: tuple | None
    dash: tuple | None = None
    label: str | None = None
    values: np.ndarray | None = None


class Letter(NamedTuple):
    """An orientation letter: its text, the centre of its box and the box (left, top, right,
    bottom), qc.png pixels."""

    text: str
    centre: tuple[float, float]
    box: tuple[float, float, float, float]


@dataclass
class PanelRecord:
    """A panel of qc.png: where it is (``box``: left, top, right, bottom, in qc.png pixels, x to
    the right and y down, pixel edges at integers) and which data it shows there (``xlim``: data x
    at the left and right edges, reversed when the axis is; ``ylim``: data y at the bottom and top
    edges), and what was drawn on it: ``letters`` (edge -> :class:`Letter`), the ``legend``'s
    labels top to bottom and its box (``legend_box``), the ``texts`` drawn for the panel, the
    ``drawn`` items (:class:`Drawn`), and the depression panel's ``colour_bar`` box (0 mm at its
    bottom, DEPTH_MAX_MM at its top); boxes are (left, top, right, bottom), qc.png pixels."""

    name: str
    title: str
    box: tuple[float, float, float, float]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    letters: dict = field(default_factory=dict)
    legend: list = field(default_factory=list)
    legend_box: tuple | None = None
    texts: list = field(default_factory=list)
    drawn: list = field(default_factory=list)
    colour_bar: tuple | None = None

    def to_pixel(self, xy) -> np.ndarray:
        """Data (..., 2) -> qc.png pixel coordinates (..., 2) (continuous; pixel (r, c) spans
        [c, c + 1) x [r, r + 1))."""
        xy = np.asarray(xy, dtype=np.float64)
        x0, y0, x1, y1 = self.box
        px = x0 + (xy[..., 0] - self.xlim[0]) / (self.xlim[1] - self.xlim[0]) * (x1 - x0)
        py = y1 - (xy[..., 1] - self.ylim[0]) / (self.ylim[1] - self.ylim[0]) * (y1 - y0)
        return np.stack([px, py], axis=-1)

    def to_data(self, px) -> np.ndarray:
        """qc.png pixel coordinates (..., 2) -> data (..., 2); the inverse of :meth:`to_pixel`."""
        px = np.asarray(px, dtype=np.float64)
        x0, y0, x1, y1 = self.box
        x = self.xlim[0] + (px[..., 0] - x0) / (x1 - x0) * (self.xlim[1] - self.xlim[0])
        y = self.ylim[0] + (y1 - px[..., 1]) / (y1 - y0) * (self.ylim[1] - self.ylim[0])
        return np.stack([x, y], axis=-1)

    def items(self, gid: str) -> list[Drawn]:
        return [d for d in self.drawn if d.gid == gid]


@dataclass
class QCPicture:
    """qc.png as pixels (``image``, a Pillow RGB image of :data:`SIZE`) with the record of what
    was drawn: the picture's ``title``, the ``panels`` ("coronal", "sagittal", "depression",
    "3d") and every text drawn (``texts``: titles, labels, tick labels, names, legends, letters)."""

    image: object
    title: str
    panels: dict
    texts: list

    @property
    def rgb(self) -> np.ndarray:
        """(height, width, 3) uint8."""
        return np.asarray(self.image)

    def save(self, path: str | Path) -> None:
        self.image.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


# --------------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------------
def _rgb(colour) -> tuple[int, int, int]:
    if isinstance(colour, str):
        c = colour.lstrip("#")
        return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4))
    return tuple(int(round(float(v))) for v in colour)


def depth_colour(depth_mm) -> np.ndarray:
    """RGB 0-255 (..., 3) of depths on the depression panel's scale (plasma, 0 to
    :data:`DEPTH_MAX_MM`, clipped)."""
    t = np.clip(np.asarray(depth_mm, dtype=np.float64) / DEPTH_MAX_MM, 0.0, 1.0)
    anchors = np.asarray(PLASMA_ANCHORS, dtype=np.float64)
    x = np.linspace(0.0, 1.0, len(anchors))
    return np.stack([np.interp(t, x, anchors[:, k]) for k in range(3)], axis=-1)


@cache
def _font_file(bold: bool) -> str:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    spec = importlib.util.find_spec("matplotlib")  # finds the package folder; imports nothing
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / name
        if path.is_file():
            return str(path)
    return name  # Pillow looks the name up in the system's font folders


@cache
def _font(size_px: float, bold: bool = False):
    """(font, stroke width): DejaVu Sans at ``size_px`` pixels; Pillow's own face (a stroke for
    bold) when no DejaVu file is found."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype(_font_file(bold), size_px), 0
    except OSError:
        return ImageFont.load_default(size=size_px), (max(1, int(size_px / 14)) if bold else 0)


#: ASCII stand-ins for characters Pillow's own (subset) face lacks, used only with that face.
_ASCII = str.maketrans({"\u2212": "-", "\u2190": "<-", "\u2192": "->", "\u2013": "-", "\u00d7": "x"})


def _typeset(font, text: str) -> str:
    return text if font.getname()[0].startswith("DejaVu") else text.translate(_ASCII)


def _text_box(font, lines: list[str], pitch: float, xy, anchor: str) -> tuple[float, float, float, float]:
    """Layout box (left, top, right, bottom) of left-aligned-by-``anchor`` text lines: ``anchor``
    as Pillow's (horizontal l/m/r; vertical a = top, m = middle, d = bottom of the block, s = the
    last line's baseline)."""
    ascent, descent = font.getmetrics()
    width = max(font.getlength(line) for line in lines)
    height = ascent + descent + (len(lines) - 1) * pitch
    x, y = xy
    left = {"l": x, "m": x - width / 2, "r": x - width}[anchor[0]]
    top = {"a": y, "m": y - height / 2, "d": y - height, "s": y - (len(lines) - 1) * pitch - ascent}[anchor[1]]
    return left, top, left + width, top + height


def _draw_text(image, xy, text: str, size_pt: float, colour, anchor: str = "la", bold: bool = False,
               rotate: bool = False) -> tuple[float, float, float, float]:
    """Text on a SUPERSAMPLE-sized Pillow image at ``xy`` (that image's pixels); lines centred on
    each other for a centred anchor. ``rotate``: turned a quarter anticlockwise (read bottom to
    top), ``anchor`` then placing the turned box. Returns the layout box."""
    from PIL import Image, ImageDraw

    font, stroke = _font(round(size_pt * PX_PER_PT * SUPERSAMPLE, 2), bold)
    lines = _typeset(font, text).split("\n")
    pitch = 1.3 * font.size
    colour = _rgb(colour)
    if not rotate:
        left, top, right, _ = _text_box(font, lines, pitch, xy, anchor)
        draw = ImageDraw.Draw(image)
        for i, line in enumerate(lines):
            x = {"l": left, "m": (left + right) / 2, "r": right}[anchor[0]]
            draw.text((x, top + i * pitch), line, fill=colour, font=font, anchor=anchor[0] + "a",
                      stroke_width=stroke, stroke_fill=colour)
        return _text_box(font, lines, pitch, xy, anchor)
    left, top, right, bottom = _text_box(font, lines, pitch, (0, 0), "la")
    mask = Image.new("L", (int(np.ceil(right)) + 2, int(np.ceil(bottom)) + 2), 0)
    mdraw = ImageDraw.Draw(mask)
    for i, line in enumerate(lines):
        mdraw.text((1 + right / 2, 1 + i * pitch), line, fill=255, font=font, anchor="ma",
                   stroke_width=stroke, stroke_fill=255)
    mask = mask.transpose(Image.Transpose.ROTATE_90)
    w, h = mask.size
    x = {"l": xy[0], "m": xy[0] - w / 2, "r": xy[0] - w}[anchor[0]]
    y = {"a": xy[1], "m": xy[1] - h / 2, "d": xy[1] - h}[anchor[1]]
    image.paste(colour, (int(round(x)), int(round(y))), mask)
    return x, y, x + w, y + h


def _dashes(points: np.ndarray, on: float, off: float) -> list[np.ndarray]:
    """The 'on' pieces of a dashed polyline (pixels), the pattern starting at its first point."""
    s = np.r_[0.0, np.cumsum(np.hypot(*np.diff(points, axis=0).T))]
    period = on + off
    starts = np.arange(0.0, s[-1], period)
    ends = np.minimum(starts + on, s[-1])
    inner = s[(s > 0) & (s < s[-1]) & (np.mod(s, period) < on)]  # vertices inside a dash
    t = np.concatenate([starts, inner, ends])
    index = np.arange(len(starts))
    dash = np.concatenate([index, np.floor(inner / period), index])
    rank = np.repeat([0, 1, 2], [len(starts), len(inner), len(ends)])
    order = np.lexsort((rank, t, dash))
    t, dash = t[order], dash[order]
    pts = np.column_stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])])
    return [p for p in np.split(pts, np.flatnonzero(np.diff(dash)) + 1) if len(p) > 1]


def _blend_box(image, box, colour, alpha: float) -> None:
    """Paint ``colour`` at opacity ``alpha`` over a box of ``image`` (integer-rounded)."""
    from PIL import Image

    l, t, r, b = (int(round(v)) for v in box)
    l, t = max(l, 0), max(t, 0)
    r, b = min(r, image.width), min(b, image.height)
    if r <= l or b <= t:
        return
    image.paste(_rgb(colour), (l, t, r, b), Image.new("L", (r - l, b - t), int(round(255 * alpha))))


def _nice_ticks(a: float, b: float, nbins: int = 9) -> np.ndarray:
    """Tick values inside [a, b]: multiples of the smallest step in 1, 2, 2.5, 5 x 10^k making at
    most ``nbins`` intervals (matplotlib's default locator's choice)."""
    lo, hi = min(a, b), max(a, b)
    raw = (hi - lo) / nbins
    scale = 10.0 ** np.floor(np.log10(raw))
    step = next(m * scale for m in (1, 2, 2.5, 5, 10) if m * scale >= raw * (1 - 1e-9))
    return np.arange(np.ceil(lo / step - 1e-9), np.floor(hi / step + 1e-9) + 1) * step


def _tick_label(value: float) -> str:
    text = f"{round(float(value), 9):g}"
    return "0" if text in ("0", "-0") else text.replace("-", "\u2212")


def _slots() -> list[tuple[float, float, float, float]]:
    """The four panels' areas, qc.png pixels: 4 columns between 4 % and 98.5 % of the width, gaps of
    a quarter column, from 17 % to 90 % of the height (the title above)."""
    width, height = SIZE
    left, right, top, bottom = 0.04 * width, 0.985 * width, 0.17 * height, 0.9 * height
    col = (right - left) / (4 + 3 * 0.25)
    return [(left + k * 1.25 * col, top, left + k * 1.25 * col + col, bottom) for k in range(4)]


def _fit(area, aspect: float) -> tuple[float, float, float, float]:
    """The largest box of width/height ``aspect`` centred in ``area``, on the supersampled grid."""
    x0, y0, x1, y1 = area
    w, h = x1 - x0, y1 - y0
    if w / h > aspect:
        x0, x1 = x0 + (w - h * aspect) / 2, x0 + (w + h * aspect) / 2
    else:
        y0, y1 = y0 + (h - w / aspect) / 2, y0 + (h + w / aspect) / 2
    return tuple(round(v * SUPERSAMPLE) / SUPERSAMPLE for v in (x0, y0, x1, y1))


class _Panel:
    """Draws one panel's inside on its own supersampled image (which clips it), in data mm."""

    def __init__(self, record: PanelRecord, background=(255, 255, 255)):
        from PIL import Image, ImageDraw

        self.rec = record
        x0, y0, x1, y1 = record.box
        self.image = Image.new("RGB", (round((x1 - x0) * SUPERSAMPLE), round((y1 - y0) * SUPERSAMPLE)),
                               _rgb(background))
        self.draw = ImageDraw.Draw(self.image)
        self.handles: list = []  # parallel to record.legend

    def px(self, xy) -> np.ndarray:
        """Data -> this image's pixel coordinates as Pillow takes them (pixel centres at integers)."""
        x0, y0 = self.rec.box[:2]
        return (self.rec.to_pixel(xy) - [x0, y0]) * SUPERSAMPLE - 0.5

    def entry(self, label: str, handle: tuple) -> None:
        self.rec.legend.append(label)
        self.handles.append(handle)

    # -- images -------------------------------------------------------------------------------
    def plane(self, values: np.ndarray, a_mm: np.ndarray, w_mm: np.ndarray, lo: float, hi: float) -> None:
        """A sampled plane (values[a, w], samples at a_mm x w_mm) in grey, ``lo``-``hi`` windowed,
        bilinear, each sample's centre at its coordinates."""
        from PIL import Image

        rows = np.asarray(values, dtype=np.float32).T[::-1]  # top row: largest w
        cols = np.asarray(a_mm, dtype=np.float64)
        if self.rec.xlim[0] > self.rec.xlim[1]:
            rows, cols = rows[:, ::-1], cols[::-1]
        dc, dw = cols[1] - cols[0], w_mm[1] - w_mm[0]
        box = ((self.rec.xlim[0] - cols[0]) / dc + 0.5, (w_mm[-1] - self.rec.ylim[1]) / dw + 0.5,
               (self.rec.xlim[1] - cols[0]) / dc + 0.5, (w_mm[-1] - self.rec.ylim[0]) / dw + 0.5)
        shown = np.asarray(Image.fromarray(np.ascontiguousarray(rows), "F").resize(
            self.image.size, Image.Resampling.BILINEAR, box=box))
        grey = np.clip((shown - lo) * (255.0 / max(hi - lo, 1e-12)) + 0.5, 0, 255).astype(np.uint8)
        self.image.paste(Image.fromarray(grey, "L").convert("RGB"))

    def picture(self, rgb: np.ndarray) -> None:
        """An RGB (0-1) image, row 0 at the bottom, covering the panel edge to edge."""
        from PIL import Image

        pixels = np.clip(np.asarray(rgb)[::-1] * 255 + 0.5, 0, 255).astype(np.uint8)
        self.image.paste(Image.fromarray(np.ascontiguousarray(pixels), "RGB").resize(
            self.image.size, Image.Resampling.BILINEAR))

    # -- lines and markers --------------------------------------------------------------------
    def line(self, xy, colour, lw_pt: float, dash=None, gid: str = "", label: str | None = None) -> None:
        """A polyline in data mm; ``dash`` (on, off) in units of the line width, as matplotlib's."""
        xy = np.asarray(xy, dtype=np.float64)
        self.rec.drawn.append(Drawn(gid, xy, _rgb(colour), dash, label))
        self._polyline(self.px(xy), colour, lw_pt, dash)

    def _polyline(self, pts: np.ndarray, colour, lw_pt: float, dash=None) -> None:
        width = max(1, int(lw_pt * PX_PER_PT * SUPERSAMPLE + 0.5))
        unit = lw_pt * PX_PER_PT * SUPERSAMPLE
        pieces = _dashes(pts, dash[0] * unit, dash[1] * unit) if dash else [pts]
        for piece in pieces:
            self.draw.line(piece.ravel().tolist(), fill=_rgb(colour), width=width,
                           joint="curve" if len(piece) > 2 else None)

    def vline(self, x: float, colour, lw_pt: float, dash=None, gid: str = "", label: str | None = None) -> None:
        self.line([[x, self.rec.ylim[0]], [x, self.rec.ylim[1]]], colour, lw_pt, dash, gid, label)

    def segments(self, segments: np.ndarray, values: np.ndarray, lw_pt: float, gid: str) -> None:
        """Line segments (n, 2, 2) data mm, each coloured by its depth (:func:`depth_colour`),
        with projecting caps so that a chain of them has no gaps."""
        self.rec.drawn.append(Drawn(gid, segments, None, None, None, values))
        pts = self.px(segments)
        half = lw_pt * PX_PER_PT * SUPERSAMPLE / 2
        d = pts[:, 1] - pts[:, 0]
        d = d / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None] * half
        pts = np.stack([pts[:, 0] - d, pts[:, 1] + d], axis=1)
        width = max(1, int(2 * half + 0.5))
        for seg, colour in zip(pts.reshape(-1, 4).tolist(), np.rint(depth_colour(values)).astype(int).tolist()):
            self.draw.line(seg, fill=tuple(colour), width=width)

    def dots(self, xy, colour, alpha: float, gid: str, label: str | None = None) -> None:
        """Dots about 1 qc.png pixel wide at opacity ``alpha``."""
        from PIL import Image, ImageDraw

        xy = np.asarray(xy, dtype=np.float64)
        self.rec.drawn.append(Drawn(gid, xy, _rgb(colour), None, label))
        centre = np.rint(self.px(xy)).astype(np.int64)
        corner = centre.min(axis=0) - SUPERSAMPLE
        mask = Image.new("L", tuple(int(v) for v in centre.max(axis=0) - corner + 2 * SUPERSAMPLE), 0)
        draw = ImageDraw.Draw(mask)
        for dx in range(SUPERSAMPLE):
            for dy in range(SUPERSAMPLE):
                draw.point((centre - corner + [dx - SUPERSAMPLE // 2, dy - SUPERSAMPLE // 2]).ravel().tolist(),
                           fill=int(round(255 * alpha)))
        self.image.paste(_rgb(colour), tuple(int(v) for v in corner), mask)

    def triangle(self, xy, size_pt2: float, gid: str, label: str | None = None) -> None:
        """Downward triangles (matplotlib's marker "v", area ``size_pt2`` points²), white edged black."""
        xy = np.atleast_2d(np.asarray(xy, dtype=np.float64))
        self.rec.drawn.append(Drawn(gid, xy, (255, 255, 255), None, label))
        for centre in self.px(xy):
            _triangle(self.draw, centre, size_pt2)

    def text(self, xy, text: str, size_pt: float, colour, anchor: str = "ms", bold: bool = False) -> None:
        (x, y), = self.px([xy])
        _draw_text(self.image, (x + 0.5, y + 0.5), text, size_pt, colour, anchor, bold)
        self.rec.texts.append(text)

    # -- letters and legend -------------------------------------------------------------------
    def letters(self, letters: dict) -> None:
        """Orientation letters at the middle of each edge, white on a translucent black box."""
        w, h = self.image.size
        inset = 0.012
        places = {"left": ((inset * w, 0.5 * h), "lm"), "right": (((1 - inset) * w, 0.5 * h), "rm"),
                  "top": ((0.5 * w, inset * h), "ma"), "bottom": ((0.5 * w, (1 - inset) * h), "md")}
        font, _ = _font(round(11 * PX_PER_PT * SUPERSAMPLE, 2), True)
        pad = 1.0 * PX_PER_PT * SUPERSAMPLE
        x0, y0 = self.rec.box[:2]
        for edge, (xy, anchor) in places.items():
            text = letters[edge]
            l, t, r, b = _text_box(font, [text], 0, xy, anchor)
            box = (l - pad, t - pad, r + pad, b + pad)
            _blend_box(self.image, box, (0, 0, 0), 0.45)
            _draw_text(self.image, xy, text, 11, (255, 255, 255), anchor, bold=True)
            picture_box = tuple(v / SUPERSAMPLE + o for v, o in zip(box, (x0, y0, x0, y0)))
            centre = ((picture_box[0] + picture_box[2]) / 2, (picture_box[1] + picture_box[3]) / 2)
            self.rec.letters[edge] = Letter(text, centre, picture_box)
            self.rec.texts.append(text)

    def legend(self, markerscale: float = 1.0) -> None:
        """The legend at the lower left, raised off the bottom edge (which holds a letter):
        translucent white, one row per entry (handle, then label)."""
        from PIL import Image, ImageDraw

        if not self.rec.legend:
            return
        size = 6 * PX_PER_PT * SUPERSAMPLE
        font, _ = _font(round(size, 2))
        pad, handle_len, gap, spacing = 0.4 * size, 2.0 * size, 0.8 * size, 0.5 * size
        row = 1.08 * size  # matplotlib's rows of 6-point labels
        n = len(self.rec.legend)
        width = 2 * pad + handle_len + gap + max(font.getlength(_typeset(font, label)) for label in self.rec.legend)
        height = 2 * pad + n * row + (n - 1) * spacing
        left = 0.5 * size
        bottom = self.image.height * (1 - 0.06) - 0.5 * size
        top = bottom - height
        box = [int(round(v)) for v in (left, top, left + width, bottom)]
        x0, y0 = self.rec.box[:2]
        self.rec.legend_box = (x0 + box[0] / SUPERSAMPLE, y0 + box[1] / SUPERSAMPLE,
                               x0 + (box[2] + 1) / SUPERSAMPLE, y0 + (box[3] + 1) / SUPERSAMPLE)
        mask = Image.new("L", (box[2] - box[0] + 1, box[3] - box[1] + 1), 0)
        ImageDraw.Draw(mask).rounded_rectangle((0, 0, mask.width - 1, mask.height - 1), radius=0.2 * size,
                                               fill=int(255 * 0.6))
        self.image.paste((255, 255, 255), tuple(box[:2]), mask)
        edge = Image.new("L", mask.size, 0)
        ImageDraw.Draw(edge).rounded_rectangle((0, 0, mask.width - 1, mask.height - 1), radius=0.2 * size,
                                               outline=int(255 * 0.6), width=max(1, SUPERSAMPLE))
        self.image.paste((204, 204, 204), tuple(box[:2]), edge)
        for i, (label, handle) in enumerate(zip(self.rec.legend, self.handles)):
            y = top + pad + i * (row + spacing) + row / 2
            hx0, hx1 = left + pad, left + pad + handle_len
            kind = handle[0]
            if kind == "line":
                _, colour, lw_pt, dash = handle
                self._polyline(np.array([[hx0, y], [hx1, y]]), colour, lw_pt, dash)
            elif kind == "dots":
                _, colour, alpha, size_pt2 = handle
                r = np.sqrt(size_pt2) * markerscale * PX_PER_PT * SUPERSAMPLE / 2
                cx = (hx0 + hx1) / 2
                _blend_disc(self.image, (cx, y), r, colour, alpha)
            elif kind == "triangle":
                _triangle(self.draw, ((hx0 + hx1) / 2, y), handle[1] * markerscale ** 2)
            _draw_text(self.image, (hx1 + gap, y), label, 6, (0, 0, 0), "lm")
            self.rec.texts.append(label)


def _triangle(draw, centre, size_pt2: float) -> None:
    half = np.sqrt(size_pt2) * PX_PER_PT * SUPERSAMPLE / 2
    x, y = centre
    draw.polygon([(x, y + half), (x - half, y - half), (x + half, y - half)], fill=(255, 255, 255),
                 outline=(0, 0, 0), width=max(1, int(0.6 * PX_PER_PT * SUPERSAMPLE + 0.5)))


def _blend_disc(image, centre, radius: float, colour, alpha: float) -> None:
    from PIL import Image, ImageDraw

    x0, y0 = int(np.floor(centre[0] - radius)) - 1, int(np.floor(centre[1] - radius)) - 1
    side = int(np.ceil(2 * radius)) + 3
    mask = Image.new("L", (side, side), 0)
    x, y = centre[0] - x0, centre[1] - y0
    ImageDraw.Draw(mask).ellipse((x - radius, y - radius, x + radius, y + radius), fill=int(round(255 * alpha)))
    image.paste(_rgb(colour), (x0, y0), mask)


class _Canvas:
    """The whole picture at SUPERSAMPLE times its size; positions in qc.png pixels."""

    def __init__(self):
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (SIZE[0] * SUPERSAMPLE, SIZE[1] * SUPERSAMPLE), (255, 255, 255))
        self.draw = ImageDraw.Draw(self.image)
        self.texts: list[str] = []

    def text(self, xy, text: str, size_pt: float, anchor: str = "la", rotate: bool = False,
             record: PanelRecord | None = None) -> tuple[float, float, float, float]:
        box = _draw_text(self.image, (xy[0] * SUPERSAMPLE, xy[1] * SUPERSAMPLE), text, size_pt, (0, 0, 0), anchor,
                         rotate=rotate)
        (record.texts if record is not None else self.texts).append(text)
        return tuple(v / SUPERSAMPLE for v in box)

    def segment(self, p0, p1, lw_pt: float = 0.8) -> None:
        width = max(1, int(lw_pt * PX_PER_PT * SUPERSAMPLE + 0.5))
        self.draw.line([(p0[0] * SUPERSAMPLE, p0[1] * SUPERSAMPLE), (p1[0] * SUPERSAMPLE, p1[1] * SUPERSAMPLE)],
                       fill=(0, 0, 0), width=width)

    def frame(self, box) -> None:
        """A black frame just around ``box``."""
        w = max(1, int(0.8 * PX_PER_PT * SUPERSAMPLE + 0.5))
        x0, y0, x1, y1 = (int(round(v * SUPERSAMPLE)) for v in box)
        self.draw.rectangle((x0 - w, y0 - w, x1 + w - 1, y1 + w - 1), outline=(0, 0, 0), width=w)

    def panel(self, panel: _Panel, xlabel: str, ylabel: str | None, title_pt: float) -> None:
        """Paste a panel and draw its frame, mm ticks, axis labels and title around it."""
        rec = panel.rec
        x0, y0, x1, y1 = rec.box
        self.image.paste(panel.image, (int(round(x0 * SUPERSAMPLE)), int(round(y0 * SUPERSAMPLE))))
        self.frame(rec.box)
        tick, pad = 3.5 * PX_PER_PT, 3.5 * PX_PER_PT
        label_bottom = y1 + tick + pad
        for t in _nice_ticks(*rec.xlim):
            x = rec.to_pixel([t, rec.ylim[0]])[0]
            self.segment((x, y1), (x, y1 + tick))
            label_bottom = max(label_bottom, self.text((x, y1 + tick + pad), _tick_label(t), 7, "ma", record=rec)[3])
        label_left = x0 - tick - pad
        for t in _nice_ticks(*rec.ylim):
            y = rec.to_pixel([rec.xlim[0], t])[1]
            self.segment((x0 - tick, y), (x0, y))
            label_left = min(label_left, self.text((x0 - tick - pad, y), _tick_label(t), 7, "rm", record=rec)[0])
        self.text(((x0 + x1) / 2, label_bottom + 4 * PX_PER_PT), xlabel, 8, "ma", record=rec)
        if ylabel:
            self.text((label_left - 4 * PX_PER_PT, (y0 + y1) / 2), ylabel, 8, "rm", rotate=True, record=rec)
        self.text(((x0 + x1) / 2, y0 - 6 * PX_PER_PT), rec.title, title_pt, "ms", record=rec)

    def colour_bar(self, box, record: PanelRecord) -> None:
        """The depth scale: plasma from 0 (bottom) to DEPTH_MAX_MM (top), ticks every mm, label."""
        from PIL import Image

        box = tuple(round(v * SUPERSAMPLE) / SUPERSAMPLE for v in box)
        record.colour_bar = box
        x0, y0, x1, y1 = box
        w, h = int(round((x1 - x0) * SUPERSAMPLE)), int(round((y1 - y0) * SUPERSAMPLE))
        column = np.rint(depth_colour(np.linspace(DEPTH_MAX_MM, 0.0, h))).astype(np.uint8)
        self.image.paste(Image.fromarray(np.ascontiguousarray(np.repeat(column[:, None], w, axis=1)), "RGB"),
                         (int(round(x0 * SUPERSAMPLE)), int(round(y0 * SUPERSAMPLE))))
        self.frame(box)
        tick, pad = 3.5 * PX_PER_PT, 3.5 * PX_PER_PT
        right = x1 + tick + pad
        for value in range(int(DEPTH_MAX_MM) + 1):
            y = y1 - value / DEPTH_MAX_MM * (y1 - y0)
            self.segment((x1, y), (x1 + tick, y))
            right = max(right, self.text((x1 + tick + pad, y), str(value), 6, "lm", record=record)[2])
        self.text((right + 4 * PX_PER_PT, (y0 + y1) / 2), "depth below the sphere (mm)", 7, "lm", rotate=True,
                  record=record)

    def finish(self):
        return self.image.reduce(SUPERSAMPLE)


# --------------------------------------------------------------------------------------------
# picture
# --------------------------------------------------------------------------------------------
def write_qc_png(path: str | Path, analysis, title: str = "", settings=None) -> None:
    """Draw the QC picture of an :class:`pipeline.measures.hip.Analysis` that has a head frame.

    ``settings`` (:class:`pipeline.config.Settings`) must be those the analysis was measured with,
    so that the drawn surface contact is the one its arcs came from; None means the defaults.
    """
    qc_picture(analysis, title, settings).save(path)


def qc_picture(analysis, title: str = "", settings=None) -> QCPicture:
    """The QC picture with the record of what it shows where. See :func:`write_qc_png`."""
    from pipeline.config import Settings

    location = (settings or Settings()).location
    frame: HeadFrame = analysis.frame
    result = analysis.result
    scan = analysis.scan
    half = frame.radius * 2.0
    step = max(0.25, float(scan.spacing.min()) / 2)
    canvas = _Canvas()
    slots = _slots()
    panels = {plane: _plane_panel(canvas, slots[col], analysis, plane, half, step, location)
              for col, plane in enumerate(("coronal", "sagittal"))}
    panels["depression"] = _depression_panel(canvas, slots[2], analysis, step)
    panels["3d"] = _meshes(canvas, slots[3], analysis, frame)
    suptitle = result.qc_title(title or result.input_name())
    canvas.text((SIZE[0] / 2, 0.02 * SIZE[1]), suptitle, 9, "ma")
    texts = canvas.texts + [t for p in panels.values() for t in p.texts]
    return QCPicture(canvas.finish(), suptitle, panels, texts)


def _plane_panel(canvas: _Canvas, slot, analysis, plane: str, half: float, step: float, location) -> PanelRecord:
    """A mid-plane panel (see the module docstring)."""
    frame, result, scan = analysis.frame, analysis.result, analysis.scan
    # Outlines sampled as location.py samples its planes (trilinear, thresholded at 0.5), so the
    # lesion's drawn extremes are the ones the JIC type and arcs were read from.
    head, lesion = sample_planes([analysis.head, analysis.lesion], scan.affine, frame, plane, step, half, order=1)
    img = sample_image_plane(scan.data, scan.affine, frame, plane, head.a_mm, head.w_mm)
    lo, hi = np.percentile(img[head.in_fov], [1, 99.5]) if head.in_fov.any() else (0, 1)
    screen_right, screen_up, reversed_a = panel_axes(frame, plane)
    a_mm, w_mm = head.a_mm, head.w_mm
    xlim = (a_mm[-1], a_mm[0]) if reversed_a else (a_mm[0], a_mm[-1])
    ylim = (w_mm[0], w_mm[-1])
    arc = result.arc_deg(plane)
    title = f"mid-{plane}" + (f"  arc {arc:.0f}°" if arc is not None else "  arc -")
    rec = PanelRecord(plane, title, _fit(slot, abs(xlim[1] - xlim[0]) / (ylim[1] - ylim[0])), xlim, ylim)
    panel = _Panel(rec)
    panel.plane(img, a_mm, w_mm, lo, hi)
    # the contact dots under the lines, as before; their legend entry after the sphere's
    # the contact the arcs were measured on (measure_hip keeps it); sampled here only when absent
    sc = (getattr(analysis, "contacts", None) or {}).get(plane)
    if sc is None:
        sc = surface_contact(analysis.head, analysis.lesion, scan.affine, frame, plane,
                             step_mm=location.plane_step_mm, contact_shell_mm=location.contact_shell_mm)
    contact_label = f"surface contact (arc, {location.contact_shell_mm:g} mm shell)"
    if sc.contact.any():
        panel.dots(np.column_stack(sc.points_mm()), CONTACT_COLOUR, 0.5, "surface-contact", contact_label)
    for sample, colour, name in ((head, HEAD_COLOUR, "head"), (lesion, LESION_COLOUR, "lesion")):
        if sample.image.any():
            for line in _outline_points(a_mm, w_mm, sample.image.astype(float)):
                panel.line(line, colour, 1.1, gid=f"{name}-outline")
            panel.entry(name, ("line", colour, 1.5, None))
    circle = np.linspace(0, 2 * np.pi, 361)
    sphere_label = f"sphere r = {frame.radius:.1f} mm"
    panel.line(np.column_stack([frame.radius * np.cos(circle), frame.radius * np.sin(circle)]), SPHERE_COLOUR, 0.8,
               (1, 1.65), "sphere", sphere_label)
    panel.entry(sphere_label, ("line", SPHERE_COLOUR, 0.8, (1, 1.65)))
    if sc.contact.any():
        panel.entry(contact_label, ("dots", CONTACT_COLOUR, 0.5, 0.3))
    if plane == "coronal":
        _zone_lines(panel, result.weight_bearing, frame.radius)
    else:
        for v in (-frame.radius / 3, frame.radius / 3):
            panel.vline(v, ZONE_COLOUR, 0.8, (3.7, 1.6), "third")
        # above the head like the JIC zone names: the legend sits at the bottom
        for x, name in ((frame.radius * 2 / 3, "anterior"), (0, "central"), (-frame.radius * 2 / 3, "posterior")):
            panel.text((x, frame.radius * 1.3), name, 7, ZONE_COLOUR)
    panel.letters(edge_letters(screen_right, screen_up))
    panel.legend(markerscale=8)
    lateral, medial = ("lateral", "medial") if plane == "coronal" else ("anterior", "posterior")
    xlabel = (f"{'u' if plane == 'coronal' else 'v'} (mm)   ← {lateral if reversed_a else medial}"
              f" | {medial if reversed_a else lateral} →")
    canvas.panel(panel, xlabel, "w (mm, superior up)", 10)
    return rec


def _zone_lines(panel: _Panel, span: dict | None, radius) -> None:
    span = span or {}
    if span.get("u_lat_mm") is None:
        return
    details = span.get("details") or {}
    source_lat = details.get("source_lat", span.get("source"))
    source_med = details.get("source_med", "default" if source_lat == "default" else "unknown")
    angle = details.get("default_edge_angle_deg", 30.0)
    u_med, u_lat = span["u_med_mm"], span["u_lat_mm"]
    t1, t2 = u_med + (u_lat - u_med) / 3, u_med + 2 * (u_lat - u_med) / 3
    for u in (t1, t2):
        panel.vline(u, ZONE_COLOUR, 0.8, (3.7, 1.6), "zone-boundary")
    # A default end marks where an edge was assumed, not found: it must not read as anatomy.
    default = (DEFAULT_END_COLOUR, 1.0, (4, 3))

    def end(u, style, gid, label=None):
        panel.vline(u, *style, gid=gid, label=label)
        if label:
            panel.entry(label, ("line", *style))

    if source_lat == "default" and source_med == "default":
        end(u_lat, default, "span-lateral-end", f"default span ±r·sin {angle:g}° (no acetabulum found or given)")
        end(u_med, default, "span-medial-end")
    else:
        if source_lat == "default":
            end(u_lat, default, "span-lateral-end", f"default lateral end r·sin {angle:g}° (no edge found or given)")
        else:
            end(u_lat, (EDGE_COLOUR, 1.0, None), "span-lateral-end", f"acetabular edge ({source_lat})")
        if source_med == "default":
            end(u_med, default, "span-medial-end", f"default medial end -r·sin {angle:g}°")
        else:
            end(u_med, (EDGE_COLOUR, 0.6, (1, 1.65)), "span-medial-end", f"acetabular roof medial end ({source_med})")
    third = (u_lat - u_med) / 3
    centres = {"A": t1 - third / 2, "B": (t1 + t2) / 2, "C1": (t2 + u_lat) / 2, "C2": u_lat + third / 2}
    for name, u in centres.items():
        panel.text((u, radius * 1.25), name, 8, ZONE_COLOUR, bold=True)


# --------------------------------------------------------------------------------------------
# head depression
# --------------------------------------------------------------------------------------------
class DepressionPlane(NamedTuple):
    """The vertical plane of the depression panel: through ``center`` (the reference sphere's
    centre), spanned by ``e_a`` (horizontal, towards the deepest point) and ``e_sup``.
    ``deepest`` is the deepest point's (a, w), mm."""

    center: np.ndarray
    e_a: np.ndarray
    e_sup: np.ndarray
    deepest: tuple[float, float] | None

    def points(self, a_mm: np.ndarray, w_mm: np.ndarray) -> np.ndarray:
        """RAS mm of the pixel grid (a, w), shape (n_a, n_w, 3)."""
        return self.center + a_mm[:, None, None] * self.e_a + w_mm[None, :, None] * self.e_sup


def depression_plane(result, frame: HeadFrame) -> DepressionPlane:
    """The plane through the reference centre and the reported deepest point, vertical (it holds
    e_sup); through the mid-coronal direction when the point lies at the pole or is unknown."""
    record = result.collapse or {}
    center = np.asarray(record.get("reference_center_ras_mm") or frame.center, dtype=np.float64)
    e_sup = np.asarray(frame.e_sup, dtype=np.float64)
    e_a, deepest = np.asarray(frame.e_lat, dtype=np.float64), None
    if record.get("location_ras_mm") is not None:
        d = np.asarray(record["location_ras_mm"], dtype=np.float64) - center
        horizontal = d - (d @ e_sup) * e_sup
        if np.linalg.norm(horizontal) > 1e-3 * frame.radius:
            e_a = horizontal / np.linalg.norm(horizontal)
        deepest = (float(d @ e_a), float(d @ e_sup))
    return DepressionPlane(center, e_a, e_sup, deepest)


def _sample(values: np.ndarray, affine: np.ndarray, points: np.ndarray, order: int = 1) -> np.ndarray:
    """``values`` (as float32) at world points (..., 3), interpolated (``order``); 0 outside the grid."""
    from scipy import ndimage

    ijk = mm_to_index(affine, points)
    return ndimage.map_coordinates(np.asarray(values, dtype=np.float32), np.moveaxis(ijk, -1, 0), order=order,
                                   mode="constant", cval=0.0)


def _outline_points(a_mm, w_mm, field: np.ndarray) -> list[np.ndarray]:
    """The 0.5 contour lines of a sampled field, each an (n, 2) array of (a, w) mm."""
    import contourpy

    gen = contourpy.contour_generator(a_mm, w_mm, field.T, line_type=contourpy.LineType.Separate)
    return [np.asarray(line) for line in gen.lines(0.5) if len(line) > 1]


def outline_depths(analysis, plane: DepressionPlane, radius: float, a_mm, w_mm,
                   head_field: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The head's outline on the depression plane and its depth below the reference sphere there.

    Depth = (r - distance of the outline from the centre) less the same of the reference ball as
    the scan's grid images it (:func:`pipeline.measures.collapse.ball_on_grid`), sampled on the same
    plane in the same way, at the same angle: the staircase of the grid is thus not drawn as a
    depression (docs/method.md section 6). A display of the measured figure, not the measurement
    (which averages over the 3D surface). ``head_field``: the head already sampled (trilinear) on
    the plane's a_mm x w_mm grid, when the caller has it.

    Returns
    -------
    list of (points (n, 2) a, w mm, depth (n,) mm)
        One per outline line; NaN depth where the reference has no outline at that angle.
    """
    from pipeline.measures.collapse import ball_on_grid

    scan = analysis.scan
    pts = plane.points(a_mm, w_mm)
    if head_field is None:
        head_field = _sample(analysis.head, scan.affine, pts)
    head_lines = _outline_points(a_mm, w_mm, head_field)
    ball, crop = ball_on_grid(plane.center, radius, scan.affine, plane.e_sup, 0.5 * radius)
    ref_lines = _outline_points(a_mm, w_mm, _sample(ball, crop, pts))
    if not ref_lines:
        return [(line, np.full(len(line), np.nan)) for line in head_lines]
    ref = np.concatenate(ref_lines)
    ref_angle = np.arctan2(ref[:, 1], ref[:, 0])
    order = np.argsort(ref_angle)
    ref_angle, ref_bias = ref_angle[order], radius - np.hypot(ref[order, 0], ref[order, 1])
    out = []
    for line in head_lines:
        angle = np.arctan2(line[:, 1], line[:, 0])
        bias = np.interp(angle, ref_angle, ref_bias, left=np.nan, right=np.nan)
        out.append((line, radius - np.hypot(line[:, 0], line[:, 1]) - bias))
    return out


def depression_title(result) -> str:
    """The depression panel's title: the depth and ARCO 2019 stage, or the detection limit the
    deepest point stays under (two short lines: the panel is narrow)."""
    stage, limit = result.arco2019_collapse, result.detection_limit_mm()
    if stage is None:
        return "collapse: head depression not measured"
    if stage == "none" and (result.collapse or {}).get("narrow"):
        return (f"collapse none: the deepest dip ({result.head_depression_mm:.2f} mm)\n"
                "is narrower than a collapse")
    if stage == "none":
        caveat = result.collapse_caveat()
        return (f"collapse none: no depression above\nthe {limit:.2f} mm detection limit "
                f"(deepest {result.head_depression_mm:.2f} mm)" + (f"\n{caveat}" if caveat else ""))
    zone = (result.collapse or {}).get("jic_zone")
    return (f"collapse {stage}: head depression {result.head_depression_mm:.2f} mm\n"
            f"(ARCO 2019, through the deepest point{', zone ' + zone if zone else ''})")


def _depression_panel(canvas: _Canvas, slot, analysis, step: float) -> PanelRecord:
    """The depression panel (see the module docstring); drawn items "reference-sphere",
    "depression-depth" (the coloured outline's segments and depths), "deepest-point"."""
    result, frame, scan = analysis.result, analysis.frame, analysis.scan
    record = result.collapse or {}
    radius = float(record.get("reference_radius_mm") or frame.radius)
    plane = depression_plane(result, frame)
    half = 1.35 * radius
    a_mm = np.arange(-half, half + step / 2, step)
    w_mm = np.arange(-0.55 * radius, half + step / 2, step)
    pts = plane.points(a_mm, w_mm)
    img = _sample(scan.data, scan.affine, pts)
    head_field = _sample(analysis.head, scan.affine, pts)
    inside = head_field > 0.5
    lo, hi = np.percentile(img[inside], [1, 99.5]) if inside.any() else (0, 1)
    segments, depths = [], []
    for line, depth in outline_depths(analysis, plane, radius, a_mm, w_mm, head_field):
        # the weight-bearing half only (w > 0): below the equator lie the neck and its cut
        mid_w = 0.5 * (line[1:, 1] + line[:-1, 1])
        mid_depth = 0.5 * (depth[1:] + depth[:-1])
        keep = (mid_w > 0) & np.isfinite(mid_depth)
        segments += [seg for seg, k in zip(np.stack([line[:-1], line[1:]], axis=1), keep) if k]
        depths += list(mid_depth[keep])
    screen_right, reversed_a = plane.e_a, False
    viewer_left = VIEWER_LEFT["coronal" if abs(plane.e_a[0]) >= abs(plane.e_a[1]) else "sagittal"]
    if float(plane.e_a @ viewer_left) > 0:  # shown as the mid-planes are: patient's right / anterior on the left
        screen_right, reversed_a = -plane.e_a, True
    xlim = (a_mm[-1], a_mm[0]) if reversed_a else (a_mm[0], a_mm[-1])
    ylim = (w_mm[0], w_mm[-1])
    area, bar = slot, None
    if segments:  # the colour bar takes the slot's right 4 %, 2 % apart, 20 times as tall as wide
        x0, y0, x1, y1 = slot
        width = 0.04 * (x1 - x0)
        height = min(20 * width, y1 - y0)
        bar = (x1 - width, (y0 + y1 - height) / 2, x1, (y0 + y1 + height) / 2)
        area = (x0, y0, x0 + 0.94 * (x1 - x0), y1)
    rec = PanelRecord("depression", depression_title(result),
                      _fit(area, abs(xlim[1] - xlim[0]) / (ylim[1] - ylim[0])), xlim, ylim)
    panel = _Panel(rec)
    panel.plane(img, a_mm, w_mm, lo, hi)
    circle = np.linspace(0, 2 * np.pi, 721)
    sphere_label = f"reference sphere r = {radius:.1f} mm"
    panel.line(np.column_stack([radius * np.cos(circle), radius * np.sin(circle)]), SPHERE_COLOUR, 0.9,
               gid="reference-sphere", label=sphere_label)
    panel.entry(sphere_label, ("line", SPHERE_COLOUR, 0.9, None))
    if segments:
        panel.segments(np.asarray(segments), np.clip(np.asarray(depths), 0.0, None), 2.4, "depression-depth")
    if plane.deepest is not None and result.arco2019_collapse not in (None, "none"):
        deepest_label = f"deepest {result.head_depression_mm:.2f} mm"
        panel.triangle([plane.deepest], 40, "deepest-point", deepest_label)
        panel.entry(deepest_label, ("triangle", 40))
    panel.letters(edge_letters(screen_right, plane.e_sup))
    panel.legend()
    canvas.panel(panel, "mm along the deepest point's direction" if plane.deepest is not None else "u (mm)", None, 9)
    if bar is not None:
        canvas.colour_bar(bar, rec)
    return rec


# --------------------------------------------------------------------------------------------
# 3D panel
# --------------------------------------------------------------------------------------------
class DepthView(NamedTuple):
    """The 3D panel's picture and the depth buffers it was composed from.

    ``rgb`` (n, n, 3) is the image, row 0 at the bottom (screen y grows with the row), column 0 at
    the left; ``extent_mm`` is its half-side about the head centre. The depth buffers (n, n) hold,
    per pixel, the depth (mm toward the viewer, :func:`project_anterior_view`) of the nearest
    (``*_front``) and farthest (``*_back``) surface of the head and lesion meshes, NaN where the
    surface does not cover the pixel.
    """

    rgb: np.ndarray
    extent_mm: float
    head_front: np.ndarray
    head_back: np.ndarray
    lesion_front: np.ndarray
    lesion_back: np.ndarray


def _zbuffer(screen: np.ndarray, shade: np.ndarray, n: int, half: float):
    """Nearest and farthest depth, and the shade of the nearest and farthest triangle, per pixel.

    ``screen`` (F, 3, 3) are the triangles in view coordinates on an n x n pixel grid covering
    [-half, half]². A pixel is covered by a triangle when its centre lies inside the triangle's
    projection (edges included); its depth there is interpolated from the triangle's corners.
    Triangles are rasterised in groups whose pixel bounding boxes fit the same square.
    """
    px = 2.0 * half / n
    xy = (screen[..., :2] + half) / px - 0.5  # pixel-centre units: pixel (r, c) is at (c, r)
    lo = np.floor(xy.min(axis=1)).astype(np.int64) + 1
    hi = np.floor(xy.max(axis=1)).astype(np.int64)
    size = np.maximum((hi - lo).max(axis=1) + 1, 1)
    bucket = np.ceil(np.log2(size)).astype(np.int64)
    pix_parts, depth_parts, face_parts = [], [], []
    for b in np.unique(bucket):
        faces = np.flatnonzero(bucket == b)
        s = 1 << int(b)
        off = np.arange(s)
        cx = lo[faces, 0][:, None, None] + off[None, None, :]  # (m, s, s): [face, row, col]
        cy = lo[faces, 1][:, None, None] + off[None, :, None]
        p = xy[faces]  # (m, 3, 2)
        x0, y0 = p[:, 0, 0][:, None, None], p[:, 0, 1][:, None, None]
        x1, y1 = p[:, 1, 0][:, None, None], p[:, 1, 1][:, None, None]
        x2, y2 = p[:, 2, 0][:, None, None], p[:, 2, 1][:, None, None]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        w0 = (x1 - cx) * (y2 - cy) - (x2 - cx) * (y1 - cy)
        w1 = (x2 - cx) * (y0 - cy) - (x0 - cx) * (y2 - cy)
        w2 = area - w0 - w1
        sign = np.where(area < 0, -1.0, 1.0)
        inside = (w0 * sign >= 0) & (w1 * sign >= 0) & (w2 * sign >= 0) & (np.abs(area) > 1e-12)
        inside &= (cx >= 0) & (cx < n) & (cy >= 0) & (cy < n)
        if not inside.any():
            continue
        z = screen[faces, :, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            depth = (w0 * z[:, 0, None, None] + w1 * z[:, 1, None, None] + w2 * z[:, 2, None, None]) / area
        pix_parts.append((cy * n + cx)[inside])
        depth_parts.append(depth[inside])
        face_parts.append(np.broadcast_to(faces[:, None, None], inside.shape)[inside])
    out = {}
    empty = np.full((n, n), np.nan)
    if not pix_parts:
        return {"front": (empty, empty), "back": (empty, empty)}
    pix, depth, face = np.concatenate(pix_parts), np.concatenate(depth_parts), np.concatenate(face_parts)
    # sort by pixel, then depth: the first and last sample of each pixel are its far and near ones
    order = np.lexsort((depth, pix))
    pix, depth, face = pix[order], depth[order], face[order]
    first = np.flatnonzero(np.r_[True, pix[1:] != pix[:-1]])
    last = np.r_[first[1:] - 1, len(pix) - 1]
    for name, idx in (("front", last), ("back", first)):
        d = np.full(n * n, np.nan)
        sh = np.full(n * n, np.nan)
        d[pix[idx]] = depth[idx]
        sh[pix[idx]] = shade[face[idx]]
        out[name] = (d.reshape(n, n), sh.reshape(n, n))
    return out


def _over(rgb: np.ndarray, colour, alpha: float, shade: np.ndarray) -> None:
    """Paint a shaded surface layer (NaN shade: uncovered) over ``rgb`` in place."""
    cover = np.isfinite(shade)
    layer = np.nan_to_num(shade)[..., None] * np.asarray(colour, float)
    rgb[cover] = (1.0 - alpha) * rgb[cover] + alpha * layer[cover]


def depth_view(analysis, frame, n: int = VIEW_PIXELS) -> DepthView:
    """The 3D panel: light display meshes (coarser marching cubes, never used for measurement)
    projected with :func:`project_anterior_view` and z-buffered; faces shaded by
    0.35 + 0.65 |n·light| as before. Composited far to near, as a painter would: the head's far
    surface, the lesion's far and near surfaces, then the head's near surface (faint, so the
    lesion shows through it)."""
    spacing = float(analysis.scan.spacing.min())
    step = max(1, int(round(1.5 / spacing)))
    basis = anterior_view_basis()
    light = basis[2] * 0.8 + basis[1] * 0.6
    light /= np.linalg.norm(light)
    half = frame.radius * 1.2
    buffers = {}
    for name, mask in (("head", analysis.head), ("lesion", analysis.lesion)):
        empty = np.full((n, n), np.nan)
        buffers[name] = {"front": (empty, empty), "back": (empty, empty)}
        if not mask.any():
            continue
        verts, faces = mask_mesh(mask, analysis.scan.affine, step=step)
        if len(faces) > MAX_FACES:
            verts, faces = mask_mesh(mask, analysis.scan.affine, step=step * 2)
        if len(faces) == 0:
            continue
        tri = verts[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        shade = 0.35 + 0.65 * np.abs(normals @ light)
        buffers[name] = _zbuffer(project_anterior_view(tri, frame.center), shade, n, half)
    rgb = np.empty((n, n, 3))
    rgb[:] = BACKGROUND_RGB
    _over(rgb, HEAD_RGBA[:3], HEAD_RGBA[3], buffers["head"]["back"][1])
    _over(rgb, LESION_RGBA[:3], LESION_RGBA[3], buffers["lesion"]["back"][1])
    _over(rgb, LESION_RGBA[:3], LESION_RGBA[3], buffers["lesion"]["front"][1])
    _over(rgb, HEAD_RGBA[:3], HEAD_RGBA[3], buffers["head"]["front"][1])
    return DepthView(rgb, half, buffers["head"]["front"][0], buffers["head"]["back"][0],
                     buffers["lesion"]["front"][0], buffers["lesion"]["back"][0])


def _meshes(canvas: _Canvas, slot, analysis, frame) -> PanelRecord:
    """The 3D panel (:func:`depth_view`) drawn as one image, screen x and y in mm from the head centre."""
    view = depth_view(analysis, frame)
    r = view.extent_mm
    rec = PanelRecord("3d", f"3D, anterior view (from the front, {VIEW_ELEVATION_DEG:g}° above)", _fit(slot, 1.0),
                      (-r, r), (-r, r))
    panel = _Panel(rec, background=_rgb(np.asarray(BACKGROUND_RGB) * 255))
    panel.picture(view.rgb)
    basis = anterior_view_basis()
    panel.letters(edge_letters(basis[0], basis[1]))
    canvas.panel(panel, "mm from the head centre", None, 10)
    return rec
