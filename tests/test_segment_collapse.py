"""Automatic segmentation of a collapsed head (issue 15): the head follows a dented dome.

The automatic head is a sphere fitted to the marrow surface cut by the neck plane; over the
weight-bearing dome it follows the outer face of the subchondral cortex where the image shows
it inside the sphere by more than the collapse detection limit (``pipeline.segment.femur.dome_surface``).
Phantoms (``pipeline.synthetic.phantom``, ``HipState.dent_mm``) on 0.7 x 0.7 x 3.5 mm coronal
slices: a 3.5 mm dent is measured within the 0.6 mm thick-slice target and called IIIB, an
intact head keeps its sphere exactly. docs/method.md section 6.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.io.scan import Scan
from pipeline.segment import femur as F
from pipeline.segment import segment_hip
from pipeline.synthetic import phantom as P

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import collapse_validation as V  # noqa: E402

_CACHE: dict = {}


def _scan(depth: float):
    """A coronal 0.7 x 0.7 x 3.5 mm scan of the collapse validation's right hip with a dent of
    ``depth`` mm over the lesion, and its truth."""
    if depth not in _CACHE:
        acq = P.Acquisition(spacing_mm=(0.7, 0.7, 3.5), fov_mm=(116.0, 116.0, 84.0), centre_ras=(20.0, 0.0, -20.0),
                            plane="coronal")
        r = P.render_scan(V.subject(), P.Visit(right=P.HipState(dent_mm=depth)), acq, ("right",), seed=7)
        scan = Scan.from_source(r.image.astype(np.float32), r.affine)
        _CACHE[depth] = (scan, r.truth["right"])
    return _CACHE[depth]


def test_first_rising_edge_is_the_outer_face_of_the_outermost_dark_dip():
    radii = np.arange(-7.0, 1.2, 0.1)

    def profile(face):  # lesion 0.3 | cortex 0.04 (1.1 mm) | fluid 0.23 | cartilage 0.52 from 0
        p = np.where(radii < face - 1.1, 0.3, np.where(radii < face, 0.04, np.where(radii < 0.0, 0.23, 0.52)))
        from scipy.ndimage import gaussian_filter1d

        return gaussian_filter1d(p, 2.0)

    edges = F.first_rising_edge(np.stack([profile(0.0), profile(-3.0)]), radii, 0.15, 0.08)
    assert abs(edges[0] - 0.0) < 0.15
    assert abs(edges[1] + 3.0) < 0.15
    flat = F.first_rising_edge(np.full((1, len(radii)), 0.9), radii, 0.15, 0.08)
    assert np.isnan(flat[0])


def test_radial_surface_without_depression_keeps_the_sphere_mask():
    aff = np.diag([0.7, 0.7, 0.7, 1.0])
    shape = (80, 80, 80)
    centre = np.array([28.0, 28.0, 28.0])
    dirs = F.fibonacci_directions(500)
    surface = F.RadialSurface(centre, dirs, np.full(len(dirs), 22.0), 22.0)
    n = np.array([0.7, 0.0, -0.7])
    plain = F.head_fraction_mask(shape, aff, centre, 22.0, n, 15.0)
    assert np.array_equal(F.head_fraction_mask(shape, aff, centre, 22.0, n, 15.0, surface=surface), plain)
    # a dent of 3 mm straight up (a flat cap) removes voxels only above the plane
    depth = np.maximum(22.0 - 19.0 / np.maximum(dirs[:, 2], 1e-6), 0.0)
    dented = F.RadialSurface(centre, dirs, 22.0 - depth, 22.0)
    cut = F.head_fraction_mask(shape, aff, centre, 22.0, n, 15.0, surface=dented)
    lost = plain & ~cut
    assert lost.any() and not (cut & ~plain).any()
    assert np.argwhere(lost)[:, 2].min() * 0.7 >= centre[2] + 19.0 - 2.0  # the rim interpolates between directions
    assert lost.sum() * 0.7**3 == pytest.approx(np.pi * 9 * (66 - 3) / 3, rel=0.1)  # the cap


def test_intact_phantom_head_keeps_its_sphere():
    scan, _ = _scan(0.0)
    res = segment_hip(scan, "right", Settings())
    assert res.confidence["dome_surface"]["accepted_directions"] == 0
    ball = segment_hip(scan, "right", Settings(segmentation={"dome_surface": False}))
    assert np.array_equal(res.head, ball.head) and np.array_equal(res.lesion, ball.lesion)


def test_dented_phantom_head_follows_the_dent_within_the_thick_slice_target():
    scan, truth = _scan(3.5)
    res = segment_hip(scan, "right", Settings())
    info = res.confidence["dome_surface"]
    assert info["accepted_directions"] > 0
    out = V.measure(res.head, scan.affine, truth)
    assert abs(out["head_depression_mm"] - 3.5) <= V.TARGET_ERROR_MM["thick"]
    assert out["arco2019_collapse"] == "IIIB"
    # the lesion lies inside the clipped head
    assert not (res.lesion & ~res.head).any()


def test_sample_hip_onfh06_collapses_automatically_and_its_baseline_does_not():
    import json

    from pipeline.io.scan import load_scan

    sample = ROOT / "sample_data"
    for visit, dent in (("m12", 2.8), ("m00", 0.0)):
        scan = load_scan(sample / f"ONFH06_{visit}_cor.nii.gz")
        truth = json.loads((sample / f"ONFH06_{visit}_cor_truth.json").read_text())
        res = segment_hip(scan, "right", Settings())
        out = V.measure(res.head, scan.affine, truth)
        if dent:
            assert abs(out["head_depression_mm"] - dent) <= V.TARGET_ERROR_MM["thick"]
            assert out["arco2019_collapse"] == "IIIB"
        else:
            assert res.confidence["dome_surface"]["accepted_directions"] == 0
            assert out["arco2019_collapse"] == "none"


def test_dented_phantom_on_sagittal_slices_follows_the_dent():
    """The collapse validation's sagittal grid (0.7 x 0.7 x 3.5 mm), a 2.5 mm dent, one rendered
    scan as ``scripts/collapse_validation.py`` makes it: the dent's axis runs near the slice axis,
    where the dip's inward rise is asked in proportion to the voxel's extent along the line
    (``dome_surface``). The automatic depression lies within the thick-slice target of the truth
    and is a collapse. 2.5 mm lies 0.5 mm from the 2 mm IIIA/IIIB cut, inside the margin where the
    stage is not held to the truth (docs/method.md section 6): it measures about 2.0 mm, at the cut."""
    grid, depth = "sagittal 0.7x0.7x3.5", 2.5
    seed = [V.AUTO_SEED, list(V.GRIDS).index(grid), V.DEPTHS.index(depth)]
    scan, head_t, lesion_t, truth = V.render_dent_scan(V.subject(), depth, grid, seed)
    auto = V.auto_measure(scan, truth, head_t, lesion_t)
    assert auto["dice_head"] > 0.97
    assert abs(auto["depression_mm"] - depth) <= V.TARGET_ERROR_MM["thick"], auto
    assert auto["stage"] in ("IIIA", "IIIB"), auto


def test_broad_dent_on_coronal_slices_keeps_the_intact_edge_offset():
    """The collapse validation's coronal grid (0.7 x 0.7 x 3.5 mm), a 5 mm dent against the intact
    head, rendered as ``scripts/collapse_validation.py`` makes them. The sphere radius' offset from
    the cortical edge is read on the intact surface only (lines deeper than the detection limit
    are left out of its median, and once the dent is accepted the median is read again clear of
    it): with the dent's lines in it, it rose by about 0.3 mm and every depth shrank by as much
    (the automatic depression was 4.19 mm, 0.81 mm short; now about 4.57). The offset stays within
    0.15 mm of the intact head's and the depression within the thick-slice target."""
    grid = "coronal 0.7x0.7x3.5"
    offsets = {}
    for depth in (0.0, 5.0):
        seed = [V.AUTO_SEED, list(V.GRIDS).index(grid), V.DEPTHS.index(depth)]
        scan, head_t, lesion_t, truth = V.render_dent_scan(V.subject(), depth, grid, seed)
        res = segment_hip(scan, "right", Settings())
        offsets[depth] = res.confidence["dome_surface"]["edge_offset_mm"]
        if depth:
            out = V.measure(res.head, scan.affine, truth)
            assert abs(out["head_depression_mm"] - depth) <= V.TARGET_ERROR_MM["thick"], out["head_depression_mm"]
            assert out["arco2019_collapse"] == "IIIB"
        else:
            assert res.confidence["dome_surface"]["accepted_directions"] == 0
    assert abs(offsets[5.0] - offsets[0.0]) < 0.15, offsets


def test_narrow_crater_floor_is_followed_not_averaged_away():
    """A dent narrower than the validation's flat cut: a spherical crater of radius 8 mm pressed
    3.5 mm into the head (``HipState.dent_radius_mm``; about 12 mm across) on 1 mm voxels, rendered
    as ``scripts/collapse_validation.py`` renders its scans. The Gaussian average of the edge
    depths decides where the dent is; the surface followed there is the median depth before that
    average, since the measurement averages the surface once more: averaged twice, the crater's
    floor came out 0.35 mm shallower than the truth labels of the same scan give (2.97 against 3.32
    mm), beyond the 1 mm voxel target of 0.3 mm; followed, about 0.2 mm."""
    grid, depth, shape = "1 mm isotropic", 3.5, {"dent_radius_mm": 8.0}
    scan, head_t, lesion_t, truth = V.render_dent_scan(V.subject(), depth, grid, [77, 35], shape)
    assert truth["dent"]["crater_radius_mm"] == 8.0
    auto = V.auto_measure(scan, truth, head_t, lesion_t)
    labels = V.measure(head_t, scan.affine, truth)
    assert auto["stage"] == labels["arco2019_collapse"] == "IIIB"
    assert abs(auto["depression_mm"] - labels["head_depression_mm"]) <= V.TARGET_ERROR_MM["fine"], \
        (auto["depression_mm"], labels["head_depression_mm"])


def test_a_dome_the_slices_do_not_resolve_is_sent_to_review():
    """Axial 3 mm slices run across the dome's top: few radial lines there find the cortex (about
    0.3 of those within 45 degrees of superior), so a 2.5 mm dent over the lesion is missed and the
    head reads "none" (docs/method.md section 6). The scan says so: a flag, status "review". The
    coronal scan of the same dent resolves its dome (about 0.8) and follows the dent unflagged by it."""
    shares = {}
    for grid in ("axial 0.9x0.9x3", "coronal 0.7x0.7x3.5"):
        seed = [V.AUTO_SEED, list(V.GRIDS).index(grid), V.DEPTHS.index(2.5)]
        scan, head_t, lesion_t, truth = V.render_dent_scan(V.subject(), 2.5, grid, seed)
        res = segment_hip(scan, "right", Settings())
        shares[grid] = res.confidence["dome_surface"]["top_edges_found_share"]
        flagged = [f for f in res.confidence["flags"] if f.startswith("dome surface found along only")]
        stage = V.measure(res.head, scan.affine, truth)["arco2019_collapse"]
        if grid.startswith("axial"):
            assert stage == "none"  # the blind spot itself
            assert flagged and res.confidence["status"] == "review"
        else:
            assert stage == "IIIB" and not flagged
    assert shares["axial 0.9x0.9x3"] < Settings().segmentation.dome_min_top_share < shares["coronal 0.7x0.7x3.5"]
