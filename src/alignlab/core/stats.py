"""Statistics for results over seeds and for paired comparisons of two systems.

* :func:`summarize` — mean, sample sd, min, max, range and a t-based 95% CI of the mean over seeds.
* :func:`paired_randomization_test` — Fisher's paired (sign-flip) randomization test of the mean
  difference; exact when 2**n is small, Monte Carlo otherwise (with the +1 correction, so p > 0).
* :func:`paired_bootstrap` — percentile bootstrap CI of the mean paired difference.
* :func:`bootstrap_ci` — percentile bootstrap CI of a mean (e.g. a probe accuracy).
* :func:`metric_bounds` — the range an alignlab metric can take (for ``summarize(..., bounds=...)``).

All take an explicit ``seed`` and use their own generator.

>>> s = summarize([40.0, 42.0, 44.0])
>>> round(s["mean"], 1), round(s["sd"], 1), s["range"]
(42.0, 2.0, 4.0)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

_R_AT_K = re.compile(r"^(?:[a-z0-9]+_)?R@\d+$")  # i2t_R@5, R@10


def summarize(
    values: Sequence[float], confidence: float = 0.95, bounds: tuple[float | None, float | None] | None = None
) -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1), min, max, range and t-interval of the mean.

    ``bounds`` is the range the quantity can take (``(0, None)`` for a count, ``(0, 100)`` for a
    percentage): a t-interval over few values can reach past it, and is then cut to it.
    """
    from scipy import stats as sps

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize needs at least one value")
    n = int(x.size)
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    else:
        half = float("nan")
    low, high = mean - half, mean + half
    if bounds is not None and n > 1:
        lo, hi = bounds
        low = low if lo is None else max(low, float(lo))
        high = high if hi is None else min(high, float(hi))
    return {
        "n": n,
        "mean": mean,
        "sd": sd,
        "min": float(x.min()),
        "max": float(x.max()),
        "range": float(x.max() - x.min()),
        "ci_low": low,
        "ci_high": high,
    }


def metric_bounds(name: str) -> tuple[float | None, float | None]:
    """The values metric ``name`` can take, ``(low, high)`` with ``None`` where open.

    R@K and ``*_pct`` lie in [0, 100], fractions (``acc``, ``*_rate``) in [0, 1], counts and RSUM are
    never negative, ranks are at least 1; differences (``gap``, ``delta``) and unknown names are open.

    >>> metric_bounds("t2i_R@10"), metric_bounds("i2t_tied_queries"), metric_bounds("negation_gap_pct")
    ((0.0, 100.0), (0.0, None), (None, None))
    """
    base = name.split("/")[-1]
    if any(word in base for word in ("gap", "delta", "diff")):
        return None, None
    if _R_AT_K.match(base) or base.endswith("_pct") or base in ("pct", "acc_pct"):
        return 0.0, 100.0
    if base.endswith(("medr", "meanr")):
        return 1.0, None
    if (
        base == "rsum"
        or base.endswith(("tied_queries", "_count", "_items", "_words", "_captions"))
        or base in ("n", "count", "steps", "epoch", "best_epoch")
    ):
        return 0.0, None
    if base in ("acc", "accuracy", "sense_acc", "contrastive_acc") or base.endswith(("_acc", "_rate")):
        return 0.0, 1.0
    return None, None


def paired_randomization_test(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, seed: int = 0, exact_max_n: int = 16
) -> float:
    """Two-sided p-value that the mean of ``b - a`` differs from 0, by random sign flips of the pairs.

    Under the null hypothesis the two systems are exchangeable within each pair, so each difference's
    sign is a fair coin. With ``n <= exact_max_n`` non-zero differences all ``2**n`` sign patterns are
    enumerated (exact p); otherwise ``n_resamples`` random patterns are drawn and
    ``p = (1 + #{|mean*| >= |mean|}) / (1 + n_resamples)``.
    """
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError("a and b must be 1-D and of equal length")
    d = d[d != 0]
    n = d.size
    if n == 0:
        return 1.0
    observed = abs(d.mean())
    # A tolerance so that floating-point noise does not turn ties with the observed value into misses.
    tol = 1e-12 * max(1.0, observed)
    if n <= exact_max_n:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        means = np.abs(patterns @ d) / n
        return float(np.mean(means >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, min(n_resamples, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1
        hits += int(np.sum(np.abs(signs @ d) / n >= observed - tol))
        done += m
    return (1 + hits) / (1 + n_resamples)


def _bootstrap_means(
    x: np.ndarray, n_resamples: int, seed: int, statistic: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = x.size
    out = np.empty(n_resamples)
    chunk = max(1, min(n_resamples, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        idx = rng.integers(0, n, size=(m, n))
        sample = x[idx]
        out[done : done + m] = statistic(sample) if statistic is not None else sample.mean(axis=1)
        done += m
    return out


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Percentile bootstrap CI of the mean of ``values``: ``{"mean", "ci_low", "ci_high"}``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    means = _bootstrap_means(x, n_resamples, seed)
    alpha = (1 - confidence) / 2
    return {
        "mean": float(x.mean()),
        "ci_low": float(np.quantile(means, alpha)),
        "ci_high": float(np.quantile(means, 1 - alpha)),
    }


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Percentile bootstrap CI of ``mean(b - a)`` resampling pairs (queries) with replacement.

    Returns ``{"delta", "ci_low", "ci_high", "p_boot"}``, where ``p_boot`` is the two-sided share of
    resampled deltas on the other side of zero (a rough companion to the randomization test).
    """
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size == 0:
        raise ValueError("paired_bootstrap needs at least one pair")
    means = _bootstrap_means(d, n_resamples, seed)
    alpha = (1 - confidence) / 2
    delta = float(d.mean())
    p = 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0)))
    return {
        "delta": delta,
        "ci_low": float(np.quantile(means, alpha)),
        "ci_high": float(np.quantile(means, 1 - alpha)),
        "p_boot": min(1.0, p),
    }


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Welch's unequal-variance t-test of mean(b) - mean(a) across independent runs (e.g. seeds)."""
    from scipy import stats as sps

    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    if xa.size < 2 or xb.size < 2:
        return {"delta": float(xb.mean() - xa.mean()), "t": float("nan"), "p": float("nan")}
    res = sps.ttest_ind(xb, xa, equal_var=False)
    return {"delta": float(xb.mean() - xa.mean()), "t": float(res.statistic), "p": float(res.pvalue)}
