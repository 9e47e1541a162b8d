"""Evaluate any image–text scorer on probe items, with blind baselines and the grounded gap.

**Scoring.** Each item's images are scored against its options through the scorer contract only: a
dual encoder's ``score(images, texts)`` on blocks of items (one matrix, the item blocks read off its
diagonal), any other scorer's ``score_pairs`` on the flattened (image, option) pairs. Scores are compared,
never transformed (no softmax over ``itm_probability`` scores; they are checked to lie in [0, 1]).

**Judging an item** (``s`` = its scores):

* choice item: right iff the correct option's score is *strictly* above every other (a tie is wrong,
  and counted in the tie rate — a model blind to word order ties on every shuffle and scores 0%, not
  100% as in the released SNARE code). The one exception is a blind *heuristic* baseline, which declares
  ``tie_credit = "expected"``: a tie among ``k`` top options including the correct one earns ``1/k``, its
  expected accuracy under random tie-breaking (so the bar a model must clear is not lowered by ties).
  The *winner* is the kind of the top option (``tie`` when shared); pairwise accuracy per distractor
  kind is the share of items where the correct option beats that kind.
* pair item (Winoground): text score ``s[0,c0] > s[0,c1] ∧ s[1,c1] > s[1,c0]``; image score
  ``s[0,c0] > s[1,c0] ∧ s[1,c1] > s[0,c1]``; group score = both. Chance 25%, 25%, 16.7%.
* preference item: the share of items where option ``correct`` is strictly preferred (not an accuracy:
  every option is true).

**Summaries**: per task and per category (categories under 25 items stay inside the task total) —
accuracy with a 95% percentile-bootstrap CI over items, chance (mean of 1/#options), tie rate, the
winner distribution and pairwise accuracies.

**Blind baselines, through the same harness**: the model's text side alone, with every image replaced by
a null (black) image, the mean probe image, or another item's image (a seeded derangement); and the
heuristics of :mod:`alignlab.probe.baselines` (never pick *not*, pick the shorter, unigram LM).
**Grounded gap** = model accuracy − the best blind accuracy on the same items, with a paired bootstrap CI
and a paired randomization test over items.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from alignlab.core.errors import ModelError
from alignlab.core.progress import progress
from alignlab.core.stats import bootstrap_ci, paired_bootstrap, paired_randomization_test
from alignlab.data.images import stack_images
from alignlab.probe.baselines import HEURISTICS, IMAGE_BLINDS, heuristic_scorer
from alignlab.probe.items import MIN_CATEGORY_ITEMS, TASK_TITLES, TASKS, ProbeItem, ProbeSet, load_item_images

DEFINITIONS = {
    "acc_pct": "share of items whose correct option scores strictly highest, in %; ties count as wrong",
    "tie_rate_pct": (
        "share of items whose top score is shared by two or more options (pairs: any tied comparison)"
    ),
    "chance_pct": "expected accuracy of uniform random scores: mean of 1/#options (pairs: 25/25/16.7)",
    "ci": "95% percentile bootstrap over items",
    "winners": "share of items won by each option kind (tie: top score shared)",
    "pairwise": "share of items where the correct option scores strictly above every option of that kind",
    "gap_pct": "grounded gap: model accuracy minus the best blind baseline's accuracy on the same items",
    "pairs": "Winoground scores: text (right caption for each image), image (right image for each caption), "
    "group (both)",
    "preference": "share of preference items (all options true) where the model strictly prefers the more "
    "specific option",
}


@dataclass
class ItemResult:
    id: str
    task: str
    category: str
    format: str
    scoring: str
    correct: float  # choice: 1 for a strict win of the correct option (1/k for a k-way tie under expected
    # tie credit); pair: group score
    tie: bool
    chance: float
    winner: str = ""
    pairwise: dict[str, float] = field(default_factory=dict)
    text: bool | None = None
    image: bool | None = None
    scores: list[list[float]] = field(default_factory=list)
    preferred_kind: str | None = None


# --- scoring ----------------------------------------------------------------------------------------


def _batch(images: list[Image.Image]) -> Any:
    """A uint8 tensor when every image has the same size (a list of Pillow images otherwise)."""
    if images and len({im.size for im in images}) == 1:
        return stack_images(images)
    return images


def _as_array(scores: Any) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        return scores.detach().to("cpu", torch.float64).numpy()
    return np.asarray(scores, dtype=np.float64)


def _bad_shape(model: Any, ps: ProbeSet, item: ProbeItem, shape: tuple, want: tuple) -> ModelError:
    return ModelError(
        f"{getattr(model, 'name', type(model).__name__)} returned scores of shape {shape} for item "
        f"{item.id!r} ({len(item.images)} image(s) x {len(item.options)} options), expected {want}",
        where=ps.where(item),
        fix="score(images, texts) must return one score per (image, text) "
        "pair; score_pairs one per aligned pair",
    )


def _score_one(
    model: Any, ps: ProbeSet, item: ProbeItem, images: list[Image.Image], dual: bool
) -> np.ndarray:
    n, m = len(images), len(item.options)
    if dual:
        s = _as_array(model.score(_batch(images), list(item.options)))
        if s.shape != (n, m):
            raise _bad_shape(model, ps, item, s.shape, (n, m))
        return s
    imgs = [im for im in images for _ in item.options]
    s = _as_array(model.score_pairs(_batch(imgs), [o for _ in images for o in item.options]))
    if s.shape != (n * m,):
        raise _bad_shape(model, ps, item, s.shape, (n * m,))
    return s.reshape(n, m)


def _check_values(model: Any, ps: ProbeSet, item: ProbeItem, s: np.ndarray) -> None:
    if not np.isfinite(s).all():
        raise ModelError(
            f"non-finite scores for item {item.id!r}",
            where=ps.where(item),
            fix="check the model weights and inputs",
        )
    if getattr(model, "score_semantics", None) == "itm_probability" and ((s < 0) | (s > 1)).any():
        raise ModelError(
            f"the model declares itm_probability scores but returned values outside [0, 1] for item "
            f"{item.id!r}",
            where=ps.where(item),
            fix="declare score_semantics 'logit'",
        )


def score_items(
    model: Any, ps: ProbeSet, images: Sequence[list[Image.Image]], *, chunk: int = 64, desc: str | None = None
) -> list[np.ndarray]:
    """Scores ``[n_images, n_options]`` of every item of ``ps`` (``images[k]``: item k's images)."""
    items = ps.items
    dual = bool(getattr(model, "is_dual", False))
    if hasattr(model, "eval"):
        model.eval()
    out: list[np.ndarray] = []
    starts = range(0, len(items), chunk)
    for start in progress(starts, total=len(starts), desc=desc or "scoring probe items", unit="chunk"):
        block = list(range(start, min(len(items), start + chunk)))
        try:
            with torch.no_grad():
                part = _score_block(model, [items[k] for k in block], [images[k] for k in block], dual)
        except _ShapeMismatch:
            # Find the first item that the model scores with the wrong shape, to name it and its line.
            for k in block:
                _score_one(model, ps, items[k], images[k], dual)
            raise ModelError(
                f"the model returned scores of the wrong shape for the block of items starting at "
                f"{items[block[0]].id!r}",
                where=ps.where(items[block[0]]),
                fix="score(images, texts) must return one score per (image, text) pair",
            ) from None
        for k, s in zip(block, part, strict=True):
            _check_values(model, ps, items[k], s)
            out.append(s)
    return out


class _ShapeMismatch(Exception):
    pass


def _score_block(
    model: Any, items: list[ProbeItem], images: list[list[Image.Image]], dual: bool
) -> list[np.ndarray]:
    if dual:
        flat_imgs = [im for ims in images for im in ims]
        texts = [o for it in items for o in it.options]
        s = _as_array(model.score(_batch(flat_imgs), texts))
        if s.shape != (len(flat_imgs), len(texts)):
            raise _ShapeMismatch
        out, r, c = [], 0, 0
        for it, ims in zip(items, images, strict=True):
            out.append(s[r : r + len(ims), c : c + len(it.options)])
            r += len(ims)
            c += len(it.options)
        return out
    pair_imgs = [im for it, ims in zip(items, images, strict=True) for im in ims for _ in it.options]
    pair_txt = [o for it, ims in zip(items, images, strict=True) for _ in ims for o in it.options]
    s = _as_array(model.score_pairs(_batch(pair_imgs), pair_txt))
    if s.shape != (len(pair_txt),):
        raise _ShapeMismatch
    out, p = [], 0
    for it, ims in zip(items, images, strict=True):
        n = len(ims) * len(it.options)
        out.append(s[p : p + n].reshape(len(ims), len(it.options)))
        p += n
    return out


# --- judging ----------------------------------------------------------------------------------------


def judge(item: ProbeItem, s: np.ndarray, tie_credit: str = "none") -> ItemResult:
    """The verdict on one item from its scores (see the module docstring).

    ``tie_credit="expected"`` (blind heuristics only) gives a k-way tie that includes the correct option
    1/k instead of 0, and a tied pairwise comparison 1/2.
    """
    base = dict(
        id=item.id,
        task=item.task,
        category=item.category,
        format=item.format,
        scoring=item.scoring,
        scores=s.tolist(),
    )
    if item.format == "pair":
        c0, c1 = item.correct
        text_cmp = [(s[0, c0], s[0, c1]), (s[1, c1], s[1, c0])]
        image_cmp = [(s[0, c0], s[1, c0]), (s[1, c1], s[0, c1])]
        text = all(a > b for a, b in text_cmp)
        image = all(a > b for a, b in image_cmp)
        tie = any(a == b for a, b in text_cmp + image_cmp)
        return ItemResult(
            **base, correct=float(text and image), tie=tie, chance=1 / 6, text=text, image=image
        )
    row = s[0]
    c = item.correct
    top = row.max()
    winners = np.flatnonzero(row == top)
    tie = len(winners) > 1
    expected = tie_credit == "expected"
    if not tie:
        right = float(int(winners[0]) == c)
    else:
        right = 1.0 / len(winners) if expected and c in winners else 0.0
    kinds = [item.kind(j) for j in range(len(row))]
    pairwise: dict[str, float] = {}
    for j, k in enumerate(kinds):
        if j != c:
            won = 1.0 if row[c] > row[j] else (0.5 if expected and row[c] == row[j] else 0.0)
            pairwise[k] = min(pairwise.get(k, 1.0), won)
    return ItemResult(
        **base,
        correct=right,
        tie=tie,
        chance=1 / len(row),
        winner="tie" if tie else kinds[winners[0]],
        pairwise=pairwise,
        preferred_kind=kinds[c] if item.scoring == "preference" else None,
    )


# --- summaries --------------------------------------------------------------------------------------


def _ci(values: Sequence[float], bootstrap: int, seed: int) -> dict[str, float]:
    ci = bootstrap_ci(np.asarray(values, dtype=float), n_resamples=bootstrap, seed=seed)
    return {"ci_low": 100 * ci["ci_low"], "ci_high": 100 * ci["ci_high"]}


def _acc_stats(rs: list[ItemResult], bootstrap: int, seed: int) -> dict[str, Any]:
    correct = [r.correct for r in rs]
    winners = Counter(r.winner for r in rs)
    kinds = sorted({k for r in rs for k in r.pairwise})
    out = {
        "n": len(rs),
        "acc_pct": 100 * float(np.mean(correct)),
        **_ci(correct, bootstrap, seed),
        "chance_pct": 100 * float(np.mean([r.chance for r in rs])),
        "tie_rate_pct": 100 * float(np.mean([r.tie for r in rs])),
        "winners": {k: 100 * v / len(rs) for k, v in sorted(winners.items())},
        "pairwise": {k: 100 * float(np.mean([r.pairwise[k] for r in rs if k in r.pairwise])) for k in kinds},
    }
    return out


def _pair_stats(rs: list[ItemResult], bootstrap: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rs), "tie_rate_pct": 100 * float(np.mean([r.tie for r in rs]))}
    for name, vals, chance in (
        ("text", [r.text for r in rs], 25.0),
        ("image", [r.image for r in rs], 25.0),
        ("group", [r.correct for r in rs], 100 / 6),
    ):
        ci = _ci(vals, bootstrap, seed)
        out[name] = {
            "pct": 100 * float(np.mean(vals)),
            "ci_low": ci["ci_low"],
            "ci_high": ci["ci_high"],
            "chance_pct": chance,
        }
    return out


def _pref_stats(rs: list[ItemResult], bootstrap: int, seed: int) -> dict[str, Any]:
    vals = [r.correct for r in rs]
    winners = Counter(r.winner for r in rs)
    return {
        "n": len(rs),
        "preferred_kind": rs[0].preferred_kind,
        "prefer_pct": 100 * float(np.mean(vals)),
        **_ci(vals, bootstrap, seed),
        "tie_rate_pct": 100 * float(np.mean([r.tie for r in rs])),
        "winners": {k: 100 * v / len(rs) for k, v in sorted(winners.items())},
    }


def _by_category(rs: list[ItemResult], fn: Callable, bootstrap: int, seed: int) -> tuple[dict, dict]:
    cats: dict[str, list[ItemResult]] = {}
    for r in rs:
        cats.setdefault(r.category, []).append(r)
    big = {c: fn(v, bootstrap, seed) for c, v in sorted(cats.items()) if len(v) >= MIN_CATEGORY_ITEMS}
    small = {c: len(v) for c, v in sorted(cats.items()) if len(v) < MIN_CATEGORY_ITEMS}
    return big, ({"categories": small, "n_items": sum(small.values())} if small else {})


def summarize_results(results: list[ItemResult], bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per-task (and per-category) statistics of judged items."""
    tasks: dict[str, Any] = {}
    for task in TASKS:
        rs = [r for r in results if r.task == task]
        if not rs:
            continue
        entry: dict[str, Any] = {"n_items": len(rs)}
        acc = [r for r in rs if r.format == "choice" and r.scoring == "accuracy"]
        if acc:
            entry["accuracy"] = _acc_stats(acc, bootstrap, seed)
            entry["categories"], small = _by_category(acc, _acc_stats, bootstrap, seed)
            if small:
                entry["small_categories"] = small
        pairs = [r for r in rs if r.format == "pair"]
        if pairs:
            cats, _ = _by_category(pairs, _pair_stats, bootstrap, seed)
            entry["pairs"] = {
                "all": _pair_stats(pairs, bootstrap, seed),
                **{f"category:{c}": v for c, v in cats.items()},
            }
        pref = [r for r in rs if r.scoring == "preference"]
        if pref:
            cats: dict[str, list[ItemResult]] = {}
            for r in pref:
                cats.setdefault(r.category, []).append(r)
            entry["preference"] = {c: _pref_stats(v, bootstrap, seed) for c, v in sorted(cats.items())}
        tasks[task] = entry
    return tasks


# --- blinds and the whole probe run -----------------------------------------------------------------


def load_all_images(ps: ProbeSet, desc: str = "loading probe images") -> list[list[Image.Image]]:
    return [
        load_item_images(ps, it) for it in progress(ps.items, total=len(ps.items), desc=desc, unit="item")
    ]


def blind_images(kind: str, images: Sequence[list[Image.Image]], seed: int = 0) -> list[list[Image.Image]]:
    """Every image of every item replaced by one uninformative image: ``null_image`` (black),
    ``mean_image`` (the pixel mean of all probe images) or ``shuffled_image`` (another item's first image,
    by a seeded derangement). Both images of a pair item get the same one, so a pair stays blind."""
    n = len(images)
    if kind == "null_image":
        return [[Image.new("RGB", ims[0].size, (0, 0, 0))] * len(ims) for ims in images]
    if kind == "mean_image":
        size = images[0][0].size
        acc = np.zeros((size[1], size[0], 3), dtype=np.float64)
        count = 0
        for ims in images:
            for im in ims:
                acc += np.asarray(im.resize(size, Image.BICUBIC) if im.size != size else im, dtype=np.float64)
                count += 1
        mean = Image.fromarray(np.clip(np.round(acc / count), 0, 255).astype(np.uint8))
        return [
            [mean if ims[0].size == size else mean.resize(ims[0].size, Image.BICUBIC)] * len(ims)
            for ims in images
        ]
    if kind == "shuffled_image":
        if n < 2:
            raise ModelError("the shuffled-image baseline needs at least 2 items")
        perm = np.random.default_rng(seed).permutation(n)
        for k in range(n):  # remove fixed points: an item never keeps its own image
            if perm[k] == k:
                j = (k + 1) % n
                perm[k], perm[j] = perm[j], perm[k]
        return [[images[int(perm[k])][0]] * len(images[k]) for k in range(n)]
    raise ModelError(f"unknown image baseline {kind!r}", fix=f"use one of: {', '.join(IMAGE_BLINDS)}")


def evaluate_scorer(
    model: Any,
    ps: ProbeSet,
    images: Sequence[list[Image.Image]],
    *,
    bootstrap: int = 2000,
    seed: int = 0,
    desc: str | None = None,
) -> dict[str, Any]:
    """Score, judge and summarize one system: ``{"tasks": ..., "per_item": {id: ItemResult}}``."""
    scores = score_items(model, ps, images, desc=desc)
    credit = getattr(model, "tie_credit", "none")
    results = [judge(it, s, credit) for it, s in zip(ps.items, scores, strict=True)]
    return {"tasks": summarize_results(results, bootstrap, seed), "per_item": {r.id: r for r in results}}


def _vector(per_item: dict[str, ItemResult], ids: list[str]) -> np.ndarray:
    return np.array([per_item[i].correct for i in ids], dtype=float)


def grounded_gaps(
    model_run: dict[str, Any],
    blinds: dict[str, dict[str, Any]],
    ps: ProbeSet,
    bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per task: the best blind baseline and ``model − best blind`` (with paired CI and p), for accuracy items
    and for Winoground pairs (group score); per category: the gap without CI."""
    out: dict[str, Any] = {}
    for task, entry in model_run["tasks"].items():
        g: dict[str, Any] = {}
        for part, select in (
            ("accuracy", lambda it: it.format == "choice" and it.scoring == "accuracy"),
            ("pairs", lambda it: it.format == "pair"),
        ):
            ids = [it.id for it in ps.items if it.task == task and select(it)]
            if not ids or not blinds:
                continue
            model_acc = 100 * float(_vector(model_run["per_item"], ids).mean())
            blind_acc = {b: 100 * float(_vector(r["per_item"], ids).mean()) for b, r in blinds.items()}
            best = max(blind_acc, key=lambda b: (blind_acc[b], b))
            bvec, mvec = _vector(blinds[best]["per_item"], ids), _vector(model_run["per_item"], ids)
            pb = paired_bootstrap(bvec, mvec, n_resamples=bootstrap, seed=seed)
            g[part] = {
                "model_pct": model_acc,
                "best_blind": best,
                "best_blind_pct": blind_acc[best],
                "gap_pct": model_acc - blind_acc[best],
                "ci_low": 100 * pb["ci_low"],
                "ci_high": 100 * pb["ci_high"],
                "p": paired_randomization_test(bvec, mvec, seed=seed),
                "blinds_pct": blind_acc,
                "n": len(ids),
            }
        cats: dict[str, Any] = {}
        for cat in entry.get("categories", {}):
            ids = [it.id for it in ps.items if it.task == task and it.category == cat]
            m = 100 * float(_vector(model_run["per_item"], ids).mean())
            b = {name: 100 * float(_vector(r["per_item"], ids).mean()) for name, r in blinds.items()}
            if b:
                best = max(b, key=lambda k: (b[k], k))
                cats[cat] = {
                    "model_pct": m,
                    "best_blind": best,
                    "best_blind_pct": b[best],
                    "gap_pct": m - b[best],
                }
        if cats:
            g["categories"] = cats
        out[task] = g
    return out


@dataclass
class BlindCache:
    """Heuristic baselines do not depend on the model: evaluate them once per probe set and reuse."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_probe(
    model: Any,
    ps: ProbeSet,
    *,
    blinds: Sequence[str] = (*IMAGE_BLINDS, *HEURISTICS),
    lm_captions: Sequence[str] | None = None,
    bootstrap: int = 2000,
    seed: int = 0,
    images: Sequence[list[Image.Image]] | None = None,
    cache: BlindCache | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """The model, each blind baseline, and the grounded gaps on one probe set.

    Returns ``{"model", "blinds", "gaps", "definitions", "data", "score_semantics"}`` where ``model`` and
    each ``blinds[name]`` are :func:`evaluate_scorer` outputs. ``unigram_lm`` is skipped (and listed in
    ``skipped``) when no ``lm_captions`` are given.
    """
    images = images if images is not None else load_all_images(ps)
    name = model_name or getattr(model, "name", type(model).__name__)
    model_run = evaluate_scorer(model, ps, images, bootstrap=bootstrap, seed=seed, desc=f"probing {name}")
    blind_runs: dict[str, dict[str, Any]] = {}
    skipped = []
    for b in blinds:
        if b in IMAGE_BLINDS:
            blind_runs[b] = evaluate_scorer(
                model,
                ps,
                blind_images(b, images, seed),
                bootstrap=bootstrap,
                seed=seed,
                desc=f"{name} with {b.replace('_', ' ')}",
            )
        elif b in HEURISTICS:
            if b == "unigram_lm" and not lm_captions:
                skipped.append(b)
                continue
            if cache is not None and b in cache.runs:
                blind_runs[b] = cache.runs[b]
                continue
            blind_runs[b] = evaluate_scorer(
                heuristic_scorer(b, lm_captions, seed),
                ps,
                images,
                bootstrap=bootstrap,
                seed=seed,
                desc=f"baseline {b}",
            )
            if cache is not None:
                cache.runs[b] = blind_runs[b]
        else:
            raise ModelError(
                f"unknown blind baseline {b!r}", fix=f"use {', '.join((*IMAGE_BLINDS, *HEURISTICS))}"
            )
    return {
        "system": name,
        "score_semantics": getattr(model, "score_semantics", None),
        "data": ps.name,
        "items_sha256": ps.sha256,
        "n_items": len(ps.items),
        "model": model_run,
        "blinds": blind_runs,
        "gaps": grounded_gaps(model_run, blind_runs, ps, bootstrap, seed),
        "skipped_blinds": skipped,
        "definitions": DEFINITIONS,
    }


# --- outputs ----------------------------------------------------------------------------------------


def flat_metrics(run: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of a :func:`run_probe` result as one flat dict (for results.json ``metrics``)."""
    m: dict[str, float] = {}
    for task, entry in run["model"]["tasks"].items():
        if "accuracy" in entry:
            a = entry["accuracy"]
            m[f"{task}_acc_pct"] = a["acc_pct"]
            m[f"{task}_tie_rate_pct"] = a["tie_rate_pct"]
            m[f"{task}_chance_pct"] = a["chance_pct"]
        if "pairs" in entry:
            m[f"{task}_pairs_group_pct"] = entry["pairs"]["all"]["group"]["pct"]
        g = run["gaps"].get(task, {})
        if "accuracy" in g:
            m[f"{task}_gap_pct"] = g["accuracy"]["gap_pct"]
        if "pairs" in g:
            m[f"{task}_pairs_gap_pct"] = g["pairs"]["gap_pct"]
    return m


def strip_per_item(run: dict[str, Any]) -> dict[str, Any]:
    """``run`` without the per-item results (for JSON files; per-item results go to their own file)."""
    out = {k: v for k, v in run.items() if k not in ("model", "blinds")}
    out["model"] = {"tasks": run["model"]["tasks"]}
    out["blinds"] = {b: {"tasks": r["tasks"]} for b, r in run["blinds"].items()}
    return out


def per_item_records(run: dict[str, Any]) -> list[dict[str, Any]]:
    from dataclasses import asdict

    return [asdict(r) for r in run["model"]["per_item"].values()]


def _f(x: float) -> str:
    return f"{x:.1f}"


def format_report(run: dict[str, Any], title: str | None = None) -> str:
    """Markdown tables of a :func:`run_probe` result."""
    lines = [
        f"# {title or 'Probe results: ' + run['system']}",
        "",
        f"Items: {run['n_items']} ({run['data']}, SHA-256 {run['items_sha256'][:16]}…); scores: "
        f"{run['score_semantics']}; ties count as wrong. CIs: 95% bootstrap over items.",
        "",
        "| task | n | accuracy [95% CI] | chance | ties | best blind | blind acc | "
        "grounded gap [95% CI] | p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, entry in run["model"]["tasks"].items():
        if "accuracy" not in entry:
            continue
        a = entry["accuracy"]
        g = run["gaps"].get(task, {}).get("accuracy")
        gap = (
            f"{g['gap_pct']:+.1f} [{g['ci_low']:+.1f}, {g['ci_high']:+.1f}] | {g['p']:.3g}" if g else "— | —"
        )
        blind = f"{g['best_blind']} | {_f(g['best_blind_pct'])}" if g else "— | —"
        lines.append(
            f"| {TASK_TITLES[task]} | {a['n']} | "
            f"{_f(a['acc_pct'])} [{_f(a['ci_low'])}, {_f(a['ci_high'])}] | "
            f"{_f(a['chance_pct'])} | {_f(a['tie_rate_pct'])} | {blind} | {gap} |"
        )
    lines += [
        "",
        "## Categories",
        "",
        "| task | category | n | accuracy [95% CI] | chance | ties | best blind (acc) | gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, entry in run["model"]["tasks"].items():
        gc = run["gaps"].get(task, {}).get("categories", {})
        for cat, a in entry.get("categories", {}).items():
            g = gc.get(cat)
            lines.append(
                f"| {task} | {cat} | {a['n']} | {_f(a['acc_pct'])} [{_f(a['ci_low'])}, {_f(a['ci_high'])}] | "
                f"{_f(a['chance_pct'])} | {_f(a['tie_rate_pct'])} | "
                + (
                    f"{g['best_blind']} ({_f(g['best_blind_pct'])}) | {g['gap_pct']:+.1f} |"
                    if g
                    else "— | — |"
                )
            )
        if entry.get("small_categories"):
            s = entry["small_categories"]
            lines.append(
                f"| {task} | {len(s['categories'])} categories under {MIN_CATEGORY_ITEMS} items | "
                f"{s['n_items']} | (in the task total only) | | | | |"
            )
    lines += ["", "## Which option won (share of items, %)", ""]
    for task, entry in run["model"]["tasks"].items():
        if "accuracy" in entry:
            a = entry["accuracy"]
            won = ", ".join(f"{k} {_f(v)}" for k, v in a["winners"].items())
            pw = ", ".join(f"{k} {_f(v)}" for k, v in a["pairwise"].items())
            lines.append(f"- **{TASK_TITLES[task]}** — winners: {won}; correct option beats: {pw}")
    pair_rows = [(t, e["pairs"]) for t, e in run["model"]["tasks"].items() if "pairs" in e]
    if pair_rows:
        lines += [
            "",
            "## Counterfactual image pairs (Winoground scores, %)",
            "",
            "| task | n | text | image | group | ties | best blind group | gap |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for task, p in pair_rows:
            a = p["all"]
            g = run["gaps"].get(task, {}).get("pairs")
            lines.append(
                f"| {task} | {a['n']} | {_f(a['text']['pct'])} | {_f(a['image']['pct'])} | "
                f"{_f(a['group']['pct'])} [{_f(a['group']['ci_low'])}, {_f(a['group']['ci_high'])}] | "
                f"{_f(a['tie_rate_pct'])} | "
                + (
                    f"{g['best_blind']} ({_f(g['best_blind_pct'])}) | {g['gap_pct']:+.1f} |"
                    if g
                    else "— | — |"
                )
            )
        lines.append("")
        lines.append(
            "Chance: text 25, image 25, group 16.7. A scorer that ignores the image scores 0 on all three."
        )
    pref_rows = [
        (t, c, p) for t, e in run["model"]["tasks"].items() for c, p in e.get("preference", {}).items()
    ]
    if pref_rows:
        lines += [
            "",
            "## Preferences between true sentences (%)",
            "",
            "| task | category | n | prefers | share [95% CI] | ties |",
            "|---|---|---|---|---|---|",
        ]
        for task, cat, p in pref_rows:
            lines.append(
                f"| {task} | {cat} | {p['n']} | {p['preferred_kind']} | {_f(p['prefer_pct'])} "
                f"[{_f(p['ci_low'])}, {_f(p['ci_high'])}] | {_f(p['tie_rate_pct'])} |"
            )
    lines += [
        "",
        "## Blind baselines (accuracy %, same items)",
        "",
        "| baseline | " + " | ".join(TASK_TITLES[t] for t in run["model"]["tasks"]) + " |",
        "|---|" + "---|" * len(run["model"]["tasks"]),
    ]
    for b, r in run["blinds"].items():
        cells = [
            (_f(r["tasks"][t]["accuracy"]["acc_pct"]) if "accuracy" in r["tasks"].get(t, {}) else "—")
            for t in run["model"]["tasks"]
        ]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    if run.get("skipped_blinds"):
        lines.append(f"\nSkipped: {', '.join(run['skipped_blinds'])} (no training captions given).")
    return "\n".join(lines) + "\n"


def plot_run(run: dict[str, Any], out_dir: str | Path, prefix: str = "") -> list[Path]:
    """One bar chart per task: the model and every blind baseline (accuracy with 95% CI), chance as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, entry in run["model"]["tasks"].items():
        if "accuracy" not in entry:
            continue
        systems = [(run["system"], entry["accuracy"])]
        systems += [
            (b, r["tasks"][task]["accuracy"])
            for b, r in run["blinds"].items()
            if "accuracy" in r["tasks"].get(task, {})
        ]
        names = [s for s, _ in systems]
        vals = [a["acc_pct"] for _, a in systems]
        err = [
            [a["acc_pct"] - a["ci_low"] for _, a in systems],
            [a["ci_high"] - a["acc_pct"] for _, a in systems],
        ]
        fig, ax = plt.subplots(figsize=(max(4.5, 0.8 * len(names) + 1.5), 3.4))
        colours = ["#2a6fbb"] + ["#a0a0a0"] * (len(names) - 1)
        ax.bar(range(len(names)), vals, yerr=err, color=colours, capsize=3)
        ax.axhline(
            entry["accuracy"]["chance_pct"], color="#c0392b", linestyle="--", linewidth=1, label="chance"
        )
        ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        g = run["gaps"].get(task, {}).get("accuracy")
        sub = f"; grounded gap {g['gap_pct']:+.1f} pts" if g else ""
        ax.set_title(f"{TASK_TITLES[task]} (n={entry['accuracy']['n']}{sub})", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        p = out_dir / f"{prefix}{task}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
