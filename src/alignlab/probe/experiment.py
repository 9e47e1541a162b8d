"""``alignlab experiment snare``: does linguistic structure in the negatives help, and do SNARE's findings hold?

Design (every arm trained with every seed on the same data, the same budget and the same code path):

* models: ``tiny-dual`` and ``tiny-cross``, trained on ShapesWorld (``train_images`` images, 5 captions
  each; a few true negated captions, ``negation_rate``, so that "not" is in the vocabulary);
* arms: ``base`` (in-batch negatives only) and ``hardneg`` (plus one compositional hard negative per
  caption: swapped attributes, swapped relation arguments, shuffled words —
  :mod:`alignlab.probe.negatives`);
* probes: one frozen ShapesWorld probe set (``probe_items_per_category`` items per category, its own
  seed, so no probe scene is a training scene by construction of the seeds), evaluated with every
  blind baseline; the grounded gap is model − best blind;
* a retrieval check on held-out test images (R@1), so that "no effect" can be told apart from "the model
  did not learn".

Significance: for each model and task, hardneg − base as (a) Welch's t-test over the seed means and
(b) a paired randomization test over items of the per-item accuracy averaged over seeds (the items are
the same in every run). SNARE's findings are checked on every arm: *reliance on content words* (insensitivity
to structure: the gold caption is not reliably preferred over the same content words in another order
— the 95% bootstrap CI over items of "gold beats the content-word shuffle" reaches 50%; the function-
word and all-word shuffles are reported beside it), *weak negation* and *weak relations*
(the task's grounded gap is not above 0: the 95% CI over seeds of model − best blind reaches 0); the
affirmative-true / negated-true accuracies and the preference for a relation sentence over the also-true
"X and Y" are reported beside them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.config import experiment_config as _experiment_config
from alignlab.core.io import read_json, write_json, write_text
from alignlab.core.manifest import build_manifest, cache_key
from alignlab.core.progress import info
from alignlab.core.stats import (
    bootstrap_ci,
    paired_bootstrap,
    paired_randomization_test,
    summarize,
    welch_t_test,
)
from alignlab.probe.items import TASK_TITLES, TASKS

DESCRIPTION = "SNARE probes of tiny dual/cross encoders trained with vs without compositional hard negatives"

ARMS = ("base", "hardneg")


@dataclass
class SnareExperimentConfig:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    archs: list[str] = field(default_factory=lambda: ["tiny-dual", "tiny-cross"])
    train_images: int = 2000
    retrieval_images: int = 100  # held-out test images for the R@1 check (a cross encoder scores all pairs)
    data_seed: int = 0
    negation_rate: float = 0.4  # ShapesWorld weight of true negated captions (~8% of captions)
    epochs: int = 24  # dual encoder
    cross_epochs: int = 12  # cross encoder (each step costs several times a dual step)
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 10
    dual_model: dict[str, Any] = field(default_factory=lambda: {
        "width": 48, "embed_dim": 48, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2})
    cross_model: dict[str, Any] = field(default_factory=lambda: {
        "width": 48, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2, "fusion_layers": 1})
    sampled_negatives: int = 7
    negative_kinds: list[str] = field(default_factory=lambda: ["swap_attribute", "swap_relation", "shuffle"])
    probe_items_per_category: int = 100
    probe_seed: int = 1000
    bootstrap: int = 2000


QUICK = dict(seeds=[0, 1], train_images=48, retrieval_images=12, epochs=1, cross_epochs=1, batch_size=16, warmup_steps=1,
             probe_items_per_category=5, bootstrap=200, sampled_negatives=3,
             dual_model={"width": 32, "embed_dim": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2},
             cross_model={"width": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2,
                          "fusion_layers": 1})


def _data(exp: SnareExperimentConfig) -> tuple[Any, Any]:
    from alignlab.data.pairs import from_shapes
    from alignlab.data.shapes import ShapesConfig, ShapesWorld

    world = ShapesWorld(ShapesConfig(negation_rate=exp.negation_rate))
    train = from_shapes(world.generate(exp.train_images, exp.data_seed, "train", desc="ShapesWorld train"),
                        name="shapes-train")
    test = from_shapes(world.generate(exp.retrieval_images, exp.data_seed, "test", desc="ShapesWorld test"),
                       name="shapes-test")
    return train, test


def _probe(exp: SnareExperimentConfig, out: Path) -> Any:
    from alignlab.probe.build_shapes import ShapesProbeConfig, build_shapes_probe
    from alignlab.probe.items import load_probe

    cfg = ShapesProbeConfig(items_per_category=exp.probe_items_per_category, seed=exp.probe_seed)
    folder = out / "probe"
    manifest = folder / "probe.json"
    if not manifest.exists() or read_json(manifest).get("config") != asdict(cfg):
        build_shapes_probe(cfg, folder)
    return load_probe(folder)


def _retrieval(model: Any, test: Any) -> dict[str, float]:
    """R@1 both ways on the held-out images (a training-health check; ties count against the query)."""
    import torch

    with torch.no_grad():
        s = model.score(test.load_images(), test.captions).double().cpu()  # [images, captions]
    rel = torch.zeros_like(s, dtype=torch.bool)
    for i, caps in enumerate(test.relevance):
        rel[i, caps] = True
    neg_inf = torch.tensor(float("-inf"), dtype=s.dtype)
    # i2t: the best relevant caption must beat every irrelevant one strictly.
    best_rel = torch.where(rel, s, neg_inf).max(dim=1).values
    best_irr = torch.where(rel, neg_inf, s).max(dim=1).values
    i2t = (best_rel > best_irr).double().mean().item()
    # t2i: each caption's image must beat every other image strictly.
    own = torch.where(rel, s, neg_inf).max(dim=0).values
    other = torch.where(rel, neg_inf, s).max(dim=0).values
    t2i = (own > other).double().mean().item()
    return {"i2t_R@1": 100 * i2t, "t2i_R@1": 100 * t2i}


def _one_run(exp: SnareExperimentConfig, arch: str, arm: str, seed: int, train: Any, test: Any, ps: Any,
             images: Any, cache: Any, run_dir: Path) -> dict[str, Any]:
    """Train (or load) one model and probe it; the record is cached in ``run_dir/probe_result.json``."""
    from alignlab.probe.evaluate import flat_metrics, run_probe
    from alignlab.probe.negatives import ProbeTrainConfig, train_probe_model
    from alignlab.train.loop import TrainConfig

    cfg = ProbeTrainConfig(arch=arch, model_config=dict(exp.dual_model if arch == "tiny-dual" else exp.cross_model),
                           hard_negatives=arm == "hardneg", negative_kinds=list(exp.negative_kinds),
                           sampled_negatives=exp.sampled_negatives, seed=seed,
                           train=TrainConfig(epochs=exp.epochs if arch == "tiny-dual" else exp.cross_epochs,
                                             batch_size=exp.batch_size, lr=exp.lr,
                                             warmup_steps=exp.warmup_steps, log_every=20))
    cached = run_dir / "probe_result.json"
    if cached.exists():
        rec = read_json(cached)
        if (rec.get("items_sha256") == ps.sha256 and rec.get("train_config") == asdict(cfg)
                and rec.get("cache_key") == cache_key(asdict(cfg))):  # same code too: never reuse older results
            return rec
    model, train_info = train_probe_model(cfg, train, run_dir)
    run = run_probe(model, ps, images=images, cache=cache, lm_captions=train.captions, bootstrap=exp.bootstrap,
                    seed=seed, model_name=f"{arch}/{arm}")
    per_item = {}
    for iid, r in run["model"]["per_item"].items():
        rec_i: dict[str, Any] = {"c": float(r.correct)}
        if r.pairwise:
            rec_i["pw"] = {k: float(v) for k, v in r.pairwise.items()}
        per_item[iid] = rec_i
    rec = {"arch": arch, "arm": arm, "seed": seed, "items_sha256": ps.sha256, "train_config": asdict(cfg),
           "cache_key": cache_key(asdict(cfg)),
           "train": train_info, "metrics": flat_metrics(run), "retrieval": _retrieval(model, test),
           "tasks": run["model"]["tasks"], "gaps": run["gaps"],
           "blinds": {b: {t: e["accuracy"]["acc_pct"] for t, e in r["tasks"].items() if "accuracy" in e}
                      for b, r in run["blinds"].items()},
           "per_item": per_item}
    write_json(cached, rec)
    return rec


def _item_means(records: list[dict[str, Any]], ids: list[str], key: str = "c", kind: str | None = None) -> np.ndarray:
    """Per-item accuracy averaged over seeds (``kind``: the pairwise win over that distractor kind)."""
    vals = []
    for r in records:
        if kind is None:
            vals.append([float(r["per_item"][i][key]) for i in ids])
        else:
            vals.append([float(r["per_item"][i]["pw"][kind]) for i in ids])
    return np.mean(np.array(vals), axis=0)


def _aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/sd/CI over seeds of every headline number of one (arch, arm)."""
    out: dict[str, Any] = {"n_seeds": len(records)}
    keys = sorted(records[0]["metrics"])
    out["metrics"] = {k: summarize([r["metrics"][k] for r in records]) for k in keys
                      if all(k in r["metrics"] for r in records)}
    out["retrieval"] = {k: summarize([r["retrieval"][k] for r in records]) for k in records[0]["retrieval"]}
    cats: dict[str, Any] = {}
    for t in TASKS:
        for c in records[0]["tasks"].get(t, {}).get("categories", {}):
            cats[f"{t}/{c}"] = summarize([r["tasks"][t]["categories"][c]["acc_pct"] for r in records])
    out["categories"] = cats
    pw: dict[str, Any] = {}
    for t in TASKS:
        for k in records[0]["tasks"].get(t, {}).get("accuracy", {}).get("pairwise", {}):
            pw[f"{t}/{k}"] = summarize([r["tasks"][t]["accuracy"]["pairwise"][k] for r in records])
    out["pairwise"] = pw
    pref: dict[str, Any] = {}
    for t in TASKS:
        for c in records[0]["tasks"].get(t, {}).get("preference", {}):
            pref[f"{t}/{c}"] = summarize([r["tasks"][t]["preference"][c]["prefer_pct"] for r in records])
    out["preference"] = pref
    best: dict[str, list[str]] = {}
    for t in TASKS:
        best[t] = sorted({r["gaps"][t]["accuracy"]["best_blind"] for r in records if t in r["gaps"]})
    out["best_blinds"] = best
    out["blinds"] = {b: {t: summarize([r["blinds"][b][t] for r in records]) for t in records[0]["blinds"][b]}
                     for b in records[0]["blinds"]}
    return out


def _ids(ps: Any, task: str, select: str = "accuracy", category: str | None = None) -> list[str]:
    out = []
    for it in ps.items:
        if it.task != task or (category is not None and it.category != category):
            continue
        if select == "accuracy" and it.format == "choice" and it.scoring == "accuracy" or select == "pair" and it.format == "pair" or select == "preference" and it.scoring == "preference":
            out.append(it.id)
    return out


def _compare(base: list[dict], hard: list[dict], ps: Any, seed: int) -> dict[str, Any]:
    """hardneg − base per task: Welch over seeds and paired randomization over items."""
    out: dict[str, Any] = {}
    for t in TASKS:
        for part, select, metric in (("accuracy", "accuracy", f"{t}_acc_pct"), ("pairs", "pair", f"{t}_pairs_group_pct")):
            ids = _ids(ps, t, select)
            if not ids or metric not in base[0]["metrics"]:
                continue
            a = [r["metrics"][metric] for r in base]
            b = [r["metrics"][metric] for r in hard]
            w = welch_t_test(a, b)
            ia, ib = _item_means(base, ids), _item_means(hard, ids)
            pb = paired_bootstrap(ia, ib, seed=seed)
            out[f"{t}/{part}"] = {"base": float(np.mean(a)), "hardneg": float(np.mean(b)), "delta": w["delta"],
                                  "welch_p": w["p"], "items_p": paired_randomization_test(ia, ib, seed=seed),
                                  "items_ci_low": 100 * pb["ci_low"], "items_ci_high": 100 * pb["ci_high"],
                                  "n_items": len(ids)}
    return out


def _findings(records: list[dict], ps: Any, seed: int) -> dict[str, Any]:
    """SNARE's three findings, measured on one (arch, arm)'s runs."""
    f: dict[str, Any] = {}
    ids = _ids(ps, "semantic_structure")
    if ids:
        content = _item_means(records, ids, kind="shuffle_content")
        function = _item_means(records, ids, kind="shuffle_function")
        allw = _item_means(records, ids, kind="shuffle_all")
        ci = bootstrap_ci(content, seed=seed)
        f["content_words"] = {
            "beats_shuffle_content_pct": 100 * float(content.mean()),
            "beats_shuffle_content_ci": [100 * ci["ci_low"], 100 * ci["ci_high"]],
            "beats_shuffle_function_pct": 100 * float(function.mean()),
            "beats_shuffle_all_pct": 100 * float(allw.mean()),
            "p_function_vs_content": paired_randomization_test(content, function, seed=seed),
            # Insensitive to structure, reading a bag of content words: the gold caption is not preferred
            # over the same content words in another order (the CI over items reaches 50%).
            "holds": bool(ci["ci_low"] <= 0.5)}
    gaps = {t: [r["gaps"][t]["accuracy"]["gap_pct"] for r in records] for t in ("negation", "relationship_composition")
            if all(t in r["gaps"] for r in records)}
    if "negation" in gaps:
        aff = [r["tasks"]["negation"]["categories"].get("affirmative_true", {}).get("acc_pct") for r in records]
        neg = [r["tasks"]["negation"]["categories"].get("negated_true", {}).get("acc_pct") for r in records]
        g = summarize(gaps["negation"])
        f["weak_negation"] = {"gap": g, "affirmative_true_pct": _mean(aff), "negated_true_pct": _mean(neg),
                              "holds": _not_grounded(g)}
    if "relationship_composition" in gaps:
        g = summarize(gaps["relationship_composition"])
        pref = [r["tasks"]["relationship_composition"].get("preference", {}).get("vs_conjunction", {}).get("prefer_pct")
                for r in records]
        f["weak_relations"] = {"gap": g, "prefers_relation_over_and_pct": _mean(pref),
                               "holds": _not_grounded(g)}
    return f


def _not_grounded(gap: dict[str, float]) -> bool:
    """A finding of weakness holds when the grounded gap is not above 0 (its CI over seeds reaches 0)."""
    return bool(gap["ci_low"] <= 0.0) if gap["n"] > 1 else bool(gap["mean"] <= 0.0)


def _mean(xs: list[Any]) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def experiment_config(*, quick: bool, seeds: list[int] | None = None,
                      overrides: dict[str, Any] | None = None) -> SnareExperimentConfig:
    """Quick (or full) settings with ``--set`` overrides merged deeply (:func:`alignlab.core.config.experiment_config`)."""
    return _experiment_config(SnareExperimentConfig, QUICK, quick=quick, seeds=seeds, overrides=overrides)


def run(out: Path, *, quick: bool = False, seeds: list[int] | None = None,
        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from alignlab.probe.evaluate import BlindCache, load_all_images

    started = time.time()
    out = Path(out)
    exp = experiment_config(quick=quick, seeds=seeds, overrides=overrides)
    out.mkdir(parents=True, exist_ok=True)
    train, test = _data(exp)
    ps = _probe(exp, out)
    images = load_all_images(ps)
    cache = BlindCache()
    records: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for arch in exp.archs:
        for arm in ARMS:
            info(f"== snare experiment: {arch} / {arm}, seeds {exp.seeds}")
            records.setdefault(arch, {})[arm] = [
                _one_run(exp, arch, arm, s, train, test, ps, images, cache, out / "runs" / arch / arm / f"seed-{s}")
                for s in exp.seeds]
    result: dict[str, Any] = {"experiment": "snare", "quick": quick, "config": asdict(exp),
                              "probe": {"sha256": ps.sha256, "n_items": len(ps.items), "counts": ps.manifest.get("counts"),
                                        "build_stats": ps.manifest.get("build_stats")},
                              "arms": {}, "comparisons": {}, "findings": {}}
    for arch, arms in records.items():
        result["arms"][arch] = {arm: _aggregate(rs) for arm, rs in arms.items()}
        result["comparisons"][arch] = _compare(arms["base"], arms["hardneg"], ps, exp.seeds[0])
        result["findings"][arch] = {arm: _findings(rs, ps, exp.seeds[0]) for arm, rs in arms.items()}
    result["manifest"] = build_manifest(config=asdict(exp), started=started)
    write_json(out / "results.json", result)
    write_text(out / "report.md", format_report(result))
    return result


def _ms(s: dict[str, float], digits: int = 1) -> str:
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def format_report(r: dict[str, Any]) -> str:
    exp = r["config"]
    lines = ["# SNARE probes of tiny models trained with and without compositional hard negatives", "",
             f"Settings: {'quick' if r['quick'] else 'full'}; seeds {exp['seeds']}; {exp['train_images']} ShapesWorld "
             f"training images, {exp['epochs']} epochs (dual) / {exp['cross_epochs']} (cross), batch {exp['batch_size']}, "
             f"lr {exp['lr']}; probe set "
             f"{r['probe']['n_items']} items (SHA-256 {r['probe']['sha256'][:16]}). Numbers are mean ± sd over seeds; "
             "accuracy in %, ties count as wrong; gap = model − best blind baseline (same items).", ""]
    for arch, arms in r["arms"].items():
        lines += [f"## {arch}", "",
                  "| task | chance | base acc | hardneg acc | Δ | p (seeds, Welch) | p (items) | base gap | hardneg gap |",
                  "|---|---|---|---|---|---|---|---|---|"]
        comp = r["comparisons"][arch]
        for t in TASKS:
            key = f"{t}_acc_pct"
            if key not in arms["base"]["metrics"]:
                continue
            c = comp.get(f"{t}/accuracy", {})
            chance = arms["base"]["metrics"][f"{t}_chance_pct"]["mean"]
            lines.append(f"| {TASK_TITLES[t]} | {chance:.1f} | {_ms(arms['base']['metrics'][key])} | "
                         f"{_ms(arms['hardneg']['metrics'][key])} | {c.get('delta', float('nan')):+.1f} | "
                         f"{_p(c.get('welch_p'))} | {_p(c.get('items_p'))} | {_ms(arms['base']['metrics'][f'{t}_gap_pct'])} | "
                         f"{_ms(arms['hardneg']['metrics'][f'{t}_gap_pct'])} |")
        for t in TASKS:
            c = comp.get(f"{t}/pairs")
            if c:
                lines.append(f"| {TASK_TITLES[t]}: image pairs (group score) | 16.7 | "
                             f"{_ms(arms['base']['metrics'][f'{t}_pairs_group_pct'])} | "
                             f"{_ms(arms['hardneg']['metrics'][f'{t}_pairs_group_pct'])} | {c['delta']:+.1f} | "
                             f"{_p(c['welch_p'])} | {_p(c['items_p'])} | | |")
        rb, rh = arms["base"]["retrieval"], arms["hardneg"]["retrieval"]
        lines += ["", f"Retrieval check ({exp['retrieval_images']} test images): i2t R@1 base {_ms(rb['i2t_R@1'])}, "
                      f"hardneg {_ms(rh['i2t_R@1'])}; t2i R@1 base {_ms(rb['t2i_R@1'])}, hardneg {_ms(rh['t2i_R@1'])}.",
                  "", "| category | base | hardneg |", "|---|---|---|"]
        for cat, s in arms["base"]["categories"].items():
            lines.append(f"| {cat} | {_ms(s)} | {_ms(arms['hardneg']['categories'][cat])} |")
        for k, s in arms["base"]["pairwise"].items():
            lines.append(f"| {k} (correct beats it) | {_ms(s)} | {_ms(arms['hardneg']['pairwise'][k])} |")
        for k, s in arms["base"]["preference"].items():
            lines.append(f"| {k} (prefers the relation) | {_ms(s)} | {_ms(arms['hardneg']['preference'][k])} |")
        lines += ["", "SNARE's findings (measured per arm):", ""]
        for arm in ARMS:
            f = r["findings"][arch][arm]
            parts = []
            if "content_words" in f:
                cw = f["content_words"]
                lo, hi = cw["beats_shuffle_content_ci"]
                parts.append(f"content words: gold beats content-shuffle {cw['beats_shuffle_content_pct']:.1f}% "
                             f"[{lo:.1f}, {hi:.1f}], function-shuffle {cw['beats_shuffle_function_pct']:.1f}%, "
                             f"all-shuffle {cw['beats_shuffle_all_pct']:.1f}% -> "
                             f"{'holds' if cw['holds'] else 'does not hold'}")
            if "weak_negation" in f:
                wn = f["weak_negation"]
                parts.append(f"weak negation: gap {_ms(wn['gap'])}, affirmative-true {_o(wn['affirmative_true_pct'])}%, "
                             f"negated-true {_o(wn['negated_true_pct'])}% -> {'holds' if wn['holds'] else 'does not hold'}")
            if "weak_relations" in f:
                wr = f["weak_relations"]
                parts.append(f"weak relations: gap {_ms(wr['gap'])}, prefers the relation over 'X and Y' in "
                             f"{_o(wr['prefers_relation_over_and_pct'])}% -> {'holds' if wr['holds'] else 'does not hold'}")
            lines.append(f"- **{arm}**: " + "; ".join(parts))
        lines.append("")
    return "\n".join(lines) + "\n"


def _p(p: float | None) -> str:
    return "—" if p is None or p != p else f"{p:.3g}"


def _o(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"
