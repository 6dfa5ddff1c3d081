"""Head frame: sphere fit, neck axis, head isolation, mid-plane sampling, side selection.

Analytic anatomy (world RAS mm): a spherical head (r = 22 mm) on a cylindrical neck (radius
14 mm) through the head centre, a vertical shaft and a trochanter ball, voxelised by voxel
centre at 1 mm, at 0.7 x 0.7 x 3.5 mm, and on an oblique grid (rotated 25 degrees).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.geometry import frame as F
from pipeline.geometry.affine import voxel_volume_mm3

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"

C0 = np.array([60.3, -12.7, 35.1])
R0 = 22.0
RHO0 = 14.0
NECK_LEN = 45.0
N0 = np.array([0.75, -0.2, -0.63]) / np.linalg.norm([0.75, -0.2, -0.63])


# ---------------------------------------------------------------------------------- phantoms
def rotation(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(deg)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def grid_covering(lo, hi, spacing, rot=None):
    """Affine and shape of a grid (spacing, direction ``rot``) covering the world box [lo, hi]."""
    affine = np.eye(4)
    affine[:3, :3] = (np.eye(3) if rot is None else rot) @ np.diag(spacing)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = corners @ np.linalg.inv(affine[:3, :3]).T
    first, last = np.floor(ijk.min(0)) - 1, np.ceil(ijk.max(0)) + 1
    affine[:3, 3] = affine[:3, :3] @ first
    return affine, tuple(int(n) for n in last - first + 1)


def voxel_centres(affine, shape):
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ ijk).T + affine[:3, 3]


def femur_indicator(p, c=C0, side=1, shaft=True):
    n = N0 * np.array([side, 1, 1])
    d = p - c
    inside = (d**2).sum(-1) <= R0**2
    t = d @ n
    inside |= (t >= 0) & (t <= NECK_LEN) & (np.linalg.norm(d - t[:, None] * n, axis=1) <= RHO0)
    if shaft:
        e = p - (c + NECK_LEN * n)
        inside |= (np.hypot(e[:, 0], e[:, 1]) <= 15) & (e[:, 2] <= 8) & (e[:, 2] >= -30)
        inside |= ((e - np.array([5 * side, 0, 10])) ** 2).sum(-1) <= 16**2
    return inside


def head_indicator(p, c=C0, side=1):
    n = N0 * np.array([side, 1, 1])
    d = p - c
    return ((d**2).sum(-1) <= R0**2) & (d @ n <= np.sqrt(R0**2 - RHO0**2))


def femur_phantom(spacing=(1.0, 1.0, 1.0), tilt_deg=0.0, side=1, shaft=True):
    """Voxelised femur and its affine (cached: positional key so every call shares it)."""
    return _femur_phantom(tuple(spacing), float(tilt_deg), int(side), bool(shaft))


@cache
def _femur_phantom(spacing, tilt_deg, side, shaft):
    c = C0 * np.array([side, 1, 1])
    lo = c + np.array([-26.0, -30.0, -62.0]) * np.array([side, 1, 1])
    hi = c + np.array([58.0, 28.0, 26.0]) * np.array([side, 1, 1])
    affine, shape = grid_covering(
        np.minimum(lo, hi), np.maximum(lo, hi), spacing, rotation([1, 2, 3], tilt_deg)
    )
    p = voxel_centres(affine, shape)
    femur = femur_indicator(p, c, side, shaft).reshape(shape)
    return femur, affine


def isolated(spacing=(1.0, 1.0, 1.0), tilt_deg=0.0, method="neck-plane"):
    return _isolated(tuple(spacing), float(tilt_deg), method)


@cache
def _isolated(spacing, tilt_deg, method):
    femur, affine = femur_phantom(spacing, tilt_deg)
    head, info = F.isolate_head(femur, affine, method=method)
    return femur, affine, head, info


def closed_form_head_ml():
    """Ball of radius r minus the cap beyond the neck plane at sqrt(r² - ρ²) from c, mL."""
    h = R0 - np.sqrt(R0**2 - RHO0**2)
    return (4 / 3 * np.pi * R0**3 - np.pi * h**2 * (3 * R0 - h) / 3) / 1000


def head_surface_area_mm2():
    """Sphere minus the cap, plus the flat cut disc of radius ρ, mm²."""
    h = R0 - np.sqrt(R0**2 - RHO0**2)
    return 4 * np.pi * R0**2 - 2 * np.pi * R0 * h + np.pi * RHO0**2


GRIDS = [((1.0, 1.0, 1.0), 0.0), ((0.7, 0.7, 3.5), 0.0), ((1.0, 1.0, 1.0), 25.0), ((0.7, 0.7, 3.5), 25.0)]
GRID_IDS = ["1mm", "0.7x0.7x3.5", "1mm-oblique", "0.7x0.7x3.5-oblique"]


# ---------------------------------------------------------------------------------- sphere fit
def test_fit_sphere_on_points_rejects_a_plane_and_reports_residual():
    rng = np.random.default_rng(1)
    direction = rng.normal(size=(3000, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    sphere = C0 + R0 * direction[direction[:, 2] > -0.5]
    noisy = sphere + rng.normal(scale=0.3, size=sphere.shape)
    plane = np.c_[rng.uniform(-40, 40, (1500, 2)) + C0[:2], np.full(1500, C0[2] - 11.0)]
    fit = F.fit_sphere(np.vstack([noisy, plane]), inlier_mm=1.0)
    assert np.linalg.norm(fit.center - C0) < 0.1
    assert abs(fit.radius - R0) < 0.1
    assert 0.2 < fit.rms_mm < 0.4  # the 0.3 mm noise, truncated at the 1 mm band
    assert fit.n_points == len(noisy) + len(plane)
    assert len(noisy) * 0.95 < fit.n_inliers < len(noisy) + 0.1 * len(plane)


def test_fit_sphere_is_deterministic():
    femur, affine = femur_phantom((0.7, 0.7, 3.5))
    a = F.fit_head_sphere(femur, affine)
    b = F.fit_head_sphere(femur, affine)
    assert np.array_equal(a.center, b.center) and a.radius == b.radius and a.rms_mm == b.rms_mm


@pytest.mark.parametrize("shaft", [True, False], ids=["with-neck-and-shaft", "neck-only"])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.7, 3.5)], ids=["1mm", "0.7x0.7x3.5"])
def test_sphere_fit_recovers_centre_and_radius(spacing, shaft):
    femur, affine = femur_phantom(spacing, shaft=shaft)
    fit = F.fit_head_sphere(femur, affine)
    voxel = float(np.prod(spacing) ** (1 / 3))  # geometric-mean voxel size
    assert np.linalg.norm(fit.center - C0) < 0.3 * voxel
    assert abs(fit.radius - R0) < 0.2 * voxel
    assert 0 < fit.rms_mm < F.default_inlier_mm(affine)
    assert fit.n_inliers > 0.3 * fit.n_points


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.7, 3.5)], ids=["1mm", "0.7x0.7x3.5"])
def test_sphere_fit_of_a_bare_head_and_of_a_head_with_flat_cut_face(spacing):
    affine, shape = grid_covering(C0 - 30, C0 + 30, spacing)
    p = voxel_centres(affine, shape)
    voxel = float(np.prod(spacing) ** (1 / 3))
    for mask in (((p - C0) ** 2).sum(-1) <= R0**2, head_indicator(p)):
        frame, fit = F.head_frame_from_mask(mask.reshape(shape), affine, "right")
        assert np.linalg.norm(frame.center - C0) < 0.3 * voxel
        assert abs(frame.radius - R0) < 0.2 * voxel
        assert fit.rms_mm < 0.5 * max(spacing)


def test_surface_points_drop_the_field_of_view_edge():
    affine, shape = grid_covering(C0 - 30, C0 + 30, (1.0, 1.0, 1.0))
    p = voxel_centres(affine, shape)
    ball = (((p - C0) ** 2).sum(-1) <= R0**2).reshape(shape)
    cut_index = int(round(np.linalg.solve(affine[:3, :3], C0 - affine[:3, 3])[2] - 10))
    truncated = ball[:, :, cut_index:]  # the image starts 10 mm below the centre
    shifted = affine.copy()
    shifted[:3, 3] += affine[:3, 2] * cut_index
    points = F.head_surface_points(truncated, shifted)
    assert points[:, 2].min() > C0[2] - 10.6  # no cap at the image border
    fit = F.fit_head_sphere(truncated, shifted)
    assert np.linalg.norm(fit.center - C0) < 0.3 and abs(fit.radius - R0) < 0.2


def test_empty_mask_is_refused():
    with pytest.raises(InputError):
        F.head_surface_points(np.zeros((5, 5, 5), bool), np.eye(4))


# ---------------------------------------------------------------------------------- isolation
@pytest.mark.parametrize("spacing,tilt", GRIDS, ids=GRID_IDS)
def test_isolate_head_volume_matches_ball_minus_cap(spacing, tilt):
    femur, affine, head, info = isolated(spacing, tilt)
    volume_ml = head.sum() * voxel_volume_mm3(affine) / 1000
    # Discretisation bound: the voxelised surface can stand off the true one by a small fraction
    # of a voxel on average; 5% of the largest voxel edge over the head's surface area gives
    # 0.30 mL (0.7%) at 1 mm and 1.05 mL (2.4%) at 3.5 mm slices. It also covers the fitted
    # radius and waist errors that move the cut plane.
    bound_ml = head_surface_area_mm2() * 0.05 * max(spacing) / 1000
    assert abs(volume_ml - closed_form_head_ml()) < bound_ml, (volume_ml, closed_form_head_ml(), bound_ml)
    assert info["method"] == "neck-plane" and info["warnings"] == []
    assert np.degrees(np.arccos(np.dot(info["neck_axis"], N0))) < 10
    assert abs(info["waist_radius_mm"] - RHO0) < 0.5
    assert abs(info["cut_distance_mm"] - np.sqrt(R0**2 - RHO0**2)) < 0.6
    assert np.linalg.norm(np.array(info["center_ras_mm"]) - C0) < 0.3 * float(np.prod(spacing) ** (1 / 3))
    for key in ("radius_mm", "rms_mm", "n_inliers", "n_points", "waist_point_ras_mm"):
        assert info[key] is not None


def test_isolate_head_sphere_method():
    femur, affine, head, info = isolated(method="sphere")
    volume_ml = head.sum() * voxel_volume_mm3(affine) / 1000
    ball_ml = 4 / 3 * np.pi * R0**3 / 1000
    assert abs(volume_ml - ball_ml) < 4 * np.pi * R0**2 * 0.05 / 1000
    assert info["method"] == "sphere" and info["neck_axis"] is None and info["cut_distance_mm"] is None


def test_isolate_head_oblique_matches_straight():
    *_, head_s, info_s = isolated((1.0, 1.0, 1.0), 0.0)
    *_, affine_o, head_o, info_o = isolated((1.0, 1.0, 1.0), 25.0)
    assert np.linalg.norm(np.subtract(info_s["center_ras_mm"], info_o["center_ras_mm"])) < 0.3
    assert abs(info_s["radius_mm"] - info_o["radius_mm"]) < 0.2
    assert abs(head_s.sum() - head_o.sum() * voxel_volume_mm3(affine_o)) < 300  # mm³


def test_unknown_isolation_method_is_refused():
    femur, affine = femur_phantom()
    with pytest.raises(InputError):
        F.isolate_head(femur, affine, method="magic")


# ---------------------------------------------------------------------------------- frame
def test_head_frame_axes_and_coordinates():
    right = F.HeadFrame(C0, R0, "right")
    left = F.HeadFrame(C0 * [-1, 1, 1], R0, "left")
    assert np.array_equal(right.e_lat, [1, 0, 0]) and np.array_equal(left.e_lat, [-1, 0, 0])
    assert np.array_equal(right.e_ant, [0, 1, 0]) and np.array_equal(right.e_sup, [0, 0, 1])
    p = C0 + np.array([3.0, -2.0, 5.0])
    assert np.allclose(right.uvw(p), [3, -2, 5])
    assert np.allclose(left.uvw(p * [-1, 1, 1]), [3, -2, 5])  # mirror image, same frame coordinates
    assert np.allclose(right.to_world(right.uvw(p)), p)
    with pytest.raises(InputError):
        F.HeadFrame(C0, R0, "up")


@pytest.mark.parametrize("plane", ["coronal", "sagittal"])
@pytest.mark.parametrize("spacing,tilt", GRIDS[:3], ids=GRID_IDS[:3])
def test_sample_plane_cuts_the_head_through_its_centre(plane, spacing, tilt):
    affine, shape = grid_covering(C0 - 30, C0 + 30, spacing, rotation([1, 2, 3], tilt))
    ball = (((voxel_centres(affine, shape) - C0) ** 2).sum(-1) <= R0**2).reshape(shape)
    frame = F.HeadFrame(C0, R0, "right")
    sample = F.sample_plane(ball, affine, frame, plane, step_mm=0.25, half_width_mm=28)
    assert sample.image.shape == (len(sample.a_mm), len(sample.w_mm)) == sample.in_fov.shape
    assert sample.a_mm[len(sample.a_mm) // 2] == 0.0 and sample.plane == plane
    area = sample.image.sum() * 0.25**2
    assert abs(area - np.pi * R0**2) < 2 * np.pi * R0 * 0.5 * max(spacing)  # half a voxel of rim
    a, w = np.meshgrid(sample.a_mm, sample.w_mm, indexing="ij")
    assert np.hypot(a, w)[sample.image].max() < R0 + max(spacing)


def test_sample_plane_on_a_mirrored_grid():
    affine, shape = grid_covering(C0 - 30, C0 + 30, (1.0, 1.0, 1.0))
    lesion = voxel_centres(affine, shape)
    lesion = ((lesion[:, 0] - C0[0] > 5) & (((lesion - C0) ** 2).sum(-1) <= R0**2)).reshape(shape)
    mirror = np.diag([-1.0, 1, 1, 1]) @ affine  # left-handed grid, x mirrored in the world
    right = F.sample_plane(lesion, affine, F.HeadFrame(C0, R0, "right"), "coronal", 0.5, 26)
    left = F.sample_plane(lesion, mirror, F.HeadFrame(C0 * [-1, 1, 1], R0, "left"), "coronal", 0.5, 26)
    assert np.array_equal(right.image, left.image)


# ---------------------------------------------------------------------------------- sides
def test_select_side_on_a_bilateral_mask():
    c_right, c_left = C0, C0 * [-1, 1, 1]
    lo = np.array([-115.0, C0[1] - 35, C0[2] - 40])
    hi = np.array([115.0, C0[1] + 35, C0[2] + 30])
    affine, shape = grid_covering(lo, hi, (1.5, 1.5, 1.5))
    p = voxel_centres(affine, shape)
    right = femur_indicator(p, c_right, 1, shaft=False).reshape(shape)
    left = femur_indicator(p, c_left, -1, shaft=False).reshape(shape)
    both = right | left
    speck = np.zeros_like(both)
    speck[shape[0] // 2, shape[1] // 2, shape[2] // 2] = True  # a stray voxel near the midline
    assert np.array_equal(F.select_side(both | speck, affine, "right") & ~speck, right)
    assert np.array_equal(F.select_side(both, affine, "left"), left)
    assert np.array_equal(F.select_side(right, affine, "left"), right)  # one hip: returned whole


# ---------------------------------------------------------------------------------- real CT
@pytest.fixture(scope="module")
def real_ct():
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder absent: {REALDATA}")
    from pipeline.io.scan import load_labels, load_scan

    scan = load_scan(REALDATA / "example_ct.nii.gz")
    labels = REALDATA / "ct_pelvis_labels"
    return scan, {
        name: load_labels(labels / f"{name}.nii.gz", scan) > 0 for name in ("femur_right", "femur_left")
    }


def test_real_ct_right_femoral_head(real_ct, record_property):
    scan, masks = real_ct
    head, info = F.isolate_head(masks["femur_right"], scan.affine)
    volume_ml = head.sum() * voxel_volume_mm3(scan.affine) / 1000
    figures = {
        "radius_mm": round(info["radius_mm"], 2),
        "head_volume_ml": round(float(volume_ml), 2),
        "rms_mm": round(info["rms_mm"], 3),
        "center_ras_mm": [round(x, 2) for x in info["center_ras_mm"]],
        "neck_axis": [round(x, 3) for x in info["neck_axis"]],
        "waist_radius_mm": round(info["waist_radius_mm"], 2),
        "cut_distance_mm": round(info["cut_distance_mm"], 2),
        "warnings": info["warnings"],
    }
    print("real CT right femoral head:", figures)
    for key, value in figures.items():
        record_property(key, value)
    assert 20 <= info["radius_mm"] <= 27
    assert 30 <= volume_ml <= 70
    assert info["rms_mm"] < 1.5
    # the neck runs lateral from the head (RAS +x for a right hip)
    assert info["neck_axis"][0] > 0.5
    assert 10 < info["waist_radius_mm"] < info["radius_mm"]
    # the head is delimited: refitting its own surface finds the same sphere
    frame, fit = F.head_frame_from_mask(head, scan.affine, "right")
    assert np.linalg.norm(frame.center - info["center_ras_mm"]) < 1.5
    assert abs(frame.radius - info["radius_mm"]) < 1.0


def test_real_ct_select_side(real_ct):
    scan, masks = real_ct
    both = masks["femur_right"] | masks["femur_left"]
    assert np.array_equal(F.select_side(both, scan.affine, "right"), masks["femur_right"])
    assert np.array_equal(F.select_side(both, scan.affine, "left"), masks["femur_left"])


@pytest.mark.parametrize("order", [0, 1])
def test_sample_masks_gives_each_mask_what_sample_mask_gives_it_alone(order):
    from pipeline.geometry.frame import sample_mask, sample_masks

    rng = np.random.default_rng(3)
    masks = [rng.random((20, 18, 16)) > p for p in (0.3, 0.6, 0.9)]
    aff = np.array([[0.9, 0.1, 0.0, -5.0], [0.0, 1.1, 0.2, 3.0], [0.1, 0.0, 2.5, 1.0], [0, 0, 0, 1.0]])
    pts = rng.uniform(-10, 35, (40, 30, 3))
    values, in_fov = sample_masks(masks, aff, pts, order)
    for mask, got in zip(masks, values):
        alone, fov = sample_mask(mask, aff, pts, order)
        assert np.array_equal(got, alone) and np.array_equal(in_fov, fov)
    assert in_fov.any() and not in_fov.all()


def test_column_bounds_and_within_grid_equal_the_numpy_reductions():
    from pipeline.geometry.affine import column_bounds, within_grid

    rng = np.random.default_rng(4)
    pts = rng.normal(0, 30, (5000, 3))
    lo, hi = column_bounds(pts)
    assert np.array_equal(lo, pts.min(axis=0)) and np.array_equal(hi, pts.max(axis=0))
    idx = rng.integers(-3, 25, (40, 50, 3))
    shape = (20, 22, 18)
    assert np.array_equal(within_grid(idx, shape), np.all((idx >= 0) & (idx < np.array(shape)), axis=-1))
