"""``alignlab distill bench``: full-ranking time of a cross-encoder teacher and its students, side by side.

On one retrieval set (default 1,000 near-duplicate ShapesWorld images × 5,000 captions), in one process,
each model produces the score of every (image, caption) pair, which is what ranking both directions
needs:

* a **cross encoder** (teacher, shallow-cross student) runs its towers once per image and once per
  caption, then its fusion layers once per *pair*: ``N × C`` fused pairs. This is the cheapest way a
  cross encoder can rank (the towers are not re-run per pair), so the speed-up below is conservative;
* a **dual encoder** encodes ``N + C`` inputs and multiplies two matrices.

Reported per model: seconds, pairs fused or inputs encoded, the speed-up over the teacher, and R@K /
RSUM with the share of the teacher's RSUM kept. With ``teacher_rows=R < N`` a cross encoder is timed on
the first ``R`` image rows (all captions) and its full time extrapolated as ``t · N / R`` (its cost is
exactly linear in rows: every row does the same work); its R@K then comes from the *sub-gallery* of
those ``R`` images and their captions, and every model is also evaluated there, so the RSUM ratio
compares like with like.

Each model is timed after one warm-up call, with ``threads`` torch threads, by the CPU time of the
process (``time.process_time``) and by wall-clock time. The speed-up is the ratio of CPU times: on a
machine whose cores are shared with other jobs, wall time also counts the time spent waiting for a
core, which inflates both sides unevenly; with one thread on an idle machine the two agree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from alignlab.core.errors import ConfigError
from alignlab.data.pairs import ImageTextPairs
from alignlab.distill.dcd.miner import caption_states, has_states
from alignlab.models.base import CrossEncoder
from alignlab.retrieval.metrics import evaluate_embeddings, evaluate_scores


@dataclass
class BenchConfig:
    images: int = 1000
    captions_per_image: int = 5
    data: str = "neardup"  # neardup | shapes (plain ShapesWorld)
    seed: int = 0  # data seed (the test split's own generator streams)
    teacher_rows: int | None = None  # time cross encoders on the first R image rows and extrapolate
    threads: int | None = 1
    image_batch: int = 64  # images per tower pass
    pair_chunk: int = 4096  # fused pairs per forward pass of a cross encoder

    def __post_init__(self) -> None:
        if self.images < 2 or self.captions_per_image < 1:
            raise ValueError("need at least 2 images and 1 caption per image")
        if self.data not in ("neardup", "shapes"):
            raise ValueError(f"data must be neardup or shapes, got {self.data!r}")
        if self.teacher_rows is not None and not 1 <= self.teacher_rows <= self.images:
            raise ValueError(f"teacher_rows must be in [1, images], got {self.teacher_rows}")


def bench_set(cfg: BenchConfig, image_size: int = 64) -> ImageTextPairs:
    """``cfg.images`` test images with exactly ``cfg.captions_per_image`` captions each."""
    if cfg.data == "shapes":
        from alignlab.data.pairs import from_shapes
        from alignlab.data.shapes import ShapesConfig, ShapesWorld

        world = ShapesWorld(ShapesConfig(image_size=image_size, captions_per_image=cfg.captions_per_image))
        return from_shapes(world.generate(cfg.images, cfg.seed, "test"), name=f"shapes-test-{cfg.images}")
    from alignlab.distill.dcd.data import NearDupConfig, near_duplicate_pairs

    nd = NearDupConfig(
        image_size=image_size, captions_per_image=cfg.captions_per_image, min_captions=cfg.captions_per_image
    )
    n = -(-cfg.images // nd.group_size) * nd.group_size
    pairs = near_duplicate_pairs(n, cfg.seed, "test", nd, name=f"shapes-neardup-bench-{cfg.images}")
    return pairs.subset(range(cfg.images)) if n != cfg.images else pairs


def _is_cross(model: Any) -> bool:
    """A cross encoder with the training contract's states and fusion (towers once, fusion per pair)."""
    return isinstance(model, CrossEncoder) and has_states(model)


@torch.no_grad()
def cross_scores(model: Any, pairs: ImageTextPairs, rows: int, cfg: BenchConfig) -> torch.Tensor:
    """Scores ``[rows, C]``: towers once per image and per caption, fusion once per pair."""
    if hasattr(model, "eval"):
        model.eval()
    if not _is_cross(model):  # any other cross scorer: its own score(), image batch by image batch
        return (
            torch.cat(
                [
                    model.score(pairs.load_images(range(s, min(s + cfg.image_batch, rows))), pairs.captions)
                    for s in range(0, rows, cfg.image_batch)
                ]
            )
            .float()
            .cpu()
        )
    c = len(pairs.captions)
    txt = caption_states(model, list(pairs.captions))
    out = []
    per = max(1, cfg.pair_chunk // c)  # image rows per fusion pass
    for s in range(0, rows, cfg.image_batch):
        img = model.image_states(
            model.preprocess_images(pairs.load_images(range(s, min(s + cfg.image_batch, rows))))
        )
        for a in range(0, len(img), per):
            k = min(per, len(img) - a)
            blk = torch.arange(a, a + k)
            if k * c <= cfg.pair_chunk:
                out.append(
                    model.fuse_pairs(
                        img.select(blk.repeat_interleave(c)), txt.select(torch.arange(c).repeat(k))
                    ).view(k, c)
                )
                continue
            row = []  # more captions than one chunk: split the captions of each image
            for b in range(0, c, cfg.pair_chunk):
                cols = torch.arange(b, min(b + cfg.pair_chunk, c))
                row.append(
                    model.fuse_pairs(
                        img.select(blk.repeat_interleave(len(cols))), txt.select(cols.repeat(k))
                    ).view(k, len(cols))
                )
            out.append(torch.cat(row, dim=1))
    return torch.cat(out).float().cpu()


@torch.no_grad()
def dual_embeddings(model: Any, pairs: ImageTextPairs, cfg: BenchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(model, "eval"):
        model.eval()
    img = torch.cat(
        [
            model.encode_images(pairs.load_images(range(s, min(s + cfg.image_batch * 8, pairs.n_images))))
            for s in range(0, pairs.n_images, cfg.image_batch * 8)
        ]
    )
    txt = model.encode_texts(pairs.captions)
    return img.float().cpu(), txt.float().cpu()


def _sub_columns(pairs: ImageTextPairs, rows: int) -> list[int]:
    """Caption ids of the first ``rows`` images, in the order :meth:`ImageTextPairs.subset` renumbers them."""
    seen: dict[int, None] = {}
    for i in range(rows):
        for c in pairs.sources[i]:  # an image's own captions (truth relevance lists every true one)
            seen.setdefault(c, None)
    return list(seen)


def _warm_up(model: Any, pairs: ImageTextPairs, cfg: BenchConfig) -> None:
    tiny = pairs.subset(range(2))
    if getattr(model, "is_dual", False):
        dual_embeddings(model, tiny, cfg)
    else:
        cross_scores(model, tiny, 2, cfg)


def time_model(
    model: Any, pairs: ImageTextPairs, cfg: BenchConfig, rows: int | None = None
) -> dict[str, Any]:
    """Time one model's full ranking of ``pairs`` (cross encoders: on ``rows`` image rows, extrapolated)."""
    n, c = pairs.n_images, pairs.n_captions
    _warm_up(model, pairs, cfg)
    if getattr(model, "is_dual", False):
        t0, c0 = time.perf_counter(), time.process_time()
        img, txt = dual_embeddings(model, pairs, cfg)
        scale = float(getattr(model, "score_scale", 1.0))
        scores = scale * img @ txt.T
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        report = evaluate_embeddings(img, txt, pairs.relevance)
        assert scores.shape == (n, c)
        return {
            "kind": "dual",
            "seconds": seconds,
            "cpu_seconds": cpu,
            "seconds_measured": seconds,
            "rows_timed": n,
            "extrapolated": False,
            "encodings": n + c,
            "pairs_fused": 0,
            "dot_products": n * c,
            "metrics": report.metrics,
            "scores_or_embeddings": (img, txt),
        }
    r = n if rows is None else min(rows, n)
    t0, c0 = time.perf_counter(), time.process_time()
    scores = cross_scores(model, pairs, r, cfg)
    measured, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "kind": "cross",
        "seconds": measured * n / r,
        "cpu_seconds": cpu * n / r,
        "seconds_measured": measured,
        "rows_timed": r,
        "extrapolated": r < n,
        "encodings": n + c,
        "pairs_fused": n * c,
        "dot_products": 0,
        "metrics": evaluate_scores(scores, pairs.relevance).metrics if r == n else None,
        "scores_or_embeddings": scores,
    }
    return out


def run_bench(
    teacher: Any, students: Mapping[str, Any], pairs: ImageTextPairs, cfg: BenchConfig
) -> dict[str, Any]:
    """Time ``teacher`` and each student on ``pairs``; speed-ups, R@K and RSUM kept.

    See the module docstring.
    """
    if not students:
        raise ConfigError("no student to benchmark", fix="give at least one --student NAME=SPEC")
    from alignlab.distill.dcd.train import torch_threads

    with torch_threads(cfg.threads):
        return _run_bench(teacher, students, pairs, cfg)


def _run_bench(
    teacher: Any, students: Mapping[str, Any], pairs: ImageTextPairs, cfg: BenchConfig
) -> dict[str, Any]:
    rows = cfg.teacher_rows or pairs.n_images
    models = {"teacher": teacher, **students}
    timed = {name: time_model(m, pairs, cfg, rows) for name, m in models.items()}
    sub_rows = rows if rows < pairs.n_images else None
    sub_cols = _sub_columns(pairs, rows) if sub_rows else None
    sub = pairs.subset(range(rows)) if sub_rows else None
    out_models = {}
    for name, t in timed.items():
        entry = {k: v for k, v in t.items() if k != "scores_or_embeddings"}
        entry["speedup_vs_teacher"] = _ratio(timed["teacher"]["cpu_seconds"], t["cpu_seconds"])
        entry["speedup_wall"] = _ratio(timed["teacher"]["seconds"], t["seconds"])
        if sub is not None:  # the sub-gallery every model is scored on, for a like-for-like RSUM
            assert sub_cols is not None
            if t["kind"] == "dual":
                img, txt = t["scores_or_embeddings"]
                entry["sub_metrics"] = evaluate_embeddings(img[:rows], txt[sub_cols], sub.relevance).metrics
            else:
                entry["sub_metrics"] = evaluate_scores(
                    t["scores_or_embeddings"][:, sub_cols], sub.relevance
                ).metrics
        out_models[name] = entry
    key = "sub_metrics" if sub is not None else "metrics"
    rsum_t = out_models["teacher"][key]["rsum"]
    for entry in out_models.values():
        entry["rsum_kept_pct"] = 100.0 * entry[key]["rsum"] / rsum_t if rsum_t > 0 else float("nan")
    return {
        "data": pairs.name,
        "images": pairs.n_images,
        "captions": pairs.n_captions,
        "threads": torch.get_num_threads(),
        "teacher_rows": rows,
        "rsum_compared_on": (
            f"sub-gallery of the first {rows} images" if sub is not None else "full gallery"
        ),
        "models": out_models,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def goal_met(result: dict[str, Any], name: str, speedup: float = 500.0, kept: float = 90.0) -> bool:
    m = result["models"][name]
    return bool(m["speedup_vs_teacher"] >= speedup and m["rsum_kept_pct"] >= kept)


def format_bench(result: dict[str, Any]) -> str:
    lines = [
        f"Full ranking of {result['images']} images × {result['captions']} captions ({result['data']}), "
        f"{result['threads']} torch thread(s); RSUM compared on the {result['rsum_compared_on']}. Speed-up "
        "from the process's CPU time (on a shared machine wall time also counts the neighbours' work); wall "
        "time in brackets.",
        "",
        "| model | kind | CPU s (wall s) | work | speed-up vs teacher (wall) | i2t R@1/5/10 | t2i R@1/5/10 | "
        "RSUM | % of teacher RSUM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result["models"].items():
        met = m.get("sub_metrics") or m["metrics"]
        secs = f"{m['cpu_seconds']:.2f} ({m['seconds']:.2f})" + (
            f", extrapolated from {m['rows_timed']} rows" if m["extrapolated"] else ""
        )
        work = (
            f"{m['pairs_fused']:,} pairs fused"
            if m["kind"] == "cross"
            else f"{m['encodings']:,} encodings + {m['dot_products']:,} dot products"
        )
        lines.append(
            f"| {name} | {m['kind']} | {secs} | {work} | {m['speedup_vs_teacher']:.1f}× "
            f"({m['speedup_wall']:.1f}×) | "
            f"{met['i2t_R@1']:.1f}/{met['i2t_R@5']:.1f}/{met['i2t_R@10']:.1f} | "
            f"{met['t2i_R@1']:.1f}/{met['t2i_R@5']:.1f}/{met['t2i_R@10']:.1f} | {met['rsum']:.1f} | "
            f"{m['rsum_kept_pct']:.1f}% |"
        )
    full = [(n, m) for n, m in result["models"].items() if m["kind"] == "dual" and m.get("sub_metrics")]
    if full:
        lines += [
            "",
            "Dual students on the full gallery: "
            + "; ".join(f"{n} RSUM {m['metrics']['rsum']:.1f}" for n, m in full)
            + ".",
        ]
    return "\n".join(lines) + "\n"
