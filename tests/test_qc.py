"""qc.png tells the truth: orientation letters, the 3D view's side, the title, the weight-bearing
span's source, the surface contact the arcs were measured from, and the head depression.

The picture is read two ways: from the record of what was drawn where (``qc.qc_picture``: per
panel the data -> pixel transform, the letters with their positions, the legend, the drawn items
in mm) and from its pixels, which must show those items where the record's transform puts them.

Phantom (world RAS mm): a ball of radius 22 mm with a lateral-superior wedge lesion (w > 6 mm,
u > -4 mm in the head frame), for a right hip at x = +40 mm and its mirror image, a left hip at
x = -40 mm, so "lateral" is +x on one and -x on the other.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.geometry.frame import HeadFrame, plane_points
from pipeline.io.scan import Scan
from pipeline.measures import location as L
from pipeline.measures.hip import measure_hip
from pipeline.report import qc

from conftest import grid_affine, voxel_centres

R = 22.0
#: Not the defaults, so that a picture drawing the contact with its own shell or step would differ.
SETTINGS = Settings(reconstruction={"isotropic": False}, location={"contact_shell_mm": 1.5, "plane_step_mm": 0.3})
INPUT_PATH = "/data/trial/site 3/ONFH07_m03_cor.nii.gz"
TITLE = "ONFH07 left 3 months"
WORLD_LETTERS = {(0, 1): "R", (0, -1): "L", (1, 1): "A", (1, -1): "P", (2, 1): "S", (2, -1): "I"}
MAGENTA = np.array(qc._rgb(qc.EDGE_COLOUR))
DEFAULT_GREY = np.array(qc._rgb(qc.DEFAULT_END_COLOUR))


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
    return analysis, qc.qc_picture(analysis, "", SETTINGS)


@pytest.fixture(scope="module")
def left():
    """Left hip with a title and a lateral acetabular edge landmark at u = r sin 35°."""
    scan, head, lesion, centre, lateral = _hip("left")
    a = np.radians(35.0)
    edge = centre + [lateral * (R + 3) * np.sin(a), 0.0, (R + 3) * np.cos(a)]
    analysis = measure_hip(scan, head, lesion, "left", SETTINGS, acetabular_edge=edge)
    return analysis, qc.qc_picture(analysis, TITLE, SETTINGS)


def _panel(pic, prefix):
    (panel,) = [p for p in pic.panels.values() if p.title.startswith(prefix)]
    return panel


def _edge_texts(pic, panel):
    """The panel's orientation letters, keyed by the edge they are drawn nearest (found by where
    their boxes are on the screen, not by what the code meant them for), each checked to be drawn:
    white text pixels on the darkened box."""
    x0, y0, x1, y1 = panel.box
    out = {}
    for letter in panel.letters.values():
        (x, y), (bl, bt, br, bb) = letter.centre, letter.box
        gaps = {"left": bl - x0, "right": x1 - br, "top": bt - y0, "bottom": y1 - bb}
        edge, gap = min(gaps.items(), key=lambda kv: kv[1])
        assert -0.5 <= gap < 5.0, f"letter {letter.text} is not at an edge ({gaps})"
        middle = (x - (x0 + x1) / 2) if edge in ("top", "bottom") else (y - (y0 + y1) / 2)
        assert abs(middle) < 2.0, f"letter {letter.text} is not at the middle of the {edge} edge"
        assert edge not in out, f"two letters at the {edge} edge"
        box = pic.rgb[int(np.ceil(bt)):int(bb), int(np.ceil(bl)):int(br)].astype(int)
        assert (box.min(axis=-1) > 220).sum() >= 8, f"letter {letter.text}: no white text in its box"
        assert (box.max(axis=-1) < 150).sum() >= 8, f"letter {letter.text}: its box is not darkened"
        out[edge] = letter.text
    return out


def _all_text(pic):
    return "\n".join(pic.texts)


def _inside(panel, exclude=True):
    """Row and column slices of the pixels wholly inside the panel, and a mask of those not under
    its legend or letters (``exclude``)."""
    x0, y0, x1, y1 = panel.box
    rows, cols = slice(int(np.ceil(y0)), int(np.floor(y1))), slice(int(np.ceil(x0)), int(np.floor(x1)))
    keep = np.ones((rows.stop - rows.start, cols.stop - cols.start), bool)
    if exclude:
        for box in [panel.legend_box] + [letter.box for letter in panel.letters.values()]:
            if box is not None:
                bl, bt, br, bb = box
                keep[max(int(bt) - 1 - rows.start, 0):max(int(np.ceil(bb)) + 1 - rows.start, 0),
                     max(int(bl) - 1 - cols.start, 0):max(int(np.ceil(br)) + 1 - cols.start, 0)] = False
    return rows, cols, keep


def _pixels_data(panel, rows, cols, mask):
    """Data coordinates of the centres of the pixels of ``mask`` (on the panel's rows x cols)."""
    r, c = np.nonzero(mask)
    return panel.to_data(np.column_stack([c + cols.start + 0.5, r + rows.start + 0.5]))


def _near(colour, target, tol):
    return (np.abs(colour.astype(int) - np.asarray(target)) <= tol).all(axis=-1)


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


def _lesion_pixels_xy(pic, panel):
    """Screen mm (x, y) of the 3D panel's pixels that show the lesion (red), read from qc.png's
    pixels through the panel's transform; and the panel's pixels (0-1) away from its letters."""
    rows, cols, keep = _inside(panel)
    rgb = pic.rgb[rows, cols].astype(float) / 255
    red = (rgb[..., 0] - rgb[..., 1] > 0.3) & (rgb[..., 0] - rgb[..., 2] > 0.3) & keep
    xy = _pixels_data(panel, rows, cols, red)
    return xy[:, 0], xy[:, 1], rgb[keep]


@pytest.mark.parametrize("side", ["right", "left"])
def test_3d_panel_draws_the_lateral_lesion_on_the_patients_side(side, request):
    analysis, pic = request.getfixturevalue(side)
    panel = _panel(pic, "3D")
    x, y, rgb = _lesion_pixels_xy(pic, panel)
    assert len(x) > 100
    # the faint head shows around the lesion (grey, darker than the background)
    grey = (np.ptp(rgb, axis=-1) < 0.05) & (rgb[..., 0] < 0.9)
    assert grey.sum() > len(x) / 2
    # Lateral-superior lesion: patient's right hip -> viewer's left; left hip -> viewer's right.
    assert np.sign(x.mean()) == (-1 if side == "right" else 1)
    assert y.mean() > 5.0
    assert _edge_texts(pic, panel) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}


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
    analysis, pic = right
    path = tmp_path / "qc.png"
    qc.write_qc_png(path, analysis, "", SETTINGS)
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1700, 500) == qc.SIZE
        written = np.asarray(im.convert("RGB"))
    assert np.array_equal(written, pic.rgb)  # the picture the record describes, losslessly
    # the title is drawn: dark text in the band above the panels, centred
    band = written[:60].min(axis=-1)
    cols = np.nonzero((band < 100).any(axis=0))[0]
    assert len(cols) > 300 and abs((cols.min() + cols.max()) / 2 - 850) < 20


def test_picture_draws_without_matplotlib(right, tmp_path):
    """qc.png is drawn without importing matplotlib (issue 16: its import and figure layout were
    most of the picture's time): in a fresh process, matplotlib is still not imported after
    write_qc_png."""
    analysis, _ = right
    state = tmp_path / "analysis.pickle"
    state.write_bytes(pickle.dumps((analysis, SETTINGS)))
    code = ("import pickle, sys\n"
            f"analysis, settings = pickle.loads(open({str(state)!r}, 'rb').read())\n"
            "assert 'matplotlib' not in sys.modules, 'imported before the picture'\n"
            "from pipeline.report.qc import write_qc_png\n"
            f"write_qc_png({str(tmp_path / 'qc.png')!r}, analysis, '', settings)\n"
            "print('matplotlib' in sys.modules)\n")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert (tmp_path / "qc.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------
# 2D panels
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["right", "left"])
def test_2d_panel_letters_name_the_world_direction_of_the_screen_axes(side, request):
    analysis, pic = request.getfixturevalue(side)
    frame = analysis.frame
    for plane in ("coronal", "sagittal"):
        panel = _panel(pic, f"mid-{plane}")
        x0, y0, x1, y1 = panel.box
        # screen -> data (the panel's own transform, axis reversal included) -> world (the sampling)
        (a0, w0), (a1, _), (_, w1) = panel.to_data([[x0, y1], [x1, y1], [x0, y0]])
        world = plane_points(frame, plane, np.array([a0, a1]), np.array([w0, w1]))
        screen_right = world[1, 0] - world[0, 0]
        screen_up = world[0, 1] - world[0, 0]
        letters = _edge_texts(pic, panel)
        assert letters == {"left": _letter(-screen_right), "right": _letter(screen_right),
                           "top": _letter(screen_up), "bottom": _letter(-screen_up)}, plane
        # the display conventions themselves: coronal seen from the front, sagittal anterior left
        assert letters["left"] + letters["top"] == ("RS" if plane == "coronal" else "AS"), plane


@pytest.mark.parametrize("side", ["right", "left"])
def test_mid_planes_show_the_scan_where_the_transform_puts_it(side, request):
    """The greyscale image lies under the drawn outlines: at points given in mm (u lateral, w
    superior), the phantom's head is bright, its lesion (lateral, w > 6 mm) darker and beyond the
    scan's field of view black, as the image was windowed."""
    analysis, pic = request.getfixturevalue(side)
    grey = pic.rgb.astype(int)
    for plane, lesion_a in (("coronal", 10.0), ("sagittal", 0.0)):
        panel = _panel(pic, f"mid-{plane}")

        def value(a, w, panel=panel):
            x, y = panel.to_pixel([a, w]).astype(int)
            return grey[y - 1:y + 2, x - 1:x + 2].mean()

        head = value(0.0, -R / 2)  # below the lesion
        assert head > 200, plane
        assert value(lesion_a, 14.0) < head - 50, plane  # lesion
        assert value(-35.0, 30.0) < 10, plane  # outside the field of view (the scan's grid)
        if plane == "coronal":  # the medial side of the dome is head, not lesion: left and right not swapped
            assert value(-12.0, 14.0) > 200
            assert value(12.0, 14.0) < head - 50


def _red(rgb):
    """The lesion outline's red (#ff4040, and its anti-aliased edges): not orange, not magenta."""
    rgb = rgb.astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 180) & (r - g > 100) & (r - b > 100) & (np.abs(g - b) < 40)


@pytest.mark.parametrize("side", ["right", "left"])
def test_lesion_outline_pixels_lie_where_the_transform_puts_the_outline(side, request):
    """The red pixels of each mid-plane are the lesion's outline as recorded (mm), drawn through
    the panel's transform: every red pixel is on it, and most of it is red."""
    analysis, pic = request.getfixturevalue(side)
    for plane in ("coronal", "sagittal"):
        panel = _panel(pic, f"mid-{plane}")
        outline = np.concatenate([d.xy for d in panel.items("lesion-outline")])
        rows, cols, keep = _inside(panel)
        red = _red(pic.rgb[rows, cols]) & keep
        assert red.sum() > 100, plane
        drawn = _pixels_data(panel, rows, cols, red)
        mm_per_px = abs(panel.xlim[1] - panel.xlim[0]) / (panel.box[2] - panel.box[0])
        dist = np.sqrt(((drawn[:, None, :] - outline[None, :, :]) ** 2).sum(-1)).min(axis=1)
        assert dist.max() < 2.0 * mm_per_px, plane  # no red pixel off the outline
        # and the outline shows (except where the contact dots or letters are over it)
        px = panel.to_pixel(outline)
        r = np.clip(px[:, 1].astype(int) - rows.start, 0, red.shape[0] - 1)
        c = np.clip(px[:, 0].astype(int) - cols.start, 0, red.shape[1] - 1)
        near = np.zeros_like(red)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                near |= np.roll(np.roll(red, dr, axis=0), dc, axis=1)
        assert near[r, c].mean() > 0.6, plane
        # the head's outline is drawn in its own green, on its own line
        head = np.concatenate([d.xy for d in panel.items("head-outline")])
        green = _near(pic.rgb[rows, cols], qc._rgb(qc.HEAD_COLOUR), 40) & keep
        dist = np.sqrt(((_pixels_data(panel, rows, cols, green)[:, None, :] - head[None]) ** 2).sum(-1)).min(axis=1)
        assert green.sum() > 100 and dist.max() < 2.0 * mm_per_px, plane


# ---------------------------------------------------------------------------------------------
# title, weight-bearing span, surface contact
# ---------------------------------------------------------------------------------------------
def test_title_is_the_given_title_or_else_the_input_file_name(right, left):
    untitled = right[1].title
    assert untitled.startswith("ONFH07_m03_cor.nii.gz  right hip")
    assert "/data" not in untitled and "site 3" not in untitled
    titled = left[1].title
    assert titled.startswith(f"{TITLE}  left hip") and "ONFH07_m03_cor" not in titled
    assert untitled in right[1].texts and titled in left[1].texts  # drawn as such
    # in the pixels: the first line, centred over the picture, as wide as its text set at 9 points
    font, _ = qc._font(round(9 * qc.PX_PER_PT * qc.SUPERSAMPLE, 2))
    for pic in (right[1], left[1]):
        first = pic.title.split("\n")[0]
        cols = np.nonzero((pic.rgb[8:24].min(axis=-1) < 100).any(axis=0))[0]
        assert cols.max() - cols.min() == pytest.approx(font.getlength(first) / qc.SUPERSAMPLE, abs=6)
        assert (cols.min() + cols.max()) / 2 == pytest.approx(qc.SIZE[0] / 2, abs=4)


def _column_share(pic, panel, u, colour, tol=12):
    """Share of the panel's rows (away from its legend and letters) with a pixel of ``colour``
    within a pixel of the vertical line at data x = ``u``."""
    rows, cols, keep = _inside(panel)
    x = int(panel.to_pixel([u, 0.0])[0]) - cols.start
    strip = _near(pic.rgb[rows, cols][:, x - 1:x + 2], colour, tol) & keep[:, x - 1:x + 2]
    usable = keep[:, x - 1:x + 2].all(axis=1)
    return strip.any(axis=1)[usable].mean()


def test_default_span_is_drawn_as_a_default_never_as_an_acetabular_edge(right):
    analysis, pic = right
    span = analysis.result.weight_bearing
    assert span["source"] == "default"
    panel = _panel(pic, "mid-coronal")
    text = _all_text(pic)
    assert "default span" in text
    assert "acetabular edge" not in text.lower()
    (line,) = [d for d in panel.drawn if (d.label or "").startswith("default span")]
    assert line.xy[0, 0] == pytest.approx(R * 0.5, abs=0.5)  # at u_lat = r sin 30°
    assert line.dash is not None
    assert line.colour == tuple(DEFAULT_GREY)
    # in the pixels: a dashed grey line there (on and off along it), and nothing magenta anywhere
    share = _column_share(pic, panel, line.xy[0, 0], DEFAULT_GREY)
    assert 0.3 < share < 0.9
    assert _column_share(pic, panel, line.xy[0, 0] + 3.0, DEFAULT_GREY) < 0.1
    assert not _near(pic.rgb, MAGENTA, 60).any()


def test_measured_edge_is_drawn_as_the_acetabular_edge(left):
    analysis, pic = left
    span = analysis.result.weight_bearing
    assert span["source"] == "landmark"
    panel = _panel(pic, "mid-coronal")
    (line,) = [d for d in panel.drawn if d.label == "acetabular edge (landmark)"]
    assert "acetabular edge (landmark)" in panel.legend
    assert line.xy[0, 0] == pytest.approx(span["u_lat_mm"])
    assert line.xy[0, 0] == pytest.approx((R + 3) * np.sin(np.radians(35.0)), abs=0.5)
    assert line.dash is None and line.colour == tuple(MAGENTA)
    assert "default span" not in _all_text(pic)
    # in the pixels: a solid magenta line at the edge, the only magenta outside the legend
    assert _column_share(pic, panel, line.xy[0, 0], MAGENTA) > 0.95
    rows, cols, keep = _inside(panel)
    magenta = _near(pic.rgb[rows, cols], MAGENTA, 12) & keep
    x = _pixels_data(panel, rows, cols, magenta)[:, 0]
    mm_per_px = abs(panel.xlim[1] - panel.xlim[0]) / (panel.box[2] - panel.box[0])
    assert np.abs(x - line.xy[0, 0]).max() < 1.5 * mm_per_px


@pytest.mark.parametrize("side", ["right", "left"])
def test_drawn_contact_is_the_contact_the_arcs_were_measured_from(side, request):
    analysis, pic = request.getfixturevalue(side)
    for plane in ("coronal", "sagittal"):
        panel = _panel(pic, f"mid-{plane}")
        (dots,) = panel.items("surface-contact")
        drawn = np.asarray(dots.xy)
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
        # in qc.png's pixels: orange there, and not 4 mm further in, inside the lesion
        assert _orange_share(pic, panel, drawn) > 0.5, plane
        assert _orange_share(pic, panel, drawn * (1 - 4.0 / radial)[:, None]) < 0.1, plane


def test_picture_draws_the_measured_contact_without_sampling_again(right, monkeypatch):
    """measure_hip keeps each mid-plane's surface contact; qc.png draws it as is (no second sampling)."""
    analysis, pic = right
    assert sorted(analysis.contacts) == ["coronal", "sagittal"]

    def no_sampling(*args, **kwargs):
        raise AssertionError("qc.png sampled the surface contact again")

    monkeypatch.setattr(qc, "surface_contact", no_sampling)
    again = qc.qc_picture(analysis, "", SETTINGS)
    assert np.array_equal(again.rgb, pic.rgb)


def _orange_share(pic, panel, points):
    """Share of the points (data mm) whose qc.png pixel is tinted with the contact's orange."""
    px = panel.to_pixel(points).astype(int)
    c = pic.rgb[px[:, 1], px[:, 0]].astype(int)
    return ((c[:, 0] - c[:, 2] > 60) & (c[:, 1] - c[:, 2] > 30)).mean()


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
    return analysis, qc.qc_picture(analysis, "", SETTINGS), centre + (R - DENT_MM) * axis


def _depression_items(panel):
    (sphere,) = panel.items("reference-sphere")
    (depth,) = panel.items("depression-depth")
    return sphere, depth, panel.items("deepest-point")


def test_depth_colours_are_plasma_on_one_scale():
    """0 mm is plasma's first colour and DEPTH_MAX_MM its last (deeper saturates), for every scan."""
    assert qc.depth_colour(0.0) == pytest.approx(qc.PLASMA_ANCHORS[0])
    assert qc.depth_colour(qc.DEPTH_MAX_MM) == pytest.approx(qc.PLASMA_ANCHORS[-1])
    assert qc.depth_colour(2 * qc.DEPTH_MAX_MM) == pytest.approx(qc.PLASMA_ANCHORS[-1])
    assert qc.depth_colour(qc.DEPTH_MAX_MM / 2) == pytest.approx(qc.PLASMA_ANCHORS[8])


def test_depression_panel_draws_the_dent_below_the_reference_sphere(dented):
    analysis, pic, deepest_truth = dented
    result = analysis.result
    assert result.arco2019_collapse == "IIIB"
    assert result.head_depression_mm == pytest.approx(DENT_MM, abs=0.3)  # the 1 mm target of method.md 6
    panel = _panel(pic, "collapse IIIB")
    assert panel.title.startswith(f"collapse IIIB: head depression {result.head_depression_mm:.2f} mm")
    assert panel.title in panel.texts
    assert f"collapse: head depression {result.head_depression_mm:.2f} mm, ARCO 2019 IIIB" in pic.title
    sphere, depth, (mark,) = _depression_items(panel)
    # the reference sphere as measured (matched centre and radius), centred on the panel's origin
    radius = result.collapse["reference_radius_mm"]
    assert np.hypot(*sphere.xy.T) == pytest.approx(radius, abs=1e-9)
    # the panel's plane: vertical, through the reference centre and the reported deepest point
    centre = np.asarray(result.collapse["reference_center_ras_mm"])
    d = np.asarray(result.collapse["location_ras_mm"]) - centre
    a_deep, w_deep = np.hypot(d[0], d[1]), d[2]
    assert list(mark.xy[0]) == pytest.approx([a_deep, w_deep], abs=1e-6)
    assert f"deepest {result.head_depression_mm:.2f} mm" in panel.legend
    # the reported point is the phantom's deepest point (within the averaging width)
    assert np.linalg.norm(np.asarray(result.collapse["location_ras_mm"]) - deepest_truth) < 3.0
    # the coloured outline: as deep as the dent where it is deepest, there, and shallow elsewhere
    depths = np.asarray(depth.values)
    segments = np.asarray(depth.xy)
    mids = segments.mean(axis=1)
    assert depths.max() == pytest.approx(DENT_MM, abs=0.5)
    deepest_drawn = mids[np.argmax(depths)]
    assert np.hypot(*(deepest_drawn - [a_deep, w_deep])) < 4.0
    # away from the dent's rim (cap radius sqrt(2 r h - h^2)) the outline lies on the sphere
    cap = np.sqrt(2 * R * DENT_MM - DENT_MM ** 2)
    far = np.hypot(*(mids - [a_deep, w_deep]).T) > cap + 4.0
    assert far.sum() > 20 and np.abs(depths[far]).max() < 0.5
    assert all(seg[:, 1].min() >= -1e-9 for seg in segments)  # the weight-bearing half only
    # in qc.png's pixels: each segment in its depth's colour on the one scale (deep ones away from
    # the white marker), and the marker white where the record puts it
    rgb = pic.rgb.astype(float)
    mark_px = panel.to_pixel(mark.xy[0])
    px = panel.to_pixel(mids)
    shown = np.hypot(*(px - mark_px).T) > 8.0
    for chosen in (shown & (depths > 2.0), shown & far):
        assert chosen.sum() >= 3
        colour = rgb[px[chosen, 1].astype(int), px[chosen, 0].astype(int)]
        to_own = np.linalg.norm(colour - qc.depth_colour(depths[chosen]), axis=1)
        to_other = np.linalg.norm(colour - qc.depth_colour(np.where(depths[chosen] > 1.5, 0.0, DENT_MM)), axis=1)
        assert np.median(to_own) < 40 and (to_own < to_other).mean() > 0.8
    mx, my = mark_px.astype(int)
    assert (rgb[my - 3:my + 1, mx - 2:mx + 3].min(axis=-1) > 220).any()
    # the colour bar: 0 mm (plasma's first colour) at the bottom, DEPTH_MAX_MM at the top, labelled
    x0, y0, x1, y1 = panel.colour_bar
    xc = int((x0 + x1) / 2)
    assert rgb[int(y1) - 2, xc] == pytest.approx(qc.PLASMA_ANCHORS[0], abs=12)
    assert rgb[int(np.ceil(y0)) + 1, xc] == pytest.approx(qc.PLASMA_ANCHORS[-1], abs=12)
    assert {"0", "1", "2", "3", "4", "depth below the sphere (mm)"} <= set(panel.texts)


def test_depression_panel_letters_name_the_world_direction_of_the_screen_axes(dented):
    analysis, pic, _ = dented
    panel = _panel(pic, "collapse IIIB")
    centre = np.asarray(analysis.result.collapse["reference_center_ras_mm"])
    d = np.asarray(analysis.result.collapse["location_ras_mm"]) - centre
    e_a = np.array([d[0], d[1], 0.0]) / np.hypot(d[0], d[1])  # the test's own reading of the plane
    x0, y0, x1, y1 = panel.box
    (a0, w0), (a1, _), (_, w1) = panel.to_data([[x0, y1], [x1, y1], [x0, y0]])
    screen_right = (a1 - a0) * e_a
    screen_up = np.array([0.0, 0.0, w1 - w0])
    letters = _edge_texts(pic, panel)
    assert letters == {"left": _letter(-screen_right), "right": _letter(screen_right),
                       "top": _letter(screen_up), "bottom": _letter(-screen_up)}
    assert letters["left"] == "R"  # the lateral dent of a right hip: seen from the front


def test_intact_head_says_no_depression_above_the_detection_limit(right):
    analysis, pic = right
    result = analysis.result
    assert result.arco2019_collapse == "none"
    limit = result.collapse["detection_limit_mm"]
    panel = _panel(pic, "collapse none")
    assert panel.title.startswith(f"collapse none: no depression above\nthe {limit:.2f} mm detection limit")
    assert f"collapse: no depression above the {limit:.2f} mm detection limit" in pic.title
    sphere, depth, marks = _depression_items(panel)
    assert marks == []  # no deepest point is pointed at when there is no depression
    assert not any(label.startswith("deepest") for label in panel.legend)
    # the grid's staircase is not drawn as a depression: the outline stays within the limit
    assert np.abs(np.asarray(depth.values)).max() < limit
    # and it is drawn in the scale's shallow colours where the record puts it
    mids = np.asarray(depth.xy).mean(axis=1)
    px = panel.to_pixel(mids).astype(int)
    colour = pic.rgb[px[:, 1], px[:, 0]].astype(float)
    assert np.median(np.linalg.norm(colour - qc.depth_colour(depth.values), axis=1)) < 40
    assert np.median(np.linalg.norm(colour - qc.depth_colour(DENT_MM), axis=1)) > 150

