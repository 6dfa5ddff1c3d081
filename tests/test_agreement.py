"""Agreement and repeatability statistics against published worked examples."""

import math

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.report import agreement as A

# Shrout and Fleiss, Psychol Bull 1979, Table 2: 6 targets rated by 4 judges
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


def test_icc_forms_match_shrout_and_fleiss():
    ratings = {t: {f"judge{j}": v for j, v in enumerate(row)} for t, row in enumerate(SHROUT_FLEISS)}
    out = A.icc(ratings)
    # the paper's Table 4: ICC(1,1) = .17, ICC(2,1) = .29, ICC(3,1) = .71
    assert out["ICC(1,1)"]["icc"] == pytest.approx(0.17, abs=0.005)
    assert out["ICC(2,1)"]["icc"] == pytest.approx(0.29, abs=0.005)
    assert out["ICC(3,1)"]["icc"] == pytest.approx(0.71, abs=0.005)
    assert "absolute agreement" in out["ICC(2,1)"]["form"] and "consistency" in out["ICC(3,1)"]["form"]
    for form in ("ICC(2,1)", "ICC(3,1)"):
        lo, hi = out[form]["ci95"]
        assert lo < out[form]["icc"] < hi
    assert (out["n_targets"], out["n_readers"]) == (6, 4)


def test_icc_uses_complete_targets_only_and_refuses_too_few():
    ratings = {t: {f"judge{j}": v for j, v in enumerate(row)} for t, row in enumerate(SHROUT_FLEISS)}
    ratings[6] = {"judge0": 1.0}  # read by one judge only: not in the two-way table
    assert A.icc(ratings)["n_targets"] == 6
    with pytest.raises(InputError, match="at least 2 readers"):
        A.icc({0: {"a": 1.0}, 1: {"a": 2.0}, 2: {"a": 3.0}})


def test_cohen_kappa_worked_example():
    # 50 applications read by two readers: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert A.cohen_kappa(a, b)["kappa"] == pytest.approx(0.4, abs=1e-9)


def test_weighted_kappa_penalises_far_disagreement_less_than_unweighted():
    a = ["A", "A", "B", "B", "C", "C", "A", "C"]
    b = ["A", "B", "B", "C", "C", "B", "A", "C"]  # every disagreement is one class apart
    plain = A.cohen_kappa(a, b, categories="ABC")["kappa"]
    weighted = A.cohen_kappa(a, b, categories="ABC", ordered=True)["kappa"]
    assert weighted > plain


def test_fleiss_kappa_worked_example():
    # 10 subjects, 14 raters, 5 categories (Fleiss 1971 design; the widely used worked example): 0.210
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert A.fleiss_kappa(counts)["kappa"] == pytest.approx(0.210, abs=0.001)


def test_bland_altman_limits():
    rng = np.random.default_rng(0)
    a = rng.normal(20, 5, 400)
    b = a + 1.5 + rng.normal(0, 0.5, 400)
    out = A.bland_altman(a, b)
    d = b - a
    assert out["bias"] == pytest.approx(d.mean()) and out["sd"] == pytest.approx(d.std(ddof=1))
    assert out["upper"] - out["lower"] == pytest.approx(2 * 1.959964 * out["sd"], rel=1e-6)
    assert out["bias"] == pytest.approx(1.5, abs=0.1)


def test_repeatability_coefficient():
    first, second = [10.0, 20.0, 30.0, 40.0], [11.0, 19.0, 32.0, 38.0]
    out = A.repeatability(first, second)
    wsd = math.sqrt((1 + 1 + 4 + 4) / (2 * 4))
    assert out["wsd"] == pytest.approx(wsd)
    assert out["rc"] == pytest.approx(2.77 * wsd, rel=0.001)  # QIBA's 2.77 = 1.96 sqrt 2
    assert out["wsd_ci95"][0] < wsd < out["wsd_ci95"][1]
    assert A.within_noise(2.0, out["rc"]) is True and A.within_noise(5.0, out["rc"]) is False
    assert A.within_noise(None, out["rc"]) is None


def test_reader_study_with_three_readers_uses_fleiss_kappa_and_every_pair():
    # 5 scans read by 3 readers; JIC types chosen so that every scan has some disagreement or not
    jic = {"s1": ("C1", "C1", "C2"), "s2": ("B", "B", "B"), "s3": ("C2", "C2", "C2"), "s4": ("A", "B", "B"),
           "s5": ("C1", "C2", "C2")}
    nf = {"s1": (20.0, 21.0, 19.5), "s2": (12.0, 12.5, 11.0), "s3": (30.0, 33.0, 31.0), "s4": (8.0, 9.0, 8.5),
          "s5": (25.0, 24.0, 26.5)}
    readers = ("r1", "r2", "r3")
    reads = [{"key": f"{s}_{r}", "scan_key": s, "subject": s, "side": "right", "timepoint_months": 0.0, "repeat": 1,
              "reader": r, "necrotic_fraction_pct": nf[s][i], "head_volume_ml": 50.0 + i,
              "lesion_volume_ml": nf[s][i] / 2, "jic_type": jic[s][i], "size_class": "B"}
             for s in jic for i, r in enumerate(readers)]
    out = A.reader_study(reads, {}, "adjudicator", 2.5, 0.7)
    # Fleiss (1971) by hand: P_i = (sum_j n_ij^2 - n) / (n (n - 1)), P_e = sum_j p_j^2
    cats = ("A", "B", "C1", "C2")
    counts = np.array([[jic[s].count(c) for c in cats] for s in jic], dtype=float)
    n = 3
    p_i = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_j = counts.sum(axis=0) / counts.sum()
    expected = (p_i.mean() - (p_j ** 2).sum()) / (1 - (p_j ** 2).sum())
    assert out["classes"]["jic_type"]["fleiss"]["kappa"] == pytest.approx(expected, abs=1e-9)
    assert out["measures"]["necrotic_fraction_pct"]["icc"]["n_readers"] == 3
    assert sorted(out["measures"]["necrotic_fraction_pct"]["bland_altman"]) == ["r1 vs r2", "r1 vs r3", "r2 vs r3"]
    assert len(out["pairs"]) == 15
    # discordant: NF apart by more than 2.5 points or another JIC type, per pair; no adjudicator: open
    want = {(s, a, b) for s in jic for (i, a), (j, b) in
            ((x, y) for x in enumerate(readers) for y in enumerate(readers) if x[0] < y[0])
            if abs(nf[s][i] - nf[s][j]) > 2.5 or jic[s][i] != jic[s][j]}
    assert {(p["scan"], *p["readers"]) for p in out["discordant"]} == want
    assert all(p["status"] == "open" for p in out["discordant"])


def test_reader_study_at_cohort_scale_recovers_a_pure_reader_bias():
    """200 scans (ten times a small core-lab batch), reader r2 reads every NF exactly 2 points
    higher than r1: consistency ICC(3,1) is 1, absolute ICC(2,1) is var / (var + 2) (the mean
    squares of a two-way table whose only error is the readers' offset: MSR = 2 var, MSC = 2n,
    MSE = 0), Bland-Altman bias 2 with zero spread, and no pair is discordant at 2.5 points."""
    rng = np.random.default_rng(3)
    nf1 = rng.uniform(2.0, 45.0, 200)
    reads = [{"key": f"s{i}_{r}", "scan_key": f"s{i}", "subject": f"S{i:03d}", "side": "right",
              "timepoint_months": 0.0, "repeat": 1, "reader": r, "necrotic_fraction_pct": v + off,
              "head_volume_ml": 50.0, "lesion_volume_ml": 0.5 * (v + off), "jic_type": "C1", "size_class": "B"}
             for i, v in enumerate(nf1) for r, off in (("r1", 0.0), ("r2", 2.0))]
    out = A.reader_study(reads, {}, "adjudicator", 2.5, 0.7)
    icc = out["measures"]["necrotic_fraction_pct"]["icc"]
    assert icc["n_targets"] == 200
    assert icc["ICC(3,1)"]["icc"] == pytest.approx(1.0, abs=1e-9)
    var = nf1.var(ddof=1)
    assert icc["ICC(2,1)"]["icc"] == pytest.approx(var / (var + 2.0), rel=1e-9)
    ba = out["measures"]["necrotic_fraction_pct"]["bland_altman"]["r1 vs r2"]
    assert ba["n"] == 200 and ba["bias"] == pytest.approx(2.0) and ba["sd"] == pytest.approx(0.0, abs=1e-9)
    assert len(out["pairs"]) == 200 and out["discordant"] == []
    # both readers call every scan C1: kappa is undefined, said so instead of a number
    kappa = out["classes"]["jic_type"]["cohen"]["r1 vs r2"]
    assert kappa.get("kappa") is None and kappa.get("reason")
