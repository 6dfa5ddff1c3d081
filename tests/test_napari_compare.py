"""napari plugin, "Compare visits" widget: the figures, the change map and the aligned follow-up are
those of `onfh compare` on the same files; the known motion and the known regeneration of a
phantom pair are recovered; the work runs in a worker thread while the UI keeps running; the
canvas shows the change map in its colours, in radiological orientation.

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
from _hip_pair import HipModel, grid, render, rotation, rotation_error_deg  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402

from pipeline.app.cli import main  # noqa: E402
from pipeline.app.compare import CHANGE_COLOURS  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.io.scan import load_labels, load_scan  # noqa: E402
from pipeline.longitudinal.change import CHANGE_LABELS  # noqa: E402
from pipeline.napari._compare import ALIGNED_NAME, CHANGE_NAME, CompareVisitsWidget  # noqa: E402
from pipeline.napari._layers import layer_scan  # noqa: E402
from pipeline.napari._measure import AUTO_KEY, AutoSegmentation  # noqa: E402
from pipeline.napari._widget import _camera, labels_request  # noqa: E402

from conftest import restore, save_nifti  # noqa: E402

PLUGIN = "onfh-pipeline"
WAIT_MS = 120_000
MODEL = HipModel()  # a right hip; lesion cap toward lateral-superior
MOTION = (rotation((1, 2, -1), 9.0), np.array([5.0, -6.0, 4.0]))
CAP0, CAP1 = 12.0, 8.0  # lesion cap heights, mm: the follow-up partly healed
EDGE = tuple(MODEL.c + np.array([17.0, 0.0, 19.0]))  # baseline lateral acetabular edge, RAS mm


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Baseline (stored in a scanner-like LPI axis order, 2 mm) and a moved, partly healed
    follow-up on an anisotropic grid (1.6 x 4 x 1.6 mm)."""
    folder = tmp_path_factory.mktemp("napari_pair")
    shape0, spacing0 = (64, 64, 64), (2.0, 2.0, 2.0)
    aff0 = grid(shape0, spacing0, MODEL.c + np.array([8.0, 0.0, -10.0]))
    img0, lab0 = render(MODEL, shape0, aff0, CAP0, seed=1)
    img0s, aff0s = restore(img0, aff0, (2, 0, 1), (-1, 1, -1))
    lab0s, _ = restore(lab0, aff0, (2, 0, 1), (-1, 1, -1))
    rot, t = MOTION
    shape1, spacing1 = (80, 30, 80), (1.6, 4.0, 1.6)
    aff1 = grid(shape1, spacing1, rot @ MODEL.c + t + np.array([3.0, 2.0, -6.0]))
    img1, lab1 = render(MODEL, shape1, aff1, CAP1, pose=(rot, t), seed=2)
    return {
        "baseline": str(save_nifti(folder / "base.nii.gz", img0s, aff0s)),
        "baseline_labels": str(save_nifti(folder / "base_labels.nii.gz", lab0s, aff0s)),
        "followup": str(save_nifti(folder / "follow.nii.gz", img1, aff1)),
        "followup_labels": str(save_nifti(folder / "follow_labels.nii.gz", lab1, aff1)),
    }


def open_pair(viewer, pair, edge=None):
    for key in ("baseline", "baseline_labels", "followup", "followup_labels"):
        viewer.open(pair[key], plugin=PLUGIN)
    if edge is not None:
        viewer.add_points([edge], name="acetabular edge")
    widget = CompareVisitsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compare visits")
    widget.side_box.setCurrentText("right")
    return widget


def table(widget) -> dict:
    return {widget.table.item(i, 0).text(): widget.table.item(i, 1).text() for i in range(widget.table.rowCount())}


def without(d: dict, *keys) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def test_compare_widget_equals_the_cli_in_a_worker_thread(make_napari_viewer, qtbot, pair, tmp_path):
    out = tmp_path / "cli"
    assert main(["compare", pair["baseline"], pair["followup"], "--side", "right", "--out", str(out),
                 "--baseline-labels", pair["baseline_labels"], "--followup-labels", pair["followup_labels"],
                 "--acetabular-edge", ",".join(f"{v:g}" for v in EDGE)]) == 0
    cli = json.loads((out / "longitudinal.json").read_text())
    assert cli["baseline"]["weight_bearing"]["source"] == "landmark"

    viewer = make_napari_viewer(show=True)
    widget = open_pair(viewer, pair, edge=EDGE)
    assert widget.edge_box.currentText() == "acetabular edge" and widget.roof_box.currentText() == "(none)"
    assert (widget.base_image_box.currentText(), widget.base_labels_box.currentText()) == ("base", "base_labels")
    assert (widget.follow_image_box.currentText(), widget.follow_labels_box.currentText()) == (
        "follow", "follow_labels")

    # the UI keeps running while the worker registers: a 20 ms timer keeps ticking
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(widget.busy))
    timer.start(20)
    worker = widget.compare()
    assert worker is not None, widget.error
    assert widget.busy and not widget.progress.isHidden() and not widget.compare_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    timer.stop()
    assert widget.error is None, widget.error
    assert sum(ticks) > 25, f"the event loop ran only {sum(ticks)} times while comparing"
    assert widget.progress.isHidden() and widget.compare_button.isEnabled()

    # the figures are the CLI's: every key of longitudinal.json (rounded as written, 1e-6)
    gui = widget.result
    assert set(cli) - set(gui) == {"provenance"}
    for key in cli:
        if key == "followups":
            assert [without(e, "folder", "files") for e in gui[key]] == [
                without(e, "folder", "files") for e in cli[key]]
        elif key != "provenance":
            assert gui[key] == cli[key], key
    # ... and they find the known truth: the motion, and the regeneration of the closed-form caps
    reg = gui["registration"]
    rot, t = MOTION
    assert rotation_error_deg(np.array(reg["transform"]["rotation_matrix"]), rot) < 1.0
    assert np.linalg.norm(np.array(reg["translation_mm"]) - t) < 1.0
    truth = 100.0 * (MODEL.lesion_volume_ml(CAP0) - MODEL.lesion_volume_ml(CAP1)) / MODEL.lesion_volume_ml(CAP0)
    assert gui["regeneration_pct"] == pytest.approx(truth, abs=3.0)
    assert gui["new_ml"] < 0.1 * gui["regenerated_ml"]

    rows = table(widget)
    assert rows["Regeneration"] == f"{cli['regeneration_pct']:.1f} %"
    assert rows["Regenerated (2)"] == f"{cli['regenerated_ml']:.2f} mL"
    assert rows["New (3)"] == f"{cli['new_ml']:.2f} mL"
    assert rows["Persistent (1)"] == f"{cli['persistent_ml']:.2f} mL"
    assert rows["Rotation"] == f"{cli['registration']['rotation_deg']:.2f}°"
    tx = cli["registration"]["translation_mm"]
    assert rows["Translation R, A, S"].startswith(f"{tx[0]:.1f}, {tx[1]:.1f}, {tx[2]:.1f} mm")
    assert rows["Head Dice after registration"] == f"{cli['registration']['head_dice']:.3f}"
    assert rows["Warnings"] == str(len(cli["warnings"]))
    for value, name in CHANGE_LABELS.items():
        assert f"{value} {name}" in widget.legend.text() and CHANGE_COLOURS[value] in widget.legend.text()

    # the change map layer: on the baseline grid, the CLI's change_map.nii.gz voxel for voxel
    base_scan = load_scan(pair["baseline"])
    change = viewer.layers[CHANGE_NAME]
    np.testing.assert_array_equal(change.data, load_labels(out / "change_map.nii.gz", base_scan))
    np.testing.assert_array_equal(change.affine.affine_matrix, viewer.layers["base"].affine.affine_matrix)
    assert set(np.unique(change.data)) == {0, 1, 2, 3}
    saved = tmp_path / "change_map_from_napari.nii.gz"  # the plugin's writer: the CLI's file grid
    change.save(str(saved), plugin=PLUGIN)
    a, b = nib.load(str(saved)), nib.load(str(out / "change_map.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    colours = {v: tuple(np.round(np.asarray(change.colormap.map(np.array([v]))[0][:3]) * 255)) for v in (1, 2, 3)}
    for v, hexcode in CHANGE_COLOURS.items():
        assert colours[v] == tuple(int(hexcode[i:i + 2], 16) for i in (1, 3, 5)), v
    # the aligned follow-up: the CLI's followup_in_baseline.nii.gz (stored rounded to the int16 input)
    aligned = viewer.layers[ALIGNED_NAME]
    np.testing.assert_array_equal(np.rint(aligned.data), load_scan(out / "followup_in_baseline.nii.gz").data)
    assert not viewer.layers["follow"].visible and not viewer.layers["base_labels"].visible

    # the canvas: coronal, radiological, through the baseline head centre. The lesion cap lies
    # superolateral in a right hip: above the centre, on the viewer's left (patient's right).
    assert viewer.dims.order == (1, 2, 0)
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    assert shot.std() > 30.0  # the scan, not a blank canvas
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    green = (g > r + 50) & (g > b + 20)  # regenerated (2), blended over the image
    amber = (r > g + 30) & (g > b + 60)  # persistent (1)
    assert green.sum() > 500 and amber.sum() > 100, (green.sum(), amber.sum())
    rows_px, cols_px = np.nonzero(green | amber)
    h, w = green.shape
    zoom = _camera(viewer).zoom  # canvas pixels per mm; the camera is centred on the head centre
    assert h / 2 - rows_px.mean() > 5.0 * zoom, "the lesion should be superior (up)"
    assert w / 2 - cols_px.mean() > 2.0 * zoom, "a right hip's lateral lesion should be on the viewer's left"

    # Export writes what onfh compare wrote: the same figures, the same maps voxel for voxel
    exported = tmp_path / "exported"
    assert widget.export(exported) is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.error is None and widget.last_export == exported, widget.error
    written = json.loads((exported / "longitudinal.json").read_text())
    assert set(written) == set(cli)
    for key in cli:
        if key != "provenance":
            assert written[key] == cli[key], key
    for name in ("change_map.nii.gz", "followup_labels_in_baseline.nii.gz", "followup_in_baseline.nii.gz"):
        a, b = nib.load(str(exported / name)), nib.load(str(out / name))
        np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
        np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    assert (exported / "qc.png").stat().st_size > 10_000


def test_compare_widget_refuses_bad_choices(make_napari_viewer, qtbot, pair):
    viewer = make_napari_viewer()
    widget = open_pair(viewer, pair)
    assert not widget.export_button.isEnabled() and widget.export(pair["baseline"]) is None  # nothing to export
    widget.follow_image_box.setCurrentText("base")
    assert widget.compare() is None and "two different images" in widget.error
    widget.follow_image_box.setCurrentText("follow")
    widget.follow_labels_box.setCurrentText("base_labels")
    assert widget.compare() is None and "own labels layer" in widget.error
    # the follow-up labels on the baseline grid do not fit the follow-up image: refused like the CLI
    widget.base_labels_box.setCurrentText("follow_labels")
    assert widget.compare() is None and "labels layer 'follow_labels'" in widget.error
    # an unedited automatic segmentation against drawn labels: refused, as onfh compare refuses it
    widget.base_labels_box.setCurrentText("base_labels")
    widget.follow_labels_box.setCurrentText("follow_labels")
    layer = viewer.layers["base_labels"]
    label_map = labels_request(layer, layer_scan(viewer.layers["base"]), Settings())[0]
    layer.metadata[AUTO_KEY] = AutoSegmentation(record={}, warnings=[], acetabulum=None, side="right",
                                                label_map=label_map.copy())
    assert widget.compare() is None and "baseline labels are an unedited automatic" in widget.error
    assert not widget.busy and CHANGE_NAME not in viewer.layers


def test_review_command_compares_two_visits(pair, tmp_path, capsys):
    """`onfh review BASELINE FOLLOWUP --side right --compare --screenshot PNG`: the real program."""
    assert main(["review", pair["baseline"], "--side", "right", "--compare"]) == 2
    assert "--compare needs two images" in capsys.readouterr().err
    png = tmp_path / "compare.png"
    proc = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "review", pair["baseline"], pair["followup"],
                           "--side", "right", "--compare", "--screenshot", str(png)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    shot = np.asarray(Image.open(png).convert("RGB")).astype(float)
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    # the change map (labels found beside each image: base_labels, follow_labels) is on the canvas
    green = (g > r + 50) & (g > b + 20)  # regenerated
    amber = (r > g + 30) & (g > b + 60)  # persistent
    assert green.sum() > 500 and amber.sum() > 100, (green.sum(), amber.sum())
