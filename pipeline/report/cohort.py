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
* Collapse (docs/method.md section 6): per timepoint, overall and by outcome group, the number of
  hips whose ARCO 2019 collapse is none, IIIA or IIIB (and not measured), with the head
  depression's median and range; and the follow-ups with a new collapse (baseline none, follow-up
  IIIA or IIIB), each with its stage and change of depression.
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
#: ARCO 2019 collapse classes as counted (docs/method.md section 6); "not measured" is a null stage.
COLLAPSE_STAGES = ("none", "IIIA", "IIIB")
NOT_MEASURED = "not measured"


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


def collapse_counts(scans: list[dict]) -> dict:
    """Hips per ARCO 2019 collapse stage among scans of one timepoint, and their head depression.

    Returns
    -------
    dict
        ``n``, ``stages`` (none, IIIA, IIIB, not measured -> count), ``none_top_open`` (of the
        "none", those that cannot rule out collapse at the dome's top: scans.csv
        ``collapse_caveat``) and ``head_depression_mm`` (:func:`describe`).
    """
    stages = {name: sum(1 for s in scans if s.get("arco2019_collapse") == name) for name in COLLAPSE_STAGES}
    stages[NOT_MEASURED] = sum(1 for s in scans if s.get("arco2019_collapse") not in COLLAPSE_STAGES)
    top_open = sum(1 for s in scans if s.get("arco2019_collapse") == "none" and s.get("collapse_caveat"))
    return {"n": len(scans), "stages": stages, "none_top_open": top_open,
            "head_depression_mm": describe(s.get("head_depression_mm") for s in scans)}


def new_collapses(scans: list[dict], changes: list[dict]) -> dict:
    """The follow-ups with a new collapse (baseline "none", follow-up IIIA or IIIB; ``new_collapse``
    of each comparison), with both visits' stage and the change of depression.

    Returns
    -------
    dict
        ``n_followups`` (comparisons with a known ``new_collapse``), ``n_new`` and ``followups``:
        key, subject, side, timepoint_months, outcome, baseline and follow-up stage,
        head_depression_change_mm, one per new collapse in table order.
    """
    stage = {(s["subject"], s["side"], float(s["timepoint_months"])): s.get("arco2019_collapse") for s in scans}
    known = [c for c in changes if c.get("new_collapse") is not None]
    listed = [{"key": c["key"], "subject": c["subject"], "side": c["side"],
               "timepoint_months": c["timepoint_months"], "outcome": c.get("outcome") or None,
               "baseline_stage": stage.get((c["subject"], c["side"], 0.0)),
               "followup_stage": stage.get((c["subject"], c["side"], float(c["timepoint_months"]))),
               "head_depression_change_mm": c.get("head_depression_change_mm")}
              for c in known if c["new_collapse"]]
    return {"n_followups": len(known), "n_new": len(listed), "followups": listed}


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

    collapse = {}
    for t in timepoints:
        groups = _groups([s for s in ok_scans if s["timepoint_months"] == t])
        collapse[_tp(t)] = {name: collapse_counts(rows) for name, rows in groups.items()}

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
        "collapse_arco2019": collapse,
        "new_collapse": new_collapses(ok_scans, ok_changes),
    }


# reads: several readers, repeat acquisitions ---------------------------------------------------
#: Continuous scans.csv figures that the mean rules average over the readers.
MEAN_SCAN_FIGURES = ("head_volume_ml", "lesion_volume_ml", "necrotic_fraction_pct", "cna_deg", "arc_coronal_deg",
                     "arc_sagittal_deg", "head_radius_mm", "sphere_fit_rms_mm")
#: Continuous changes.csv figures that the mean rules average over the readers' comparisons.
MEAN_CHANGE_FIGURES = ("baseline_lesion_ml", "followup_lesion_ml", "regeneration_pct", "regenerated_ml", "new_ml",
                       "persistent_ml")
#: The rules of setting ``reads.combine``, as the outputs state them.
COMBINE_RULES = {
    "adjudicated_or_first": "the adjudicator's read where one exists, else the first read listed in the manifest; "
                            "every figure, classes included, comes from that one read",
    "adjudicated_or_mean": "the adjudicator's read where one exists, else the mean of the readers' continuous "
                           "figures (volumes, NF, angles; regeneration: the mean of the readers' regeneration); "
                           "size class and Kerboul grade recomputed from the mean NF and CNA; JIC and ARCO types "
                           "from the first read listed",
    "mean": "the mean of the readers' continuous figures (adjudicated reads left out); size class and Kerboul grade "
            "recomputed from the mean NF and CNA; JIC and ARCO types from the first read listed",
    "first_reader": "the first read listed in the manifest (adjudicated reads left out); every figure from that read",
}
ACQUISITION_RULE = ("a hip scanned twice or more at one timepoint (repeat acquisitions) enters the cohort with "
                    "its first measured acquisition; the repeats serve the test-retest repeatability")


def combine_reads(reads: list[dict], rule: str, adjudicator: str, kind: str = "scan",
                  per_acquisition: bool = False) -> list[dict]:
    """One record per scan (or per follow-up comparison) from the records of its reads.

    Parameters
    ----------
    reads : list of dict
        scans.csv (``kind="scan"``) or changes.csv (``kind="change"``) records, each with
        ``subject``, ``side``, ``timepoint_months``, ``repeat`` (scans), ``reader``, ``status``,
        in manifest order.
    rule : str
        A key of :data:`COMBINE_RULES` (setting ``reads.combine``).
    adjudicator : str
        Reader name of adjudicated reads.
    kind : {"scan", "change"}
    per_acquisition : bool
        One record per acquisition (``scan_key``: repeat acquisitions apart) instead of per hip and
        timepoint.

    Returns
    -------
    list of dict
        One record per hip and timepoint (scans: the first acquisition with a successful read; see
        :data:`ACQUISITION_RULE`), the reference read's record with the combined figures, plus
        ``combined_from`` (the keys of the reads used) and ``combined_by`` ("adjudicated", "first
        read" or "mean of n reads"). A scan none of whose reads succeeded is one failed record.
    """
    if rule not in COMBINE_RULES:
        raise ValueError(f"unknown combine rule {rule!r}")
    figures = MEAN_SCAN_FIGURES if kind == "scan" else MEAN_CHANGE_FIGURES
    hips: dict[tuple, list[dict]] = {}
    for r in reads:
        hips.setdefault(r["scan_key"] if per_acquisition else (r["subject"], r["side"], float(r["timepoint_months"])),
                        []).append(r)
    out = []
    for rows in hips.values():
        ok = [r for r in rows if r.get("status") == "ok"]
        if not ok:
            out.append({**rows[0], "combined_from": [r["key"] for r in rows], "combined_by": None})
            continue
        first_acquisition = min(int(r.get("repeat") or 1) for r in ok)
        ok = [r for r in ok if int(r.get("repeat") or 1) == first_acquisition]
        out.append(_combine(ok, rule, adjudicator, figures, kind))
    return out


def _combine(ok: list[dict], rule: str, adjudicator: str, figures: tuple, kind: str) -> dict:
    adjudicated = [r for r in ok if r.get("reader") == adjudicator]
    readers = [r for r in ok if r.get("reader") != adjudicator] or ok
    if adjudicated and rule.startswith("adjudicated_or_"):
        return {**adjudicated[0], "combined_from": [adjudicated[0]["key"]], "combined_by": "adjudicated"}
    if rule in ("adjudicated_or_first", "first_reader") or len(readers) == 1:
        return {**readers[0], "combined_from": [readers[0]["key"]], "combined_by": "first read"}
    out = {**readers[0], "combined_from": [r["key"] for r in readers], "combined_by": f"mean of {len(readers)} reads"}
    for name in figures:
        values = [float(r[name]) for r in readers if r.get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
    if kind == "scan":
        from pipeline.measures.location import kerboul_grade_of
        from pipeline.measures.volumes import size_class

        out["size_class"] = size_class(out["necrotic_fraction_pct"])
        out["kerboul_grade"] = None if out["cna_deg"] is None else kerboul_grade_of(out["cna_deg"])
    else:
        zones = [r.get("zones") or {} for r in readers]
        names = sorted({z for d in zones for z in d})
        out["zones"] = {z: float(np.mean([float(d.get(z) or 0.0) for d in zones])) for z in names}
    return out


def followup_noise(scans: list[dict], changes: list[dict], rc_nf: float | None,
                   rc_lesion_ml: float | None) -> list[dict]:
    """Each follow-up's NF change and regeneration against the repeatability coefficients.

    Parameters
    ----------
    scans, changes : list of dict
        Combined records (:func:`combine_reads`) of the scans and the comparisons.
    rc_nf, rc_lesion_ml : float or None
        Repeatability coefficients of the NF (points) and the lesion volume (mL).

    Returns
    -------
    list of dict
        One per comparison: ``nf_change_points`` (follow-up minus baseline NF) and
        ``nf_change_within_noise`` (|change| < RC), ``lesion_change_ml`` and
        ``regeneration_within_noise`` (the lesion volume change behind the regeneration is within
        its RC); the flags are None without an RC.
    """
    from pipeline.report.agreement import within_noise

    nf = {(s["subject"], s["side"], float(s["timepoint_months"])): s.get("necrotic_fraction_pct")
          for s in scans if s.get("status") == "ok"}
    out = []
    for c in changes:
        if c.get("status") != "ok":
            continue
        hip = (c["subject"], c["side"])
        before, after = nf.get((*hip, 0.0)), nf.get((*hip, float(c["timepoint_months"])))
        nf_change = None if before is None or after is None else after - before
        v0, vt = c.get("baseline_lesion_ml"), c.get("followup_lesion_ml")
        lesion_change = None if v0 is None or vt is None else vt - v0
        out.append({"key": c["key"], "subject": c["subject"], "side": c["side"],
                    "timepoint_months": c["timepoint_months"], "nf_change_points": nf_change, "rc_nf_points": rc_nf,
                    "nf_change_within_noise": within_noise(nf_change, rc_nf),
                    "regeneration_pct": c.get("regeneration_pct"), "lesion_change_ml": lesion_change,
                    "rc_lesion_ml": rc_lesion_ml,
                    "regeneration_within_noise": within_noise(lesion_change, rc_lesion_ml)})
    return out


def reads_markdown(reads: dict, agreement: dict | None, repeatability: dict | None) -> str:
    """The ``## Agreement`` section of cohort.md (and report.html): combine rule, ICCs, Bland-Altman,
    kappas, Dice and HD95 per scan, discordant reads, repeatability, follow-ups within noise."""
    def f(v, fmt=".2f"):
        return "-" if v is None else format(v, fmt)

    def ci(d):
        lo, hi = (d or {}).get("ci95") or (None, None)
        return f"{f(lo)} to {f(hi)}"

    lines = ["## Agreement", "",
             f"{reads['n_reads_ok']} of {reads['n_reads']} reads measured: {len(reads['readers'])} reader(s) "
             f"({', '.join(reads['readers'])}) and {reads['n_adjudicated_reads']} adjudicated read(s) (reader "
             f"{reads['adjudicator']}). "
             f"Value used for the cohort (reads.combine = {reads['combine']}): {reads['rule']}. "
             f"Scans by source: {', '.join(f'{n} {k}' for k, n in reads['scans_by_source'].items()) or 'none'}. "
             + ACQUISITION_RULE[0].upper() + ACQUISITION_RULE[1:] + ".", ""]
    if agreement:
        lines += ["### Intraclass correlation (all readers, scans read by every reader)", "",
                  "| measure | n scans | ICC(2,1) absolute agreement | 95 % CI | ICC(3,1) consistency | 95 % CI "
                  "| note |", "|---|---|---|---|---|---|---|"]
        for measure, d in agreement["measures"].items():
            i = d["icc"]
            a, c = i.get("ICC(2,1)"), i.get("ICC(3,1)")
            lines.append(f"| {measure} | {i.get('n_targets', '-')} | {f((a or {}).get('icc'), '.3f')} | {ci(a)} | "
                         f"{f((c or {}).get('icc'), '.3f')} | {ci(c)} | {i.get('reason') or ''} |")
        lines += ["", "### Bland-Altman (difference = second reader - first)", "",
                  "| measure | readers | n | bias | 95 % limits of agreement | note |", "|---|---|---|---|---|---|"]
        for measure, d in agreement["measures"].items():
            for pair, ba in d["bland_altman"].items():
                lines.append(f"| {measure} ({d['unit']}) | {pair} | {ba.get('n', '-')} | {f(ba.get('bias'))} | "
                             f"{f(ba.get('lower'))} to {f(ba.get('upper'))} | {ba.get('reason') or ''} |")
        lines += ["", "### Kappa (JIC type unweighted; size class linearly weighted)", "",
                  "| class | readers | n | kappa | 95 % CI | note |", "|---|---|---|---|---|---|"]
        for name, d in agreement["classes"].items():
            for pair, k in d["cohen"].items():
                lines.append(f"| {name} | {pair} (Cohen) | {k.get('n', '-')} | {f(k.get('kappa'), '.3f')} | {ci(k)} | "
                             f"{k.get('reason') or ''} |")
            if "fleiss" in d:
                k = d["fleiss"]
                lines.append(f"| {name} | all (Fleiss) | {k.get('n', '-')} | {f(k.get('kappa'), '.3f')} | - | "
                             f"{k.get('reason') or ''} |")
        lines += ["", "### Lesion masks per scan and reader pair", "",
                  "| scan | readers | NF (%) | JIC | lesion Dice | HD95 (mm) | discordant | status |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in agreement["pairs"]:
            nf = " / ".join(f(v, ".1f") for v in p["necrotic_fraction_pct"])
            jic = " / ".join(v or "-" for v in p["jic_type"])
            lines.append(f"| {p['scan']} | {' vs '.join(p['readers'])} | {nf} | {jic} | {f(p['lesion_dice'], '.3f')} | "
                         f"{f(p['lesion_hd95_mm'])} | {'; '.join(p['discordant']) or 'no'} | "
                         f"{p['status'] or '-'}{' by ' + p['adjudicated_read'] if p['adjudicated_read'] else ''} |")
        t = agreement["thresholds"]
        lines += ["", f"Discordant: NF differing by more than {t['discordant_nf_points']:g} points, different JIC "
                  f"types, or lesion Dice under {t['min_lesion_dice']:g} (adjudication.csv); an adjudicator's read of "
                  "the scan resolves it."]
    if repeatability:
        lines += ["", f"### Test-retest repeatability ({repeatability['n_pairs']} pair(s) of acquisitions)", "",
                  "| measure | n | wSD | 95 % CI | wCV (%) | RC = 2.77 wSD | 95 % CI | note |",
                  "|---|---|---|---|---|---|---|---|"]
        for measure, d in repeatability["measures"].items():
            lines.append(f"| {measure} ({d['unit']}) | {d.get('n', '-')} | {f(d.get('wsd'))} | "
                         f"{f((d.get('wsd_ci95') or [None])[0])} to {f((d.get('wsd_ci95') or [None, None])[1])} | "
                         f"{f(None if d.get('wcv') is None else 100 * d['wcv'], '.1f')} | {f(d.get('rc'))} | "
                         f"{f((d.get('rc_ci95') or [None])[0])} to {f((d.get('rc_ci95') or [None, None])[1])} | "
                         f"{d.get('reason') or ''} |")
    changes = reads.get("followup_changes") or []
    if changes:
        def flag(v):
            return "-" if v is None else ("within noise" if v else "beyond noise")

        lines += ["", "### Follow-up changes against the repeatability coefficient", "",
                  "| follow-up | NF change (points) | within RC? | regeneration (%) | lesion change (mL) "
                  "| within RC? |",
                  "|---|---|---|---|---|---|"]
        for c in changes:
            lines.append(f"| {c['key']} | {f(c['nf_change_points'], '.1f')} | {flag(c['nf_change_within_noise'])} | "
                         f"{f(c['regeneration_pct'], '.1f')} | {f(c['lesion_change_ml'])} | "
                         f"{flag(c['regeneration_within_noise'])} |")
        lines += ["", "A change smaller than the repeatability coefficient (RC) cannot be told from measurement "
                  "noise; without test-retest pairs there is no RC and no flag."]
    return "\n".join(lines) + "\n"


def collapse_markdown(summary: dict) -> list[str]:
    """The ``## Collapse`` section of cohort.md: stages per timepoint and group, new collapses.
    Empty for a summary written before collapse was counted."""
    if "collapse_arco2019" not in summary:
        return []

    def f(v, fmt=".2f"):
        return "-" if v is None else format(v, fmt)

    lines = ["", "## Collapse (ARCO 2019, head depression on MRI)", "",
             "| timepoint | group | n | none | of which top open | IIIA | IIIB | not measured "
             "| depression median (mm) | range (mm) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for tp, groups in summary["collapse_arco2019"].items():
        for name, d in groups.items():
            st, dep = d["stages"], d["head_depression_mm"]
            # a summary written before the count has none: "-"
            lines.append(f"| {tp} | {name} | {d['n']} | {st['none']} | {d.get('none_top_open', '-')} | {st['IIIA']} | "
                         f"{st['IIIB']} | {st[NOT_MEASURED]} | {f(dep['median'])} | {f(dep['min'])}-{f(dep['max'])} |")
    new = summary["new_collapse"]
    lines += ["", "None: no depression above the detection limit; of which top open: a none that cannot rule out "
              "collapse at the dome's top (limit there over 2 mm, or the top in the end slices of thick axial "
              "slices; scans.csv collapse_caveat); IIIA: depression up to 2 mm; IIIB: over 2 mm "
              "(docs/method.md section 6).", "",
              f"### New collapse among follow-ups ({new['n_new']} of {new['n_followups']})", ""]
    if new["followups"]:
        lines += ["| follow-up | outcome | baseline | follow-up | depression change (mm) |", "|---|---|---|---|---|"]
        for c in new["followups"]:
            lines.append(f"| {c['key']} | {c['outcome'] or NO_OUTCOME} | {c['baseline_stage'] or '-'} | "
                         f"{c['followup_stage'] or '-'} | {f(c['head_depression_change_mm'], '+.2f')} |")
    else:
        lines.append("No follow-up went from no collapse at baseline to IIIA or IIIB.")
    return lines


def cohort_markdown(summary: dict, agreement: dict | None = None, repeatability: dict | None = None) -> str:
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
    lines += collapse_markdown(summary)
    if summary.get("reads"):
        lines += ["", reads_markdown(summary["reads"], agreement, repeatability).rstrip("\n")]
    return "\n".join(lines) + "\n"
