"""Seed-aware reproducibility: run a config over seeds, compare two systems honestly, diff two runs.

Following "Where Does the Performance Improvement Come From?" (SIGIR 2022): the spread of one model
over training seeds can exceed the improvements papers claim, so a comparison must report the seed
range of each system and a significance test, not one number per system.

* :func:`run_seeds` — trains and evaluates ``cfg`` once per seed (``<out>/seed-<s>/``, each resumable),
  then writes ``aggregate.json`` and ``report.md``: per metric mean ± sd, min–max (range) and 95% CI,
  plus built-in sanity checks (random scores give chance R@K, an oracle gives 100).
* :func:`compare` — system B vs A on the same test queries, analysed as every claim in alignlab is
  (:mod:`alignlab.core.analysis`): the unit is the training run, runs are paired by seed, the difference
  test is the exact sign-flip test over the paired seeds' RSUM differences, "no difference" needs a TOST
  at the margin, and the 95% CI is a hierarchical bootstrap over seeds and then test queries (each
  query's contribution to RSUM, ``c_q = (100 / n_dir) · Σ_K hit@K(q)``). Tests over queries alone would
  ignore training variance, so with fewer than two paired seeds the verdict is ``inconclusive``.
* :func:`diff_runs` — what changed between two runs' settings and environment.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.analysis import Claim, analyse, smallest_p
from alignlab.core.errors import DataError
from alignlab.core.io import read_json, write_json, write_text
from alignlab.core.manifest import cache_key, diff_manifests
from alignlab.core.stats import metric_bounds, paired_bootstrap, summarize
from alignlab.retrieval.training import RetrievalRunConfig, load_run_data, run_retrieval

KS = (1, 5, 10)


def run_seeds(
    cfg: RetrievalRunConfig,
    seeds: list[int],
    out_dir: str | os.PathLike,
    *,
    resume: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train and evaluate ``cfg`` once per seed; write every seed's results and the aggregate."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_seed = []
    for seed in seeds:
        run_dir = out / f"seed-{seed}"
        seed_cfg = replace(cfg, seed=seed)
        done = run_dir / "results.json"
        if (
            resume
            and done.exists()
            and read_json(done)["manifest"].get("cache_key") == cache_key(asdict(seed_cfg))
        ):
            per_seed.append(read_json(done))
            continue
        per_seed.append(run_retrieval(seed_cfg, run_dir, resume=resume, device=device))
    aggregate = aggregate_results(per_seed)
    aggregate["sanity"] = _sanity(cfg)
    aggregate["config"] = asdict(cfg)
    write_json(out / "aggregate.json", aggregate)
    write_text(out / "report.md", format_aggregate(aggregate, title=f"{cfg.model} over seeds {seeds}"))
    return aggregate


def aggregate_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: mean, sd, min, max, range and 95% CI over the given per-seed results."""
    if not results:
        raise DataError("no per-seed results to aggregate")
    metrics = list(results[0]["metrics"])  # the evaluator's natural order (R@1, R@5, R@10), not text order
    summary = {
        m: summarize([r["metrics"][m] for r in results], bounds=metric_bounds(m))
        for m in metrics
        if all(isinstance(r["metrics"].get(m), (int, float)) for r in results)
    }
    return {
        "seeds": [r["seed"] for r in results],
        "n_seeds": len(results),
        "metrics": summary,
        "per_seed": {str(r["seed"]): r["metrics"] for r in results},
        "best_epochs": {str(r["seed"]): (r.get("best") or {}).get("epoch") for r in results},
    }


def _sanity(cfg: RetrievalRunConfig) -> dict[str, Any]:
    from alignlab.retrieval.metrics import sanity_check

    test = load_run_data(cfg.data)["test"]
    if cfg.test_images is not None:
        test = test.subset(range(min(cfg.test_images, test.n_images)))
    return sanity_check(test.relevance, test.n_captions, KS)


def format_aggregate(agg: dict[str, Any], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"{agg['n_seeds']} seeds: {agg['seeds']}",
        "",
        "| metric | mean | sd | min | max | range | 95% CI |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, s in agg["metrics"].items():
        if "tied" in m:
            continue
        lines.append(
            f"| {m} | {s['mean']:.2f} | {s['sd']:.2f} | {s['min']:.2f} | {s['max']:.2f} | "
            f"{s['range']:.2f} | [{s['ci_low']:.2f}, {s['ci_high']:.2f}] |"
        )
    if "sanity" in agg:
        lines += [
            "",
            "Sanity checks on the test relevance: "
            + ", ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in agg["sanity"].items()
                if not isinstance(v, dict)
            ),
        ]
    return "\n".join(lines) + "\n"


# --- comparing two systems --------------------------------------------------------------------------


def _seed_runs(path: Path) -> list[Path]:
    """The per-seed run folders of a repro folder, or the folder itself if it is one run."""
    if (path / "results.json").is_file() and (path / "per_query.json").is_file():
        return [path]
    runs = sorted(p for p in path.glob("seed-*") if (p / "results.json").is_file())
    if not runs:
        raise DataError(
            "no finished runs here (results.json + per_query.json)",
            where=str(path),
            fix="give a folder written by `alignlab repro run` or `alignlab train`",
        )
    for r in runs:
        if not (r / "per_query.json").is_file():
            raise DataError(
                "run has no per_query.json", where=str(r), fix="re-run it with this alignlab version"
            )
    return runs


def _per_query_contributions(run: Path) -> tuple[np.ndarray, dict[str, Any]]:
    pq = read_json(run / "per_query.json")
    i2t, t2i = np.asarray(pq["i2t_rank"]), np.asarray(pq["t2i_rank"])
    contrib = np.concatenate(
        [100.0 / len(i2t) * sum((i2t <= k) for k in KS), 100.0 / len(t2i) * sum((t2i <= k) for k in KS)]
    )
    return contrib, read_json(run / "results.json")


def compare(
    a: str | os.PathLike, b: str | os.PathLike, n_resamples: int = 10000, seed: int = 0, margin: float = 5.0
) -> dict[str, Any]:
    """Compare systems A and B (repro folders or single runs) on RSUM: B − A, paired by training seed.

    ``margin`` (RSUM points) is the smallest difference that matters: "equivalent" needs the TOST at it.
    """
    runs_a, runs_b = _seed_runs(Path(a)), _seed_runs(Path(b))
    ca = [_per_query_contributions(r) for r in runs_a]
    cb = [_per_query_contributions(r) for r in runs_b]
    shapes = {c.shape for c, _ in ca + cb}
    datas = {res["data"] for _, res in ca + cb}
    if len(shapes) != 1 or len(datas) != 1:
        raise DataError(
            f"A and B were evaluated on different test sets ({sorted(datas)})",
            fix="compare runs evaluated with the same data and protocol",
        )
    n_q = shapes.pop()[0]
    by_seed_a = {res.get("seed", i): (c, res) for i, (c, res) in enumerate(ca)}
    by_seed_b = {res.get("seed", i): (c, res) for i, (c, res) in enumerate(cb)}
    paired = sorted(set(by_seed_a) & set(by_seed_b), key=str)
    rsum_a = [res["metrics"]["rsum"] for _, res in ca]
    rsum_b = [res["metrics"]["rsum"] for _, res in cb]
    out: dict[str, Any] = {
        "a": str(a),
        "b": str(b),
        "data": datas.pop(),
        "queries": n_q,
        "seeds_a": len(ca),
        "seeds_b": len(cb),
        "paired_seeds": paired,
        "margin": margin,
        "rsum_a": summarize(rsum_a),
        "rsum_b": summarize(rsum_b),
        "metrics_a": {m: summarize([res["metrics"][m] for _, res in ca]) for m in _r_at_k()},
        "metrics_b": {m: summarize([res["metrics"][m] for _, res in cb]) for m in _r_at_k()},
    }
    if len(paired) >= 2:
        claim = Claim(
            "B vs A", treatment="B", control="A", metric="rsum", direction="improves", margin=margin
        )
        runs = {
            "A": {s: by_seed_a[s][1]["metrics"]["rsum"] for s in paired},
            "B": {s: by_seed_b[s][1]["metrics"]["rsum"] for s in paired},
        }
        # per-query contributions x n_q: their mean over queries is the run's RSUM, so the CI is in RSUM
        # points
        items = {
            "A": {s: by_seed_a[s][0] * n_q for s in paired},
            "B": {s: by_seed_b[s][0] * n_q for s in paired},
        }
        row = analyse([claim], runs, items, n_resamples=min(n_resamples, 2000), seed=seed)[0]
        out.update(
            delta_rsum=row["mean_diff"],
            ci_low=row["ci"][0],
            ci_high=row["ci"][1],
            p_value=row["p_difference"],
            p_equivalence=row["p_equivalence"],
            same_sign=row["same_sign"],
            smallest_p=row["smallest_p"],
            verdict_word=row["verdict"],
        )
    else:
        # One training run per side (or no shared seed): queries can say how two *runs* differ, not two
        # systems.
        qa = np.mean([c for c, _ in ca], axis=0)
        qb = np.mean([c for c, _ in cb], axis=0)
        boot = paired_bootstrap(qa, qb, n_resamples=n_resamples, seed=seed)
        out.update(
            delta_rsum=float(qb.sum() - qa.sum()),
            ci_low=boot["ci_low"] * n_q,
            ci_high=boot["ci_high"] * n_q,
            p_value=None,
            p_equivalence=None,
            same_sign=None,
            smallest_p=smallest_p(len(paired)),
            verdict_word="inconclusive",
        )
    out["verdict"] = verdict(out)
    return out


def _r_at_k() -> list[str]:
    return [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in KS] + ["rsum"]


def verdict(c: dict[str, Any]) -> str:
    """The comparison in one sentence, ending in the shared vocabulary (improves / hurts / equivalent /
    inconclusive)."""
    head = f"B − A = {c['delta_rsum']:+.2f} RSUM (95% CI [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}])"
    n = len(c["paired_seeds"])
    if c["p_value"] is None:
        why = (
            "no seed is shared by A and B, so runs cannot be paired"
            if n == 0
            else "one paired seed: the CI covers test queries only, not training variance"
        )
        return (
            f"{head}; {why}: {c['verdict_word']} "
            "(run both with the same ≥ 2 seeds; 6 or more can reach p < 0.05)"
        )
    word = c["verdict_word"]
    return (
        f"{head} over {n} paired seeds ({c['same_sign']}/{n} same sign); sign-flip p = {c['p_value']:.3g} "
        f"(smallest possible {c['smallest_p']:.3g}), TOST at ±{c['margin']:g} p = {c['p_equivalence']:.3g}: "
        + (f"B {word} on A" if word in ("improves", "hurts") else word)
    )


def format_compare(c: dict[str, Any]) -> str:
    lines = [
        f"A: {c['a']} ({c['seeds_a']} seeds)   B: {c['b']} ({c['seeds_b']} seeds)   data: {c['data']}, "
        f"{c['queries']} queries",
        "",
        "| metric | A mean ± sd [min, max] | B mean ± sd [min, max] |",
        "|---|---|---|",
    ]
    for m in _r_at_k():
        sa, sb = c["metrics_a"][m], c["metrics_b"][m]
        lines.append(
            f"| {m} | {sa['mean']:.2f} ± {sa['sd']:.2f} [{sa['min']:.2f}, {sa['max']:.2f}] | "
            f"{sb['mean']:.2f} ± {sb['sd']:.2f} [{sb['min']:.2f}, {sb['max']:.2f}] |"
        )
    return "\n".join(lines) + "\n\n" + c["verdict"] + "\n"


# --- diffing two runs -------------------------------------------------------------------------------


def _load_manifest_like(path: Path) -> dict[str, Any]:
    if path.is_dir():
        for name in ("results.json", "aggregate.json"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            runs = _seed_runs(path)
            path = runs[0] / "results.json"
    data = read_json(path)
    if "manifest" in data:
        return data["manifest"]
    if "config" in data:
        return {"config": data["config"]}
    raise DataError(
        "no manifest in this file", where=str(path), fix="give a results.json written by alignlab"
    )


def diff_runs(a: str | os.PathLike, b: str | os.PathLike) -> list[tuple[str, Any, Any]]:
    """(key, value in A, value in B) for every setting that differs between two runs."""
    return diff_manifests(_load_manifest_like(Path(a)), _load_manifest_like(Path(b)))
