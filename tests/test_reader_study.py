"""Reader studies in `onfh batch` (docs/method.md section 7): reads of one scan by several readers,
an adjudicator, repeat acquisitions. Every figure of agreement.json, repeatability.json,
adjudication.csv and the combined cohort values is recomputed here independently, from scans.csv,
changes.csv and the reads' label maps, with pingouin, scikit-learn and numpy directly."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pingouin as pg
import pytest
from _hip_pair import HipModel, grid, render, rotation
from scipy import ndimage
from sklearn.metrics import cohen_kappa_score

from pipeline.app.batch import (
    ADJUDICATION_COLUMNS,
    CHANGE_COLUMNS,
    READ_CHANGE_COLUMNS,
    READ_SCAN_COLUMNS,
    SCAN_COLUMNS,
    run_batch,
)
from pipeline.app.cli import main
from pipeline.config import load_settings
from pipeline.errors import InputError
from pipeline.io.manifest import read_manifest
from pipeline.report import agreement as A
from pipeline.report.cohort import combine_reads

from conftest import save_nifti

FAST = ("reconstruction: {isotropic: false}\noutputs: {stl: false, qc_png: false}\n"
        "longitudinal: {voxel_mm: 2.0}\n")
SHAPE, SPACING = (40, 40, 36), (2.2, 2.2, 2.4)
COLUMNS = ["subject", "side", "timepoint_months", "image", "labels", "outcome", "reader", "repeat"]


# the study ------------------------------------------------------------------------------------
def _visit(folder: Path, stem: str, side: str, cap: float, pose=None, seed: int = 0):
    """One acquisition of a phantom hip: image and its true label map (the first reader's)."""
    model = HipModel(side=side, center=(6.0 if side == "right" else -6.0, -4.0, 3.0))
    rot, t = (np.eye(3), np.zeros(3)) if pose is None else (rotation(pose[0], pose[1]), np.asarray(pose[2]))
    affine = grid(SHAPE, SPACING, rot @ model.c + t + np.array([8.0 if side == "right" else -8.0, 0.0, -10.0]))
    image, labels = render(model, SHAPE, affine, cap, pose=None if pose is None else (rot, t), seed=seed)
    save_nifti(folder / f"{stem}.nii.gz", image, affine)
    save_nifti(folder / f"{stem}_labels.nii.gz", labels, affine)
    return labels, affine


def _second_reader(folder: Path, stem: str, labels, affine, grow_voxels: int, seed: int) -> str:
    """A second reader's label map: the lesion boundary moved outward by ``grow_voxels`` voxels
    over a random half of the lesion's surroundings (inside the head), as a reader drawing a
    slightly wider margin in places."""
    rng = np.random.default_rng(seed)
    lesion = labels == 2
    grown = ndimage.binary_dilation(lesion, iterations=grow_voxels) & (labels > 0)
    keep = rng.random(labels.shape) < 0.5
    out = labels.copy()
    out[grown & keep] = 2
    name = f"{stem}_labels_reader2.nii.gz"
    save_nifti(folder / name, out, affine)
    return name


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Four hips: S01 read by two readers at 0 and 3 months (one comparison per reader), S02 read
    discordantly and adjudicated, S03 read by two readers plus a repeat acquisition, S04 a repeat
    acquisition read once; S05 read by two readers, discordant and not adjudicated."""
    folder = tmp_path_factory.mktemp("study")
    rows = []

    def row(subject, side, months, stem, labels=None, reader="", repeat="", outcome="healed"):
        rows.append({"subject": subject, "side": side, "timepoint_months": months, "image": f"{stem}.nii.gz",
                     "labels": labels or f"{stem}_labels.nii.gz", "outcome": outcome, "reader": reader,
                     "repeat": repeat})

    lab, aff = _visit(folder, "S01_m00", "right", 12.0, seed=1)
    r2 = _second_reader(folder, "S01_m00", lab, aff, 1, seed=11)
    row("S01", "right", 0, "S01_m00")
    row("S01", "right", 0, "S01_m00", r2, reader="reader2")
    lab, aff = _visit(folder, "S01_m03", "right", 8.0, pose=((1, 2, -1), 6.0, (3.0, -2.0, 2.0)), seed=2)
    r2 = _second_reader(folder, "S01_m03", lab, aff, 1, seed=12)
    row("S01", "right", 3, "S01_m03")
    row("S01", "right", 3, "S01_m03", r2, reader="reader2")
    # the repeat acquisition of S01's baseline: a small shift, new noise
    _visit(folder, "S01_m00_rep2", "right", 12.0, pose=((0, 0, 1), 2.0, (0.8, -0.5, 0.6)), seed=21)
    row("S01", "right", 0, "S01_m00_rep2", repeat="2")

    lab, aff = _visit(folder, "S02_m00", "left", 10.0, seed=3)
    r2 = _second_reader(folder, "S02_m00", lab, aff, 3, seed=13)  # a much wider margin: discordant
    row("S02", "left", 0, "S02_m00", outcome="progressed")
    row("S02", "left", 0, "S02_m00", r2, reader="reader2", outcome="progressed")
    row("S02", "left", 0, "S02_m00", reader="adjudicator", outcome="progressed")  # sides with reader1

    lab, aff = _visit(folder, "S03_m00", "right", 14.0, seed=4)
    r2 = _second_reader(folder, "S03_m00", lab, aff, 1, seed=14)
    row("S03", "right", 0, "S03_m00", repeat="1")
    row("S03", "right", 0, "S03_m00", r2, reader="reader2", repeat="1")
    _visit(folder, "S03_m00_rep2", "right", 14.0, pose=((1, 0, 0), 1.5, (-0.6, 0.4, 0.9)), seed=22)
    row("S03", "right", 0, "S03_m00_rep2", repeat="2")

    lab, aff = _visit(folder, "S05_m00", "left", 11.0, seed=5)
    r2 = _second_reader(folder, "S05_m00", lab, aff, 3, seed=15)
    row("S05", "left", 0, "S05_m00", outcome="")
    row("S05", "left", 0, "S05_m00", r2, reader="reader2", outcome="")

    (folder / "fast.yaml").write_text(FAST)
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    out = folder / "out"
    log = io.StringIO()
    rc = run_batch(manifest, out, load_settings(folder / "fast.yaml"), workers=2, stream=log)
    assert rc == 0, log.getvalue()
    return {"folder": folder, "manifest": manifest, "rows": rows, "out": out}


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _num(text: str):
    return None if text == "" else float(text)


def _reads(out: Path) -> dict[tuple[str, str], dict]:
    """scans.csv as {(acquisition, reader): row}; the acquisition is the key without the reader."""
    rows = {}
    for r in _csv(out / "scans.csv"):
        scan = r["key"] if r["key"] == _acquisition(r) else r["key"].removesuffix(f"_{r['reader']}")
        rows[(scan, r["reader"])] = r
    return rows


def _acquisition(r: dict) -> str:
    months = f"{float(r['timepoint_months']):g}".zfill(2)
    base = f"{r['subject']}_{r['side']}_m{months}"
    return base if r["repeat"] == "1" else f"{base}_rep{r['repeat']}"


# tables -----------------------------------------------------------------------------------------
def test_every_read_has_its_own_row_and_folder(study):
    scans = _csv(study["out"] / "scans.csv")
    assert tuple(scans[0]) == READ_SCAN_COLUMNS
    assert len(scans) == len(study["rows"]) and all(r["status"] == "ok" for r in scans)
    assert len({r["folder"] for r in scans}) == len(scans)
    by_key = {r["key"]: r for r in scans}
    # the default reader keeps the folder it had before readers existed; others carry their name
    assert by_key["S01_right_m00"]["reader"] == "reader1" and by_key["S01_right_m00_reader2"]["reader"] == "reader2"
    assert by_key["S01_right_m00_rep2"]["repeat"] == "2"
    # a read's figures are its own label map's: the second reader's wider lesion is larger
    assert float(by_key["S02_left_m00_reader2"]["lesion_volume_ml"]) > float(by_key["S02_left_m00"]["lesion_volume_ml"])
    for r in scans:
        labels = np.asarray(nib.load(study["out"] / r["folder"] / "labels.nii.gz").dataobj)
        voxel_ml = math.prod(SPACING) / 1000.0
        assert float(r["lesion_volume_ml"]) == pytest.approx((labels == 2).sum() * voxel_ml, abs=1e-3)


def test_each_reader_is_compared_with_its_own_baseline(study):
    changes = _csv(study["out"] / "changes.csv")
    assert tuple(changes[0]) == READ_CHANGE_COLUMNS
    got = {(r["key"], r["baseline_key"], r["reader"]) for r in changes}
    # repeat acquisitions are no follow-ups; only S01 has a 3-month visit, read by both readers
    assert got == {("S01_right_m03", "S01_right_m00", "reader1"),
                   ("S01_right_m03_reader2", "S01_right_m00_reader2", "reader2")}
    scans = {r["key"]: r for r in _csv(study["out"] / "scans.csv")}
    for r in changes:
        assert float(r["baseline_lesion_ml"]) == pytest.approx(float(scans[r["baseline_key"]]["lesion_volume_ml"]),
                                                               abs=1e-3)
        assert float(r["followup_lesion_ml"]) == pytest.approx(float(scans[r["key"]]["lesion_volume_ml"]), abs=1e-3)


# agreement.json against independent computations ------------------------------------------------
def test_icc_bland_altman_and_kappa_recomputed_from_scans_csv(study):
    agreement = json.loads((study["out"] / "agreement.json").read_text())
    reads = _reads(study["out"])
    assert agreement["readers"] == ["reader1", "reader2"]
    scans = sorted({s for s, r in reads if r == "reader2"})  # every scan reader2 read, reader1 read too
    assert len(scans) == 5
    for measure in ("head_volume_ml", "lesion_volume_ml", "necrotic_fraction_pct"):
        long = [(s, r, float(reads[(s, r)][measure])) for s in scans for r in ("reader1", "reader2")]
        frame = __import__("pandas").DataFrame(long, columns=["scan", "reader", "value"])
        table = pg.intraclass_corr(frame, targets="scan", raters="reader", ratings="value").set_index("Type")
        icc = agreement["measures"][measure]["icc"]
        assert icc["n_targets"] == 5 and icc["n_readers"] == 2
        assert icc["ICC(2,1)"]["icc"] == pytest.approx(table.loc["ICC(A,1)", "ICC"], abs=1e-5)
        assert icc["ICC(3,1)"]["icc"] == pytest.approx(table.loc["ICC(C,1)", "ICC"], abs=1e-5)
        assert icc["ICC(2,1)"]["ci95"] == pytest.approx(list(table.loc["ICC(A,1)", "CI95"]), abs=1e-5)
        assert "absolute agreement" in icc["ICC(2,1)"]["form"] and "consistency" in icc["ICC(3,1)"]["form"]
        d = np.array([float(reads[(s, "reader2")][measure]) - float(reads[(s, "reader1")][measure]) for s in scans])
        ba = agreement["measures"][measure]["bland_altman"]["reader1 vs reader2"]
        # scans.csv rounds to 4 decimals
        assert ba["bias"] == pytest.approx(d.mean(), abs=1e-3) and ba["n"] == 5
        assert ba["upper"] - ba["lower"] == pytest.approx(2 * 1.959964 * d.std(ddof=1), abs=2e-3)
    for name, weights in (("jic_type", None), ("size_class", "linear")):
        pairs = [(reads[(s, "reader1")][name], reads[(s, "reader2")][name]) for s in scans]
        pairs = [p for p in pairs if all(p)]
        kappa = agreement["classes"][name]["cohen"]["reader1 vs reader2"]
        labels = {"jic_type": ["A", "B", "C1", "C2"], "size_class": ["A", "B", "C"]}[name]
        expected = cohen_kappa_score([a for a, _ in pairs], [b for _, b in pairs], labels=labels, weights=weights)
        if math.isnan(expected):  # one class only: kappa undefined, reported as null with its reason
            assert kappa["kappa"] is None and kappa["reason"]
        else:
            assert kappa["kappa"] == pytest.approx(expected, abs=1e-6) and kappa["n"] == len(pairs)


def _hd95(a, b, spacing):
    """Surface HD95 by brute force: all pairwise distances between surface voxel centres."""
    def surface(m):
        return np.argwhere(m & ~ndimage.binary_erosion(np.pad(m, 1))[1:-1, 1:-1, 1:-1]) * np.asarray(spacing)

    pa, pb = surface(a), surface(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_dice_and_hd95_per_scan_recomputed_from_the_label_maps(study):
    agreement = json.loads((study["out"] / "agreement.json").read_text())
    folders = {r["key"]: r["folder"] for r in _csv(study["out"] / "scans.csv")}
    assert len(agreement["pairs"]) == 5
    for pair in agreement["pairs"]:
        a, b = (np.asarray(nib.load(study["out"] / folders[k] / "labels.nii.gz").dataobj) == 2 for k in pair["reads"])
        assert pair["lesion_dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-6)
        assert pair["lesion_hd95_mm"] == pytest.approx(_hd95(a, b, SPACING), abs=1e-6)


def test_dice_of_identical_masks_is_one_and_hd95_of_a_one_voxel_shift_is_the_spacing():
    mask = np.zeros((30, 30, 20), bool)
    mask[8:20, 6:22, 5:14] = True
    spacing = (0.7, 0.8, 3.5)
    same = A.lesion_overlap(mask, mask.copy(), spacing)
    assert same["lesion_dice"] == 1.0 and same["lesion_hd95_mm"] == 0.0
    for axis in range(3):
        shifted = np.roll(mask, 1, axis=axis)
        assert A.hausdorff95(mask, shifted, spacing) == pytest.approx(spacing[axis])
        assert A.hausdorff95(mask, shifted, spacing) == pytest.approx(_hd95(mask, shifted, spacing))
    ball = np.linalg.norm(np.indices((31, 31, 31)) - 15, axis=0) <= 9
    assert A.hausdorff95(ball, np.roll(ball, 1, axis=0), (1.2, 1.2, 1.2)) == pytest.approx(1.2)
    empty = np.zeros_like(mask)
    assert A.lesion_overlap(empty, empty, spacing) == {"lesion_dice": None, "lesion_hd95_mm": None,
                                                        "reason": "both lesion masks are empty"}
    one = A.lesion_overlap(mask, empty, spacing)
    assert one["lesion_dice"] == 0.0 and one["lesion_hd95_mm"] is None and "empty" in one["reason"]


# discordance and adjudication ---------------------------------------------------------------------
def test_adjudication_csv_lists_exactly_the_discordant_pairs(study):
    reads = _reads(study["out"])
    agreement = json.loads((study["out"] / "agreement.json").read_text())
    dice = {p["scan"]: p["lesion_dice"] for p in agreement["pairs"]}
    expected = {}
    for (scan, reader), second in reads.items():
        if reader != "reader2":
            continue
        first = reads[(scan, "reader1")]
        nf = abs(float(second["necrotic_fraction_pct"]) - float(first["necrotic_fraction_pct"]))
        reasons = (nf > 5.0) + (first["jic_type"] != second["jic_type"]) + (dice[scan] < 0.7)
        if reasons:
            expected[scan] = "resolved" if (scan, "adjudicator") in reads else "open"
    rows = _csv(study["out"] / "adjudication.csv")
    assert tuple(rows[0]) == ADJUDICATION_COLUMNS
    assert {r["scan"]: r["status"] for r in rows} == expected
    # the design: S02 and S05 were drawn with a margin 3 voxels wider in places; S02 was adjudicated
    assert expected["S02_left_m00"] == "resolved" and expected["S05_left_m00"] == "open"
    s02 = next(r for r in rows if r["scan"] == "S02_left_m00")
    assert s02["adjudicated_read"] == "S02_left_m00_adjudicator" and "NF differs" in s02["reasons"]
    assert {r["reader_a"] + "|" + r["reader_b"] for r in rows} == {"reader1|reader2"}
    report = (study["out"] / "report.html").read_text()
    assert "<h2>Agreement</h2>" in report and "await adjudication" in report and "S05_left_m00" in report
    assert report.count("data:image/png;base64,") >= 2  # NF lines and the Bland-Altman plot


def test_discordance_thresholds_come_from_the_settings(study, tmp_path):
    """A looser NF threshold and Dice limit: the rebuilt adjudication list shrinks accordingly,
    and no scan is measured again (the reads settings are not part of a task's fingerprint)."""
    out = tmp_path / "out"
    import shutil

    shutil.copytree(study["out"], out)
    config = tmp_path / "loose.yaml"
    config.write_text(FAST + "reads: {discordant_nf_points: 50, min_lesion_dice: 0.1}\n")
    log = io.StringIO()
    assert run_batch(study["manifest"], out, load_settings(config), workers=1, resume=True, stream=log) == 0
    assert "0 to run" in log.getvalue() or "nothing to run" in log.getvalue()
    reads = _reads(out)
    jic_differs = {s for (s, r), row in reads.items()
                   if r == "reader2" and row["jic_type"] != reads[(s, "reader1")]["jic_type"]}
    assert {r["scan"] for r in _csv(out / "adjudication.csv")} == jic_differs


# the values used downstream -------------------------------------------------------------------
def test_cohort_uses_the_adjudicated_read_else_the_readers_mean_and_says_so(study):
    reads = _reads(study["out"])
    cohort = json.loads((study["out"] / "cohort.json").read_text())
    assert cohort["reads"]["combine"] == "adjudicated_or_mean"  # the default
    assert "adjudicator" in cohort["reads"]["rule"] and "mean" in cohort["reads"]["rule"]
    # per hip at baseline: adjudicated (S02) else the mean of reader1 and reader2; first acquisitions only
    def nf(scan, reader):
        return float(reads[(scan, reader)]["necrotic_fraction_pct"])

    used = {"S01": np.mean([nf("S01_right_m00", "reader1"), nf("S01_right_m00", "reader2")]),
            "S02": nf("S02_left_m00", "adjudicator"),
            "S03": np.mean([nf("S03_right_m00", "reader1"), nf("S03_right_m00", "reader2")]),
            "S05": np.mean([nf("S05_left_m00", "reader1"), nf("S05_left_m00", "reader2")])}
    got = cohort["necrotic_fraction_pct"]["0 months"]
    assert got["n"] == 4 and got["mean"] == pytest.approx(np.mean(list(used.values())), abs=1e-3)
    assert cohort["n_scans"] == 5  # hips x timepoints, not reads
    assert cohort["reads"]["scans_by_source"] == {"adjudicated": 1, "mean of reads": 4}
    md = (study["out"] / "cohort.md").read_text()
    assert "## Agreement" in md and "adjudicated_or_mean" in md and "ICC(2,1)" in md
    # regeneration: the mean of the two readers' comparisons of S01
    reg = cohort["regeneration"]["3 months"]["all"]["per_hip_pct"]["mean"]
    per_reader = [float(r["regeneration_pct"]) for r in _csv(study["out"] / "changes.csv")]
    assert len(per_reader) == 2
    assert reg == pytest.approx(np.mean(per_reader), abs=1e-3)


def test_first_read_rule_keeps_the_primary_reads_figures(study, tmp_path):
    """adjudicated_or_first: the adjudicated read, else the first listed; adding reader2 changes nothing."""
    from pipeline.report.cohort import combine_reads as combine

    rows = [dict(r, scan_key=r["key"], line=i) for i, r in enumerate(_csv(study["out"] / "scans.csv"))]
    for r in rows:
        r["repeat"] = int(r["repeat"])
    combined = {(r["subject"], float(r["timepoint_months"])): r
                for r in combine(rows, "adjudicated_or_first", "adjudicator")}
    assert combined[("S01", 0.0)]["reader"] == "reader1" and combined[("S01", 0.0)]["combined_by"] == "first read"
    assert combined[("S02", 0.0)]["reader"] == "adjudicator"
    assert combined[("S05", 0.0)]["necrotic_fraction_pct"] == _reads(study["out"])[("S05_left_m00", "reader1")][
        "necrotic_fraction_pct"]


def test_mean_rule_averages_the_readers_and_recomputes_the_size_class():
    def read(key, reader, nf, lesion, jic, size, line):
        return {"key": key, "scan_key": "S_right_m00", "subject": "S", "side": "right", "timepoint_months": 0.0,
                "repeat": 1, "reader": reader, "status": "ok", "line": line, "necrotic_fraction_pct": nf,
                "lesion_volume_ml": lesion, "head_volume_ml": 50.0, "jic_type": jic, "size_class": size,
                "cna_deg": 190.0 + line * 20, "kerboul_grade": 1}

    reads = [read("a", "reader1", 14.0, 7.0, "C1", "A", 1), read("b", "reader2", 18.0, 9.0, "C2", "B", 2)]
    (mean,) = combine_reads(reads, "adjudicated_or_mean", "adjudicator")
    assert mean["necrotic_fraction_pct"] == 16.0 and mean["lesion_volume_ml"] == 8.0
    assert mean["size_class"] == "B"  # from the mean NF, 16 %
    assert mean["kerboul_grade"] == 2  # from the mean CNA, 220 degrees
    assert mean["jic_type"] == "C1" and mean["combined_by"] == "mean of 2 reads"
    adjudicated = read("c", "adjudicator", 17.0, 8.5, "C2", "B", 3)
    (adj,) = combine_reads(reads + [adjudicated], "adjudicated_or_mean", "adjudicator")
    assert adj["key"] == "c" and adj["combined_by"] == "adjudicated"
    (plain,) = combine_reads(reads + [adjudicated], "mean", "adjudicator")
    assert plain["necrotic_fraction_pct"] == 16.0  # the adjudicator is no reader to average
    (first,) = combine_reads(list(reversed(reads)), "first_reader", "adjudicator")
    assert first["key"] == "b"  # the first listed


# repeatability -----------------------------------------------------------------------------------------
def test_repeatability_recomputed_from_the_repeat_pairs_and_changes_flagged(study):
    reads = _reads(study["out"])
    rep = json.loads((study["out"] / "repeatability.json").read_text())
    pairs = [("S01_right_m00", "S01_right_m00_rep2"), ("S03_right_m00", "S03_right_m00_rep2")]
    assert rep["n_pairs"] == 2 and sorted(p["scans"] for p in rep["pairs"]) == [list(p) for p in pairs]
    for measure in ("head_volume_ml", "lesion_volume_ml", "necrotic_fraction_pct"):
        d = np.array([float(reads[(b, "reader1")][measure]) - float(reads[(a, "reader1")][measure]) for a, b in pairs])
        wsd = math.sqrt((d ** 2).sum() / (2 * len(d)))
        got = rep["measures"][measure]
        # scans.csv rounds to 4 decimals: 1e-4 on each value
        assert got["wsd"] == pytest.approx(wsd, abs=1e-4) and got["rc"] == pytest.approx(2.7718 * got["wsd"], rel=1e-4)
        assert got["rc_ci95"][0] < got["rc"] < got["rc_ci95"][1]
    assert rep["by_reader"]["reader1"]["n_pairs"] == 2
    rc_nf = rep["measures"]["necrotic_fraction_pct"]["rc"]
    rc_lesion = rep["measures"]["lesion_volume_ml"]["rc"]
    for c in _csv(study["out"] / "changes.csv"):
        reader_key = "" if c["reader"] == "reader1" else f"_{c['reader']}"
        before = float(reads[("S01_right_m00", c["reader"])]["necrotic_fraction_pct"])
        after = float(reads[("S01_right_m03", c["reader"])]["necrotic_fraction_pct"])
        assert c["key"] == f"S01_right_m03{reader_key}"
        assert float(c["nf_change_points"]) == pytest.approx(after - before, abs=1e-3)
        assert c["nf_change_within_noise"] == str(abs(after - before) < rc_nf).lower()
        change = float(c["followup_lesion_ml"]) - float(c["baseline_lesion_ml"])
        assert c["regeneration_within_noise"] == str(abs(change) < rc_lesion).lower()
    cohort = json.loads((study["out"] / "cohort.json").read_text())
    (follow,) = cohort["reads"]["followup_changes"]
    assert follow["key"] == "S01_right_m03" and follow["rc_nf_points"] == pytest.approx(rc_nf)


def test_too_few_scans_give_null_figures_with_reasons():
    reads = [{"key": f"S{i}_{r}", "scan_key": f"S{i}", "subject": f"S{i}", "side": "right", "timepoint_months": 0.0,
              "repeat": 1, "reader": r, "necrotic_fraction_pct": 10.0 + i + (r == "b"), "head_volume_ml": 50.0,
              "lesion_volume_ml": 5.0 + i, "jic_type": "C1", "size_class": "A"} for i in range(2) for r in "ab"]
    out = A.reader_study(reads, {}, "adjudicator", 5.0, 0.7)
    icc = out["measures"]["necrotic_fraction_pct"]["icc"]
    assert icc["value"] is None and "3 targets" in icc["reason"]
    assert out["measures"]["necrotic_fraction_pct"]["bland_altman"]["a vs b"]["bias"] == pytest.approx(1.0)
    kappa = out["classes"]["jic_type"]["cohen"]["a vs b"]
    assert kappa["kappa"] is None and kappa["reason"]  # one class only
    one = A.reader_study(reads[:1], {}, "adjudicator", 5.0, 0.7)
    assert one["measures"]["head_volume_ml"]["icc"]["reason"] == "needs at least 2 readers"
    rep = A.repeatability_study([({"key": "x", "head_volume_ml": 50.0}, {"key": "y", "head_volume_ml": 51.0})], {})
    head = rep["measures"]["head_volume_ml"]
    assert head["value"] is None and "at least 2" in head["reason"]


# manifests --------------------------------------------------------------------------------------------
def test_a_manifest_without_reads_writes_no_reader_study(study, tmp_path):
    """The same first reads without reader and repeat columns: the tables have their old columns,
    no agreement outputs, and the figures of the shared reads are the same."""
    rows = [r for r in study["rows"] if not r["reader"] and r["repeat"] in ("", "1")]
    manifest = study["folder"] / "plain.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS[:6], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert all(r.reader is None and r.repeat is None for r in read_manifest(manifest))
    out = tmp_path / "plain"
    assert run_batch(manifest, out, load_settings(study["folder"] / "fast.yaml"), workers=1, stream=io.StringIO()) == 0
    assert tuple(_csv(out / "scans.csv")[0]) == SCAN_COLUMNS and tuple(_csv(out / "changes.csv")[0]) == CHANGE_COLUMNS
    assert not any((out / name).exists() for name in ("agreement.json", "repeatability.json", "adjudication.csv"))
    assert "reads" not in json.loads((out / "cohort.json").read_text())
    assert "<h2>Agreement</h2>" not in (out / "report.html").read_text()
    mine = {r["key"]: r for r in _csv(study["out"] / "scans.csv")}
    for r in _csv(out / "scans.csv"):
        assert {c: r[c] for c in SCAN_COLUMNS if c != "elapsed_s"} == {c: mine[r["key"]][c] for c in SCAN_COLUMNS
                                                                       if c != "elapsed_s"}


def _manifest(tmp_path: Path, lines: list[str]) -> Path:
    for name in ("a.nii.gz", "b.nii.gz"):
        (tmp_path / name).write_bytes(b"placeholder")
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("lines, message", [
    (["subject,side,timepoint_months,image,reader", "S01,right,0,a.nii.gz,r1", "S01,right,0,a.nii.gz,r2",
      "S01,right,0,a.nii.gz,r1"],
     "line 4: S01 right hip at 0 months, reader r1 is listed twice (also on line 2)"),
    (["subject,side,timepoint_months,image,reader,repeat", "S01,right,0,a.nii.gz,,", "S01,right,0,b.nii.gz,,2",
      "S01,right,0,b.nii.gz,,2"],
     "line 4: S01 right hip at 0 months, repeat 2 is listed twice (also on line 3)"),
    (["subject,side,timepoint_months,image,repeat", "S01,right,0,a.nii.gz,", "S01,right,0,a.nii.gz,1"],
     "line 3: S01 right hip at 0 months, repeat 1 is listed twice (also on line 2)"),
    (["subject,side,timepoint_months,image,reader", "S01,right,0,a.nii.gz,r1", "S01,right,0,b.nii.gz,r2"],
     "line 3: a read of S01 right at 0 months (repeat 1) gives image b.nii.gz, line 2 gives a.nii.gz: reads of one "
     "acquisition share its image (a new acquisition needs its own repeat number)"),
    (["subject,side,timepoint_months,image,reader", "S01,right,0,a.nii.gz,dr/x"],
     "line 2: reader 'dr/x' may hold only letters, digits, '.', '_' and '-' (it names output folders)"),
    (["subject,side,timepoint_months,image,repeat", "S01,right,0,a.nii.gz,1.5"],
     "line 2: repeat must be 1, 2, ... (the acquisition's number at this timepoint), not '1.5'"),
])
def test_bad_reads_are_refused_with_one_line_naming_the_lines(tmp_path, capsys, lines, message):
    path = _manifest(tmp_path, lines)
    with pytest.raises(InputError) as exc:
        read_manifest(path)
    assert str(exc.value) == f"manifest m.csv {message}"
    out = tmp_path / "out"
    assert main(["batch", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"onfh: error: {exc.value}\n" and not out.exists()


def test_a_reader_named_like_the_default_reader_beside_an_unnamed_row_is_refused(tmp_path, capsys):
    path = _manifest(tmp_path, ["subject,side,timepoint_months,image,reader", "S01,right,0,a.nii.gz,",
                                "S01,right,0,a.nii.gz,reader1"])
    out = tmp_path / "out"
    assert main(["batch", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 3" in err and "line 2" in err and "reads.default_reader" in err
    assert not out.exists()
