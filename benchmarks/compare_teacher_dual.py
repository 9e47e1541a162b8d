"""The DCD teacher against the best dual encoder trained on the same CPU budget (issue 15, item 3).

Run:  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/compare_teacher_dual.py \
          --out runs/compare-teacher [--seeds 0 1] [--budget CPU_S]
      (or one process per seed, then: ... --out runs/compare-teacher
       --merge runs/ct-0/compare.json runs/ct-1/compare.json)

On DCD's data (near-duplicate ShapesWorld, ``DCDDataConfig()``: 1,500 training images, 150 dev, 300 test
images with truth relevance), for every seed, all in this one process on one torch thread:

* (b) **teacher** — ``train_teacher(TeacherRunConfig())``: the default recipe (stage 1, a dual encoder with
  the teacher's towers; stage 2, the fusion on that dual's hard negatives);
* (a) **dual, whole budget** — the same dual recipe (``train_tower_dual``) planned for the teacher's own
  training CPU seconds (or ``--budget``; epochs = budget / the stage-1 CPU seconds per epoch, stopped
  at the budget in any case), best
  checkpoint by dev RSUM. Also listed: the teacher's own stage-1 dual (its starting point, trained on part
  of the budget) and ``--extra-dual`` configs (e.g. the retrieval default ``{}``), each on the whole budget.
  The best of the dual rows is the baseline;
* (c) **earlier teacher** — the default before this change: ``GRID_TEACHER_MODEL`` (4 × 4 grid), towers from
  scratch, 10 epochs of symmetric CE on each batch's score grid (``fusion="grid"``).

Training CPU is process CPU time (``time.process_time``) from the data to the best checkpoint, dev
evaluations included; test scoring is not counted. Every model is scored on all test pairs (a cross
encoder fuses all 300 × 1,476 pairs; no re-ranking). Beside them: the scene-graph oracle (the truth
evaluator: the ceiling) and the bag-of-words oracle (knows the objects, reads captions as bags of words)
of the probe harness, on the same test set. Writes ``<out>/compare.json`` and ``<out>/compare.md``; the
figures in docs/dcd.md ("The teacher") come from them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignlab.core.io import write_json
from alignlab.core.tables import markdown_table
from alignlab.data.shapes import Scene
from alignlab.data.text import WordTokenizer
from alignlab.distill.dcd.train import (
    GRID_TEACHER_MODEL,
    DCDDataConfig,
    TeacherRunConfig,
    load_dcd_data,
    train_teacher,
    train_tower_dual,
)
from alignlab.probe.baselines import BagOfWordsOracle, SceneGraphOracle, image_key
from alignlab.retrieval.metrics import evaluate_scores
from alignlab.retrieval.training import evaluate_dual
from alignlab.train.loop import StopTraining, TrainConfig

QUICK_DATA = DCDDataConfig(train=72, val=24, test=24)  # --quick: the pipeline only, in about a minute
KEEP = ("rsum", "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")


def _keep(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(metrics[k]), 2) for k in KEEP}


def oracle_ceilings(test: Any) -> dict[str, dict[str, float]]:
    """RSUM and R@K of the probe harness's scene-graph and bag-of-words oracles on ``test``."""
    images = test.load_images()
    scenes = {
        image_key(images[i]): Scene.from_dict(test.image_meta[i]["scene"]) for i in range(test.n_images)
    }
    out = {}
    for name, oracle in (
        ("scene-graph oracle", SceneGraphOracle(scenes)),
        ("bag-of-words oracle", BagOfWordsOracle(scenes)),
    ):
        out[name] = _keep(evaluate_scores(oracle.score(images, test.captions), test.relevance).metrics)
    return out


def dual_on_budget(
    cfg: TeacherRunConfig, data: dict[str, Any], out: Path, budget: float, epochs: int
) -> dict:
    """The teacher's stage-1 dual recipe given ``budget`` CPU seconds (``epochs`` planned, stopped at the
    budget)."""
    t0 = time.process_time()
    stopped: dict[str, Any] = {"at": None}

    def stop(state: dict[str, Any]) -> None:
        if time.process_time() - t0 > budget:
            stopped["at"] = (state["epoch"], state["step"])
            raise StopTraining()

    tok = WordTokenizer.build(data["train"].captions)
    from alignlab.distill.dcd import train as dcd_train

    try:
        dual, res = train_tower_dual(
            cfg,
            tok,
            data["train"],
            data.get("val"),
            out,
            epochs=epochs,
            resume=False,
            desc="dual baseline",
            callbacks=[stop],
        )
        best = res.best
    except StopTraining:  # over budget: the best checkpoint so far
        dual = dcd_train.build_model(
            "tiny-dual", dcd_train.tower_dual_config(cfg.model_config, cfg.data.image_size), tok
        )
        best = dcd_train.load_best(dual, out)
        dual.eval()
    cpu = time.process_time() - t0
    return {
        "metrics": _keep(evaluate_dual(dual, data["test"]).metrics),
        "train_cpu_s": round(cpu, 1),
        "epochs_planned": epochs,
        "stopped_at": stopped["at"],
        "best": best,
    }


def run_seed(
    seed: int, out: Path, budget: float, extra_duals: list[dict[str, Any]], quick: bool = False
) -> dict[str, Any]:
    data_cfg = QUICK_DATA if quick else DCDDataConfig()
    data = load_dcd_data(data_cfg)
    rows: dict[str, Any] = {}
    # (b) the teacher, default recipe
    tcfg = TeacherRunConfig(threads=1, seed=seed, data=data_cfg)
    if quick:
        tcfg = replace(tcfg, pretrain_epochs=1, dev_images=12, train=replace(tcfg.train, epochs=1))
    res = train_teacher(tcfg, out / "teacher", data=data, resume=False)
    rows["teacher (default recipe)"] = {
        "kind": "teacher",
        "metrics": _keep(res["metrics"]),
        "train_cpu_s": res["train_cpu_s"]["total_s"],
        "detail": res["train_cpu_s"],
        "test_scoring_s": res["test_scoring_s"],
    }
    # the teacher's own stage-1 dual (its starting point), on the test set
    from alignlab.models.factory import load_checkpoint

    stage1 = load_checkpoint(out / "teacher" / "pretrain" / "best").eval()
    rows["dual: teacher's stage 1"] = {
        "kind": "dual",
        "metrics": _keep(evaluate_dual(stage1, data["test"]).metrics),
        "train_cpu_s": res["train_cpu_s"]["data_s"] + res["train_cpu_s"]["stage1_s"],
    }
    if budget <= 0:  # the dual gets exactly the teacher's training CPU
        budget = res["train_cpu_s"]["total_s"]
    per_epoch = res["train_cpu_s"]["stage1_s"] / tcfg.pretrain_epochs
    epochs = max(1, int(budget // per_epoch))
    rows["dual: whole budget"] = {"kind": "dual", **dual_on_budget(tcfg, data, out / "dual", budget, epochs)}
    for i, mc in enumerate(extra_duals):
        cfg = replace(tcfg, model_config={**mc, "fusion_layers": 1})
        rows[f"dual: {json.dumps(mc)}, whole budget"] = {
            "kind": "dual",
            **dual_on_budget(cfg, data, out / f"dual-extra-{i}", budget, epochs),
        }
    # (c) the earlier default teacher
    old = TeacherRunConfig(
        model_config=dict(GRID_TEACHER_MODEL),
        fusion="grid",
        pretrain_epochs=0,
        threads=1,
        seed=seed,
        data=data_cfg,
        dev_images=tcfg.dev_images,
        train=TrainConfig(
            epochs=1 if quick else 10, batch_size=24, lr=1e-3, warmup_steps=20, select_metric="rsum"
        ),
    )
    res_old = train_teacher(old, out / "teacher-grid", data=data, resume=False)
    rows["earlier teacher (grid)"] = {
        "kind": "earlier teacher",
        "metrics": _keep(res_old["metrics"]),
        "train_cpu_s": res_old["train_cpu_s"]["total_s"],
    }
    duals = {k: v for k, v in rows.items() if v["kind"] == "dual"}  # all of them, even a few seconds over
    best = max(duals, key=lambda k: duals[k]["metrics"]["rsum"])
    margin = rows["teacher (default recipe)"]["metrics"]["rsum"] - duals[best]["metrics"]["rsum"]
    return {
        "seed": seed,
        "rows": rows,
        "best_dual": best,
        "margin_rsum": round(margin, 2),
        "budget_cpu_s": budget,
    }


def render(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    names = list(seeds[0]["rows"])
    table = []
    for n in names:
        rs = [s["rows"][n] for s in seeds]
        rsum = [r["metrics"]["rsum"] for r in rs]
        table.append(
            [
                n,
                f"{np.mean(rsum):.1f}",
                ", ".join(f"{x:.1f}" for x in rsum),
                f"{np.mean([r['metrics']['i2t_R@1'] for r in rs]):.1f}",
                f"{np.mean([r['metrics']['t2i_R@1'] for r in rs]):.1f}",
                ", ".join(f"{r['train_cpu_s']:.0f}" for r in rs),
            ]
        )
    for n, c in result["ceilings"].items():
        table.append([n, f"{c['rsum']:.1f}", "—", f"{c['i2t_R@1']:.1f}", f"{c['t2i_R@1']:.1f}", "—"])
    margins = [s["margin_rsum"] for s in seeds]
    lines = [
        markdown_table(
            ["model", "test RSUM (mean)", "per seed", "i2t R@1", "t2i R@1", "training CPU s per seed"],
            table,
            "lrrrrr",
        ),
        "",
        "Teacher − best dual within the budget (CPU-s per seed: "
        + ", ".join(f"{s['budget_cpu_s']:.0f}" for s in seeds)
        + "), per seed: "
        + ", ".join(f"{m:+.1f} ({s['best_dual']})" for m, s in zip(margins, seeds))
        + f"; mean {np.mean(margins):+.1f}. Target ≥ +10 on every seed: "
        f"{'met' if min(margins) >= 10 else 'not met'}.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument(
        "--budget",
        type=float,
        default=0.0,
        help="CPU seconds of training for each dual (0: the teacher's own training CPU seconds)",
    )
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="combine the compare.json files of runs made with other seeds (no training)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny data and one epoch per stage (pipeline check)")
    ap.add_argument(
        "--extra-dual",
        action="append",
        default=[],
        type=json.loads,
        help="another dual config (JSON of TinyCrossConfig tower keys) given the whole budget",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:  # seeds run as separate processes (in parallel), then one table
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        result = {
            **parts[0],
            "seeds": [s for part in parts for s in part["seeds"]],
            "wall_s": [part.get("wall_s") for part in parts],
            "merged_from": [str(f) for f in args.merge],
        }
        result["table"] = render(result)
        write_json(args.out / "compare.json", result)
        (args.out / "compare.md").write_text(result["table"] + "\n")
        print(result["table"])
        return
    started = time.time()
    data = load_dcd_data(QUICK_DATA if args.quick else DCDDataConfig())
    result: dict[str, Any] = {
        "budget_cpu_s": args.budget,
        "threads": 1,
        "quick": args.quick,
        "data": "DCDDataConfig() test split" + (" (quick: 72/24/24)" if args.quick else ""),
        "test": {"images": data["test"].n_images, "captions": data["test"].n_captions},
        "ceilings": oracle_ceilings(data["test"]),
        "seeds": [],
    }
    for seed in args.seeds:
        result["seeds"].append(
            run_seed(seed, args.out / f"seed-{seed}", args.budget, args.extra_dual, args.quick)
        )
        write_json(args.out / "compare.json", result)
    result["wall_s"] = round(time.time() - started, 1)
    result["table"] = render(result)
    write_json(args.out / "compare.json", result)
    (args.out / "compare.md").write_text(result["table"] + "\n")
    print(result["table"])


if __name__ == "__main__":
    main()
