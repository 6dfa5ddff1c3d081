"""Cohort statistics (pipeline.report.cohort) against hand computations on small designed record lists."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from pipeline.report.cohort import cohort_markdown, cohort_summary, describe, paired_tests

# hip -> outcome, and NF (%) per timepoint (months); H5 has no outcome; H7's baseline failed.
HIPS = {
    ("H1", "right"): ("healed", {0: 20.0, 3: 8.0, 12: 5.0}),
    ("H2", "left"): ("healed", {0: 30.0, 3: 25.0, 12: 10.0}),
    ("H3", "right"): ("progressed", {0: 25.0, 3: 12.0, 12: 30.0}),
    ("H4", "left"): ("arthroplasty", {0: 40.0, 3: 9.0}),
    ("H5", "right"): (None, {0: 15.0, 3: 3.0}),
    ("H6", "right"): ("healed", {0: 18.0, 3: 5.0, 24: 2.0}),
}


def _scans():
    rows = []
    for (subject, side), (outcome, nf) in HIPS.items():
        for t, value in nf.items():
            rows.append({"subject": subject, "side": side, "timepoint_months": float(t), "outcome": outcome,
                         "status": "ok", "necrotic_fraction_pct": value})
    # a failed scan counts nowhere (not as a baseline of H7, not in the 0-month figures)
    rows.append({"subject": "H7", "side": "left", "timepoint_months": 0.0, "outcome": "healed", "status": "error",
                 "necrotic_fraction_pct": None})
    rows.append({"subject": "H7", "side": "left", "timepoint_months": 3.0, "outcome": "healed", "status": "ok",
                 "necrotic_fraction_pct": 50.0})
    return rows


def _change(subject, outcome, v0, vt, zones=None, months=12.0, status="ok"):
    regen = 100.0 * (v0 - vt) / v0 if v0 > 0 else None
    regenerated = sum(zones[z] for z in ("A", "B", "C1", "C2")) if zones else max(v0 - vt, 0.0)
    return {"subject": subject, "side": "right", "timepoint_months": months, "outcome": outcome, "status": status,
            "baseline_lesion_ml": v0, "followup_lesion_ml": vt, "regeneration_pct": regen,
            "regenerated_ml": regenerated, "zones": zones}


# regenerated mL per zone and region; zones and regions each partition the regenerated volume
ZA = {"A": 2.0, "B": 1.0, "C1": 1.0, "C2": 1.0, "anterior": 1.0, "central": 3.0, "posterior": 1.0}
ZC = {"A": 0.0, "B": 1.0, "C1": 2.0, "C2": 0.0, "anterior": 0.5, "central": 2.0, "posterior": 0.5}
ZB = {"A": 0.0, "B": 0.5, "C1": 0.0, "C2": 0.0, "anterior": 0.0, "central": 0.5, "posterior": 0.0}


def _changes():
    return [
        _change("A", "healed", 10.0, 5.0, ZA),         # 50 %
        _change("B", "progressed", 2.0, 2.5, ZB),      # -25 %
        _change("C", "healed", 4.0, 1.0, ZC),          # 75 %
        _change("D", "healed", 0.0, 0.0, None),        # no ratio: empty baseline lesion
        _change("E", "healed", 9.0, 1.0, ZA, status="error"),
        _change("A", "healed", 10.0, 8.0, ZA, months=3.0),
    ]


@pytest.fixture(scope="module")
def summary():
    return cohort_summary(_scans(), _changes())


def test_describe_by_hand():
    d = describe([20.0, 30.0, 25.0, 40.0, 15.0, None, float("nan")])
    assert d["n"] == 5
    assert d["mean"] == pytest.approx(26.0)
    assert d["sd"] == pytest.approx(math.sqrt((36 + 16 + 1 + 196 + 121) / 4))  # n - 1
    assert d["median"] == 25.0 and d["min"] == 15.0 and d["max"] == 40.0
    one = describe([7.0])
    assert one["n"] == 1 and one["sd"] is None and one["mean"] == 7.0
    assert describe([])["mean"] is None


def test_necrotic_fraction_per_timepoint(summary):
    nf = summary["necrotic_fraction_pct"]
    assert list(nf) == ["0 months", "3 months", "12 months", "24 months"]
    base = [v[1][0] for v in HIPS.values()]
    assert nf["0 months"]["n"] == 6  # the failed H7 baseline does not count
    assert nf["0 months"]["mean"] == pytest.approx(np.mean(base))
    assert nf["0 months"]["sd"] == pytest.approx(np.std(base, ddof=1))
    assert nf["0 months"]["median"] == pytest.approx(np.median(base))
    at3 = [v[1][3] for v in HIPS.values() if 3 in v[1]] + [50.0]
    assert nf["3 months"]["median"] == pytest.approx(np.median(at3))
    healed0 = [v[1][0] for v in HIPS.values() if v[0] == "healed"]
    assert summary["necrotic_fraction_pct_by_outcome"]["0 months"]["healed"]["mean"] == pytest.approx(np.mean(healed0))
    assert summary["necrotic_fraction_pct_by_outcome"]["0 months"]["no outcome"]["n"] == 1


def test_paired_tests_against_scipy_and_by_hand(summary):
    tests = summary["paired_tests_vs_baseline"]
    # 3 months: hips with a baseline and a 3-month scan (H7 has no usable baseline)
    pairs = [(v[1][0], v[1][3]) for v in HIPS.values() if 3 in v[1]]
    before, after = np.array(pairs).T
    t3 = tests["3 months"]
    assert t3["n_pairs"] == 6
    assert t3["wilcoxon_p"] == pytest.approx(stats.wilcoxon(after, before).pvalue)
    # every NF fell: exact two-sided signed-rank p = 2 / 2**n
    assert t3["wilcoxon_p"] == pytest.approx(2 / 2**6)
    d = after - before
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert t3["ttest_statistic"] == pytest.approx(t)
    assert t3["ttest_p"] == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    assert t3["mean_difference"] == pytest.approx(d.mean())
    assert t3["reason"] is None
    # 12 months: 3 pairs, mixed signs
    pairs12 = np.array([(v[1][0], v[1][12]) for v in HIPS.values() if 12 in v[1]]).T
    assert tests["12 months"]["n_pairs"] == 3
    assert tests["12 months"]["wilcoxon_p"] == pytest.approx(stats.wilcoxon(pairs12[1], pairs12[0]).pvalue)
    assert tests["12 months"]["ttest_p"] == pytest.approx(stats.ttest_rel(pairs12[1], pairs12[0]).pvalue)
    assert "at least 0.25" in tests["12 months"]["note"]  # 2 / 2**3: three pairs cannot reach p < 0.05
    # 24 months: one pair, no test, and a reason
    t24 = tests["24 months"]
    assert t24["n_pairs"] == 1 and t24["wilcoxon_p"] is None and t24["ttest_p"] is None
    assert "at least 2" in t24["reason"]
    assert "0 months" not in tests


def test_paired_tests_undefined_cases_do_not_crash():
    same = paired_tests([10.0, 20.0, 30.0], [10.0, 20.0, 30.0])
    assert same["n_pairs"] == 3 and same["wilcoxon_p"] is None and same["ttest_p"] is None
    assert "zero" in same["reason"]
    shifted = paired_tests([10.0, 20.0, 30.0], [12.0, 22.0, 32.0])  # constant difference: t undefined
    assert shifted["ttest_p"] is None and "variance" in shifted["reason"]
    assert shifted["wilcoxon_p"] == pytest.approx(stats.wilcoxon([12.0, 22.0, 32.0], [10.0, 20.0, 30.0]).pvalue)
    assert paired_tests([], [])["reason"]
    assert paired_tests([1.0, None], [2.0, 3.0])["n_pairs"] == 1


def test_regeneration_mean_of_ratios_and_ratio_of_means(summary):
    r12 = summary["regeneration"]["12 months"]
    # all: hips A (50 %), B (-25 %), C (75 %); D has no ratio, E failed
    assert r12["all"]["n_hips"] == 3
    assert r12["all"]["per_hip_pct"]["mean"] == pytest.approx((50 - 25 + 75) / 3)
    assert r12["all"]["per_hip_pct"]["sd"] == pytest.approx(np.std([50, -25, 75], ddof=1))
    v0, vt = np.mean([10.0, 2.0, 4.0]), np.mean([5.0, 2.5, 1.0])
    assert r12["all"]["ratio_of_means_pct"] == pytest.approx(100 * (v0 - vt) / v0)  # 46.875 %
    # the two summaries differ on this design (small hips weigh as much as large ones in the mean of ratios)
    assert abs(r12["all"]["ratio_of_means_pct"] - r12["all"]["per_hip_pct"]["mean"]) > 10
    healed = r12["healed"]
    assert healed["per_hip_pct"]["mean"] == pytest.approx(62.5)
    assert healed["ratio_of_means_pct"] == pytest.approx(100 * (7.0 - 3.0) / 7.0)
    assert r12["progressed"]["per_hip_pct"]["mean"] == pytest.approx(-25.0)
    assert r12["progressed"]["per_hip_pct"]["sd"] is None
    assert summary["regeneration"]["3 months"]["all"]["ratio_of_means_pct"] == pytest.approx(20.0)


def test_share_under_10_pct_at_3_months(summary):
    s = summary["small_lesion_at_3_months"]
    # progressed: H3 (12 %), H4 arthroplasty (9 %) -> 1 of 2; not progressed (healed): H1 (8), H2 (25),
    # H6 (5), H7 (50, its baseline failed but its 3-month scan stands) -> 2 of 4; H5 has no outcome
    assert (s["progressed"]["n_hips"], s["progressed"]["n_below"]) == (2, 1)
    assert s["progressed"]["share_pct"] == pytest.approx(50.0)
    assert (s["not_progressed"]["n_hips"], s["not_progressed"]["n_below"]) == (4, 2)
    assert s["not_progressed"]["share_pct"] == pytest.approx(50.0)


def test_regenerated_share_by_zone_and_outcome(summary):
    z = summary["regenerated_share_by_zone"]["12 months"]
    healed = z["healed"]  # hips A and C (D has no zones, E failed)
    total = 5.0 + 3.0
    assert healed["regenerated_ml"] == pytest.approx(total)
    for zone in ZA:
        assert healed["share_pct"][zone] == pytest.approx(100 * (ZA[zone] + ZC[zone]) / total), zone
    assert sum(healed["share_pct"][k] for k in ("A", "B", "C1", "C2")) == pytest.approx(100.0)
    assert sum(healed["share_pct"][k] for k in ("anterior", "central", "posterior")) == pytest.approx(100.0)
    assert z["progressed"]["share_pct"]["B"] == pytest.approx(100.0)
    assert z["all"]["share_pct"]["C1"] == pytest.approx(100 * 3.0 / 8.5)


def test_summary_is_plain_json_and_markdown_renders(summary):
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary
    md = cohort_markdown(summary)
    assert "| 3 months | 7 |" in md  # n at 3 months: six hips with a baseline and H7
    assert "at least 2" in md
    assert "ratio of means" in md


def test_empty_and_failed_cohorts_do_not_crash():
    empty = cohort_summary([], [])
    assert empty["n_scans"] == 0 and empty["necrotic_fraction_pct"] == {}
    cohort_markdown(empty)
    failed = cohort_summary([{"subject": "X", "side": "left", "timepoint_months": 0.0, "status": "error"}], [])
    assert failed["n_scans_ok"] == 0
    cohort_markdown(failed)


def test_one_read_per_scan_combines_to_the_same_cohort():
    """A reader study where every scan has one read gives the cohort tables of a plain run."""
    from pipeline.report.cohort import combine_reads

    scans = [{**s, "key": f"{s['subject']}_{s['timepoint_months']}", "reader": "reader1", "repeat": 1}
             for s in _scans()]
    changes = [{**c, "key": f"{c['subject']}_{c['timepoint_months']}", "reader": "reader1"} for c in _changes()]
    for rule in ("adjudicated_or_first", "adjudicated_or_mean", "mean", "first_reader"):
        combined = cohort_summary(combine_reads(scans, rule, "adjudicator"),
                                  combine_reads(changes, rule, "adjudicator", kind="change"))
        assert combined == cohort_summary(_scans(), _changes()), rule


def test_followup_changes_are_flagged_against_the_repeatability_coefficient():
    from pipeline.report.cohort import followup_noise

    scans = [{"subject": "S", "side": "left", "timepoint_months": t, "status": "ok", "necrotic_fraction_pct": nf}
             for t, nf in ((0.0, 20.0), (3.0, 19.0), (12.0, 12.0))]
    changes = [{"key": f"S_m{t:g}", "subject": "S", "side": "left", "timepoint_months": t, "status": "ok",
                "baseline_lesion_ml": 10.0, "followup_lesion_ml": vt, "regeneration_pct": 100 * (10 - vt) / 10}
               for t, vt in ((3.0, 9.6), (12.0, 6.0))]
    m3, m12 = followup_noise(scans, changes, rc_nf=1.5, rc_lesion_ml=0.5)
    assert m3["nf_change_points"] == -1.0 and m3["nf_change_within_noise"] is True
    assert m3["lesion_change_ml"] == pytest.approx(-0.4) and m3["regeneration_within_noise"] is True
    assert m12["nf_change_within_noise"] is False and m12["regeneration_within_noise"] is False
    (none,) = followup_noise(scans, changes[:1], rc_nf=None, rc_lesion_ml=None)
    assert none["nf_change_within_noise"] is None and none["regeneration_within_noise"] is None


# collapse (docs/method.md section 6) ---------------------------------------------------------------
def _collapse_records():
    """Four hips: C1 intact throughout; C2 intact, then IIIB at 12 months (new collapse); C3 IIIA at
    baseline and IIIB later (collapse, not new); C4 with no stage (a failed measure of the depression).
    C1's baseline "none" could not see the dome's top (scans.csv ``collapse_caveat``)."""
    stages = {("C1", "healed"): (("none", 0.2), ("none", 0.3)), ("C2", "progressed"): (("none", 0.1), ("IIIB", 2.7)),
              ("C3", "progressed"): (("IIIA", 1.4), ("IIIB", 3.1)), ("C4", None): ((None, None), ("none", 0.4))}
    scans, changes = [], []
    for (subject, outcome), visits in stages.items():
        for months, (stage, depth) in zip((0.0, 12.0), visits):
            scans.append({"subject": subject, "side": "left", "timepoint_months": months, "outcome": outcome,
                          "status": "ok", "necrotic_fraction_pct": 20.0, "arco2019_collapse": stage,
                          "head_depression_mm": depth,
                          "collapse_caveat": ("top of the dome not measured" if (subject, months) == ("C1", 0.0)
                                              else None)})
        (_, d0), (stage_t, dt) = visits
        new = None if visits[0][0] is None else (visits[0][0] == "none" and stage_t in ("IIIA", "IIIB"))
        changes.append({"key": f"{subject}_left_m12", "subject": subject, "side": "left", "timepoint_months": 12.0,
                        "outcome": outcome, "status": "ok", "regeneration_pct": 0.0, "baseline_lesion_ml": 5.0,
                        "followup_lesion_ml": 5.0, "regenerated_ml": 0.0, "new_collapse": new,
                        "head_depression_change_mm": None if d0 is None else dt - d0})
    return scans, changes


def test_collapse_is_counted_by_timepoint_and_outcome_and_new_collapse_listed():
    scans, changes = _collapse_records()
    summary = cohort_summary(scans, changes)
    by_tp = summary["collapse_arco2019"]
    assert by_tp["0 months"]["all"]["stages"] == {"none": 2, "IIIA": 1, "IIIB": 0, "not measured": 1}
    assert by_tp["12 months"]["all"]["stages"] == {"none": 2, "IIIA": 0, "IIIB": 2, "not measured": 0}
    assert by_tp["12 months"]["progressed"]["stages"] == {"none": 0, "IIIA": 0, "IIIB": 2, "not measured": 0}
    assert by_tp["12 months"]["healed"]["n"] == 1 and by_tp["12 months"]["no outcome"]["stages"]["none"] == 1
    assert by_tp["0 months"]["all"]["none_top_open"] == 1 and by_tp["0 months"]["progressed"]["none_top_open"] == 0
    assert by_tp["12 months"]["all"]["none_top_open"] == 0
    assert by_tp["12 months"]["all"]["head_depression_mm"]["max"] == 3.1
    assert by_tp["0 months"]["all"]["head_depression_mm"]["n"] == 3  # the null depth counts nowhere
    new = summary["new_collapse"]
    # C4's baseline had no stage: no new_collapse to count; C3 had collapsed already
    assert new["n_followups"] == 3 and new["n_new"] == 1
    (only,) = new["followups"]
    assert (only["subject"], only["baseline_stage"], only["followup_stage"]) == ("C2", "none", "IIIB")
    assert only["head_depression_change_mm"] == pytest.approx(2.6)
    json.dumps(summary, allow_nan=False)
    md = cohort_markdown(summary)
    assert "## Collapse (ARCO 2019, head depression on MRI)" in md
    assert "| 12 months | all | 4 | 2 | 0 | 0 | 2 | 0 | 1.55 | 0.30-3.10 |" in md
    assert "| 0 months | all | 4 | 2 | 1 | 1 | 0 | 1 | 0.20 | 0.10-1.40 |" in md
    assert "### New collapse among follow-ups (1 of 3)" in md
    assert "| C2_left_m12 | progressed | none | IIIB | +2.60 |" in md


def test_no_new_collapse_is_said_so():
    scans, changes = _collapse_records()
    summary = cohort_summary([s for s in scans if s["subject"] != "C2"], [c for c in changes if c["subject"] != "C2"])
    assert summary["new_collapse"]["n_new"] == 0
    assert "No follow-up went from no collapse at baseline to IIIA or IIIB." in cohort_markdown(summary)


def test_report_lists_depression_stage_and_literature_cut_offs(tmp_path):
    from pipeline.report.html import LITERATURE_NOTE, write_report

    scans, changes = _collapse_records()
    for s in scans:
        s.update(key=f"{s['subject']}_left_m{int(s['timepoint_months']):02d}", folder="scans/x")
    scans[2]["literature_flags"] = ("literature cut-off: necrotic fraction >= 25 % (Hip Int 2022) | "
                                    "literature cut-off: JIC type C2 (Kuroda et al.)")
    for c in changes:
        c["folder"] = "changes/x"
    summary = cohort_summary(scans, changes)
    page = write_report(tmp_path, scans, changes, summary).read_text()
    table = page.split("<h3>Collapse per scan</h3>")[1].split("</table>")[0]
    assert LITERATURE_NOTE in table and "never a prediction" in table
    rows = table.split("<tr>")[2:]
    assert len(rows) == len(scans)
    c2 = [r for r in rows if "C2_left_m12" in r][0]
    assert "<td class='num'>2.70</td>" in c2 and "<td>IIIB</td>" in c2
    c1_base = [r for r in rows if "C1_left_m00" in r][0]
    assert "<td>none (top of the dome not measured)</td>" in c1_base
    c2_base = [r for r in rows if "C2_left_m00" in r][0]
    assert ("literature cut-off: necrotic fraction &gt;= 25 % (Hip Int 2022)<br>literature cut-off: JIC type C2"
            in c2_base)
    assert "new collapse since baseline" in page and "depression change +2.60 mm" in page
    assert "<h3>Collapse (ARCO 2019, head depression on MRI)</h3>" in page
