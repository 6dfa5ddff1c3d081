"""The sample cohort's outputs are the same figure for figure after any refactoring.

``tests/golden/sample_cohort.json`` holds what ``onfh batch sample_data/manifest.csv`` wrote
(metrics.json, longitudinal.json, scans.csv, changes.csv, cohort.json) before the package was
laid out by stage; provenance (timings, versions) and wall times are left out. A change of any
figure, key or column fails here. After a deliberate change of the method, regenerate it with
``ONFH_UPDATE_GOLDEN=1 pytest tests/test_golden.py`` and say why in the commit.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from pipeline.app.batch import run_batch
from pipeline.config import Settings

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "sample_cohort.json"
UNSTABLE = ("provenance", "elapsed_s", "elapsed_seconds", "worker")


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in UNSTABLE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return [_strip(row) for row in csv.DictReader(fh)]


def collect(out: Path) -> dict:
    """Every figure of a batch output folder, without what differs between identical runs."""
    return {
        "scans": {p.parent.name: _strip(json.loads(p.read_text())) for p in sorted(out.glob("scans/*/metrics.json"))},
        "changes": {p.parent.name: _strip(json.loads(p.read_text()))
                    for p in sorted(out.glob("changes/*/longitudinal.json"))},
        "scans.csv": _csv(out / "scans.csv"),
        "changes.csv": _csv(out / "changes.csv"),
        "cohort.json": _strip(json.loads((out / "cohort.json").read_text())),
    }


@pytest.fixture(scope="module")
def sample_outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden") / "results"
    assert run_batch(ROOT / "sample_data" / "manifest.csv", out, Settings(), workers=2) == 0
    return collect(out)


def test_sample_cohort_outputs_equal_the_golden_ones(sample_outputs):
    if os.environ.get("ONFH_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(sample_outputs, indent=0, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(sample_outputs) == sorted(golden)
    for part in golden:
        assert sample_outputs[part] == golden[part], part
