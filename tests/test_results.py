"""The typed result model (pipeline/measures/results.py): metrics.json written by ``to_json()`` and
read back by ``from_json()`` exactly, the scans.csv row, and a newer schema refused, not read in part."""

from __future__ import annotations

import copy
import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.app.analyze import run_analyze
from pipeline.app.batch import SCAN_COLUMNS, _cell, run_batch
from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.measures.results import SCHEMA_VERSION, FollowupMetrics, HipMetrics, Longitudinal

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "sample_data" / "ONFH01_m00_cor.nii.gz"
LABELS = ROOT / "sample_data" / "ONFH01_m00_cor_labels.nii.gz"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The sample scan measured by ``onfh analyze --labels``: (Analysis, metrics.json text)."""
    out = tmp_path_factory.mktemp("results") / "analyze"
    analysis = run_analyze(IMAGE, "right", out, Settings(), labels=LABELS)
    return analysis, (out / "metrics.json").read_text()


@pytest.fixture(scope="module")
def batch_out(tmp_path_factory):
    """The same scan through ``onfh batch``: its folder (scans.csv, scans/<key>/metrics.json)."""
    folder = tmp_path_factory.mktemp("results_batch")
    manifest = folder / "manifest.csv"
    manifest.write_text(f"subject,side,timepoint_months,image,labels\nONFH01,right,0,{IMAGE},{LABELS}\n")
    assert run_batch(manifest, folder / "out", Settings(), workers=1) == 0
    return folder / "out"


def test_round_trip_equals_the_written_metrics_json(measured):
    analysis, text = measured
    written = json.loads(text)
    # what was measured is what was written, key for key and in the written order
    assert analysis.result.to_json() == {k: v for k, v in written.items() if k != "provenance"}
    assert list(analysis.result.to_json()) == [k for k in written if k != "provenance"]
    # read back: the same content, the same bytes
    read = HipMetrics.from_json(written)
    assert read.to_json() == written
    assert json.dumps(read.to_json(), indent=2) + "\n" == text
    assert HipMetrics.from_json(text) == read  # from the JSON text too
    assert read.provenance == written["provenance"]
    # typed fields, units in the names
    assert read.side == "right" and read.head_volume_ml == written["head_volume_ml"]
    assert read.confidence() is None and read.review() is None  # a label map a person gave, plausible NF


def test_schema_version_is_written_first(measured):
    written = json.loads(measured[1])
    assert next(iter(written)) == "schema_version"
    assert written["schema_version"] == SCHEMA_VERSION == HipMetrics.SCHEMA_VERSION
    assert HipMetrics.from_json(written).schema_version == SCHEMA_VERSION


def test_csv_row_equals_the_scans_csv_row_batch_writes(batch_out):
    with (batch_out / "scans.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    metrics = json.loads((batch_out / row["folder"] / "metrics.json").read_text())
    result = HipMetrics.from_json(metrics)
    figures = result.csv_row()
    assert tuple(figures) == HipMetrics.CSV_COLUMNS
    assert set(HipMetrics.CSV_COLUMNS) <= set(SCAN_COLUMNS)
    assert {c: _cell(v, c) for c, v in figures.items()} == {c: row[c] for c in HipMetrics.CSV_COLUMNS}
    assert row["head_volume_ml"] == f"{result.head_volume_ml:.4f}" and row["review"] == ""


def test_unknown_key_is_refused(measured):
    written = json.loads(measured[1])
    with pytest.raises(InputError, match=r"metrics.json: unknown key\(s\) 'marrow_edema_ml'.*newer onfh"):
        HipMetrics.from_json({**written, "marrow_edema_ml": 1.2})
    # keys added to schema 1.0 later (docs/method.md 6) read as null from a file written before them
    older = {k: v for k, v in written.items() if k not in HipMetrics._ADDED}
    assert HipMetrics.from_json(older).head_depression_mm is None
    with pytest.raises(InputError, match=r"schema_version '2.0'"):
        HipMetrics.from_json({**written, "schema_version": "2.0"})
    with pytest.raises(InputError, match=r"missing key\(s\) 'sphere_fit'"):
        HipMetrics.from_json({k: v for k, v in written.items() if k != "sphere_fit"})
    with pytest.raises(InputError, match="expected a JSON object"):
        HipMetrics.from_json("[1, 2]")


def _followup(result: HipMetrics) -> FollowupMetrics:
    """A follow-up entry with plausible figures (as compare_visits assembles one)."""
    zones = {z: {"baseline_ml": 2.0, "followup_ml": 1.0, "regenerated_ml": 1.0, "new_ml": 0.0, "persistent_ml": 1.0,
                 "share_pct": 25.0, "regeneration_pct": 50.0, "regenerated_fraction_pct": 50.0}
             for z in ("A", "B", "C1", "C2")}
    return FollowupMetrics(
        followup=replace(result, warnings=["thick slices"]), regeneration_pct=40.0, regeneration_pct_isotropic=None,
        baseline_lesion_ml=10.0, followup_lesion_ml=6.0, regenerated_ml=4.0, new_ml=0.0, persistent_ml=6.0,
        followup_lesion_in_baseline_ml=6.0, zones=zones, head_change={"head_volume_change_ml": 0.1},
        registration={"rotation_deg": 5.0, "translation_mm": [1.0, 2.0, 2.0], "translation_norm_mm": 3.0,
                      "head_centre_displacement_mm": [0.0, 3.0, 4.0], "head_dice": 0.97},
        warnings=["poor alignment"],
    )


def test_followup_and_longitudinal_round_trip_and_refuse_unknown_keys(measured):
    base = HipMetrics.from_json(measured[1])
    follow = _followup(base)
    entry = follow.to_json()
    assert "index" not in entry and "files" not in entry  # set when written
    assert FollowupMetrics.from_json(entry).to_json() == entry
    written = replace(follow, index=1, folder=".", files={"qc_png": "qc.png"}).to_json()
    assert list(written)[:4] == ["index", "folder", "files", "followup"]
    assert FollowupMetrics.from_json(written).to_json() == written
    with pytest.raises(InputError, match=r"unknown key\(s\) 'collapse_mm'"):
        FollowupMetrics.from_json({**written, "collapse_mm": 1.0})
    with pytest.raises(InputError, match=r"followup: unknown key\(s\) 'x'"):
        FollowupMetrics.from_json({**written, "followup": {**written["followup"], "x": 1}})
    # the changes.csv row and its warning count: the baseline's, the follow-up's and the comparison's
    row = follow.csv_row(base)
    assert tuple(row) == FollowupMetrics.CSV_COLUMNS
    assert row["n_warnings"] == len(base.warnings) + 2 and row["translation_norm_mm"] == 3.0
    # the sample scan's head is intact: its stage is "none", the change unknown in this made-up entry
    assert follow.headline() == ("regeneration 40.0 %, regenerated 4.00 mL, new 0.00 mL, persistent 6.00 mL; "
                                 "rotation 5.0 deg, head Dice 0.970; collapse none")
    assert follow.headline(base).endswith("head Dice 0.970; collapse none -> none")
    assert "head moved 5.0 mm" in follow.qc_title("t")

    longitudinal = Longitudinal(side="right", baseline=base, followups=[replace(follow, index=1)],
                                change_map_labels={"0": "background"})
    content = longitudinal.to_json()
    assert content["schema_version"] == SCHEMA_VERSION and content["latest_followup"] == 1
    assert content["regeneration_pct"] == 40.0 and content["registration"] == written["registration"]
    assert content["warnings"] == ["follow-up: thick slices", "follow-up vs baseline: poor alignment"]
    assert Longitudinal.from_json(content).to_json() == content
    bad = copy.deepcopy(content)
    bad["followups"][0]["collapse_mm"] = 1.0
    with pytest.raises(InputError, match=r"followups\[0\]: unknown key\(s\) 'collapse_mm'"):
        Longitudinal.from_json(bad)


def test_collapse_in_the_tables_lines_and_titles(measured):
    """head_depression_mm, arco2019_collapse and the literature cut-offs reach scans.csv, the CLI
    line, the qc.png title and napari's table; a new collapse reaches changes.csv and compare's line."""
    base = HipMetrics.from_json(measured[1])
    assert base.arco2019_collapse == "none" and base.literature_flags  # NF 22 %, JIC C2: the C2 cut-off
    row = base.csv_row()
    assert row["head_depression_mm"] == base.head_depression_mm and row["arco2019_collapse"] == "none"
    assert row["literature_flags"] == " | ".join(base.literature_flags)
    assert row["literature_flags"].startswith("literature cut-off: JIC type C2")
    limit = base.collapse["detection_limit_mm"]
    assert base.summary_line().endswith(", size class B, collapse none; 0 warning(s)")
    assert f"\ncollapse: no depression above the {limit:.2f} mm detection limit" in base.qc_title()
    rows = dict(base.table_rows())
    assert rows["ARCO 2019 collapse"] == "none"
    assert rows["Head depression"] == f"{base.head_depression_mm:.2f} mm (detection limit {limit:.2f} mm)"
    assert rows["Literature cut-off"].startswith("JIC type C2")  # one cut-off: no number

    collapsed = replace(base, head_depression_mm=2.63, arco2019_collapse="IIIB",
                        collapse={**base.collapse, "jic_zone": "C1"})
    assert collapsed.summary_line().endswith(", collapse IIIB (2.63 mm); 0 warning(s)")
    assert "\ncollapse: head depression 2.63 mm, ARCO 2019 IIIB (zone C1)" in collapsed.qc_title()
    assert HipMetrics(side="left").summary_line().endswith(", collapse -; 0 warning(s)")  # not measured

    follow = replace(_followup(base), followup=collapsed, head_depression_change_mm=2.5, new_collapse=True,
                     literature_flags=["literature cut-off: necrotic fraction < 10 % at follow-up (x; y)"])
    row = follow.csv_row(base)
    assert row["head_depression_change_mm"] == 2.5 and row["new_collapse"] is True
    assert _cell(row["new_collapse"]) == "true" and row["literature_flags"].endswith("(x; y)")
    assert follow.headline(base).endswith("head Dice 0.970; collapse none -> IIIB (new), depression +2.50 mm")
    assert follow.qc_title().endswith("\ncollapse IIIB (new), depression +2.50 mm")
    table = {name: text for name, text, _ in follow.table_rows(base)}
    assert table["ARCO 2019 collapse, baseline → follow-up"] == "none → IIIB (new collapse)"
    assert table["Head depression change"] == "+2.50 mm"
    assert table["Literature cut-off (follow-up)"].startswith("necrotic fraction < 10 %")
