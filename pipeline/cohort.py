"""Cohort statistics laid out like the pilot study (METHOD.md section 5, Bone Joint Res 2022).

Pure functions over the per-scan and per-comparison records of a batch run (plain dicts, as in
scans.csv / changes.csv): necrotic fraction per timepoint, paired tests of each follow-up against
baseline, regeneration as mean of per-hip ratios and as ratio of means (overall and by outcome),
the share of hips under 10 % NF at 3 months by progression, and where regeneration happened.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

ZONES = ("A", "B", "C1", "C2")
REGIONS = ("anterior", "central", "posterior")
SMALL_NF_PCT = 10.0  # the pilot study's threshold at 3 months for no stage progression


def describe(values) -> dict:
    """n, mean, SD (n-1), median, min, max of finite values; None where undefined."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"n": 0, "mean": None, "sd": None, "median": None, "min": None, "max": None}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
        "median": float(np.median(v)),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def paired_tests(before, after) -> dict:
    """Wilcoxon signed-rank and paired t-test of paired samples (scipy); None when n < 2 or
    when the differences are all zero (the tests are undefined)."""
    from scipy import stats

    pairs = [(a, b) for a, b in zip(before, after) if a is not None and b is not None]
    out = {"n_pairs": len(pairs), "wilcoxon_p": None, "ttest_p": None, "mean_difference": None}
    if len(pairs) < 2:
        return out
    a, b = np.array(pairs, dtype=float).T
    diff = b - a
    out["mean_difference"] = float(diff.mean())
    if np.allclose(diff, 0):
        return out
    out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
    out["ttest_p"] = float(stats.ttest_rel(a, b).pvalue)
    return out


def cohort_summary(scans: list[dict], changes: list[dict]) -> dict:
    """The cohort tables.

    Parameters
    ----------
    scans : list of dict
        One per analysed scan: subject, side, timepoint_months, outcome, status,
        necrotic_fraction_pct, lesion_volume_ml, head_volume_ml.
    changes : list of dict
        One per follow-up comparison: subject, side, timepoint_months, outcome, status,
        regeneration_pct, baseline_lesion_ml, followup_lesion_ml, regenerated_ml, and
        ``zones`` (zone -> regenerated_ml).
    """
    ok_scans = [s for s in scans if s.get("status") == "ok"]
    ok_changes = [c for c in changes if c.get("status") == "ok"]
    timepoints = sorted({s["timepoint_months"] for s in ok_scans})
    nf = {}
    for t in timepoints:
        nf[_tp(t)] = describe(s.get("necrotic_fraction_pct") for s in ok_scans if s["timepoint_months"] == t)

    by_hip = {(s["subject"], s["side"], s["timepoint_months"]): s for s in ok_scans}
    tests = {}
    for t in timepoints:
        if t == 0:
            continue
        hips = sorted({(s, side) for (s, side, tt) in by_hip if tt == t and (s, side, 0.0) in by_hip})
        before = [by_hip[(s, side, 0.0)].get("necrotic_fraction_pct") for s, side in hips]
        after = [by_hip[(s, side, t)].get("necrotic_fraction_pct") for s, side in hips]
        tests[_tp(t)] = paired_tests(before, after)

    regeneration = {}
    for t in sorted({c["timepoint_months"] for c in ok_changes}):
        at_t = [c for c in ok_changes if c["timepoint_months"] == t]
        groups = {"all": at_t}
        for outcome in sorted({c.get("outcome") or "unknown" for c in at_t}):
            groups[outcome] = [c for c in at_t if (c.get("outcome") or "unknown") == outcome]
        regeneration[_tp(t)] = {name: _regeneration(rows) for name, rows in groups.items()}

    return {
        "n_scans": len(scans),
        "n_scans_ok": len(ok_scans),
        "n_hips": len({(s["subject"], s["side"]) for s in ok_scans}),
        "necrotic_fraction_pct": nf,
        "paired_tests_vs_baseline": tests,
        "regeneration": regeneration,
        "small_lesion_at_3_months": _small_at_3_months(ok_scans),
        "regenerated_share_by_zone": _zone_shares(ok_changes),
    }


def _tp(months: float) -> str:
    return f"{months:g} months"


def _regeneration(rows: list[dict]) -> dict:
    """Mean (SD) of per-hip regeneration % (as the pilot study) and the ratio of means."""
    ratios = [r.get("regeneration_pct") for r in rows]
    v0 = [r.get("baseline_lesion_ml") for r in rows if r.get("regeneration_pct") is not None]
    vt = [r.get("followup_lesion_ml") for r in rows if r.get("regeneration_pct") is not None]
    ratio_of_means = None
    if v0 and sum(v0) > 0:
        ratio_of_means = 100.0 * (np.mean(v0) - np.mean(vt)) / np.mean(v0)
    return {"per_hip_pct": describe(ratios), "ratio_of_means_pct": ratio_of_means}


def _small_at_3_months(scans: list[dict]) -> dict:
    """Share of hips with NF < 10 % at 3 months, among hips that progressed and those that did not."""
    at3 = [s for s in scans if s["timepoint_months"] == 3 and s.get("necrotic_fraction_pct") is not None]
    out = {}
    for name, rows in (("progressed", [s for s in at3 if s.get("outcome") in ("progressed", "arthroplasty")]),
                       ("not_progressed", [s for s in at3 if s.get("outcome") == "healed"])):
        small = sum(1 for s in rows if s["necrotic_fraction_pct"] < SMALL_NF_PCT)
        out[name] = {"n": len(rows), "n_below_10_pct": small,
                     "share_pct": 100.0 * small / len(rows) if rows else None}
    return out


def _zone_shares(changes: list[dict]) -> dict:
    """Share (%) of all regenerated volume per JIC zone and AP region, by outcome group, at each
    follow-up: the zone's regenerated mL summed over hips / all regenerated mL summed over hips."""
    out: dict = defaultdict(dict)
    for t in sorted({c["timepoint_months"] for c in changes}):
        at_t = [c for c in changes if c["timepoint_months"] == t and c.get("zones")]
        groups = {"all": at_t}
        for outcome in sorted({c.get("outcome") or "unknown" for c in at_t}):
            groups[outcome] = [c for c in at_t if (c.get("outcome") or "unknown") == outcome]
        for name, rows in groups.items():
            total = sum(c.get("regenerated_ml") or 0.0 for c in rows)
            shares = {}
            for zone in ZONES + REGIONS:
                vol = sum((c["zones"].get(zone) or 0.0) for c in rows)
                shares[zone] = 100.0 * vol / total if total > 0 else None
            out[_tp(t)][name] = {"regenerated_ml": total, "share_pct": shares, "n_hips": len(rows)}
    return dict(out)


def cohort_markdown(summary: dict) -> str:
    """cohort.md: the tables in the pilot study's layout."""
    def f(v, fmt=".1f"):
        return "-" if v is None else format(v, fmt)

    lines = ["# Cohort summary", "",
             f"{summary['n_scans_ok']} of {summary['n_scans']} scans measured, {summary['n_hips']} hips.", "",
             "## Necrotic fraction (% of femoral-head volume)", "",
             "| timepoint | n | mean (SD) | median | paired Wilcoxon p vs baseline | paired t-test p |",
             "|---|---|---|---|---|---|"]
    for tp, d in summary["necrotic_fraction_pct"].items():
        t = summary["paired_tests_vs_baseline"].get(tp, {})
        lines.append(f"| {tp} | {d['n']} | {f(d['mean'])} ({f(d['sd'])}) | {f(d['median'])} | "
                     f"{f(t.get('wilcoxon_p'), '.3g')} | {f(t.get('ttest_p'), '.3g')} |")
    lines += ["", "## Regeneration (% of the baseline lesion volume)", "",
              "| timepoint | group | n | mean (SD) of per-hip ratios | ratio of means |", "|---|---|---|---|---|"]
    for tp, groups in summary["regeneration"].items():
        for name, d in groups.items():
            p = d["per_hip_pct"]
            lines.append(f"| {tp} | {name} | {p['n']} | {f(p['mean'])} ({f(p['sd'])}) | "
                         f"{f(d['ratio_of_means_pct'])} |")
    s3 = summary["small_lesion_at_3_months"]
    lines += ["", f"## Hips under {SMALL_NF_PCT:g} % NF at 3 months", "",
              "| group | n | under 10 % | share |", "|---|---|---|---|"]
    for name, d in s3.items():
        lines.append(f"| {name.replace('_', ' ')} | {d['n']} | {d['n_below_10_pct']} | {f(d['share_pct'])} % |")
    lines += ["", "## Where regeneration happened (share of all regenerated volume, %)", "",
              "| timepoint | group | " + " | ".join(ZONES + REGIONS) + " |",
              "|---|---|" + "---|" * len(ZONES + REGIONS)]
    for tp, groups in summary["regenerated_share_by_zone"].items():
        for name, d in groups.items():
            lines.append(f"| {tp} | {name} | " + " | ".join(f(d["share_pct"][z]) for z in ZONES + REGIONS) + " |")
    return "\n".join(lines) + "\n"
