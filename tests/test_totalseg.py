"""A TotalSegmentator label map as --femur-mask: femur_<side> and hip_<side> by the names the file
carries (NIfTI header extension, sidecar JSON), else by the documented numbers (said in a warning);
a binary femur mask as before. Real maps from ../shared/realdata where available."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from pipeline.app.analyze import run_analyze
from pipeline.app.cli import main
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.io.scan import load_scan
from pipeline.masks.totalseg import NUMBERINGS, label_names, read_femur_mask

from conftest import grid_affine, realdata, save_nifti

TOL = 0.01
#: TotalSegmentator 2 'total' (CT) numbers of the four bones
TOTAL_V2 = {"femur_left": 75, "femur_right": 76, "hip_left": 77, "hip_right": 78}


def caret_label_table(table: dict[int, str]) -> nib.nifti1.Nifti1Extension:
    """The header extension TotalSegmentator's --ml writes (nifti_ext_header.add_label_map_to_nifti):
    code 0, an XML CaretExtension whose LabelTable names every value."""
    body = "".join(f'<Label Key="{k}" Red="1.0" Green="0.0" Blue="0.0" Alpha="1"><![CDATA[{n}]]></Label>\n'
                   for k, n in table.items())
    xml = ('<?xml version="1.0" encoding="UTF-8"?> <CaretExtension>  <Date><![CDATA[2013-07-14T05:45:09]]></Date>'
           '   <VolumeInformation Index="0">   <LabelTable>\n' + body + '\n  </LabelTable>  <StudyMetaDataLinkSet>'
           '  </StudyMetaDataLinkSet>  <VolumeType><![CDATA[Label]]></VolumeType>   </VolumeInformation>'
           '</CaretExtension>\n              ')
    return nib.nifti1.Nifti1Extension(0, xml.encode("utf-8"))


def save_map(path, data, affine, table: dict[int, str] | None = None):
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if table is not None:
        img.header.extensions.append(caret_label_table(table))
    nib.save(img, str(path))
    return path


# synthetic maps: two "femurs" and two "hip bones" on a small grid ----------------------------
@pytest.fixture
def grid(tmp_path):
    shape, affine = (40, 12, 12), grid_affine((40, 12, 12), (2.0, 2.0, 2.0))
    image = save_nifti(tmp_path / "scan.nii.gz", np.zeros(shape, np.int16), affine)
    bones = {name: np.zeros(shape, bool) for name in TOTAL_V2}
    bones["femur_right"][30:36, 4:8, 2:6] = True  # right = greater RAS x = higher first index here
    bones["hip_right"][28:34, 4:8, 8:11] = True
    bones["femur_left"][4:10, 4:8, 2:6] = True
    bones["hip_left"][6:12, 4:8, 8:11] = True
    return load_scan(image), affine, bones, tmp_path


def multilabel(bones, numbers):
    out = np.zeros(next(iter(bones.values())).shape, np.uint8)
    for name, value in numbers.items():
        out[bones[name]] = value
    return out


def test_names_in_the_header_extension_win_over_the_numbers(grid):
    scan, affine, bones, tmp = grid
    # numbers of no TotalSegmentator version: only the names can say which label is which
    numbers = {"femur_left": 3, "femur_right": 5, "hip_left": 7, "hip_right": 9}
    path = save_map(tmp / "ml.nii.gz", multilabel(bones, numbers), affine, {v: k for k, v in numbers.items()})
    for side in ("right", "left"):
        fm = read_femur_mask(path, scan, side, TOL)
        np.testing.assert_array_equal(fm.femur, bones[f"femur_{side}"])
        np.testing.assert_array_equal(fm.hip, bones[f"hip_{side}"])
        assert fm.record["label_names"].startswith("NIfTI header extension")
        assert fm.record["femur"] == {"name": f"femur_{side}", "labels": [numbers[f"femur_{side}"]]}
        assert fm.warnings == []


@pytest.mark.parametrize("form", ["value->name", "name->value", "under labels"])
def test_names_from_a_sidecar_json(grid, form):
    scan, affine, bones, tmp = grid
    numbers = {"femur_left": 11, "femur_right": 12, "hip_left": 13, "hip_right": 14}
    path = save_map(tmp / "bones.nii.gz", multilabel(bones, numbers), affine)
    table = {str(v): k for k, v in numbers.items()} if form == "value->name" else numbers
    (tmp / "bones.json").write_text(json.dumps({"labels": table} if form == "under labels" else table))
    fm = read_femur_mask(path, scan, "right", TOL)
    np.testing.assert_array_equal(fm.femur, bones["femur_right"])
    np.testing.assert_array_equal(fm.hip, bones["hip_right"])
    assert fm.record["label_names"] == "sidecar bones.json" and fm.warnings == []


@pytest.mark.parametrize("task", ["total", "total_mr"])
def test_without_names_the_documented_numbers_are_assumed_and_said(grid, task):
    scan, affine, bones, tmp = grid
    numbers = {name: NUMBERINGS[task][name] for name in TOTAL_V2}
    path = save_map(tmp / "ml.nii.gz", multilabel(bones, numbers), affine)
    (tmp / "ml.json").write_text(json.dumps({"Description": "not a label table"}))
    fm = read_femur_mask(path, scan, "right", TOL)
    np.testing.assert_array_equal(fm.femur, bones["femur_right"])
    np.testing.assert_array_equal(fm.hip, bones["hip_right"])
    description = NUMBERINGS[task]["description"]
    assert fm.record["label_names"].startswith(f"assumed: {description}")
    [warning] = fm.warnings
    assert description in warning and f"femur_right = {numbers['femur_right']}" in warning
    assert "ml.json holds no label table" in warning


def test_a_binary_femur_mask_is_the_whole_femur_as_before(grid):
    scan, affine, bones, tmp = grid
    both = bones["femur_left"] | bones["femur_right"]
    for dtype, value in ((np.float64, 1.0), (np.uint8, 7)):  # TotalSegmentator's float 0/1; any single label
        path = save_map(tmp / f"femur_{value}.nii.gz", both.astype(dtype) * value, affine)
        fm = read_femur_mask(path, scan, "right", TOL)
        np.testing.assert_array_equal(fm.femur, both)  # cut to the side later, as before (select_side)
        assert fm.hip is None and fm.record is None and fm.warnings == []
    with pytest.raises(InputError, match="mask empty.nii.gz is empty"):
        read_femur_mask(save_map(tmp / "empty.nii.gz", np.zeros(both.shape, np.uint8), affine), scan, "right", TOL)


def test_refusals_are_one_line(grid):
    scan, affine, bones, tmp = grid
    only_left = save_map(tmp / "left.nii.gz", multilabel(bones, {"femur_left": 1, "hip_left": 2}), affine,
                         {1: "femur_left", 2: "hip_left"})
    with pytest.raises(InputError) as err:
        read_femur_mask(only_left, scan, "right", TOL)
    assert str(err.value) == ("femur_right (not in its label table) is absent from femur mask left.nii.gz "
                              "(labels present: femur_left, hip_left)")
    # no names, values that no TotalSegmentator task has: an image, not a map
    image = np.arange(np.prod(scan.shape), dtype=np.int16).reshape(scan.shape) - 100
    with pytest.raises(InputError, match="neither a binary mask nor a TotalSegmentator map") as err:
        read_femur_mask(save_map(tmp / "image.nii.gz", image, affine), scan, "right", TOL)
    assert "\n" not in str(err.value)
    # no names, a head/lesion map given as a femur mask: femur_right (37 of total_mr) is absent
    with pytest.raises(InputError, match=r"femur_right \(label 37 of TotalSegmentator 2 'total_mr' .* "
                                         r"\(labels present: 1, 2\)"):
        read_femur_mask(save_map(tmp / "hl.nii.gz", multilabel(bones, {"femur_right": 1, "hip_right": 2}), affine),
                        scan, "right", TOL)


# real maps ------------------------------------------------------------------------------------
def test_real_total_mr_map_carries_its_names_and_has_no_femur(tmp_path, capsys):
    seg = realdata("example_seg_mr.nii.gz")
    class_map = json.loads(realdata("class_maps.json").read_text())["total_mr"]
    table, source, _ = label_names(seg)
    assert source.startswith("NIfTI header extension")
    assert table == {int(k): v for k, v in class_map.items()}  # all 50 names, femur_right = 37
    out = tmp_path / "out"
    rc = main(["analyze", str(realdata("example_mr_sm.nii.gz")), "--side", "right", "--femur-mask", str(seg),
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and not out.exists()
    assert err.startswith("onfh: error: femur_right (label 37 of its label table) is absent from femur mask "
                          "example_seg_mr.nii.gz (labels present: spleen, kidney_right, ")
    assert "(23 labels)" in err


@pytest.fixture(scope="module")
def ct_runs(tmp_path_factory):
    """example_ct from the binary femur_right + hip_right masks (as tests/test_realdata_ct.py), and
    from one v2-numbered multilabel map of the four bones without names, right and left."""
    ct = realdata("example_ct.nii.gz")
    labels = realdata("ct_pelvis_labels")
    tmp = tmp_path_factory.mktemp("totalseg_ct")
    ref = nib.load(str(labels / "femur_right.nii.gz"))
    ml = np.zeros(ref.shape, np.uint8)
    for name, value in TOTAL_V2.items():
        ml[np.asarray(nib.load(str(labels / f"{name}.nii.gz")).dataobj) != 0] = value
    multi = save_map(tmp / "multilabel.nii.gz", ml, ref.affine)
    empty = save_nifti(tmp / "no_lesion.nii.gz", np.zeros(ref.shape, np.uint8), ref.affine)
    run_analyze(ct, "right", tmp / "binary", Settings(), femur_mask=labels / "femur_right.nii.gz", lesion_mask=empty,
                acetabulum_mask=labels / "hip_right.nii.gz")
    runs = {"binary": json.loads((tmp / "binary" / "metrics.json").read_text())}
    for side in ("right", "left"):
        rc = main(["analyze", str(ct), "--femur-mask", str(multi), "--lesion-mask", str(empty), "--side", side,
                   "--out", str(tmp / side)])
        assert rc == 0
        runs[side] = json.loads((tmp / side / "metrics.json").read_text())
    return runs


def test_real_multilabel_right_gives_the_binary_figures_exactly(ct_runs):
    binary, multi = ct_runs["binary"], ct_runs["right"]
    for key in ("head_volume_ml", "head_mesh_volume_ml", "head_center_ras_mm", "head_radius_mm",
                "sphere_fit_rms_mm", "sphere_fit", "reconstruction", "weight_bearing", "side_check"):
        assert multi[key] == binary[key], key
    assert multi["weight_bearing"]["source"] == "acetabulum-mask"  # hip_right used as the acetabulum
    record = multi["segmentation"]["femur_map"]
    assert record["femur"] == {"name": "femur_right", "labels": [76]}
    assert record["hip"] == {"name": "hip_right", "labels": [78]} and record["hip_used_as_acetabulum"]
    assert record["label_names"].startswith("assumed: TotalSegmentator 2 'total' (CT)")
    assert any("carries no label names" in w and "femur_right = 76" in w for w in multi["warnings"])


def test_real_multilabel_left_measures_the_left_femur(ct_runs):
    # The left hip holds a prosthesis; the code measures the left femur's head (a prosthetic ball
    # or what TotalSegmentator labelled femur_left), never the native right head.
    right, left = ct_runs["right"], ct_runs["left"]
    assert left["segmentation"]["femur_map"]["femur"] == {"name": "femur_left", "labels": [75]}
    assert left["head_center_ras_mm"][0] < 0 < right["head_center_ras_mm"][0]  # the patient's left: lower RAS x
    assert abs(left["head_center_ras_mm"][0] - right["head_center_ras_mm"][0]) > 120  # the other hip, not the same
    assert left["side_check"]["found"] == "left"
