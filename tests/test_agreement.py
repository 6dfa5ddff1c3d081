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
    # the paper's Table 4: ICC(2,1) = .29, ICC(3,1) = .71
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
