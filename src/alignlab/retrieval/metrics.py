"""Exact image–text retrieval metrics, counted blockwise: R@K, median and mean rank, ties.

Definitions (stated again in every report's ``definitions``):

* **rank** of a query = 1 + the number of *irrelevant* candidates scored above the query's best-scored
  relevant candidate. Relevant candidates never push each other down, so with ``r`` relevant captions
  an image query still has rank 1 when any of them is on top.
* **R@K** = 100 · (share of queries with rank <= K): a hit if *any* relevant item is in the top K, the
  convention of the retrieval papers (VSE++, SCAN, CLIP). ``rsum`` is the sum of the R@K of both
  directions over ``ks``.
* **medr** = floor(median of the ranks) (what the VSE++/SCAN code prints: ``floor(median(rank0)) + 1``
  with 0-based ranks); **meanr** = mean of the ranks.
* **Directions.** ``relevance[i]`` lists the caption ids of image ``i`` (any number). Image -> text
  (i2t) ranks all captions for each image; text -> image (t2i) ranks all images for each caption, with
  the inverse map as relevance (a caption may be relevant to several images).
* **Ties.** Let ``s*`` be the query's best relevant score. With ``ties="pessimistic"`` an irrelevant
  candidate scoring exactly ``s*`` counts as above the query (worst case), with ``"optimistic"`` as
  below (best case), with ``"index"`` the lower candidate index comes first (what a stable sort by
  score gives). A query is *tied* when at least one irrelevant candidate scores exactly ``s*``: only
  those queries can change rank between policies. Reports give the number of tied queries and of tied
  (query, irrelevant candidate) pairs per direction.

In formulas, for a query ``q`` with relevant set ``R`` and scores ``s``::

    s* = max_{c in R} s_c          gt = #{c not in R : s_c > s*}        eq = #{c not in R : s_c = s*}
    rank = 1 + gt + eq  (pessimistic) | 1 + gt  (optimistic) | 1 + gt + #{c not in R : s_c = s*, c < c*}
    (index; c* = the lowest-index relevant candidate with score s*)

How it is computed (never a sort, never a dense relevance tensor). Scores are produced one block of
``chunk_size`` image rows at a time (``image_emb[a:b] @ text_emb.T``, or a slice of a given score
matrix); each block is compared with thresholds and reduced to counts, so memory is
``O(chunk_size · n_captions + n_images + n_captions + n_pairs)``.

* i2t: a block holds all candidates of its image queries, so ``s*`` is read from the block itself
  and the counts are exact.
* t2i needs each caption's ``s*`` before its column has been seen. Before the pass, each relevant pair's
  score is recomputed on its own (a row-wise dot product). Any float dot product is within
  ``γ_D Σ_k |x_k y_k| <= γ_D |x| |y|`` of the exact one (``γ_D = D u / (1 - D u)``, ``u`` the unit
  roundoff, whatever the summation order), so the recomputed and the GEMM's value differ by at most
  ``2 γ_D |x| |y|``: an interval ``[lo_c, hi_c]`` that must contain the caption's ``s*``. Each block adds
  ``#{s > hi_c}`` per column and keeps the few entries inside ``[lo_c, hi_c]``; after the pass the exact
  ``s*`` (read from the blocks) resolves those entries. The interval is *checked*
  (``lo_c <= s* <= hi_c`` with the block's own values), so the result is exact even on hardware whose matmul
  breaks the bound (TF32); when the check fails, or the kept entries would exceed the memory bound
  (masses of exact ties), t2i is recomputed by a second blockwise pass with captions as queries
  (``report.t2i_method`` says which). For a given score matrix the thresholds are exact from the start
  (``lo_c = hi_c = s*``).

Every score is the value of one block matmul, used for both directions, so the numbers equal those of
a full ``image_emb @ text_emb.T`` whenever the BLAS gives row blocks the same bits as the whole product
(checked for this machine's MKL in ``benchmarks/bench_retrieval_eval.py``).

>>> import numpy as np
>>> scores = np.array([[0.9, 0.1, 0.8], [0.2, 0.7, 0.6]])
>>> rep = evaluate_scores(scores, [[0], [1, 2]], ks=(1,))
>>> rep.metrics["i2t_R@1"], rep.metrics["t2i_R@1"], rep.i2t_ranks.tolist(), rep.t2i_ranks.tolist()
(100.0, 66.66666666666666, [1, 1], [1, 1, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alignlab.core.errors import ConfigError, DataError
from alignlab.data.pairs import ImageTextPairs, check_relevance

TIE_POLICIES: dict[str, str] = {
    "pessimistic": "an irrelevant candidate scored exactly equal to the query's best relevant one "
    "ranks above it (worst case)",
    "optimistic": "an irrelevant candidate scored exactly equal to the query's best relevant one "
    "ranks below it (best case)",
    "index": "equal scores are ordered by candidate index, lower index first (as a stable sort by score)",
}

DEFINITIONS: dict[str, str] = {
    "R@K": "hit@K in %: share of queries with at least one relevant item among the top K candidates",
    "rank": "1 + number of irrelevant candidates scored above the query's best-scored relevant candidate",
    "rsum": "sum of i2t and t2i R@K over the reported K",
    "medr": "floor(median rank) (as the VSE++/SCAN code prints it)",
    "meanr": "mean rank",
    "i2t": "image queries, caption candidates; relevant = relevance[i]",
    "t2i": "caption queries, image candidates; relevant = the images whose relevance lists the caption",
    "tied_queries": "queries with at least one irrelevant candidate scored exactly equal to their best "
    "relevant candidate (only these can change rank between tie policies)",
}

# Scores per block when chunk_size is None: 8M entries = 32 MB of float32. The matmul needs blocks of many
# rows to run at full speed (each call repacks the caption matrix); see benchmarks/bench_retrieval_eval.py.
DEFAULT_BLOCK_ENTRIES = 1 << 23
# The comparisons then walk each block in sub-blocks of this many scores (8 MB: they stay in cache).
SUB_BLOCK_ENTRIES = 1 << 21
# The t2i entries kept inside [lo, hi] may use at most max(block entries // 4, _BAND_MIN) slots (20 bytes
# each) before the second pass takes over; a module constant so tests can force the second pass.
_BAND_MIN = 4096


# --- the report ---------------------------------------------------------------------------------------


@dataclass
class RetrievalReport:
    """What :func:`evaluate_embeddings` / :func:`evaluate_scores` return.

    ``metrics``: ``i2t_R@K``, ``t2i_R@K`` (percent), ``rsum``, ``i2t_medr``, ``i2t_meanr``, ``t2i_medr``,
    ``t2i_meanr``, ``i2t_tied_queries``, ``t2i_tied_queries``. ``i2t_ranks[i]`` / ``t2i_ranks[c]``: the
    1-based rank of every query (``int64``). ``ties``: tied queries and tied (query, candidate) pairs per
    direction. ``t2i_method``: ``"one pass"`` or ``"second pass"`` (see the module docstring).
    """

    metrics: dict[str, float]
    i2t_ranks: np.ndarray
    t2i_ranks: np.ndarray
    ties: dict[str, int]
    definitions: dict[str, str]
    ks: tuple[int, ...]
    tie_policy: str
    n_images: int
    n_captions: int
    n_pairs: int
    t2i_method: str = "one pass"

    def hits(self, direction: str, k: int) -> np.ndarray:
        """Per-query hit@k (bool array) of ``direction`` ("i2t" or "t2i"), e.g. for paired tests."""
        if direction not in ("i2t", "t2i"):
            raise ConfigError(f"unknown direction {direction!r}", fix="use 'i2t' or 't2i'")
        ranks = self.i2t_ranks if direction == "i2t" else self.t2i_ranks
        return ranks <= int(k)

    def to_dict(self, include_ranks: bool = False) -> dict[str, Any]:
        """JSON-ready: metrics, definitions, ties and sizes (per-query ranks only if asked)."""
        d: dict[str, Any] = {
            "metrics": dict(self.metrics),
            "definitions": dict(self.definitions),
            "ties": dict(self.ties),
            "ks": list(self.ks),
            "tie_policy": self.tie_policy,
            "n_images": self.n_images,
            "n_captions": self.n_captions,
            "n_pairs": self.n_pairs,
            "t2i_method": self.t2i_method,
        }
        if include_ranks:
            d["i2t_ranks"] = self.i2t_ranks.tolist()
            d["t2i_ranks"] = self.t2i_ranks.tolist()
        return d

    def format(self) -> str:
        """A small Markdown table of the metrics."""
        rows = ["| metric | i2t | t2i |", "|---|---|---|"]
        for k in self.ks:
            rows.append(f"| R@{k} | {self.metrics[f'i2t_R@{k}']:.2f} | {self.metrics[f't2i_R@{k}']:.2f} |")
        for m in ("medr", "meanr", "tied_queries"):
            rows.append(f"| {m} | {self.metrics[f'i2t_{m}']:g} | {self.metrics[f't2i_{m}']:g} |")
        rows.append(f"| rsum | {self.metrics['rsum']:.2f} | |")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.format()


def metrics_from_ranks(
    i2t_ranks: np.ndarray, t2i_ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """R@K (percent), rsum, medr and meanr of both directions from 1-based per-query ranks."""
    ks = _check_ks(ks)
    out: dict[str, float] = {}
    ranks = {"i2t": np.asarray(i2t_ranks), "t2i": np.asarray(t2i_ranks)}
    for d, r in ranks.items():
        for k in ks:
            out[f"{d}_R@{k}"] = 100.0 * float(np.mean(r <= k)) if r.size else float("nan")
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d in ranks for k in ks)
    for d, r in ranks.items():
        out[f"{d}_medr"] = float(np.floor(np.median(r))) if r.size else float("nan")
        out[f"{d}_meanr"] = float(np.mean(r)) if r.size else float("nan")
    return out


# --- validation -----------------------------------------------------------------------------------------


def _check_ks(ks: Any) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = (int(ks),)
    try:
        items = list(ks)
    except TypeError:
        raise ConfigError(
            f"ks must be a list of positive integers, got {ks!r}", fix="e.g. ks=(1, 5, 10)"
        ) from None
    if not items:
        raise ConfigError("ks is empty", fix="give at least one K, e.g. ks=(1, 5, 10)")
    for k in items:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"bad K {k!r} in ks: each K must be an integer >= 1", fix="e.g. ks=(1, 5, 10)")
    if len(set(items)) != len(items):
        raise ConfigError(f"ks {items} repeats a value", fix="list each K once")
    return tuple(sorted(int(k) for k in items))


def _check_ties(ties: Any) -> str:
    if ties not in TIE_POLICIES:
        raise ConfigError(f"unknown tie policy {ties!r}", fix=f"choose one of: {', '.join(TIE_POLICIES)}")
    return ties


def _check_chunk(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ConfigError(
            f"chunk_size must be a positive integer or None, got {chunk_size!r}",
            fix="give the number of query rows per block, or None for automatic",
        )
    return int(chunk_size)


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    """A torch view of ``x`` (no copy where possible); rejects what cannot hold scores."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            arr = x if isinstance(x, np.ndarray) else np.asarray(x)
        except (TypeError, ValueError) as e:
            raise DataError(
                f"{name} is not an array: {e}", fix="give a torch tensor or a NumPy array"
            ) from None
        if arr.dtype.kind not in "fiu":
            raise DataError(f"{name} has dtype {arr.dtype}, not numbers", fix="give a float array")
        t = (
            torch.from_numpy(np.ascontiguousarray(arr))
            if arr.dtype.kind == "f"
            else torch.from_numpy(arr.astype(np.float64))
        )
    if t.dtype == torch.bool or t.is_complex():
        raise DataError(f"{name} has dtype {t.dtype}", fix="give real-valued floats")
    if not t.is_floating_point():
        t = t.to(torch.float64)  # integer scores: float64 holds them exactly
    return t


def _compute_dtype(*ts: torch.Tensor) -> torch.dtype:
    # Half precision is widened (exactly) to float32; float64 input stays float64.
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _first_bad_row(t: torch.Tensor) -> int:
    bad = ~torch.isfinite(t).all(dim=1)
    return int(torch.nonzero(bad)[0, 0])


def _pair_arrays(relevance: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(r) for r in relevance), dtype=np.int64, count=len(relevance))
    rows = np.repeat(np.arange(len(relevance), dtype=np.int64), lengths)
    cols = np.fromiter((int(c) for r in relevance for c in r), dtype=np.int64, count=int(lengths.sum()))
    return rows, cols


def _relevance_list(relevance: Any) -> Sequence[Sequence[int]]:
    if isinstance(relevance, ImageTextPairs):
        return relevance.relevance
    if isinstance(relevance, (str, bytes)) or not isinstance(relevance, (Sequence, np.ndarray)):
        raise DataError(
            f"relevance must be a list of caption-id lists, got {type(relevance).__name__}",
            fix="relevance[i] = the caption ids of image i",
        )
    for i, r in enumerate(relevance):
        if isinstance(r, (str, bytes)) or not isinstance(r, (Sequence, np.ndarray)):
            raise DataError(
                f"relevance[{i}] is {type(r).__name__}, not a list of caption ids",
                where=f"relevance[{i}]",
                fix="relevance[i] = the caption ids of image i",
            )
    return relevance


# --- the blockwise engine -------------------------------------------------------------------------------


class _Source:
    """Where score blocks come from: rows ``a:b`` of the (image x caption) matrix, or of its transpose."""

    n_rows: int
    n_cols: int
    dtype: torch.dtype
    device: torch.device

    def block(self, a: int, b: int) -> torch.Tensor:  # rows a:b of S, [b - a, n_cols]
        raise NotImplementedError

    def block_t(self, a: int, b: int) -> torch.Tensor:  # rows a:b of S.T, [b - a, n_rows]
        raise NotImplementedError

    def column_bounds(
        self, rows: torch.Tensor, cols: torch.Tensor, n_cols: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per column, [lo, hi] around the max score of its relevant pairs (None: no bound available)."""
        raise NotImplementedError


class _EmbeddingSource(_Source):
    def __init__(self, q: torch.Tensor, c: torch.Tensor):
        self.q, self.c = q, c
        self.n_rows, self.n_cols = len(q), len(c)
        self.dtype, self.device = q.dtype, q.device
        self.q_norm, self.c_norm = q.norm(dim=1), c.norm(dim=1)
        self._buf: torch.Tensor | None = None
        # Finite embeddings can still overflow in the product; check blocks only when that is possible.
        bound = float(self.q_norm.max()) * float(self.c_norm.max())
        self.check_blocks = not math.isfinite(bound) or bound >= torch.finfo(self.dtype).max / 4

    def _checked(self, s: torch.Tensor, a: int, transposed: bool) -> torch.Tensor:
        if self.check_blocks and not torch.isfinite(s).all():
            r = a + _first_bad_row(s)
            what = f"caption {r}" if transposed else f"image {r}"
            raise DataError(
                f"similarity overflows to inf for {what}",
                fix="normalise the embeddings (normalize=True) or scale them down",
            )
        return s

    def _product(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Reuse one output buffer: a fresh 32 MB tensor per block costs page faults on every call.
        # (The pass copies out what it keeps of a block before asking for the next one.)
        n = len(x) * len(y)
        if self._buf is None or self._buf.numel() < n:
            self._buf = torch.empty(n, dtype=self.dtype, device=self.device)
        return torch.matmul(x, y.T, out=self._buf[:n].view(len(x), len(y)))

    def block(self, a: int, b: int) -> torch.Tensor:
        return self._checked(self._product(self.q[a:b], self.c), a, False)

    def block_t(self, a: int, b: int) -> torch.Tensor:
        return self._checked(self._product(self.c[a:b], self.q), a, True)

    def column_bounds(self, rows, cols, n_cols):
        # Each relevant pair's dot product is recomputed on its own (vecdot, any summation order). Both it
        # and the GEMM's value are within gamma_D * sum_k |x_k y_k| <= gamma_D * |x| |y| of the exact dot
        # product, so they differ by at most 2 gamma_D |x| |y| (1% slack for the rounding of the norms).
        d = self.q.shape[1]
        u = torch.finfo(self.dtype).eps / 2  # unit roundoff of the matmul's dtype
        if d * u >= 0.25:
            return None
        gamma = d * u / (1 - d * u)
        approx = torch.empty(len(rows), dtype=self.dtype, device=self.device)
        step = max(1, SUB_BLOCK_ENTRIES // max(d, 1))  # gathered rows of ~2M numbers at a time
        for p in range(0, len(rows), step):
            approx[p : p + step] = torch.linalg.vecdot(self.q[rows[p : p + step]], self.c[cols[p : p + step]])
        radius = (2.02 * gamma) * (self.q_norm[rows].double() * self.c_norm[cols].double())
        radius += d * torch.finfo(self.dtype).tiny  # underflow slack
        return _bounds_from_pairs(approx.double(), radius, cols, n_cols, self.dtype)


class _ScoreSource(_Source):
    def __init__(self, s: torch.Tensor, dtype: torch.dtype):
        self.s = s
        self.n_rows, self.n_cols = s.shape
        self.dtype, self.device = dtype, s.device

    def _checked(self, blk: torch.Tensor, a: int, transposed: bool) -> torch.Tensor:
        if not torch.isfinite(blk).all():
            r = a + _first_bad_row(blk)
            col = int(torch.nonzero(~torch.isfinite(blk[r - a]))[0, 0])
            i, c = (col, r) if transposed else (r, col)
            raise DataError(
                f"score matrix has NaN or inf at [{i}, {c}]",
                where="score_matrix",
                fix="check the model's scores",
            )
        return blk

    def block(self, a: int, b: int) -> torch.Tensor:
        return self._checked(self.s[a:b].to(self.dtype), a, False)

    def block_t(self, a: int, b: int) -> torch.Tensor:
        return self._checked(self.s[:, a:b].T.to(self.dtype).contiguous(), a, True)

    def column_bounds(self, rows, cols, n_cols):
        vals = self.s[rows, cols].to(self.dtype)
        if not torch.isfinite(vals).all():
            return None  # the pass reports the bad entry with its position
        exact = torch.full((n_cols,), -math.inf, dtype=self.dtype, device=self.device)
        exact.scatter_reduce_(0, cols, vals, "amax")
        return exact, exact.clone()


def _bounds_from_pairs(
    approx: torch.Tensor, radius: torch.Tensor, cols: torch.Tensor, n_cols: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Column intervals [lo, hi] in ``dtype``, rounded outwards, that contain every max over the column."""
    dev = approx.device
    t = torch.full((n_cols,), -math.inf, dtype=torch.float64, device=dev).scatter_reduce_(
        0, cols, approx, "amax"
    )
    r = torch.zeros(n_cols, dtype=torch.float64, device=dev).scatter_reduce_(0, cols, radius, "amax")
    lo64, hi64 = t - r, t + r
    lo, hi = lo64.to(dtype), hi64.to(dtype)
    lo = torch.where(lo.double() > lo64, torch.nextafter(lo, torch.full_like(lo, -math.inf)), lo)
    hi = torch.where(hi.double() < hi64, torch.nextafter(hi, torch.full_like(hi, math.inf)), hi)
    return lo, hi


@dataclass
class _PassResult:
    ranks: torch.Tensor  # int64 [n_rows]
    tied: torch.Tensor  # int64 [n_rows]: irrelevant candidates scored exactly s*
    pair_vals: torch.Tensor  # the block's score of every relevant pair, in pair order
    col_gt: torch.Tensor | None = None  # per column: entries above hi
    band: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (row, col, score) inside [lo, hi]


_SIGN_EXACT: dict[tuple[str, torch.dtype], bool] = {}
_USE_SIGN_COUNTS = True  # tests switch it off to check the compare path


def _sign_counts_exact(s: torch.Tensor, n: int) -> bool:
    """Whether ``sign(a - b)`` counts are exact here: float sums of n signs are exact integers, and the
    device keeps subnormal differences (no flush-to-zero, which would turn tiny gaps into ties)."""
    if not _USE_SIGN_COUNTS or n > 2 / torch.finfo(s.dtype).eps:  # integers exact up to 2^24 in float32
        return False
    key = (str(s.device), s.dtype)
    if key not in _SIGN_EXACT:
        tiny = torch.finfo(s.dtype).tiny
        x = torch.tensor([1.5 * tiny], dtype=s.dtype, device=s.device)
        _SIGN_EXACT[key] = bool((x - 1.25 * tiny != 0).all()) and bool((x - x == 0).all())
    return _SIGN_EXACT[key]


def _count(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """``mask.sum(dim)`` in the narrowest integer type that cannot overflow.

    Summing the mask's bytes that way is 5-30x faster on CPU than ``bool.sum`` (which widens every
    element to int64 first).
    """
    n = mask.shape[dim]
    dtype = torch.uint8 if n <= 255 else torch.int16 if n <= 32767 else torch.int32
    return mask.view(torch.uint8).sum(dim, dtype=dtype)


def _rank_pass(
    block: Callable[[int, int], torch.Tensor],
    n_rows: int,
    n_cols: int,
    ptr: np.ndarray,
    rows: torch.Tensor,
    cols: torch.Tensor,
    ties: str,
    chunk: int,
    bounds: tuple[torch.Tensor, torch.Tensor] | None,
    band_cap: int,
) -> _PassResult:
    """Exact ranks of the row queries, block by block; with ``bounds``, also the column-side counts.

    ``rows``/``cols`` are the relevant pairs sorted by row, ``ptr`` their row offsets (CSR).
    """
    dev = rows.device
    ranks = torch.empty(n_rows, dtype=torch.int64, device=dev)
    tied = torch.empty(n_rows, dtype=torch.int64, device=dev)
    pair_vals: torch.Tensor | None = None
    col_side = bounds is not None
    if col_side:
        lo, hi = bounds[0][None, :], bounds[1][None, :]
        col_gt = torch.zeros(n_cols, dtype=torch.int64, device=dev)
        band_parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        band_size = 0
    col_index = torch.arange(n_cols, device=dev) if ties == "index" else None
    # Comparisons run over sub-blocks of ~2M scores that stay in cache (the matmul wants big blocks).
    sub_rows = max(1, min(chunk, SUB_BLOCK_ENTRIES // max(n_cols, 1)))
    mask_buf = torch.empty(min(sub_rows, n_rows), n_cols, dtype=torch.bool, device=dev)
    diff_buf: torch.Tensor | None = None
    for a in range(0, n_rows, chunk):
        b = min(a + chunk, n_rows)
        s = block(a, b)
        if pair_vals is None:
            pair_vals = torch.empty(len(rows), dtype=s.dtype, device=dev)
        p0, p1 = int(ptr[a]), int(ptr[b])
        lr, lc = rows[p0:p1] - a, cols[p0:p1]
        vals = s[lr, lc]
        pair_vals[p0:p1] = vals
        best = torch.full((b - a,), -math.inf, dtype=s.dtype, device=dev).scatter_reduce_(0, lr, vals, "amax")
        is_best = vals == best[lr]
        rel_eq = torch.zeros(b - a, dtype=torch.int64, device=dev).index_add_(0, lr, is_best.long())
        thr = best[:, None]
        gt = torch.empty(b - a, dtype=torch.int64, device=dev)  # no relevant candidate is above its own best
        ge = torch.empty_like(gt)
        if col_side:
            above = torch.zeros(n_cols, dtype=torch.int64, device=dev)
            at_least_lo = torch.zeros_like(above)
        for sa in range(0, b - a, sub_rows):
            sb = min(sa + sub_rows, b - a)
            ss, mask = s[sa:sb], mask_buf[: sb - sa]
            if _sign_counts_exact(s, n_cols):
                # One pass instead of two compares: sign(s - s*) is exactly -1, 0 or +1, so its sum is
                # #above - #below and its absolute sum #above + #below (integers, exact in float).
                if diff_buf is None:
                    diff_buf = torch.empty(mask_buf.shape, dtype=s.dtype, device=dev)
                d = torch.sub(ss, thr[sa:sb], out=diff_buf[: sb - sa]).sign_()
                net = d.sum(1)
                both = d.abs_().sum(1)
                gt[sa:sb] = (both + net) * 0.5
                ge[sa:sb] = n_cols - (both - net) * 0.5
            else:
                gt[sa:sb] = _count(torch.gt(ss, thr[sa:sb], out=mask), 1)
                ge[sa:sb] = _count(torch.ge(ss, thr[sa:sb], out=mask), 1)
            if col_side:
                above += _count(torch.gt(ss, hi, out=mask), 0)
                at_least_lo += _count(torch.ge(ss, lo, out=mask), 0)
        eq = ge - gt - rel_eq
        if ties == "pessimistic":
            r = 1 + gt + eq
        elif ties == "optimistic":
            r = 1 + gt
        else:  # index: only the tied irrelevant candidates with a lower index than c* count
            r = 1 + gt
            tied_rows = torch.nonzero(eq > 0).squeeze(1)
            if len(tied_rows):
                first = torch.full((b - a,), n_cols, dtype=torch.int64, device=dev).scatter_reduce_(
                    0, lr, torch.where(is_best, lc, n_cols), "amin"
                )
                sub = s[tied_rows]
                before = _count((sub == thr[tied_rows]) & (col_index[None, :] < first[tied_rows, None]), 1)
                r[tied_rows] += before.long()  # no relevant candidate at score s* lies before c*
        ranks[a:b] = r
        tied[a:b] = eq
        if col_side:
            col_gt += above
            inside = at_least_lo - above
            band_cols = torch.nonzero(inside).squeeze(1)
            if len(band_cols):
                sub = s[:, band_cols]
                keep = (sub >= lo[:, band_cols]) & (sub <= hi[:, band_cols])
                rr, kk = torch.nonzero(keep, as_tuple=True)
                band_size += len(rr)
                if band_size > band_cap:  # too many near-ties to keep: t2i gets its own pass
                    col_side = False
                    band_parts = []
                    continue
                band_parts.append((rr + a, band_cols[kk], sub[rr, kk]))
    assert pair_vals is not None
    result = _PassResult(ranks, tied, pair_vals)
    if col_side:
        result.col_gt = col_gt
        if band_parts:
            result.band = tuple(torch.cat(x) for x in zip(*band_parts))  # type: ignore[assignment]
        else:
            empty = torch.empty(0, dtype=torch.int64, device=dev)
            result.band = (empty, empty, torch.empty(0, dtype=pair_vals.dtype, device=dev))
    return result


def _resolve_columns(
    res: _PassResult,
    rows: torch.Tensor,
    cols: torch.Tensor,
    n_rows: int,
    n_cols: int,
    bounds: tuple[torch.Tensor, torch.Tensor],
    ties: str,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """t2i ranks from the one pass's column counts and kept entries; None if the interval check fails."""
    dev = rows.device
    best = torch.full((n_cols,), -math.inf, dtype=res.pair_vals.dtype, device=dev).scatter_reduce_(
        0, cols, res.pair_vals, "amax"
    )
    lo, hi = bounds
    if not bool(((lo <= best) & (best <= hi)).all()):
        return None
    assert res.band is not None and res.col_gt is not None
    br, bc, bv = res.band
    # Drop the relevant pairs among the kept entries: keys row * n_cols + col against the sorted pair keys.
    pair_keys = torch.sort(rows * n_cols + cols).values
    keys = br * n_cols + bc
    pos = torch.searchsorted(pair_keys, keys).clamp_(max=max(len(pair_keys) - 1, 0))
    irrelevant = pair_keys[pos] != keys
    br, bc, bv = br[irrelevant], bc[irrelevant], bv[irrelevant]
    above = bv > best[bc]
    equal = bv == best[bc]
    gt = res.col_gt.clone().index_add_(0, bc, above.long())
    eq = torch.zeros(n_cols, dtype=torch.int64, device=dev).index_add_(0, bc, equal.long())
    if ties == "pessimistic":
        ranks = 1 + gt + eq
    elif ties == "optimistic":
        ranks = 1 + gt
    else:
        first = torch.full((n_cols,), n_rows, dtype=torch.int64, device=dev).scatter_reduce_(
            0, cols, torch.where(res.pair_vals == best[cols], rows, n_rows), "amin"
        )
        before = torch.zeros(n_cols, dtype=torch.int64, device=dev).index_add_(
            0, bc, (equal & (br < first[bc])).long()
        )
        ranks = 1 + gt + before
    return ranks, eq


def _evaluate(
    source: _Source,
    relevance: Sequence[Sequence[int]],
    ks: tuple[int, ...],
    ties: str,
    chunk_size: int | None,
    definitions: dict[str, str],
) -> RetrievalReport:
    n, m = source.n_rows, source.n_cols
    dev = source.device
    np_rows, np_cols = _pair_arrays(relevance)
    chunk = chunk_size or max(1, DEFAULT_BLOCK_ENTRIES // max(m, 1))
    chunk = min(chunk, max(n, 1))
    # The kept t2i entries always include the relevant pairs themselves (their score is s* or close).
    band_cap = len(np_rows) + max(chunk * m // 4, _BAND_MIN)
    rows = torch.from_numpy(np_rows).to(dev)
    cols = torch.from_numpy(np_cols).to(dev)
    ptr = np.concatenate([[0], np.cumsum([len(r) for r in relevance])]).astype(np.int64)
    with torch.inference_mode():
        bounds = source.column_bounds(rows, cols, m)
        res = _rank_pass(source.block, n, m, ptr, rows, cols, ties, chunk, bounds, band_cap)
        t2i = None
        if bounds is not None and res.band is not None:
            t2i = _resolve_columns(res, rows, cols, n, m, bounds, ties)
        method = "one pass"
        if t2i is None:  # second pass: captions as queries over image candidates (exact, one more matmul)
            method = "second pass"
            order = np.lexsort((np_rows, np_cols))
            t_rows = torch.from_numpy(np_cols[order]).to(dev)
            t_cols = torch.from_numpy(np_rows[order]).to(dev)
            t_ptr = np.concatenate([[0], np.cumsum(np.bincount(np_cols, minlength=m))]).astype(np.int64)
            t_chunk = chunk_size or max(1, DEFAULT_BLOCK_ENTRIES // max(n, 1))
            t_res = _rank_pass(
                source.block_t, m, n, t_ptr, t_rows, t_cols, ties, min(t_chunk, max(m, 1)), None, 0
            )
            t2i = (t_res.ranks, t_res.tied)
    i2t_ranks = res.ranks.cpu().numpy()
    t2i_ranks = t2i[0].cpu().numpy()
    i2t_tied, t2i_tied = res.tied.cpu().numpy(), t2i[1].cpu().numpy()
    metrics = metrics_from_ranks(i2t_ranks, t2i_ranks, ks)
    metrics["i2t_tied_queries"] = int((i2t_tied > 0).sum())
    metrics["t2i_tied_queries"] = int((t2i_tied > 0).sum())
    tie_counts = {
        "i2t_tied_queries": metrics["i2t_tied_queries"],
        "t2i_tied_queries": metrics["t2i_tied_queries"],
        "i2t_tied_candidates": int(i2t_tied.sum()),
        "t2i_tied_candidates": int(t2i_tied.sum()),
    }
    defs = dict(DEFINITIONS)
    defs["ties"] = f"{ties}: {TIE_POLICIES[ties]}"
    defs.update(definitions)
    return RetrievalReport(
        metrics=metrics,
        i2t_ranks=i2t_ranks,
        t2i_ranks=t2i_ranks,
        ties=tie_counts,
        definitions=defs,
        ks=ks,
        tie_policy=ties,
        n_images=n,
        n_captions=m,
        n_pairs=len(np_rows),
        t2i_method=method,
    )


# --- public API -----------------------------------------------------------------------------------------


def evaluate_embeddings(
    image_emb: Any,
    text_emb: Any,
    relevance: Any,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    chunk_size: int | None = None,
    *,
    normalize: bool = False,
) -> RetrievalReport:
    """Exact retrieval metrics of a dual encoder from its embeddings.

    The score of image ``i`` and caption ``c`` is the dot product ``image_emb[i] · text_emb[c]``,
    computed in float32 (float64 if an input is float64; float16/bfloat16 are widened exactly). With
    ``normalize=True`` both sides are first L2-normalised (cosine similarity); by default they are used
    as given. Torch tensors (any device: CUDA inputs are evaluated on their device) or NumPy arrays.

    Args:
        image_emb: ``[N, D]`` image embeddings.
        text_emb: ``[M, D]`` caption embeddings.
        relevance: ``relevance[i]`` = caption ids of image ``i`` (or an :class:`ImageTextPairs`).
        ks: the K of R@K.
        ties: ``"pessimistic"``, ``"optimistic"`` or ``"index"`` (see the module docstring).
        chunk_size: image rows per block (None: about 8M scores, 32 MB of float32, per block).

    >>> import torch
    >>> img = torch.eye(3)
    >>> rep = evaluate_embeddings(img, torch.cat([img, img]), [[0, 3], [1, 4], [2, 5]], ks=(1,))
    >>> rep.metrics["rsum"]
    200.0
    """
    ks, ties, chunk_size = _check_ks(ks), _check_ties(ties), _check_chunk(chunk_size)
    q, c = _as_tensor(image_emb, "image_emb"), _as_tensor(text_emb, "text_emb")
    if q.dim() != 2 or c.dim() != 2:
        raise DataError(
            f"embeddings must be 2-D [n, dim]; got image_emb {tuple(q.shape)} and text_emb {tuple(c.shape)}",
            fix="stack the embeddings into matrices",
        )
    if q.shape[1] != c.shape[1]:
        raise DataError(
            f"embedding widths differ: image_emb is {q.shape[1]}-d, text_emb is {c.shape[1]}-d",
            fix="project both towers to the same dimension",
        )
    if len(q) == 0 or len(c) == 0:
        raise DataError(
            f"nothing to evaluate: {len(q)} images and {len(c)} captions",
            fix="give at least one image and one caption",
        )
    if q.device != c.device:
        raise DataError(
            f"image_emb is on {q.device} and text_emb on {c.device}", fix="put both on one device"
        )
    rel = _relevance_list(relevance)
    check_relevance(rel, len(c), len(q), what="relevance")
    dtype = _compute_dtype(q, c)
    q, c = q.to(dtype), c.to(dtype)
    for t, name in ((q, "image_emb"), (c, "text_emb")):
        # A NaN/inf makes the sum NaN/inf; only then look for the row (a finite overflow finds none).
        if not math.isfinite(float(t.sum())) and not bool(torch.isfinite(t).all()):
            raise DataError(
                f"{name} row {_first_bad_row(t)} has NaN or inf",
                where=name,
                fix="check the encoder's output (a diverged model or a bad input)",
            )
    if normalize:
        for t, name in ((q, "image_emb"), (c, "text_emb")):
            norms = t.norm(dim=1)
            if bool((norms == 0).any()):
                raise DataError(
                    f"{name} row {int(torch.nonzero(norms == 0)[0, 0])} is all zeros and cannot be "
                    "normalised",
                    where=name,
                    fix="drop it or use normalize=False",
                )
        q = q / q.norm(dim=1, keepdim=True)
        c = c / c.norm(dim=1, keepdim=True)
    source = _EmbeddingSource(q, c)
    sim = (
        f"dot product of the {'L2-normalised (cosine)' if normalize else 'given (not normalised)'} embeddings"
    )
    return _evaluate(
        source,
        rel,
        ks,
        ties,
        chunk_size,
        {"similarity": f"{sim}, computed in {str(dtype).replace('torch.', '')}"},
    )


def evaluate_scores(
    score_matrix: Any,
    relevance: Any,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    chunk_size: int | None = None,
) -> RetrievalReport:
    """Exact retrieval metrics from a given ``[N images, M captions]`` score matrix (e.g. a cross encoder).

    Same definitions and arguments as :func:`evaluate_embeddings`; higher score = more similar. Scores
    are compared in float32 (float64 for float64 input); the matrix is read one block at a time.

    >>> rep = evaluate_scores([[1.0, 1.0], [0.0, 1.0]], [[1], [0]], ks=(1,), ties="optimistic")
    >>> rep.i2t_ranks.tolist(), rep.ties["i2t_tied_queries"]
    ([1, 2], 1)
    """
    ks, ties, chunk_size = _check_ks(ks), _check_ties(ties), _check_chunk(chunk_size)
    s = _as_tensor(score_matrix, "score_matrix")
    if s.dim() != 2:
        raise DataError(
            f"score_matrix must be 2-D [n_images, n_captions], got shape {tuple(s.shape)}",
            fix="give one row of caption scores per image",
        )
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise DataError(
            f"nothing to evaluate: score_matrix has shape {tuple(s.shape)}",
            fix="give at least one image and one caption",
        )
    rel = _relevance_list(relevance)
    check_relevance(rel, s.shape[1], s.shape[0], what="relevance")
    dtype = _compute_dtype(s)
    return _evaluate(
        _ScoreSource(s, dtype),
        rel,
        ks,
        ties,
        chunk_size,
        {"similarity": f"the given score matrix, compared in {str(dtype).replace('torch.', '')}"},
    )


# --- sanity checks --------------------------------------------------------------------------------------


def _inverse_counts(relevance: Sequence[Sequence[int]], n_captions: int) -> np.ndarray:
    _, cols = _pair_arrays(relevance)
    return np.bincount(cols, minlength=n_captions)


def chance_metrics(relevance: Any, n_captions: int, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Expected metrics of random scores (every ranking equally likely), exactly.

    A query with ``r`` relevant among ``n`` candidates has a hit in the top K with probability
    ``1 - C(n - r, K) / C(n, K)``; R@K is its mean over queries, in percent. Its expected rank is
    ``1 + (n - r) / (r + 1)`` (each irrelevant candidate beats all ``r`` relevant ones with chance
    ``1 / (r + 1)``), reported as ``*_meanr``.

    >>> chance_metrics([[0], [1]], 2, ks=(1,))["i2t_R@1"]
    50.0
    """
    ks = _check_ks(ks)
    rel = _relevance_list(relevance)
    check_relevance(rel, n_captions, None, what="relevance")
    n_images = len(rel)
    per_dir = {
        "i2t": (np.array([len(r) for r in rel]), n_captions),
        "t2i": (_inverse_counts(rel, n_captions), n_images),
    }
    out: dict[str, float] = {}
    for d, (r_counts, n) in per_dir.items():
        values, counts = np.unique(r_counts, return_counts=True)
        for k in ks:
            p = sum(
                w * (1.0 - math.comb(n - r, k) / math.comb(n, k))
                for r, w in zip(values.tolist(), counts.tolist())
            )
            out[f"{d}_R@{k}"] = float(100.0 * p / counts.sum())
        out[f"{d}_meanr"] = float(
            sum(w * (1 + (n - r) / (r + 1)) for r, w in zip(values.tolist(), counts.tolist())) / counts.sum()
        )
    out["rsum"] = float(sum(out[f"{d}_R@{k}"] for d in per_dir for k in ks))
    return out


def _chance_hit_probs(counts: np.ndarray, n: int, k: int) -> np.ndarray:
    table = {r: 1.0 - math.comb(n - r, k) / math.comb(n, k) for r in np.unique(counts).tolist()}
    return np.array([table[r] for r in counts.tolist()])


class _OracleSource(_Source):
    """Score 1 for relevant pairs and 0 otherwise, made block by block (no dense matrix)."""

    def __init__(self, relevance: Sequence[Sequence[int]], n_captions: int):
        rows, cols = _pair_arrays(relevance)
        self.rows, self.cols = torch.from_numpy(rows), torch.from_numpy(cols)
        self.n_rows, self.n_cols = len(relevance), n_captions
        self.dtype, self.device = torch.float32, torch.device("cpu")
        self.ptr = np.concatenate([[0], np.cumsum([len(r) for r in relevance])]).astype(np.int64)

    def block(self, a, b):
        s = torch.zeros(b - a, self.n_cols)
        p0, p1 = int(self.ptr[a]), int(self.ptr[b])
        s[self.rows[p0:p1] - a, self.cols[p0:p1]] = 1.0
        return s

    def block_t(self, a, b):
        s = torch.zeros(b - a, self.n_rows)
        keep = (self.cols >= a) & (self.cols < b)
        s[self.cols[keep] - a, self.rows[keep]] = 1.0
        return s

    def column_bounds(self, rows, cols, n_cols):
        ones = torch.ones(n_cols)
        return ones, ones.clone()


def oracle_report(
    relevance: Any, n_captions: int, ks: Sequence[int] = (1, 5, 10), chunk_size: int | None = None
) -> RetrievalReport:
    """The report of a perfect scorer (1 for relevant pairs, 0 otherwise): every R@K must be 100."""
    ks = _check_ks(ks)
    rel = _relevance_list(relevance)
    check_relevance(rel, n_captions, None, what="relevance")
    return _evaluate(
        _OracleSource(rel, n_captions),
        rel,
        ks,
        "pessimistic",
        _check_chunk(chunk_size),
        {"similarity": "oracle: 1 for relevant pairs, 0 otherwise"},
    )


def sanity_check(
    relevance: Any,
    n_captions: int,
    ks: Sequence[int] = (1, 5, 10),
    *,
    seed: int = 0,
    dim: int = 64,
    max_z: float = 5.0,
) -> dict[str, Any]:
    """Check the evaluator on this relevance map: an oracle gives 100, random scores give chance.

    Random scores are dot products of seeded Gaussian embeddings: for a fixed query the candidates'
    scores are i.i.d. and continuous, so every ranking is equally likely and :func:`chance_metrics`
    is the exact expectation. Observed R@K is compared with it in standard errors
    (``sqrt(sum_q p_q (1 - p_q)) / n``, treating queries as independent); ``random_ok`` if every
    ``|z| <= max_z``.
    """
    ks = _check_ks(ks)
    rel = _relevance_list(relevance)
    check_relevance(rel, n_captions, None, what="relevance")
    n_images = len(rel)
    oracle = oracle_report(rel, n_captions, ks)
    gen = torch.Generator().manual_seed(int(seed))
    img = torch.randn(n_images, dim, generator=gen)
    txt = torch.randn(n_captions, dim, generator=gen)
    rand = evaluate_embeddings(img, txt, rel, ks=ks)
    expected = chance_metrics(rel, n_captions, ks)
    counts = {
        "i2t": (np.array([len(r) for r in rel]), n_captions),
        "t2i": (_inverse_counts(rel, n_captions), n_images),
    }
    z: dict[str, float] = {}
    for d, (r_counts, n) in counts.items():
        for k in ks:
            p = _chance_hit_probs(r_counts, n, k)
            se = 100.0 * math.sqrt(float((p * (1 - p)).sum())) / len(p)
            diff = rand.metrics[f"{d}_R@{k}"] - expected[f"{d}_R@{k}"]
            z[f"{d}_R@{k}"] = float(diff / se) if se > 0 else (0.0 if abs(diff) < 1e-9 else math.inf)
    oracle_ok = all(oracle.metrics[f"{d}_R@{k}"] == 100.0 for d in ("i2t", "t2i") for k in ks)
    return {
        "oracle": {k: v for k, v in oracle.metrics.items() if "R@" in k or k == "rsum"},
        "oracle_ok": oracle_ok,
        "random": {k: v for k, v in rand.metrics.items() if "R@" in k or k == "rsum" or "meanr" in k},
        "chance": expected,
        "random_z": z,
        "random_ok": all(abs(v) <= max_z for v in z.values()),
    }
