"""Cohort statistics laid out like the pilot study (docs/method.md section 5, Bone Joint Res 2022).

Pure functions over the per-scan and per-comparison records of a batch run (plain dicts, as in
scans.csv / changes.csv); only records with ``status == "ok"`` count.

* Necrotic fraction (NF, % of the head) per timepoint: n, mean (SD, n-1), median, range; overall
  and by outcome group.
* Each follow-up timepoint against baseline, on the hips measured at both: paired Wilcoxon
  signed-rank test and paired t-test (scipy, two-sided). With fewer than 2 pairs, or when the
  test is undefined (all differences zero, zero variance), the p-value is null and ``reason``
  says why; with under 6 pairs ``note`` gives the smallest p the exact signed-rank test can reach.
* Regeneration at each follow-up (R = 100 (V0 - Vt) / V0, each visit's own lesion volume) as the
  mean (SD) of per-hip ratios (as the pilot study) and as the ratio of means
  100 (mean V0 - mean Vt) / mean V0 over the same hips; overall and by outcome group. Hips with
  an empty baseline lesion have no ratio and are left out of both.
* The share of hips with NF under 10 % at 3 months among hips that progressed (outcome
  ``progressed`` or ``arthroplasty``: arthroplasty follows collapse) and hips that did not
  (``healed``); hips without an outcome are in neither group.
* Where regeneration happened, at each follow-up, overall and by outcome group: each JIC zone's
  (A, B, C1, C2) and antero-posterior region's share of all regenerated volume, the regenerated
  mL (L0 and not Lt, on the baseline grid) summed over the group's hips, then divided by their
  summed regenerated mL. Zones partition the head, as do regions, so each set sums to 100 %.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import numpy as np

ZONES = ("A", "B", "C1", "C2")
REGIONS = ("anterior", "central", "posterior")
SMALL_NF_PCT = 10.0  # the pilot study's threshold at 3 months for no stage progression
SMALL_NF_MONTHS = 3.0
PROGRESSED = ("progressed", "arthroplasty")
NOT_PROGRESSED = ("healed",)
NO_OUTCOME = "no outcome"


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
    """Paired Wilcoxon signed-rank and paired t-test (scipy, two-sided) of after vs before.

    Pairs with a missing value are dropped. Returns ``n_pairs``, ``mean_difference`` (after -
    before), the statistics and p-values, and ``reason`` (None, or why a test is undefined).
    """
    from scipy import stats

    pairs = [(a, b) for a, b in zip(before, after)
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    out = {"n_pairs": len(pairs), "mean_difference": None, "sd_difference": None,
           "wilcoxon_statistic": None, "wilcoxon_p": None, "ttest_statistic": None, "ttest_p": None,
           "reason": None, "note": None}
    if not pairs:
        out["reason"] = "no hip measured at both timepoints"
        return out
    a, b = np.array(pairs, dtype=float).T
    diff = b - a
    out["mean_difference"] = float(diff.mean())
    if len(pairs) < 2:
        out["reason"] = f"{len(pairs)} pair: a paired test needs at least 2"
        return out
    out["sd_difference"] = float(diff.std(ddof=1))
    reasons = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if np.all(diff == 0):
            reasons.append("Wilcoxon undefined: all differences are zero")
        else:
            try:
                w = stats.wilcoxon(b, a)
                out["wilcoxon_statistic"], out["wilcoxon_p"] = _finite(w.statistic), _finite(w.pvalue)
            except ValueError as exc:
                reasons.append(f"Wilcoxon undefined: {exc}")
        t = stats.ttest_rel(b, a)
        if out["sd_difference"] > 0:
            out["ttest_statistic"], out["ttest_p"] = _finite(t.statistic), _finite(t.pvalue)
        if out["ttest_p"] is None or out["ttest_statistic"] is None:
            out["ttest_statistic"] = out["ttest_p"] = None
            reasons.append("t-test undefined: the differences have zero variance")
    out["reason"] = "; ".join(reasons) or None
    if out["wilcoxon_p"] is not None and len(pairs) < 6:
        out["note"] = (f"with {len(pairs)} pairs the exact signed-rank p is at least {2 / 2 ** len(pairs):.3g} "
                       "(two-sided)")
    return out


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def regeneration_summary(rows: list[dict]) -> dict:
    """Mean (SD) of per-hip regeneration % and the ratio of means, over hips with a ratio."""
    usable = [r for r in rows if r.get("regeneration_pct") is not None
              and r.get("baseline_lesion_ml") is not None and r.get("followup_lesion_ml") is not None]
    v0 = [float(r["baseline_lesion_ml"]) for r in usable]
    vt = [float(r["followup_lesion_ml"]) for r in usable]
    ratio_of_means = None
    if v0 and np.mean(v0) > 0:
        ratio_of_means = float(100.0 * (np.mean(v0) - np.mean(vt)) / np.mean(v0))
    return {
        "n_hips": len(usable),
        "per_hip_pct": describe(r["regeneration_pct"] for r in usable),
        "ratio_of_means_pct": ratio_of_means,
        "mean_baseline_lesion_ml": float(np.mean(v0)) if v0 else None,
        "mean_followup_lesion_ml": float(np.mean(vt)) if vt else None,
    }


def small_lesion_shares(scans: list[dict], months: float = SMALL_NF_MONTHS,
                        threshold_pct: float = SMALL_NF_PCT) -> dict:
    """Share of hips with NF < threshold at ``months`` among hips that progressed and not."""
    at = [s for s in scans if s["timepoint_months"] == months and s.get("necrotic_fraction_pct") is not None]
    out = {"timepoint_months": months, "threshold_pct": threshold_pct,
           "definition": f"progressed: outcome {' or '.join(PROGRESSED)}; not progressed: outcome "
                         f"{' or '.join(NOT_PROGRESSED)}; hips without an outcome are in neither group"}
    for name, outcomes in (("progressed", PROGRESSED), ("not_progressed", NOT_PROGRESSED)):
        rows = [s for s in at if s.get("outcome") in outcomes]
        small = sum(1 for s in rows if s["necrotic_fraction_pct"] < threshold_pct)
        out[name] = {"n_hips": len(rows), "n_below": small,
                     "share_pct": 100.0 * small / len(rows) if rows else None}
    return out


def zone_shares(rows: list[dict]) -> dict:
    """Each zone's and region's share (%) of the group's summed regenerated volume."""
    total = sum(float(c.get("regenerated_ml") or 0.0) for c in rows)
    vols = {z: sum(float((c.get("zones") or {}).get(z) or 0.0) for c in rows) for z in ZONES + REGIONS}
    return {"n_hips": len(rows), "regenerated_ml": total, "regenerated_ml_by_zone": vols,
            "share_pct": {z: (100.0 * v / total if total > 0 else None) for z, v in vols.items()}}


def _groups(rows: list[dict]) -> dict[str, list[dict]]:
    """"all", then each outcome present (sorted), then hips without an outcome."""
    groups = {"all": rows}
    outcomes = sorted({r.get("outcome") for r in rows if r.get("outcome")})
    for outcome in outcomes:
        groups[outcome] = [r for r in rows if r.get("outcome") == outcome]
    if any(not r.get("outcome") for r in rows) and outcomes:
        groups[NO_OUTCOME] = [r for r in rows if not r.get("outcome")]
    return groups


def _tp(months: float) -> str:
    return f"{months:g} months"


def cohort_summary(scans: list[dict], changes: list[dict]) -> dict:
    """The cohort tables (cohort.json).

    Parameters
    ----------
    scans : list of dict
        One per analysed scan: subject, side, timepoint_months, outcome, status,
        necrotic_fraction_pct (and the other scans.csv figures).
    changes : list of dict
        One per follow-up comparison: subject, side, timepoint_months, outcome, status,
        regeneration_pct, baseline_lesion_ml, followup_lesion_ml, regenerated_ml, and ``zones``
        (zone or region -> regenerated mL).
    """
    ok_scans = [s for s in scans if s.get("status") == "ok"]
    ok_changes = [c for c in changes if c.get("status") == "ok"]
    timepoints = sorted({float(s["timepoint_months"]) for s in ok_scans})

    nf, nf_by_outcome = {}, {}
    for t in timepoints:
        at_t = [s for s in ok_scans if s["timepoint_months"] == t]
        nf[_tp(t)] = describe(s.get("necrotic_fraction_pct") for s in at_t)
        nf_by_outcome[_tp(t)] = {name: describe(s.get("necrotic_fraction_pct") for s in rows)
                                 for name, rows in _groups(at_t).items() if name != "all"}

    by_hip = {(s["subject"], s["side"], float(s["timepoint_months"])): s for s in ok_scans}
    tests = {}
    for t in timepoints:
        if t == 0:
            continue
        hips = sorted({(s, side) for (s, side, tt) in by_hip if tt == t and (s, side, 0.0) in by_hip})
        tests[_tp(t)] = paired_tests([by_hip[(s, side, 0.0)].get("necrotic_fraction_pct") for s, side in hips],
                                     [by_hip[(s, side, t)].get("necrotic_fraction_pct") for s, side in hips])

    regeneration, zones = {}, defaultdict(dict)
    for t in sorted({float(c["timepoint_months"]) for c in ok_changes}):
        groups = _groups([c for c in ok_changes if c["timepoint_months"] == t])
        regeneration[_tp(t)] = {name: regeneration_summary(rows) for name, rows in groups.items()}
        zones[_tp(t)] = {name: zone_shares([c for c in rows if c.get("zones")]) for name, rows in groups.items()}

    outcomes: dict[str, int] = {}
    for outcome in {(s["subject"], s["side"]): s.get("outcome") or NO_OUTCOME for s in ok_scans}.values():
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {
        "n_scans": len(scans),
        "n_scans_ok": len(ok_scans),
        "n_comparisons": len(changes),
        "n_comparisons_ok": len(ok_changes),
        "n_hips": len({(s["subject"], s["side"]) for s in ok_scans}),
        "hips_by_outcome": dict(sorted(outcomes.items())),
        "necrotic_fraction_pct": nf,
        "necrotic_fraction_pct_by_outcome": nf_by_outcome,
        "paired_tests_vs_baseline": tests,
        "regeneration": regeneration,
        "small_lesion_at_3_months": small_lesion_shares(ok_scans),
        "regenerated_share_by_zone": dict(zones),
    }


def cohort_markdown(summary: dict) -> str:
    """cohort.md: the tables in the pilot study's layout."""
    def f(v, fmt=".1f"):
        return "-" if v is None else format(v, fmt)

    def p(v):
        return "-" if v is None else ("< 0.001" if v < 0.001 else format(v, ".3f"))

    def msd(d):
        return f"{f(d['mean'])} ({f(d['sd'])})"

    lines = ["# Cohort summary", "",
             f"{summary['n_scans_ok']} of {summary['n_scans']} scans measured, {summary['n_comparisons_ok']} of "
             f"{summary['n_comparisons']} follow-up comparisons, {summary['n_hips']} hips ("
             + ", ".join(f"{n} {name}" for name, n in summary["hips_by_outcome"].items()) + ").", "",
             "## Necrotic fraction (% of femoral-head volume)", "",
             "| timepoint | n | mean (SD) | median | range | n pairs | paired Wilcoxon p vs baseline "
             "| paired t-test p | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for tp, d in summary["necrotic_fraction_pct"].items():
        t = summary["paired_tests_vs_baseline"].get(tp)
        test = ("| - | - | - | baseline |" if t is None else
                f"| {t['n_pairs']} | {p(t['wilcoxon_p'])} | {p(t['ttest_p'])} | "
                f"{'; '.join(x for x in (t['reason'], t.get('note')) if x)} |")
        lines.append(f"| {tp} | {d['n']} | {msd(d)} | {f(d['median'])} | {f(d['min'])}-{f(d['max'])} {test}")
    lines += ["", "### By outcome", "", "| timepoint | group | n | mean (SD) | median |", "|---|---|---|---|---|"]
    for tp, groups in summary["necrotic_fraction_pct_by_outcome"].items():
        for name, d in groups.items():
            lines.append(f"| {tp} | {name} | {d['n']} | {msd(d)} | {f(d['median'])} |")
    lines += ["", "## Regeneration (% of the baseline lesion volume)", "",
              "| timepoint | group | n | mean (SD) of per-hip ratios | median | ratio of means |",
              "|---|---|---|---|---|---|"]
    for tp, groups in summary["regeneration"].items():
        for name, d in groups.items():
            h = d["per_hip_pct"]
            lines.append(f"| {tp} | {name} | {d['n_hips']} | {msd(h)} | {f(h['median'])} | "
                         f"{f(d['ratio_of_means_pct'])} |")
    s3 = summary["small_lesion_at_3_months"]
    lines += ["", f"## Hips under {s3['threshold_pct']:g} % NF at {s3['timepoint_months']:g} months", "",
              "| group | n | under threshold | share (%) |", "|---|---|---|---|"]
    for name in ("progressed", "not_progressed"):
        d = s3[name]
        lines.append(f"| {name.replace('_', ' ')} | {d['n_hips']} | {d['n_below']} | {f(d['share_pct'])} |")
    lines += ["", s3["definition"].capitalize() + ".",
              "", "## Where regeneration happened (share of all regenerated volume, %)", "",
              "| timepoint | group | n | regenerated mL | " + " | ".join(ZONES + REGIONS) + " |",
              "|---|---|---|---|" + "---|" * len(ZONES + REGIONS)]
    for tp, groups in summary["regenerated_share_by_zone"].items():
        for name, d in groups.items():
            lines.append(f"| {tp} | {name} | {d['n_hips']} | {f(d['regenerated_ml'], '.2f')} | "
                         + " | ".join(f(d["share_pct"][z]) for z in ZONES + REGIONS) + " |")
    return "\n".join(lines) + "\n"
