"""onfh never deletes or replaces a file it did not write, and its outputs are readable by others.

Each case is an ordinary mistake: an --out that is the scan's own folder, a study folder, the
current folder, a folder that cannot be written, an earlier output someone added notes to.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from pipeline.app.cli import main
from pipeline.io.outputs import MARKER, atomic_output_dir, foreign_entries, output_kind

from conftest import ball_and_cap_labels, grid_affine, save_nifti

SHAPE = (64, 64, 24)
SPACING = (1.0, 1.0, 3.0)


@pytest.fixture()
def ball_scan(tmp_path):
    """A head-sized ball (r 22 mm) with a top cap lesion: image and labels in their own folder."""
    folder = tmp_path / "study"
    folder.mkdir()
    affine = grid_affine(SHAPE, SPACING)
    labels = ball_and_cap_labels(SHAPE, affine, (0.0, 0.0, 0.0), 22.0, 8.0)
    image = np.where(labels == 1, 900, np.where(labels == 2, 300, 100)).astype(np.int16)
    return (save_nifti(folder / "scan.nii.gz", image, affine),
            save_nifti(folder / "scan_labels.nii.gz", labels, affine))


def analyze(image, labels, out, *extra):
    return main(["analyze", str(image), "--side", "right", "--labels", str(labels), "--out", str(out), *extra])


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onfh: error:"), err
    return err[0]


def test_out_that_is_the_scans_own_folder_is_refused_and_untouched(ball_scan, capsys):
    image, labels = ball_scan
    folder = image.parent
    (folder / "notes.txt").write_text("reader notes")
    before = snapshot(folder)
    assert analyze(image, labels, folder) == 2
    line = one_error_line(capsys)
    assert str(folder) in line and "did not write" in line
    assert snapshot(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["study"]  # no temporary folder left


def test_empty_folder_then_earlier_output_are_replaced(ball_scan, tmp_path, capsys):
    image, labels = ball_scan
    out = tmp_path / "out"
    out.mkdir()
    assert analyze(image, labels, out) == 0
    assert output_kind(out) == "analyze"
    assert foreign_entries(out, "analyze") == []
    first = (out / "metrics.json").read_bytes()
    assert analyze(image, labels, out) == 0  # an earlier complete output of the same kind
    assert (out / "metrics.json").is_file() and len(first) > 0


def test_earlier_output_with_an_added_file_is_refused(ball_scan, tmp_path, capsys):
    image, labels = ball_scan
    out = tmp_path / "out"
    assert analyze(image, labels, out) == 0
    capsys.readouterr()
    (out / "my_measurements.xlsx").write_bytes(b"not onfh's")
    before = snapshot(out)
    assert analyze(image, labels, out) == 2
    assert "my_measurements.xlsx" in one_error_line(capsys)
    assert snapshot(out) == before


def test_output_of_another_kind_is_refused(ball_scan, tmp_path, capsys):
    image, labels = ball_scan
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text('{"onfh_output": "compare", "entries": []}')
    assert analyze(image, labels, out) == 2
    assert "compare output, not analyze" in one_error_line(capsys)


def test_a_marker_alone_does_not_license_unlisted_files(ball_scan, tmp_path, capsys):
    """Recognised by the marker's list of entries, not by file names: a metrics.json someone
    else wrote beside a marker that does not list it is not onfh's."""
    image, labels = ball_scan
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text('{"onfh_output": "analyze", "entries": ["qc.png"]}')
    (out / "metrics.json").write_text("{}")
    assert analyze(image, labels, out) == 2
    assert "metrics.json" in one_error_line(capsys)
    assert (out / "metrics.json").read_text() == "{}"


def test_out_dot_is_refused_without_leftovers(ball_scan, tmp_path, monkeypatch, capsys):
    image, labels = ball_scan
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert analyze(image, labels, ".") == 2
    assert "current folder" in one_error_line(capsys)
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study", "work"]


def test_out_in_a_folder_that_cannot_be_written(ball_scan, tmp_path, capsys):
    image, labels = ball_scan
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    assert analyze(image, labels, a_file / "out") == 2
    assert "cannot write" in one_error_line(capsys)
    # a folder the kernel refuses even to root: the error is still one line, nothing is left
    assert analyze(image, labels, "/proc/1/onfh-out") == 2
    assert "cannot write" in one_error_line(capsys) or "not writable" in capsys.readouterr().err
    assert not Path("/proc/1/onfh-out").exists()


def test_failure_inside_removes_created_parents(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(out, "analyze") as tmp:
        (tmp / "metrics.json").write_text("{}")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_outputs_follow_the_umask(ball_scan, tmp_path, umask):
    image, labels = ball_scan
    old = os.umask(umask)
    try:
        assert analyze(image, labels, tmp_path / "a" / "out") == 0
    finally:
        os.umask(old)
    out = tmp_path / "a" / "out"
    for path in [tmp_path / "a", out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert mode == want, (path.name, oct(mode), oct(want))


def test_batch_out_with_foreign_files_is_refused(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "protocol.pdf").write_bytes(b"%PDF")
    manifest = Path(__file__).resolve().parents[1] / "sample_data" / "manifest.csv"
    assert main(["batch", str(manifest), "--out", str(out), "--workers", "1"]) == 2
    assert "protocol.pdf" in one_error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["protocol.pdf"]


def test_compare_out_with_foreign_files_is_refused_before_any_work(ball_scan, tmp_path, capsys):
    image, labels = ball_scan
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc = main(["compare", str(image), str(image), "--side", "right", "--out", str(out),
               "--baseline-labels", str(labels), "--followup-labels", str(labels)])
    assert rc == 2
    assert "keep.txt" in one_error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_sample_data_into_a_foreign_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "patient_scan.nii.gz").write_bytes(b"real data")
    assert main(["sample-data", str(out)]) == 2
    one_error_line(capsys)
    assert (out / "patient_scan.nii.gz").read_bytes() == b"real data"
