"""Does CommonIT batching beat random batching? A small-scale test of the paper's headline claim.

Claim (Rao et al., EMNLP 2024): making every mini-batch come from one group — by Task, by Embedding
cluster of the instruction, or by response Length — improves instruction tuning over random batching.

Test: a tiny GPT-2 is trained from scratch with the Hugging Face Trainer on a synthetic six-task
instruction set (:mod:`alignlab.commonit.tasks`: add, reverse, sort, count, copy, date), four ways that
differ only in how examples are grouped into optimizer steps:

* ``random`` — :class:`CommonITBatchSampler` in ``mode="random"``: exactly the same examples, steps and
  step sizes as CommonIT-Task, with the examples of each step drawn across groups;
* ``task`` — one task per step; ``embedding`` — one k-means cluster (k = number of tasks) of the
  all-MiniLM-L6-v2 embedding of the instruction per step; ``length`` — one quantile bin of response
  length (characters) per step.

Same seed -> same initial weights and the same per-epoch shuffles for every method, so the methods are
compared pairwise per seed. Metric: exact match of the greedy answer on held-out examples (test items
whose ``(task, input)`` occurs in training are removed), overall and per task. Significance: per method vs
random, the exact paired sign-flip randomization test over seeds (the unit of replication is a training
run), a paired bootstrap CI of the mean difference, Holm's correction over the three comparisons, and,
as a secondary view, a randomization test over (seed, test item) pairs. The teacher-forced NLL of the
reference answers is reported beside EM.

Fine-tuning variant (``--set init_epochs=4``): each seed's model is first trained with random batches
on a separate sample of the same tasks, and every method continues from that checkpoint (closer to
the paper, which fine-tunes pretrained models at a small learning rate).

Full settings: 32 runs, about 20 minutes of CPU; ``--quick`` runs in seconds (tests, demo). Results
and the verdict: docs/results/commonit.md.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.config import dump_yaml, from_dict, merge
from alignlab.core.io import read_json, write_json, write_text
from alignlab.core.manifest import code_hash
from alignlab.core.progress import info
from alignlab.core.threads import torch_threads

DESCRIPTION = ("CommonIT: random vs Task / Embedding / Length batching of a tiny GPT-2 on six synthetic "
               "instruction tasks (exact match per task, several seeds)")

METHODS = ("random", "task", "embedding", "length")


@dataclass
class CommonITExperimentConfig:
    n_train: int = 2400
    n_test: int = 600
    data_seed: int = 0
    task_weights: list[float] = field(default_factory=lambda: [1.0] * 6)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    encoder: str = "minilm"          # embedding grouping: minilm (packaged) or tfidf
    k: int = 6                       # embedding clusters
    length_bins: int = 4             # quantile bins of response length (characters)
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    batch_size: int = 32
    grad_accum: int = 1
    epochs: float = 8.0
    lr: float = 3e-3
    leftover: str = "partial"
    small_groups: str = "merge"
    max_new_tokens: int = 16
    threads: int = 1                 # torch threads per run (the tiny model gains nothing from more)
    # Fine-tuning variant: first train each seed's model with random batching for init_epochs (at
    # init_lr) on a separate sample of the same tasks, then train every method from that checkpoint.
    init_epochs: float = 0.0
    init_lr: float = 3e-3


FULL: dict[str, Any] = {}
QUICK: dict[str, Any] = {"n_train": 180, "n_test": 60, "encoder": "tfidf", "n_layer": 1, "n_embd": 16,
                         "n_head": 2, "batch_size": 8, "epochs": 1.0, "max_new_tokens": 12}
FULL_SEEDS = list(range(8))
QUICK_SEEDS = [0, 1]


def _init_records(cfg: CommonITExperimentConfig) -> list[Any]:
    from alignlab.commonit import tasks
    from alignlab.commonit.grouping import normalize_record

    rows = tasks.generate(cfg.n_train, cfg.data_seed, "init", tasks.TASKS, cfg.task_weights)
    return [normalize_record(r, f"init[{i}]", source="synthetic") for i, r in enumerate(rows)]


def _init_state(seed: int, init: list[Any], vocab_texts: list[str], cfg: CommonITExperimentConfig,
                cache: Path) -> dict[str, Any]:
    """The seed's starting checkpoint for the fine-tuning variant (random batching, cached)."""
    import torch

    from alignlab.commonit.hf import TrainConfig, fit_lm

    if cache.exists():
        return torch.load(cache, weights_only=True)
    tcfg = TrainConfig(n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head, batching="random",
                       leftover=cfg.leftover, small_groups=cfg.small_groups, batch_size=cfg.batch_size,
                       grad_accum=cfg.grad_accum, epochs=cfg.init_epochs, lr=cfg.init_lr, max_length=96, seed=seed)
    fitted = fit_lm(init, [r.task for r in init], tcfg, cache.parent / "work", quiet=True, extra_texts=vocab_texts)
    state = {k: v.detach().clone() for k, v in fitted.model.state_dict().items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    from alignlab.core.io import atomic_path

    with atomic_path(cache) as tmp:
        torch.save(state, tmp)
    return state


def _data(cfg: CommonITExperimentConfig) -> tuple[list[Any], list[Any]]:
    from alignlab.commonit import tasks
    from alignlab.commonit.grouping import normalize_record

    names = tasks.TASKS
    train_rows = tasks.generate(cfg.n_train, cfg.data_seed, "train", names, cfg.task_weights)
    seen = {(r["task"], r["input"]) for r in train_rows}
    # Draw extra test rows so that about n_test remain after removing those seen in training.
    test_rows = [r for r in tasks.generate(cfg.n_test * 2, cfg.data_seed, "test", names, cfg.task_weights)
                 if (r["task"], r["input"]) not in seen][: cfg.n_test]
    train = [normalize_record(r, f"train[{i}]", source="synthetic") for i, r in enumerate(train_rows)]
    test = [normalize_record(r, f"test[{i}]", source="synthetic") for i, r in enumerate(test_rows)]
    return train, test


def _groupings(train: list[Any], cfg: CommonITExperimentConfig) -> dict[str, dict[str, Any]]:
    from alignlab.commonit.grouping import GroupingConfig, group_records, purity

    tasks_ = [r.task for r in train]
    specs = {
        "task": GroupingConfig(metric="task"),
        "embedding": GroupingConfig(metric="embedding", encoder=cfg.encoder, k=cfg.k, seed=cfg.data_seed),
        "length": GroupingConfig(metric="length", tokenizer="chars", bins=cfg.length_bins),
    }
    out = {}
    for name, gcfg in specs.items():
        if name not in cfg.methods and not (name == "task" and "random" in cfg.methods):
            continue
        t0 = time.time()
        res = group_records(train, gcfg)
        man = {k: v for k, v in res.manifest.items() if k != "config"}
        out[name] = {"group_ids": res.group_ids, "manifest": man, "agreement_with_tasks": purity(res.group_ids, tasks_),
                     "seconds": round(time.time() - t0, 2)}
    return out


def _run_one(method: str, seed: int, train: list[Any], test: list[Any], groups: dict[str, Any],
             cfg: CommonITExperimentConfig, workdir: Path, vocab_texts: list[str] | None = None,
             init_state: dict[str, Any] | None = None) -> dict[str, Any]:

    from alignlab.commonit.hf import (
        InstructionLMDataset,
        TrainConfig,
        fit_lm,
        greedy_answers,
        prompt_of,
        response_nll,
        step_purity,
    )

    gids = groups["task" if method == "random" else method]["group_ids"]
    tcfg = TrainConfig(n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head,
                       batching="random" if method == "random" else "commonit", leftover=cfg.leftover,
                       small_groups=cfg.small_groups, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                       epochs=cfg.epochs, lr=cfg.lr, max_length=96, seed=seed)
    test_prompts = [prompt_of(r.instruction, r.input) for r in test]
    fitted = fit_lm(train, gids, tcfg, workdir, quiet=True,
                    extra_texts=test_prompts if vocab_texts is None else vocab_texts, init_state=init_state)
    t0 = time.time()
    answers = greedy_answers(fitted.model, test_prompts, fitted.encode, fitted.decode,
                             max_new_tokens=cfg.max_new_tokens, eos_id=fitted.eos_id, pad_id=fitted.pad_id)
    correct = [a == r.response for a, r in zip(answers, test)]
    nll = response_nll(fitted.model, InstructionLMDataset(test_prompts, [r.response for r in test], fitted.encode,
                                                          fitted.eos_id, 96))
    per_task: dict[str, list[bool]] = {}
    nll_task: dict[str, list[float]] = {}
    for r, c, x in zip(test, correct, nll):
        per_task.setdefault(r.task, []).append(c)
        nll_task.setdefault(r.task, []).append(x)
    tasks_ = [r.task for r in train]
    return {"method": method, "seed": seed, "em": float(np.mean(correct)),
            "em_per_task": {t: float(np.mean(v)) for t, v in sorted(per_task.items())},
            "test_nll": float(np.mean(nll)),
            "test_nll_per_task": {t: float(np.mean(v)) for t, v in sorted(nll_task.items())},
            "correct": [int(c) for c in correct], "train_loss": fitted.train_loss,
            "loss_history": fitted.loss_history,
            "optimizer_steps": fitted.optimizer_steps,
            "task_pure_steps": step_purity(fitted.micro_batches, tasks_, cfg.grad_accum),
            "examples_trained": sum(len(b) for b in fitted.micro_batches),
            "train_s": round(fitted.wall_s, 2), "eval_s": round(time.time() - t0, 2),
            "examples": [{"prompt": p, "answer": a, "expected": r.response}
                         for p, a, r in list(zip(test_prompts, answers, test))[:3]]}


def _holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone)."""
    items = sorted(pvalues.items(), key=lambda kv: kv[1])
    m = len(items)
    out, running = {}, 0.0
    for i, (k, p) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def _analyse(runs: list[dict[str, Any]], methods: list[str], seeds: list[int]) -> dict[str, Any]:
    from alignlab.core.stats import paired_bootstrap, paired_randomization_test, summarize

    by = {(r["method"], r["seed"]): r for r in runs}
    summary: dict[str, Any] = {}
    for m in methods:
        ems = [by[(m, s)]["em"] * 100 for s in seeds]
        task_names = sorted(by[(m, seeds[0])]["em_per_task"])
        summary[m] = {"em_pct": summarize(ems) if len(ems) > 1 else {"mean": ems[0], "n": 1},
                      "em_pct_per_seed": ems,
                      "per_task_em_pct": {t: float(np.mean([by[(m, s)]["em_per_task"][t] * 100 for s in seeds]))
                                          for t in task_names},
                      "test_nll": float(np.mean([by[(m, s)]["test_nll"] for s in seeds])),
                      "test_nll_per_task": {t: float(np.mean([by[(m, s)]["test_nll_per_task"][t] for s in seeds]))
                                            for t in task_names},
                      "task_pure_steps": float(np.mean([by[(m, s)]["task_pure_steps"] for s in seeds])),
                      "train_loss": float(np.mean([by[(m, s)]["train_loss"] for s in seeds]))}
    comparisons: dict[str, Any] = {}
    if "random" in methods and len(seeds) > 1:
        base = [by[("random", s)]["em"] * 100 for s in seeds]
        for m in methods:
            if m == "random":
                continue
            other = [by[(m, s)]["em"] * 100 for s in seeds]
            items_a = np.concatenate([by[("random", s)]["correct"] for s in seeds]).astype(float)
            items_b = np.concatenate([by[(m, s)]["correct"] for s in seeds]).astype(float)
            per_task = {}
            for t in summary[m]["per_task_em_pct"]:
                a = [by[("random", s)]["em_per_task"][t] * 100 for s in seeds]
                b = [by[(m, s)]["em_per_task"][t] * 100 for s in seeds]
                per_task[t] = {"delta_pct": float(np.mean(b) - np.mean(a)),
                               "p_seeds": paired_randomization_test(a, b)}
            nll_a = [by[("random", s)]["test_nll"] for s in seeds]
            nll_b = [by[(m, s)]["test_nll"] for s in seeds]
            comparisons[m] = {
                "delta_em_pct": float(np.mean(other) - np.mean(base)),
                "delta_test_nll": float(np.mean(nll_b) - np.mean(nll_a)),
                "p_seeds_test_nll": paired_randomization_test(nll_a, nll_b),
                "wins": int(sum(b > a for a, b in zip(base, other))),
                "losses": int(sum(b < a for a, b in zip(base, other))),
                "p_seeds": paired_randomization_test(base, other),
                "bootstrap_seeds": paired_bootstrap(base, other, seed=0),
                "p_items": paired_randomization_test(items_a, items_b, n_resamples=20000, seed=0),
                "per_task": per_task,
            }
        holm = _holm({m: c["p_seeds"] for m, c in comparisons.items()})
        for m in comparisons:
            comparisons[m]["p_seeds_holm"] = holm[m]
    return {"summary": summary, "comparisons": comparisons}


def _verdict(analysis: dict[str, Any], n_seeds: int) -> str:
    comps = analysis["comparisons"]
    if not comps:
        return "not enough seeds for a significance test (quick settings); no verdict"
    better = [m for m, c in comps.items() if c["delta_em_pct"] > 0 and c["p_seeds_holm"] < 0.05]
    worse = [m for m, c in comps.items() if c["delta_em_pct"] < 0 and c["p_seeds_holm"] < 0.05]
    parts = []
    if better:
        parts.append("CommonIT-" + "/".join(better) + " beat random batching (Holm-adjusted p < 0.05 over "
                     f"{n_seeds} seeds)")
    if worse:
        parts.append("CommonIT-" + "/".join(worse) + " did worse than random batching (Holm-adjusted p < 0.05)")
    rest = [m for m in comps if m not in better and m not in worse]
    if rest:
        parts.append("no significant difference for CommonIT-" + "/".join(rest))
    # The exact sign-flip test over n seeds cannot go below 2 / 2^n (times the Holm factor).
    floor = min(1.0, len(comps) * 2.0 / 2 ** n_seeds)
    if floor >= 0.05:
        parts.append(f"with {n_seeds} seeds the smallest possible Holm-adjusted p is {floor:.2f}, so this run "
                     "cannot show significance either way")
    return "; ".join(parts)


def run(out: Path, *, quick: bool, seeds: list[int] | None, overrides: dict) -> dict:
    from alignlab.core.manifest import build_manifest
    from alignlab.core.seed import derive_seed

    started = time.time()
    out = Path(out)
    cfg = from_dict(CommonITExperimentConfig, merge(QUICK if quick else FULL, overrides or {}))
    seeds = list(seeds) if seeds is not None else (QUICK_SEEDS if quick else FULL_SEEDS)
    bad = sorted(set(cfg.methods) - set(METHODS))
    if bad:
        from alignlab.core.errors import ConfigError

        raise ConfigError(f"unknown method(s) {', '.join(bad)}", fix=f"choose from {', '.join(METHODS)}")
    train, test = _data(cfg)
    info(f"commonit experiment: {len(train)} train / {len(test)} test examples, seeds {seeds}")
    dump_yaml(out / "config.yaml", {**asdict(cfg), "seeds": seeds, "quick": quick})
    groups = _groupings(train, cfg)
    # Trainer.train() starts with gc.collect(); freezing the long-lived objects made so far (torch,
    # transformers, the data) keeps that from costing about a second per run.
    gc.collect()
    gc.freeze()
    runs: list[dict[str, Any]] = []
    key = derive_seed(repr(sorted(asdict(cfg).items())), code_hash())  # runs of older code are not reused
    vocab_texts = init = None
    if cfg.init_epochs > 0:
        from alignlab.commonit.hf import prompt_of

        init = _init_records(cfg)
        # One character vocabulary for both stages: every text of the init, train and test sets.
        vocab_texts = [t for r in (*init, *train, *test) for t in (prompt_of(r.instruction, r.input), r.response)]
    with torch_threads(cfg.threads):  # pinned: the same command gives the same numbers elsewhere
        for seed in seeds:
            init_state = None
            if init is not None:
                init_state = _init_state(seed, init, vocab_texts, cfg, out / "init" / f"seed{seed}-{key:x}.pt")
            for method in cfg.methods:
                # Each run is cached under the config's hash, so an interrupted full run resumes.
                cache = out / "runs" / f"{method}-seed{seed}-{key:x}.json"
                if cache.exists():
                    runs.append(read_json(cache))
                    continue
                t0 = time.time()
                r = _run_one(method, seed, train, test, groups, cfg, out / "work", vocab_texts, init_state)
                write_json(cache, r)
                runs.append(r)
                info(f"  {method:>9} seed {seed}: EM {r['em'] * 100:.1f}% ({time.time() - t0:.0f} s)")
    analysis = _analyse(runs, cfg.methods, seeds)
    verdict = _verdict(analysis, len(seeds))
    grouping_info = {k: {"manifest": v["manifest"], "agreement_with_tasks": v["agreement_with_tasks"],
                         "seconds": v["seconds"]} for k, v in groups.items()}
    result = {"task": "commonit-batching", "model": f"tiny-gpt2 {cfg.n_layer}x{cfg.n_embd}",
              "data": f"synthetic-6task n_train={len(train)} n_test={len(test)}", "seeds": seeds,
              "metrics": {m: {"em_pct_mean": s["em_pct"]["mean"], **{f"em_pct_{t}": v for t, v in
                                                                      s["per_task_em_pct"].items()}}
                          for m, s in analysis["summary"].items()},
              "definitions": {"em_pct": "exact match of the greedy answer with the reference, % of test items",
                              "test_nll": "mean per-token negative log-likelihood of the reference response "
                                          "(teacher forcing), nats, averaged over test items",
                              "task_pure_steps": "share of optimizer steps whose examples all share one task",
                              "p_seeds": "exact paired sign-flip randomization test over seeds (two-sided)",
                              "p_items": "paired randomization test over (seed, test item) pairs"},
              "analysis": analysis, "groupings": grouping_info, "verdict": verdict,
              "runs": [{k: v for k, v in r.items() if k != "correct"} for r in runs],
              "quick": quick,
              "manifest": build_manifest(config=asdict(cfg), seed=None, started=started)}
    write_json(out / "results.json", result)
    write_text(out / "report.md", render_report(result, cfg, quick))
    return result


def render_report(result: dict[str, Any], cfg: CommonITExperimentConfig, quick: bool) -> str:
    a = result["analysis"]
    seeds = result["seeds"]
    cmd = f"alignlab experiment commonit{' --quick' if quick else ''} --seeds {seeds[0]}-{seeds[-1]}"
    lines = ["# CommonIT: does one-group-per-step batching beat random batching?", "",
             f"Command: `{cmd}` ({'quick' if quick else 'full'} settings). Data: {result['data']}; model: "
             f"{result['model']} trained from scratch, batch {cfg.batch_size} × accumulation {cfg.grad_accum}, "
             f"{cfg.epochs:g} epochs, lr {cfg.lr:g}; seeds {', '.join(map(str, seeds))}."
             + (f" Every run starts from the seed's checkpoint after {cfg.init_epochs:g} epochs of random-batched "
                f"training at lr {cfg.init_lr:g} on a separate sample of {cfg.n_train} examples of the same tasks "
                "(fine-tuning variant)." if cfg.init_epochs > 0 else ""), "",
             "## Groupings", "", "| metric | groups | sizes | purity vs task | NMI vs task |", "|---|---|---|---|---|"]
    for name, g in result["groupings"].items():
        sizes = g["manifest"]["group_sizes"]
        lines.append(f"| {name} | {len(sizes)} | {', '.join(str(v) for v in sizes.values())} | "
                     f"{g['agreement_with_tasks']['purity']:.3f} | {g['agreement_with_tasks']['nmi']:.3f} |")
    if "length" in result["groupings"]:
        lines += ["", f"Length bin edges (characters of the response): "
                      f"{result['groupings']['length']['manifest']['bin_edges']}."]
    task_names = sorted(next(iter(a["summary"].values()))["per_task_em_pct"])
    lines += ["", "## Exact match (%), mean over seeds", "",
              "| method | overall (mean ± sd) | " + " | ".join(task_names)
              + " | test NLL (nats/token) | task-pure steps | train loss |",
              "|---|---|" + "---|" * len(task_names) + "---|---|---|"]
    for m, s in a["summary"].items():
        em = s["em_pct"]
        sd = f" ± {em['sd']:.1f}" if "sd" in em else ""
        lines.append(f"| {m} | {em['mean']:.1f}{sd} | " + " | ".join(f"{s['per_task_em_pct'][t]:.1f}"
                                                                     for t in task_names)
                     + f" | {s['test_nll']:.3f} | {s['task_pure_steps']:.2f} | {s['train_loss']:.3f} |")
    if a["comparisons"]:
        lines += ["", "## Against random batching", "",
                  "| method | Δ EM (pts) | 95% CI (bootstrap over seeds) | wins/losses | p (seeds) | p Holm | "
                  "p (seed × item) | Δ test NLL | p (seeds, NLL) |", "|---|---|---|---|---|---|---|---|---|"]
        for m, c in a["comparisons"].items():
            b = c["bootstrap_seeds"]
            lines.append(f"| {m} | {c['delta_em_pct']:+.2f} | [{b['ci_low']:+.2f}, {b['ci_high']:+.2f}] | "
                         f"{c['wins']}/{c['losses']} | {c['p_seeds']:.3f} | {c['p_seeds_holm']:.3f} | "
                         f"{c['p_items']:.4f} | {c['delta_test_nll']:+.3f} | {c['p_seeds_test_nll']:.3f} |")
        lines += ["", "Per-task Δ EM (pts) against random (p over seeds in brackets):", "",
                  "| method | " + " | ".join(task_names) + " |", "|---|" + "---|" * len(task_names)]
        for m, c in a["comparisons"].items():
            lines.append(f"| {m} | " + " | ".join(f"{c['per_task'][t]['delta_pct']:+.1f} ({c['per_task'][t]['p_seeds']:.2f})"
                                                  for t in task_names) + " |")
    lines += ["", f"**Verdict:** {result['verdict']}.", ""]
    return "\n".join(lines)
