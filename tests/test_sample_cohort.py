"""The committed sample cohort, measured with its truth labels and landmarks, against its truth JSON
(continuous-model figures of pipeline/synthetic/phantom.py)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.app.batch import run_batch
from pipeline.config import Settings
from pipeline.io.scan import load_scan
from pipeline.masks.labels import import_masks
from pipeline.measures.hip import measure_hip

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
# The truth label maps are the default reader's reads (empty reader cell); the reader study's other
# reads (reader2, the adjudicator) are no truth of their own.
ROWS = [r for r in csv.DictReader(open(SAMPLE / "manifest.csv")) if not r.get("reader")]


def _truth(row):
    stem = row["image"].removesuffix(".nii.gz")
    path = SAMPLE / f"{stem}_{row['side']}_truth.json"
    return json.loads((path if path.exists() else SAMPLE / f"{stem}_truth.json").read_text())


@pytest.fixture(scope="module")
def measured():
    settings = Settings(reconstruction={"isotropic": False})
    out = {}
    for row in ROWS:
        truth = _truth(row)
        scan = load_scan(SAMPLE / row["image"])
        head, lesion, seg, warnings = import_masks(scan, settings, row["side"], labels=SAMPLE / row["labels"])
        analysis = measure_hip(scan, head, lesion, row["side"], settings, seg, warnings,
                               acetabular_edge=truth["acetabular_edge_ras_mm"],
                               acetabular_roof_medial=truth["acetabular_roof_medial_ras_mm"])
        out[(row["subject"], row["side"], row["timepoint_months"], row.get("repeat"))] = (analysis, truth)
    return out


def test_volumes_match_truth(measured):
    for key, (a, t) in measured.items():
        m = a.result
        # The truth labels are what we count: voxel volumes are identical.
        assert m.head_volume_ml == pytest.approx(t["voxel_volumes"]["head_volume_ml"], abs=1e-5), key
        assert m.lesion_volume_ml == pytest.approx(t["voxel_volumes"]["lesion_volume_ml"], abs=1e-5), key
        # Against the continuous model: the discretisation bound of docs/phantom.md stays under 1 %
        # of the head and 0.1 mL of lesion on this cohort (largest: 0.35 mL head, 0.05 mL lesion).
        assert m.head_volume_ml == pytest.approx(t["head_volume_ml"], rel=0.01), key
        assert m.lesion_volume_ml == pytest.approx(t["lesion_volume_ml"], abs=0.1), key


def test_head_frame_matches_truth(measured):
    for key, (a, t) in measured.items():
        # Sphere fit on a voxelised surface: well within one in-plane voxel (0.7-1 mm).
        assert np.linalg.norm(np.subtract(a.result.head_center_ras_mm, t["head_center_ras_mm"])) < 0.5, key
        assert a.result.head_radius_mm == pytest.approx(t["head_radius_mm"], abs=0.3), key


def test_types_match_truth_away_from_zone_boundaries(measured):
    for key, (a, t) in measured.items():
        m = a.result
        if t["lesion_volume_ml"] == 0:
            assert m.jic_type is None and m.arco2021_type is None and m.cna_deg is None
            continue
        wb = t["weight_bearing"]
        u_med, u_lat = wb["u_med_mm"], wb["u_lat_mm"]
        bounds = (u_med + (u_lat - u_med) / 3, u_med + 2 * (u_lat - u_med) / 3, u_lat, 0.0)
        if min(abs(t["mid_coronal_u_max_mm"] - b) for b in bounds) > 2.0:
            assert m.jic_type == t["jic_type"], key
            assert m.arco2021_type == t["arco2021_type"], key
        assert m.jic_type_3d == t["jic_type_3d"], key


def _boundary_slab_ml(a, normal_axis, boundaries):
    """Lesion volume whose voxel centres lie within half a voxel extent of the boundary planes:
    the most that classifying voxel centres can put on the wrong side of them."""
    frame, affine = a.frame, a.scan.affine
    coord = frame.uvw_of_voxels(a.lesion, affine)[:, normal_axis]
    direction = frame.basis[normal_axis]
    extent = float(np.abs(affine[:3, :3].T @ direction).sum())  # voxel size along the normal
    near = np.zeros(coord.shape, bool)
    for b in boundaries:
        near |= np.abs(coord - b) <= extent / 2
    return near.sum() * a.scan.voxel_volume_mm3 / 1000


def test_zone_volumes_match_truth(measured):
    for key, (a, t) in measured.items():
        m = a.result
        if t["lesion_volume_ml"] == 0:
            assert all(v == 0 for v in m.zones_ml.values())
            continue
        wb = m.weight_bearing
        u_med, u_lat = wb["u_med_mm"], wb["u_lat_mm"]
        t1, t2 = u_med + (u_lat - u_med) / 3, u_med + 2 * (u_lat - u_med) / 3
        r3 = m.head_radius_mm / 3
        boundaries = {"A": (0, [t1]), "B": (0, [t1, t2]), "C1": (0, [t2, u_lat]), "C2": (0, [u_lat]),
                      "anterior": (1, [r3]), "central": (1, [-r3, r3]), "posterior": (1, [-r3])}
        for zone, (axis, planes) in boundaries.items():
            # Truth integrates the continuous lesion; voxel centres near a slab boundary may fall on
            # either side; 0.05 mL is the label maps' own discretisation of the lesion (docs/phantom.md).
            bound = _boundary_slab_ml(a, axis, planes) + 0.05
            assert m.zones_ml[zone] == pytest.approx(t["zones_ml"][zone], abs=bound), (key, zone, bound)


def test_arcs_match_truth(measured):
    for key, (a, t) in measured.items():
        m = a.result
        if t["arc_coronal_deg"] is None:
            continue
        # One slice step at the head surface subtends slice/r radians: with 3.5 mm coronal slices the
        # mid-planes cut between slices and both arcs carry that uncertainty (12.6 degrees at r = 24 mm,
        # 1.5 steps); at 1 mm isotropic the bound is 5.7 degrees.
        tol = np.degrees(1.5 * max(a.scan.spacing) / t["head_radius_mm"]) + 2.0
        assert m.arc_coronal_deg == pytest.approx(t["arc_coronal_deg"], abs=tol), key
        assert m.arc_sagittal_deg == pytest.approx(t["arc_sagittal_deg"], abs=tol), key


# ONFH06: intact at baseline, collapsed at 12 months (docs/method.md section 6) ----------------------
@pytest.fixture(scope="module")
def collapse_batch(tmp_path_factory):
    """ONFH06's two visits through ``onfh batch`` with the default settings, as the sample's batch
    runs them: (out folder, scans.csv rows by month, changes.csv row, truth by month)."""
    rows = [r for r in ROWS if r["subject"] == "ONFH06"]
    assert [r["timepoint_months"] for r in rows] == ["0", "12"]
    folder = tmp_path_factory.mktemp("onfh06")
    with (folder / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["subject", "side", "timepoint_months", "image", "labels",
                                                "femur_mask", "acetabular_edge", "outcome"], extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, **{k: str(SAMPLE / r[k]) for k in ("image", "labels", "femur_mask")}})
    out = folder / "out"
    assert run_batch(folder / "manifest.csv", out, Settings(), workers=1) == 0
    scans = {r["timepoint_months"]: r for r in csv.DictReader((out / "scans.csv").open())}
    (change,) = list(csv.DictReader((out / "changes.csv").open()))
    return out, scans, change, {r["timepoint_months"]: _truth(r) for r in rows}


def test_collapse_between_visits_matches_truth(collapse_batch):
    out, scans, change, truth = collapse_batch
    assert "dent" not in truth["0"]  # intact at baseline
    dent = truth["12"]["dent"]
    assert dent["head_depression_mm"] > 2.5  # IIIB, clear of the 2 mm border by more than the error target
    for month, true_mm, true_stage in (("0", 0.0, "none"), ("12", dent["head_depression_mm"], "IIIB")):
        row = scans[month]
        metrics = json.loads((out / row["folder"] / "metrics.json").read_text())
        measured = float(row["head_depression_mm"])
        assert row["arco2019_collapse"] == metrics["arco2019_collapse"] == true_stage, month
        assert abs(measured - true_mm) <= 0.6, month  # the target on 3-4 mm slices
        if true_stage == "none":
            assert measured < metrics["collapse"]["detection_limit_mm"]
    metrics = json.loads((out / scans["12"]["folder"] / "metrics.json").read_text())
    collapse = metrics["collapse"]
    # where: the phantom's deepest point, within the averaging width and the slice thickness
    assert np.linalg.norm(np.subtract(collapse["location_ras_mm"], dent["deepest_point_ras_mm"])) < 4.0
    # the missing cap: pi h^2 (3r - h) / 3; the thick-slice ends left out of the region take a little
    assert collapse["missing_volume_ml"] == pytest.approx(dent["missing_volume_ml"], rel=0.2)
    # and between the visits: a new collapse, the depression's change close to the dent
    assert change["new_collapse"] == "true"
    assert abs(float(change["head_depression_change_mm"]) - dent["head_depression_mm"]) <= 0.6
    cohort = json.loads((out / "cohort.json").read_text())
    assert cohort["new_collapse"]["n_new"] == 1
    assert cohort["collapse_arco2019"]["12 months"]["progressed"]["stages"]["IIIB"] == 1
