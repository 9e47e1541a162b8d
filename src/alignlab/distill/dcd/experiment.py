"""``alignlab experiment dcd``: DCD's claims, tested on near-duplicate ShapesWorld.

One tiny cross-encoder teacher is trained once; then a tiny dual-encoder student is trained in each
arm with every seed (same data, same pools of candidates, same budget):

* ``no-kd`` — no teacher: ``k`` of the ``M`` candidates drawn at random (the baseline);
* ``hard-negatives`` — the teacher keeps the ``k`` hardest of ``M``; ground-truth loss only;
* ``static-kd`` — + the teacher's scores distilled (score MSE), plain means;
* ``dcd`` — + DCD's dynamic per-sample weights;
* ``dcd-released`` — DCD as the released code computes it (KD weighted after reduction; teacher scores
  sorted, student scores not);
* ``dcd-shuffled`` — DCD with its weights permuted across the batch (control);
* ``dcd-raw-mse`` — DCD with the score MSE on raw scores instead of row-centred ones (the KD arms above
  match score *gaps*; a dual student has no per-row offset to follow a cross encoder's logit level).

Each arm is compared with its reference by :func:`alignlab.retrieval.repro.compare` (paired tests over
test queries, seed ranges), the weights' spread is logged, and the speed of the dual student against
the teacher is measured side by side (:mod:`alignlab.distill.dcd.bench`) on the test set.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from alignlab.core.config import experiment_config as _experiment_config
from alignlab.core.io import write_json, write_text
from alignlab.core.manifest import build_manifest
from alignlab.core.progress import info
from alignlab.core.stats import summarize
from alignlab.distill.dcd.bench import BenchConfig, format_bench, run_bench
from alignlab.distill.dcd.miner import TeacherScores
from alignlab.distill.dcd.students import load_teacher
from alignlab.distill.dcd.train import (
    ARMS,
    STUDENT_MODEL,
    TEACHER_MODEL,
    DCDDataConfig,
    DCDRunConfig,
    TeacherRunConfig,
    load_dcd_data,
    run_dcd,
    torch_threads,
    train_teacher,
)
from alignlab.models.factory import load_checkpoint
from alignlab.retrieval.repro import aggregate_results, compare
from alignlab.train.loop import TrainConfig

DESCRIPTION = ("DCD on near-duplicate ShapesWorld: teacher-mined hard negatives, static KD, dynamic weights, "
               "released-code mode, shuffled-weight control; speed-up of the dual student")

# (claim, arm A, arm B): B is expected to beat A if the claim holds.
CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("teacher-mined hard negatives beat random negatives", "no-kd", "hard-negatives"),
    ("distilling the teacher's scores adds to its hard negatives", "hard-negatives", "static-kd"),
    ("DCD's dynamic weights add to static KD", "static-kd", "dcd"),
    ("DCD as a whole beats the no-teacher baseline", "no-kd", "dcd"),
    ("the released code's defects change the result (B = released mode)", "dcd", "dcd-released"),
    ("the weights matter through their link to difficulty (B = shuffled weights)", "dcd", "dcd-shuffled"),
    ("matching raw scores instead of score gaps changes the result (B = uncentred MSE)", "dcd", "dcd-raw-mse"),
)


@dataclass
class DCDExperimentConfig:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    arms: list[str] = field(default_factory=lambda: ["no-kd", "hard-negatives", "static-kd", "dcd", "dcd-released",
                                                     "dcd-shuffled", "dcd-raw-mse"])
    data: DCDDataConfig = field(default_factory=DCDDataConfig)
    teacher_model: dict[str, Any] = field(default_factory=lambda: dict(TEACHER_MODEL))
    teacher_epochs: int = 6
    teacher_batch_size: int = 24
    teacher_lr: float = 1e-3
    teacher_dev_images: int = 60
    # The teacher's towers are pretrained as a dual encoder on the training images plus these extra
    # near-duplicate images (another data seed): like a real teacher, it knows more than the task data.
    teacher_pretrain_epochs: int = 10
    teacher_pretrain_images: int = 3000
    student_model: dict[str, Any] = field(default_factory=lambda: dict(STUDENT_MODEL))
    epochs: int = 10
    batch_size: int = 48
    lr: float = 2e-3
    pool_size: int = 15  # M
    keep: int = 7  # k
    alpha: float = 0.2
    temperature: float = 1.0
    kd_center: bool = True  # score MSE on row-centred scores (the dcd-raw-mse arm turns it off)
    t2i_weight: float = 1.0
    bench_rows: int = 30  # teacher rows timed on the test set for the speed-up (extrapolated to all)
    threads: int = 1


QUICK: dict[str, Any] = dict(
    seeds=[0, 1], data={"train": 72, "val": 24, "test": 24}, teacher_epochs=1, teacher_dev_images=12,
    teacher_pretrain_epochs=1, teacher_pretrain_images=24,
    teacher_model={"width": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2, "fusion_layers": 1},
    student_model={"width": 32, "embed_dim": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2},
    epochs=1, batch_size=24, pool_size=8, keep=3, bench_rows=8)


def arm_config(exp: DCDExperimentConfig, arm: str, seed: int, teacher_spec: str) -> DCDRunConfig:
    train = TrainConfig(epochs=exp.epochs, batch_size=exp.batch_size, lr=exp.lr, warmup_steps=20,
                        select_metric="rsum", log_every=20)
    base = DCDRunConfig(teacher=teacher_spec, student_config=dict(exp.student_model), pool_size=exp.pool_size,
                        keep=exp.keep, alpha=exp.alpha, temperature=exp.temperature, kd_center=exp.kd_center,
                        t2i_weight=exp.t2i_weight,
                        data=exp.data, train=train, threads=exp.threads, seed=seed)
    return replace(base, **ARMS[arm])


def experiment_config(*, quick: bool, seeds: list[int] | None = None,
                      overrides: dict[str, Any] | None = None) -> DCDExperimentConfig:
    """Quick (or full) settings with ``--set`` overrides merged deeply (:func:`alignlab.core.config.experiment_config`)."""
    return _experiment_config(DCDExperimentConfig, QUICK, quick=quick, seeds=seeds, overrides=overrides)


def run(out: Path, *, quick: bool = False, seeds: list[int] | None = None,
        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    started = time.time()
    out = Path(out)
    exp = experiment_config(quick=quick, seeds=seeds, overrides=overrides)
    unknown = [a for a in exp.arms if a not in ARMS]
    if unknown:
        from alignlab.core.errors import ConfigError

        raise ConfigError(f"unknown arm(s) {', '.join(unknown)}", fix=f"choose from {', '.join(ARMS)}")
    out.mkdir(parents=True, exist_ok=True)
    with torch_threads(exp.threads):
        data = load_dcd_data(exp.data)
        info("== dcd experiment: teacher")
        tcfg = TeacherRunConfig(model_config=dict(exp.teacher_model), data=exp.data, dev_images=exp.teacher_dev_images,
                                threads=exp.threads, pretrain_epochs=exp.teacher_pretrain_epochs,
                                pretrain_images=exp.teacher_pretrain_images,
                                train=TrainConfig(epochs=exp.teacher_epochs, batch_size=exp.teacher_batch_size,
                                                  lr=exp.teacher_lr, warmup_steps=20, select_metric="rsum",
                                                  log_every=20))
        teacher_res = train_teacher(tcfg, out / "teacher", data=data)
        teacher_spec = f"ckpt:{out / 'teacher'}"
        teacher = load_teacher(teacher_spec)
        ts = TeacherScores(teacher, data["train"])
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in exp.arms}
        for seed in exp.seeds:
            memo: dict = {}  # the teacher's scores of this seed's batches, shared by its arms
            for arm in exp.arms:
                info(f"== dcd experiment: arm {arm}, seed {seed}")
                res = run_dcd(arm_config(exp, arm, seed, teacher_spec), out / "arms" / arm / f"seed-{seed}",
                              teacher=teacher, data=data, teacher_scores=ts, memo=memo)
                runs[arm].append(res)
        arms = {arm: _arm_summary(rs) for arm, rs in runs.items()}
        comparisons = {}
        for claim, a, b in CLAIMS:
            if a in runs and b in runs:
                comparisons[f"{a} -> {b}"] = {"claim": claim, **compare(out / "arms" / a, out / "arms" / b)}
        baseline = exp.arms[0]
        vs_baseline = {arm: compare(out / "arms" / baseline, out / "arms" / arm) for arm in exp.arms[1:]}
        teacher_vs = {arm: compare(out / "teacher", out / "arms" / arm) for arm in exp.arms}
        speed = _speed(exp, out, teacher, data)
    rsum_t = teacher_res["metrics"]["rsum"]
    kept = {arm: 100.0 * a["metrics"]["rsum"]["mean"] / rsum_t for arm, a in arms.items()}
    result = {"experiment": "dcd", "config": asdict(exp), "quick": quick, "out": str(out),
              "data": {k: v.summary() for k, v in data.items()},
              "teacher": {"metrics": teacher_res["metrics"], "parameters": teacher_res.get("parameters"),
                          "best": teacher_res.get("best"), "dev_curve": teacher_res.get("dev_curve"),
                          "pretrain": teacher_res.get("pretrain"), "wall_s": teacher_res["manifest"].get("wall_s")},
              "arms": arms, "baseline": baseline, "vs_baseline": vs_baseline, "comparisons": comparisons,
              "teacher_vs_student": teacher_vs,
              "rsum_kept_pct": kept, "speed": speed,
              "manifest": build_manifest(config=asdict(exp), started=started)}
    write_json(out / "results.json", result)
    write_text(out / "report.md", format_report(result))
    return result


def _arm_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    agg = aggregate_results(results)
    diags = [r.get("diagnostics") or {} for r in results]
    keys = sorted({k for d in diags for k in d})
    agg["diagnostics"] = {k: summarize([d[k] for d in diags if k in d]) for k in keys}
    agg["parameters"] = results[0].get("parameters")
    agg["teacher_pairs_scored"] = sum(int(r.get("teacher_pairs_scored") or 0) for r in results)
    return agg


def _speed(exp: DCDExperimentConfig, out: Path, teacher: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Time the teacher and one dual student side by side on the test set (speed is the same for every arm)."""
    arm = "dcd" if "dcd" in exp.arms else exp.arms[0]
    student = load_checkpoint(out / "arms" / arm / f"seed-{exp.seeds[0]}")
    test = data["test"]
    cfg = BenchConfig(images=test.n_images, teacher_rows=min(exp.bench_rows, test.n_images), threads=exp.threads)
    res = run_bench(teacher, {f"dual student ({arm}, seed {exp.seeds[0]})": student}, test, cfg)
    res["table"] = format_bench(res)
    return res


def _pretrain_note(r: dict[str, Any]) -> str:
    pre = r["teacher"].get("pretrain")
    if not pre:
        return ""
    best = max((e["rsum"] for e in pre.get("dev_curve") or []), default=float("nan"))
    return (f"; towers pretrained as a dual encoder on {pre['images']:,} images, that dual's best dev RSUM "
            f"{best:.1f}")


def _verdict_tail(c: dict[str, Any]) -> str:
    return c["verdict"].split(": ")[-1]


def format_report(r: dict[str, Any]) -> str:
    exp = r["config"]
    t = r["teacher"]["metrics"]
    d = r["data"]
    lines = ["# DCD experiment (near-duplicate ShapesWorld)", "",
             f"Settings: {'quick' if r['quick'] else 'full'}; seeds {exp['seeds']}; train {d['train']['images']} "
             f"images in groups of {exp['data']['group_size']} near duplicates, test {d['test']['images']} images × "
             f"{d['test']['captions']} captions; M={exp['pool_size']}, k={exp['keep']}, α={exp['alpha']}, "
             f"T={exp['temperature']}; student {exp['epochs']} epochs, batch {exp['batch_size']}; teacher "
             f"{exp['teacher_epochs']} epochs. Re-create with `alignlab experiment dcd --out {r.get('out', '<out>')}"
             f"{' --quick' if r['quick'] else ''}` (finished runs are read back, not retrained).", "",
             f"Teacher (tiny cross encoder, {r['teacher']['parameters']:,} parameters{_pretrain_note(r)}): test RSUM "
             f"{t['rsum']:.1f} (i2t R@1 {t['i2t_R@1']:.1f}, t2i R@1 {t['t2i_R@1']:.1f}). Dual students: "
             f"{next(iter(r['arms'].values()))['parameters']:,} parameters.", "",
             f"| arm | RSUM mean ± sd | min–max | i2t R@1/5/10 | t2i R@1/5/10 | % of teacher RSUM | "
             f"Δ RSUM vs {r['baseline']} [95% CI], p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, a in r["arms"].items():
        m = a["metrics"]
        c = r["vs_baseline"].get(arm)
        vs = (f"{c['delta_rsum']:+.1f} [{c['ci_low']:+.1f}, {c['ci_high']:+.1f}], p={c['p_value']:.3g} | "
              f"{_verdict_tail(c)}" if c else "— | baseline")
        lines.append(f"| {arm} | {m['rsum']['mean']:.1f} ± {m['rsum']['sd']:.1f} | {m['rsum']['min']:.1f}–"
                     f"{m['rsum']['max']:.1f} | {m['i2t_R@1']['mean']:.1f}/{m['i2t_R@5']['mean']:.1f}/"
                     f"{m['i2t_R@10']['mean']:.1f} | {m['t2i_R@1']['mean']:.1f}/{m['t2i_R@5']['mean']:.1f}/"
                     f"{m['t2i_R@10']['mean']:.1f} | {r['rsum_kept_pct'][arm]:.1f}% | {vs} |")
    lines += ["", "## Claims (repro compare: paired randomization test over test queries, seed ranges)", "",
              "| claim | A → B | Δ RSUM [95% CI] | p | verdict |", "|---|---|---|---|---|"]
    for key, c in r["comparisons"].items():
        lines.append(f"| {c['claim']} | {key} | {c['delta_rsum']:+.1f} [{c['ci_low']:+.1f}, {c['ci_high']:+.1f}] | "
                     f"{c['p_value']:.3g} | {_verdict_tail(c)} |")
    lines += ["", "## Weights actually applied (mean over seeds of per-step means; relative to uniform 1/B)", "",
              "| arm | w max | w min | r max | r min | teacher ranks the positive first |", "|---|---|---|---|---|---|"]
    for arm, a in r["arms"].items():
        dg = a["diagnostics"]
        if dg:
            cells = [f"{dg[k]['mean']:.3f}" if k in dg else "—"
                     for k in ("w_max_rel", "w_min_rel", "r_max_rel", "r_min_rel", "teacher_pos_first")]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "## Speed (one process, side by side)", "", r["speed"]["table"]]
    return "\n".join(lines) + "\n"
