"""Real anatomy: the native right femoral head of a real pelvic CT (../shared/realdata)."""

import json

import nibabel as nib
import numpy as np
import pytest

from pipeline.app.analyze import run_analyze
from pipeline.config import Settings

from conftest import realdata, save_nifti


@pytest.fixture(scope="module")
def ct_right(tmp_path_factory):
    """example_ct analysed from the femur and hip-bone masks (healthy head: empty lesion mask)."""
    ct = realdata("example_ct.nii.gz")
    labels = realdata("ct_pelvis_labels")
    tmp = tmp_path_factory.mktemp("ct")
    femur = nib.load(str(labels / "femur_right.nii.gz"))
    empty = save_nifti(tmp / "no_lesion.nii.gz", np.zeros(femur.shape, np.uint8), femur.affine)
    out = tmp / "out"
    run_analyze(ct, "right", out, Settings(), femur_mask=labels / "femur_right.nii.gz", lesion_mask=empty,
                acetabulum_mask=labels / "hip_right.nii.gz")
    return json.loads((out / "metrics.json").read_text()), out


def test_real_head_from_femur_mask_is_plausible(ct_right):
    m, out = ct_right
    # Adult femoral heads are 40-50 mm across (docs/method.md section 7); this one is about 45 mm.
    assert 20.0 <= m["head_radius_mm"] <= 27.0
    assert 30.0 <= m["head_volume_ml"] <= 70.0
    assert m["sphere_fit_rms_mm"] < 1.5  # 3 mm voxels: half a voxel of surface roughness
    # The right head is the one at greater RAS x than the body's midline (x of the image centre).
    assert m["head_center_ras_mm"][0] > 0
    assert m["segmentation"]["head_isolation"]["method"] == "neck-plane"
    assert m["lesion_volume_ml"] == 0 and m["jic_type"] is None and m["size_class"] is None
    assert any("empty lesion" in w for w in m["warnings"])
    assert (out / "qc.png").stat().st_size > 10_000


def test_real_acetabulum_gives_a_normal_centre_edge_angle(ct_right):
    m, _ = ct_right
    wb = m["weight_bearing"]
    assert wb["source"] == "acetabulum-mask"
    # Wiberg's lateral centre-edge angle of a normal adult hip: 20-45 degrees.
    assert 20.0 <= wb["lce_angle_deg"] <= 45.0
    # The span's lateral end and the angle are two readings of one edge point (head frame, right hip).
    u, _, w = np.subtract(wb["details"]["edge_ras_mm"], m["head_center_ras_mm"])
    assert wb["u_lat_mm"] == pytest.approx(u, abs=1e-3)
    assert wb["lce_angle_deg"] == pytest.approx(np.degrees(np.arctan2(u, w)), abs=1e-3)
    # The edge overhangs the head: it lies beyond the head surface, above the centre.
    assert np.hypot(u, w) > m["head_radius_mm"] and w > 0


def test_real_intact_head_reads_none_and_says_what_that_rules_out(ct_right):
    """A real head on 3 mm CT voxels, outlined by TotalSegmentator: its dips reach 4-5 mm (the
    outline's staircase and the head's own asphericity), all under the roughness limit, so "none";
    but a limit that high cannot tell a IIIA or small IIIB collapse from an intact head, and says so."""
    m, _ = ct_right
    rec = m["collapse"]
    assert m["arco2019_collapse"] == "none" and rec["depressed_area_mm2"] == 0.0
    assert m["head_depression_mm"] < rec["detection_limit_mm"]
    # 0.7 x 3 mm voxel = 2.1 mm straight up; the outline's roughness raises it further
    assert rec["top_in_end_slices"] is False
    assert rec["top_limit_mm"] == pytest.approx(max(2.1, rec["roughness_limit_mm"]), abs=1e-3)
    assert rec["top_limit_mm"] > 2.0
    assert any("stage 'none' does not rule out collapse" in f for f in m["review_flags"])

