"""`onfh analyze` with imported masks: orientation invariance, outputs, refusals."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from pipeline.app.analyze import run_analyze
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.io.outputs import MARKER

from conftest import all_axis_orders, ball_and_cap_labels, grid_affine, restore, rotation_matrix, save_nifti

CONTRACT_KEYS = {
    "schema_version", "side", "input", "head_volume_ml", "head_mesh_volume_ml", "head_center_ras_mm",
    "head_radius_mm", "sphere_fit_rms_mm", "lesion_volume_ml", "lesion_mesh_volume_ml",
    "necrotic_fraction_pct", "size_class", "jic_type", "jic_type_3d", "arco2021_type", "weight_bearing",
    "zones_ml", "arc_coronal_deg", "arc_sagittal_deg", "cna_deg", "kerboul_grade", "koo_kim_index",
    "centroid_latitude_deg", "centroid_longitude_deg", "segmentation", "warnings", "provenance",
}


def _phantom(tmp_path, spacing=(0.8, 2.5, 0.8), rotation=None, name="hip"):
    shape = tuple(int(np.ceil(56 / s)) for s in spacing)
    aff = grid_affine(shape, spacing, center_mm=(40.0, -10.0, 5.0), rotation=rotation)
    lab = ball_and_cap_labels(shape, aff, (40.3, -10.2, 5.1), 22.0, 8.0)
    rng = np.random.default_rng(1)
    img = (rng.normal(400, 30, shape) + 300 * (lab == 1)).astype(np.int16)
    return lab, img, aff


def _numbers(metrics):
    """The measured figures (what must not depend on storage order)."""
    skip = {"input", "provenance", "segmentation"}
    return {k: v for k, v in metrics.items() if k not in skip}


def _assert_same(a, b, where, path=""):
    """Equal structure, strings and integers; floats equal to 1e-5.

    NIfTI stores the affine in float32: re-storing a flipped axis moves the stored origin by up to
    one float32 step (7.6e-6 mm at 100 mm), so coordinates may differ in the 6th decimal. Volumes,
    types and grades must not differ at all at 1e-5.
    """
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys differ at {path}"
        for k in a:
            _assert_same(a[k], b[k], where, f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{where}: lengths differ at {path}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, where, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= 1e-5, f"{where}: {path} {a} != {b}"
    else:
        assert a == b, f"{where}: {path} {a!r} != {b!r}"


def test_same_scan_in_all_48_axis_orders_gives_identical_figures(tmp_path):
    lab, img, aff = _phantom(tmp_path)
    # qc.png is a picture, not a figure: skipping it keeps 48 runs fast.
    settings = Settings(outputs={"qc_png": False})
    reference = None
    for n, (perm, flips) in enumerate(all_axis_orders()):
        img_s, aff_s = restore(img, aff, perm, flips)
        lab_s, _ = restore(lab, aff, perm, flips)
        ip = save_nifti(tmp_path / f"img{n}.nii.gz", img_s, aff_s)
        lp = save_nifti(tmp_path / f"lab{n}.nii.gz", lab_s, aff_s)
        out = tmp_path / f"out{n}"
        analysis = run_analyze(ip, "right", out, settings, labels=lp)
        figures = _numbers(json.loads((out / "metrics.json").read_text()))
        if reference is None:
            reference = figures
        _assert_same(figures, reference, f"storage order {perm} {flips}")
        # labels.nii.gz overlays the input voxel for voxel, in the input's own order.
        written = nib.load(str(out / "labels.nii.gz"))
        np.testing.assert_array_equal(np.asarray(written.dataobj), lab_s)
        np.testing.assert_allclose(written.affine, aff_s, atol=1e-4)
        assert analysis.result.input["axcodes"] == "".join(nib.aff2axcodes(aff_s))
    assert reference["head_volume_ml"] > 40


def test_oblique_storage_gives_the_same_volumes(tmp_path):
    settings = Settings()
    lab, img, aff = _phantom(tmp_path, spacing=(0.7, 0.7, 3.5))
    lab_o, img_o, aff_o = _phantom(tmp_path, spacing=(0.7, 0.7, 3.5), rotation=rotation_matrix((1, 1, 0), 15))
    results = []
    for tag, (L, I, A) in {"straight": (lab, img, aff), "oblique": (lab_o, img_o, aff_o)}.items():
        out = tmp_path / tag
        run_analyze(save_nifti(tmp_path / f"{tag}.nii.gz", I, A), "right", out, settings,
                    labels=save_nifti(tmp_path / f"{tag}_lab.nii.gz", L, A))
        results.append(json.loads((out / "metrics.json").read_text()))
    straight, oblique = results
    # Different voxels sample the same ball: within the discretisation error of the ball test.
    assert oblique["head_volume_ml"] == pytest.approx(straight["head_volume_ml"], rel=0.01)
    assert oblique["head_mesh_volume_ml"] == pytest.approx(straight["head_mesh_volume_ml"], rel=0.01)


def test_metrics_json_has_every_contract_key_and_no_nan(tmp_path):
    lab, img, aff = _phantom(tmp_path)
    out = tmp_path / "out"
    run_analyze(save_nifti(tmp_path / "i.nii.gz", img, aff), "left", out, Settings(),
                labels=save_nifti(tmp_path / "l.nii.gz", lab, aff))
    text = (out / "metrics.json").read_text()
    metrics = json.loads(text)
    assert CONTRACT_KEYS <= set(metrics)
    assert "NaN" not in text and "Infinity" not in text
    assert {p.name for p in out.iterdir()} == {"head.stl", "labels.nii.gz", "lesion.stl", "metrics.json", "qc.png",
                                               "zones.nii.gz", MARKER}
    prov = metrics["provenance"]
    assert prov["config_sha256"] == Settings().sha256 and prov["packages"]["numpy"] == np.__version__
    assert len(metrics["input"]["sha256"]) == 64


def test_same_input_same_numbers(tmp_path):
    lab, img, aff = _phantom(tmp_path)
    ip, lp = save_nifti(tmp_path / "i.nii.gz", img, aff), save_nifti(tmp_path / "l.nii.gz", lab, aff)
    texts = []
    for n in range(2):
        run_analyze(ip, "right", tmp_path / f"o{n}", Settings(), labels=lp)
        m = json.loads((tmp_path / f"o{n}" / "metrics.json").read_text())
        m["provenance"].pop("elapsed_seconds")
        texts.append(json.dumps(m, sort_keys=True))
    assert texts[0] == texts[1]


def test_mask_on_another_grid_is_refused_naming_the_difference(tmp_path):
    lab, img, aff = _phantom(tmp_path)
    ip = save_nifti(tmp_path / "i.nii.gz", img, aff)
    shifted = aff.copy()
    shifted[:3, 3] += (0.5, 0, 0)
    lp = save_nifti(tmp_path / "l.nii.gz", lab, shifted)
    with pytest.raises(InputError, match="origin"):
        run_analyze(ip, "right", tmp_path / "o", Settings(), labels=lp)
    assert not (tmp_path / "o").exists()
    coarse = aff.copy()
    coarse[:3, :3] *= 1.1
    with pytest.raises(InputError, match="spacing"):
        run_analyze(ip, "right", tmp_path / "o", Settings(), labels=save_nifti(tmp_path / "l2.nii.gz", lab, coarse))


def _onfh(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_bad_input_exit_2_one_line_no_output(tmp_path):
    lab, img, aff = _phantom(tmp_path)
    ip = save_nifti(tmp_path / "i.nii.gz", img, aff)
    lp = save_nifti(tmp_path / "l.nii.gz", lab, aff)
    cases = [
        (tmp_path / "missing.nii.gz", ["--labels", lp]),
        (ip, ["--labels", lp, "--lesion-label", "7"]),
        (ip, ["--labels", lp, "--head-label", "9"]),
        (ip, ["--head-mask", lp]),
        (tmp_path / "l.nii.gz", ["--labels", tmp_path / "i.nii.gz"]),  # intensities are not labels
    ]
    (tmp_path / "garbage.nii.gz").write_bytes(b"not an image at all")
    cases.append((tmp_path / "garbage.nii.gz", ["--labels", lp]))
    for image, extra in cases:
        out = tmp_path / "out"
        proc = _onfh("analyze", image, "--side", "right", "--out", out, *extra)
        assert proc.returncode == 2, (extra, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("onfh: error: "), proc.stderr
        assert "Traceback" not in proc.stderr
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def test_cli_analyze_writes_outputs(tmp_path):
    lab, img, aff = _phantom(tmp_path)
    proc = _onfh("analyze", save_nifti(tmp_path / "i.nii.gz", img, aff), "--side", "right",
                 "--out", tmp_path / "out", "--labels", save_nifti(tmp_path / "l.nii.gz", lab, aff))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert f"NF {metrics['necrotic_fraction_pct']:.1f} %" in proc.stdout


def test_landmarks_with_negative_coordinates_in_both_forms(tmp_path):
    """A left hip's acetabular edge has negative x: `--opt=-x,y,z` and `--opt -x,y,z` both work."""
    lab, img, aff = _phantom(tmp_path)
    flip = np.diag([-1.0, 1, 1, 1])  # mirror the phantom to the patient's left (x < 0)
    ip = save_nifti(tmp_path / "i.nii.gz", img, flip @ aff)
    lp = save_nifti(tmp_path / "l.nii.gz", lab, flip @ aff)
    edge = "-52.5,-10.2,25.0"  # 12.2 mm lateral of the head centre (-40.3) for a left hip
    outs = []
    for n, form in enumerate(([f"--acetabular-edge={edge}"], ["--acetabular-edge", edge])):
        out = tmp_path / f"o{n}"
        proc = _onfh("analyze", ip, "--side", "left", "--out", out, "--labels", lp, *form)
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads((out / "metrics.json").read_text())["weight_bearing"])
    assert outs[0] == outs[1]
    assert outs[0]["source"] == "landmark"
    assert outs[0]["u_lat_mm"] == pytest.approx(12.2, abs=0.3)
    bad = _onfh("analyze", ip, "--side", "left", "--out", tmp_path / "o3", "--labels", lp, "--acetabular-edge", "1,2")
    assert bad.returncode == 2 and "expected a point X,Y,Z" in bad.stderr


def test_qc_title_names_the_masks_and_an_automatic_segmentation_to_review():
    from pipeline.measures.results import HipMetrics

    def title(segmentation):
        return HipMetrics(side="right", warnings=["w"], head_volume_ml=50.0, segmentation=segmentation).qc_title()

    imported = title({"method": "imported label map"})
    assert imported.splitlines()[1] == "masks: imported label map"
    flags = ["slices of 5.0 mm exceed the 4 mm validated for the lesion: check its margin"]
    review = {"method": "automatic", "confidence": {"status": "review", "flags": flags}}
    assert title(review).splitlines()[1] == f"masks: automatic | REVIEW: {flags[0]}"
    ok = {"method": "automatic", "confidence": {"status": "ok", "flags": []}}
    assert title(ok).endswith("masks: automatic | automatic QC ok")
    # --femur-mask alone: the lesion's automatic record carries the confidence
    femur = {"method": "head isolated from a femur mask (neck-plane); lesion segmented automatically inside it",
             "lesion_segmentation": review}
    assert "| REVIEW: slices of 5.0 mm" in title(femur)
