"""One pre-registered analysis for every claim experiment.

An experiment declares its claims before it runs (:class:`Claim`: the two arms, the metric, the
expected direction and an equivalence margin). After the runs, :func:`analyse` turns the per-seed
results into one verdict per claim with the same rules everywhere:

* **Unit.** The training run. Arms that share seeds are paired by seed; the data are the per-seed
  differences ``d_s = treatment_s - control_s`` (signed so that positive means "better" when
  ``higher_is_better``).
* **Difference test.** An exact paired sign-flip (randomisation) test of mean(d) = 0: all ``2^n``
  sign patterns for ``n <= 16`` seeds, else ``MONTE_CARLO`` seeded draws; or a paired t-test
  (``test="t"``). With ``n`` paired seeds the exact two-sided test cannot go below ``2 / 2^n``
  (0.0625 for 5 seeds): :func:`smallest_p` says so in every report.
* **Equivalence test.** Two one-sided tests (TOST) against the margin ``m`` fixed in the claim:
  H0 ``mean(d) <= -m`` and H0 ``mean(d) >= m``, each with the same test family; p is the larger.
* **Multiplicity.** Holm's step-down over the experiment's declared claims, separately for the
  difference and the equivalence p-values.
* **Verdict vocabulary.** ``improves`` / ``hurts`` (difference test significant after Holm),
  ``equivalent within ±m`` (TOST significant after Holm), else ``inconclusive``. A claim is
  ``supported`` when the verdict is the direction it declared.
* **Interval.** A bootstrap CI of the mean difference: hierarchical (seeds, then items within each
  seed) when per-item paired values are given, else over seeds.

>>> claim = Claim("kd helps", treatment="kd", control="none", metric="acc", direction="improves", margin=0.5)
>>> runs = {"kd": {s: 80.0 + s for s in range(6)}, "none": {s: 78.0 + s * 0.9 for s in range(6)}}
>>> r = analyse([claim], runs)[0]
>>> r["verdict"], r["supported"], r["p_difference"] == smallest_p(6)
('improves', True, True)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeAlias

import numpy as np

from alignlab.core.errors import ConfigError

Values: TypeAlias = "Sequence[float] | np.ndarray"

DIRECTIONS = ("improves", "hurts", "equivalent")
TESTS = ("sign-flip", "t")
EXACT_MAX_SEEDS = 16
MONTE_CARLO = 200_000


@dataclass(frozen=True)
class Claim:
    """A claim declared before the runs: ``treatment`` vs ``control`` on ``metric``.

    ``direction`` is what the claim expects ("improves", "hurts" or "equivalent"); ``margin`` (> 0, in
    the metric's units) is the smallest difference that matters: differences inside ±margin count as
    no effect, and an equivalence verdict needs the TOST at that margin.
    """

    name: str
    treatment: str
    control: str
    metric: str
    direction: str
    margin: float
    higher_is_better: bool = True
    alpha: float = 0.05
    test: str = "sign-flip"

    def __post_init__(self) -> None:
        where = f"claim {self.name!r}"
        if self.direction not in DIRECTIONS:
            raise ConfigError(
                f"direction {self.direction!r} is not one of {', '.join(DIRECTIONS)}",
                where=where,
                fix="declare what the claim expects",
            )
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin > 0):
            raise ConfigError(
                f"margin must be a positive number, got {self.margin!r}",
                where=where,
                fix="fix the equivalence margin before running, in the metric's units",
            )
        if not 0 < self.alpha < 1:
            raise ConfigError(
                f"alpha must be in (0, 1), got {self.alpha!r}", where=where, fix="use e.g. 0.05"
            )
        if self.test not in TESTS:
            raise ConfigError(
                f"test {self.test!r} is not one of {', '.join(TESTS)}",
                where=where,
                fix="use sign-flip (exact) or t",
            )
        if self.treatment == self.control:
            raise ConfigError("treatment and control are the same arm", where=where, fix="compare two arms")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        from alignlab.core.config import from_dict

        return from_dict(cls, data, where=f"claim {data.get('name', '?')!r}")

    def plan_line(self) -> str:
        """How the claim reads in a report's pre-registered plan."""
        better = "higher" if self.higher_is_better else "lower"
        return (
            f"{self.name}: {self.treatment} vs {self.control} on {self.metric} ({better} is better); "
            f"expected: {self.direction}; margin ±{self.margin:g}; "
            f"{self.test} test, Holm, alpha {self.alpha:g}"
        )


# ---- tests -----------------------------------------------------------------------------------------


def smallest_p(n: int, test: str = "sign-flip") -> float:
    """The smallest two-sided p-value an exact sign-flip test over ``n`` paired seeds can give."""
    if test != "sign-flip":
        return 0.0
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def _flip_means(d: np.ndarray, seed: int) -> np.ndarray:
    """Mean of ``d`` under every sign pattern (exact), or under MONTE_CARLO random patterns."""
    n = len(d)
    if n <= EXACT_MAX_SEEDS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((1.0, -1.0), size=(MONTE_CARLO, n))
    return signs @ d / n


def sign_flip_p(values: Values, *, alternative: str = "two-sided", seed: int = 0) -> float:
    """p-value of the paired sign-flip test of mean(d) = 0 (``greater``: mean > 0; ``less``: mean < 0).

    Exact for up to EXACT_MAX_SEEDS values. Ties with the observed statistic count as extreme
    (a tolerance of 1e-12 guards against float noise).
    """
    d = np.asarray(values, dtype=float)
    if d.size == 0:
        return 1.0
    observed = d.mean()
    flips = _flip_means(d, seed)
    eps = 1e-12 * max(1.0, float(np.abs(d).max()))
    if alternative == "two-sided":
        return float(np.mean(np.abs(flips) >= abs(observed) - eps))
    if alternative == "greater":
        return float(np.mean(flips >= observed - eps))
    if alternative == "less":
        return float(np.mean(flips <= observed + eps))
    raise ValueError(f"unknown alternative {alternative!r}")


def t_p(values: Values, *, alternative: str = "two-sided") -> float:
    """p-value of the one-sample t-test of mean(d) = 0 (the paired t-test on differences)."""
    from scipy import stats

    d = np.asarray(values, dtype=float)
    if d.size < 2:
        return 1.0
    if np.allclose(d, d[0]):  # no variance: the t statistic is undefined; decide by the sign alone
        if d[0] == 0:
            return 1.0
        agrees = {"two-sided": True, "greater": d[0] > 0, "less": d[0] < 0}[alternative]
        return 0.0 if agrees else 1.0
    return float(stats.ttest_1samp(d, 0.0, alternative=alternative).pvalue)


def _p(d: np.ndarray, test: str, alternative: str, seed: int) -> float:
    return (
        sign_flip_p(d, alternative=alternative, seed=seed)
        if test == "sign-flip"
        else t_p(d, alternative=alternative)
    )


def tost_p(values: Values, margin: float, *, test: str = "sign-flip", seed: int = 0) -> float:
    """Two one-sided tests of equivalence: p for "the mean difference lies inside ±margin"."""
    d = np.asarray(values, dtype=float)
    p_lower = _p(d + margin, test, "greater", seed)  # H0: mean(d) <= -margin
    p_upper = _p(d - margin, test, "less", seed)  # H0: mean(d) >= +margin
    return max(p_lower, p_upper)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given).

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return [round(float(x), 12) for x in adjusted]


def hierarchical_bootstrap_ci(
    diffs: Sequence[Sequence[float]] | Sequence[float],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of the mean difference, resampling seeds and then items within each drawn seed.

    ``diffs`` is either per-seed differences (one number per seed: seeds are resampled) or, per seed,
    the paired per-item differences (seeds resampled, then items within each drawn seed).
    """
    rng = np.random.default_rng(seed)
    nested = [np.asarray(x, dtype=float).ravel() for x in diffs]
    n = len(nested)
    if n == 0:
        return (float("nan"), float("nan"))
    stats_ = np.empty(n_resamples)
    for b in range(n_resamples):
        picks = rng.integers(0, n, size=n)
        means = []
        for s in picks:
            items = nested[s]
            means.append(
                items[rng.integers(0, len(items), size=len(items))].mean() if len(items) > 1 else items.mean()
            )
        stats_[b] = np.mean(means)
    lo, hi = np.quantile(stats_, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


# ---- verdicts ----------------------------------------------------------------------------------------


def verdict_of(mean_diff: float, p_difference: float, p_equivalence: float, claim: Claim) -> str:
    """The shared vocabulary: improves / hurts / equivalent within ±m / inconclusive."""
    if p_difference < claim.alpha:
        return "improves" if mean_diff > 0 else "hurts"
    if p_equivalence < claim.alpha:
        return f"equivalent within ±{claim.margin:g}"
    return "inconclusive"


def _paired(claim: Claim, runs: Mapping[str, Mapping[Any, float]]) -> tuple[list[Any], np.ndarray]:
    for arm in (claim.treatment, claim.control):
        if arm not in runs:
            raise ConfigError(
                f"arm {arm!r} has no runs",
                where=f"claim {claim.name!r}",
                fix=f"run it, or declare one of: {', '.join(sorted(runs))}",
            )
    seeds = sorted(set(runs[claim.treatment]) & set(runs[claim.control]), key=lambda s: (str(type(s)), s))
    if not seeds:
        raise ConfigError(
            "the two arms share no seed",
            where=f"claim {claim.name!r}",
            fix="run both arms with the same seeds (the analysis pairs by seed)",
        )
    sign = 1.0 if claim.higher_is_better else -1.0
    d = np.array([sign * (float(runs[claim.treatment][s]) - float(runs[claim.control][s])) for s in seeds])
    if not np.all(np.isfinite(d)):
        raise ConfigError(
            "a run's metric is not a finite number",
            where=f"claim {claim.name!r}",
            fix="check the runs' results for NaN or inf",
        )
    return seeds, d


def _row(
    c: Claim,
    runs: Mapping[str, Mapping[Any, float]],
    items: Mapping[str, Mapping[Any, Sequence[float]]] | None,
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """One claim's unadjusted statistics."""
    seeds, d = _paired(c, runs)
    if items and c.treatment in items and c.control in items:
        sign = 1.0 if c.higher_is_better else -1.0
        nested: list[Any] = [
            sign * (np.asarray(items[c.treatment][s], float) - np.asarray(items[c.control][s], float))
            for s in seeds
        ]
    else:
        nested = list(d)
    lo, hi = hierarchical_bootstrap_ci(nested, n_resamples=n_resamples, seed=seed)
    return {
        "claim": c.name,
        "plan": asdict(c),
        "seeds": seeds,
        "n": len(seeds),
        "mean_diff": float(d.mean()),
        "sd_diff": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
        "ci": [lo, hi],
        "same_sign": int(max((d > 0).sum(), (d < 0).sum())),
        "p_difference_raw": _p(d, c.test, "two-sided", seed),
        "p_equivalence_raw": tost_p(d, c.margin, test=c.test, seed=seed),
        "smallest_p": smallest_p(len(d), c.test),
    }


def _adjust(rows: list[dict[str, Any]], claims: Sequence[Claim]) -> list[dict[str, Any]]:
    """Holm across the declared claims, then the verdicts."""
    adj_diff = holm([r["p_difference_raw"] for r in rows])
    adj_eq = holm([r["p_equivalence_raw"] for r in rows])
    for r, c, pd, pe in zip(rows, claims, adj_diff, adj_eq, strict=True):
        r["p_difference"], r["p_equivalence"] = pd, pe
        r["verdict"] = verdict_of(r["mean_diff"], pd, pe, c)
        r["supported"] = r["verdict"].split()[0] == c.direction
    return rows


def analyse(
    claims: Sequence[Claim],
    runs: Mapping[str, Mapping[Any, float]],
    items: Mapping[str, Mapping[Any, Sequence[float]]] | None = None,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Analyse every declared claim on one metric; Holm across them. ``runs[arm][seed]`` is a run's value.

    ``items[arm][seed]`` (optional) holds the per-item values behind that number, paired across arms by
    position; it makes the CI hierarchical. For claims on several metrics use :func:`analyse_metrics`.
    """
    return _adjust([_row(c, runs, items, n_resamples, seed) for c in claims], claims)


def analyse_metrics(
    claims: Sequence[Claim],
    runs_by_metric: Mapping[str, Mapping[str, Mapping[Any, float]]],
    items_by_metric: Mapping[str, Mapping[str, Mapping[Any, Sequence[float]]]] | None = None,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Like :func:`analyse`, for claims on several metrics (``runs_by_metric[metric][arm][seed]``)."""
    for c in claims:
        if c.metric not in runs_by_metric:
            raise ConfigError(
                f"no results for metric {c.metric!r}",
                where=f"claim {c.name!r}",
                fix=f"use one of: {', '.join(sorted(runs_by_metric))}",
            )
    rows = [
        _row(c, runs_by_metric[c.metric], (items_by_metric or {}).get(c.metric), n_resamples, seed)
        for c in claims
    ]
    return _adjust(rows, claims)


def plan_markdown(claims: Sequence[Claim]) -> str:
    """The pre-registered plan, printed first in every report."""
    lines = ["## Pre-registered plan", "", "Declared in the experiment's config before the runs:", ""]
    lines += [f"{i}. {c.plan_line()}" for i, c in enumerate(claims, 1)]
    return "\n".join(lines) + "\n"


def claims_markdown(rows: Sequence[Mapping[str, Any]], digits: int = 2) -> str:
    """The claims table: effect, CI, both Holm-adjusted p-values, the floor on p, and the verdict."""
    from alignlab.core.tables import markdown_table

    def p(x: float) -> str:
        return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"

    body = [
        [
            r["claim"],
            str(r["n"]),
            f"{r['mean_diff']:+.{digits}f}",
            f"[{r['ci'][0]:+.{digits}f}, {r['ci'][1]:+.{digits}f}]",
            f"{r['same_sign']}/{r['n']}",
            p(r["p_difference"]),
            p(r["p_equivalence"]),
            p(r["smallest_p"]) if r["smallest_p"] > 0 else "—",  # a t-test has no floor on p
            r["verdict"],
            "yes" if r["supported"] else "no",
        ]
        for r in rows
    ]
    return markdown_table(
        [
            "claim",
            "seeds",
            "Δ (mean)",
            "95% CI",
            "same sign",
            "p (difference, Holm)",
            "p (TOST, Holm)",
            "smallest p possible",
            "verdict",
            "as declared",
        ],
        body,
        align="lrrrrrrrll",
    )


# ---- the experiment kit: claims from a config, the analysis section of a report, one results file ----


def claims_from_config(
    raw: Sequence[Mapping[str, Any] | Claim],
    *,
    arms: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> list[Claim]:
    """The declared claims of an experiment config (a list of dicts, as YAML or ``--set`` give them).

    Names must be unique, with ``arms`` every claim must compare two of them, and with ``metrics`` its
    metric must be one the experiment measures: a plan that cannot be analysed fails before any training.
    """
    claims = [c if isinstance(c, Claim) else Claim.from_dict(c) for c in raw]
    if not claims:
        raise ConfigError(
            "the experiment declares no claims",
            where="config key claims",
            fix="declare at least one claim (arms, metric, direction, margin) before running",
        )
    seen: set[str] = set()
    for c in claims:
        if c.name in seen:
            raise ConfigError(
                f"claim {c.name!r} is declared twice",
                where="config key claims",
                fix="give every claim its own name",
            )
        seen.add(c.name)
        if arms is not None:
            for arm in (c.treatment, c.control):
                if arm not in arms:
                    raise ConfigError(
                        f"claim {c.name!r} compares arm {arm!r}, which the experiment does not run",
                        where="config key claims",
                        fix=f"use one of: {', '.join(arms)}",
                    )
        if metrics is not None and c.metric not in metrics:
            raise ConfigError(
                f"claim {c.name!r} uses metric {c.metric!r}, which the experiment does not measure",
                where="config key claims",
                fix=f"use one of: {', '.join(metrics)}",
            )
    return claims


def seeds_note(n: int, test: str = "sign-flip", alpha: float = 0.05, n_claims: int = 1) -> str:
    """One sentence on what ``n`` paired seeds can show, for the report's plan."""
    floor = smallest_p(n, test)
    text = f"{n} paired seeds"
    if test == "sign-flip":
        text += f": the exact sign-flip test cannot give p below {floor:.3g}"
        if n_claims > 1:
            text += f" (below {min(1.0, floor * n_claims):.3g} for the first of {n_claims} claims after Holm)"
        if floor * n_claims >= alpha:
            text += f", so no claim can reach alpha {alpha:g} with this many seeds"
    return text + "."


def analysis_markdown(claims: Sequence[Claim], rows: Sequence[Mapping[str, Any]], digits: int = 2) -> str:
    """The report's analysis: the claims table and one sentence per verdict (plan printed separately)."""
    lines = [
        "## Pre-registered claims: results",
        "",
        "Δ is treatment − control per seed (sign flipped when lower is better), averaged over the paired "
        "seeds; the CI is a bootstrap over seeds (and items within seeds where recorded); p-values are "
        "Holm-adjusted across the claims below.",
        "",
        claims_markdown(rows, digits),
        "",
    ]
    return "\n".join(lines) + "\n"


def verdict_line(row: Mapping[str, Any], digits: int = 2) -> str:
    """``claim: verdict (Δ +x [lo, hi], n seeds)`` for summaries such as docs/RESULTS.md."""
    plan = row["plan"]
    expected = plan["direction"]
    tag = "supported" if row["supported"] else f"not supported (declared: {expected})"
    return (
        f"{row['claim']}: **{row['verdict']}** — {tag}; Δ {row['mean_diff']:+.{digits}f} "
        f"[{row['ci'][0]:+.{digits}f}, {row['ci'][1]:+.{digits}f}], {row['n']} seeds"
    )
