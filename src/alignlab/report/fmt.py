"""How reports order, round and bound metrics.

* :func:`ordered` — metrics in their natural order: ``R@1, R@5, R@10`` (not text order ``R@1, R@10,
  R@5``), image-to-text before text-to-image, then RSUM, ranks and tie counts; any other metric keeps
  the order its producer wrote it in.
* :func:`fmt_num` — a number as a reader wants it: no float noise (``13.459999999999999`` -> ``13.46``),
  integers without decimals, small values with three significant digits, ``n/a`` for NaN.
* :func:`clip_ci` — a CI cut to the range its metric can take (:func:`alignlab.core.stats.metric_bounds`:
  a percentage lies in [0, 100], a count or a rank is never negative), as a t-interval over few seeds
  can reach past it.

>>> [k for k in ordered({"i2t_R@10": 1, "i2t_R@5": 1, "rsum": 1, "i2t_R@1": 1})]
['i2t_R@1', 'i2t_R@5', 'i2t_R@10', 'rsum']
>>> fmt_num(13.459999999999999), fmt_num(12.0), fmt_num(0.0123456), fmt_num(float("nan"))
('13.46', '12', '0.0123', 'n/a')
>>> fmt_metric("i2t_R@10", 48.0), fmt_metric("t2i_medr", 19.0), fmt_metric("negation_acc_pct", 50)
('48.00', '19', '50.0')
>>> clip_ci("t2i_tied_queries", -3.2, 9.5)
(0.0, 9.5)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from alignlab.core.stats import metric_bounds

_RK = re.compile(r"^(?:(?P<dir>[a-z0-9]+)_)?R@(?P<k>\d+)$")
_DIRECTIONS = {"i2t": 0, "t2i": 1}
# Families after R@K, in the order papers print them.
_FAMILIES = ("rsum", "medr", "meanr", "tied_queries")


def _order_key(name: str, index: int) -> tuple[int, int, int, int]:
    m = _RK.match(name)
    if m:
        return (0, _DIRECTIONS.get(m.group("dir") or "", 2), int(m.group("k")), index)
    for rank, family in enumerate(_FAMILIES, start=1):
        if name == family or name.endswith("_" + family):
            direction = name[: -len(family) - 1] if name != family else ""
            return (rank, _DIRECTIONS.get(direction, 2), 0, index)
    return (len(_FAMILIES) + 1, 0, 0, index)  # anything else: where its producer put it


def order_names(names: Iterable[str]) -> list[str]:
    """Metric names in their natural order (see the module docstring)."""
    names = list(dict.fromkeys(names))
    return [n for _, n in sorted((_order_key(n, i), n) for i, n in enumerate(names))]


def ordered(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` re-keyed in natural order."""
    return {k: metrics[k] for k in order_names(metrics)}


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_num(v: Any, signed: bool = False) -> str:
    """A rounded, noise-free rendering of a number; other values as text (``None`` as n/a)."""
    if v is None:
        return "n/a"
    if isinstance(v, bool) or not is_number(v):
        return str(v)
    x = float(v)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return ("+" if signed and x > 0 else "") + ("∞" if x > 0 else "−∞")
    sign = "+" if signed else ""
    if isinstance(v, int) or (x.is_integer() and abs(x) < 1e15):
        return f"{int(x):{sign},}" if abs(x) >= 10000 else f"{int(x):{sign}d}"
    if abs(x) >= 100:
        return f"{x:{sign}.1f}"
    if abs(x) >= 1:
        return f"{x:{sign}.2f}"
    if abs(x) >= 0.1:  # fractions such as accuracies: three decimals, so a column reads evenly
        return f"{x:{sign}.3f}"
    return f"{x:{sign}.3g}"


def fmt_metric(name: str, v: Any, signed: bool = False) -> str:
    """``v`` rounded the same way for every value of metric ``name``, so a column reads evenly.

    R@K with two decimals (``48.00``, not ``48``), other percentages with one, counts and ranks
    as integers when they are whole; anything else as :func:`fmt_num`.
    """
    if not is_number(v) or math.isnan(float(v)) or math.isinf(float(v)):
        return fmt_num(v, signed)
    base = name.split("/")[-1]
    sign = "+" if signed else ""
    if _RK.match(base):
        return f"{float(v):{sign}.2f}"
    if base.endswith("_pct") or base in ("pct", "acc_pct"):
        return f"{float(v):{sign}.1f}"
    return fmt_num(v, signed)


def clip_ci(name: str, low: float, high: float) -> tuple[float, float]:
    """The CI ``[low, high]`` of metric ``name`` cut to the metric's valid range."""
    lo, hi = metric_bounds(name)
    if lo is not None:
        low, high = max(low, lo), max(high, lo)
    if hi is not None:
        low, high = min(low, hi), min(high, hi)
    return low, high
