"""Longitudinal comparison (docs/method.md section 5) against exact truth.

Each visit is rendered from one continuous MRI-like hip model (tests/_hip_pair.py) on its own
grid, the body moved by a known rigid motion: the motion and the lesion volumes are exact, so
registration errors and regeneration errors are measured, not guessed.
"""

import numpy as np
import pytest
from _hip_pair import HipModel, grid, render, rotation, rotation_error_deg

from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.io.scan import Scan
from pipeline.longitudinal.change import (
    LPS,
    RigidTransform,
    change_map,
    check_same_hip,
    compare_visits,
    from_sitk,
    regeneration_pct,
    resample_to_baseline,
    to_sitk,
)
from pipeline.measures.hip import measure_hip
from pipeline.measures.location import AP_REGIONS, JIC_ZONES, ZONE_LABELS, zone_indices
from pipeline.measures.results import HipMetrics

MODEL = HipModel()
CAP0 = 12.0  # baseline lesion cap height, mm
SPACING0 = (1.75, 1.75, 1.75)
SHAPE0 = (72, 72, 72)


def fast_settings() -> Settings:
    s = Settings()
    return s.model_copy(update={
        "reconstruction": s.reconstruction.model_copy(update={"isotropic": False}),
        "outputs": s.outputs.model_copy(update={"qc_png": False, "stl": False}),
    })


SETTINGS = fast_settings()


def visit(model, shape, affine, cap_mm, pose=None, seed=0, side="right"):
    img, lab = render(model, shape, affine, cap_mm, pose=pose, seed=seed)
    return measure_hip(Scan.from_source(img, affine), lab > 0, lab == 2, side, SETTINGS)


def baseline_visit(model=MODEL, cap_mm=CAP0):
    return visit(model, SHAPE0, grid(SHAPE0, SPACING0, model.c + np.array([10.0, 0.0, -10.0])), cap_mm, seed=1)


def followup_visit(rot, t, cap_mm, spacing=(1.75, 1.75, 1.75), fov_mm=126.0, grid_rotation=None,
                   offset=(4.0, -3.0, -8.0), model=MODEL, seed=2):
    shape = tuple(int(round(fov_mm / s)) for s in spacing)
    centre = rot @ model.c + t + np.asarray(offset)  # the scanner centres the follow-up on the moved hip
    return visit(model, shape, grid(shape, spacing, centre, grid_rotation), cap_mm, pose=(rot, t), seed=seed)


#: Known motions (rotation about an oblique axis up to 10 degrees, translation up to 10 mm) and
#: follow-up grids: same voxels, thick slices with another field of view, an oblique 2 mm grid.
MOTIONS = {
    "oblique-10deg-same-grid": dict(axis=(1, 2, -1), deg=10.0, t=(6.0, -5.0, 5.5), cap=7.0, grid={}),
    "thick-slices-other-fov": dict(axis=(-2, 1, 1), deg=-8.0, t=(-7.0, 4.0, -6.0), cap=7.0,
                                   grid=dict(spacing=(1.5, 4.0, 1.5), fov_mm=150.0, offset=(-6.0, 5.0, 10.0))),
    "oblique-grid-2mm": dict(axis=(0.3, -1, 0.6), deg=9.0, t=(3.0, 8.0, -4.0), cap=5.0,
                             grid=dict(spacing=(2.0, 2.0, 2.0), fov_mm=120.0,
                                       grid_rotation=rotation((1, 1, 0), 15.0))),
}


@pytest.fixture(scope="module")
def baseline():
    return baseline_visit()


@pytest.fixture(scope="module")
def compared(baseline):
    """Each known motion: (comparison, true rotation, true translation, follow-up cap height, follow-up)."""
    out = {}
    for name, m in MOTIONS.items():
        rot, t = rotation(m["axis"], m["deg"]), np.asarray(m["t"], dtype=float)
        follow = followup_visit(rot, t, m["cap"], **m["grid"])
        out[name] = (compare_visits(baseline, follow, SETTINGS), rot, t, m["cap"], follow)
    return out


# --------------------------------------------------------------------------------------------
# geometry bridge
# --------------------------------------------------------------------------------------------
def test_sitk_image_has_the_scan_geometry_in_lps():
    aff = grid((5, 6, 7), (0.8, 1.3, 2.5), (10.0, -20.0, 30.0), rotation((1, -2, 0.5), 25.0))
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    image = to_sitk(data, aff)
    for ijk in ((0, 0, 0), (4, 1, 6), (2, 5, 3)):
        ras = aff[:3, :3] @ ijk + aff[:3, 3]
        assert np.allclose(image.TransformIndexToPhysicalPoint(ijk), LPS @ ras, atol=1e-9)
        assert image.GetPixel(ijk) == data[ijk]
    assert np.array_equal(from_sitk(image), data)


def test_rigid_transform_round_trips_through_sitk_lps():
    import SimpleITK as sitk

    rot, t = rotation((1, 2, 3), 12.0), np.array([4.0, -5.0, 6.0])
    tx = RigidTransform(rot, t)
    p = np.array([30.0, -12.0, 7.0])
    assert np.allclose(tx.to_sitk().TransformPoint(tuple(LPS @ p)), LPS @ (rot @ p + t))
    versor = sitk.VersorRigid3DTransform()
    versor.SetCenter((1.0, 2.0, 3.0))
    versor.SetRotation((0.3, -0.2, 0.9), np.radians(7.0))
    versor.SetTranslation((2.0, 3.0, -1.0))
    back = RigidTransform.from_sitk(versor)
    assert np.allclose(LPS @ back.apply(LPS @ p), versor.TransformPoint(tuple(p)))
    assert back.rotation_deg == pytest.approx(7.0)
    assert np.allclose(tx.inverse().apply(tx.apply(p)), p)


def test_labels_move_by_nearest_neighbour():
    aff = grid((20, 20, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:10, 6:12, 7:9] = 1
    labels[6:8, 7:9, 7:8] = 2
    shift = RigidTransform(np.eye(3), [2.0, 0.0, -1.0])  # baseline point p reads the follow-up at p + t
    out = resample_to_baseline(labels, aff, labels.shape, aff, shift, labels=True)
    assert set(np.unique(out)) == {0, 1, 2}
    assert np.array_equal(out[3:8, 6:12, 8:10], labels[5:10, 6:12, 7:9])
    turned = RigidTransform(rotation((1, 1, 1), 17.0), [0.3, -0.2, 0.1])
    assert set(np.unique(resample_to_baseline(labels, aff, labels.shape, aff, turned, labels=True))) <= {0, 1, 2}


def test_change_map_and_regeneration_formula():
    l0 = np.array([1, 1, 0, 0], bool)
    lt = np.array([1, 0, 1, 0], bool)
    assert change_map(l0, lt).tolist() == [1, 2, 3, 0]
    assert regeneration_pct(10.0, 2.0) == pytest.approx(80.0)
    assert regeneration_pct(4.0, 5.0) == pytest.approx(-25.0)
    assert regeneration_pct(0.0, 1.0) is None


# --------------------------------------------------------------------------------------------
# registration recovers known motion
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MOTIONS))
def test_known_motion_is_recovered_within_1_degree_and_1_mm(compared, name):
    comparison, rot, t, _, _ = compared[name]
    tx = comparison.registration.transform
    c = MODEL.c
    rot_err = rotation_error_deg(tx.rotation, rot)
    head_err = float(np.linalg.norm(tx.apply(c) - (rot @ c + t)))
    trans_err = float(np.linalg.norm(tx.translation - t))
    print(f"{name}: rotation error {rot_err:.3f} deg, head-centre error {head_err:.3f} mm, "
          f"translation error {trans_err:.3f} mm")
    assert rot_err < 1.0
    assert head_err < 1.0 and trans_err < 1.0
    reg = comparison.figures["registration"]
    assert reg["rotation_deg"] == pytest.approx(abs(MOTIONS[name]["deg"]), abs=1.0)
    assert reg["head_dice"] > 0.9
    assert not comparison.figures["warnings"]


# --------------------------------------------------------------------------------------------
# regeneration figures
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MOTIONS))
def test_regeneration_matches_the_continuous_truth(compared, name):
    comparison, _, _, cap, _ = compared[name]
    f = comparison.figures
    v0, vt = MODEL.lesion_volume_ml(CAP0), MODEL.lesion_volume_ml(cap)
    truth = 100.0 * (v0 - vt) / v0
    print(f"{name}: regeneration {f['regeneration_pct']:.2f} % vs truth {truth:.2f} %; regenerated "
          f"{f['regenerated_ml']:.2f} mL vs {v0 - vt:.2f}, persistent {f['persistent_ml']:.2f} vs {vt:.2f}, "
          f"new {f['new_ml']:.2f} vs 0")
    assert f["regeneration_pct"] == pytest.approx(truth, abs=2.0)
    # the nested caps: regenerated = V0 - Vt, persistent = Vt, new = 0 (voxel maps, baseline grid)
    assert f["regenerated_ml"] == pytest.approx(v0 - vt, abs=0.1 * v0)
    assert f["persistent_ml"] == pytest.approx(vt, abs=0.1 * v0)
    assert f["new_ml"] < 0.05 * v0
    assert f["baseline_lesion_ml"] == pytest.approx(v0, rel=0.03)
    assert f["followup_lesion_ml"] == pytest.approx(vt, rel=0.05)


def test_zone_figures_add_up_and_match_the_truth_per_zone(compared, baseline):
    comparison, _, _, cap, _ = compared["oblique-10deg-same-grid"]
    f = comparison.figures
    zones = f["zones"]
    assert set(zones) == set(JIC_ZONES) | set(AP_REGIONS) | set(ZONE_LABELS.values())
    for group in (JIC_ZONES, AP_REGIONS, tuple(ZONE_LABELS.values())):
        assert sum(zones[z]["regenerated_ml"] for z in group) == pytest.approx(f["regenerated_ml"], abs=1e-9)
        assert sum(zones[z]["share_pct"] for z in group) == pytest.approx(100.0)
    for z in zones.values():
        if z["baseline_ml"] > 0:
            net = 100 * (z["baseline_ml"] - z["followup_ml"]) / z["baseline_ml"]
            assert z["regeneration_pct"] == pytest.approx(net)
        else:
            assert z["regeneration_pct"] is None

    # truth: the continuous model's lesions at the baseline voxel centres (zones classify voxel
    # centres, so a zone slab a few voxels wide holds a whole number of voxel planes: the truth
    # must be voxelised the same way to isolate what registration and resampling cost)
    scan = baseline.scan
    p = scan.index_to_ras(np.indices(scan.shape).reshape(3, -1).T)
    l0 = MODEL.lesion_sdf(p, CAP0) <= 0
    lt = MODEL.lesion_sdf(p, cap) <= 0
    regenerated = l0 & ~lt
    jic, ap = zone_indices(baseline.frame.uvw(p[regenerated]), baseline.frame, baseline.result.weight_bearing)
    ml = scan.voxel_volume_mm3 / 1000.0
    truth = list(np.bincount(jic, minlength=4) * ml) + list(np.bincount(ap, minlength=3) * ml)
    measured = [zones[z]["regenerated_ml"] for z in JIC_ZONES + AP_REGIONS]
    print("zone regenerated mL (A, B, C1, C2, anterior, central, posterior): measured", np.round(measured, 3),
          "truth", np.round(truth, 3))
    total = regenerated.sum() * ml
    for zone, got, want in zip(JIC_ZONES + AP_REGIONS, measured, truth):
        assert got == pytest.approx(want, abs=0.05 * total), zone
        assert zones[zone]["share_pct"] == pytest.approx(100 * want / total, abs=5.0), zone
    truth_map = change_map(l0.reshape(scan.shape), lt.reshape(scan.shape))
    agree = (comparison.change == truth_map)[(comparison.change > 0) | (truth_map > 0)].mean()
    print(f"change map agrees with the truth on {100 * agree:.1f} % of its voxels")
    assert agree > 0.85


def test_growing_lesion_gives_negative_regeneration(baseline):
    rot, t = rotation((0, 1, 1), 6.0), np.array([-3.0, 2.0, 4.0])
    # strict quality thresholds, to see the warnings they give (the figures do not depend on them)
    strict = SETTINGS.model_copy(update={"longitudinal": SETTINGS.longitudinal.model_copy(
        update={"min_head_dice": 0.995, "max_rotation_deg": 3.0})})
    f = compare_visits(baseline, followup_visit(rot, t, 16.0), strict).figures
    assert any(w.startswith("poor alignment: head-mask Dice") for w in f["warnings"])
    assert any("registration rotated the follow-up by" in w for w in f["warnings"])
    v0, vt = MODEL.lesion_volume_ml(CAP0), MODEL.lesion_volume_ml(16.0)
    assert f["regeneration_pct"] < 0
    assert f["regeneration_pct"] == pytest.approx(100 * (v0 - vt) / v0, abs=2.0)
    assert f["new_ml"] == pytest.approx(vt - v0, abs=0.1 * v0)
    assert f["regenerated_ml"] < 0.05 * v0
    # every zone that had lesion has at least as much now (up to the voxel maps' boundary noise)
    assert all(z["regeneration_pct"] < 5.0 for z in f["zones"].values() if z["baseline_ml"] >= 0.2)


def test_identical_scans_give_zero_and_an_empty_change_map(baseline):
    comparison = compare_visits(baseline, baseline, SETTINGS)
    f = comparison.figures
    assert f["regeneration_pct"] == 0.0
    assert f["regenerated_ml"] == 0.0 and f["new_ml"] == 0.0
    assert not np.isin(comparison.change, (2, 3)).any()
    assert np.array_equal(comparison.change == 1, baseline.lesion)
    assert f["registration"]["rotation_deg"] < 0.2
    assert np.linalg.norm(f["registration"]["translation_mm"]) < 0.2
    assert f["registration"]["head_dice"] == 1.0


def test_same_input_gives_identical_numbers(compared, baseline):
    # the registration is the only step that could wander (threads, sampling): run it again with
    # another thread count
    import SimpleITK as sitk

    comparison, _, _, _, follow = compared["thick-slices-other-fov"]
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1 if before > 1 else 2)
    try:
        again = compare_visits(baseline, follow, SETTINGS)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
    assert np.array_equal(again.registration.transform.matrix, comparison.registration.transform.matrix)
    assert np.array_equal(again.change, comparison.change)
    assert again.figures["zones"] == comparison.figures["zones"]


def test_empty_baseline_lesion_makes_regeneration_null_with_a_reason():
    base = baseline_visit(cap_mm=0.0)
    rot, t = rotation((1, 0, 1), 5.0), np.array([2.0, -3.0, 1.0])
    f = compare_visits(base, followup_visit(rot, t, 6.0), SETTINGS).figures
    assert f["regeneration_pct"] is None
    assert any("empty baseline lesion" in w for w in f["warnings"])
    assert f["new_ml"] == pytest.approx(MODEL.lesion_volume_ml(6.0), rel=0.15)
    assert f["regenerated_ml"] == 0.0
    assert all(z["regeneration_pct"] is None and z["share_pct"] is None for z in f["zones"].values())


# --------------------------------------------------------------------------------------------
# visits that cannot be the same hip
# --------------------------------------------------------------------------------------------
def _metrics(x, r=22.0):
    return HipMetrics(side="right", head_center_ras_mm=[x, 0.0, 0.0], head_radius_mm=r)


def test_head_centres_on_opposite_sides_are_refused():
    ls = SETTINGS.longitudinal
    with pytest.raises(InputError, match="side mismatch"):
        check_same_hip(_metrics(90.0), _metrics(-88.0), "right", ls)
    # near the midline the scanner origin says nothing about the side: no refusal
    assert check_same_hip(_metrics(5.0), _metrics(-3.0), "right", ls) == []
    # both on the patient's left while --side right: a warning, not a silent number
    warnings = check_same_hip(_metrics(-90.0), _metrics(-95.0), "right", ls)
    assert len(warnings) == 1 and "check the side" in warnings[0]


def test_head_radius_mismatch_is_refused_as_another_patient():
    ls = SETTINGS.longitudinal
    with pytest.raises(InputError, match="head radius differs by 4.0 mm"):
        check_same_hip(_metrics(90.0, 22.0), _metrics(92.0, 26.0), "right", ls)
    assert check_same_hip(_metrics(90.0, 22.0), _metrics(92.0, 23.5), "right", ls) == []


def test_other_patients_head_is_refused_before_registration(baseline):
    big = HipModel(radius=26.5, neck_radius=15.0)
    follow = followup_visit(np.eye(3), np.zeros(3), 7.0, model=big)
    with pytest.raises(InputError, match="another patient"):
        compare_visits(baseline, follow, SETTINGS)
