"""NIfTI, NRRD and MetaImage readers, refusals, and `onfh info` facts (DICOM: test_dicom.py).

Truth comes from outside the readers: nibabel's own ``img.affine``, SimpleITK's own index ->
physical point mapping, and volumes written from a known array and affine.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path as NIBABEL_DATA

from pipeline.errors import InputError
from pipeline.io.info import format_info, scan_info
from pipeline.io.readers import LPS_TO_RAS
from pipeline.io.scan import load_scan, read_image

from conftest import ROOT, grid_affine, realdata, rotation_matrix


def oblique_volume(right_handed: bool):
    """A random int16 volume on a 20-degree oblique, anisotropic grid (truth for all formats)."""
    rng = np.random.default_rng(7)
    data = rng.integers(-500, 4000, size=(12, 9, 7)).astype(np.int16)
    affine = grid_affine(data.shape, (0.7, 0.9, 3.1), (10.0, -20.0, 30.0), rotation_matrix([1, 2, 3], 20))
    if not right_handed:
        affine[:, 0] *= -1
        affine[:3, 3] -= affine[:3, 0] * (data.shape[0] - 1)
    return data, affine


def sitk_image(data, affine_ras):
    """The same volume as a SimpleITK image: LPS geometry, array given as (z, y, x)."""
    img = sitk.GetImageFromArray(data.transpose(2, 1, 0))
    lps = LPS_TO_RAS @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img


def assert_one_line_error(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in: {msg}"


# NIfTI --------------------------------------------------------------------------------------
def test_real_lps_nifti_gives_nibabels_affine():
    path = realdata("example_mr_sm.nii.gz")
    img = nib.load(str(path))
    data, affine, meta = read_image(path)
    assert affine.dtype == np.float64
    np.testing.assert_array_equal(affine, img.affine)
    np.testing.assert_array_equal(data, np.asanyarray(img.dataobj))
    assert data.shape == (117, 91, 20) and meta["format"] == "nifti" and meta["warnings"] == []
    scan = load_scan(path)
    assert scan.axcodes == ("L", "P", "S")
    # Canonical order: every voxel keeps its world position.
    ijk = np.array([5, 7, 3])
    world = img.affine[:3, :3] @ ijk + img.affine[:3, 3]
    canon_ijk = np.round(scan.ras_to_index(world)).astype(int)
    assert scan.data[tuple(canon_ijk)] == data[tuple(ijk)]


def test_nibabel_bundled_files():
    anat = Path(NIBABEL_DATA) / "anatomical.nii"
    data, affine, _ = read_image(anat)
    np.testing.assert_array_equal(affine, nib.load(str(anat)).affine)
    assert data.shape == nib.load(str(anat)).shape and np.isfinite(data).all()
    with pytest.raises(InputError) as exc:
        load_scan(Path(NIBABEL_DATA) / "example4d.nii.gz")
    assert_one_line_error(exc, "4D")


@pytest.mark.parametrize("sform_code, qform_code, expect", [(1, 1, "sform"), (0, 1, "qform"), (2, 0, "sform"),
                                                            (0, 0, "fallback")])
def test_nifti_sform_qform_precedence_is_nibabels(tmp_path, sform_code, qform_code, expect):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    sform = grid_affine(data.shape, (1.0, 1.5, 2.0), (3, 4, 5), rotation_matrix([0, 0, 1], 30))
    qform = grid_affine(data.shape, (1.0, 1.5, 2.0), (-7, 8, 9))
    img = nib.Nifti1Image(data, None)
    img.set_sform(sform, code=sform_code)
    img.set_qform(qform, code=qform_code)
    path = tmp_path / "x.nii.gz"
    nib.save(img, str(path))
    _, affine, meta = read_image(path)
    np.testing.assert_array_equal(affine, nib.load(str(path)).affine)
    if expect == "sform":
        np.testing.assert_allclose(affine, sform, atol=1e-5)
    elif expect == "qform":
        np.testing.assert_allclose(affine, qform, atol=1e-5)
    else:
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [1.0, 1.5, 2.0])
        assert any("neither sform nor qform" in w for w in meta["warnings"])


# NRRD / MetaImage cross-checked against NIfTI and SimpleITK's own geometry -----------------------
@pytest.mark.parametrize("right_handed", [True, False])
def test_oblique_volume_same_in_every_format(tmp_path, right_handed):
    data, affine = oblique_volume(right_handed)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "nibabel.nii.gz"))
    img = sitk_image(data, affine)
    names = ["a.nrrd", "a.nhdr", "a.mha", "a.mhd", "sitk.nii.gz"]  # SimpleITK writes NIfTI too
    for name in names:
        sitk.WriteImage(img, str(tmp_path / name))
    formats = {"a.nrrd": "nrrd", "a.nhdr": "nrrd", "a.mha": "mha", "a.mhd": "mha", "sitk.nii.gz": "nifti",
               "nibabel.nii.gz": "nifti"}
    for name, fmt in formats.items():
        got, aff, meta = read_image(tmp_path / name)
        assert meta["format"] == fmt and meta["warnings"] == []
        np.testing.assert_array_equal(got, data, err_msg=name)
        # NIfTI stores float32 geometry: 1e-5 mm; NRRD/MHA keep doubles.
        np.testing.assert_allclose(aff, affine, atol=1e-5 if fmt == "nifti" else 1e-9, err_msg=name)
    # SimpleITK's own index -> physical mapping (LPS) and voxel access agree with (array, affine).
    back = sitk.ReadImage(str(tmp_path / "a.mha"))
    got, aff, _ = read_image(tmp_path / "a.mha")
    for ijk in [(0, 0, 0), (11, 0, 0), (0, 8, 0), (3, 4, 6), (11, 8, 6)]:
        lps = np.array(back.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose(aff[:3, :3] @ ijk + aff[:3, 3], lps * [-1, -1, 1], atol=1e-9)
        assert got[ijk] == back.GetPixel(ijk)


def test_nrrd_without_space_field_warns(tmp_path):
    raw = np.arange(3 * 4 * 5, dtype=np.uint8)
    (tmp_path / "plain.nrrd").write_bytes(
        b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 3 4 5\nspacings: 0.5 0.6 2\nencoding: raw\n\n" + raw.tobytes())
    data, affine, meta = read_image(tmp_path / "plain.nrrd")
    np.testing.assert_array_equal(data, raw.reshape(5, 4, 3).transpose(2, 1, 0))
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [0.5, 0.6, 2.0])
    assert any("no 'space'" in w for w in meta["warnings"])


def test_stated_spacing_is_ignored_when_the_header_has_geometry(tmp_path):
    data, affine = oblique_volume(True)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "v.nii.gz"))
    _, aff, meta = read_image(tmp_path / "v.nii.gz", spacing=(2, 2, 2))
    np.testing.assert_allclose(aff, affine, atol=1e-5)
    assert any("stated spacing ignored" in w for w in meta["warnings"])
    with pytest.raises(InputError):
        read_image(tmp_path / "v.nii.gz", spacing=(1, -1, 1))


# refusals -----------------------------------------------------------------------------------
def _nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _truncate(path, keep):
    b = path.read_bytes()
    path.write_bytes(b[: int(len(b) * keep)])
    return path


def _make_bad(tmp_path, kind):
    vol = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    if kind == "2d nifti":
        return _nifti(tmp_path / "a.nii.gz", vol[:, :, 0]), ["2D"]
    if kind == "4d nifti":
        return _nifti(tmp_path / "a.nii.gz", np.stack([vol, vol], -1)), ["4D"]
    if kind == "nan nifti":
        vol[1, 2, 3] = np.nan
        return _nifti(tmp_path / "a.nii", vol), ["non-finite"]
    if kind == "sheared nifti":
        shear = np.eye(4)
        shear[0, 1] = 0.3
        return _nifti(tmp_path / "a.nii.gz", vol, shear), ["sheared", "73.30 deg"]
    if kind == "empty nifti":
        (tmp_path / "a.nii.gz").write_bytes(b"")
        return tmp_path / "a.nii.gz", ["empty"]
    if kind == "truncated nii.gz":
        return _truncate(_nifti(tmp_path / "a.nii.gz", vol), 0.6), ["NIfTI"]
    if kind == "truncated nii":
        return _truncate(_nifti(tmp_path / "a.nii", vol), 0.8), ["NIfTI", "truncated"]
    if kind == "text as nii":
        (tmp_path / "a.nii").write_text("not an image\n")
        return tmp_path / "a.nii", ["cannot read NIfTI"]
    if kind == "empty nrrd":
        (tmp_path / "a.nrrd").write_bytes(b"")
        return tmp_path / "a.nrrd", ["empty"]
    if kind == "text as nrrd":
        (tmp_path / "a.nrrd").write_text("hello\n")
        return tmp_path / "a.nrrd", ["cannot read NRRD"]
    if kind == "truncated nrrd":
        sitk.WriteImage(sitk.GetImageFromArray(vol), str(tmp_path / "a.nrrd"))
        return _truncate(tmp_path / "a.nrrd", 0.7), ["cannot read NRRD", "truncated"]
    if kind == "truncated mha":
        sitk.WriteImage(sitk.GetImageFromArray(vol), str(tmp_path / "a.mha"))
        return _truncate(tmp_path / "a.mha", 0.9), ["cannot read MetaImage", "not read completely"]
    if kind == "mhd without raw":
        sitk.WriteImage(sitk.GetImageFromArray(vol), str(tmp_path / "a.mhd"))
        (tmp_path / "a.raw").unlink()
        return tmp_path / "a.mhd", ["cannot read MetaImage"]
    if kind == "4d mha":
        one = sitk.GetImageFromArray(vol)
        sitk.WriteImage(sitk.JoinSeries([one, one]), str(tmp_path / "a.mha"))
        return tmp_path / "a.mha", ["4D"]
    if kind == "2d nrrd":
        sitk.WriteImage(sitk.GetImageFromArray(vol[0]), str(tmp_path / "a.nrrd"))
        return tmp_path / "a.nrrd", ["2D"]
    if kind == "vector nrrd":
        sitk.WriteImage(sitk.GetImageFromArray(np.stack([vol, vol, vol], -1), isVector=True), str(tmp_path / "a.nrrd"))
        return tmp_path / "a.nrrd", ["3 components"]
    if kind == "nan mha":
        vol[0, 0, 0] = np.inf
        sitk.WriteImage(sitk.GetImageFromArray(vol), str(tmp_path / "a.mha"))
        return tmp_path / "a.mha", ["non-finite"]
    if kind == "thin nrrd":
        sitk.WriteImage(sitk.GetImageFromArray(vol[:2]), str(tmp_path / "a.nrrd"))
        return tmp_path / "a.nrrd", ["fewer than 3"]
    if kind == "unknown suffix":
        (tmp_path / "a.txt").write_text("hello\n")
        return tmp_path / "a.txt", ["not a readable image", "not a DICOM file", ".nii"]
    if kind == "missing":
        return tmp_path / "nope.nii.gz", ["no such file"]
    raise AssertionError(kind)


BAD = ["2d nifti", "4d nifti", "nan nifti", "sheared nifti", "empty nifti", "truncated nii.gz", "truncated nii",
       "text as nii", "empty nrrd", "text as nrrd", "truncated nrrd", "truncated mha", "mhd without raw", "4d mha",
       "2d nrrd", "vector nrrd", "nan mha", "thin nrrd", "unknown suffix", "missing"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_files_are_refused_in_one_line(tmp_path, kind):
    path, words = _make_bad(tmp_path, kind)
    with pytest.raises(InputError) as exc:
        load_scan(path)
    assert_one_line_error(exc, *words)


def test_cli_error_is_exactly_one_stderr_line(tmp_path):
    """ITK's MetaIO prints its own diagnostics to stderr; the CLI must still print one line."""
    path, _ = _make_bad(tmp_path, "truncated mha")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "info", str(path)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("onfh: error: cannot read MetaImage")


# info ---------------------------------------------------------------------------------------
def test_scan_info_reports_the_files_own_grid(tmp_path):
    data, affine = oblique_volume(False)
    path = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk_image(data, affine), str(path))
    info = scan_info(path)
    json.dumps(info)  # JSON-ready
    assert info["format"] == "nrrd" and info["shape"] == [12, 9, 7]
    np.testing.assert_allclose(info["affine_ras"], affine, atol=1e-9)
    np.testing.assert_allclose(info["spacing_mm"], [0.7, 0.9, 3.1])
    assert info["axcodes"] == list(nib.aff2axcodes(affine))
    assert info["dtype"] == "int16" and info["intensity_range"] == [int(data.min()), int(data.max())]
    assert abs(info["voxel_volume_mm3"] - 0.7 * 0.9 * 3.1) < 1e-9
    rot = rotation_matrix([1, 2, 3], 20)
    assert info["obliquity_deg"] == pytest.approx(np.degrees(np.arccos(np.abs(rot).max(axis=0))).max(), abs=1e-3)
    assert info["warnings"] == []
    text = format_info(info)
    assert "12 x 9 x 7" in text and "0.7 x 0.9 x 3.1 mm" in text and "nrrd" in text


def test_scan_info_on_real_lps_nifti():
    info = scan_info(realdata("example_mr_sm.nii.gz"))
    assert info["shape"] == [117, 91, 20] and info["axcodes"] == ["L", "P", "S"]
    np.testing.assert_allclose(info["spacing_mm"], [3.0, 3.0, 3.0], atol=1e-3)
    np.testing.assert_array_equal(info["affine_ras"], nib.load(str(realdata("example_mr_sm.nii.gz"))).affine)


def test_gzip_of_dicom_is_not_mistaken_for_an_image(tmp_path):
    path = tmp_path / "x.dcm.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\0" * 200)
    with pytest.raises(InputError) as exc:
        read_image(path)
    assert_one_line_error(exc, "not a readable image")
