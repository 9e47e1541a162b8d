"""Does CommonIT batching beat random batching? A small-scale, pre-registered test of the paper's claim.

Claim (Rao et al., EMNLP 2024): making every mini-batch come from one group — by Task, by Embedding
cluster of the instruction, or by response Length — improves instruction tuning over random batching.

Test. A tiny GPT-2 (character tokenizer, built from a config) is tuned with the Hugging Face Trainer on
a synthetic six-task instruction set (:mod:`alignlab.commonit.tasks`) whose training mix is long-tailed:
two tasks are rare, so their task groups hold fewer examples than one optimizer step. The arms differ only in
how the training examples are put into optimizer steps:

* ``random`` — :class:`CommonITBatchSampler` with ``mode="random"``: the same examples, steps and step
  sizes as CommonIT-Task, each step drawn across groups;
* ``task`` / ``embedding`` / ``length`` — one task / one k-means cluster of the instruction embedding /
  one quantile bin of response length per step; groups smaller than a step are merged (the sampler's
  default);
* ``task_drop`` — CommonIT-Task with the paper's treatment of small groups: groups with fewer examples
  than one step are dropped (the run records how many examples that leaves out).

Regime. The training regime (from scratch, or a fine-tuning phase from a shared base model trained with
random batches on a separate balanced sample) is chosen on a DEV split with dev-only seeds by a rule
declared in the config, before the test runs; the choice is fixed in the config (``regime``) and the run
re-checks it on dev. The chosen regime is run at 2 learning rates x 2 batch sizes. Metric: exact match
(EM, %) of the greedy answer on a held-out test set balanced over tasks (no test item shares
``(task, input)`` with any training, base or dev item). Claims are declared in ``claims`` and analysed by
:mod:`alignlab.core.analysis` (paired by seed, sign-flip test, Holm, TOST at the margin).

Results and the verdicts: docs/results/commonit.md (rendered from docs/results/commonit.json).
"""

from __future__ import annotations

import gc
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.config import dump_yaml
from alignlab.core.config import experiment_config as _experiment_config
from alignlab.core.errors import ConfigError
from alignlab.core.io import read_json, write_json
from alignlab.core.progress import info
from alignlab.core.threads import torch_threads

NAME = "commonit"
DESCRIPTION = (
    "CommonIT: random vs Task / Length batching (and Task with small groups dropped) of a tiny GPT-2 "
    "on six synthetic instruction tasks; regime chosen on dev, 2 lr x 2 batch sizes, pre-registered claims"
)
SUMMARY = {
    "paper": "CommonIT (Rao et al., EMNLP 2024)",
    "claim": "one group (task / length) per mini-batch improves instruction tuning over random batching",
}

ARMS = ("random", "task", "embedding", "length", "task_drop")
GROUPING_OF = {
    "random": "task",
    "task": "task",
    "embedding": "embedding",
    "length": "length",
    "task_drop": "task",
}
LR_NAMES = ("lr_high", "lr_low")
BATCH_NAMES = ("b_small", "b_large")
MEAN_METRIC = "em@mean"
SELECTION_RULE = (
    "for each candidate regime, train random and task batching at the candidate's first learning rate "
    "and the first batch size with the dev seeds, score = mean dev EM over both arms and all dev "
    "seeds; the highest score wins (a rule neutral between the arms: it picks the recipe that trains "
    "the best models, not the one where CommonIT looks best)"
)


def metric_name(lr_name: str, batch_name: str) -> str:
    return f"em@{lr_name},{batch_name}"


def _default_claims() -> list[dict[str, Any]]:
    """The pre-registered plan (fixed before the full run; margin 1 EM point = 3 of 300 test items)."""
    claims = [
        {
            "name": f"task vs random ({lr}, {b})",
            "treatment": "task",
            "control": "random",
            "metric": metric_name(lr, b),
            "direction": "improves",
            "margin": 1.0,
        }
        for lr in LR_NAMES
        for b in BATCH_NAMES
    ]
    claims += [
        {
            "name": "length vs random (mean of 4 settings)",
            "treatment": "length",
            "control": "random",
            "metric": MEAN_METRIC,
            "direction": "improves",
            "margin": 1.0,
        },
        {
            "name": "task_drop vs random (mean of 4 settings)",
            "treatment": "task_drop",
            "control": "random",
            "metric": MEAN_METRIC,
            "direction": "improves",
            "margin": 1.0,
        },
        {
            "name": "task_drop vs task (mean of 4 settings)",
            "treatment": "task_drop",
            "control": "task",
            "metric": MEAN_METRIC,
            "direction": "hurts",
            "margin": 1.0,
        },
    ]
    return claims


def _default_regimes() -> dict[str, dict[str, Any]]:
    return {
        "scratch": {"base": False, "epochs": 12.0, "lrs": [3e-3, 1e-3]},
        "finetune": {"base": True, "epochs": 3.0, "lrs": [1e-3, 3e-4]},
    }


@dataclass
class CommonITExperimentConfig:
    # data: a long-tailed training mix (tasks in tasks.TASKS order: add reverse sort count copy date);
    # dev and test are balanced over the six tasks
    n_train: int = 600
    n_dev: int = 300
    n_test: int = 300
    data_seed: int = 0
    task_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 0.08, 1.0, 0.08])
    # groupings
    encoder: str = "minilm"  # embedding grouping: minilm (packaged) or tfidf
    k: int = 6  # embedding clusters
    length_bins: int = 4  # quantile bins of response length (characters)
    # model
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    max_new_tokens: int = 12
    # the shared base model of the fine-tuning regime: random batches on a separate, balanced sample
    base_n: int = 2400
    base_epochs: float = 8.0
    base_lr: float = 3e-3
    base_batch: int = 32
    base_seed: int = 12345
    # regimes: candidates, and the one fixed (from the dev selection) before the full run
    regimes: dict[str, dict[str, Any]] = field(default_factory=_default_regimes)
    regime: str = "finetune"
    dev_seeds: list[int] = field(default_factory=lambda: [100, 101, 102])
    # the replication grid of the chosen regime: its 2 learning rates x these 2 batch sizes
    batch_sizes: list[int] = field(default_factory=lambda: [16, 32])
    arms: list[str] = field(default_factory=lambda: ["random", "task", "length", "task_drop"])
    grad_accum: int = 1
    leftover: str = "partial"
    threads: int = 1  # torch threads per run, pinned (the tiny model gains nothing from more)
    claims: list[dict[str, Any]] = field(default_factory=_default_claims)


QUICK: dict[str, Any] = {
    "n_train": 150,
    "n_dev": 40,
    "n_test": 60,
    "encoder": "tfidf",
    "n_layer": 1,
    "n_embd": 16,
    "n_head": 2,
    "max_new_tokens": 12,
    "base_n": 120,
    "base_epochs": 1.0,
    "base_batch": 8,
    "regimes": {
        "scratch": {"base": False, "epochs": 1.0, "lrs": [3e-3, 1e-3]},
        "finetune": {"base": True, "epochs": 1.0, "lrs": [1e-3, 3e-4]},
    },
    "dev_seeds": [100],
    "batch_sizes": [4, 8],
}
FULL_SEEDS = list(range(10))
QUICK_SEEDS = [0, 1]


# ------------------------------------------------------------------- config checks (before any training)


def settings_of(cfg: CommonITExperimentConfig) -> list[dict[str, Any]]:
    """The replication grid of the chosen regime: label, metric, lr, batch size."""
    lrs = cfg.regimes[cfg.regime]["lrs"]
    return [
        {"label": f"{ln}, {bn}", "metric": metric_name(ln, bn), "lr": float(lr), "batch_size": int(bs)}
        for ln, lr in zip(LR_NAMES, lrs)
        for bn, bs in zip(BATCH_NAMES, cfg.batch_sizes)
    ]


def _check(cfg: CommonITExperimentConfig) -> list[Any]:
    from alignlab.core.analysis import claims_from_config

    bad = sorted(set(cfg.arms) - set(ARMS))
    if bad:
        raise ConfigError(
            f"unknown arm(s) {', '.join(bad)}", where="config key arms", fix=f"choose from {', '.join(ARMS)}"
        )
    if cfg.regime not in cfg.regimes:
        raise ConfigError(
            f"regime {cfg.regime!r} is not a candidate",
            where="config key regime",
            fix=f"use one of: {', '.join(cfg.regimes)}",
        )
    for name, r in cfg.regimes.items():
        if (
            set(r) != {"base", "epochs", "lrs"}
            or len(r["lrs"]) != 2
            or not all(float(x) > 0 for x in r["lrs"])
        ):
            raise ConfigError(
                f"regime {name!r} must have base, epochs and two positive lrs (high first), got {r!r}",
                where="config key regimes",
                fix="e.g. {base: true, epochs: 3, lrs: [0.001, 0.0003]}",
            )
    if len(cfg.batch_sizes) != 2 or min(cfg.batch_sizes) < 1:
        raise ConfigError(
            f"batch_sizes must be two positive sizes (small first), got {cfg.batch_sizes!r}",
            where="config key batch_sizes",
            fix="e.g. [16, 32]",
        )
    if len(cfg.task_weights) != 6:
        raise ConfigError(
            "task_weights needs one weight per task (6)",
            where="config key task_weights",
            fix="add reverse sort count copy date, e.g. [1, 1, 1, 0.08, 1, 0.08]",
        )
    metrics = {s["metric"] for s in settings_of(cfg)} | {MEAN_METRIC}
    return claims_from_config(cfg.claims, arms=cfg.arms, metrics=sorted(metrics))


# ------------------------------------------------------------------- data, groupings, runs


def _records(rows: list[dict[str, Any]], split: str) -> list[Any]:
    from alignlab.commonit.grouping import normalize_record

    return [normalize_record(r, f"{split}[{i}]", source="synthetic") for i, r in enumerate(rows)]


def _data(cfg: CommonITExperimentConfig) -> dict[str, list[Any]]:
    """train (long-tailed), base (balanced, separate), dev and test (balanced, unseen, disjoint)."""
    from alignlab.commonit import tasks

    names = tasks.TASKS
    train = tasks.generate(cfg.n_train, cfg.data_seed, "train", names, cfg.task_weights)
    base = tasks.generate(cfg.base_n, cfg.data_seed, "init", names)
    seen = {(r["task"], r["input"]) for r in (*train, *base)}

    def held_out(n: int, split: str) -> list[dict[str, Any]]:
        rows = []
        for r in tasks.generate(n * 3, cfg.data_seed, split, names):
            if (r["task"], r["input"]) not in seen:
                seen.add((r["task"], r["input"]))
                rows.append(r)
        # balanced: n // 6 of each task, in a fixed order
        per = n // len(names)
        by = {t: [r for r in rows if r["task"] == t][:per] for t in names}
        return [by[t][i] for i in range(per) for t in names]

    test = held_out(cfg.n_test, "test")  # test first: dev never takes an item the test set holds
    dev = held_out(cfg.n_dev, "dev")
    return {
        "train": _records(train, "train"),
        "base": _records(base, "base"),
        "dev": _records(dev, "dev"),
        "test": _records(test, "test"),
    }


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
        res = group_records(train, gcfg)
        man = {k: v for k, v in res.manifest.items() if k != "config"}
        out[name] = {
            "group_ids": res.group_ids,
            "manifest": man,
            "agreement_with_tasks": purity(res.group_ids, tasks_),
        }
    return out


def _blind_em(train: list[Any], test: list[Any]) -> float:
    """EM of answering every item with its task's most common training answer (ignores the input)."""
    by: dict[str, Counter[str]] = {}
    for r in train:
        by.setdefault(r.task, Counter())[r.response] += 1
    guess = {t: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for t, c in by.items()}
    return float(np.mean([guess.get(r.task) == r.response for r in test]) * 100)


def _evaluate(model_bits: Any, items: list[Any], cfg: CommonITExperimentConfig) -> dict[str, Any]:
    from alignlab.commonit.hf import InstructionLMDataset, greedy_answers, prompt_of, response_nll

    prompts = [prompt_of(r.instruction, r.input) for r in items]
    answers = greedy_answers(
        model_bits.model,
        prompts,
        model_bits.encode,
        model_bits.decode,
        max_new_tokens=cfg.max_new_tokens,
        eos_id=model_bits.eos_id,
        pad_id=model_bits.pad_id,
    )
    correct = [int(a == r.response) for a, r in zip(answers, items)]
    nll = response_nll(
        model_bits.model,
        InstructionLMDataset(prompts, [r.response for r in items], model_bits.encode, model_bits.eos_id, 96),
    )
    per_task: dict[str, list[int]] = {}
    for r, c in zip(items, correct):
        per_task.setdefault(r.task, []).append(c)
    return {
        "em": float(np.mean(correct) * 100),
        "correct": correct,
        "nll": float(np.mean(nll)),
        "em_per_task": {t: float(np.mean(v) * 100) for t, v in sorted(per_task.items())},
    }


def _train_eval(
    arm: str,
    seed: int,
    lr: float,
    batch_size: int,
    epochs: float,
    base_state: dict[str, Any] | None,
    data: dict[str, list[Any]],
    groups: dict[str, Any],
    eval_split: str,
    cfg: CommonITExperimentConfig,
    vocab: list[str],
    workdir: Path,
) -> dict[str, Any]:
    from alignlab.commonit.hf import TrainConfig, fit_lm, step_purity
    from alignlab.commonit.sampler import CommonITWarning

    train = data["train"]
    tcfg = TrainConfig(
        n_layer=cfg.n_layer,
        n_embd=cfg.n_embd,
        n_head=cfg.n_head,
        batching="random" if arm == "random" else "commonit",
        leftover=cfg.leftover,
        small_groups="drop" if arm == "task_drop" else "merge",
        batch_size=batch_size,
        grad_accum=cfg.grad_accum,
        epochs=epochs,
        lr=lr,
        max_length=96,
        seed=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CommonITWarning)
        fitted = fit_lm(
            train,
            groups[GROUPING_OF[arm]]["group_ids"],
            tcfg,
            workdir,
            quiet=True,
            extra_texts=vocab,
            init_state=base_state,
        )
    ev = _evaluate(fitted, data[eval_split], cfg)
    small = fitted.sampler_report.get("small_groups", {})
    return {
        "arm": arm,
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "split": eval_split,
        "em": ev["em"],
        "em_per_task": ev["em_per_task"],
        "nll": ev["nll"],
        "correct": ev["correct"],
        "train_loss": fitted.train_loss,
        "optimizer_steps": fitted.optimizer_steps,
        "examples_trained": sum(len(b) for b in fitted.micro_batches),
        "examples_kept": int(fitted.sampler_report.get("n_kept", len(train))),
        "dropped_examples": int(small.get("dropped_examples", 0)),
        "merged_examples": int(small.get("merged_examples", 0)),
        "task_pure_steps": step_purity(fitted.micro_batches, [r.task for r in train], cfg.grad_accum),
        "train_s": round(fitted.wall_s, 2),
    }


class _Runner:
    """Trains (or reads from the cache) one run; keys hold the config, the run and the code."""

    def __init__(
        self,
        out: Path,
        cfg: CommonITExperimentConfig,
        data: dict[str, list[Any]],
        groups: dict[str, Any],
        vocab: list[str],
    ):
        import alignlab
        from alignlab.core.manifest import code_hash

        self.out, self.cfg, self.data, self.groups, self.vocab = out, cfg, data, groups, vocab
        skip = {"claims", "arms", "dev_seeds", "regime", "regimes", "batch_sizes"}
        self.common = {k: v for k, v in asdict(cfg).items() if k not in skip}
        self.version, self.code = (
            alignlab.__version__,
            code_hash(),
        )  # once: edits during the run change nothing
        self._base: dict[str, Any] | None = None
        self.base_eval: dict[str, Any] | None = None

    def key(self, spec: dict[str, Any]) -> str:
        from alignlab.core.manifest import config_hash

        return config_hash({"config": self.common, "run": spec, "alignlab": self.version, "code": self.code})[
            :16
        ]

    def base(self) -> dict[str, Any]:
        """The shared base model of the fine-tuning regime (random batches, balanced separate sample)."""
        import torch

        from alignlab.commonit.hf import TrainConfig, fit_lm
        from alignlab.core.io import atomic_path

        if self._base is not None:
            return self._base
        key = self.key({"base": True})
        path, evals = self.out / "base" / f"base-{key}.pt", self.out / "base" / f"base-{key}.json"
        if path.exists() and evals.exists():
            self._base = torch.load(path, weights_only=True)
            self.base_eval = read_json(evals)
            return self._base
        cfg, base = self.cfg, self.data["base"]
        tcfg = TrainConfig(
            n_layer=cfg.n_layer,
            n_embd=cfg.n_embd,
            n_head=cfg.n_head,
            batching="random",
            batch_size=cfg.base_batch,
            epochs=cfg.base_epochs,
            lr=cfg.base_lr,
            max_length=96,
            seed=cfg.base_seed,
        )
        t0 = time.time()
        fitted = fit_lm(
            base, [r.task for r in base], tcfg, self.out / "work", quiet=True, extra_texts=self.vocab
        )
        self._base = {k: v.detach().clone() for k, v in fitted.model.state_dict().items()}
        self.base_eval = {
            "train_s": round(time.time() - t0, 2),
            "optimizer_steps": fitted.optimizer_steps,
            "train_loss": fitted.train_loss,
            **{
                split: {k: v for k, v in _evaluate(fitted, self.data[split], cfg).items() if k != "correct"}
                for split in ("dev", "test")
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(self._base, tmp)
        write_json(evals, self.base_eval)
        info(f"  base model: test EM {self.base_eval['test']['em']:.1f}% ({self.base_eval['train_s']:.0f} s)")
        return self._base

    def run(self, stage: str, regime: str, arm: str, seed: int, lr: float, batch_size: int) -> dict[str, Any]:
        r = self.cfg.regimes[regime]
        split = "dev" if stage == "dev" else "test"
        spec = {
            "stage": stage,
            "regime": {k: r[k] for k in ("base", "epochs")},
            "arm": arm,
            "seed": seed,
            "lr": lr,
            "batch_size": batch_size,
            "split": split,
        }
        cache = self.out / "runs" / stage / f"{arm}-lr{lr:g}-b{batch_size}-seed{seed}-{self.key(spec)}.json"
        if cache.exists():
            return read_json(cache)
        t0 = time.time()
        res = _train_eval(
            arm,
            seed,
            lr,
            batch_size,
            float(r["epochs"]),
            self.base() if r["base"] else None,
            self.data,
            self.groups,
            split,
            self.cfg,
            self.vocab,
            self.out / "work",
        )
        res.update(stage=stage, regime=regime)
        write_json(cache, res)
        info(
            f"  {stage} {regime} {arm:>9} lr {lr:g} b {batch_size} seed {seed}: EM {res['em']:.1f}% "
            f"({time.time() - t0:.0f} s)"
        )
        return res


def _dev_selection(runner: _Runner, cfg: CommonITExperimentConfig) -> dict[str, Any]:
    """The declared rule, on the dev split with the dev seeds only (never the test set)."""
    cands: dict[str, Any] = {}
    for name, r in cfg.regimes.items():
        lr, bs = float(r["lrs"][0]), int(cfg.batch_sizes[0])
        per = {
            arm: [runner.run("dev", name, arm, s, lr, bs)["em"] for s in cfg.dev_seeds]
            for arm in ("random", "task")
        }
        cands[name] = {
            "lr": lr,
            "batch_size": bs,
            "epochs": float(r["epochs"]),
            "base": bool(r["base"]),
            "dev_em": per,
            "score": float(np.mean([x for v in per.values() for x in v])),
        }
    order = list(cands)
    chosen = max(order, key=lambda n: (cands[n]["score"], -order.index(n)))  # a tie goes to the first listed
    return {
        "rule": SELECTION_RULE,
        "dev_seeds": list(cfg.dev_seeds),
        "candidates": cands,
        "chosen": chosen,
        "config_regime": cfg.regime,
        "agrees": chosen == cfg.regime,
    }


def _compact(r: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k not in ("correct",)}


# ------------------------------------------------------------------- the experiment


def experiment_config(*, quick: bool, overrides: dict[str, Any] | None = None) -> CommonITExperimentConfig:
    """Quick (or full) settings with ``--set`` overrides merged deeply
    (:func:`alignlab.core.config.experiment_config`)."""
    return _experiment_config(CommonITExperimentConfig, QUICK, quick=quick, overrides=overrides)


def run(out: Path, *, quick: bool, seeds: list[int] | None, overrides: dict) -> dict:
    import resource

    from alignlab.commonit.hf import prompt_of
    from alignlab.core.analysis import analyse_metrics
    from alignlab.core.manifest import build_manifest
    from alignlab.core.results import write_results

    started, cpu0 = time.time(), time.process_time()
    out = Path(out)
    # Overrides merge into the defaults key by key (--set regimes.finetune.epochs=2 keeps the rest).
    cfg = experiment_config(quick=quick, overrides=overrides)
    claims = _check(cfg)  # the plan is validated before any training
    seeds = list(seeds) if seeds is not None else (QUICK_SEEDS if quick else FULL_SEEDS)
    data = _data(cfg)
    info(
        f"commonit experiment: {len(data['train'])} train / {len(data['dev'])} dev / "
        f"{len(data['test'])} test, regime {cfg.regime}, seeds {seeds}"
    )
    dump_yaml(out / "config.yaml", {**asdict(cfg), "seeds": seeds, "quick": quick})
    groups = _groupings(data["train"], cfg)
    vocab = [
        t
        for split in ("base", "train", "dev", "test")
        for r in data[split]
        for t in (prompt_of(r.instruction, r.input), r.response)
    ]
    # Trainer.train() starts with gc.collect(); freezing the long-lived objects keeps that cheap.
    gc.collect()
    gc.freeze()
    runner = _Runner(out, cfg, data, groups, vocab)
    settings = settings_of(cfg)
    runs: list[dict[str, Any]] = []
    with torch_threads(cfg.threads):  # pinned: the same command gives the same numbers elsewhere
        selection = _dev_selection(runner, cfg)
        if not selection["agrees"]:
            info(
                f"  note: the dev rule picks {selection['chosen']!r}; the config fixes {cfg.regime!r} "
                "(run as fixed)"
            )
        runner.base()  # the base model's own scores are reported whatever the regime
        for seed in seeds:
            for st in settings:
                for arm in cfg.arms:
                    runs.append(runner.run("test", cfg.regime, arm, seed, st["lr"], st["batch_size"]))
    # per-arm, per-seed values of every claimed metric (and per-item values for the hierarchical CI)
    by = {(r["arm"], r["seed"], r["lr"], r["batch_size"]): r for r in runs}
    metrics: dict[str, dict[str, dict[int, float]]] = {}
    items: dict[str, dict[str, dict[int, list[float]]]] = {}
    for st in settings:
        metrics[st["metric"]] = {
            a: {s: by[(a, s, st["lr"], st["batch_size"])]["em"] for s in seeds} for a in cfg.arms
        }
        items[st["metric"]] = {
            a: {s: [100.0 * c for c in by[(a, s, st["lr"], st["batch_size"])]["correct"]] for s in seeds}
            for a in cfg.arms
        }
    metrics[MEAN_METRIC] = {
        a: {s: float(np.mean([metrics[st["metric"]][a][s] for st in settings])) for s in seeds}
        for a in cfg.arms
    }
    items[MEAN_METRIC] = {
        a: {s: list(np.mean([items[st["metric"]][a][s] for st in settings], axis=0)) for s in seeds}
        for a in cfg.arms
    }
    rows = analyse_metrics(claims, metrics, items)
    summary: dict[str, Any] = {}
    for st in settings:
        summary[st["metric"]] = {}
        for a in cfg.arms:
            rs = [by[(a, s, st["lr"], st["batch_size"])] for s in seeds]
            ems = [r["em"] for r in rs]
            summary[st["metric"]][a] = {
                "em_mean": float(np.mean(ems)),
                "em_sd": float(np.std(ems, ddof=1)) if len(ems) > 1 else None,
                "em_per_task": {
                    t: float(np.mean([r["em_per_task"][t] for r in rs])) for t in rs[0]["em_per_task"]
                },
                "nll": float(np.mean([r["nll"] for r in rs])),
                "train_loss": float(np.mean([r["train_loss"] for r in rs])),
                "optimizer_steps": rs[0]["optimizer_steps"],
                "examples_trained": rs[0]["examples_trained"],
                "examples_kept": rs[0]["examples_kept"],
                "dropped_examples": rs[0]["dropped_examples"],
                "merged_examples": rs[0]["merged_examples"],
                "task_pure_steps": float(np.mean([r["task_pure_steps"] for r in rs])),
            }
    grouping_info = {
        k: {
            "sizes": v["manifest"]["group_sizes"],
            "agreement_with_tasks": v["agreement_with_tasks"],
            **({"bin_edges": v["manifest"]["bin_edges"]} if "bin_edges" in v["manifest"] else {}),
        }
        for k, v in groups.items()
    }
    cpu_self = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "experiment": NAME,
        "quick": quick,
        "config": asdict(cfg),
        "seeds": seeds,
        "settings": settings,
        "data": {
            split: {"n": len(v), "tasks": dict(sorted(Counter(r.task for r in v).items()))}
            for split, v in data.items()
        },
        "regime_selection": selection,
        "metrics": {
            m: {a: {str(s): v for s, v in per.items()} for a, per in arms.items()}
            for m, arms in metrics.items()
        },
        "summary": summary,
        "supporting": {
            "ceiling_em": 100.0,
            "blind_em_test": _blind_em(data["train"], data["test"]),
            "base": runner.base_eval,
            "groupings": grouping_info,
        },
        "claims": rows,
        "runs": [_compact(r) for r in runs],
        "manifest": build_manifest(
            config=asdict(cfg),
            seed=None,
            started=started,
            cpu_s=round(time.process_time() - cpu0, 1),
            max_rss_mb=round(cpu_self.ru_maxrss / 1024, 1),
        ),
    }
    return write_results(out, result, render_report)


# ------------------------------------------------------------------- the report (a pure function of results)


def _f(x: float | None, d: int = 1) -> str:
    return "–" if x is None else f"{x:.{d}f}"


def render_report(results: dict[str, Any]) -> str:
    from alignlab.core.analysis import Claim, analysis_markdown, plan_markdown, seeds_note
    from alignlab.core.tables import markdown_table

    cfg, seeds, settings = results["config"], results["seeds"], results["settings"]
    sel, sup, summ = results["regime_selection"], results["supporting"], results["summary"]
    claims = [Claim(**row["plan"]) for row in results["claims"]]
    reg = cfg["regimes"][cfg["regime"]]
    arms = cfg["arms"]
    dtrain = results["data"]["train"]
    small = [t for t, n in dtrain["tasks"].items() if n < min(cfg["batch_sizes"])]
    tasks_ = list(results["data"]["test"]["tasks"])
    n_test = results["data"]["test"]["n"]
    L: list[str] = ["# CommonIT: one group per mini-batch vs random batching", ""]
    if results["quick"]:
        L += [
            "**Quick settings: supports no verdict** "
            "(tiny model and data, few seeds; for tests and the demo).",
            "",
        ]
    L += [
        f"**Claim** (Rao et al., EMNLP 2024): {SUMMARY['claim']}.",
        "",
        f"**Setting.** A GPT-2 of {cfg['n_layer']} layer(s), width {cfg['n_embd']}, "
        f"with a character tokenizer, is tuned with the Hugging Face Trainer on {dtrain['n']} "
        "synthetic instruction examples of six tasks (`alignlab.commonit.tasks`). "
        "The training mix is long-tailed on purpose: "
        + ", ".join(f"{t} {n}" for t, n in dtrain["tasks"].items())
        + " examples"
        + (
            f", so the groups of {' and '.join(small)} are smaller than one optimizer step at every "
            "batch size of the grid"
            if small
            else ""
        )
        + ". Arms differ only in which examples share an optimizer step: "
        "`random` (the sampler's random mode: the same examples, steps and step sizes as CommonIT-Task), "
        "`task`, `embedding`, `length` (one task / embedding cluster / response-length bin per step, "
        "small groups merged: the sampler's default) and `task_drop` (CommonIT-Task dropping the groups "
        "smaller than one step, as the paper's sampler does). "
        f"Arms run here: {', '.join(f'`{a}`' for a in arms)}. "
        f"Regime: **{cfg['regime']}** ("
        + (
            "every run starts from one shared base model trained with random batches for "
            f"{cfg['base_epochs']:g} epochs at lr {cfg['base_lr']:g} on a separate balanced sample of "
            f"{cfg['base_n']} examples, then {reg['epochs']:g} epochs of tuning"
            if reg["base"]
            else f"trained from scratch for {reg['epochs']:g} epochs"
        )
        + f"), chosen on the dev split (below) and fixed in the config before the test runs; replicated at "
        f"learning rates {' and '.join(f'{x:g}' for x in reg['lrs'])} × batch sizes "
        f"{' and '.join(map(str, cfg['batch_sizes']))} (AdamW, linear schedule, 5% warm-up). "
        f"Metric: exact match (EM, %) of the greedy answer on {results['data']['test']['n']} test items "
        "balanced over the six tasks, none of which shares (task, input) with any training, base-model or "
        "dev item. The seed sets a run's batch order (and, from scratch, its initial weights); arms share "
        "seeds and are paired by seed.",
        "",
    ]
    # plan
    L += [
        plan_markdown(claims).rstrip(),
        "",
        "Metrics: `em@LR,BATCH` is test EM (%) in one cell of the grid "
        f"(lr_high = {reg['lrs'][0]:g}, lr_low = {reg['lrs'][1]:g}, "
        f"b_small = {cfg['batch_sizes'][0]}, b_large = {cfg['batch_sizes'][1]}); "
        f"`{MEAN_METRIC}` is a seed's EM averaged over the four cells (one declared family per arm). "
        + "".join(
            f"A margin of {m:g} EM point(s) is {m * n_test / 100:g} of the {n_test} test items. "
            for m in sorted({c.margin for c in claims})
        )
        + "The margins are smaller than the gains the paper reports.",
        "",
        f"Regime selection rule (declared with the plan): {sel['rule']}.",
        "",
        seeds_note(len(seeds), claims[0].test if claims else "sign-flip", 0.05, len(claims)),
        "",
    ]
    # claims
    L += [analysis_markdown(claims, results["claims"]).rstrip(), ""]
    # regime selection
    cand_rows = [
        [
            n,
            "base model" if c["base"] else "from scratch",
            f"{c['epochs']:g}",
            f"{c['lr']:g}",
            str(c["batch_size"]),
            _f(float(np.mean(c["dev_em"]["random"]))),
            _f(float(np.mean(c["dev_em"]["task"]))),
            _f(c["score"], 2),
            "**chosen**" if n == sel["chosen"] else "",
        ]
        for n, c in sel["candidates"].items()
    ]
    L += [
        "## Regime chosen on the dev split",
        "",
        f"Dev split: {results['data']['dev']['n']} items, disjoint from the test set; dev seeds "
        f"{', '.join(map(str, sel['dev_seeds']))} (never used on the test set).",
        "",
        markdown_table(
            ["candidate", "start", "epochs", "lr", "batch", "dev EM random", "dev EM task", "score", ""],
            cand_rows,
        ),
        "",
        (
            f"The rule picks `{sel['chosen']}`, the regime fixed in the config."
            if sel["agrees"]
            else f"**The rule picks `{sel['chosen']}`, but the config fixes `{sel['config_regime']}`; "
            "the test runs use the config's regime.**"
        ),
        "",
    ]
    # supporting: per-arm per-setting
    head = [
        "setting",
        "arm",
        "EM % (mean ± sd)",
        *tasks_,
        "test NLL",
        "train loss",
        "examples trained",
        "dropped",
        "task-pure steps",
    ]
    body = []
    for st in settings:
        for a in arms:
            s = summ[st["metric"]][a]
            body.append(
                [
                    st["label"] + f" (lr {st['lr']:g}, b {st['batch_size']})",
                    a,
                    f"{s['em_mean']:.1f} ± {_f(s['em_sd'])}",
                    *[_f(s["em_per_task"][t]) for t in tasks_],
                    f"{s['nll']:.3f}",
                    f"{s['train_loss']:.3f}",
                    str(s["examples_trained"]),
                    str(s["dropped_examples"]),
                    f"{s['task_pure_steps']:.2f}",
                ]
            )
    L += [
        "## Test EM per arm and setting",
        "",
        markdown_table(head, body),
        "",
        "`dropped`: training examples the sampler left out (groups smaller than one optimizer step, "
        "`task_drop` only); `examples trained` counts every example each epoch.",
        "",
    ]
    # per-seed values
    seed_rows = [
        [m, a, *[_f(results["metrics"][m][a][str(s)]) for s in seeds]]
        for m in [*(st["metric"] for st in settings), MEAN_METRIC]
        for a in arms
    ]
    L += [
        "## Per-seed test EM (%)",
        "",
        markdown_table(["metric", "arm", *[f"seed {s}" for s in seeds]], seed_rows),
        "",
    ]
    # ceilings and floors
    base = sup.get("base")
    mean_em = {a: float(np.mean([summ[st["metric"]][a]["em_mean"] for st in settings])) for a in arms}
    fl = [
        ["ceiling: a perfect model", _f(sup["ceiling_em"])],
        [
            "blind floor: each task's most common training answer, ignoring the input",
            _f(sup["blind_em_test"]),
        ],
    ]
    if base:
        fl.append(
            ["base model before tuning (shared start of the fine-tuning regime)", _f(base["test"]["em"])]
        )
    fl += [[f"`{a}`, mean over the four settings", _f(v)] for a, v in mean_em.items()]
    L += ["## Ceiling and floors", "", markdown_table(["model", "test EM %"], fl), ""]
    if base:
        L += [
            "Base model per task (test EM %): "
            + ", ".join(f"{t} {_f(v)}" for t, v in base["test"]["em_per_task"].items())
            + ".",
            "",
        ]
    # groupings
    g_rows = [
        [
            k,
            str(len(v["sizes"])),
            ", ".join(f"{n}" for n in v["sizes"].values()),
            f"{v['agreement_with_tasks']['purity']:.3f}",
            f"{v['agreement_with_tasks']['nmi']:.3f}",
        ]
        for k, v in sup["groupings"].items()
    ]
    L += [
        "## Groupings of the training set",
        "",
        markdown_table(["grouping", "groups", "sizes", "purity vs task", "NMI vs task"], g_rows),
        "",
    ]
    if "length" in sup["groupings"] and "bin_edges" in sup["groupings"]["length"]:
        L += [
            f"Length bin edges (characters of the response): {sup['groupings']['length']['bin_edges']}.",
            "",
        ]
    if "embedding" not in arms and "embedding" in sup["groupings"]:
        pur = sup["groupings"]["embedding"]["agreement_with_tasks"]["purity"]
        L += [
            f"The embedding grouping ({cfg['encoder']}, k = {cfg['k']}) is computed but not run as an arm: "
            f"its purity against the tasks is {pur:.3f} (the instructions are a few paraphrases per task)"
            + (
                ", so it is the task grouping under other labels and its arm would repeat `task`."
                if pur == 1.0
                else "; it is not among the declared arms here."
            ),
            "",
        ]
    # exploratory
    L += [
        "## Exploratory (not pre-registered)",
        "",
        "Per-task EM difference against `random`, in points, averaged over seeds and the four settings "
        "(no test, no correction: a description of where any difference comes from):",
        "",
    ]
    ex_rows = []
    for a in arms:
        if a == "random":
            continue
        # (the arm's summary, random's summary) in each of the settings
        vs_random = [(summ[st["metric"]][a], summ[st["metric"]]["random"]) for st in settings]
        ex_rows.append(
            [
                a,
                *[
                    f"{np.mean([x['em_per_task'][t] - r['em_per_task'][t] for x, r in vs_random]):+.1f}"
                    for t in tasks_
                ],
                f"{np.mean([x['nll'] - r['nll'] for x, r in vs_random]):+.3f}",
            ]
        )
    if ex_rows:
        L += [markdown_table(["arm", *tasks_, "Δ test NLL"], ex_rows), ""]
    if "task_drop" in arms and "random" in arms and small:
        drop_cells = [
            float(
                np.mean(
                    [
                        summ[st["metric"]]["task_drop"]["em_per_task"][t]
                        - summ[st["metric"]]["random"]["em_per_task"][t]
                        for st in settings
                    ]
                )
            )
            for t in small
        ]
        L += [
            f"The tasks whose groups `task_drop` leaves out ({', '.join(small)}) move by "
            + ", ".join(f"{d:+.1f}" for d in drop_cells)
            + " points against `random` (per setting: the table of test "
            "EM above)"
            + (
                ": tuned without them, the model loses part of what the base model knew of them."
                if all(d < 0 for d in drop_cells)
                else "."
            ),
            "",
        ]
    # caveats
    L += [
        "## Caveats",
        "",
        "- A tiny model and six synthetic tasks, not 7B–13B LLMs on FLAN or Alpaca; the fine-tuning regime's "
        '"pre-training" is random-batched training on other examples of the same tasks.',
        "- One shared base model (fixed seed) for every fine-tuning run, as the paper tunes one pretrained "
        "model: the seeds vary the tuning runs, not the base model, so the claims are conditional on this "
        "base model.",
        "- The `task_drop` arm trains on fewer examples than the others; its comparisons measure the paper's "
        "sampler as a whole (grouping and dropping), and `task_drop` vs `task` isolates the dropping.",
        "- The dev selection uses the first learning rate and the first batch size of each candidate only.",
        *(
            [
                f"- The tuning phase does not improve on its starting point here: the base model scores "
                f"{base['test']['em']:.1f} and the best arm, averaged over the four settings, "
                f"{max(mean_em.values()):.1f}. The claims therefore compare batchings in a phase that adds "
                "no accuracy, which is not the paper's situation."
            ]
            if base and max(mean_em.values()) <= base["test"]["em"]
            else []
        ),
        "",
    ]
    man = results["manifest"]
    cmd = (
        "alignlab experiment commonit"
        + (" --quick" if results["quick"] else "")
        + " --out runs/experiment-commonit"
    )
    default_seeds = QUICK_SEEDS if results["quick"] else FULL_SEEDS
    if list(seeds) != default_seeds:
        cmd += f" --seeds {','.join(map(str, seeds))}"
    L += [
        "## How this was made",
        "",
        "```",
        cmd,
        "```",
        "",
        f"Wall time {man.get('wall_s', 0) / 60:.1f} min, CPU time of the process "
        f"{(man.get('cpu_s') or 0) / 60:.1f} min ({man.get('threads')} torch thread(s) pinned per run); "
        f"{len(results['runs'])} test runs. Each run's JSON (with its per-item answers) is cached under "
        "`runs/` of the output folder, keyed on the config, the run and a hash of the code.",
        "",
    ]
    return "\n".join(L)
