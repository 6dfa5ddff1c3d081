"""Input paths are recorded as the user gave them, never resolved into absolute folders (folder
names often carry patient names), or as file names only when the settings say so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.app.batch import run_batch
from pipeline.app.cli import main
from pipeline.config import Settings

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
STEM = "ONFH01_m00_cor"


def _copy_scan(folder: Path) -> None:
    folder.mkdir(parents=True)
    for suffix in (".nii.gz", "_labels.nii.gz"):
        shutil.copy(SAMPLE / f"{STEM}{suffix}", folder / f"{STEM}{suffix}")


def test_relative_paths_stay_relative(tmp_path, monkeypatch):
    _copy_scan(tmp_path / "Doe_John_1950" / "hip")
    monkeypatch.chdir(tmp_path / "Doe_John_1950")
    assert main(["analyze", f"hip/{STEM}.nii.gz", "--labels", f"hip/{STEM}_labels.nii.gz", "--side", "right",
                 "--out", "out"]) == 0
    m = json.loads(Path("out/metrics.json").read_text())
    assert m["input"]["path"] == f"hip/{STEM}.nii.gz"
    assert m["segmentation"]["parameters"]["labels"] == f"hip/{STEM}_labels.nii.gz"
    assert "Doe_John" not in Path("out/metrics.json").read_text()


def test_name_only_setting(tmp_path):
    folder = tmp_path / "Doe_John_1950"
    _copy_scan(folder)
    config = tmp_path / "names.yaml"
    config.write_text("outputs:\n  input_paths: name\n")
    assert main(["analyze", str(folder / f"{STEM}.nii.gz"), "--labels", str(folder / f"{STEM}_labels.nii.gz"),
                 "--side", "right", "--out", str(tmp_path / "out"), "--config", str(config)]) == 0
    text = (tmp_path / "out" / "metrics.json").read_text()
    m = json.loads(text)
    assert m["input"]["path"] == f"{STEM}.nii.gz"
    assert m["segmentation"]["parameters"]["labels"] == f"{STEM}_labels.nii.gz"
    assert "Doe_John" not in text


def test_batch_records_paths_relative_to_the_manifest(tmp_path):
    study = tmp_path / "Doe_John_1950"
    _copy_scan(study / "scans")
    manifest = study / "manifest.csv"
    manifest.write_text("subject,side,timepoint_months,image,labels\n"
                        f"P01,right,0,scans/{STEM}.nii.gz,scans/{STEM}_labels.nii.gz\n")
    out = tmp_path / "results"
    assert run_batch(manifest, out, Settings(), workers=1) == 0
    metrics = next(out.glob("scans/*/metrics.json"))
    m = json.loads(metrics.read_text())
    assert m["input"]["path"] == f"scans/{STEM}.nii.gz"
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".md", ".html"):
            assert "Doe_John" not in path.read_text(errors="replace"), path
