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
    """ICC(2,1) absolute agreement and ICC(3,1) consistency of several readers.

    Parameters
    ----------
    ratings : dict
        ``{target: {reader: value}}``; only targets read by every reader are used (the two-way
        model needs a complete table).

    Returns
    -------
    dict
        ``ICC(2,1)`` and ``ICC(3,1)``, each ``{"form", "icc", "ci95"}``, with ``n_targets`` and
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
    forms = {"ICC(2,1)": ("ICC2", "two-way random effects, absolute agreement, single rater"),
             "ICC(3,1)": ("ICC3", "two-way mixed effects, consistency, single rater")}
    out = {"n_targets": len(complete), "n_readers": len(readers)}
    for name, (row, form) in forms.items():
        row = row if row in table.index else _pingouin_name(row)
        lo, hi = table.loc[row, "CI95"]
        out[name] = {"form": form, "icc": float(table.loc[row, "ICC"]), "ci95": [float(lo), float(hi)]}
    return out


def _pingouin_name(row: str) -> str:
    # pingouin 0.5 names the forms ICC2/ICC3; 0.7 names them ICC(A,1)/ICC(C,1)
    return {"ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)"}[row]


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
    """
    from statsmodels.stats.inter_rater import cohens_kappa

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    cats = list(categories) if categories is not None else sorted({c for p in pairs for c in p})
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for x, y in pairs:
        table[index[x], index[y]] += 1
    result = cohens_kappa(table, wt="linear" if ordered else None)
    return {"n": len(pairs), "kappa": float(result.kappa), "weighted": "linear" if ordered else None,
            "ci95": [float(result.kappa_low), float(result.kappa_upp)]}


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
