"""Implausible label maps (issue 11): an image given as labels, a head that is no femoral head, and
an implausible necrotic fraction are refused or flagged; warnings stay one short line each."""

import csv
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _hip_pair import HipModel, grid, render

from pipeline.app.batch import run_batch
from pipeline.app.cli import main
from pipeline.config import Settings, load_settings
from pipeline.errors import InputError
from pipeline.io.scan import load_scan
from pipeline.masks import labels as labels_mod
from pipeline.masks.labels import masks_from_label_map
from pipeline.measures.results import HipMetrics

from conftest import ball_and_cap_labels, grid_affine, realdata, save_nifti, voxel_centres

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
CENTRE = (40.3, -10.2, 5.1)
#: Measurement settings without the slow extras (none of them takes part in these checks).
FAST = "reconstruction: {isotropic: false}\noutputs: {stl: false, qc_png: false}\n"
#: A warning longer than this is no longer one readable line.
MAX_WARNING_CHARS = 200


def _grid(size_mm=60.0, spacing=(1.0, 1.0, 1.0)):
    shape = tuple(int(np.ceil(size_mm / s)) for s in spacing)
    return shape, grid_affine(shape, spacing, center_mm=CENTRE)


def _image(labels):
    """Noise with a bright head (labels 1 and 2; other labels are no anatomy of the image)."""
    rng = np.random.default_rng(3)
    return (rng.normal(400, 30, labels.shape) + 300 * np.isin(labels, (1, 2))).astype(np.int16)


def _hip(cap_mm: float = 9.0):
    """A right hip (head cut at the neck, neck, shaft, acetabulum): image, labels, affine."""
    model = HipModel()
    shape = (40, 40, 36)
    affine = grid(shape, (2.2, 2.2, 2.4), model.c + np.array([8.0, 0.0, -10.0]))
    image, labels = render(model, shape, affine, cap_mm)
    return image, labels, affine


def _write_case(folder: Path, labels, affine, name="case", label_dtype=None, image=None):
    folder.mkdir(parents=True, exist_ok=True)
    image = save_nifti(folder / f"{name}.nii.gz", _image(labels) if image is None else image, affine)
    lab = save_nifti(folder / f"{name}_labels.nii.gz",
                     labels if label_dtype is None else labels.astype(label_dtype), affine)
    return image, lab


def _fast(folder: Path) -> Path:
    path = folder / "fast.yaml"
    path.write_text(FAST)
    return path


def _analyze(capsys, image, labels, out, *extra):
    rc = main(["analyze", str(image), "--labels", str(labels), "--side", "right", "--out", str(out), *map(str, extra)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _assert_one_line_refusal(rc, out_text, err, out):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onfh: error: "), err
    assert out_text == ""
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]
    return lines[0]


def _assert_short_warnings(metrics):
    for w in metrics["warnings"]:
        assert "\n" not in w and len(w) < MAX_WARNING_CHARS, w


# 1. label maps that are images ------------------------------------------------------------------
def test_image_given_as_its_own_label_map_is_refused_in_one_line(tmp_path, capsys):
    image = SAMPLE / "ONFH01_m00_cor.nii.gz"
    values = np.unique(np.asanyarray(nib.load(str(image)).dataobj))
    n = int(np.count_nonzero(values))  # distinct non-zero values: hundreds, where a map has a few
    out = tmp_path / "out"
    line = _analyze(capsys, image, image, out)
    line = _assert_one_line_refusal(*line, out)
    assert f"has {n:,} distinct non-zero values (labels.max_distinct_values: 16): an image" in line
    assert "expected head label 1 and lesion label 2" in line
    assert len(line) < MAX_WARNING_CHARS


def test_image_arrays_are_refused_on_the_napari_path_too():
    # napari hands arrays to masks_from_label_map: an image layer's voxels, float or integer.
    scan = load_scan(SAMPLE / "ONFH01_m00_cor.nii.gz")
    with pytest.raises(InputError, match=r"distinct non-zero values \(non-integer\)") as err:
        masks_from_label_map(scan.data.astype(np.float32) / 7.0, scan, "right", Settings())
    assert "\n" not in str(err.value) and len(str(err.value)) < MAX_WARNING_CHARS
    with pytest.raises(InputError, match=r"distinct non-zero values \(labels.max_distinct_values: 16\): an image"):
        masks_from_label_map(scan.data, scan, "right", Settings())


def test_float_binary_masks_are_label_maps(tmp_path, capsys):
    # TotalSegmentator writes binary masks as float64 0/1: whole numbers, two values.
    img, lab, aff = _hip()
    ball = (lab > 0).astype(np.float64)
    image, labels = _write_case(tmp_path, ball, aff, label_dtype=np.float64, image=img)
    assert nib.load(str(labels)).get_data_dtype() == np.float64
    rc, _, err = _analyze(capsys, image, labels, tmp_path / "out", "--config", _fast(tmp_path))
    assert rc == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["head_volume_ml"] == pytest.approx(ball.sum() * abs(np.linalg.det(aff[:3, :3])) / 1000.0)
    assert any("lesion label 2 absent" in w for w in metrics["warnings"])
    _assert_short_warnings(metrics)
    # the same float array on the napari path gives the same head
    scan = load_scan(image)
    head, lesion, _ = masks_from_label_map(ball, scan, "right", Settings())
    assert np.array_equal(head, ball > 0) and not lesion.any()


def test_real_totalsegmentator_maps_binary_accepted_multiclass_named():
    limit = Settings().labels.max_distinct_values
    folder = realdata("ct_pelvis_labels")
    for name in ("femur_right", "hip_right"):
        data = np.asanyarray(nib.load(str(folder / f"{name}.nii.gz")).dataobj)
        assert data.dtype == np.float64
        head, lesion, _ = labels_mod.masks_from_labels(data, max_distinct_values=limit)
        assert np.array_equal(head, data == 1) and not lesion.any()
    # A real multi-class map (TotalSegmentator MR, 23 classes): refused by default, saying how many
    # values it has and which were expected; a raised limit reads it.
    multi = np.asanyarray(nib.load(str(realdata("example_seg_mr.nii.gz"))).dataobj)
    with pytest.raises(InputError, match=r"has 23 distinct non-zero values .*expected head label 1 and lesion label 2"):
        labels_mod.masks_from_labels(multi, max_distinct_values=limit, name="label map example_seg_mr.nii.gz")
    head, lesion, warnings = labels_mod.masks_from_labels(multi, max_distinct_values=30)
    assert np.array_equal(head, np.isin(multi, (1, 2))) and np.array_equal(lesion, multi == 2)
    assert len(warnings) == 1 and warnings[0].startswith("ignored 21 other label values ("), warnings


def _many_labels(folder: Path, n_labels: int):
    """A plausible hip's head (1) and lesion (2) plus one-voxel blobs labelled 3..n_labels."""
    img, labels, aff = _hip()
    free = np.argwhere(labels == 0)
    picks = free[np.random.default_rng(5).choice(len(free), n_labels - 2, replace=False)]
    labels = labels.astype(np.int16)
    for value, (i, j, k) in enumerate(picks, start=3):
        labels[i, j, k] = value
    return _write_case(folder, labels, aff, image=img)


def test_map_with_40_distinct_labels_is_refused(tmp_path, capsys):
    image, lab = _many_labels(tmp_path, 40)
    out = tmp_path / "out"
    line = _assert_one_line_refusal(*_analyze(capsys, image, lab, out), out)
    assert "has 40 distinct non-zero values" in line and "expected head label 1 and lesion label 2" in line


def test_config_raises_the_distinct_value_limit_and_the_ignored_labels_stay_one_line(tmp_path, capsys):
    image, lab = _many_labels(tmp_path, 40)
    config = tmp_path / "many.yaml"
    config.write_text(FAST + "labels: {max_distinct_values: 50}\n")
    rc, _, err = _analyze(capsys, image, lab, tmp_path / "out", "--config", config)
    assert rc == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # 38 one-voxel blobs: counted and their share given, not listed
    ignored = [w for w in metrics["warnings"] if w.startswith("ignored 38 other label values (")]
    assert len(ignored) == 1 and "< 0.1 % of voxels" in ignored[0], metrics["warnings"]
    _assert_short_warnings(metrics)
    assert all(len(line) < MAX_WARNING_CHARS + 20 for line in err.splitlines())


# 2. heads that are no femoral head -----------------------------------------------------------------
def _shape(kind: str):
    if kind == "ball radius 5 mm":
        shape, aff = _grid(30.0, (0.5, 0.5, 0.5))
        return ball_and_cap_labels(shape, aff, CENTRE, 5.0, 2.0), aff
    if kind == "ball radius 60 mm":
        shape, aff = _grid(130.0, (2.0, 2.0, 2.0))
        return ball_and_cap_labels(shape, aff, CENTRE, 60.0, 20.0), aff
    shape, aff = _grid(84.0)
    p = voxel_centres(shape, aff) - np.asarray(CENTRE)
    if kind == "slab 70 x 70 x 12 mm":  # head-sized volume (59 mL), flat
        inside = np.all(np.abs(p) <= (35.0, 35.0, 6.0), axis=-1)
    elif kind == "rod 80 mm, radius 12 mm":  # a shaft, not a head (36 mL)
        inside = (np.hypot(p[..., 1], p[..., 2]) <= 12.0) & (np.abs(p[..., 0]) <= 40.0)
    elif kind == "shell 2 mm thick":  # a head outline drawn but not filled
        inside = np.abs(np.linalg.norm(p, axis=-1) - 21.0) <= 1.0
    labels = inside.astype(np.uint8)
    labels[inside & (p[..., 2] > p[..., 2][inside].max() - 4.0)] = 2
    return labels, aff


@pytest.mark.parametrize("kind, why", [
    ("ball radius 5 mm", "(0.53 mL, a ball of radius 5.0 mm)"),  # a speck: sized before any fit
    ("ball radius 60 mm", "(904.65 mL, a ball of radius 60.0 mm)"),
    ("slab 70 x 70 x 12 mm", "the sphere fitted to the head mask has radius 47.9 mm"),
    ("rod 80 mm, radius 12 mm", "the head mask has 4.14 times the volume of its fitted sphere"),
    ("shell 2 mm thick", "times the volume of its fitted sphere"),
])
def test_a_head_that_is_no_femoral_head_is_refused(tmp_path, capsys, kind, why):
    labels, aff = _shape(kind)
    image, lab = _write_case(tmp_path, labels, aff)
    out = tmp_path / "out"
    line = _assert_one_line_refusal(*_analyze(capsys, image, lab, out, "--config", _fast(tmp_path)), out)
    assert why in line and "not a plausible femoral head" in line
    assert len(line) < MAX_WARNING_CHARS


# 3. implausible necrotic fraction ---------------------------------------------------------------
#: Lesion cap heights (mm) giving the hip phantom a lesion of about 80 % and 26 % of its head.
CAP_NF80, CAP_NF26 = 31.0, 14.5


def _nf_case(folder: Path, cap_mm: float):
    img, labels, aff = _hip(cap_mm)
    return _write_case(folder, labels, aff, name=f"cap{cap_mm:g}", image=img)


def _voxel_nf(labels_path: Path) -> float:
    labels = np.asanyarray(nib.load(str(labels_path)).dataobj)
    return 100.0 * np.count_nonzero(labels == 2) / np.count_nonzero(labels)


def test_implausible_necrotic_fraction_is_warned_and_flagged_for_review(tmp_path, capsys):
    image, labels = _nf_case(tmp_path, CAP_NF80)
    rc, stdout, err = _analyze(capsys, image, labels, tmp_path / "out", "--config", _fast(tmp_path))
    assert rc == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    nf = metrics["necrotic_fraction_pct"]
    assert nf == pytest.approx(_voxel_nf(labels)) and nf > 75
    limit = Settings().gates.max_plausible_nf_pct
    flagged = [w for w in metrics["warnings"] if w.startswith("necrotic fraction") and f"{limit:g} %" in w]
    assert len(flagged) == 1 and f"{nf:.1f} %" in flagged[0]
    assert f"warning: {flagged[0]}" in err
    assert metrics["review_flags"] == flagged
    # a label map a person gave now reaches the scans.csv review column when it is implausible
    assert HipMetrics.from_json(metrics).review() == "review: " + flagged[0]
    _assert_short_warnings(metrics)


def test_plausible_necrotic_fraction_is_not_flagged(tmp_path, capsys):
    image, labels = _nf_case(tmp_path, CAP_NF26)
    rc, _, err = _analyze(capsys, image, labels, tmp_path / "out", "--config", _fast(tmp_path))
    assert rc == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 20 < metrics["necrotic_fraction_pct"] == pytest.approx(_voxel_nf(labels))
    assert metrics["review_flags"] == []
    assert not any(w.startswith("necrotic fraction") for w in metrics["warnings"])
    assert HipMetrics.from_json(metrics).review() is None
    _assert_short_warnings(metrics)


def test_config_raises_the_necrotic_fraction_limit(tmp_path, capsys):
    image, labels = _nf_case(tmp_path, CAP_NF80)
    config = tmp_path / "nf.yaml"
    config.write_text(FAST + "gates: {max_plausible_nf_pct: 90}\n")
    rc, _, err = _analyze(capsys, image, labels, tmp_path / "out", "--config", config)
    assert rc == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 75 < metrics["necrotic_fraction_pct"] == pytest.approx(_voxel_nf(labels))
    assert metrics["review_flags"] == [] and not any(w.startswith("necrotic fraction") for w in metrics["warnings"])
    _assert_short_warnings(metrics)


def test_batch_review_column_flags_an_implausible_imported_label_map(tmp_path):
    rows = []
    for subject, cap in (("P01", CAP_NF80), ("P02", CAP_NF26)):
        image, labels = _nf_case(tmp_path, cap)
        rows.append({"subject": subject, "side": "right", "timepoint_months": 0, "image": image.name,
                     "labels": labels.name})
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "batch"
    log = io.StringIO()
    rc = run_batch(manifest, out, load_settings(_fast(tmp_path)), workers=1, stream=log)
    assert rc == 0, log.getvalue()
    scans = {r["subject"]: r for r in csv.DictReader(open(out / "scans.csv"))}
    assert scans["P01"]["review"].startswith("review: necrotic fraction ")
    assert scans["P02"]["review"] == ""  # a plausible map a person gave: nothing to review


def test_sample_cohort_warnings_are_single_short_lines(tmp_path, capsys):
    # the bilateral scan: its map covers both hips (warned) and the acetabulum is found
    rc, _, err = _analyze(capsys, SAMPLE / "ONFH04_m00_bilat.nii.gz", SAMPLE / "ONFH04_m00_bilat_labels.nii.gz",
                          tmp_path / "out", "--config", _fast(tmp_path))
    assert rc == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert any("both hips" in w for w in metrics["warnings"])
    assert metrics["review_flags"] == []
    _assert_short_warnings(metrics)
