"""``alignlab experiment 3am``: does ambiguity-aware data selection make translation models use the image?

The claim tested (3AM, Ma et al. 2024): MMT models trained on captions selected for word-sense ambiguity
exploit visual information more than models trained on ordinary caption data.

Design, on ShapesWorld (where the truth is known):

1. **Pool.** Captions of ShapesWorld scenes in which polysemous objects are rare
   (``pool_polysemous_rate``), so captions whose translation needs the image (a polysemous noun: "bat"
   is 蝙蝠 or 球棒 depending on the picture) are a few percent of the pool — as in Multi30K.
2. **Two training sets of equal size** from the pool: ``selected`` — the ambiguity selector
   (:mod:`alignlab.ambiguity.select`: gloss-embedding WSD, sense entropy, balanced round-robin over
   ambiguous words); ``random`` — a seeded random sample (redrawn per seed).
3. **Two models per set**: text-only and visual (``fusion``: gated fusion or visual prefix over the
   tokens of a frozen image tower pretrained on ShapesWorld object/sense recognition).
4. **Test** on held-out scenes with many polysemous objects: BLEU/chrF (sacrebleu, zh), sense accuracy
   with the right image and with a shuffled image (the congruent–incongruent gap), CoMMuTE-style
   contrastive accuracy. ``seeds`` seeds per condition.

The report also shows how much the selector enriches the training set in visually necessary captions,
and (when ``data_dir`` holds them) the ambiguity statistics of the real 3AM and Multi30K captions.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.config import from_dict, merge, to_dict
from alignlab.core.io import write_json, write_text
from alignlab.core.manifest import build_manifest
from alignlab.core.progress import info
from alignlab.core.seed import derive_seed, set_seed
from alignlab.core.stats import paired_randomization_test, summarize, welch_t_test
from alignlab.data.shapes import ShapesConfig, ShapesWorld
from alignlab.mmt.model import MMTConfig, MMTModel
from alignlab.mmt.train import (
    TrainConfig,
    VisualPretrainConfig,
    build_tokenizers,
    pairs_from_shapes,
    pretrain_visual_encoder,
    shapes_images,
    train_model,
)

DESCRIPTION = ("3AM: ambiguity-selected vs random MMT training data on ShapesWorld — does the model use the "
               "image (sense accuracy, congruent-incongruent gap, contrastive score)?")


@dataclass
class ExperimentConfig:
    pool_images: int = 3000  # pool scenes (5 captions each)
    pool_polysemous_rate: float = 0.015  # chance an object is polysemous: visually necessary captions are rare
    train_size: int = 1000  # captions in each training set
    test_images: int = 150
    test_polysemous_rate: float = 0.4
    contrastive_items: int = 300
    fusion: str = "gated"  # the visual model: gated | prefix
    unit: str = "word"  # Chinese target units: word (jieba) | char
    data_seed: int = 0  # ShapesWorld seed of pool and test (fixed across model seeds)
    wsd_method: str = "gloss"
    metric: str = "entropy"
    granularity: str = "fine"
    corpus_captions: int = 1000  # real-corpus comparison: captions scored per corpus (0: skip)
    data_dir: str | None = None  # folder with 3am/ and multi30k/ (default: ../shared/data if present)
    model: MMTConfig = field(default_factory=lambda: MMTConfig(width=64, heads=4, encoder_layers=1,
                                                               decoder_layers=1, dropout=0.1))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=50, batch_size=32, lr=3e-3,
                                                                   warmup_steps=100))
    visual: VisualPretrainConfig = field(default_factory=VisualPretrainConfig)


QUICK = {"pool_images": 100, "train_size": 200, "test_images": 30, "contrastive_items": 60,
         "corpus_captions": 0, "pool_polysemous_rate": 0.03,
         "model": {"width": 48, "heads": 4},
         "train": {"epochs": 4, "batch_size": 32, "warmup_steps": 10},
         "visual": {"images": 300, "val_images": 60, "epochs": 2}}
FULL_SEEDS = [0, 1, 2, 3, 4]
QUICK_SEEDS = [0, 1]


def find_data_dir(configured: str | None = None) -> Path | None:
    """The real-data folder: the configured one, ``$ALIGNLAB_DATA``, or ``../shared/data`` near the repo."""
    cands = [configured, os.environ.get("ALIGNLAB_DATA")]
    here = Path(__file__).resolve()
    cands += [str(Path.cwd().parent / "shared" / "data"), str(here.parents[3].parent / "shared" / "data")]
    for c in cands:
        if c and (Path(c) / "3am" / "val.en").is_file():
            return Path(c)
    return None


def _visually_necessary(pairs) -> float:
    return float(np.mean([bool(p.senses) for p in pairs])) if pairs else float("nan")


def _corpus_section(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """Ambiguity statistics of the real 3AM vs Multi30K validation captions (first N of each)."""
    if cfg.corpus_captions <= 0:
        return None
    data = find_data_dir(cfg.data_dir)
    if data is None:
        return {"skipped": "real data not found (set data_dir or ALIGNLAB_DATA)"}
    from alignlab.ambiguity.select import SelectConfig, compare_corpora, score_captions
    from alignlab.ambiguity.wsd import Disambiguator, WSDConfig
    from alignlab.data.corpus import read_captions

    wsd = Disambiguator(WSDConfig(method=cfg.wsd_method))
    sel = SelectConfig(metric=cfg.metric, granularity=cfg.granularity)
    named = {}
    for name, rel in (("3AM", "3am/val.en"), ("Multi30K", "multi30k/val.en")):
        caps = read_captions(data / rel, limit=cfg.corpus_captions)
        named[name] = score_captions(caps, wsd, sel, desc=f"{name} val")
    res = compare_corpora(named, cfg.granularity)
    res["files"] = {"3AM": str(data / "3am/val.en"), "Multi30K": str(data / "multi30k/val.en")}
    return res


def run(out: Path, *, quick: bool = False, seeds: list[int] | None = None,
        overrides: dict | None = None) -> dict[str, Any]:
    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = to_dict(ExperimentConfig())
    cfg = from_dict(ExperimentConfig, merge(merge(base, QUICK) if quick else base, overrides or {}))
    seeds = list(seeds) if seeds else (QUICK_SEEDS if quick else FULL_SEEDS)
    from alignlab.ambiguity.select import SelectConfig, corpus_stats, score_captions, select_indices
    from alignlab.ambiguity.wsd import Disambiguator, WSDConfig
    from alignlab.mmt.evaluate import contrastive_items, evaluate_model

    # 1. pool and test data
    set_seed(cfg.data_seed)
    pool_ex = ShapesWorld(ShapesConfig(polysemous_rate=cfg.pool_polysemous_rate)).generate(
        cfg.pool_images, cfg.data_seed, "train", desc="pool")
    test_ex = ShapesWorld(ShapesConfig(polysemous_rate=cfg.test_polysemous_rate)).generate(
        cfg.test_images, cfg.data_seed, "test", desc="test")
    pool = pairs_from_shapes(pool_ex)
    test = pairs_from_shapes(test_ex, image_offset=len(pool_ex))
    if cfg.train_size > len(pool):
        from alignlab.core.errors import ConfigError

        raise ConfigError(f"train_size {cfg.train_size} exceeds the pool ({len(pool)} captions)",
                          fix="raise pool_images or lower train_size")

    # 2. ambiguity scoring and selection
    t0 = time.time()
    wsd = Disambiguator(WSDConfig(method=cfg.wsd_method))
    sel_cfg = SelectConfig(metric=cfg.metric, granularity=cfg.granularity)
    scores = score_captions([p.en for p in pool], wsd, sel_cfg, desc="scoring pool")
    selected_idx = select_indices(scores, cfg.train_size, sel_cfg)
    if len(selected_idx) < cfg.train_size:
        # Too few ambiguous captions: fill up by score so both sets have equal size (reported).
        rest = sorted((i for i in range(len(pool)) if i not in set(selected_idx)),
                      key=lambda i: (-scores[i].score, i))
        selected_idx += rest[: cfg.train_size - len(selected_idx)]
    wsd_seconds = time.time() - t0
    selected = [pool[i] for i in selected_idx]
    key_words = Counter(scores[i].key_word(cfg.metric, cfg.granularity) for i in selected_idx)
    ablation = {}
    for name, variant in {"balanced_fine": SelectConfig(metric=cfg.metric, granularity="fine"),
                          "balanced_coarse": SelectConfig(metric=cfg.metric, granularity="coarse"),
                          "score_only_fine": SelectConfig(metric=cfg.metric, strategy="score"),
                          "score_only_coarse": SelectConfig(metric=cfg.metric, granularity="coarse",
                                                            strategy="score")}.items():
        from alignlab.ambiguity.select import rescore

        idx = select_indices(rescore(scores, variant), cfg.train_size, variant)
        ablation[name] = {"size": len(idx), "visually_necessary": _visually_necessary([pool[i] for i in idx])}
    selection = {
        "pool_captions": len(pool), "pool_visually_necessary": _visually_necessary(pool),
        "selected_visually_necessary": _visually_necessary(selected),
        "ambiguous_candidates": sum(s.ambiguous for s in scores),
        "selected_from_ambiguous": min(len(selected_idx), sum(s.ambiguous for s in scores)),
        "key_words": key_words.most_common(), "wsd_seconds": round(wsd_seconds, 1),
        "pool_stats": corpus_stats(scores, cfg.granularity), "strategy_ablation": ablation}
    info(f"selection: {selection['selected_visually_necessary']:.3f} visually necessary "
         f"(pool {selection['pool_visually_necessary']:.3f})")

    # 3. the frozen visual encoder and its features
    t0 = time.time()
    encoder, vis_metrics = pretrain_visual_encoder(cfg.visual, seed=cfg.data_seed)
    visual = encoder.features(shapes_images(pool_ex + test_ex))
    vis_metrics["seconds"] = round(time.time() - t0, 1)
    contrast = contrastive_items(test_ex, cfg.contrastive_items)
    # One vocabulary for all conditions (no UNK confound between training sets).
    src_tok, tgt_tok = build_tokenizers(pool + test, unit=cfg.unit)

    # 4. train and evaluate every condition
    runs: list[dict[str, Any]] = []
    per_item: dict[tuple[str, str, int], dict[str, Any]] = {}
    for seed in seeds:
        rng = np.random.default_rng(derive_seed("3am-random-set", cfg.data_seed, seed) % (2**32))
        random_set = [pool[int(i)] for i in rng.choice(len(pool), size=cfg.train_size, replace=False)]
        for set_name, train_pairs in (("selected", selected), ("random", random_set)):
            for model_name in ("text", "visual"):
                t0 = time.time()
                mcfg = from_dict(MMTConfig, {**asdict(cfg.model), "fusion": cfg.fusion if model_name == "visual"
                                             else "none", "visual_dim": encoder.width,
                                             "visual_tokens": encoder.n_tokens})
                set_seed(derive_seed("3am-model", seed, set_name, model_name) % (2**31))
                model = MMTModel(mcfg, src_tok, tgt_tok)
                # Each model's loop folder: an interrupted experiment resumes where it stopped.
                log = train_model(model, train_pairs, cfg.train, seed=seed, visual=visual,
                                  desc=f"{set_name}/{model_name}/seed {seed}",
                                  run_dir=out / "models" / f"{set_name}-{model_name}-seed{seed}")
                metrics = evaluate_model(model, test, visual, encoder=encoder, contrastive=contrast,
                                         seed=seed, keep_per_item=True)
                per_item[(set_name, model_name, seed)] = metrics.pop("per_item")
                runs.append({"set": set_name, "model": model_name, "seed": seed,
                             "train_visually_necessary": _visually_necessary(train_pairs),
                             "final_train_loss": log[-1]["train_loss"], "seconds": round(time.time() - t0, 1),
                             "metrics": metrics})
                info(f"{set_name}/{model_name}/seed {seed}: sense {metrics['sense_acc']:.3f} "
                     f"(incongruent {metrics['sense_acc_incongruent']:.3f}), BLEU {metrics['bleu']:.1f}, "
                     f"contrastive {metrics.get('contrastive_acc', float('nan')):.3f} [{time.time() - t0:.0f} s]")

    # 5. aggregate
    keys = ["sense_acc", "sense_acc_incongruent", "sense_gap", "bleu", "bleu_incongruent", "bleu_gap", "chrf",
            "contrastive_acc", "sense_wrong_rate"]
    summary: dict[str, Any] = {}
    for set_name in ("selected", "random"):
        for model_name in ("text", "visual"):
            rs = [r for r in runs if r["set"] == set_name and r["model"] == model_name]
            summary[f"{set_name}/{model_name}"] = {k: summarize([r["metrics"][k] for r in rs]) for k in keys}
    comparisons = _comparisons(runs, per_item, seeds)
    verdict = _verdict(summary, comparisons, len(seeds), quick)
    sig = runs[0]["metrics"]["bleu_signature"] if runs else None
    result = {
        "task": "3am", "model": f"tiny-mmt ({cfg.fusion} fusion) vs text-only", "data": "shapesworld",
        "seeds": seeds, "quick": quick, "config": to_dict(cfg),
        "metrics": {k: {m: v["mean"] for m, v in s.items()} for k, s in summary.items()},
        "summary": summary, "comparisons": comparisons, "verdict": verdict, "selection": selection,
        "visual_encoder": vis_metrics, "bleu_signature": sig,
        "chrf_signature": runs[0]["metrics"]["chrf_signature"] if runs else None,
        "runs": runs,
        "definitions": {
            "sense_acc": "share of polysemous source nouns translated with the intended sense's Chinese word "
                         "(right image)",
            "sense_acc_incongruent": "the same with a shuffled image (seeded derangement over test captions)",
            "sense_gap": "sense_acc - sense_acc_incongruent: how much the model uses the image",
            "contrastive_acc": "CoMMuTE-style: share of right preferences between the two sense translations "
                               "under each of the two images (0.5 = image ignored)",
            "visually_necessary": "share of captions with a polysemous noun (their translation depends on "
                                  "the image)",
        },
    }
    result["corpus_comparison"] = _corpus_section(cfg)
    result["manifest"] = build_manifest(config=to_dict(cfg), seed=seeds, started=started)
    write_json(out / "results.json", result)
    write_text(out / "report.md", render_report(result))
    return result


def _welch(a: list[float], b: list[float]) -> dict[str, float]:
    with warnings.catch_warnings():  # identical values across seeds (e.g. text-only gaps of 0) warn in scipy
        warnings.simplefilter("ignore", RuntimeWarning)
        return welch_t_test(a, b)


def _comparisons(runs: list[dict[str, Any]], per_item: dict, seeds: list[int]) -> dict[str, Any]:
    def vals(set_name: str, model_name: str, key: str) -> list[float]:
        return [next(r["metrics"][key] for r in runs if r["set"] == set_name and r["model"] == model_name
                     and r["seed"] == s) for s in seeds]

    out: dict[str, Any] = {}
    for key in ("sense_gap", "sense_acc", "contrastive_acc", "bleu"):
        a, b = vals("random", "visual", key), vals("selected", "visual", key)
        out[f"visual_selected_minus_random/{key}"] = {
            **_welch(a, b), "paired_seed_p": paired_randomization_test(a, b),
            "seeds_where_selected_higher": int(sum(y > x for x, y in zip(a, b)))}
    for set_name in ("selected", "random"):
        a, b = vals(set_name, "text", "sense_acc"), vals(set_name, "visual", "sense_acc")
        out[f"{set_name}/visual_minus_text/sense_acc"] = {**_welch(a, b),
                                                          "paired_seed_p": paired_randomization_test(a, b)}
        # Congruent vs incongruent, per caption averaged over seeds, paired randomization over captions.
        cong = np.mean([per_item[(set_name, "visual", s)]["sense_congruent"] for s in seeds], axis=0)
        inc = np.mean([per_item[(set_name, "visual", s)]["sense_incongruent"] for s in seeds], axis=0)
        gaps = vals(set_name, "visual", "sense_gap")
        out[f"{set_name}/visual/congruent_minus_incongruent"] = {
            "delta": float(np.mean(cong - inc)) if len(cong) else float("nan"),
            "p_captions": paired_randomization_test(inc, cong) if len(cong) else float("nan"),
            "seed_gaps": gaps, "seed_summary": summarize(gaps)}
    # Per-caption comparison of the gaps: (gap of selected) - (gap of random), averaged over seeds.
    g_sel = np.mean([np.subtract(per_item[("selected", "visual", s)]["sense_congruent"],
                                 per_item[("selected", "visual", s)]["sense_incongruent"]) for s in seeds], axis=0)
    g_rnd = np.mean([np.subtract(per_item[("random", "visual", s)]["sense_congruent"],
                                 per_item[("random", "visual", s)]["sense_incongruent"]) for s in seeds], axis=0)
    out["visual_selected_minus_random/sense_gap"]["p_captions"] = (
        paired_randomization_test(g_rnd, g_sel) if len(g_sel) else float("nan"))
    return out


def _verdict(summary: dict[str, Any], comparisons: dict[str, Any], n_seeds: int,
             quick: bool = False) -> dict[str, Any]:
    c = comparisons["visual_selected_minus_random/sense_gap"]
    gap_sel = summary["selected/visual"]["sense_gap"]["mean"]
    gap_rnd = summary["random/visual"]["sense_gap"]["mean"]
    supported = (c["delta"] > 0 and (c["p"] < 0.05 if c["p"] == c["p"] else False)
                 and c["seeds_where_selected_higher"] == n_seeds)
    text = (f"Visual model's congruent-incongruent sense-accuracy gap: {gap_sel:.3f} when trained on the "
            f"ambiguity-selected set vs {gap_rnd:.3f} on the random set (difference {c['delta']:+.3f}, "
            f"Welch p = {c['p']:.3g} over {n_seeds} seeds; selected higher in {c['seeds_where_selected_higher']}"
            f"/{n_seeds} seeds; per-caption randomization p = {c['p_captions']:.3g}).")
    if supported:
        claim = "supported: models trained on ambiguity-selected data use the image more"
    elif c["delta"] > 0:
        claim = "not established: the gap is larger with selected data but not significantly so in every seed"
    else:
        claim = "not supported: selected data did not increase the model's use of the image"
    if quick:
        claim = "no verdict (quick settings check the pipeline, not the claim): " + claim
    return {"claim": claim, "supported": bool(supported) and not quick, "text": text}


def _fmt(s: dict[str, float], pct: bool = False) -> str:
    k = 100.0 if pct else 1.0
    if s["n"] > 1:
        return f"{s['mean'] * k:.3f} ± {s['sd'] * k:.3f}"
    return f"{s['mean'] * k:.3f}"


def render_report(r: dict[str, Any]) -> str:
    cfg = r["config"]
    sel = r["selection"]
    lines = ["# 3AM: ambiguity-aware selection of MMT training data (ShapesWorld)", "",
             f"Seeds: {', '.join(map(str, r['seeds']))}{' (quick settings)' if r['quick'] else ''}. "
             f"Pool: {sel['pool_captions']} captions ({cfg['pool_images']} scenes, polysemous-object rate "
             f"{cfg['pool_polysemous_rate']}); training sets of {cfg['train_size']} captions; test: "
             f"{cfg['test_images']} scenes (rate {cfg['test_polysemous_rate']}). Visual model: "
             f"{cfg['fusion']} fusion over a frozen ShapesWorld-pretrained image tower "
             f"(held-out cell accuracy {r['visual_encoder']['cell_acc']:.3f}, sense accuracy "
             f"{r['visual_encoder']['sense_acc']:.3f}).", "",
             f"**Verdict: {r['verdict']['claim']}.** {r['verdict']['text']}", "",
             "## Selection", "",
             f"Visually necessary captions (a polysemous noun): pool {sel['pool_visually_necessary']:.3f}, "
             f"ambiguity-selected set {sel['selected_visually_necessary']:.3f}, random sets "
             f"{np.mean([x['train_visually_necessary'] for x in r['runs'] if x['set'] == 'random']):.3f} (mean). "
             f"{sel['ambiguous_candidates']} pool captions had an ambiguous word; WSD scoring took "
             f"{sel['wsd_seconds']} s.", "",
             "Key words of the selection: " + ", ".join(f"{w} {n}" for w, n in sel["key_words"][:15]) + ".", "",
             "Selector variants (share of visually necessary captions in a selection of the same size): "
             + "; ".join(f"{k} {v['visually_necessary']:.3f}" for k, v in sel["strategy_ablation"].items()) + ".",
             "", "## Translation results (mean ± sd over seeds)", "",
             "| training set | model | sense acc | sense acc (shuffled image) | gap | contrastive | BLEU | "
             "BLEU (shuffled) | chrF |", "|---|---|---|---|---|---|---|---|---|"]
    for key, s in r["summary"].items():
        set_name, model_name = key.split("/")
        lines.append(f"| {set_name} | {model_name} | {_fmt(s['sense_acc'])} | {_fmt(s['sense_acc_incongruent'])} | "
                     f"{_fmt(s['sense_gap'])} | {_fmt(s['contrastive_acc'])} | {s['bleu']['mean']:.1f} ± "
                     f"{s['bleu']['sd']:.1f} | {s['bleu_incongruent']['mean']:.1f} | {s['chrf']['mean']:.1f} |")
    lines += ["", "## Tests", ""]
    for k, c in r["comparisons"].items():
        if "congruent_minus_incongruent" in k:
            lines.append(f"- {k}: delta {c['delta']:+.3f} (per-caption randomization p = {c['p_captions']:.3g}); "
                         f"per-seed gaps {', '.join(f'{g:.3f}' for g in c['seed_gaps'])}")
        else:
            extra = f", per-caption p = {c['p_captions']:.3g}" if "p_captions" in c else ""
            lines.append(f"- {k}: delta {c['delta']:+.3f}, Welch p = {c['p']:.3g}, paired-seed randomization "
                         f"p = {c['paired_seed_p']:.3g}{extra}")
    lines += ["", f"BLEU signature: `{r['bleu_signature']}`; chrF signature: `{r['chrf_signature']}`.", ""]
    cc = r.get("corpus_comparison")
    if cc and "corpora" in cc:
        names = list(cc["corpora"])
        lines += ["## Real captions: 3AM vs Multi30K (validation sets)", "",
                  "| statistic | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k in ("captions", "share_with_polysemous_noun", "share_with_ambiguous_word", "mean_senses_per_noun",
                  "mean_entropy_bits", "mean_caption_score", "distinct_ambiguous_words_at_equal_size"):
            vals = [cc["corpora"][n][k] for n in names]
            lines.append(f"| {k} | " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in vals)
                         + " |")
        for k, t in cc.get("tests", {}).items():
            lines.append(f"\n{k}: {t['b']} − {t['a']} = {t['delta']:+.4f} (Welch p = {t['p']:.3g})")
        lines.append("")
    elif cc:
        lines += ["## Real captions", "", f"Skipped: {cc.get('skipped')}", ""]
    lines += [f"Command: `alignlab experiment 3am{' --quick' if r['quick'] else ''} --seeds "
              f"{','.join(map(str, r['seeds']))}`. Wall time {r['manifest']['wall_s']:.0f} s.", ""]
    return "\n".join(lines)
