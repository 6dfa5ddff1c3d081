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

matplotlib is imported here only, so measuring without a picture stays fast; the figure is drawn
with matplotlib's object API on the Agg canvas (pyplot, its figure manager and backend machinery are
never imported) and the PNG is written with zlib level :data:`PNG_COMPRESS_LEVEL`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.geometry.affine import mm_to_index
from pipeline.geometry.frame import HeadFrame, plane_points, sample_plane
from pipeline.geometry.mesh import mask_mesh
from pipeline.measures.location import surface_contact

MAX_FACES = 6000

#: zlib level of qc.png: 1 encodes about 4x faster than matplotlib's default 6 for a file about
#: 10 % larger (the same pixels).
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

#: Elevation of the 3D panel's viewpoint above the horizontal, degrees (a little from above, so
#: the weight-bearing dome shows).
VIEW_ELEVATION_DEG = 15.0

_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))

#: World (RAS) direction each 2D panel shows on the viewer's left: coronal images are displayed
#: as seen from the front (patient's right on the left), sagittal ones with anterior on the left.
VIEWER_LEFT = {"coronal": np.array([1.0, 0.0, 0.0]), "sagittal": np.array([0.0, 1.0, 0.0])}


def sample_image_plane(data: np.ndarray, affine: np.ndarray, frame: HeadFrame, plane: str,
                       a_mm: np.ndarray, w_mm: np.ndarray) -> np.ndarray:
    """Image intensities on a mid-plane pixel grid (trilinear; 0 outside the field of view)."""
    from scipy import ndimage

    pts = plane_points(frame, plane, a_mm, w_mm)
    ijk = mm_to_index(affine, pts)
    return ndimage.map_coordinates(np.asarray(data, dtype=np.float32), np.moveaxis(ijk, -1, 0),
                                   order=1, mode="constant", cval=0.0)


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


def _draw_edge_letters(ax, letters: dict) -> None:
    places = {"left": (0.012, 0.5, "left", "center"), "right": (0.988, 0.5, "right", "center"),
              "top": (0.5, 0.988, "center", "top"), "bottom": (0.5, 0.012, "center", "bottom")}
    for edge, (x, y, ha, va) in places.items():
        ax.text(x, y, letters[edge], transform=ax.transAxes, ha=ha, va=va, fontsize=11, weight="bold",
                color="white", gid=f"orientation-{edge}",
                bbox={"facecolor": "black", "edgecolor": "none", "alpha": 0.45, "pad": 1.0})


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
# picture
# --------------------------------------------------------------------------------------------
def write_qc_png(path: str | Path, analysis, title: str = "", settings=None) -> None:
    """Draw the QC picture of an :class:`pipeline.measures.hip.Analysis` that has a head frame.

    ``settings`` (:class:`pipeline.config.Settings`) must be those the analysis was measured with,
    so that the drawn surface contact is the one its arcs came from; None means the defaults.
    """
    fig = qc_figure(analysis, title, settings)
    fig.savefig(path, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})


def qc_figure(analysis, title: str = "", settings=None):
    """The QC picture as a matplotlib Figure on an Agg canvas (no pyplot: nothing to close).
    See :func:`write_qc_png`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pipeline.config import Settings

    location = (settings or Settings()).location
    frame: HeadFrame = analysis.frame
    result = analysis.result
    scan = analysis.scan
    half = frame.radius * 2.0
    step = max(0.25, float(scan.spacing.min()) / 2)
    fig = Figure(figsize=(17, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    for col, plane in enumerate(("coronal", "sagittal")):
        ax = fig.add_subplot(1, 4, col + 1)
        # Outlines sampled as location.py samples its planes (trilinear, thresholded at 0.5), so the
        # lesion's drawn extremes are the ones the JIC type and arcs were read from.
        head = sample_plane(analysis.head, scan.affine, frame, plane, step, half, order=1)
        lesion = sample_plane(analysis.lesion, scan.affine, frame, plane, step, half, order=1)
        img = sample_image_plane(scan.data, scan.affine, frame, plane, head.a_mm, head.w_mm)
        lo, hi = np.percentile(img[head.in_fov], [1, 99.5]) if head.in_fov.any() else (0, 1)
        extent = [head.a_mm[0], head.a_mm[-1], head.w_mm[0], head.w_mm[-1]]
        ax.imshow(img.T, origin="lower", extent=extent, cmap="gray", vmin=lo, vmax=hi, interpolation="bilinear")
        _outline(ax, head, "#33d17a", "head")
        _outline(ax, lesion, "#ff4040", "lesion")
        circle = np.linspace(0, 2 * np.pi, 361)
        ax.plot(frame.radius * np.cos(circle), frame.radius * np.sin(circle), ":", color="#9ad7ff", lw=0.8,
                label=f"sphere r = {frame.radius:.1f} mm")
        _contact(ax, analysis, frame, plane, location)
        if plane == "coronal":
            _zone_lines(ax, result.weight_bearing, frame.radius)
        else:
            for v in (-frame.radius / 3, frame.radius / 3):
                ax.axvline(v, color="#ffd34d", lw=0.8, ls="--")
            # above the head like the JIC zone names: the legend sits at the bottom
            for x, name in ((frame.radius * 2 / 3, "anterior"), (0, "central"), (-frame.radius * 2 / 3, "posterior")):
                ax.text(x, frame.radius * 1.3, name, color="#ffd34d", ha="center", fontsize=7)
        arc = result.arc_deg(plane)
        screen_right, screen_up, reversed_a = panel_axes(frame, plane)
        if reversed_a:
            ax.invert_xaxis()
        _draw_edge_letters(ax, edge_letters(screen_right, screen_up))
        lateral, medial = ("lateral", "medial") if plane == "coronal" else ("anterior", "posterior")
        ax.set_xlabel(f"{'u' if plane == 'coronal' else 'v'} (mm)   ← {lateral if reversed_a else medial}"
                      f" | {medial if reversed_a else lateral} →", fontsize=8)
        ax.set_ylabel("w (mm, superior up)", fontsize=8)
        ax.set_title(f"mid-{plane}" + (f"  arc {arc:.0f}°" if arc is not None else "  arc -"), fontsize=10)
        ax.tick_params(labelsize=7)
        # raised off the bottom edge, which holds the orientation letter
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 0.06), fontsize=6, framealpha=0.6, markerscale=8)
    _depression_panel(fig.add_subplot(1, 4, 3), analysis, step)
    ax4 = fig.add_subplot(1, 4, 4)
    _meshes(ax4, analysis, frame)
    fig.suptitle(result.qc_title(title or result.input_name()), fontsize=9)
    fig.subplots_adjust(left=0.04, right=0.985, bottom=0.1, top=0.83, wspace=0.25)  # tight_layout costs 0.5 s
    return fig


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
    from scipy import ndimage

    ijk = mm_to_index(affine, points)
    return ndimage.map_coordinates(np.asarray(values, dtype=np.float32), np.moveaxis(ijk, -1, 0), order=order,
                                   mode="constant", cval=0.0)


def _outline_points(a_mm, w_mm, field: np.ndarray) -> list[np.ndarray]:
    """The 0.5 contour lines of a sampled field, each an (n, 2) array of (a, w) mm."""
    import contourpy

    gen = contourpy.contour_generator(a_mm, w_mm, field.T, line_type=contourpy.LineType.Separate)
    return [np.asarray(line) for line in gen.lines(0.5) if len(line) > 1]


def outline_depths(analysis, plane: DepressionPlane, radius: float, a_mm, w_mm) -> list[tuple[np.ndarray, np.ndarray]]:
    """The head's outline on the depression plane and its depth below the reference sphere there.

    Depth = (r - distance of the outline from the centre) less the same of the reference ball as
    the scan's grid images it (:func:`pipeline.measures.collapse.ball_on_grid`), sampled on the same
    plane in the same way, at the same angle: the staircase of the grid is thus not drawn as a
    depression (docs/method.md section 6). A display of the measured figure, not the measurement
    (which averages over the 3D surface).

    Returns
    -------
    list of (points (n, 2) a, w mm, depth (n,) mm)
        One per outline line; NaN depth where the reference has no outline at that angle.
    """
    from pipeline.measures.collapse import ball_on_grid

    scan = analysis.scan
    pts = plane.points(a_mm, w_mm)
    head_lines = _outline_points(a_mm, w_mm, _sample(analysis.head, scan.affine, pts))
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
    if stage == "none":
        return (f"collapse none: no depression above\nthe {limit:.2f} mm detection limit "
                f"(deepest {result.head_depression_mm:.2f} mm)")
    zone = (result.collapse or {}).get("jic_zone")
    return (f"collapse {stage}: head depression {result.head_depression_mm:.2f} mm\n"
            f"(ARCO 2019, through the deepest point{', zone ' + zone if zone else ''})")


def _depression_panel(ax, analysis, step: float) -> None:
    """The depression panel (see the module docstring); artists carry gids "reference-sphere",
    "depression-depth" (the coloured outline), "deepest-point"."""
    from matplotlib.collections import LineCollection

    result, frame, scan = analysis.result, analysis.frame, analysis.scan
    record = result.collapse or {}
    radius = float(record.get("reference_radius_mm") or frame.radius)
    plane = depression_plane(result, frame)
    half = 1.35 * radius
    a_mm = np.arange(-half, half + step / 2, step)
    w_mm = np.arange(-0.55 * radius, half + step / 2, step)
    img = _sample(scan.data, scan.affine, plane.points(a_mm, w_mm))
    inside = _sample(analysis.head, scan.affine, plane.points(a_mm, w_mm)) > 0.5
    lo, hi = np.percentile(img[inside], [1, 99.5]) if inside.any() else (0, 1)
    ax.imshow(img.T, origin="lower", extent=[a_mm[0], a_mm[-1], w_mm[0], w_mm[-1]], cmap="gray", vmin=lo, vmax=hi,
              interpolation="bilinear")
    circle = np.linspace(0, 2 * np.pi, 721)
    ax.plot(radius * np.cos(circle), radius * np.sin(circle), "-", color="#9ad7ff", lw=0.9, gid="reference-sphere",
            label=f"reference sphere r = {radius:.1f} mm")
    segments, depths = [], []
    for line, depth in outline_depths(analysis, plane, radius, a_mm, w_mm):
        # the weight-bearing half only (w > 0): below the equator lie the neck and its cut
        mid_w = 0.5 * (line[1:, 1] + line[:-1, 1])
        mid_depth = 0.5 * (depth[1:] + depth[:-1])
        keep = (mid_w > 0) & np.isfinite(mid_depth)
        segments += [seg for seg, k in zip(np.stack([line[:-1], line[1:]], axis=1), keep) if k]
        depths += list(mid_depth[keep])
    if segments:
        lines = LineCollection(segments, cmap=DEPTH_CMAP, linewidths=2.4, gid="depression-depth")
        lines.set_array(np.clip(np.asarray(depths), 0.0, None))
        lines.set_clim(0.0, DEPTH_MAX_MM)
        ax.add_collection(lines)
        bar = ax.figure.colorbar(lines, ax=ax, fraction=0.04, pad=0.02, ticks=[0, 1, 2, 3, 4])
        bar.set_label("depth below the sphere (mm)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    if plane.deepest is not None and result.arco2019_collapse not in (None, "none"):
        ax.scatter([plane.deepest[0]], [plane.deepest[1]], marker="v", s=40, color="white", edgecolor="black",
                   lw=0.6, zorder=5, gid="deepest-point", label=f"deepest {result.head_depression_mm:.2f} mm")
    screen_right, reversed_a = plane.e_a, False
    viewer_left = VIEWER_LEFT["coronal" if abs(plane.e_a[0]) >= abs(plane.e_a[1]) else "sagittal"]
    if float(plane.e_a @ viewer_left) > 0:  # shown as the mid-planes are: patient's right / anterior on the left
        ax.invert_xaxis()
        screen_right, reversed_a = -plane.e_a, True
    _draw_edge_letters(ax, edge_letters(screen_right, plane.e_sup))
    ax.set_xlim(*((a_mm[-1], a_mm[0]) if reversed_a else (a_mm[0], a_mm[-1])))
    ax.set_ylim(w_mm[0], w_mm[-1])
    ax.set_aspect("equal")
    ax.set_xlabel("mm along the deepest point's direction" if plane.deepest is not None else "u (mm)", fontsize=8)
    ax.set_title(depression_title(result), fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 0.06), fontsize=6, framealpha=0.6)


def _outline(ax, sample, color, label):
    if sample.image.any():
        ax.contour(sample.a_mm, sample.w_mm, sample.image.T.astype(float), levels=[0.5], colors=[color],
                   linewidths=1.1)
        ax.plot([], [], color=color, label=label)


def _contact(ax, analysis, frame, plane, location):
    """The lesion's surface contact from :func:`pipeline.measures.location.surface_contact` with the
    measurement's own step and shell: the pixels the arc was measured from."""
    sc = surface_contact(analysis.head, analysis.lesion, analysis.scan.affine, frame, plane,
                         step_mm=location.plane_step_mm, contact_shell_mm=location.contact_shell_mm)
    if sc.contact.any():
        a, w = sc.points_mm()
        ax.scatter(a, w, s=0.3, alpha=0.5, color="#ff9d00", lw=0, gid="surface-contact",
                   label=f"surface contact (arc, {location.contact_shell_mm:g} mm shell)")


def _zone_lines(ax, span: dict | None, radius):
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
        ax.axvline(u, color="#ffd34d", lw=0.8, ls="--")
    # A default end marks where an edge was assumed, not found: it must not read as anatomy.
    default_style = {"color": "#b8b8b8", "lw": 1.0, "ls": (0, (4, 3))}
    if source_lat == "default" and source_med == "default":
        ax.axvline(u_lat, **default_style, label=f"default span ±r·sin {angle:g}° (no acetabulum found or given)")
        ax.axvline(u_med, **default_style)
    else:
        if source_lat == "default":
            ax.axvline(u_lat, **default_style, label=f"default lateral end r·sin {angle:g}° (no edge found or given)")
        else:
            ax.axvline(u_lat, color="#ff66ff", lw=1.0, ls="-", label=f"acetabular edge ({source_lat})")
        if source_med == "default":
            ax.axvline(u_med, **default_style, label=f"default medial end -r·sin {angle:g}°")
        else:
            ax.axvline(u_med, color="#ff66ff", lw=0.6, ls=":", label=f"acetabular roof medial end ({source_med})")
    third = (u_lat - u_med) / 3
    centres = {"A": t1 - third / 2, "B": (t1 + t2) / 2, "C1": (t2 + u_lat) / 2, "C2": u_lat + third / 2}
    for name, u in centres.items():
        ax.text(u, radius * 1.25, name, color="#ffd34d", ha="center", fontsize=8, weight="bold")


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


def _meshes(ax, analysis, frame):
    """The 3D panel (:func:`depth_view`) drawn as one image (gid "meshes") on ``ax``."""
    view = depth_view(analysis, frame)
    r = view.extent_mm
    ax.imshow(view.rgb, origin="lower", extent=[-r, r, -r, r], interpolation="bilinear", gid="meshes")
    basis = anterior_view_basis()
    ax.set_xlim(-r, r)
    ax.set_ylim(-r, r)
    ax.set_aspect("equal")
    ax.set_facecolor("#f4f4f4")
    _draw_edge_letters(ax, edge_letters(basis[0], basis[1]))
    ax.set_xlabel("mm from the head centre", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"3D, anterior view (from the front, {VIEW_ELEVATION_DEG:g}° above)", fontsize=10)
