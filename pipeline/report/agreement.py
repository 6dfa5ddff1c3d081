"""Agreement between readers and repeatability of a measure (docs/method.md section 7).

Core labs read each scan twice or more (blinded readers, an adjudicator) and report how well the
reads agree, and how far a measure moves between two acquisitions of an unchanged hip. The
statistics come from maintained libraries (pingouin for the intraclass correlation, statsmodels
for kappa), not hand-written formulas; this module only shapes the data and names the forms.

- ICC(2,1): two-way random effects, absolute agreement, single rater; ICC(3,1): two-way mixed,
  consistency, single rater (Shrout and Fleiss, Psychol Bull 1979), each with its 95 % CI.
- Bland-Altman: bias (mean difference) and 95 % limits of agreement, bias ± 1.96 SD of the
  differences (Bland and Altman, Lancet 1986).
- Cohen's kappa for two readers (weighted, linear, for ordered classes such as the size class) and
  Fleiss' kappa for more (Fleiss, Psychol Bull 1971).
- Repeatability (QIBA, Raunig et al., Stat Methods Med Res 2015): within-subject SD from
  test-retest pairs, wSD = sqrt(sum(d²) / 2n); within-subject coefficient of variation; the
  repeatability coefficient RC = 2.77 wSD: two measurements of an unchanged hip differ by less
  than RC in 95 % of cases, so a change smaller than RC is not distinguishable from noise.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.errors import InputError

#: 95 % two-sided normal quantile
Z95 = 1.959963984540054
#: RC = 1.96 x sqrt(2) x wSD (QIBA's 2.77)
RC_FACTOR = Z95 * math.sqrt(2.0)


def icc(ratings: dict) -> dict:
    """ICC(2,1) absolute agreement and ICC(3,1) consistency (and ICC(1,1)) of several readers.

    Parameters
    ----------
    ratings : dict
        ``{target: {reader: value}}``; only targets read by every reader are used (the two-way
        model needs a complete table).

    Returns
    -------
    dict
        ``ICC(1,1)``, ``ICC(2,1)`` and ``ICC(3,1)``, each ``{"form", "icc", "ci95"}``, with ``n_targets`` and
        ``n_readers``.

    Raises
    ------
    InputError
        Fewer than 2 readers or 3 complete targets.
    """
    import pandas as pd
    import pingouin as pg

    readers = sorted({r for row in ratings.values() for r in row})
    complete = {t: row for t, row in ratings.items() if all(r in row and row[r] is not None for r in readers)}
    if len(readers) < 2 or len(complete) < 3:
        raise InputError(f"ICC needs at least 2 readers and 3 targets read by all ({len(readers)} readers, "
                         f"{len(complete)} complete targets)")
    frame = pd.DataFrame([(str(t), str(r), float(row[r])) for t, row in complete.items() for r in readers],
                         columns=["target", "reader", "value"])
    table = pg.intraclass_corr(frame, targets="target", raters="reader", ratings="value").set_index("Type")
    # ICC(1,1) for completeness (each target read by its own readers); the reports show (2,1) and (3,1)
    forms = {"ICC(1,1)": ("ICC1", "one-way random effects, absolute agreement, single rater"),
             "ICC(2,1)": ("ICC2", "two-way random effects, absolute agreement, single rater"),
             "ICC(3,1)": ("ICC3", "two-way mixed effects, consistency, single rater")}
    out = {"n_targets": len(complete), "n_readers": len(readers)}
    for name, (row, form) in forms.items():
        row = row if row in table.index else _pingouin_name(row)
        lo, hi = table.loc[row, "CI95"]
        out[name] = {"form": form, "icc": float(table.loc[row, "ICC"]), "ci95": [float(lo), float(hi)]}
    return out


def _pingouin_name(row: str) -> str:
    # pingouin 0.5 names the forms ICC1/ICC2/ICC3; 0.7 names them ICC(1,1)/ICC(A,1)/ICC(C,1)
    return {"ICC1": "ICC(1,1)", "ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)"}[row]


def bland_altman(a, b) -> dict:
    """Bias and 95 % limits of agreement of paired measurements ``b - a``.

    Returns
    -------
    dict
        ``n``, ``bias``, ``sd``, ``lower``, ``upper`` (bias ± 1.96 SD), in the measure's unit.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    d = b[keep] - a[keep]
    if len(d) < 2:
        raise InputError("Bland-Altman needs at least 2 paired measurements")
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    return {"n": int(len(d)), "bias": bias, "sd": sd, "lower": bias - Z95 * sd, "upper": bias + Z95 * sd}


def cohen_kappa(a, b, categories=None, ordered: bool = False) -> dict:
    """Cohen's kappa of two readers' classes; linearly weighted when the classes are ordered.

    Parameters
    ----------
    a, b : sequences of class labels (None = not read, dropped pairwise)
    categories : sequence, optional
        The classes in their order (needed for weighting); default: sorted classes seen.
    ordered : bool
        Weight disagreements by their distance in ``categories`` (size class A < B < C).

    Returns
    -------
    dict
        ``n`` pairs, ``kappa``, ``weighted``, ``ci95`` (asymptotic, clipped to [-1, 1]).
    """
    from statsmodels.stats.inter_rater import cohens_kappa

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    cats = list(categories) if categories is not None else sorted({c for p in pairs for c in p})
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for x, y in pairs:
        table[index[x], index[y]] += 1
    result = cohens_kappa(table, wt="linear" if ordered else None)
    # the asymptotic interval can pass 1 on small samples; kappa itself cannot
    return {"n": len(pairs), "kappa": float(result.kappa), "weighted": "linear" if ordered else None,
            "ci95": [float(np.clip(result.kappa_low, -1.0, 1.0)), float(np.clip(result.kappa_upp, -1.0, 1.0))]}


def fleiss_kappa(counts) -> dict:
    """Fleiss' kappa from a subjects x categories table of how many readers chose each class."""
    from statsmodels.stats.inter_rater import fleiss_kappa as _fleiss

    table = np.asarray(counts, dtype=float)
    return {"n": int(table.shape[0]), "kappa": float(_fleiss(table, method="fleiss"))}


def repeatability(first, second) -> dict:
    """Test-retest repeatability of a measure from pairs of acquisitions (QIBA).

    Returns
    -------
    dict
        ``n`` pairs, ``wsd`` (within-subject SD, the measure's unit) with its 95 % CI (chi-square
        with n degrees of freedom), ``wcv`` (within-subject coefficient of variation, fraction),
        ``rc`` = 2.77 wSD and its CI.
    """
    from scipy import stats

    x, y = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 2:
        raise InputError("repeatability needs at least 2 test-retest pairs")
    d = y - x
    wsd = float(math.sqrt((d**2).sum() / (2 * n)))
    means = (x + y) / 2.0
    wcv = float(math.sqrt(np.mean((d[means != 0] / means[means != 0]) ** 2 / 2.0))) if np.any(means != 0) else None
    lo = wsd * math.sqrt(n / stats.chi2.ppf(0.975, n))
    hi = wsd * math.sqrt(n / stats.chi2.ppf(0.025, n))
    return {"n": n, "wsd": wsd, "wsd_ci95": [lo, hi], "wcv": wcv, "rc": RC_FACTOR * wsd,
            "rc_ci95": [RC_FACTOR * lo, RC_FACTOR * hi]}


def within_noise(change: float | None, rc: float | None) -> bool | None:
    """Whether a change is smaller than the repeatability coefficient (not distinguishable from
    measurement noise); None when either is unknown."""
    if change is None or rc is None:
        return None
    return abs(float(change)) < float(rc)


# masks of two reads ---------------------------------------------------------------------------
def surface(mask: np.ndarray) -> np.ndarray:
    """The mask's surface voxels: those with a face neighbour outside the mask (or the array)."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    inner = ndimage.binary_erosion(np.pad(mask, 1), structure=ndimage.generate_binary_structure(3, 1))
    return mask & ~inner[1:-1, 1:-1, 1:-1]


def hausdorff95(a: np.ndarray, b: np.ndarray, spacing) -> float | None:
    """Surface-based 95th-percentile Hausdorff distance of two masks on one voxel grid, mm.

    The distances from each surface voxel centre of one mask to the nearest surface voxel centre
    of the other (Euclidean distance transforms with the voxel spacing), 95th percentile of each
    direction, the larger of the two (the symmetric HD95 of the BraTS evaluation and MONAI).

    Parameters
    ----------
    a, b : ndarray of bool
        Masks on the same grid.
    spacing : sequence of 3 floats
        Voxel edge lengths along the array axes, mm.

    Returns
    -------
    float or None
        None when either mask is empty (no surface to measure from).
    """
    from scipy import ndimage

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks on different grids: {a.shape} and {b.shape}")
    if not a.any() or not b.any():
        return None
    # Surfaces lie inside the bounding box of a | b, and so does every nearest surface voxel: the
    # distance transforms on that box (padded by one voxel of background) are exact, and cheap.
    idx = np.argwhere(a | b)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    box = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    sa, sb = surface(np.pad(a[box], 1)), surface(np.pad(b[box], 1))
    spacing = [float(s) for s in spacing]
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return float(max(np.percentile(to_b, 95), np.percentile(to_a, 95)))


def lesion_overlap(a: np.ndarray, b: np.ndarray, spacing) -> dict:
    """Dice and HD95 (mm) of two reads' lesion masks, with the reason when either is undefined."""
    from pipeline.longitudinal.change import dice

    d = dice(a, b)
    hd = hausdorff95(a, b, spacing)
    reason = None
    if d is None:
        reason = "both lesion masks are empty"
    elif hd is None:
        reason = "one lesion mask is empty: no Hausdorff distance"
    return {"lesion_dice": d, "lesion_hd95_mm": hd, "reason": reason}


# a reader study -------------------------------------------------------------------------------
#: Continuous figures compared between readers, with their units.
MEASURES = {"head_volume_ml": "mL", "lesion_volume_ml": "mL", "necrotic_fraction_pct": "%"}
#: Classes compared between readers: their order and whether kappa is weighted (ordered classes).
CATEGORIES = {"jic_type": (("A", "B", "C1", "C2"), False), "size_class": (("A", "B", "C"), True)}


def _null(reason: str) -> dict:
    return {"value": None, "reason": reason}


def _try(fn, *args, **kwargs) -> dict:
    """A statistic, or ``{"value": None, "reason": ...}`` when the data cannot give it."""
    import warnings

    try:
        # degenerate tables (one class, no variance) warn inside the libraries; they are reported
        # here as a null with its reason instead
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out = fn(*args, **kwargs)
    except InputError as exc:
        return _null(str(exc))
    except (ValueError, ZeroDivisionError, FloatingPointError) as exc:
        return _null(f"undefined: {exc}")
    return _finite_or_reason(out)


def _finite_or_reason(out: dict) -> dict:
    """NaN statistics (no variance between targets, one class only) become null with a reason."""
    found = []

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            found.append(v)
            return None
        return v

    out = clean(out)
    if found:
        out["reason"] = ("partly undefined for these data (a constant or perfectly agreeing table: no variation "
                         "between scans or readers, or one class only)")
    return out


def reader_pairs(readers) -> list[tuple[str, str]]:
    """Every pair of readers, in the order given."""
    readers = list(readers)
    return [(a, b) for i, a in enumerate(readers) for b in readers[i + 1:]]


def reader_study(reads: list[dict], overlaps: dict, adjudicator: str, discordant_nf_points: float,
                 min_lesion_dice: float) -> dict:
    """The agreement of the readers of a batch (agreement.json).

    Parameters
    ----------
    reads : list of dict
        scans.csv records of the successful reads: ``scan_key`` (the acquisition), ``key`` (the
        read), ``reader`` and the figures of :data:`MEASURES` and :data:`CATEGORIES`, in manifest
        order.
    overlaps : dict
        ``{(scan_key, reader_a, reader_b): lesion_overlap(...)}`` for the read pairs of each scan.
    adjudicator : str
        Reader name of adjudicated reads: a resolution, not an independent read, so left out of
        the agreement statistics.
    discordant_nf_points, min_lesion_dice : float
        A pair is discordant when the NFs differ by more than ``discordant_nf_points`` points,
        the JIC types differ, or the lesion Dice is below ``min_lesion_dice``.

    Returns
    -------
    dict
        ``readers``, ``n_scans``, per measure the ICC over all readers and Bland-Altman per pair,
        per class Cohen's kappa per pair (and Fleiss' kappa over all readers when more than two),
        ``pairs`` (one per scan and reader pair: figures, Dice, HD95, discordance) and
        ``discordant`` (the pairs with a reason, resolved or open).
    """
    readers = list(dict.fromkeys(r["reader"] for r in reads if r["reader"] != adjudicator))
    by_scan: dict[str, dict[str, dict]] = {}
    for r in reads:
        by_scan.setdefault(r["scan_key"], {}).setdefault(r["reader"], r)
    pairs = reader_pairs(readers)
    out = {"readers": readers, "adjudicator": adjudicator,
           "n_scans_read_twice": sum(1 for s in by_scan.values() if len(set(s) - {adjudicator}) >= 2),
           "measures": {}, "classes": {}, "pairs": [], "discordant": [],
           "thresholds": {"discordant_nf_points": discordant_nf_points, "min_lesion_dice": min_lesion_dice}}
    for measure, unit in MEASURES.items():
        ratings = {s: {r: row[measure] for r, row in rows.items() if r != adjudicator and row.get(measure) is not None}
                   for s, rows in by_scan.items()}
        entry = {"unit": unit}
        if len(readers) < 2:
            entry["icc"] = _null("needs at least 2 readers")
        else:
            entry["icc"] = _try(icc, {s: v for s, v in ratings.items() if len(v) >= 2})
        entry["bland_altman"] = {}
        for a, b in pairs:
            both = [(s, v[a], v[b]) for s, v in ratings.items() if a in v and b in v]
            entry["bland_altman"][f"{a} vs {b}"] = {
                "difference": f"{b} - {a}", **_try(bland_altman, [x for _, x, _ in both], [y for _, _, y in both]),
                "points": [{"scan": s, "values": [x, y]} for s, x, y in both]}
        out["measures"][measure] = entry
    for name, (cats, ordered) in CATEGORIES.items():
        entry = {"weighted": "linear" if ordered else None, "categories": list(cats), "cohen": {}}
        for a, b in pairs:
            both = [(rows[a].get(name), rows[b].get(name)) for rows in by_scan.values() if a in rows and b in rows]
            both = [(x, y) for x, y in both if x is not None and y is not None]
            entry["cohen"][f"{a} vs {b}"] = (_try(cohen_kappa, [x for x, _ in both], [y for _, y in both], cats,
                                                   ordered) if len(both) >= 2 else
                                             _null(f"{len(both)} scan(s) classed by both: kappa needs at least 2"))
        if len(readers) > 2:
            table = [[sum(rows[r].get(name) == c for r in readers) for c in cats] for rows in by_scan.values()
                     if all(r in rows and rows[r].get(name) is not None for r in readers)]
            entry["fleiss"] = (_try(fleiss_kappa, table) if len(table) >= 2 else
                               _null(f"{len(table)} scan(s) classed by every reader: kappa needs at least 2"))
        out["classes"][name] = entry
    for scan_key, rows in by_scan.items():
        adjudicated = rows.get(adjudicator)
        for a, b in pairs:
            if a not in rows or b not in rows:
                continue
            ra, rb = rows[a], rows[b]
            ov = overlaps.get((scan_key, a, b)) or {"lesion_dice": None, "lesion_hd95_mm": None,
                                                    "reason": "no label maps"}
            nf_a, nf_b = ra.get("necrotic_fraction_pct"), rb.get("necrotic_fraction_pct")
            nf_diff = None if nf_a is None or nf_b is None else nf_b - nf_a
            reasons = []
            if nf_diff is not None and abs(nf_diff) > discordant_nf_points:
                reasons.append(f"NF differs by {abs(nf_diff):.1f} points (> {discordant_nf_points:g})")
            if ra.get("jic_type") != rb.get("jic_type"):
                reasons.append(f"JIC type {ra.get('jic_type') or 'none'} vs {rb.get('jic_type') or 'none'}")
            if ov["lesion_dice"] is not None and ov["lesion_dice"] < min_lesion_dice:
                reasons.append(f"lesion Dice {ov['lesion_dice']:.2f} (< {min_lesion_dice:g})")
            pair = {"scan": scan_key, "subject": ra["subject"], "side": ra["side"],
                    "timepoint_months": ra["timepoint_months"], "repeat": ra.get("repeat"),
                    "readers": [a, b], "reads": [ra["key"], rb["key"]],
                    "necrotic_fraction_pct": [nf_a, nf_b], "nf_difference_points": nf_diff,
                    "jic_type": [ra.get("jic_type"), rb.get("jic_type")],
                    "size_class": [ra.get("size_class"), rb.get("size_class")], **ov,
                    "discordant": reasons,
                    "status": None if not reasons else ("resolved" if adjudicated else "open"),
                    "adjudicated_read": adjudicated["key"] if adjudicated and reasons else None}
            out["pairs"].append(pair)
            if reasons:
                out["discordant"].append(pair)
    return out


def repeatability_study(pairs: list[tuple[dict, dict]], by_reader: dict[str, list[tuple[dict, dict]]]) -> dict:
    """Test-retest repeatability of each measure (repeatability.json, QIBA).

    Parameters
    ----------
    pairs : list of (dict, dict)
        The values used downstream (combined reads) of the first two acquisitions of a hip at one
        timepoint, each a dict of the :data:`MEASURES` figures (and ``key``).
    by_reader : dict
        The same pairs read by one reader, per reader.

    Returns
    -------
    dict
        ``n_pairs``, ``pairs`` (keys and differences) and per measure ``wsd``, ``wsd_ci95``,
        ``wcv``, ``rc`` (= 2.77 wSD), ``rc_ci95``, or null with the reason; the same per reader.
    """
    def stats(pairs):
        return {m: {"unit": u, **_try(repeatability, [p[0].get(m) for p in pairs], [p[1].get(m) for p in pairs])}
                for m, u in MEASURES.items()}

    return {
        "n_pairs": len(pairs),
        "pairs": [{"scans": [a["key"], b["key"]], **{f"{m}_difference": _diff(a.get(m), b.get(m)) for m in MEASURES}}
                  for a, b in pairs],
        "measures": stats(pairs),
        "by_reader": {r: {"n_pairs": len(p), "measures": stats(p)} for r, p in by_reader.items()},
    }


def _diff(a, b):
    return None if a is None or b is None else float(b) - float(a)


def rc_of(study: dict | None, measure: str) -> float | None:
    """The repeatability coefficient of ``measure`` in a :func:`repeatability_study`, or None."""
    if not study:
        return None
    return (study["measures"].get(measure) or {}).get("rc")
