"""--side is checked against the anatomy: a wrong side is refused, never measured mirrored."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.app.analyze import run_analyze
from pipeline.app.cli import main
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.geometry.side import confirm_side

from conftest import realdata, save_nifti

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def analyze(stem, side, out, *extra):
    return main(["analyze", str(SAMPLE / f"{stem}.nii.gz"), "--labels", str(SAMPLE / f"{stem}_labels.nii.gz"),
                 "--side", side, "--out", str(out), *extra])


def err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onfh: error:"), err
    return err[0]


@pytest.mark.parametrize("stem, truth", [("ONFH01_m00_cor", "right"), ("ONFH02_m00_cor", "left")])
def test_wrong_side_on_imported_labels_is_refused(stem, truth, tmp_path, capsys):
    wrong = "left" if truth == "right" else "right"
    out = tmp_path / "out"
    assert analyze(stem, wrong, out) == 2
    line = err_line(capsys)
    assert f"shows a {truth} hip" in line and "neck" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_right_side_is_confirmed_and_recorded(tmp_path):
    out = tmp_path / "out"
    assert analyze("ONFH01_m00_cor", "right", out) == 0
    check = json.loads((out / "metrics.json").read_text())["side_check"]
    assert check["status"] == "confirmed" and check["found"] == "right" and check["given"] == "right"
    neck = check["cues"][0]
    # the phantom's neck runs laterally and down from the head: +x for a right hip, -z
    assert neck["cue"] == "femoral neck (image marrow)" and neck["neck_axis_ras"][0] > 0.5
    assert neck["neck_axis_ras"][2] < 0


def test_both_hips_of_a_bilateral_scan_are_confirmed(tmp_path):
    for side in ("right", "left"):
        assert analyze("ONFH04_m00_bilat", side, tmp_path / side) == 0
        check = json.loads((tmp_path / side / "metrics.json").read_text())["side_check"]
        assert check["found"] == side and check["status"] == "confirmed"
        # both heads lie 80-100 mm from x = 0: the position cue agrees too
        assert {c["side"] for c in check["cues"]} == {side}


def test_trust_side_keeps_the_given_side_with_a_warning(tmp_path, capsys):
    out = tmp_path / "out"
    assert analyze("ONFH01_m00_cor", "left", out, "--trust-side") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["side"] == "left" and m["side_check"]["found"] == "right"
    assert m["side_check"]["status"].startswith("contradicted")
    assert any("kept against the anatomy" in w for w in m["warnings"])


def test_real_ct_femur_mask_gives_the_side(tmp_path):
    """A real CT's right femur (TotalSegmentator mask): its neck and hip bone both say right."""
    ct = realdata("example_ct.nii.gz")
    labels = realdata("ct_pelvis_labels")
    femur = nib.load(str(labels / "femur_right.nii.gz"))
    empty = save_nifti(tmp_path / "no_lesion.nii.gz", np.zeros(femur.shape, np.uint8), femur.affine)
    kwargs = dict(femur_mask=labels / "femur_right.nii.gz", lesion_mask=empty,
                  acetabulum_mask=labels / "hip_right.nii.gz")
    with pytest.raises(InputError, match="shows a right hip"):
        run_analyze(ct, "left", tmp_path / "wrong", Settings(), **kwargs)
    analysis = run_analyze(ct, "right", tmp_path / "right", Settings(), **kwargs)
    check = analysis.result.side_check
    assert check["status"] == "confirmed"
    assert {c["cue"]: c["side"] for c in check["cues"]} == {"femoral neck (femur mask)": "right",
                                                            "acetabulum": "right", "position (scanner x)": "right"}


def _cue(name, side):
    return {"cue": name, "side": side, "why": f"{name} says {side}"}


def test_disagreeing_anatomy_is_not_confirmed_but_not_refused():
    check, warnings = confirm_side("right", [_cue("femoral neck (image marrow)", "right"), _cue("acetabulum", "left")],
                                   Settings())
    assert check["found"] is None and check["status"].startswith("not confirmed")
    assert len(warnings) == 1 and "\n" not in warnings[0]


def test_position_alone_warns_never_refuses():
    """A reset origin moves the head's x: position cannot refuse, it can only warn."""
    check, warnings = confirm_side("right", [_cue("position (scanner x)", "left")], Settings())
    assert check["found"] is None and warnings and "check it" in warnings[0]
    check, warnings = confirm_side("right", [], Settings())
    assert check["status"] == "not confirmed: no femoral neck or acetabulum could be read" and warnings == []


def test_compare_refuses_hips_of_different_sides_even_when_trusted(tmp_path, capsys):
    rc = main(["compare", str(SAMPLE / "ONFH01_m00_cor.nii.gz"), str(SAMPLE / "ONFH02_m12_cor.nii.gz"),
               "--side", "right", "--trust-side", "--out", str(tmp_path / "cmp"),
               "--baseline-labels", str(SAMPLE / "ONFH01_m00_cor_labels.nii.gz"),
               "--followup-labels", str(SAMPLE / "ONFH02_m12_cor_labels.nii.gz")])
    assert rc == 2
    assert "side mismatch" in err_line(capsys)
    assert not (tmp_path / "cmp").exists()
