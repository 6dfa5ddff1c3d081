"""napari plugin, input/output: npe2 manifest, reader geometry (world = RAS mm), writer round trip,
sample data, and a screenshot that shows the scan.

Needs napari, pytest-qt and a display (run under `xvfb-run -a`); skipped cleanly otherwise.
"""

from __future__ import annotations

import pytest

from conftest import napari_or_skip  # noqa: E402

napari = napari_or_skip()

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from _dicom_fixtures import write_series  # noqa: E402

from pipeline.io.scan import load_labels, load_scan  # noqa: E402
from pipeline.napari import _sample_data  # noqa: E402
from pipeline.napari._layers import SCAN_KEY, data_to_world_matrix, looks_like_labels  # noqa: E402
from pipeline.napari._reader import napari_get_reader  # noqa: E402
from pipeline.napari._widget import set_view  # noqa: E402

from conftest import ROOT, rotation_matrix, save_nifti  # noqa: E402

PLUGIN = "onfh-pipeline"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def oblique_lps_affine(shape, spacing=(0.7, 0.9, 3.0), angles=((0, 0, 1, 15.0), (1, 0, 0, 10.0))):
    """RAS affine of a grid stored L-P-S (first axis toward the patient's left, second posterior),
    rotated off the world axes."""
    rot = np.eye(3)
    for *axis, deg in angles:
        rot = rotation_matrix(axis, deg) @ rot
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rot @ np.diag(spacing)
    aff[:3, 3] = np.array([30.0, 20.0, -15.0])
    return aff


def unique_volume(shape, dtype=np.int32):
    """Every voxel holds its own flat index (file order), so a voxel can be found after reorienting."""
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


def assert_world_is_ras(layer, file_shape, file_index_to_ras):
    """Every voxel: napari's world coordinate of its canonical index equals the file's RAS position."""
    data = np.asarray(layer.data)
    canon_idx = np.indices(data.shape, dtype=float).reshape(3, -1)
    m = data_to_world_matrix(layer)
    world = m[:3, :3] @ canon_idx + m[:3, 3:4]
    file_idx = np.array(np.unravel_index(np.rint(data.ravel()).astype(np.int64), file_shape), dtype=float)
    expected = file_index_to_ras(file_idx)
    np.testing.assert_allclose(world, expected, atol=1e-4)
    # spot check through napari's own point mapping too
    for flat in (0, data.size // 3, data.size - 1):
        ijk = np.unravel_index(flat, data.shape)
        np.testing.assert_allclose(layer.data_to_world(np.array(ijk, float)), world[:, flat], atol=1e-4)


# manifest -----------------------------------------------------------------------------------
def test_manifest_is_valid_and_discovered():
    import npe2

    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    assert manifest.name == PLUGIN
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == ["Analyze hip", "Compare visits"]
    assert contributions.readers[0].accepts_directories
    assert contributions.writers[0].layer_types == ["labels"]
    keys = [s.key for s in contributions.sample_data]
    assert keys == list(_sample_data.SAMPLES)
    for command in contributions.commands:  # every python_name imports
        assert callable(command.python_name and npe2.manifest.utils.import_python_name(command.python_name))


def test_reader_declines_what_it_cannot_open(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path)) is None  # a folder without DICOM files
    assert napari_get_reader(str(tmp_path / "scan.nii.gz")) is not None
    assert looks_like_labels("ONFH01_m00_cor_labels.nii.gz") and looks_like_labels("hip_seg.nrrd")
    assert looks_like_labels("head_mask.mha") and not looks_like_labels("ONFH01_m00_cor.nii.gz")


# reader geometry ----------------------------------------------------------------------------
def test_oblique_lps_nifti_world_is_ras(make_napari_viewer, tmp_path):
    shape = (20, 16, 8)
    aff = oblique_lps_affine(shape)
    path = save_nifti(tmp_path / "oblique_lps.nii.gz", unique_volume(shape), aff)
    assert nib.aff2axcodes(aff) == ("L", "P", "S")
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    assert layer._type_string == "image"
    nib_affine = nib.load(str(path)).affine
    assert_world_is_ras(layer, shape, lambda ijk: nib_affine[:3, :3] @ ijk + nib_affine[:3, 3:4])
    # canonical order: array axes run toward R, A, S; the oblique rotation stays in the affine
    assert nib.aff2axcodes(layer.affine.affine_matrix) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.det(layer.affine.affine_matrix[:3, :3]), 0.7 * 0.9 * 3.0, rtol=1e-6)
    np.testing.assert_array_equal(layer.metadata[SCAN_KEY].source_affine, nib_affine)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_oblique_itk_files_world_is_ras(make_napari_viewer, tmp_path, suffix):
    shape = (14, 12, 6)  # ITK index order (x, y, z)
    aff = LPS_TO_RAS @ oblique_lps_affine(shape, spacing=(0.8, 1.1, 2.5))  # direction in ITK's LPS
    arr = unique_volume(shape).transpose(2, 1, 0)  # ITK arrays are (z, y, x)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetDirection(tuple(float(v) for v in (aff[:3, :3] / spacing).ravel()))
    img.SetOrigin(tuple(float(v) for v in aff[:3, 3]))
    path = tmp_path / f"oblique{suffix}"
    sitk.WriteImage(img, str(path))

    def itk_ras(ijk):
        pts = np.array([img.TransformContinuousIndexToPhysicalPoint(tuple(map(float, p))) for p in ijk.T]).T
        return pts * np.array([[-1.0], [-1.0], [1.0]])  # LPS -> RAS

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    assert_world_is_ras(layer, shape, itk_ras)


def test_dicom_folder_world_is_ras(make_napari_viewer, tmp_path):
    shape = (12, 10, 6)  # (columns, rows, slices)
    aff = oblique_lps_affine(shape, spacing=(0.75, 0.75, 3.0), angles=((1, 0, 0, 12.0),))
    write_series(tmp_path / "series", unique_volume(shape, np.int16), aff)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "series"), plugin=PLUGIN)
    assert_world_is_ras(layer, shape, lambda ijk: aff[:3, :3] @ ijk + aff[:3, 3:4])


def test_label_files_open_as_labels_on_the_image_geometry(make_napari_viewer, tmp_path):
    shape = (20, 16, 8)
    aff = oblique_lps_affine(shape)
    labels = np.zeros(shape, np.uint8)
    labels[5:12, 4:9, 2:6] = 1
    labels[6:9, 5:7, 3:5] = 2
    image = save_nifti(tmp_path / "hip.nii.gz", unique_volume(shape, np.int16), aff)
    label_path = save_nifti(tmp_path / "hip_labels.nii.gz", labels, aff)
    viewer = make_napari_viewer()
    [img_layer] = viewer.open(str(image), plugin=PLUGIN)
    [lab_layer] = viewer.open(str(label_path), plugin=PLUGIN)
    assert img_layer._type_string == "image" and lab_layer._type_string == "labels"
    np.testing.assert_allclose(lab_layer.affine.affine_matrix, img_layer.affine.affine_matrix, atol=1e-9)
    scan = load_scan(image)
    np.testing.assert_array_equal(lab_layer.data, load_labels(label_path, scan))


# writer -------------------------------------------------------------------------------------
def test_writer_round_trip_on_the_original_grid(make_napari_viewer, tmp_path):
    shape = (20, 16, 8)
    aff = oblique_lps_affine(shape)
    labels = np.zeros(shape, np.uint8)
    labels[4:14, 3:12, 1:7] = 1
    labels[6:10, 5:8, 4:7] = 2
    image = save_nifti(tmp_path / "hip.nii.gz", unique_volume(shape, np.int16), aff)
    label_path = save_nifti(tmp_path / "hip_labels.nii.gz", labels, aff)
    viewer = make_napari_viewer()
    viewer.open(str(image), plugin=PLUGIN)
    [layer] = viewer.open(str(label_path), plugin=PLUGIN)
    # edit: one voxel becomes 7, a slab becomes lesion
    layer.data_setitem((np.array([0]), np.array([0]), np.array([0])), 7)
    layer.data_setitem(tuple(np.array([[10, 10, 2], [11, 10, 2], [12, 11, 3]]).T), 2)
    out = tmp_path / "edited_labels.nii.gz"
    [written] = layer.save(str(out), plugin=PLUGIN)
    assert written == str(out)
    scan = load_scan(image)
    back = load_labels(out, scan)  # exactly what `onfh analyze --labels` reads
    np.testing.assert_array_equal(back, np.asarray(layer.data))
    saved = nib.load(str(out))
    assert saved.shape == shape  # the image file's own voxel order...
    np.testing.assert_allclose(saved.affine, nib.load(str(image)).affine, atol=1e-6)  # ...and affine
    assert int(saved.header["sform_code"]) == 1 and saved.get_data_dtype() == np.uint8


def test_writer_for_a_painted_from_scratch_layer(make_napari_viewer, tmp_path):
    """A Labels layer napari made itself (no onfh metadata) is saved with its own world affine."""
    aff = np.diag([0.5, 0.5, 2.0, 1.0])
    aff[:3, 3] = [-10, 5, 3]
    data = np.zeros((6, 5, 4), np.uint16)
    data[1:3, 2, 1] = 300
    viewer = make_napari_viewer()
    layer = viewer.add_labels(data, affine=aff)
    out = tmp_path / "scratch"
    [written] = layer.save(str(out), plugin=PLUGIN)
    assert written.endswith("scratch.nii.gz")
    saved = nib.load(written)
    np.testing.assert_allclose(saved.affine, aff)
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), data)


# sample data --------------------------------------------------------------------------------
def test_sample_data_opens_scan_labels_and_landmark(make_napari_viewer):
    if not (ROOT / "sample_data" / "manifest.csv").is_file():
        pytest.skip("the committed sample cohort is absent")
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "ONFH03_m00_obl")
    kinds = [layer._type_string for layer in layers]
    assert kinds == ["image", "labels", "points"]
    image, labels, edge = layers
    np.testing.assert_array_equal(image.affine.affine_matrix, labels.affine.affine_matrix)
    scan = image.metadata[SCAN_KEY]
    np.testing.assert_array_equal(labels.data, load_labels(ROOT / "sample_data" / "ONFH03_m00_obl_labels.nii.gz", scan))
    assert image.metadata["onfh_side"] == "right"
    np.testing.assert_allclose(edge.data[0], [11.96, -3.00, 24.96])


def test_sample_data_is_generated_when_no_cohort_is_found(monkeypatch, tmp_path):
    """Without a manifest, the cohort is generated by write_sample_cohort (here a small stand-in)."""
    shape = (12, 12, 6)
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    calls = []

    def fake_write_sample_cohort(out_dir):
        calls.append(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_nifti(out_dir / "ONFH01_m00_cor.nii.gz", unique_volume(shape, np.int16), aff)
        lab = np.zeros(shape, np.uint8)
        lab[3:8, 3:8, 1:4] = 1
        save_nifti(out_dir / "ONFH01_m00_cor_labels.nii.gz", lab, aff)
        (out_dir / "manifest.csv").write_text(
            "subject,side,timepoint_months,image,labels,acetabular_edge\n"
            "ONFH01,right,0,ONFH01_m00_cor.nii.gz,ONFH01_m00_cor_labels.nii.gz,\"1,2,3\"\n"
        )
        return out_dir / "manifest.csv"

    monkeypatch.setenv("ONFH_SAMPLE_DATA", str(tmp_path / "cohort"))
    monkeypatch.setattr("pipeline.synthetic.sampledata.write_sample_cohort", fake_write_sample_cohort)
    layers = _sample_data.sample_ONFH01_m00_cor()
    assert calls == [tmp_path / "cohort"]
    assert [kind for _, _, kind in layers] == ["image", "labels", "points"]
    _sample_data.sample_ONFH01_m00_cor()  # second time: read, not generated again
    assert len(calls) == 1


# screenshot ---------------------------------------------------------------------------------
def test_screenshot_shows_the_scan(make_napari_viewer, tmp_path):
    """The canvas really renders the scan (OpenGL under Xvfb): not blank, unlike an empty viewer;
    and the coronal view is radiological (patient's right on the viewer's left, superior up)."""
    aff = np.diag([1.0, 3.0, 1.0, 1.0])
    x, _, z = np.meshgrid(np.arange(64), np.arange(20), np.arange(64), indexing="ij")
    image = 200 + 800 * (((x - 32) ** 2 + (z - 32) ** 2) < 16 ** 2) + 5 * x  # brighter toward the right (+x)
    image[:, :, 56:] = 1500  # a bright band at the top (superior, +z)
    path = save_nifti(tmp_path / "disc.nii.gz", image.astype(np.int16), aff)
    viewer = make_napari_viewer(show=True)
    empty = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    viewer.open(str(path), plugin=PLUGIN)
    set_view(viewer, "coronal")
    viewer.reset_view()
    shot = viewer.screenshot(str(tmp_path / "canvas.png"), canvas_only=True, flash=False)[..., :3].astype(float)
    assert (tmp_path / "canvas.png").is_file()
    assert empty.std() < 5.0  # an empty canvas is uniform
    assert shot.std() > 40.0  # the disc on its background
    assert abs(shot.mean() - empty.mean()) > 20.0  # and it is not the empty canvas
    gray = shot.mean(axis=2)
    rows, cols = np.nonzero(gray > 10)  # the scan's footprint on the canvas
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = bottom - top, right - left
    band = gray[top + 2: top + h // 12, left + w // 4: right - w // 4].mean()
    assert band > 240  # superior band at the top
    mid = slice(top + h // 2 - 2, top + h // 2 + 2)
    assert gray[mid, left + 2: left + w // 12].mean() > gray[mid, right - w // 12: right - 2].mean() + 20
