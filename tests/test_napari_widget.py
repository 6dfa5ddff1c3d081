"""napari plugin, "Analyze hip" widget and `onfh review`: the widget's figures are the CLI's, a
painted edit changes the lesion volume by exactly the painted voxels, Export writes what
`onfh analyze` writes, "Segment automatically" gives what `onfh analyze` without masks gives, and
the work runs in a worker thread.

Needs napari, pytest-qt and a display (run under `xvfb-run -a`); skipped cleanly otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import napari_or_skip  # noqa: E402

napari = napari_or_skip()

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.app.analyze import run_analyze  # noqa: E402
from pipeline.app.cli import main  # noqa: E402
from pipeline.config import Settings, load_settings  # noqa: E402
from pipeline.io.scan import load_labels, load_scan  # noqa: E402
from pipeline.napari._compare import CompareVisitsWidget  # noqa: E402
from pipeline.napari._review import COMPARE_NAME, open_review, review_layers  # noqa: E402
from pipeline.napari._sample_data import sample_manifest  # noqa: E402
from pipeline.napari._widget import AnalyzeHipWidget  # noqa: E402

from conftest import ball_and_cap_labels, grid_affine, restore, rotation_matrix, save_nifti  # noqa: E402

PLUGIN = "onfh-pipeline"
WAIT_MS = 60_000
CENTRE = np.array([40.3, -10.2, 5.1])  # a right hip (RAS x > 0)
EDGE = (CENTRE[0] + 15.0, CENTRE[1], CENTRE[2] + 19.0)  # lateral acetabular edge, RAS mm


@pytest.fixture(scope="module")
def hip_files(tmp_path_factory):
    """An oblique phantom hip stored L-P-S (head ball r = 22 mm, lesion cap 8 mm) and its labels."""
    folder = tmp_path_factory.mktemp("napari_hip")
    spacing = (0.9, 2.5, 0.9)
    shape = tuple(int(np.ceil(56 / s)) for s in spacing)
    rot = rotation_matrix((1, 0, 0), 12.0) @ rotation_matrix((0, 0, 1), -8.0)
    aff = grid_affine(shape, spacing, center_mm=(40.0, -10.0, 5.0), rotation=rot)
    labels = ball_and_cap_labels(shape, aff, CENTRE, 22.0, 8.0)
    rng = np.random.default_rng(3)
    image = (rng.normal(400, 30, shape) + 300 * (labels == 1) - 200 * (labels == 2)).astype(np.int16)
    perm, flips = (1, 0, 2), (-1, 1, -1)  # stored in another axis order, as a scanner might
    image_s, aff_s = restore(image, aff, perm, flips)
    labels_s, _ = restore(labels, aff, perm, flips)
    image_path = save_nifti(folder / "hip.nii.gz", image_s, aff_s)
    labels_path = save_nifti(folder / "hip_labels.nii.gz", labels_s.astype(np.uint8), aff_s)
    return str(image_path), str(labels_path)


def open_with_widget(viewer, hip_files, edge=None):
    image, labels = hip_files
    viewer.open([image], plugin=PLUGIN)
    viewer.open([labels], plugin=PLUGIN)
    if edge is not None:
        viewer.add_points([edge], name="acetabular edge")
    widget = AnalyzeHipWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze hip")
    widget.side_box.setCurrentText("right")
    return widget


def measure(qtbot, widget):
    worker = widget.measure()
    assert worker is not None, widget.error
    assert widget.busy  # the measurement runs in a worker thread: the UI is free meanwhile
    assert not widget.progress.isHidden()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.error is None, widget.error
    return widget.analysis


def table(widget) -> dict:
    return {widget.table.item(i, 0).text(): widget.table.item(i, 1).text() for i in range(widget.table.rowCount())}


def test_widget_equals_cli_and_exports_the_same_files(make_napari_viewer, qtbot, hip_files, tmp_path):
    image, labels = hip_files
    run_analyze(image, "right", tmp_path / "cli", Settings(), labels=labels, edge=EDGE)
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())

    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, hip_files, edge=EDGE)
    assert widget.edge_box.currentText() == "acetabular edge"
    assert widget.segment_button.isEnabled() and widget.segment_button.text() == "Segment automatically"
    analysis = measure(qtbot, widget)

    gui = analysis.result.to_json()
    for key, value in cli.items():
        if key != "provenance":
            assert gui[key] == value, key
    assert gui["weight_bearing"]["source"] == "landmark"
    rows = table(widget)
    assert rows["Head volume"] == f"{cli['head_volume_ml']:.2f} mL"
    assert rows["Lesion volume"] == f"{cli['lesion_volume_ml']:.2f} mL"
    assert rows["JIC type (mid-coronal)"] == cli["jic_type"]
    assert rows["CNA (combined necrotic angle)"] == f"{cli['cna_deg']:.0f}°"
    for name in ("onfh zones", "onfh mid-coronal", "onfh mid-coronal outlines", "onfh mid-sagittal",
                 "onfh mid-sagittal outlines"):
        assert name in viewer.layers
    zones = viewer.layers["onfh zones"]
    np.testing.assert_array_equal(zones.affine.affine_matrix, viewer.layers["hip"].affine.affine_matrix)
    assert set(np.unique(zones.data)) <= set(range(13))

    # the mid-coronal plane layer lies in the world plane y = c_y (RAS mm), whatever the obliquity
    plane = viewer.layers["onfh mid-coronal"]
    centre = cli["head_center_ras_mm"]
    np.testing.assert_allclose(plane.data_to_world([0, 0, 0])[1], centre[1], atol=1e-9)
    np.testing.assert_allclose(plane.data_to_world([5, 0, 7])[1], centre[1], atol=1e-9)

    widget.reader_edit.setText("jdoe")
    worker = widget.export(tmp_path / "reads")
    assert worker is not None
    qtbot.waitUntil(lambda: widget.last_export is not None and not widget.busy, timeout=WAIT_MS)
    gui = tmp_path / "reads" / "jdoe" / "hip"  # the reader's folder, the image's name
    assert widget.last_export == gui
    exported = json.loads((gui / "metrics.json").read_text())
    assert {k: v for k, v in exported.items() if k != "provenance"} == {
        k: v for k, v in cli.items() if k != "provenance"}
    assert exported["provenance"]["config_sha256"] == cli["provenance"]["config_sha256"]
    for name in ("labels.nii.gz", "zones.nii.gz"):
        a, b = nib.load(str(gui / name)), nib.load(str(tmp_path / "cli" / name))
        np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
    for name in ("head.stl", "lesion.stl"):
        assert (gui / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    assert (gui / "qc.png").stat().st_size > 10_000


def test_painting_lesion_voxels_and_remeasuring(make_napari_viewer, qtbot, hip_files, tmp_path):
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, hip_files)
    widget.config_edit.setText(str(_fast_config(tmp_path)))
    before = measure(qtbot, widget)
    assert widget.measure_button.text() == "Re-measure"
    assert viewer.layers.selection.active.name == "hip_labels"  # ready to paint

    layer = viewer.layers["hip_labels"]
    head_only = np.argwhere(np.asarray(layer.data) == 1)
    n = 37
    chosen = head_only[np.random.default_rng(0).choice(len(head_only), n, replace=False)]
    paint(layer, chosen, 2)
    assert widget.stale and "Re-measure" in widget.status.text()

    after = measure(qtbot, widget)
    voxel_ml = abs(np.linalg.det(layer.affine.affine_matrix[:3, :3])) / 1000.0
    delta = after.result.lesion_volume_ml - before.result.lesion_volume_ml
    assert delta == pytest.approx(n * voxel_ml, rel=0, abs=1e-12)
    assert after.result.head_volume_ml == before.result.head_volume_ml
    assert after.result.segmentation["method"] == "label map edited in napari"
    assert table(widget)["Lesion volume"] == f"{after.result.lesion_volume_ml:.2f} mL"
    assert not widget.stale

    # the edited map saved by the plugin's writer gives the CLI the same figures
    edited = tmp_path / "edited_labels.nii.gz"
    layer.save(str(edited), plugin=PLUGIN)
    image, _ = hip_files
    cli = run_analyze(image, "right", tmp_path / "cli", load_settings(_fast_config(tmp_path)), labels=edited)
    skip = {"segmentation", "provenance"}
    assert {k: v for k, v in cli.result.to_json().items() if k not in skip} == {
        k: v for k, v in after.result.to_json().items() if k not in skip}

    # erase: back to head, back to the first figure
    paint(layer, chosen, 1)
    again = measure(qtbot, widget)
    assert again.result.lesion_volume_ml == pytest.approx(before.result.lesion_volume_ml, abs=1e-12)


def test_segment_button_gives_what_analyze_without_masks_gives(make_napari_viewer, qtbot, tmp_path):
    """"Segment automatically" on the sample 3D scan: the label map, then the figures, of
    `onfh analyze IMAGE --side left` (no masks); an edit is recorded; lesion seeds are passed."""
    image = str(sample_manifest().parent / "ONFH05_m00_3d.nii.gz")
    config = _fast_config(tmp_path)
    assert main(["analyze", image, "--side", "left", "--out", str(tmp_path / "cli"), "--config", str(config)]) == 0
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert cli["segmentation"]["method"] == "automatic"

    viewer = make_napari_viewer()
    viewer.open(image, plugin=PLUGIN)
    widget = AnalyzeHipWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze hip")
    widget.side_box.setCurrentText("left")
    widget.config_edit.setText(str(config))
    assert widget.measure() is None and "labels layer" in widget.error  # nothing to measure yet
    worker = widget.segment()
    assert worker is not None, widget.error
    assert widget.busy and not widget.progress.isHidden() and not widget.segment_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.error is None, widget.error

    layer = viewer.layers["ONFH05_m00_3d_auto_labels"]
    assert widget.labels_box.currentText() == layer.name and viewer.layers.selection.active is layer
    scan = load_scan(image)
    np.testing.assert_array_equal(layer.data, load_labels(tmp_path / "cli" / "labels.nii.gz", scan))
    np.testing.assert_array_equal(layer.affine.affine_matrix, viewer.layers["ONFH05_m00_3d"].affine.affine_matrix)
    voxel_ml = scan.voxel_volume_mm3 / 1000.0
    assert np.count_nonzero(layer.data) * voxel_ml == pytest.approx(cli["head_volume_ml"], abs=1e-6)
    assert np.count_nonzero(layer.data == 2) * voxel_ml == pytest.approx(cli["lesion_volume_ml"], abs=1e-6)
    status = cli["segmentation"]["confidence"]["status"]
    assert ("confidence OK" if status == "ok" else "REVIEW") in widget.auto_note.text()
    assert widget.auto_note.isVisibleTo(widget)

    analysis = measure(qtbot, widget)  # unedited: every figure of `onfh analyze` without masks
    gui = analysis.result.to_json()
    for key, value in cli.items():
        if key == "segmentation":  # the same record but for the run time in confidence.seconds
            for record in (value, gui[key]):
                assert record["confidence"].pop("seconds")["total"] > 0
            assert gui[key] == value
        elif key != "provenance":
            assert gui[key] == value, key
    assert table(widget)["Segmentation"].startswith(f"automatic ({status}")

    # an edit: N head voxels painted as lesion, the record says edited
    head_only = np.argwhere(np.asarray(layer.data) == 1)
    n = 25
    paint(layer, head_only[np.random.default_rng(1).choice(len(head_only), n, replace=False)], 2)
    edited = measure(qtbot, widget)
    assert edited.result.lesion_volume_ml - analysis.result.lesion_volume_ml == pytest.approx(
        n * voxel_ml, abs=1e-12)
    assert edited.result.segmentation["method"] == "automatic, edited in napari"
    assert edited.result.segmentation["parameters"]["edited"] is True
    assert edited.result.weight_bearing == analysis.result.weight_bearing  # the same acetabulum

    # lesion seeds: the points of a "lesion seed" layer reach the segmentation (RAS mm)
    lesion_vox = np.argwhere(np.asarray(layer.data) == 2)
    seed_vox = lesion_vox[np.argmin(np.linalg.norm(lesion_vox - lesion_vox.mean(axis=0), axis=1))]
    seed = scan.affine[:3, :3] @ seed_vox + scan.affine[:3, 3]
    seeds = widget.add_seed_layer()
    seeds.add(seed)
    assert widget.seed_box.currentText() == "lesion seed"
    assert widget.segment() is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.error is None, widget.error
    reseeded = viewer.layers["ONFH05_m00_3d_auto_labels"]  # replaced, unedited again
    record = reseeded.metadata["onfh_automatic"].record
    np.testing.assert_allclose(record["parameters"]["lesion_seeds_ras_mm"], [seed], atol=1e-9)
    assert reseeded.data[tuple(seed_vox)] == 2
    assert len([x for x in viewer.layers if x.name == reseeded.name]) == 1


def test_widget_reports_bad_input(make_napari_viewer, qtbot, hip_files, tmp_path):
    viewer = make_napari_viewer()
    image_path, labels_path = hip_files
    viewer.open([image_path], plugin=PLUGIN)
    widget = AnalyzeHipWidget(viewer)
    assert widget.measure() is None  # no labels layer
    assert "labels layer" in widget.error
    odd = tmp_path / "reader_7.nii.gz"  # a label map whose name says nothing: opened from the widget
    odd.write_bytes(open(labels_path, "rb").read())
    layer = widget.open_label_map(odd)
    assert layer is not None and layer._type_string == "labels" and widget.labels_box.currentText() == "reader_7"
    np.testing.assert_array_equal(layer.data, load_labels(labels_path, load_scan(image_path)))
    assert widget.open_label_map(tmp_path / "missing.nii.gz") is None and "no such file" in widget.error
    viewer.layers.remove("reader_7")
    widget.new_label_map()  # an empty map on the image grid: the head label is absent
    assert widget.labels_box.currentText() == "hip_labels"
    assert widget.measure() is not None  # the refusal comes from the measurement itself
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.analysis is None
    assert widget.error.startswith("head label 1 is absent")
    assert "error" in widget.status.text()


def test_review_opens_images_with_their_labels_and_the_widget(make_napari_viewer, hip_files):
    image, labels = hip_files
    viewer = make_napari_viewer()
    widget = open_review(viewer, review_layers([image]), side="right")
    assert [layer.name for layer in viewer.layers] == ["hip", "hip_labels"]  # labels found by name
    assert viewer.layers["hip_labels"]._type_string == "labels"
    np.testing.assert_array_equal(viewer.layers["hip"].affine.affine_matrix,
                                  viewer.layers["hip_labels"].affine.affine_matrix)
    assert widget.image_box.currentText() == "hip" and widget.labels_box.currentText() == "hip_labels"
    assert "Analyze hip" in viewer.window.dock_widgets
    compare = viewer.window.dock_widgets[COMPARE_NAME]  # both widgets docked
    assert isinstance(compare, CompareVisitsWidget)
    assert compare.base_image_box.currentText() == "hip" and compare.base_labels_box.currentText() == "hip_labels"
    assert viewer.dims.order == (1, 2, 0)  # coronal
    _, from_menu = viewer.window.add_plugin_dock_widget(PLUGIN, "Analyze hip")  # Plugins > Analyze hip
    assert isinstance(from_menu, AnalyzeHipWidget) and from_menu.labels_box.currentText() == "hip_labels"


def test_review_refuses_bad_input_before_opening_a_window(tmp_path, capsys, monkeypatch):
    assert main(["review", str(tmp_path / "missing.nii.gz")]) == 2
    assert capsys.readouterr().err.startswith("onfh: error: no such file")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert main(["review"]) == 2
    assert "no display" in capsys.readouterr().err


def test_review_command_renders_a_window(hip_files, tmp_path):
    """`onfh review IMAGE --measure --screenshot PNG`: the real program, end to end."""
    image, _ = hip_files
    png = tmp_path / "review.png"
    proc = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "review", image, "--side", "right", "--measure",
                           "--screenshot", str(png)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    shot = np.asarray(imageio_read(png))[..., :3].astype(float)
    assert shot.shape[0] == 950
    # the canvas was redrawn after measuring: the head label (green) and the lesion (red) show
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    assert ((g > r + 50) & (g > b + 20)).sum() > 2000
    assert ((r > g + 80) & (r > b + 80)).sum() > 500


def imageio_read(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def paint(layer, voxels, label):
    """Paint voxels one brush dab each (brush size 1), through napari's own brush code.

    (Not ``Labels.data_setitem``: in napari 0.9.2, on an oblique layer viewed with a transposed dims
    order, it also writes into the wrong displayed slice; the brush path is exact.)
    """
    layer.brush_size = 1
    for voxel in voxels:
        layer.paint(np.asarray(voxel, dtype=float), label)


def _fast_config(tmp_path):
    """Settings without the isotropic reconstruction and pictures: the paint test measures 3 times."""
    path = tmp_path / "fast.yaml"
    path.write_text("reconstruction:\n  isotropic: false\noutputs:\n  qc_png: false\n")
    return path


def test_export_into_a_folder_holding_other_files_is_refused(make_napari_viewer, qtbot, hip_files, tmp_path):
    """Export never replaces a folder holding files onfh did not write (e.g. the scan's own), and
    then saves no read either."""
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, hip_files, edge=EDGE)
    widget.reader_edit.setText("jdoe")
    measure(qtbot, widget)
    study = tmp_path / "reads" / "jdoe" / "hip"
    study.mkdir(parents=True)
    (study / "report_draft.docx").write_bytes(b"the reader's own file")
    worker = widget.export(tmp_path / "reads")
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.last_export is None
    assert "report_draft.docx" in widget.error and "did not write" in widget.error
    assert [p.name for p in study.iterdir()] == ["report_draft.docx"]
    assert [p.name for p in study.parent.iterdir()] == ["hip"]  # no labels file, no audit entry
    assert (study / "report_draft.docx").read_bytes() == b"the reader's own file"
