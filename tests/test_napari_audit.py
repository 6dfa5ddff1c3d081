"""Core-lab reads in napari: Export saves the read under the reader's name with an audit entry whose
voxel counts are exactly the voxels painted and whose hashes are the files on disk, a second export
chains to the first, and no reader name means no file. `onfh review --worklist` shows codes only
and steps through the list.

Needs napari, pytest-qt and a display (run under `xvfb-run -a`).
"""

from __future__ import annotations

import hashlib
import json

from conftest import napari_or_skip  # noqa: E402

napari = napari_or_skip()

import numpy as np  # noqa: E402

from pipeline.app.cli import main  # noqa: E402
from pipeline.io.audit import GENESIS, verify  # noqa: E402
from pipeline.io.scan import load_labels, load_scan  # noqa: E402
from pipeline.io.worklist import read_worklist, write_worklist  # noqa: E402
from pipeline.napari._layers import labels_on_scan  # noqa: E402
from pipeline.napari._review import WORKLIST_NAME, open_worklist  # noqa: E402
from pipeline.napari._widget import AnalyzeHipWidget  # noqa: E402

from conftest import ball_and_cap_labels, grid_affine, save_nifti  # noqa: E402

PLUGIN = "onfh-pipeline"
WAIT_MS = 60_000
CENTRE = np.array([40.0, -10.0, 5.0])  # a right hip (RAS x > 0)


def phantom(folder, name):
    """A right hip phantom (head ball r = 22 mm, lesion cap 8 mm) and its labels beside it."""
    spacing = (1.0, 2.0, 1.0)
    shape = tuple(int(np.ceil(56 / s)) for s in spacing)
    aff = grid_affine(shape, spacing, center_mm=CENTRE)
    labels = ball_and_cap_labels(shape, aff, CENTRE, 22.0, 8.0)
    rng = np.random.default_rng(5)
    image = (rng.normal(400, 30, shape) + 300 * (labels == 1) - 200 * (labels == 2)).astype(np.int16)
    image_path = save_nifti(folder / f"{name}.nii.gz", image, aff)
    labels_path = save_nifti(folder / f"{name}_labels.nii.gz", labels.astype(np.uint8), aff)
    return image_path, labels_path


def fast_config(folder):
    path = folder / "fast.yaml"
    # a ball has no femoral neck to check the side against: these tests are about saving reads
    path.write_text("reconstruction:\n  isotropic: false\noutputs:\n  qc_png: false\n  stl: false\n"
                    "side:\n  read_neck_from_image: false\n")
    return path


def paint(layer, voxels, label):
    """Paint voxels one brush dab each (brush size 1), through napari's own brush code."""
    layer.brush_size = 1
    for voxel in voxels:
        layer.paint(np.asarray(voxel, dtype=float), label)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(qtbot, widget, folder):
    widget.last_read = None
    worker = widget.export(folder)
    assert worker is not None, widget.error
    qtbot.waitUntil(lambda: not widget.busy and widget._pending_export is None, timeout=WAIT_MS)
    return widget.last_read


def test_export_saves_the_read_with_exact_audit_entries_that_chain(make_napari_viewer, qtbot, tmp_path, capsys):
    image, labels = phantom(tmp_path, "hip")
    viewer = make_napari_viewer()
    viewer.open([str(image)], plugin=PLUGIN)
    viewer.open([str(labels)], plugin=PLUGIN)
    widget = AnalyzeHipWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Analyze hip")
    widget.side_box.setCurrentText("right")
    widget.config_edit.setText(str(fast_config(tmp_path)))
    layer = viewer.layers["hip_labels"]
    reads = tmp_path / "reads"

    # no reader name: refused in the widget, before measuring, nothing written
    assert widget.export(reads) is None
    assert "reader" in widget.error and "reader" in widget.status.text()
    assert not reads.exists() and not widget.busy

    widget.reader_edit.setText("jdoe")
    head_only = np.argwhere(layer.data == 1)
    outside = np.argwhere(layer.data == 0)
    to_lesion = head_only[::997][:9]
    to_head = outside[::4999][:5]
    assert len(to_lesion) == 9 and len(to_head) == 5
    paint(layer, to_lesion, 2)
    paint(layer, to_head, 1)
    entry = export(qtbot, widget, reads)
    assert entry is not None, widget.error
    target = reads / "jdoe" / "hip_labels.nii.gz"
    log = reads / "jdoe" / "audit.jsonl"
    # against the labels as opened: 9 head voxels became lesion, 5 background voxels became head
    assert entry["action"] == "create" and entry["reader"] == "jdoe" and entry["file"] == target.name
    assert entry["voxels_added"] == {"1": 5, "2": 9} and entry["voxels_removed"] == {"1": 9}
    assert entry["sha256_before"] is None and entry["sha256_after"] == sha(target)
    assert entry["prev"] == GENESIS
    scan = load_scan(image)
    np.testing.assert_array_equal(load_labels(target, scan), labels_on_scan(layer, scan))
    assert (reads / "jdoe" / "hip" / "metrics.json").is_file()  # what onfh analyze writes, beside the read
    assert json.loads(log.read_text())["sha256_after"] == sha(target)

    # a second export chains to the first; replacing a read needs a reason
    lesion = np.argwhere(layer.data == 2)
    erased = lesion[:: len(lesion) // 6][:6]
    assert len(erased) == 6
    paint(layer, erased, 0)
    first_line = log.read_bytes()
    assert export(qtbot, widget, reads) is None
    assert "reason" in widget.error and log.read_bytes() == first_line
    widget.reason_edit.setText("lesion over-drawn laterally")
    second = export(qtbot, widget, reads)
    assert second is not None, widget.error
    assert second["action"] == "update" and second["reason"] == "lesion over-drawn laterally"
    assert second["voxels_added"] == {} and second["voxels_removed"] == {"2": 6}
    assert second["sha256_before"] == entry["sha256_after"] and second["sha256_after"] == sha(target)
    lines = log.read_bytes().splitlines()
    assert len(lines) == 2 and lines[0] + b"\n" == first_line
    assert json.loads(lines[1])["prev"] == hashlib.sha256(lines[0]).hexdigest()
    assert verify(log) is None
    assert sha(reads / "jdoe" / "versions" / f"{entry['sha256_after']}.nii.gz") == entry["sha256_after"]
    assert widget.reason_edit.text() == ""  # a reason is for one change
    assert main(["audit", "verify", str(log)]) == 0
    assert capsys.readouterr().out.startswith("2 entries intact")


def test_worklist_review_shows_codes_only_and_steps(make_napari_viewer, qtbot, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    subjects = ("ONFH42", "PAT-0917")
    rows = ["subject,side,timepoint_months,image"]
    for subject in subjects:
        image, _ = phantom(data, f"{subject}_m12_cor")
        rows.append(f"{subject},right,12,data/{image.name}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    worklist, key, _ = write_worklist(manifest, "jdoe", tmp_path / "worklist.csv")
    cases = read_worklist(worklist)
    codes = [c.code for c in cases]

    viewer = make_napari_viewer()
    stepper = open_worklist(viewer, cases, "jdoe", str(fast_config(tmp_path)))
    widget = stepper.analyze
    assert WORKLIST_NAME in viewer.window.dock_widgets
    assert widget.reader_edit.text() == "jdoe"

    def shown():
        names = [layer.name for layer in viewer.layers]
        text = " ".join(names + [viewer.title, stepper.title.text()])
        assert not any(s in text for s in subjects) and "m12" not in text and "12" not in text, text
        return names

    assert shown() == [codes[0], f"{codes[0]}_labels"]
    assert codes[0] in viewer.title and "1 of 2" in viewer.title
    assert not stepper.previous_button.isEnabled() and stepper.next_button.isEnabled()

    # the read is saved under the code: the reader's files carry no subject either
    layer = viewer.layers[f"{codes[0]}_labels"]
    paint(layer, np.argwhere(layer.data == 1)[::2000][:3], 2)
    assert stepper.next() is False and "Unsaved edits" in stepper.status.text()
    assert stepper.index == 0 and shown() == [codes[0], f"{codes[0]}_labels"]
    entry = export(qtbot, widget, tmp_path / "reads")
    assert entry is not None, widget.error
    assert entry["voxels_added"] == {"2": 3} and entry["voxels_removed"] == {"1": 3}
    assert sorted(p.name for p in (tmp_path / "reads" / "jdoe").iterdir()) == sorted(
        ["audit.jsonl", f"{codes[0]}_labels.nii.gz", codes[0], "versions"])
    assert any(layer.name.startswith("onfh ") for layer in viewer.layers)

    assert stepper.next() is True  # saved: no question asked
    assert stepper.index == 1 and shown() == [codes[1], f"{codes[1]}_labels"]
    assert widget.analysis is None and not widget.export_button.isEnabled()
    assert codes[1] in viewer.title and "2 of 2" in viewer.title
    assert widget.side_box.currentText() == cases[1].side

    other = viewer.layers[f"{codes[1]}_labels"]
    paint(other, np.argwhere(other.data == 0)[:1], 1)
    assert stepper.previous() is False  # asked once...
    assert stepper.previous() is True  # ...and discarded on the second press
    assert shown() == [codes[0], f"{codes[0]}_labels"]


def test_review_worklist_refuses_conflicting_options(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    image, _ = phantom(data, "S1_m00")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"subject,side,timepoint_months,image\nS1,right,0,data/{image.name}\n")
    worklist, _, _ = write_worklist(manifest, "jdoe", tmp_path / "worklist.csv")
    for args, why in (([str(image)], "IMAGE"), (["--side", "left"], "--side"), (["--reader", "asmith"], "jdoe's"),
                      (["--reader", "bad name"], "reader name")):
        assert main(["review", "--worklist", str(worklist), *args]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("onfh: error: ") and why in err[0], (args, err)
