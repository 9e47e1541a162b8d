"""The shared pre-registered analysis: exact paired tests, TOST, Holm, hierarchical CI, one verdict
vocabulary."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from alignlab.core import analysis as A
from alignlab.core.errors import ConfigError
from alignlab.core.tables import markdown_table


def _brute_sign_flip(d, alternative="two-sided"):
    """An independent enumeration: every subset of seeds has its difference's sign flipped."""
    d = list(map(float, d))
    obs = sum(d) / len(d)
    hits = total = 0
    for flip in itertools.product([False, True], repeat=len(d)):
        m = sum(-x if f else x for x, f in zip(d, flip, strict=True)) / len(d)
        total += 1
        if alternative == "two-sided":
            hits += abs(m) >= abs(obs) - 1e-12
        else:
            hits += m >= obs - 1e-12
    return hits / total


def test_sign_flip_golden_values():
    assert A.sign_flip_p([1, 2, 3]) == pytest.approx(2 / 8)
    assert A.sign_flip_p([1, 2, 3], alternative="greater") == pytest.approx(1 / 8)
    assert A.sign_flip_p([1, -1]) == 1.0
    assert A.sign_flip_p([]) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_sign_flip_equals_brute_force_enumeration(seed):
    d = np.random.default_rng(seed).normal(0.5, 1.0, size=7)
    assert A.sign_flip_p(d) == pytest.approx(_brute_sign_flip(d))
    assert A.sign_flip_p(d, alternative="greater") == pytest.approx(_brute_sign_flip(d, "greater"))


@pytest.mark.parametrize("n,floor", [(5, 0.0625), (6, 0.03125), (10, 2 / 1024)])
def test_the_smallest_p_is_what_all_same_sign_seeds_reach(n, floor):
    assert A.smallest_p(n) == pytest.approx(floor)
    assert A.sign_flip_p(np.arange(1, n + 1, dtype=float)) == pytest.approx(floor)


def test_more_seeds_than_exact_enumeration_use_seeded_monte_carlo():
    d = np.random.default_rng(0).normal(0.2, 1.0, size=20)
    p1, p2 = A.sign_flip_p(d, seed=3), A.sign_flip_p(d, seed=3)
    assert p1 == p2 and 0 < p1 < 1
    assert abs(p1 - stats.ttest_1samp(d, 0).pvalue) < 0.1  # the two tests agree roughly at n = 20


def test_t_test_is_scipys_paired_t():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1, 1, 8), rng.normal(0, 1, 8)
    assert A.t_p(a - b) == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_tost_finds_equivalence_only_inside_the_margin():
    d = np.array([0.1, -0.1, 0.05, -0.05, 0.0, 0.08, -0.02, 0.03])
    assert A.tost_p(d, margin=1.0) == pytest.approx(1 / 256)  # every seed inside ±1: the exact floor
    assert A.tost_p(d, margin=0.05) > 0.05  # differences reach the margin: no equivalence
    assert A.tost_p(d + 2.0, margin=1.0) == 1.0  # a clear effect is not equivalent


def test_holm_golden_and_monotone():
    assert A.holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert A.holm([0.5]) == [0.5]
    p = np.random.default_rng(0).uniform(size=12)
    adj = np.array(A.holm(p))
    assert np.all(adj >= p) and np.all(adj <= 1)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= -1e-12)


def test_hierarchical_ci_resamples_items_within_seeds():
    rng = np.random.default_rng(0)
    seeds_only = A.hierarchical_bootstrap_ci([1.0, 1.2, 0.8, 1.1, 0.9], seed=0)
    noisy_items = [rng.normal(m, 3.0, size=40) for m in (1.0, 1.2, 0.8, 1.1, 0.9)]
    nested = A.hierarchical_bootstrap_ci(noisy_items, seed=0)
    assert seeds_only[0] < 1.0 < seeds_only[1]
    assert nested[1] - nested[0] > seeds_only[1] - seeds_only[0]  # item noise widens the interval
    flat_items = [np.full(40, m) for m in (1.0, 1.2, 0.8, 1.1, 0.9)]
    assert A.hierarchical_bootstrap_ci(flat_items, seed=0) == pytest.approx(seeds_only)


def _runs(diffs, base=50.0):
    return {"new": {s: base + d for s, d in enumerate(diffs)}, "old": {s: base for s in range(len(diffs))}}


@pytest.mark.parametrize(
    "diffs,direction,higher,verdict,supported",
    [
        ([1, 2, 1.5, 1, 2, 3], "improves", True, "improves", True),
        ([1, 2, 1.5, 1, 2, 3], "improves", False, "hurts", False),  # lower is better: the rise hurts
        ([0.01, -0.02, 0.0, 0.02, -0.01, 0.01], "equivalent", True, "equivalent within ±0.5", True),
        ([3, -2, 0.5, -1, 2, -3], "improves", True, "inconclusive", False),
    ],
)
def test_verdicts_use_one_vocabulary(diffs, direction, higher, verdict, supported):
    c = A.Claim(
        "c",
        treatment="new",
        control="old",
        metric="rsum",
        direction=direction,
        margin=0.5,
        higher_is_better=higher,
    )
    row = A.analyse([c], _runs(diffs))[0]
    assert row["verdict"] == verdict and row["supported"] is supported
    assert row["n"] == len(diffs) and row["smallest_p"] == pytest.approx(2 / 2 ** len(diffs))


def test_holm_across_declared_claims_can_undo_a_lone_significant_result():
    runs = {
        "a": {s: 1.0 + s for s in range(6)},
        "b": {s: 0.0 + s for s in range(6)},
        "c": {s: (-1) ** s * 5.0 for s in range(6)},
        "d": {s: 0.0 for s in range(6)},
    }
    alone = A.analyse([A.Claim("a>b", "a", "b", "m", "improves", 0.1)], runs)[0]
    assert alone["verdict"] == "improves"  # p = 1/32
    with_others = A.analyse(
        [
            A.Claim("a>b", "a", "b", "m", "improves", 0.1),
            A.Claim("c>d", "c", "d", "m", "improves", 0.1),
            A.Claim("c>b", "c", "b", "m", "improves", 0.1),
        ],
        runs,
    )
    assert with_others[0]["p_difference"] > alone["p_difference_raw"]


def test_pairing_uses_shared_seeds_only_and_bad_runs_are_clear_errors():
    runs = {"a": {0: 1.0, 1: 2.0, 2: 3.0}, "b": {1: 0.0, 2: 1.0, 3: 5.0}}
    row = A.analyse([A.Claim("x", "a", "b", "m", "improves", 0.1)], runs)[0]
    assert row["seeds"] == [1, 2] and row["mean_diff"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="share no seed"):
        A.analyse([A.Claim("x", "a", "b", "m", "improves", 0.1)], {"a": {0: 1.0}, "b": {1: 1.0}})
    with pytest.raises(ConfigError, match="has no runs"):
        A.analyse([A.Claim("x", "a", "zzz", "m", "improves", 0.1)], runs)
    with pytest.raises(ConfigError, match="finite"):
        A.analyse([A.Claim("x", "a", "b", "m", "improves", 0.1)], {"a": {0: float("nan")}, "b": {0: 1.0}})


@pytest.mark.parametrize(
    "bad",
    [
        dict(margin=0),
        dict(margin=float("nan")),
        dict(direction="helps"),
        dict(alpha=1.5),
        dict(test="wilcoxon"),
        dict(control="a"),
    ],
)
def test_a_claim_that_cannot_be_tested_is_refused_before_the_runs(bad):
    kwargs = dict(name="x", treatment="a", control="b", metric="m", direction="improves", margin=1.0) | bad
    with pytest.raises(ConfigError):
        A.Claim(**kwargs)


def test_claims_load_from_config_dicts_and_render_plan_and_table():
    c = A.Claim.from_dict(
        {
            "name": "kd helps",
            "treatment": "kd",
            "control": "none",
            "metric": "acc",
            "direction": "improves",
            "margin": 0.5,
        }
    )
    with pytest.raises(ConfigError, match="unknown key"):
        A.Claim.from_dict(
            {
                "name": "x",
                "treatment": "a",
                "control": "b",
                "metric": "m",
                "direction": "improves",
                "margin": 1,
                "magrin": 2,
            }
        )
    plan = A.plan_markdown([c])
    assert plan.startswith("## Pre-registered plan") and "margin ±0.5" in plan
    rows = A.analyse([c], {"kd": {s: 2.0 + s for s in range(5)}, "none": {s: float(s) for s in range(5)}})
    table = A.claims_markdown(rows)
    assert "| kd helps | 5 | +2.00 |" in table and "0.062" in table


def test_markdown_table_escapes_and_checks_shape():
    assert markdown_table(["a"], [["x|y"]]) == "| a |\n|---|\n| x\\|y |"
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])


def _claim(name="a", treatment="x", control="y", direction="improves"):
    return dict(name=name, treatment=treatment, control=control, metric="m", direction=direction, margin=1.0)


def test_claims_from_config_refuses_a_plan_that_cannot_be_analysed():
    claims = A.claims_from_config([_claim(), _claim("b", control="z")], arms=["x", "y", "z"])
    assert [c.name for c in claims] == ["a", "b"]
    with pytest.raises(ConfigError, match="declared twice"):
        A.claims_from_config([_claim(), _claim()])
    with pytest.raises(ConfigError, match="does not run"):
        A.claims_from_config([_claim(control="w")], arms=["x", "y"])
    with pytest.raises(ConfigError, match="no claims"):
        A.claims_from_config([])
    assert A.claims_from_config([_claim()], metrics=["m", "n"])[0].metric == "m"
    with pytest.raises(ConfigError, match="metric 'm', which the experiment does not measure"):
        A.claims_from_config([_claim()], metrics=["rsum"])


def test_seeds_note_states_the_floor_that_holm_raises():
    assert "cannot give p below 0.0625" in A.seeds_note(5) and "no claim can reach" in A.seeds_note(5)
    ten = A.seeds_note(10, n_claims=3)
    assert "0.00195" in ten and "0.00586" in ten and "no claim" not in ten


def test_verdict_line_says_whether_the_declared_direction_held():
    claims = A.claims_from_config([_claim(direction="hurts")])
    rows = A.analyse(claims, {"x": {s: 5.0 + s for s in range(8)}, "y": {s: 1.0 + s for s in range(8)}})
    line = A.verdict_line(rows[0])
    assert "**improves**" in line and "not supported (declared: hurts)" in line and "+4.00" in line


def test_a_t_test_claim_shows_no_floor_on_p():
    claims = A.claims_from_config([{**_claim(), "test": "t"}])
    rows = A.analyse(claims, {"x": {s: 5.0 + s * 1.1 for s in range(6)}, "y": {s: 1.0 + s for s in range(6)}})
    line = A.claims_markdown(rows).splitlines()[-1]
    assert rows[0]["smallest_p"] == 0.0 and "| — |" in line and "0.0e+00" not in line
