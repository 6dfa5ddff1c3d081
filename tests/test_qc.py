"""qc.png tells the truth: orientation letters, the 3D view's side, the title, the weight-bearing
span's source, the surface contact the arcs were measured from, and the head depression.

Phantom (world RAS mm): a ball of radius 22 mm with a lateral-superior wedge lesion (w > 6 mm,
u > -4 mm in the head frame), for a right hip at x = +40 mm and its mirror image, a left hip at
x = -40 mm, so "lateral" is +x on one and -x on the other.
"""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from pipeline.config import Settings  # noqa: E402
from pipeline.geometry.frame import HeadFrame, plane_points  # noqa: E402
from pipeline.io.scan import Scan  # noqa: E402
from pipeline.measures import location as L  # noqa: E402
from pipeline.measures.hip import measure_hip
from pipeline.report import qc  # noqa: E402

from conftest import grid_affine, voxel_centres  # noqa: E402

R = 22.0
#: Not the defaults, so that a picture drawing the contact with its own shell or step would differ.
SETTINGS = Settings(reconstruction={"isotropic": False}, location={"contact_shell_mm": 1.5, "plane_step_mm": 0.3})
INPUT_PATH = "/data/trial/site 3/ONFH07_m03_cor.nii.gz"
TITLE = "ONFH07 left 3 months"
WORLD_LETTERS = {(0, 1): "R", (0, -1): "L", (1, 1): "A", (1, -1): "P", (2, 1): "S", (2, -1): "I"}


def _letter(direction):
    """The test's own reading of a world direction: the axis it runs along and which way."""
    k = int(np.argmax(np.abs(direction)))
    return WORLD_LETTERS[(k, int(np.sign(direction[k])))]


def _hip(side):
    centre = np.array([40.0 if side == "right" else -40.0, -10.0, 5.0])
    lateral = 1.0 if side == "right" else -1.0
    shape = (52, 50, 54)
    aff = grid_affine(shape, (1.0, 1.1, 0.9), center_mm=centre + [0.3, -0.2, 0.4])
    p = voxel_centres(shape, aff) - centre
    head = (p ** 2).sum(-1) <= R ** 2
    lesion = head & (p[..., 2] > 6.0) & (lateral * p[..., 0] > -4.0)
    image = (400 + 300 * head - 250 * lesion).astype(np.int16)
    scan = Scan.from_source(image, aff, {"path": INPUT_PATH, "format": "nifti"})
    return scan, head, lesion, centre, lateral


@pytest.fixture(scope="module")
def right():
    """Right hip, no title, default weight-bearing span (no landmark, no acetabulum)."""
    scan, head, lesion, *_ = _hip("right")
    analysis = measure_hip(scan, head, lesion, "right", SETTINGS)
    fig = qc.qc_figure(analysis, "", SETTINGS)
    yield analysis, fig
    plt.close(fig)


@pytest.fixture(scope="module")
def left():
    """Left hip with a title and a lateral acetabular edge landmark at u = r sin 35°."""
    scan, head, lesion, centre, lateral = _hip("left")
    a = np.radians(35.0)
    edge = centre + [lateral * (R + 3) * np.sin(a), 0.0, (R + 3) * np.cos(a)]
    analysis = measure_hip(scan, head, lesion, "left", SETTINGS, acetabular_edge=edge)
    fig = qc.qc_figure(analysis, TITLE, SETTINGS)
    yield analysis, fig
    plt.close(fig)


def _panel(fig, prefix):
    (ax,) = [ax for ax in fig.axes if ax.get_title().startswith(prefix)]
    return ax


def _edge_texts(ax):
    """The panel's orientation letters, keyed by the edge they are drawn nearest (found by where
    they are on the screen, not by what the code meant them for)."""
    box = ax.bbox
    out = {}
    for t in ax.texts:
        if not str(t.get_gid()).startswith("orientation"):
            continue
        x, y = t.get_transform().transform(t.get_position())
        fx, fy = (x - box.x0) / box.width, (y - box.y0) / box.height
        edge = min({"left": fx, "right": 1 - fx, "bottom": fy, "top": 1 - fy}.items(), key=lambda kv: kv[1])
        assert edge[1] < 0.05, f"letter {t.get_text()} is not at an edge ({fx:.2f}, {fy:.2f})"
        assert edge[0] not in out, f"two letters at the {edge[0]} edge"
        out[edge[0]] = t.get_text()
    return out


def _all_text(fig):
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return "\n".join(texts)


# ---------------------------------------------------------------------------------------------
# 3D panel
# ---------------------------------------------------------------------------------------------
def test_anterior_view_projection_sees_the_patient_from_the_front():
    c = np.array([40.0, -10.0, 5.0])
    pts = c + np.array([[0, 10, 0], [0, -10, 0], [10, 0, 0], [-10, 0, 0], [0, 0, 10], [0, 0, -10]], float)
    ant, post, right, left, sup, inf = qc.project_anterior_view(pts, c)
    assert ant[2] > post[2]  # anterior is nearer the viewer (depth grows toward the viewer)
    assert right[0] < left[0]  # facing the patient: their right is on the viewer's left
    assert sup[1] > inf[1]
    assert qc.project_anterior_view(c, c) == pytest.approx([0, 0, 0])


def _lesion_pixels_xy(ax):
    """Screen mm (x, y) of the 3D panel's pixels that show the lesion (red), read from the image."""
    (image,) = [im for im in ax.get_images() if im.get_gid() == "meshes"]
    rgb = np.asarray(image.get_array(), dtype=float)
    left, right, bottom, top = image.get_extent()
    n_rows, n_cols = rgb.shape[:2]
    red = (rgb[..., 0] - rgb[..., 1] > 0.3) & (rgb[..., 0] - rgb[..., 2] > 0.3)
    rows, cols = np.nonzero(red)
    x = left + (cols + 0.5) * (right - left) / n_cols
    y = bottom + (rows + 0.5) * (top - bottom) / n_rows
    return x, y, rgb


@pytest.mark.parametrize("side", ["right", "left"])
def test_3d_panel_draws_the_lateral_lesion_on_the_patients_side(side, request):
    analysis, fig = request.getfixturevalue(side)
    ax = _panel(fig, "3D")
    x, y, rgb = _lesion_pixels_xy(ax)
    assert len(x) > 100
    # the faint head shows around the lesion (grey, darker than the background)
    grey = (np.ptp(rgb, axis=-1) < 0.05) & (rgb[..., 0] < 0.9)
    assert grey.sum() > len(x) / 2
    # Lateral-superior lesion: patient's right hip -> viewer's left; left hip -> viewer's right.
    assert np.sign(x.mean()) == (-1 if side == "right" else 1)
    assert y.mean() > 5.0
    assert _edge_texts(ax) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}


@pytest.mark.parametrize("ap", [1.0, -1.0])
def test_3d_panel_shows_the_nearest_surface(ap):
    """Depth order: an anterior lesion is the head's front surface where it shows (seen through
    nothing but the head's faint front), a posterior one lies behind the head's front; both are
    drawn over the head's far side, and each pixel's colour is composed far to near."""
    scan, head, _, centre, _ = _hip("right")
    v = (voxel_centres(head.shape, scan.affine) - centre)[..., 1]
    lesion = head & (ap * v > 10.0)
    hip = SimpleNamespace(scan=scan, head=head, lesion=lesion)
    view = qc.depth_view(hip, HeadFrame(centre, R, "right"))
    shown = np.isfinite(view.lesion_front)
    assert shown.sum() > 100
    gap = (view.head_front - view.lesion_front)[shown]
    if ap > 0:
        assert np.median(gap) < 1.0  # the lesion is the head's front there
    else:
        assert np.median(gap) > 10.0  # a head's depth of faint tissue lies in front of it
    assert np.median(view.lesion_front[shown] - view.head_back[shown]) > 1.0  # in front of the head's far side
    # the same pixels composed by hand: background, head far side, lesion far and near, head near
    r, c = np.argwhere(shown)[len(np.argwhere(shown)) // 2]
    assert view.rgb[r, c, 0] - view.rgb[r, c, 1] > 0.3  # red shows through the faint head
    unshown = np.isfinite(view.head_front) & ~shown
    assert np.all(np.ptp(view.rgb[unshown], axis=-1) < 1e-9)  # grey only where no lesion


def test_picture_is_written_as_png(right, tmp_path):
    analysis, _ = right
    path = tmp_path / "qc.png"
    qc.write_qc_png(path, analysis, "", SETTINGS)
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1700, 500)


# ---------------------------------------------------------------------------------------------
# 2D panels
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["right", "left"])
def test_2d_panel_letters_name_the_world_direction_of_the_screen_axes(side, request):
    analysis, fig = request.getfixturevalue(side)
    frame = analysis.frame
    for plane in ("coronal", "sagittal"):
        ax = _panel(fig, f"mid-{plane}")
        box = ax.bbox
        # screen -> data (matplotlib's own transform, axis inversion included) -> world (the sampling)
        (a0, w0), (a1, _), (_, w1) = ax.transData.inverted().transform(
            [[box.x0, box.y0], [box.x1, box.y0], [box.x0, box.y1]])
        world = plane_points(frame, plane, np.array([a0, a1]), np.array([w0, w1]))
        screen_right = world[1, 0] - world[0, 0]
        screen_up = world[0, 1] - world[0, 0]
        letters = _edge_texts(ax)
        assert letters == {"left": _letter(-screen_right), "right": _letter(screen_right),
                           "top": _letter(screen_up), "bottom": _letter(-screen_up)}, plane
        # the display conventions themselves: coronal seen from the front, sagittal anterior left
        assert letters["left"] + letters["top"] == ("RS" if plane == "coronal" else "AS"), plane


# ---------------------------------------------------------------------------------------------
# title, weight-bearing span, surface contact
# ---------------------------------------------------------------------------------------------
def test_title_is_the_given_title_or_else_the_input_file_name(right, left):
    untitled = right[1]._suptitle.get_text()
    assert untitled.startswith("ONFH07_m03_cor.nii.gz  right hip")
    assert "/data" not in untitled and "site 3" not in untitled
    titled = left[1]._suptitle.get_text()
    assert titled.startswith(f"{TITLE}  left hip") and "ONFH07_m03_cor" not in titled


def test_default_span_is_drawn_as_a_default_never_as_an_acetabular_edge(right):
    analysis, fig = right
    span = analysis.result.weight_bearing
    assert span["source"] == "default"
    ax = _panel(fig, "mid-coronal")
    text = _all_text(fig)
    assert "default span" in text
    assert "acetabular edge" not in text.lower()
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("default span")]
    assert line.get_xdata()[0] == pytest.approx(R * 0.5, abs=0.5)  # at u_lat = r sin 30°
    assert line.get_linestyle() != "-"


def test_measured_edge_is_drawn_as_the_acetabular_edge(left):
    analysis, fig = left
    span = analysis.result.weight_bearing
    assert span["source"] == "landmark"
    ax = _panel(fig, "mid-coronal")
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "acetabular edge (landmark)"]
    assert line.get_xdata()[0] == pytest.approx(span["u_lat_mm"])
    assert line.get_xdata()[0] == pytest.approx((R + 3) * np.sin(np.radians(35.0)), abs=0.5)
    assert "default span" not in _all_text(fig)


@pytest.mark.parametrize("side", ["right", "left"])
def test_drawn_contact_is_the_contact_the_arcs_were_measured_from(side, request):
    analysis, fig = request.getfixturevalue(side)
    for plane in ("coronal", "sagittal"):
        ax = _panel(fig, f"mid-{plane}")
        (dots,) = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_gid() == "surface-contact"]
        drawn = np.asarray(dots.get_offsets())
        # the measured arc, recomputed from the drawn pixels alone
        arc = L.circular_span_deg(np.degrees(np.arctan2(drawn[:, 1], drawn[:, 0])))
        assert arc == pytest.approx(analysis.result.arc_deg(plane), abs=1e-9), plane
        assert 30.0 < arc < 180.0
        # and pixel for pixel the contact of the measurement's own sampling and shell
        sc = L.surface_contact(analysis.head, analysis.lesion, analysis.scan.affine, analysis.frame, plane,
                               SETTINGS.location.plane_step_mm, SETTINGS.location.contact_shell_mm)
        expected = np.column_stack(sc.points_mm())
        assert sorted(map(tuple, drawn)) == sorted(map(tuple, expected))
        # every drawn pixel is inside the lesion and within the shell under the sphere's surface
        radial = np.hypot(drawn[:, 0], drawn[:, 1])
        assert radial.max() <= analysis.frame.radius + 1.0
        assert radial.min() >= analysis.frame.radius - SETTINGS.location.contact_shell_mm - 1.0


# ---------------------------------------------------------------------------------------------
# head depression (docs/method.md section 6)
# ---------------------------------------------------------------------------------------------
DENT_MM = 3.0


@pytest.fixture(scope="module")
def dented():
    """The right hip with a flat dent of DENT_MM over the lesion: the ball cut by the plane normal
    to the (lateral, anterior, superior) axis ``a`` at r - DENT_MM from the centre, so the depression
    is DENT_MM at c + (r - DENT_MM) a."""
    scan, head, _, centre, lateral = _hip("right")
    axis = np.array([0.5 * lateral, 0.3, 0.81])
    axis /= np.linalg.norm(axis)
    p = voxel_centres(head.shape, scan.affine) - centre
    head = head & (p @ axis <= R - DENT_MM)
    lesion = head & (p[..., 2] > 6.0) & (lateral * p[..., 0] > -4.0)
    analysis = measure_hip(scan, head, lesion, "right", SETTINGS)
    fig = qc.qc_figure(analysis, "", SETTINGS)
    yield analysis, fig, centre + (R - DENT_MM) * axis
    plt.close(fig)


def _depression_artists(ax):
    (sphere,) = [ln for ln in ax.get_lines() if ln.get_gid() == "reference-sphere"]
    (depth,) = [c for c in ax.collections if c.get_gid() == "depression-depth"]
    marks = [c for c in ax.collections if c.get_gid() == "deepest-point"]
    return sphere, depth, marks


def test_depression_panel_draws_the_dent_below_the_reference_sphere(dented):
    analysis, fig, deepest_truth = dented
    result = analysis.result
    assert result.arco2019_collapse == "IIIB"
    assert result.head_depression_mm == pytest.approx(DENT_MM, abs=0.3)  # the 1 mm target of method.md 6
    ax = _panel(fig, "collapse IIIB")
    assert ax.get_title().startswith(f"collapse IIIB: head depression {result.head_depression_mm:.2f} mm")
    assert f"collapse: head depression {result.head_depression_mm:.2f} mm, ARCO 2019 IIIB" in fig._suptitle.get_text()
    sphere, depth, (mark,) = _depression_artists(ax)
    # the reference sphere as measured (matched centre and radius), centred on the panel's origin
    radius = result.collapse["reference_radius_mm"]
    assert np.hypot(sphere.get_xdata(), sphere.get_ydata()) == pytest.approx(radius, abs=1e-9)
    # the panel's plane: vertical, through the reference centre and the reported deepest point
    centre = np.asarray(result.collapse["reference_center_ras_mm"])
    d = np.asarray(result.collapse["location_ras_mm"]) - centre
    a_deep, w_deep = np.hypot(d[0], d[1]), d[2]
    assert list(mark.get_offsets()[0]) == pytest.approx([a_deep, w_deep], abs=1e-6)
    # the reported point is the phantom's deepest point (within the averaging width)
    assert np.linalg.norm(np.asarray(result.collapse["location_ras_mm"]) - deepest_truth) < 3.0
    # the coloured outline: as deep as the dent where it is deepest, there, and shallow elsewhere
    depths = np.asarray(depth.get_array())
    segments = depth.get_segments()
    mids = np.array([seg.mean(axis=0) for seg in segments])
    assert depths.max() == pytest.approx(DENT_MM, abs=0.5)
    deepest_drawn = mids[np.argmax(depths)]
    assert np.hypot(*(deepest_drawn - [a_deep, w_deep])) < 4.0
    # away from the dent's rim (cap radius sqrt(2 r h - h^2)) the outline lies on the sphere
    cap = np.sqrt(2 * R * DENT_MM - DENT_MM ** 2)
    far = np.hypot(*(mids - [a_deep, w_deep]).T) > cap + 4.0
    assert far.sum() > 20 and np.abs(depths[far]).max() < 0.5
    assert all(seg[:, 1].min() >= -1e-9 for seg in segments)  # the weight-bearing half only
    assert depth.get_clim() == (0.0, qc.DEPTH_MAX_MM)  # one colour scale for every scan


def test_depression_panel_letters_name_the_world_direction_of_the_screen_axes(dented):
    analysis, fig, _ = dented
    ax = _panel(fig, "collapse IIIB")
    centre = np.asarray(analysis.result.collapse["reference_center_ras_mm"])
    d = np.asarray(analysis.result.collapse["location_ras_mm"]) - centre
    e_a = np.array([d[0], d[1], 0.0]) / np.hypot(d[0], d[1])  # the test's own reading of the plane
    box = ax.bbox
    (a0, w0), (a1, _), (_, w1) = ax.transData.inverted().transform([[box.x0, box.y0], [box.x1, box.y0],
                                                                   [box.x0, box.y1]])
    screen_right = (a1 - a0) * e_a
    screen_up = np.array([0.0, 0.0, w1 - w0])
    assert _edge_texts(ax) == {"left": _letter(-screen_right), "right": _letter(screen_right),
                               "top": _letter(screen_up), "bottom": _letter(-screen_up)}
    assert _edge_texts(ax)["left"] == "R"  # the lateral dent of a right hip: seen from the front


def test_intact_head_says_no_depression_above_the_detection_limit(right):
    analysis, fig = right
    result = analysis.result
    assert result.arco2019_collapse == "none"
    limit = result.collapse["detection_limit_mm"]
    ax = _panel(fig, "collapse none")
    assert ax.get_title().startswith(f"collapse none: no depression above\nthe {limit:.2f} mm detection limit")
    assert f"collapse: no depression above the {limit:.2f} mm detection limit" in fig._suptitle.get_text()
    sphere, depth, marks = _depression_artists(ax)
    assert marks == []  # no deepest point is pointed at when there is no depression
    # the grid's staircase is not drawn as a depression: the outline stays within the limit
    assert np.abs(np.asarray(depth.get_array())).max() < limit
