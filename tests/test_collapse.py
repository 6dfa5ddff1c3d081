"""Head depression and ARCO 2019 collapse (docs/method.md section 6).

Truth is analytic: phantom heads (:mod:`pipeline.synthetic.phantom`) whose dome is flattened by a
plane over the lesion, a spherical-cap dent of depth h: the depression is h at c + (r - h) a and
the missing volume the cap's, pi h^2 (3r - h) / 3. The full table (7 depths x 5 grids) and the
null distribution on intact heads are ``scripts/collapse_validation.py`` ->
``docs/validation/collapse.json``; here a subset is recomputed and checked against the targets and
against the committed table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.measures.collapse import (
    SurfaceMean,
    arco2019_collapse,
    ball_on_grid,
    detection_limit_mm,
    followup_literature_flags,
    literature_flags,
    mesh_lattice,
    radial_extent_mm,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import collapse_validation as V  # noqa: E402

TABLE = json.loads((ROOT / "docs" / "validation" / "collapse.json").read_text())
#: the subset recomputed here (about 30 s): both kinds of grid, intact, IIIA and IIIB, near the limit
SUBSET = [("1 mm isotropic", 0.0), ("1 mm isotropic", 1.5), ("coronal 0.7x0.7x3.5", 1.0),
          ("coronal 0.7x0.7x3.5", 3.5), ("oblique coronal 0.8x0.8x4", 0.0), ("oblique coronal 0.8x0.8x4", 2.5)]


@pytest.fixture(scope="module")
def subject():
    return V.subject()


def check_targets(row: dict) -> None:
    """The targets of issue 15 for one row of the dent table."""
    assert abs(row["error_mm"]) <= row["target_error_mm"], row
    if row["dent_mm"] == 0:
        assert row["stage"] == "none", row  # an intact head is never called collapsed
    elif row["dent_mm"] >= row["detection_limit_at_dent_mm"] and abs(row["dent_mm"] - 2.0) > 0.5:
        assert row["stage"] == row["stage_truth"], row  # detectable, and clear of the 2 mm boundary
    if row["dent_mm"] >= 1.0 and row["stage"] != "none":
        assert row["location_error_mm"] < 2.0, row
    if row["dent_mm"] >= 1.0 and row["dent_within_region"]:
        # the missing volume against the cap's (the 0.5 mm lattice rounds the dent's rim)
        assert row["missing_volume_ml"] == pytest.approx(row["missing_volume_truth_ml"],
                                                         abs=0.02 + 0.15 * row["missing_volume_truth_ml"]), row
    if row["stage"] not in (None, "none"):
        assert row["depressed_area_mm2"] > 0, row


@pytest.mark.parametrize("grid,depth", SUBSET)
def test_dent_depth_stage_location_volume(subject, grid, depth):
    """Recomputed subset: targets met, and the committed table is what the code gives today."""
    row = V.dent_case(subject, depth, grid)
    check_targets(row)
    committed = next(r for r in TABLE["dents"] if r["grid"] == grid and r["dent_mm"] == depth)
    assert row["depression_mm"] == pytest.approx(committed["depression_mm"], abs=0.02), \
        "docs/validation/collapse.json is stale: run python scripts/collapse_validation.py"
    assert row["stage"] == committed["stage"]


def test_committed_table_meets_the_targets():
    """Every row of the table in docs/method.md section 6 (docs/validation/collapse.json)."""
    assert len(TABLE["dents"]) == len(V.DEPTHS) * len(V.GRIDS)
    for row in TABLE["dents"]:
        check_targets(row)
    fine = [r for r in TABLE["dents"] if r["target_error_mm"] == 0.3]
    assert fine and all(abs(r["error_mm"]) <= 0.3 for r in fine)


@pytest.mark.parametrize("crater_mm", [8.0, 12.0])
def test_floor_extrapolation_recovers_a_rounded_dent(subject, crater_mm):
    """A spherical crater (``HipState.dent_radius_mm``) 2.5 mm deep, about 10-12 mm across, from
    its truth labels on 1 mm voxels: the 1 mm average lowers its rounded floor by 0.14-0.2 mm; the
    floor extrapolated to zero width from the two averages is within 0.1 mm of the truth. With
    the extrapolation off the averaged depth is reported, and it is the one recorded beside it."""
    shape = {"dent_radius_mm": crater_mm}
    head, _, aff, truth = V.label_grid(subject, 2.5, "1 mm isotropic", (0.31, 0.17, 0.43), shape)
    on = V.measure(head, aff, truth)
    off = V.measure(head, aff, truth, Settings(collapse={"floor_extrapolation": False}))
    rec = on["collapse"]
    assert off["collapse"]["floor_correction_mm"] is None
    assert rec["averaged_depression_mm"] == pytest.approx(off["head_depression_mm"])
    assert on["head_depression_mm"] == pytest.approx(rec["averaged_depression_mm"] + rec["floor_correction_mm"])
    assert 2.5 - off["head_depression_mm"] > 0.12  # the averaging's loss on a rounded floor
    assert abs(on["head_depression_mm"] - 2.5) <= 0.1
    assert on["arco2019_collapse"] == "IIIB"


def test_floor_extrapolation_leaves_an_intact_head_alone(subject):
    head, _, aff, truth = V.label_grid(subject, 0.0, "coronal 0.7x0.7x3.5", (0.31, 0.17, 0.43))
    on = V.measure(head, aff, truth)
    off = V.measure(head, aff, truth, Settings(collapse={"floor_extrapolation": False}))
    assert on["arco2019_collapse"] == "none" and on["collapse"]["floor_correction_mm"] is None
    assert on["head_depression_mm"] == off["head_depression_mm"]


SHAPES = json.loads((ROOT / "docs" / "validation" / "collapse_shapes.json").read_text())


def test_other_dent_shapes_from_labels():
    """docs/method.md section 6, other shapes and places (scripts/collapse_shapes.py): a crater
    8 mm in radius, 2.5 mm deep, on 1 mm voxels is recomputed (the table is today's code) and the
    committed table holds what the docs say: every 1 mm row within 0.3 mm with its stage right,
    and 102 of the 105 label rows meeting the error and stage targets."""
    import collapse_shapes as S

    row = S.shape_case(V.subject(), "crater 8 mm", 2.5, "1 mm isotropic", auto=False)
    committed = next(r for r in SHAPES["rows"] if r["shape"] == "crater 8 mm" and r["grid"] == "1 mm isotropic"
                     and r["dent_mm"] == 2.5)
    assert row["depression_mm"] == pytest.approx(committed["depression_mm"], abs=0.02)
    rows = SHAPES["rows"]
    assert len(rows) == len(S.SHAPES) * len(V.GRIDS) * len(S.DEPTHS)
    fine = [r for r in rows if r["target_error_mm"] == 0.3]
    assert fine and all(abs(r["error_mm"]) <= 0.3 and r["stage"] == r["stage_truth"] for r in fine)

    def meets(r):  # the error and stage targets of check_targets
        stage_due = r["dent_mm"] >= r["detection_limit_at_dent_mm"] and abs(r["dent_mm"] - 2.0) > 0.5
        return abs(r["error_mm"]) <= r["target_error_mm"] and (not stage_due or r["stage"] == r["stage_truth"])

    assert sum(meets(r) for r in rows) == 102
    staged = [r for r in rows if r["stage"] != "none"]
    assert sum(r["location_error_mm"] > 2.0 for r in staged) == 4


def test_detection_limit_exceeds_the_null_distribution_with_margin():
    """The limit factor is above every intact head's largest depth (in voxels), by at least 1.3x."""
    factor = Settings().collapse.detection_limit_factor
    assert TABLE["detection_limit_factor"] == factor
    null = TABLE["null"]
    assert len([n for n in null if n["source"].startswith("sample cohort")]) == 10  # ONFH06 m12 (collapsed) left out
    assert len({n["grid"] for n in null}) >= 5
    assert all(n["stage"] == "none" for n in null)
    assert max(n["depth_in_voxels"] for n in null) * 1.3 <= factor


@pytest.mark.parametrize("depth", [0.0, 5.0])
def test_ransac_sphere_ignores_the_dent(subject, depth):
    """The RANSAC head fit of a dented head is the intact sphere's: the dent does not pull it inward."""
    head, _, aff, truth = V.label_grid(subject, depth, "1 mm isotropic", (0.31, 0.17, 0.43))
    from pipeline.geometry.frame import fit_head_sphere

    fit = fit_head_sphere(head, aff)
    assert np.linalg.norm(fit.center - np.asarray(truth["head_center_ras_mm"])) < 0.2
    assert abs(fit.radius - truth["head_radius_mm"]) < 0.15


def test_intact_sample_hip_with_an_irregular_lesion_is_none():
    """The sample cohort's ONFH02 at 12 months (lesion grown, no collapse modelled): the WIP called it IIIA."""
    from pipeline.io.scan import load_scan
    from pipeline.masks.labels import import_masks
    from pipeline.measures.hip import measure_hip

    settings = Settings()
    folder = ROOT / "sample_data"
    scan = load_scan(folder / "ONFH02_m12_cor.nii.gz")
    head, lesion, seg, _ = import_masks(scan, settings, "left", folder / "ONFH02_m12_cor_labels.nii.gz", None, None,
                                        None, False)
    m = measure_hip(scan, head, lesion, "left", settings, segmentation=seg).result
    assert m.arco2019_collapse == "none"
    assert 0 <= m.head_depression_mm < m.collapse["detection_limit_mm"]
    assert m.collapse["depth_to_limit"] < 1.0 / 1.3
    keys = list(m.to_json())
    assert keys.index("centroid_longitude_deg") < keys.index("head_depression_mm") < keys.index("reconstruction")


def test_stage_rule_and_detection_limit():
    assert arco2019_collapse(0.2, 0.3) == "none"
    assert arco2019_collapse(0.3, 0.3) == "IIIA"
    assert arco2019_collapse(2.0, 0.3) == "IIIA"
    assert arco2019_collapse(2.01, 0.3) == "IIIB"
    assert arco2019_collapse(None, 0.3) is None
    coronal = np.diag([0.7, 3.5, 0.7, 1.0])
    # a thick slice counts along its own axis only
    assert radial_extent_mm(np.eye(3), coronal) == pytest.approx([0.7, 3.5, 0.7])
    assert detection_limit_mm(np.eye(3), coronal, 0.5) == pytest.approx([0.35, 1.75, 0.35])
    e = np.array([0.0, 0.6, 0.8])
    assert radial_extent_mm(e, coronal) == pytest.approx(np.hypot(0.6 * 3.5, 0.8 * 0.7))
    # an oblique grid: the extent follows the voxel axes, not RAS
    rot = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    oblique = np.eye(4)
    oblique[:3, :3] = rot @ np.diag([0.7, 3.5, 0.7])
    assert radial_extent_mm(rot[:, 1], oblique) == pytest.approx(3.5)


def test_ball_on_grid_is_the_partial_volume_rule():
    """The sagitta shortcut gives the brute-force rule: a voxel is in when half of it is."""
    rng = np.random.default_rng(3)
    for spacing in ((1.0, 1.0, 1.0), (0.7, 3.5, 0.7)):
        affine = np.eye(4)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        affine[:3, :3] = q @ np.diag(spacing)
        center, radius = rng.normal(size=3), 12.3
        ball, crop = ball_on_grid(center, radius, affine)
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in ball.shape], indexing="ij"), -1).reshape(-1, 3)
        n = np.ceil(np.array(spacing) / 0.25).astype(int)
        offs = np.stack(np.meshgrid(*[(np.arange(k) + 0.5) / k - 0.5 for k in n], indexing="ij"), -1).reshape(-1, 3)
        pts = (idx[:, None, :] + offs[None]) @ crop[:3, :3].T + crop[:3, 3]
        frac = (np.linalg.norm(pts - center, axis=2) <= radius).mean(axis=1)
        differ = ball.ravel() != (frac >= 0.5)
        # only ties of the sub-grid count (a fraction within one sub-sample of a half), where the
        # sagitta bound, exact for the continuous fraction, decides by the centre
        assert differ.sum() <= 3
        assert np.all(np.abs(frac[differ] - 0.5) <= 1.0 / len(offs))
        assert ball.sum() > 0.9 * 4 / 3 * np.pi * radius**3 / np.prod(spacing)


def test_surface_mean_and_lattice():
    """Averaging keeps constants and linear fields on a plane; a mesh's lattice is read back."""
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-10, 10, (20000, 2)), np.zeros(20000)])
    mean = SurfaceMean(pts, np.ones(len(pts)), 2.0 + 0.1 * pts[:, 0], 1.0)
    q = np.array([[0.0, 0.0, 0.0], [3.0, -2.0, 0.0], [0.0, 0.0, 40.0]])
    got = mean(q)
    assert got[:2] == pytest.approx([2.0, 2.3], abs=0.01)
    assert np.isnan(got[2])  # no surface within reach
    from pipeline.geometry.mesh import isotropic_reconstructions, mask_mesh

    head, _, aff, _ = V.label_grid(V.subject(), 0.0, "oblique coronal 0.8x0.8x4")
    (iso,), iso_affine = isotropic_reconstructions([head], aff, 0.5)
    verts, _ = mask_mesh(iso, iso_affine)
    lattice = mesh_lattice(verts, aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0), 0.5)
    k = np.linalg.solve(iso_affine[:3, :3], lattice[:3, 3] - iso_affine[:3, 3])
    assert k == pytest.approx(np.round(k), abs=1e-3)


def test_literature_flags_are_worded_as_cut_offs():
    s = Settings()
    assert literature_flags(24.9, "C1", s) == []
    flags = literature_flags(25.0, "C2", s)
    assert len(flags) == 2 and all(f.startswith("literature cut-off") for f in flags)
    assert "Hip Int 2022" in flags[0] and "Bone Joint Res 2019" in flags[1]
    assert followup_literature_flags(10.0, s) == []
    small = followup_literature_flags(9.9, s)
    assert len(small) == 1 and small[0].startswith("literature cut-off") and "3 months" in small[0]
    assert "predict" not in " ".join(flags + small)


def test_compare_reports_change_and_new_collapse():
    from pipeline.longitudinal.change import depression_change_mm, new_collapse
    from pipeline.measures.results import HipMetrics

    def visit(depression, stage):
        return HipMetrics(side="right", head_depression_mm=depression, arco2019_collapse=stage)

    assert depression_change_mm(visit(0.1, "none"), visit(1.3, "IIIA")) == pytest.approx(1.2)
    assert new_collapse(visit(0.1, "none"), visit(1.3, "IIIA")) is True
    assert new_collapse(visit(1.0, "IIIA"), visit(2.6, "IIIB")) is False  # collapse already at baseline
    assert new_collapse(visit(0.1, "none"), visit(0.2, "none")) is False
    assert new_collapse(visit(None, None), visit(0.2, "none")) is None
    assert depression_change_mm(visit(None, None), visit(0.2, "none")) is None


def test_a_new_collapse_over_an_open_baseline_is_said():
    """Baseline "none" on axial thick slices (top not measured) or under a limit over 2 mm, then
    IIIB: still a new collapse by the rule, with a warning that the baseline left the top open."""
    from pipeline.longitudinal.change import new_collapse, new_collapse_warnings
    from pipeline.measures.results import HipMetrics

    def visit(depression, stage, **rec):
        return HipMetrics(side="right", head_depression_mm=depression, arco2019_collapse=stage, collapse=rec)

    late = visit(2.6, "IIIB", top_in_end_slices=False, top_limit_mm=0.49)
    for open_top, words in (({"top_in_end_slices": True}, "top of the dome not measured"),
                            ({"top_in_end_slices": False, "top_limit_mm": 2.1}, "2.1 mm limit at the top")):
        base = visit(0.3, "none", **open_top)
        assert new_collapse(base, late) is True
        (warning,) = new_collapse_warnings(base, late)
        assert words in warning
    assert new_collapse_warnings(visit(0.3, "none", top_in_end_slices=False, top_limit_mm=0.49), late) == []
    assert new_collapse_warnings(visit(0.3, "none", top_in_end_slices=True), visit(0.3, "none")) == []


def test_committed_table_has_the_automatic_column():
    """The automatic column (render, segment_hip, measure) exists for every row; intact heads are
    "none" automatically on every grid, and on 1 mm voxels it meets the targets. The thick-slice
    misses are documented in docs/method.md section 6 (issue 15 open), and a sagittal case is
    recomputed in tests/test_segment_collapse.py."""
    for row in TABLE["dents"]:
        assert {"auto_depression_mm", "auto_error_mm", "auto_stage", "auto_dice_head"} <= set(row), row
        assert row["auto_dice_head"] > 0.97, row
        if row["dent_mm"] == 0:
            assert row["auto_stage"] == "none", row
        if row["target_error_mm"] == 0.3 and row["dent_mm"] >= row["detection_limit_at_dent_mm"]:
            assert abs(row["auto_error_mm"]) <= 0.3, row
            assert row["auto_stage"] == row["stage_truth"], row
    assert [r["auto_stage"] for r in TABLE["sample"]] == ["none", "IIIB"]


# --------------------------------------------------------------------------------------------
# hand-drawn-like outlines (scripts/collapse_roughness.py)
# --------------------------------------------------------------------------------------------
import collapse_roughness as RO  # noqa: E402


def _sample_hip_rough(amplitude_px: float, seed: int):
    from pipeline.io.scan import load_scan
    from pipeline.masks.labels import import_masks
    from pipeline.measures.hip import measure_hip

    settings = Settings()
    folder = ROOT / "sample_data"
    scan = load_scan(folder / "ONFH01_m00_cor.nii.gz")
    head, lesion, seg, _ = import_masks(scan, settings, "right", folder / "ONFH01_m00_cor_labels.nii.gz", None, None,
                                        None, False)
    rough = RO.roughen(head, scan.spacing, amplitude_px, seed)
    changed = int((rough != head).sum())
    return measure_hip(scan, rough, lesion & rough, "right", settings, segmentation=seg).result, changed


def test_a_few_voxels_missed_by_an_outline_are_no_collapse():
    """An intact head whose outline misses voxels here and there (0.25 pixel wobble): its deepest
    dip reaches the voxel limit (the rule before the breadth test called it IIIA) but spans a
    voxel or two, so the wide average stays far under it: none, flagged narrow."""
    m, changed = _sample_hip_rough(0.25, seed=25)
    assert changed > 100
    rec = m.collapse
    assert m.head_depression_mm >= rec["detection_limit_mm"]  # deep enough at the fine scale...
    assert rec["broad_to_limit_max"] < Settings().collapse.breadth_factor  # ...but narrow
    assert m.arco2019_collapse == "none" and rec["narrow"] is True
    assert rec["depressed_area_mm2"] == 0.0  # not staged, so nothing is depressed
    from pipeline.report.qc import depression_title

    assert "narrower than a collapse" in m.collapse_text()  # qc.png's title
    assert "narrower than a collapse" in depression_title(m)  # qc.png's depression panel
    assert dict(m.table_rows())["ARCO 2019 collapse"] == "none (the dip is narrower than a collapse)"  # napari


def test_a_wobbling_outline_raises_the_limit_and_stays_none():
    """A half-pixel wobble along and between slices: a false dip near 1 mm (IIIA by the voxel
    limit alone, 0.49 mm here) is under the roughness limit, 7 x the depth's robust SD."""
    m, _ = _sample_hip_rough(0.5, seed=50)
    rec = m.collapse
    voxel_limit = Settings().collapse.detection_limit_factor * 0.7  # in-plane voxel at the dome's top
    assert m.head_depression_mm > voxel_limit
    factor = Settings().collapse.roughness_limit_factor
    assert rec["roughness_limit_mm"] == pytest.approx(factor * rec["surface_roughness_mm"])
    assert rec["detection_limit_mm"] >= rec["roughness_limit_mm"] > m.head_depression_mm
    assert m.arco2019_collapse == "none"
    assert rec["depressed_area_mm2"] == 0.0


def test_clean_label_maps_keep_the_voxel_limit():
    """Label maps from the partial-volume rule are smooth: roughness a few hundredths of a mm, so
    the limit is the voxel's (the dent table above is unchanged by the roughness term)."""
    m, changed = _sample_hip_rough(0.0, seed=0)
    assert changed == 0
    assert m.collapse["surface_roughness_mm"] < 0.03
    assert m.collapse["roughness_limit_mm"] < 0.5 * m.collapse["detection_limit_mm"]


def test_a_dent_under_a_wobbling_outline_is_still_iiib():
    """The 2.5 mm phantom dent on coronal 0.7 x 0.7 x 3.5 mm slices, its outline roughened by
    half a pixel as scripts/collapse_roughness.py does: the roughness raises the limit but the
    dent stays IIIB, and docs/validation/collapse_roughness.json holds what the code gives today.
    (Its depth reads 0.8 mm deep: the wobble's deepest dip adds to the dent, docs/method.md 6.)"""
    row = RO.phantom_rows(V.subject(), 2.5, ["1 mm isotropic", "coronal 0.7x0.7x3.5"], (0.5,))[1]
    committed = json.loads((ROOT / "docs" / "validation" / "collapse_roughness.json").read_text())["dents"]
    same = next(r for r in committed if r["grid"] == row["grid"] and r["dent_mm"] == 2.5
                and r["amplitude_px"] == 0.5)
    assert row["depth_mm"] == pytest.approx(same["depth_mm"], abs=0.02), \
        "docs/validation/collapse_roughness.json is stale: run python scripts/collapse_roughness.py"
    assert row["stage"] == "IIIB"
    assert row["detection_limit_mm"] > Settings().collapse.detection_limit_factor * 0.7  # raised by the wobble


@pytest.mark.parametrize("grid,top_limit,flag", [
    ("1 mm isotropic", 0.7, None),  # 0.7 x 1 mm straight up
    ("coronal 0.7x0.7x3.5", 0.49, None),  # the top is in-plane: 0.7 x 0.7 mm
    ("axial 0.9x0.9x3", None, "not assessed at the top of the dome"),  # the top is in the end slices
])
def test_what_none_rules_out_at_the_dome_top(subject, grid, top_limit, flag):
    """An intact head reads "none" on every grid; the flag says where that does not rule out a
    collapse: on axial 3 mm slices the dome's top lies in the slice axis' end cone (left out of
    the region, acos(1 - 3/23.5) = 29 degrees), so a collapse there would read "none" too."""
    from pipeline.measures.collapse import assessment_flags

    head, _, aff, truth = V.label_grid(subject, 0.0, grid, (0.31, 0.17, 0.43))
    out = V.measure(head, aff, truth)
    rec = out["collapse"]
    assert out["arco2019_collapse"] == "none"
    assert rec["top_in_end_slices"] is (top_limit is None)
    if top_limit is None:
        assert rec["top_limit_mm"] is None
    else:
        assert rec["top_limit_mm"] == pytest.approx(top_limit, abs=1e-6)
    flags = assessment_flags(out["arco2019_collapse"], rec, aff)
    assert (flags == []) if flag is None else (len(flags) == 1 and flag in flags[0])


def test_a_limit_over_2_mm_is_flagged_only_for_none():
    """A "none" under a limit above the IIIA/IIIB boundary would also be the reading of a IIIA
    collapse: flagged, naming the term that sets it; a staged head needs no such flag."""
    from pipeline.measures.collapse import assessment_flags

    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    rec = {"top_in_end_slices": False, "top_limit_mm": 2.1, "roughness_limit_mm": 0.4, "surface_roughness_mm": 0.057,
           "roughness_limit_factor": 7.0, "detection_limit_factor": 0.7}
    (flag,) = assessment_flags("none", rec, aff)
    assert "2.1 mm (0.7 x the voxel's extent)" in flag
    rough = dict(rec, top_limit_mm=5.6, roughness_limit_mm=5.6, surface_roughness_mm=0.8)
    assert "7 x the outline's roughness of 0.80 mm" in assessment_flags("none", rough, aff)[0]
    assert assessment_flags("none", dict(rec, top_limit_mm=1.9), aff) == []
    assert assessment_flags("IIIA", rough, aff) == assessment_flags("IIIB", rough, aff) == []
    assert assessment_flags(None, rough, aff) == []


def test_an_axial_none_says_the_top_was_not_measured(subject):
    """onfh's own path on axial 3 mm label maps of an intact head: "none", and every place that
    shows the stage (CLI line, qc.png title and panel, napari table, review flags) says the top
    of the dome was not measured."""
    from pipeline.io.scan import Scan
    from pipeline.measures.hip import measure_hip
    from pipeline.report.qc import depression_title

    head, lesion, aff, _ = V.label_grid(subject, 0.0, "axial 0.9x0.9x3", (0.31, 0.17, 0.43))
    scan = Scan.from_source(head.astype(np.float32), aff, {"path": "axial.nii.gz", "format": "phantom"})
    m = measure_hip(scan, head, lesion, "right", Settings()).result
    assert m.arco2019_collapse == "none"
    caveat = "top of the dome not measured"
    assert m.collapse_caveat() == caveat
    assert m.collapse_short() == f"collapse none ({caveat})"
    assert m.collapse_text().endswith(caveat) and caveat in m.qc_title() and caveat in depression_title(m)
    assert caveat in dict(m.table_rows())["ARCO 2019 collapse"]
    assert m.csv_row()["collapse_caveat"] == caveat  # scans.csv, which the cohort tables count from
    assert any("not assessed at the top of the dome" in f and "3.0 mm slice axis" in f for f in m.review_flags)
    assert m.review().startswith("review: ")


@pytest.mark.parametrize("grid", ["1 mm isotropic", "oblique coronal 0.8x0.8x4"])
def test_a_left_hip_reads_as_its_mirror_image(subject, grid):
    """The dent tables are right hips. The same head mirrored through x = 0 (the affine's x row
    negated: a left hip) has the same depression, stage, JIC zone and head-frame location (u
    lateral for either side); only the sphere fit's random samples differ."""
    from pipeline.io.scan import Scan
    from pipeline.measures.hip import measure_hip

    head, lesion, aff, _ = V.label_grid(subject, 2.5, grid, (0.31, 0.17, 0.43))
    settings = Settings(side={"read_neck_from_image": False})  # a label map is no T1 image to read a neck from
    res = {}
    for side, affine in (("right", aff), ("left", np.diag([-1.0, 1.0, 1.0, 1.0]) @ aff)):
        scan = Scan.from_source(head.astype(np.float32), affine, {"path": f"{side}.nii.gz", "format": "phantom"})
        res[side] = measure_hip(scan, scan.from_source_order(head), scan.from_source_order(lesion), side,
                                settings).result
    right, left = res["right"], res["left"]
    assert right.arco2019_collapse == left.arco2019_collapse == "IIIB"
    assert left.head_depression_mm == pytest.approx(right.head_depression_mm, abs=0.05)
    assert left.collapse["jic_zone"] == right.collapse["jic_zone"]
    assert np.allclose(left.collapse["location_uvw_mm"], right.collapse["location_uvw_mm"], atol=0.3)
    assert right.collapse["location_uvw_mm"][0] > 5.0  # lateral of the centre on both sides
    assert left.head_center_ras_mm[0] == pytest.approx(-right.head_center_ras_mm[0], abs=0.05)


@pytest.mark.parametrize("spacing,plane,oblique,depth,stage", [
    ((0.4, 0.4, 3.0), "coronal", (0.0, 0.0, 0.0), 1.5, "IIIA"),  # a high-resolution coronal PD
    ((0.6, 0.6, 2.0), "axial", (25.0, -10.0, 5.0), 2.5, "IIIB"),  # an oblique axial 2 mm series
    ((0.5, 0.5, 0.5), "axial", (0.0, 0.0, 0.0), 1.5, "IIIA"),  # a 3D sequence at 0.5 mm
])
def test_grids_the_tables_do_not_hold(subject, monkeypatch, spacing, plane, oblique, depth, stage):
    """Nothing in the measurement is tied to the five table grids: label maps of three other
    acquisitions meet the 1 mm target (0.3 mm) with the right stage and the deepest point in place."""
    monkeypatch.setitem(V.GRIDS, "other", (spacing, plane, oblique))
    row = V.dent_case(subject, depth, "other")
    assert abs(row["error_mm"]) <= 0.3, row
    assert row["stage"] == stage and row["location_error_mm"] < 2.0, row
