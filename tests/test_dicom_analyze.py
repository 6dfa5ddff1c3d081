"""One acquisition as DICOM and as NIfTI: the same figures, and no patient identifier in any output."""

import json

import numpy as np
import pytest
from _dicom_fixtures import write_series

from pipeline.app.analyze import run_analyze
from pipeline.config import Settings

from conftest import ball_and_cap_labels, grid_affine, rotation_matrix, save_nifti

SECRETS = ("DOE^JANE", "DOE", "SECRET123")


def test_dicom_and_nifti_of_one_acquisition_agree_and_leak_nothing(tmp_path):
    spacing = (0.75, 0.75, 3.0)
    shape = (80, 80, 20)
    aff = grid_affine(shape, spacing, center_mm=(60, -20, 10), rotation=rotation_matrix((0, 1, 1), 12))
    lab = ball_and_cap_labels(shape, aff, (60.2, -19.8, 10.1), 22.0, 7.0)
    img = (np.random.default_rng(3).normal(300, 20, shape) + 300 * (lab > 0)).astype(np.int16)
    write_series(tmp_path / "dcm", img, aff, patient_name="DOE^JANE", patient_id="SECRET123",
                 description="cor t1")
    labels = save_nifti(tmp_path / "labels.nii.gz", lab, aff)
    nifti = save_nifti(tmp_path / "img.nii.gz", img, aff)
    results = {}
    for name, image in (("dicom", tmp_path / "dcm"), ("nifti", nifti)):
        run_analyze(image, "right", tmp_path / name, Settings(), labels=labels)
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    for key in ("head_volume_ml", "lesion_volume_ml", "necrotic_fraction_pct", "head_mesh_volume_ml",
                "lesion_mesh_volume_ml"):
        # NIfTI stores the affine in float32: the voxel volumes agree to its 1e-7 relative precision.
        assert results["dicom"][key] == pytest.approx(results["nifti"][key], rel=1e-6), key
    assert results["dicom"]["input"]["format"] == "dicom"
    assert results["dicom"]["input"]["shape"] == list(shape)
    for path in (tmp_path / "dicom").iterdir():
        blob = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in blob, f"{secret} leaked into {path.name}"


def _dicom_visit(folder, patient_id, seed):
    spacing = (1.0, 1.0, 3.0)
    shape = (64, 64, 20)
    aff = grid_affine(shape, spacing, center_mm=(0, 0, 0))
    lab = ball_and_cap_labels(shape, aff, (0.2, -0.1, 0.3), 22.0, 7.0)
    img = (np.random.default_rng(seed).normal(300, 20, shape) + 300 * (lab > 0)).astype(np.int16)
    write_series(folder, img, aff, patient_name="DOE^JANE", patient_id=patient_id)
    return folder, save_nifti(folder.parent / f"{folder.name}_labels.nii.gz", lab, aff)


def test_compare_refuses_dicom_visits_of_two_patients(tmp_path, capsys):
    from pipeline.app.cli import main

    base, base_labels = _dicom_visit(tmp_path / "v0", "SECRET123", 1)
    other, other_labels = _dicom_visit(tmp_path / "v1", "OTHER456", 2)
    rc = main(["compare", str(base), str(other), "--side", "right", "--out", str(tmp_path / "cmp"),
               "--baseline-labels", str(base_labels), "--followup-labels", str(other_labels)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "different Patient IDs" in err[0]
    assert "SECRET123" not in err[0] and "OTHER456" not in err[0]
    assert not (tmp_path / "cmp").exists()


def test_compare_of_one_patient_writes_no_patient_key(tmp_path, capsys):
    from pipeline.app.cli import main
    from pipeline.io.scan import load_scan

    base, base_labels = _dicom_visit(tmp_path / "v0", "SECRET123", 1)
    follow, follow_labels = _dicom_visit(tmp_path / "v1", "SECRET123", 2)
    key = load_scan(base).meta["patient_key"]
    assert key == load_scan(follow).meta["patient_key"] and "SECRET123" not in key
    rc = main(["compare", str(base), str(follow), "--side", "right", "--out", str(tmp_path / "cmp"),
               "--baseline-labels", str(base_labels), "--followup-labels", str(follow_labels)])
    assert rc == 0, capsys.readouterr().err
    for path in (tmp_path / "cmp").rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            for secret in (*SECRETS, key):
                assert secret.encode() not in blob, f"{secret} leaked into {path.name}"
