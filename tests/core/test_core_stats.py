"""Statistics over seeds and paired tests, checked against SciPy (alignlab.core.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from alignlab.core.stats import (
    bootstrap_ci,
    paired_bootstrap,
    paired_randomization_test,
    summarize,
    welch_t_test,
)


def _scipy_sign_flip_p(a, b, n_resamples=np.inf, seed=None):
    """SciPy's paired permutation test: permutation_type='samples' swaps a[i] and b[i] (a sign flip)."""
    res = sps.permutation_test(
        (np.asarray(b, float), np.asarray(a, float)),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=n_resamples,
        vectorized=True,
        random_state=seed,
    )
    return float(res.pvalue)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_randomization_test_exact_case_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(50, 5, size=12)
    b = a + rng.normal(1.5, 3, size=12)
    ours = paired_randomization_test(a, b)
    assert ours == pytest.approx(_scipy_sign_flip_p(a, b), abs=1e-12)


def test_randomization_test_exact_case_with_ties_and_zero_differences_equals_scipy():
    # Per-query hits (0/1) of two systems: many zero differences and many tied means.
    a = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 1], dtype=float)
    b = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1, 1], dtype=float)  # 7 wins, 2 losses, 5 ties
    ours = paired_randomization_test(a, b)
    assert ours == pytest.approx(_scipy_sign_flip_p(a, b), abs=1e-12)
    assert 0 < ours < 1


def test_randomization_test_is_symmetric_and_one_when_systems_are_equal():
    a = [0.2, 0.5, 0.9, 0.4]
    b = [0.3, 0.7, 0.8, 0.9]
    assert paired_randomization_test(a, b) == paired_randomization_test(b, a)
    assert paired_randomization_test(a, a) == 1.0
    # All four differences positive: only the all-plus and all-minus patterns are as extreme, p = 2/16.
    assert paired_randomization_test([0, 0, 0, 0], [1, 2, 3, 4]) == pytest.approx(2 / 16)


def test_randomization_test_monte_carlo_agrees_with_scipy_exact_within_monte_carlo_error():
    rng = np.random.default_rng(2)
    n = 16  # 2**16 patterns: SciPy enumerates them all
    a = rng.normal(0, 1, size=n)
    b = a + rng.normal(0.6, 1, size=n)
    exact = _scipy_sign_flip_p(a, b)
    assert paired_randomization_test(a, b, exact_max_n=16) == pytest.approx(exact, abs=1e-12)
    n_res = 20000
    mc = paired_randomization_test(a, b, n_resamples=n_res, seed=3, exact_max_n=0)
    se = math.sqrt(exact * (1 - exact) / n_res)
    assert 0.005 < exact < 0.5  # a p-value where the Monte Carlo error is measurable
    assert abs(mc - exact) < 4 * se + 1 / n_res
    assert mc == paired_randomization_test(a, b, n_resamples=n_res, seed=3, exact_max_n=0)  # seeded


def test_randomization_test_monte_carlo_p_is_never_zero():
    a = np.zeros(40)
    b = np.ones(40) * 5
    p = paired_randomization_test(a, b, n_resamples=999, seed=0)
    assert p == pytest.approx(1 / 1000)


def _scipy_percentile_ci(x, n_resamples, seed):
    res = sps.bootstrap(
        (np.asarray(x, float),),
        np.mean,
        method="percentile",
        n_resamples=n_resamples,
        confidence_level=0.95,
        random_state=seed,
        vectorized=True,
    )
    return res.confidence_interval.low, res.confidence_interval.high


def test_bootstrap_ci_matches_scipy_percentile_within_monte_carlo_error():
    rng = np.random.default_rng(2)
    x = rng.exponential(2.0, size=60)
    ours = bootstrap_ci(x, n_resamples=20000, seed=1)
    lo, hi = _scipy_percentile_ci(x, 20000, seed=7)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert ours["mean"] == pytest.approx(x.mean())
    # The Monte Carlo error of a 2.5% quantile from 20,000 resamples is ~0.02 SE; allow 0.15 SE.
    assert abs(ours["ci_low"] - lo) < 0.15 * se
    assert abs(ours["ci_high"] - hi) < 0.15 * se
    assert ours["ci_low"] < x.mean() < ours["ci_high"]
    assert bootstrap_ci(x, n_resamples=20000, seed=2)["ci_low"] != ours["ci_low"]  # the seed matters


def test_bootstrap_ci_of_accuracies_matches_scipy_and_is_seeded():
    x = (np.random.default_rng(4).random(200) < 0.7).astype(float)
    a = bootstrap_ci(x, n_resamples=20000, seed=5)
    assert a == bootstrap_ci(x, n_resamples=20000, seed=5)
    lo, hi = _scipy_percentile_ci(x, 20000, seed=0)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert abs(a["ci_low"] - lo) < 0.15 * se and abs(a["ci_high"] - hi) < 0.15 * se


def test_paired_bootstrap_is_the_bootstrap_of_differences():
    rng = np.random.default_rng(8)
    a = rng.normal(0.5, 0.2, size=80)
    b = a + rng.normal(0.05, 0.1, size=80)
    pb = paired_bootstrap(a, b, n_resamples=20000, seed=2)
    d = b - a
    assert pb["delta"] == pytest.approx(d.mean())
    same = bootstrap_ci(d, n_resamples=20000, seed=2)
    assert (pb["ci_low"], pb["ci_high"]) == (same["ci_low"], same["ci_high"])
    lo, hi = _scipy_percentile_ci(d, 20000, seed=3)
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert abs(pb["ci_low"] - lo) < 0.15 * se and abs(pb["ci_high"] - hi) < 0.15 * se
    # A clear improvement: the CI excludes 0 and the bootstrap p is small; swapping the systems flips it.
    assert pb["ci_low"] > 0 and pb["p_boot"] < 0.01
    rev = paired_bootstrap(b, a, n_resamples=20000, seed=2)
    assert rev["delta"] == pytest.approx(-pb["delta"]) and rev["ci_high"] < 0


def test_summarize_matches_scipy_t_interval():
    x = np.array([41.2, 39.8, 42.5, 40.1, 43.0])
    s = summarize(x)
    lo, hi = sps.t.interval(0.95, df=4, loc=x.mean(), scale=sps.sem(x))
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(x.mean()) and s["sd"] == pytest.approx(x.std(ddof=1))
    assert (s["min"], s["max"], s["range"]) == (39.8, 43.0, pytest.approx(3.2))
    assert s["ci_low"] == pytest.approx(lo) and s["ci_high"] == pytest.approx(hi)
    s90 = summarize(x, confidence=0.9)
    assert s90["ci_high"] - s90["ci_low"] < s["ci_high"] - s["ci_low"]


def test_summarize_of_one_value_has_zero_sd_and_no_interval():
    s = summarize([3.0])
    assert s["sd"] == 0.0 and math.isnan(s["ci_low"]) and math.isnan(s["ci_high"])
    with pytest.raises(ValueError):
        summarize([])


def test_welch_t_test_matches_the_textbook_formula_and_scipy():
    a = np.array([40.1, 41.0, 39.5, 40.7, 40.2])
    b = np.array([42.0, 44.5, 41.1, 43.9, 45.2, 42.8])
    res = welch_t_test(a, b)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (b.mean() - a.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    assert res["delta"] == pytest.approx(b.mean() - a.mean())
    assert res["t"] == pytest.approx(t) and res["t"] > 0
    assert res["p"] == pytest.approx(2 * sps.t.sf(abs(t), df))
    assert res["p"] == pytest.approx(sps.ttest_ind(b, a, equal_var=False).pvalue)


def test_welch_t_test_with_one_run_per_side_gives_nan():
    res = welch_t_test([1.0], [2.0, 3.0])
    assert res["delta"] == 1.5 and math.isnan(res["t"]) and math.isnan(res["p"])
