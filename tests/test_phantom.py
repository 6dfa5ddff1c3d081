"""Tests of the synthetic hip-MRI phantom and the committed sample cohort.

Small, coarse phantoms are rendered in-test (a ~70 mm field of view around one head), so the
whole module runs in a few seconds.

Discretisation bound used for label-map volumes
------------------------------------------------
A voxel is labelled when at least half of it lies inside the set. Only voxels cut by the
surface ("partial" voxels, N of them) can be wrong, each by at most half a voxel, so
``|V_voxels - V_continuous| <= 0.5 * N * v`` always holds (v = voxel volume). That bound is
loose (several %). Two parts make up the real error:

* in-plane, the signed errors of partial voxels are close to independent and uniform on
  [-0.5, 0.5] voxel: their sum has standard deviation ``v * sqrt(N / 12)``;
* along a thick slice axis they are not: in the first and last slice through the set (the
  caps at the anterior and posterior poles for coronal slices) the partial voxels all have
  about the same fraction, so the cap is kept or dropped as a whole. That correlated part is
  at most half of the set's volume in those two end slices (``*_end_slices_ml`` in the truth).

The tests assert ``4 * v * sqrt(N / 12) + 0.5 * end_slices + 0.3 % of V`` (the last term covers
estimating each voxel's fraction on its sub-grid), and the strict bound.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.io.scan import Scan
from pipeline.synthetic import phantom as P

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"


# ----------------------------------------------------------------------------------------------
# fixtures: one subject with a right lesion and a healthy left hip
# ----------------------------------------------------------------------------------------------
def _params(fovea=False):
    les = P.LesionParams(mitchell="C", nf_pct=20.0, direction=(0.0, 0.25, 0.95), shape=(1.0, 0.75, 0.85), seed=3)
    right = P.HipParams(side="right", center=(1.0, -2.0, 0.5), radius=23.0, fovea=fovea, seed=1, lesion=les)
    left = P.HipParams(side="left", center=(1.0 - 182.0, -1.0, 0.0), radius=22.5, seed=2)
    body = P.BodyParams(midline_x=1.0 - 91.0, pelvis_y=-2.0, pelvis_z=0.5, seed=4)
    return P.SubjectParams("TEST", body, right, left)


@pytest.fixture(scope="module")
def subject():
    return P.build_subject(_params())


BASE = P.Visit(0.0)
FOLLOW = P.Visit(
    3.0,
    rotation_deg=(3.0, -4.0, 5.0),
    translation_mm=(4.0, -3.0, 2.5),
    right=P.HipState(regeneration_pct=40.0, track=True),
)


def _acq(subject, visit=BASE, side="right", spacing=(1.0, 1.0, 3.0), fov=(72.0, 72.0, 60.0), storage="LIP", **kw):
    c = visit.rotation @ subject.hips[side].c + visit.translation
    kw.setdefault("render_ss", (1, 1, max(1, int(round(spacing[2] / spacing[0])))))
    kw.setdefault("label_ss", (3, 3, 9) if spacing[2] > spacing[0] else (4, 4, 4))
    return P.Acquisition(spacing_mm=spacing, fov_mm=fov, centre_ras=tuple(c), storage=storage, **kw)


@pytest.fixture(scope="module")
def thick(subject):
    """Baseline, coronal 1 x 1 x 3 mm."""
    return P.render_scan(subject, BASE, _acq(subject), ["right"], seed=[1, 2], truth_h=0.4)


@pytest.fixture(scope="module")
def follow(subject):
    """3-month follow-up with motion and the drill track, 1 mm isotropic."""
    acq = _acq(subject, FOLLOW, spacing=(1.0, 1.0, 1.0), fov=(70.0, 70.0, 64.0), storage="RAS")
    return P.render_scan(subject, FOLLOW, acq, ["right"], seed=[1, 3], baseline=BASE, truth_h=0.4)


def _world_centres(rs: P.RenderedScan) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in rs.image.shape], indexing="ij"), -1).reshape(-1, 3)
    return ijk @ rs.affine[:3, :3].T + rs.affine[:3, 3]


# ----------------------------------------------------------------------------------------------
# volumes
# ----------------------------------------------------------------------------------------------
def _bounds(vv: dict, which: str, volume_ml: float):
    """(expected-error bound, strict bound) in mL for 'head' or 'lesion'; see the module doc."""
    n, v = vv[f"{which}_partial_voxels"], vv["voxel_volume_ml"]
    strict = 0.5 * n * v
    expected = 4.0 * v * math.sqrt(n / 12.0) + 0.5 * vv[f"{which}_end_slices_ml"] + 0.003 * volume_ml
    return expected, strict


@pytest.mark.parametrize("which", ["thick", "follow"])
def test_label_volumes_agree_with_continuous_truth(which, request):
    rs = request.getfixturevalue(which)
    t = rs.truth["right"]
    vv = t["voxel_volumes"]
    for part in ("head", "lesion"):
        key = f"{part}_volume_ml"
        expected, strict = _bounds(vv, part, t[key])
        err = abs(vv[key] - t[key])
        assert err <= strict
        assert err <= expected, f"{which} {key}: voxel {vv[key]:.3f} vs continuous {t[key]:.3f} (bound {expected:.3f})"
        # the fractions themselves integrate to the continuous volume
        assert vv[f"{part}_fraction_sum_ml"] == pytest.approx(t[key], rel=0.003, abs=0.01)


def test_continuous_head_volume_is_the_cut_ball(subject):
    """Analytic head volume vs a Monte Carlo estimate of femur ∩ ball ∩ half-space."""
    hip = subject.hips["right"]
    rng = np.random.default_rng(0)
    n = 400_000
    pts = rng.uniform(-hip.r, hip.r, size=(3, n))
    u, v, w = pts
    rho = np.sqrt(u * u + v * v + w * w)
    t = u * hip.n[0] + v * hip.n[1] + w * hip.n[2]
    by_femur = (hip.femur_sdf(u, v, w) <= 0) & (rho <= hip.r) & (t <= hip.h)
    by_head = hip.head_sdf(u, v, w) <= 0
    assert np.array_equal(by_femur, by_head)  # the analytic head set is the docs/method.md definition
    mc = by_head.mean() * (2 * hip.r) ** 3 / 1000.0
    se = (2 * hip.r) ** 3 / 1000.0 * math.sqrt(by_head.mean() * (1 - by_head.mean()) / n)
    assert abs(mc - P.head_volume_ml(hip)) < 4 * se


@pytest.mark.parametrize("crater_mm", [None, 8.0])
def test_dent_truth_is_the_removed_cap_or_lens(subject, crater_mm):
    """A collapse dent (``HipState.dent_mm``, flat or a spherical crater of ``dent_radius_mm``): the
    head set loses exactly the truth's missing volume (Monte Carlo over the dent's box), its
    deepest point lies on the head surface at r - h along the axis, and the head volume in the
    truth drops by as much."""
    hip = subject.hips["right"]
    h = 2.5
    state = P.HipState(dent_mm=h, dent_direction=(0.3, 0.2, 0.93), dent_radius_mm=crater_mm)
    dent = hip.dent(state)
    a = dent[0]
    # the deepest point: on the dented surface, inside the intact ball by h
    tip = (hip.r - h) * a
    assert hip.head_sdf(*(tip - 0.01 * a), dent=dent) < 0 < hip.head_sdf(*(tip + 0.01 * a), dent=dent)
    # the removed volume, sampled in a box around the dent's axis
    rng = np.random.default_rng(1)
    n = 400_000
    half = 12.0
    e1 = np.cross(a, [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(a, e1)
    s = rng.uniform(-half, half, size=(2, n))
    t = rng.uniform(hip.r - h - 0.5, hip.r + 0.5, size=n)
    pts = t[None] * a[:, None] + s[0][None] * e1[:, None] + s[1][None] * e2[:, None]
    gone = (hip.head_sdf(*pts) <= 0) & (hip.head_sdf(*pts, dent=dent) > 0)
    box_ml = (2 * half) ** 2 * (h + 1.0) / 1000.0
    mc = gone.mean() * box_ml
    se = box_ml * math.sqrt(gone.mean() * (1 - gone.mean()) / n)
    expected = P.dent_missing_volume_ml(hip.r, h, crater_mm)
    assert abs(mc - expected) < 4 * se
    if crater_mm is not None:  # a crater is narrower than the flat cut of the same depth
        assert expected < 0.5 * P.dent_missing_volume_ml(hip.r, h)
    truth = P.hip_truth(subject, "right", P.Visit(right=state), h=1.0)
    intact = P.hip_truth(subject, "right", P.Visit(), h=1.0)
    assert truth["head_volume_ml"] == pytest.approx(intact["head_volume_ml"] - expected, abs=1e-9)
    assert truth["dent"]["missing_volume_ml"] == pytest.approx(expected)
    assert truth["dent"].get("crater_radius_mm") == crater_mm


@pytest.mark.parametrize("follows", [False, True])
def test_dent_cartilage_on_the_sphere_or_on_the_dented_bone(subject, follows):
    """``HipState.dent_cartilage_follows``: along the dent's axis the articular cartilage lies on
    the sphere over a dent filled with soft tissue, or on the dented bone with joint fluid above
    it, up to where the cartilage was."""
    hip = subject.hips["right"]
    h, cart = 2.5, hip.params.cartilage_mm
    state = P.HipState(dent_mm=h, dent_cartilage_follows=follows)
    a = hip.dent(state)[0]
    ct = hip.contrast

    def signal(s):  # noise-free T1 signal at distance s along the axis from the head centre
        x, y, z = (hip.to_body(s * a)[:, None]).astype(np.float32)
        return float(subject.render_points(x, y, z, P.Visit(right=state))[0][0])

    bone = hip.r - h
    cart_at = bone if follows else hip.r
    gap = (bone + cart + 0.3, hip.r + cart - 0.3) if follows else (bone + 0.3, hip.r - 0.3)
    for s in np.linspace(cart_at + 0.3, cart_at + cart - 0.3, 4):
        assert signal(s) == ct.cartilage, s
    for s in np.linspace(*gap, 3):
        assert signal(s) == (ct.joint_fluid if follows else ct.muscle), s
    assert signal(bone - 0.3) != ct.cartilage  # bone (cortex) below the dented surface


def test_fovea_is_carved_from_head_truth():
    sub = P.build_subject(_params(fovea=True))
    hip = sub.hips["right"]
    rng = np.random.default_rng(1)
    u, v, w = rng.uniform(-hip.r, hip.r, size=(3, 300_000))
    rho = np.sqrt(u * u + v * v + w * w)
    t = u * hip.n[0] + v * hip.n[1] + w * hip.n[2]
    by_femur = (hip.femur_sdf(u, v, w) <= 0) & (rho <= hip.r) & (t <= hip.h)
    assert np.array_equal(by_femur, hip.head_sdf(u, v, w) <= 0)
    plain = P.build_subject(_params()).hips["right"]
    assert 0.05 < P.head_volume_ml(plain) - P.head_volume_ml(hip) < 0.6  # a ~5 mm pit


def test_nf_is_lesion_over_head(thick, follow):
    for rs in (thick, follow):
        t = rs.truth["right"]
        assert t["necrotic_fraction_pct"] == pytest.approx(100 * t["lesion_volume_ml"] / t["head_volume_ml"], rel=1e-12)
        vv = t["voxel_volumes"]
        assert vv["necrotic_fraction_pct"] == pytest.approx(
            100 * vv["lesion_volume_ml"] / vv["head_volume_ml"], rel=1e-12
        )


def test_zone_volumes_add_up(thick):
    t = thick.truth["right"]
    z = t["zones_ml"]
    lv = t["lesion_volume_ml"]
    assert z["A"] + z["B"] + z["C1"] + z["C2"] == pytest.approx(lv, abs=1e-9)
    assert z["anterior"] + z["central"] + z["posterior"] == pytest.approx(lv, abs=1e-9)
    combos = sum(v for k, v in z.items() if "/" in k)
    assert combos == pytest.approx(lv, abs=1e-9)
    assert t["jic_type"] in ("A", "B", "C1", "C2") and t["arco2021_type"] in (1, 2, 3)


# ----------------------------------------------------------------------------------------------
# lesion geometry
# ----------------------------------------------------------------------------------------------
def test_lesion_lies_inside_head(subject, thick):
    hip = subject.hips["right"]
    rng = np.random.default_rng(2)
    u, v, w = rng.uniform(-hip.r, hip.r, size=(3, 300_000))
    les = hip.lesion_set_sdf(u, v, w, P.HipState(), 0.0) <= 0
    assert les.sum() > 1000
    assert np.all(hip.head_sdf(u[les], v[les], w[les]) <= 0)
    lab = thick.labels
    # every lesion voxel is a head voxel in the stored label map (2 counts as head)
    centres = _world_centres(thick)[(lab == 2).ravel()]
    x, y, z = centres.T
    d = hip.head_sdf(hip.sigma * (x - hip.c[0]), y - hip.c[1], z - hip.c[2])
    half_diag = 0.5 * math.sqrt(1 + 1 + 9)
    assert np.all(d <= half_diag)


def test_lesion_sits_under_superior_surface(thick):
    t = thick.truth["right"]
    assert t["centroid_latitude_deg"] > 40.0  # weight-bearing dome


def test_drill_track_voxels_are_not_lesion(subject, follow):
    hip = subject.hips["right"]
    body = (_world_centres(follow) - FOLLOW.translation) @ FOLLOW.rotation
    u = hip.sigma * (body[:, 0] - hip.c[0])
    v = body[:, 1] - hip.c[1]
    w = body[:, 2] - hip.c[2]
    deep_in_track = hip.track_distance(u, v, w) < -0.9  # whole 1 mm voxel inside the tube
    chg = subject.change_mm("right", FOLLOW.right)
    in_lesion_region = hip.lesion_distance(u, v, w, chg, FOLLOW.right.preference) < -1.0
    in_head = hip.head_sdf(u, v, w) < -1.0
    probe = deep_in_track & in_lesion_region & in_head
    assert probe.sum() >= 5  # the track does reach into the lesion
    lab = follow.labels.ravel()
    assert np.all(lab[probe] == 1)  # head, not lesion
    assert follow.truth["right"]["drill_track"]["diameter_mm"] == pytest.approx(3.5)


def test_regeneration_truth(follow):
    t = follow.truth["right"]
    assert t["regeneration_pct"] == pytest.approx(40.0, abs=1.5)
    assert t["new_ml"] == pytest.approx(0.0, abs=1e-9)  # shrinkage only
    assert t["regenerated_ml"] + t["persistent_ml"] == pytest.approx(t["baseline_lesion_volume_ml"], abs=1e-9)
    assert t["persistent_ml"] == pytest.approx(t["lesion_volume_ml"], abs=1e-9)


# ----------------------------------------------------------------------------------------------
# geometry: motion, sides, storage
# ----------------------------------------------------------------------------------------------
def test_motion_maps_baseline_centre_onto_followup(subject, thick, follow):
    rot, tr = FOLLOW.rotation, FOLLOW.translation
    c0 = np.array(thick.truth["right"]["head_center_ras_mm"])
    c1 = np.array(follow.truth["right"]["head_center_ras_mm"])
    assert np.allclose(rot @ c0 + tr, c1, atol=1e-9)
    e0 = np.array(thick.truth["right"]["acetabular_edge_ras_mm"])
    assert np.allclose(rot @ e0 + tr, follow.truth["right"]["acetabular_edge_ras_mm"], atol=1e-9)
    assert P.rotation_angle_deg(rot) <= 8.0 and np.linalg.norm(tr) <= 8.0
    # the rendered voxels moved too: head-label centroids follow the same transform
    m0 = _world_centres(thick)[(thick.labels >= 1).ravel()].mean(axis=0)
    m1 = _world_centres(follow)[(follow.labels >= 1).ravel()].mean(axis=0)
    assert np.linalg.norm(rot @ m0 + tr - m1) < 1.0


def test_bilateral_right_head_has_greater_x(subject):
    b = subject.body
    acq = P.Acquisition(
        spacing_mm=(2.0, 2.0, 4.0),
        fov_mm=(300.0, 130.0, 60.0),  # (x, z, y) for a coronal scan
        centre_ras=(b.midline_x, b.pelvis_y, b.pelvis_z - 25.0),
        storage="LSP",
        render_ss=(1, 1, 2),
        label_ss=(2, 2, 4),
        label_ss_bone=(1, 1, 2),
    )
    rs = P.render_scan(subject, BASE, acq, ["right", "left"], seed=5, truth_h=0.5)
    xyz = _world_centres(rs)
    heads = (rs.labels >= 1).ravel()
    right_side = xyz[:, 0] > b.midline_x
    xr = xyz[heads & right_side, 0].mean()
    xl = xyz[heads & ~right_side, 0].mean()
    assert xr > xl
    assert rs.truth["right"]["head_center_ras_mm"][0] > rs.truth["left"]["head_center_ras_mm"][0]
    assert rs.truth["left"]["lesion_volume_ml"] == 0.0 and rs.truth["left"]["jic_type"] is None
    # each side's femur mask lies on its own side of the midline
    fr, fl = rs.femur["right"].ravel() > 0, rs.femur["left"].ravel() > 0
    assert np.all(xyz[fr, 0] > b.midline_x) and np.all(xyz[fl, 0] < b.midline_x)
    # the shaft (femur below the head) lies lateral to the head: greater x for the right hip
    for side, sg, mask in (("right", 1.0, fr), ("left", -1.0, fl)):
        c = np.array(rs.truth[side]["head_center_ras_mm"])
        low = mask & (xyz[:, 2] < c[2] - 40.0)
        assert low.sum() > 20
        assert sg * (xyz[low, 0].mean() - c[0]) > 15.0


def test_left_hip_is_mirror_of_right():
    p = _params()
    les = p.right.lesion
    mirrored = P.SubjectParams(
        "M",
        p.body,
        P.HipParams(side="right", center=p.right.center, radius=23.0, seed=1),
        P.HipParams(
            side="left",
            center=(p.right.center[0] - 182.0, p.right.center[1], p.right.center[2]),
            radius=23.0,
            seed=1,
            lesion=les,
        ),
    )
    a = P.build_subject(p)
    m = P.build_subject(mirrored)
    ta = P.hip_truth(a, "right", BASE, h=0.5)
    tm = P.hip_truth(m, "left", BASE, h=0.5)
    assert tm["lesion_volume_ml"] == pytest.approx(ta["lesion_volume_ml"], rel=1e-9)
    assert tm["jic_type"] == ta["jic_type"]
    assert tm["neck_axis_ras"][0] == pytest.approx(-ta["neck_axis_ras"][0])
    assert tm["neck_axis_ras"][0] < 0  # left neck runs toward -x (lateral)


def test_storage_order_does_not_change_the_canonical_scan(subject):
    a = P.render_scan(subject, BASE, _acq(subject, storage="LIP", fov=(40.0, 40.0, 24.0)), [], seed=9)
    b = P.render_scan(subject, BASE, _acq(subject, storage="SPR", fov=(40.0, 40.0, 24.0)), [], seed=9)
    assert a.image.shape != b.image.shape or not np.array_equal(a.affine, b.affine)
    sa, sb = Scan.from_source(a.image, a.affine), Scan.from_source(b.image, b.affine)
    assert np.array_equal(sa.data, sb.data)
    assert np.allclose(sa.affine, sb.affine)


def test_oblique_geometry_is_exact_in_affine(subject):
    acq = _acq(subject, fov=(30.0, 30.0, 12.0), oblique_deg=(6.0, 0.0, 15.0))
    aff, shape = P.acquisition_grid(acq)
    rs = P.render_scan(subject, BASE, acq, [], seed=1)
    direction = rs.affine[:3, :3] / np.sqrt((rs.affine[:3, :3] ** 2).sum(axis=0))
    assert np.allclose(direction.T @ direction, np.eye(3), atol=1e-12)
    # the acquisition's column direction is the rotated x axis
    assert np.allclose(aff[:3, 0] / 1.0, P.rotation_matrix(6.0, 0.0, 15.0)[:, 0], atol=1e-12)


# ----------------------------------------------------------------------------------------------
# determinism, image properties
# ----------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_arrays(subject):
    acq = _acq(subject, fov=(40.0, 40.0, 24.0))
    a = P.render_scan(subject, BASE, acq, ["right"], seed=[7, 1], truth_h=0.5)
    b = P.render_scan(P.build_subject(_params()), BASE, acq, ["right"], seed=[7, 1], truth_h=0.5)
    c = P.render_scan(subject, BASE, acq, ["right"], seed=[7, 2], truth_h=0.5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.femur["right"], b.femur["right"])
    assert a.truth["right"] == b.truth["right"]
    assert not np.array_equal(a.image, c.image)  # the seed drives the noise


def test_nifti_writer_is_byte_deterministic(tmp_path, thick):
    from pipeline.synthetic.sampledata import _write_nifti

    _write_nifti(tmp_path / "a.nii.gz", thick.image, thick.affine, "x")
    _write_nifti(tmp_path / "b.nii.gz", thick.image, thick.affine, "x")
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    import nibabel as nib

    img = nib.load(tmp_path / "a.nii.gz")
    assert img.get_data_dtype() == np.int16
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert np.allclose(img.affine, thick.affine, atol=1e-4)


def test_t1_contrast(thick, subject):
    """Marrow bright, lesion core (class C) dark, cortex darker still; noise a few % of marrow."""
    rs = thick
    img = rs.image.astype(float)
    lab = rs.labels
    head_only = img[lab == 1]
    lesion = img[lab == 2]
    assert 750 < np.median(head_only) < 1100
    assert np.median(lesion) < 0.5 * np.median(head_only)
    assert rs.image.dtype == np.int16
    assert 0 <= rs.image.min() and rs.image.max() < 1600


# ----------------------------------------------------------------------------------------------
# the committed cohort
# ----------------------------------------------------------------------------------------------
MANIFEST_COLUMNS = [
    "subject",
    "side",
    "timepoint_months",
    "image",
    "labels",
    "femur_mask",
    "acetabular_edge",
    "outcome",
    "reader",
    "repeat",
]


def _manifest_rows():
    with (SAMPLE / "manifest.csv").open(newline="") as fh:
        rd = csv.DictReader(fh)
        assert rd.fieldnames == MANIFEST_COLUMNS
        return list(rd)


def test_committed_manifest_references_existing_files():
    rows = _manifest_rows()
    assert len(rows) >= 9
    for row in rows:
        for col in ("image", "labels", "femur_mask"):
            assert (SAMPLE / row[col]).is_file(), row[col]
        edge = [float(v) for v in row["acetabular_edge"].split(",")]
        assert len(edge) == 3
        assert row["outcome"] in ("healed", "progressed", "arthroplasty", "")
        assert row["side"] in ("right", "left")
    sides = {(r["image"], r["side"]) for r in rows}
    bilateral = [img for img, _ in sides if sum(1 for i, _ in sides if i == img) == 2]
    assert bilateral, "one image is listed once per side"


def test_committed_truth_is_consistent():
    cohort = json.loads((SAMPLE / "truth.json").read_text())
    scans = cohort["scans"]
    assert {(s["files"]["image"], s["side"]) for s in scans} == {(r["image"], r["side"]) for r in _manifest_rows()}
    healthy = 0
    for s in scans:
        assert (SAMPLE / s["files"]["truth"]).is_file() and (SAMPLE / s["files"]["hipbone_mask"]).is_file()
        assert 22.0 <= s["head_radius_mm"] <= 25.0 and 25.0 <= s["ce_angle_deg"] <= 40.0
        assert abs(np.linalg.norm(s["neck_axis_ras"]) - 1) < 1e-5
        assert s["necrotic_fraction_pct"] == pytest.approx(100 * s["lesion_volume_ml"] / s["head_volume_ml"], abs=1e-4)
        vv = s["voxel_volumes"]
        for part in ("head", "lesion"):
            key = f"{part}_volume_ml"
            expected, _ = _bounds(vv, part, s[key])
            assert abs(vv[key] - s[key]) <= expected + 1e-6, (s["scan"], key)
        healthy += s["lesion_volume_ml"] == 0
        if s["timepoint_months"] > 0:
            m = s["motion"]
            assert m["rotation_deg"] <= 8.0 + 1e-9 and np.linalg.norm(m["translation_mm"]) <= 8.0
            base = next(b for b in scans if b["subject"] == s["subject"] and b["timepoint_months"] == 0)
            rot, tr = np.array(m["rotation_matrix"]), np.array(m["translation_mm"])
            assert np.allclose(rot @ base["head_center_ras_mm"] + tr, s["head_center_ras_mm"], atol=1e-4)
            assert s["drill_track"] is not None and s["regeneration_pct"] is not None
    assert healthy >= 1
    outcomes = {s["outcome"] for s in scans}
    assert {"healed", "progressed", "arthroplasty"} <= outcomes
    grown = [s for s in scans if s.get("regeneration_pct") is not None and s["regeneration_pct"] < 0]
    assert grown, "a progressed (growing) lesion"


def test_random_subjects_for_validation_sets():
    """The same code makes other cohorts: random anatomy, harsh noise/bias, 5 mm slices."""
    rng = np.random.default_rng(123)
    params = P.random_subject_params(
        rng, "V1", lesion_sides=("right",), nf_range=(2.0, 45.0), fovea_prob=1.0, red_marrow_head_max=0.3
    )
    assert params.right.fovea and params.right.lesion is not None and params.left.lesion is None
    sub = P.build_subject(params)
    t = P.hip_truth(sub, "right", BASE, h=0.5)
    assert t["necrotic_fraction_pct"] == pytest.approx(params.right.lesion.nf_pct, abs=1.0)
    acq = _acq(
        sub,
        spacing=(1.0, 1.0, 5.0),
        fov=(60.0, 60.0, 50.0),
        noise_pct=8.0,
        bias_pct=30.0,
        label_ss=(2, 2, 6),
        label_ss_bone=(1, 1, 3),
    )
    rs = P.render_scan(sub, BASE, acq, ["right"], seed=4, truth_h=0.5)
    assert rs.image.dtype == np.int16 and (rs.labels == 2).any()
    healthy = P.random_subject_params(rng, "V2", healthy_prob=1.0)
    assert healthy.right.lesion is None and healthy.left.lesion is None
