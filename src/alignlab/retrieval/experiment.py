"""``alignlab experiment repro``: the SIGIR 2022 reproducibility findings, tested on ShapesWorld.

Arms (each trained with every seed, same data, same budget):

* ``infonce`` — the baseline tiny dual encoder, symmetric InfoNCE, random initialisation;
* ``pretrained`` — the same, with the image tower initialised from attribute-classification pretraining
  (:mod:`alignlab.retrieval.pretrain`) on separate ShapesWorld images;
* ``vse-sum`` / ``vse-max`` — VSE++ hinge, summed over negatives / hardest negative only.

Measured: (a) the seed spread (range, sd) of RSUM of the baseline; (b) pretrained vs random image tower;
(c) the three losses; (d) gallery size: the same models on ``shapes-1k`` vs ``shapes-5k``. Each arm is
compared with the baseline by :func:`alignlab.retrieval.repro.compare` (paired tests over queries and
seed ranges).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from alignlab.core.config import experiment_config as _experiment_config
from alignlab.core.config import from_dict
from alignlab.core.io import read_json, write_json, write_text
from alignlab.core.manifest import build_manifest
from alignlab.core.progress import info
from alignlab.core.stats import summarize
from alignlab.retrieval.repro import compare, run_seeds
from alignlab.retrieval.training import DataConfig, RetrievalRunConfig
from alignlab.train.loop import TrainConfig

DESCRIPTION = "seed spread, pretrained vs random image tower, VSE++ sum/max vs InfoNCE, 1K vs 5K gallery"


@dataclass
class ReproExperimentConfig:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    arms: list[str] = field(default_factory=lambda: ["infonce", "pretrained", "vse-sum", "vse-max"])
    train_images: int = 2000
    val_images: int = 300
    test_images: int = 5000  # shapes-5k; shapes-1k is its first 1000 images
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    margin: float = 0.2
    model_config: dict[str, Any] = field(default_factory=dict)
    pretrain_images: int = 3000
    pretrain_epochs: int = 6


QUICK = dict(seeds=[0, 1], arms=["infonce", "pretrained", "vse-max"], train_images=240, val_images=60,
             test_images=300, epochs=1, batch_size=48, pretrain_images=200, pretrain_epochs=1,
             model_config={"width": 32, "embed_dim": 32, "image_channels": [8, 16], "text_layers": 1})


def _arm_config(exp: ReproExperimentConfig, arm: str, tower_file: Path | None) -> RetrievalRunConfig:
    data = DataConfig(train=exp.train_images, val=exp.val_images, test=exp.test_images)
    train = TrainConfig(epochs=exp.epochs, batch_size=exp.batch_size, lr=exp.lr, warmup_steps=20,
                        select_metric="rsum", log_every=20)
    cfg = RetrievalRunConfig(model_config=dict(exp.model_config), data=data, train=train, margin=exp.margin)
    if arm == "infonce":
        return cfg
    if arm == "pretrained":
        return replace(cfg, init_image_tower=str(tower_file))
    if arm in ("vse-sum", "vse-max"):
        return replace(cfg, loss=arm)
    raise ValueError(f"unknown arm {arm!r}")


def _eval_gallery(run_dir: Path, cfg: RetrievalRunConfig, n_images: int) -> dict[str, float]:
    """Re-evaluate a run's best model on the first ``n_images`` test images (a smaller gallery)."""
    from alignlab.models.factory import load_checkpoint
    from alignlab.retrieval.training import evaluate_dual, load_run_data

    test = load_run_data(cfg.data)["test"].subset(range(n_images))
    model = load_checkpoint(run_dir / "best")
    return evaluate_dual(model, test).metrics


def experiment_config(*, quick: bool, seeds: list[int] | None = None,
                      overrides: dict[str, Any] | None = None) -> ReproExperimentConfig:
    """Quick (or full) settings with ``--set`` overrides merged deeply (:func:`alignlab.core.config.experiment_config`)."""
    return _experiment_config(ReproExperimentConfig, QUICK, quick=quick, seeds=seeds, overrides=overrides)


def run(out: Path, *, quick: bool = False, seeds: list[int] | None = None,
        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    started = time.time()
    out = Path(out)
    exp = experiment_config(quick=quick, seeds=seeds, overrides=overrides)
    out.mkdir(parents=True, exist_ok=True)
    tower_file = None
    if "pretrained" in exp.arms:
        from alignlab.models.tiny import TinyDualConfig
        from alignlab.retrieval.pretrain import PretrainConfig, pretrain_image_tower

        tower_file = out / "pretrained_image_tower.safetensors"
        if not tower_file.exists():
            model_cfg = from_dict(TinyDualConfig, exp.model_config)
            stats = pretrain_image_tower(model_cfg.image_config(),
                                         PretrainConfig(images=exp.pretrain_images, epochs=exp.pretrain_epochs),
                                         tower_file)
            info(f"pretrained image tower: held-out micro-F1 {stats['heldout_micro_f1']:.3f}")
    arms: dict[str, Any] = {}
    for arm in exp.arms:
        info(f"== repro experiment arm {arm}: seeds {exp.seeds}")
        cfg = _arm_config(exp, arm, tower_file)
        agg = run_seeds(cfg, exp.seeds, out / arm)
        arms[arm] = {"aggregate": {k: v for k, v in agg.items() if k != "config"}}
    # (d) gallery size: baseline models on a 1K gallery vs the full test gallery.
    n_small = min(1000, exp.test_images // 5)
    gallery = {"n_small": n_small, "n_large": exp.test_images, "rsum_small": [], "rsum_large": []}
    base_cfg = _arm_config(exp, exp.arms[0], tower_file)
    for s in exp.seeds:
        run_dir = out / exp.arms[0] / f"seed-{s}"
        gallery["rsum_large"].append(read_json(run_dir / "results.json")["metrics"]["rsum"])
        gallery["rsum_small"].append(_eval_gallery(run_dir, replace(base_cfg, seed=s), n_small)["rsum"])
    gallery["small"] = summarize(gallery["rsum_small"])
    gallery["large"] = summarize(gallery["rsum_large"])
    comparisons = {arm: compare(out / exp.arms[0], out / arm) for arm in exp.arms[1:]}
    result = {"experiment": "repro", "config": asdict(exp), "quick": quick, "arms": arms, "gallery": gallery,
              "comparisons": comparisons, "manifest": build_manifest(config=asdict(exp), started=started)}
    write_json(out / "results.json", result)
    write_text(out / "report.md", format_report(result))
    return result


def format_report(r: dict[str, Any]) -> str:
    exp = r["config"]
    base = exp["arms"][0]
    lines = ["# Reproducibility experiment (SIGIR 2022 findings on ShapesWorld)", "",
             f"Settings: {'quick' if r['quick'] else 'full'}; seeds {exp['seeds']}; {exp['train_images']} training "
             f"images, {exp['epochs']} epochs, batch {exp['batch_size']}; test gallery {exp['test_images']} images.",
             "", "| arm | RSUM mean ± sd | min–max (range) | R@1 i2t | R@1 t2i | Δ RSUM vs " + base + " | p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, a in r["arms"].items():
        m = a["aggregate"]["metrics"]
        rs = m["rsum"]
        if arm in r["comparisons"]:
            c = r["comparisons"][arm]
            tail = c["verdict"].split(": ")[-1]
            delta = f"{c['delta_rsum']:+.1f} [{c['ci_low']:+.1f}, {c['ci_high']:+.1f}]"
            p = f"{c['p_value']:.3g}"
        else:
            delta, p, tail = "—", "—", "baseline"
        lines.append(f"| {arm} | {rs['mean']:.1f} ± {rs['sd']:.1f} | {rs['min']:.1f}–{rs['max']:.1f} "
                     f"({rs['range']:.1f}) | {m['i2t_R@1']['mean']:.1f} | {m['t2i_R@1']['mean']:.1f} | {delta} | "
                     f"{p} | {tail} |")
    g = r["gallery"]
    lines += ["", f"Gallery size ({base} models, same weights): RSUM {g['small']['mean']:.1f} ± {g['small']['sd']:.1f} "
                  f"on {g['n_small']} images vs {g['large']['mean']:.1f} ± {g['large']['sd']:.1f} on {g['n_large']} "
                  f"images (difference {g['small']['mean'] - g['large']['mean']:+.1f}).", ""]
    return "\n".join(lines) + "\n"
