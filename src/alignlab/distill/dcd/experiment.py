"""``alignlab experiment dcd``: DCD's claims, pre-registered and tested on near-duplicate ShapesWorld.

One cross-encoder teacher is trained once, with the recipe of
:class:`~alignlab.distill.dcd.train.TeacherRunConfig` (its defaults; the experiment sets only the data and
the thread count, and quick settings shrink it). Then a
dual-encoder student is trained in every arm with every seed (same data, same pools of candidates, same
teacher scores, same budget; arms are paired by seed):

* ``no-kd`` — no teacher: ``k`` of the ``M`` candidates drawn at random (the baseline);
* ``hard-negatives`` — the teacher keeps the ``k`` hardest of ``M``; ground-truth loss only;
* ``static-kd`` — + the teacher's scores distilled (score MSE), plain means;
* ``dcd`` — + DCD's dynamic per-sample weights;
* ``dcd-released`` — DCD as the released code computes it (KD weighted after reduction; teacher scores
  sorted, student scores not);
* ``dcd-shuffled`` — DCD with its weights permuted across the batch (control);
* ``dcd-raw-mse`` — DCD with the score MSE on raw scores instead of row-centred ones;
* ``<arm>-init`` (e.g. ``dcd-init``) — the same arm with the student initialised from the dual encoder the
  teacher's towers were pretrained as (``<teacher>/pretrain/best``), fine-tuned at ``init_lr``: the old
  "follow-up", now in the same claim family.

Every arm's candidate pools leave out captions true of the image (``pools="truth"``, the trainer's
default); ``dcd-source-pools`` (the old pools, with false negatives) can be added as an arm.

The claims (``claims`` in the config, fixed before the run) are analysed by :mod:`alignlab.core.analysis`:
test RSUM per training run, paired by seed, exact sign-flip test (or paired t where declared), Holm across
the claims, TOST at each claim's margin. Beside them the report gives where every model sits between the
chance floor and the perfect-ranker ceiling (the initialisations before training, the teacher's own
towers, the teacher, the students), the weights DCD applied, and a speed benchmark (teacher and dual
students timed side by side, :mod:`alignlab.distill.dcd.bench`) — supporting numbers, not seed claims.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.analysis import (
    analyse,
    analysis_markdown,
    claims_from_config,
    plan_markdown,
    seeds_note,
    smallest_p,
    verdict_line,
)
from alignlab.core.config import experiment_config as _experiment_config
from alignlab.core.config import from_dict, merge
from alignlab.core.errors import ConfigError
from alignlab.core.io import read_json
from alignlab.core.manifest import build_manifest
from alignlab.core.progress import info
from alignlab.core.results import write_results
from alignlab.core.seed import set_seed
from alignlab.core.stats import summarize
from alignlab.core.tables import markdown_table
from alignlab.distill.dcd.bench import BenchConfig, format_bench, run_bench
from alignlab.distill.dcd.miner import TeacherScores
from alignlab.distill.dcd.students import count_parameters, load_teacher
from alignlab.distill.dcd.train import (
    ARMS,
    STUDENT_MODEL,
    DCDDataConfig,
    DCDRunConfig,
    TeacherRunConfig,
    build_student,
    load_dcd_data,
    run_dcd,
    torch_threads,
    train_teacher,
)
from alignlab.models.factory import load_checkpoint
from alignlab.retrieval.evaluate import evaluate_model
from alignlab.retrieval.metrics import chance_metrics
from alignlab.retrieval.protocols import perfect_ranker
from alignlab.train.loop import TrainConfig

DESCRIPTION = (
    "DCD on near-duplicate ShapesWorld: teacher-mined hard negatives, static KD, dynamic weights, "
    "released-code mode, shuffled-weight and raw-MSE controls, from scratch and from pretrained "
    "towers (pre-registered claims); speed-up of the dual student"
)

SUMMARY = {
    "paper": "DCD (IEEE TMM 2023)",
    "claim": "teacher-mined hard negatives and dynamic distillation weights help a dual student "
    "(from scratch and from pretrained towers); the released code's defects, shuffled weights "
    "and raw-score MSE as controls",
}

INIT = "-init"  # arm suffix: the student starts from the teacher's pretrained towers
METRIC = "rsum"
RECALLS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")
# The smallest RSUM difference that matters: one recall point on each of the six R@K (fixed before any run).
MARGIN = 6.0
# Six seeds fit the CPU budget; an exact sign-flip test over 6 paired seeds cannot go below 2/64, which Holm's
# factor over the claims lifts above alpha, so the claims declare the paired t-test.
TEST = "t"


def _claim(name: str, treatment: str, control: str, direction: str) -> dict[str, Any]:
    return {
        "name": name,
        "treatment": treatment,
        "control": control,
        "metric": METRIC,
        "direction": direction,
        "margin": MARGIN,
        "test": TEST,
    }


# The pre-registered plan: DCD's claims (the paper's direction), then the defect and control arms, then the
# old follow-up's claims for students that start from pretrained towers, all in one family (one Holm).
CLAIMS: tuple[dict[str, Any], ...] = (
    _claim("hard negatives beat random ones (scratch)", "hard-negatives", "no-kd", "improves"),
    _claim("static KD adds to hard negatives (scratch)", "static-kd", "hard-negatives", "improves"),
    _claim("dynamic weights add to static KD (scratch)", "dcd", "static-kd", "improves"),
    _claim("DCD beats no teacher (scratch)", "dcd", "no-kd", "improves"),
    _claim("released-code defects change nothing (scratch)", "dcd-released", "dcd", "equivalent"),
    _claim("shuffling the weights hurts (scratch)", "dcd-shuffled", "dcd", "hurts"),
    _claim("raw-score MSE hurts (scratch)", "dcd-raw-mse", "dcd", "hurts"),
    _claim("static KD beats no teacher (pretrained)", "static-kd-init", "no-kd-init", "improves"),
    _claim("dynamic weights add to static KD (pretrained)", "dcd-init", "static-kd-init", "improves"),
    _claim("DCD beats no teacher (pretrained)", "dcd-init", "no-kd-init", "improves"),
)
DEFAULT_ARMS = [
    "no-kd",
    "hard-negatives",
    "static-kd",
    "dcd",
    "dcd-released",
    "dcd-shuffled",
    "dcd-raw-mse",
    "no-kd-init",
    "static-kd-init",
    "dcd-init",
]


@dataclass
class DCDExperimentConfig:
    seeds: list[int] = field(default_factory=lambda: list(range(6)))
    arms: list[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    claims: list[dict[str, Any]] = field(default_factory=lambda: [dict(c) for c in CLAIMS])
    data: DCDDataConfig = field(default_factory=DCDDataConfig)
    # Overrides of TeacherRunConfig's defaults (nested keys merge). Empty in the full run, so the teacher is
    # exactly train.py's default recipe; quick settings shrink it.
    teacher: dict[str, Any] = field(default_factory=dict)
    student_model: dict[str, Any] = field(default_factory=lambda: dict(STUDENT_MODEL))
    epochs: int = 2
    batch_size: int = 48
    lr: float = 2e-3
    init_lr: float = 2e-4  # students from pretrained towers are fine-tuned at a tenth of the scratch lr
    init_epochs: int | None = None  # their epochs (None: ``epochs``)
    pool_size: int = 15  # M
    keep: int = 7  # k
    alpha: float = 0.2
    temperature: float = 1.0
    kd_center: bool = True  # score MSE on row-centred scores (the dcd-raw-mse arm turns it off)
    t2i_weight: float = 1.0
    t2i_mask_true: bool = True  # caption -> image term: images the caption is true of are not negatives
    bench_rows: int = 30  # teacher rows timed on the test set for the speed-up (extrapolated to all)
    threads: int = 1


QUICK: dict[str, Any] = dict(
    seeds=[0, 1],
    data={"train": 72, "val": 24, "test": 24},
    teacher={
        "train": {"epochs": 1},
        "dev_images": 12,
        "pretrain_epochs": 1,
        "pretrain_images": 24,
        "model_config": {
            "width": 32,
            "image_channels": [8, 16, 32],
            "text_layers": 1,
            "heads": 2,
            "fusion_layers": 1,
        },
    },
    student_model={"width": 32, "embed_dim": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2},
    epochs=1,
    batch_size=24,
    pool_size=8,
    keep=3,
    bench_rows=8,
)


def split_arm(arm: str) -> tuple[str, bool]:
    """``(trainer arm, from pretrained towers)`` of an experiment arm name.

    ``dcd-init`` -> ``("dcd", True)``.
    """
    if arm not in ARMS and arm.endswith(INIT) and arm[: -len(INIT)] in ARMS:
        return arm[: -len(INIT)], True
    return arm, False


def known_arms() -> list[str]:
    return [*ARMS, *(a + INIT for a in ARMS)]


def teacher_config(exp: DCDExperimentConfig) -> TeacherRunConfig:
    """train.py's default teacher recipe, on the experiment's data and threads.

    ``exp.teacher`` overrides are merged on top.
    """
    raw = merge(asdict(TeacherRunConfig()), exp.teacher)
    raw.update(data=asdict(exp.data), threads=exp.threads)
    return from_dict(TeacherRunConfig, raw, where="config key teacher")


def init_spec(out: Path) -> str:
    """The dual encoder the teacher's towers were pretrained as: where ``-init`` students start."""
    return f"ckpt:{out / 'teacher' / 'pretrain' / 'best'}"


def arm_config(exp: DCDExperimentConfig, arm: str, seed: int, teacher_spec: str, out: Path) -> DCDRunConfig:
    base_arm, init = split_arm(arm)
    epochs = exp.init_epochs if init and exp.init_epochs else exp.epochs
    train = TrainConfig(
        epochs=epochs,
        batch_size=exp.batch_size,
        lr=exp.init_lr if init else exp.lr,
        warmup_steps=20,
        select_metric="rsum",
        log_every=20,
    )
    base = DCDRunConfig(
        teacher=teacher_spec,
        student_config=dict(exp.student_model),
        pool_size=exp.pool_size,
        keep=exp.keep,
        alpha=exp.alpha,
        temperature=exp.temperature,
        kd_center=exp.kd_center,
        t2i_weight=exp.t2i_weight,
        t2i_mask_true=exp.t2i_mask_true,
        student_init=init_spec(out) if init else None,
        data=exp.data,
        train=train,
        threads=exp.threads,
        seed=seed,
    )
    return replace(base, **ARMS[base_arm])


def experiment_config(
    *, quick: bool, seeds: list[int] | None = None, overrides: dict[str, Any] | None = None
) -> DCDExperimentConfig:
    """Quick (or full) settings with ``--set`` overrides merged deeply.

    See :func:`alignlab.core.config.experiment_config`.
    """
    return _experiment_config(DCDExperimentConfig, QUICK, quick=quick, seeds=seeds, overrides=overrides)


def validate(exp: DCDExperimentConfig) -> tuple[list[Any], TeacherRunConfig]:
    """Everything that can be checked before training: arms, claims, seeds, the teacher's recipe."""
    known = known_arms()
    unknown = [a for a in exp.arms if a not in known]
    if unknown:
        raise ConfigError(
            f"unknown arm(s) {', '.join(unknown)}",
            where="config key arms",
            fix=f"choose from {', '.join(ARMS)} (each also as <arm>{INIT})",
        )
    if len(set(exp.arms)) != len(exp.arms):
        raise ConfigError("an arm is listed twice", where="config key arms", fix="list each arm once")
    if not exp.seeds or len(set(exp.seeds)) != len(exp.seeds):
        raise ConfigError(f"seeds must be distinct and not empty, got {exp.seeds}", where="config key seeds")
    claims = claims_from_config(exp.claims, arms=exp.arms, metrics=[METRIC])
    tcfg = teacher_config(exp)
    if any(split_arm(a)[1] for a in exp.arms) and tcfg.pretrain_epochs < 1:
        raise ConfigError(
            "arms from pretrained towers (-init) need a teacher whose towers are pretrained",
            where="config key arms",
            fix="drop the -init arms, or set teacher.pretrain_epochs > 0",
        )
    return claims, tcfg


def run(
    out: Path, *, quick: bool = False, seeds: list[int] | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    started, cpu0 = time.time(), time.process_time()
    out = Path(out)
    exp = experiment_config(quick=quick, seeds=seeds, overrides=overrides)
    claims, tcfg = validate(exp)  # a plan that cannot be analysed fails before any training
    out.mkdir(parents=True, exist_ok=True)
    with torch_threads(exp.threads):
        data = load_dcd_data(exp.data)
        test = data["test"]
        info("== dcd experiment: teacher")
        c0 = time.process_time()
        teacher_res = train_teacher(tcfg, out / "teacher", data=data)
        cpu = {"teacher": time.process_time() - c0}
        teacher_spec = f"ckpt:{out / 'teacher'}"
        teacher = load_teacher(teacher_spec)
        ts = TeacherScores(teacher, data["train"])
        c0 = time.process_time()
        inits = _initialisations(exp, out, teacher, data)
        cpu["initialisations"] = time.process_time() - c0
        c0 = time.process_time()
        runs: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in exp.arms}
        for seed in exp.seeds:
            memo: dict = {}  # the teacher's scores of this seed's batches, shared by its arms
            for arm in exp.arms:
                info(f"== dcd experiment: arm {arm}, seed {seed}")
                runs[arm][seed] = run_dcd(
                    arm_config(exp, arm, seed, teacher_spec, out),
                    out / "arms" / arm / f"seed-{seed}",
                    teacher=teacher,
                    data=data,
                    teacher_scores=ts,
                    memo=memo,
                )
        values = {arm: {s: float(r["metrics"][METRIC]) for s, r in rs.items()} for arm, rs in runs.items()}
        items = {
            arm: {s: _per_query_rsum(out / "arms" / arm / f"seed-{s}") for s in rs}
            for arm, rs in runs.items()
        }
        cpu["students"] = time.process_time() - c0
        rows = analyse(claims, values, items)
        c0 = time.process_time()
        speed = _speed(exp, out, teacher, test)
        cpu["speed"] = time.process_time() - c0
    result = {
        "experiment": "dcd",
        "quick": quick,
        "config": asdict(exp),
        "data": {k: v.summary() for k, v in data.items()},
        "floors": {"chance": chance_metrics(test.relevance, test.n_captions)},
        "ceilings": {"perfect_ranker": perfect_ranker(test), "relevance": test.relevance_kind},
        "teacher": {
            "config": asdict(tcfg),
            "metrics": _recalls(teacher_res["metrics"]),
            "parameters": teacher_res.get("parameters"),
            "best": teacher_res.get("best"),
            "pretrain": _pretrain_summary(teacher_res.get("pretrain")),
            "train_cpu_s": teacher_res.get("train_cpu_s"),
            "wall_s": teacher_res["manifest"].get("wall_s"),
        },
        "initialisations": inits,
        "runs": {arm: {str(s): _recalls(r["metrics"]) for s, r in rs.items()} for arm, rs in runs.items()},
        "arms": {arm: _arm_summary(exp, arm, rs) for arm, rs in runs.items()},
        "claims": rows,
        "speed": speed,
        "manifest": build_manifest(
            config=asdict(exp),
            started=started,
            cpu_s=round(time.process_time() - cpu0, 1),
            cpu_s_by_stage={k: round(v, 1) for k, v in cpu.items()},
        ),
    }
    return write_results(out, result, render_report)


# --- the pieces of a run --------------------------------------------------------------------------------


def _recalls(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in (*RECALLS, "rsum")}


def _per_query_rsum(run_dir: Path) -> list[float]:
    """Per-query values whose mean is the run's RSUM, paired across arms.

    Image queries come first, then caption queries.
    """
    pq = read_json(run_dir / "per_query.json")
    i2t, t2i = np.asarray(pq["i2t_rank"]), np.asarray(pq["t2i_rank"])
    n = len(i2t) + len(t2i)
    hits = [sum((r <= k) for k in (1, 5, 10)) * (100.0 * n / len(r)) for r in (i2t, t2i)]
    return np.concatenate(hits).astype(float).tolist()


def _pretrain_summary(pre: dict[str, Any] | None) -> dict[str, Any] | None:
    if not pre:
        return None
    curve = pre.get("dev_curve") or []
    return {
        "images": pre.get("images"),
        "epochs": len(curve),
        "best_dev_rsum": max((float(e["rsum"]) for e in curve if "rsum" in e), default=None),
    }


def _initialisations(
    exp: DCDExperimentConfig, out: Path, teacher: Any, data: dict[str, Any]
) -> dict[str, Any]:
    """Test scores of the students' starting points, before any training.

    * ``scratch``: each seed's freshly built dual student (the weights its scratch arms start from);
    * ``pretrained``: the dual encoder the teacher's towers were pretrained as (where ``-init`` arms start;
      the same weights for every seed) — also the teacher's own towers, which the teacher should beat.
    """
    test = data["test"]
    scratch: dict[str, Any] = {}
    arm = next((a for a in exp.arms if not split_arm(a)[1]), None)
    if arm is not None:
        for seed in exp.seeds:
            cfg = arm_config(exp, arm, seed, "", out)
            set_seed(cfg.seed)  # as run_dcd does before it builds the student
            student = build_student(cfg, teacher, data["train"])
            student.eval()
            scratch[str(seed)] = _recalls(evaluate_model(student, test).metrics)
    pretrained = None
    path = out / "teacher" / "pretrain" / "best"
    if path.is_dir():
        model = load_checkpoint(path)
        pretrained = {
            "metrics": _recalls(evaluate_model(model, test).metrics),
            "parameters": count_parameters(model),
        }
    return {
        "scratch": scratch,
        "scratch_parameters": count_parameters(student) if arm is not None else None,
        "pretrained": pretrained,
    }


def _arm_summary(exp: DCDExperimentConfig, arm: str, rs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    results = list(rs.values())
    metrics = {k: summarize([float(r["metrics"][k]) for r in results]) for k in (*RECALLS, "rsum")}
    diags = [r.get("diagnostics") or {} for r in results]
    keys = sorted({k for d in diags for k in d})
    return {
        "metrics": metrics,
        "n_seeds": len(results),
        "diagnostics": {k: summarize([d[k] for d in diags if k in d]) for k in keys},
        "parameters": results[0].get("parameters"),
        "from_pretrained": split_arm(arm)[1],
        "weighting": bool(ARMS[split_arm(arm)[0]].get("weighting")),
        "teacher_pairs_scored": sum(int(r.get("teacher_pairs_scored") or 0) for r in results),
    }


def _speed(exp: DCDExperimentConfig, out: Path, teacher: Any, test: Any) -> dict[str, Any]:
    """Time the teacher and the DCD dual students side by side on the test set (first seed; speed is the same
    for every arm of a kind)."""
    seed = exp.seeds[0]
    students = {}
    for arm in ("dcd", f"dcd{INIT}"):
        if arm not in exp.arms:
            continue
        students[f"dual student ({arm}, seed {seed})"] = load_checkpoint(out / "arms" / arm / f"seed-{seed}")
    if not students:
        arm = exp.arms[0]
        students[f"dual student ({arm}, seed {seed})"] = load_checkpoint(out / "arms" / arm / f"seed-{seed}")
    cfg = BenchConfig(
        images=test.n_images, teacher_rows=min(exp.bench_rows, test.n_images), threads=exp.threads
    )
    res = run_bench(teacher, students, test, cfg)
    res["table"] = format_bench(res)
    return res


# --- the report (a pure function of results.json) --------------------------------------------------------


def _f(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _place(x: float, floor: float, ceiling: float) -> str:
    """Where ``x`` sits between the chance floor (0%) and the ceiling (100%)."""
    return f"{100.0 * (x - floor) / (ceiling - floor):.1f}%" if ceiling > floor else "—"


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _setting(r: dict[str, Any]) -> str:
    exp, d, t = r["config"], r["data"], r["teacher"]
    tc = t["config"]
    pre = t.get("pretrain")
    pre_text = ""
    masked = " (images the caption is true of masked out)" if exp.get("t2i_mask_true") else ""
    if pre:
        extra = (
            f": the training images plus {tc['pretrain_images']:,} extra near-duplicate images of another "
            "data seed"
            if tc.get("pretrain_images")
            else ""
        )
        pre_text = (
            f"its towers first trained as a dual encoder (InfoNCE, {_epochs(tc['pretrain_epochs'])} on "
            f"{pre['images']:,} images{extra}), then "
        )
    if tc.get("fusion") == "hard":
        positive = {"truth": "any caption true of the image", "own": "one of the image's own captions"}.get(
            tc.get("positives") or "own", str(tc.get("positives"))
        )
        stage2 = (
            f"{_epochs(tc['train']['epochs'])} of fusion training with the towers frozen, on the dual's hard "
            f"negatives (positive: {positive}; against {tc['hard_negatives']} of the dual's "
            f"{tc['hard_pool']} top-scored false captions and {tc['random_negatives']} random ones, and the "
            "same over images)"
        )
    else:
        stage2 = f"{_epochs(tc['train']['epochs'])} of training on each batch's score grid"
    init = r["initialisations"]
    scratch_arms = [a for a in exp["arms"] if not r["arms"][a]["from_pretrained"]]
    init_arms = [a for a in exp["arms"] if r["arms"][a]["from_pretrained"]]
    text = (
        f"**Setting.** Near-duplicate ShapesWorld (`alignlab.distill.dcd.data`): images in groups of "
        f"{exp['data']['group_size']} — a scene and near duplicates that differ in one object — "
        f"{d['train']['images']:,} training images ({d['train']['captions']:,} captions), "
        f"{d['val']['images']:,} validation, {d['test']['images']:,} test images × "
        f"{d['test']['captions']:,} captions, scored with "
        f"{r['ceilings']['relevance']} relevance (a caption is relevant to every image it is true of). "
        f"**Teacher:** a tiny cross encoder ({t['parameters']:,} parameters; train.py's default recipe: "
        f"{pre_text}{stage2}; batch {tc['train']['batch_size']}, lr {tc['train']['lr']:g}), trained once and "
        f"shared by every arm and seed. **Students:** dual encoders, "
        f"batch {exp['batch_size']}, best epoch by dev RSUM; per image `M = "
        f"{exp['pool_size']}` candidates from the other images of the batch (never a caption true of the "
        f"image), `k = {exp['keep']}` kept, `α = {exp['alpha']:g}`, `T = {exp['temperature']:g}`; "
        f"ground truth = CE over `[positive, k negatives]` plus {exp['t2i_weight']:g} × caption → image CE "
        f"over the batch{masked}. From scratch ({', '.join(scratch_arms) or 'none'}): "
        f"{init['scratch_parameters'] or 0:,}-parameter students, {_epochs(exp['epochs'])}, "
        f"lr {exp['lr']:g}. "
    )
    if init_arms:
        p = init["pretrained"]
        text += (
            f"From pretrained towers ({', '.join(init_arms)}): students start from the dual encoder the "
            f"teacher's towers were pretrained as ({p['parameters']:,} parameters), "
            f"{_epochs(exp.get('init_epochs') or exp['epochs'])}, lr {exp['init_lr']:g}. "
        )
    text += (
        f"Seeds {', '.join(map(str, exp['seeds']))}: data, pools and teacher scores are the same in every "
        f"arm of a seed. One torch thread."
    )
    return text


def _method_note() -> str:
    return (
        "**Method.** DCD trains a fast dual student on few, well-chosen negatives: a cross-encoder teacher "
        "scores `M` candidates per image and keeps the `k` hardest; the student learns from the ground "
        "truth and (score KD) from the teacher's scores of those candidates, and DCD's dynamic weights "
        "reweight each sample by the teacher's difficulty (entropy). `dcd-released` reproduces the released "
        "code's two defects (KD weighted after reduction; teacher scores sorted, student scores not), "
        "`dcd-shuffled` permutes the weights across the batch (their link to difficulty removed), "
        "`dcd-raw-mse` matches raw scores as published instead of row-centred score gaps (a dual student has "
        "no per-row offset to follow a cross encoder's logit level). See docs/dcd.md."
    )


def _where_they_sit(r: dict[str, Any]) -> list[str]:
    floor = r["floors"]["chance"]["rsum"]
    ceil = r["ceilings"]["perfect_ranker"]
    ceiling = ceil[r["ceilings"]["relevance"]]["rsum"]
    rows: list[list[str]] = [["chance (random ranking, exact)", _f(floor), "—", "0.0%"]]
    scratch = [v["rsum"] for v in r["initialisations"]["scratch"].values()]
    if scratch:
        mean, sd = float(np.mean(scratch)), float(np.std(scratch, ddof=1)) if len(scratch) > 1 else 0.0
        rows.append(
            [
                f"scratch students before training ({len(scratch)} seeds)",
                f"{mean:.1f} ± {sd:.1f}",
                "—",
                _place(mean, floor, ceiling),
            ]
        )
    pre = r["initialisations"]["pretrained"]
    if pre:
        rows.append(
            [
                "teacher's towers as a dual encoder (where -init students start)",
                _f(pre["metrics"]["rsum"]),
                "—",
                _place(pre["metrics"]["rsum"], floor, ceiling),
            ]
        )
    t = r["teacher"]["metrics"]["rsum"]
    rows.append(["teacher (cross encoder)", _f(t), "—", _place(t, floor, ceiling)])
    for arm, a in r["arms"].items():
        m = a["metrics"]["rsum"]
        rows.append(
            [
                f"student `{arm}`",
                f"{m['mean']:.1f} ± {m['sd']:.1f}",
                f"{100.0 * m['mean'] / t:.1f}%",
                _place(m["mean"], floor, ceiling),
            ]
        )
    rows.append([f"perfect ranker ({r['ceilings']['relevance']} relevance)", _f(ceiling), "—", "100.0%"])
    lines = [
        "## Where the models sit (supporting)",
        "",
        "Test RSUM (of 600) from the chance floor to the perfect-ranker ceiling; students as mean ± sd over "
        "seeds. The last column places each between floor (0%) and ceiling (100%).",
        "",
        markdown_table(["model", "test RSUM", "% of teacher", "floor → ceiling"], rows, align="lrrr"),
        "",
    ]
    if pre:
        gap = t - pre["metrics"]["rsum"]
        word = "beats" if gap > 0 else "does not beat"
        lines += [
            f"The teacher {word} its own towers used as a dual encoder ({gap:+.1f} RSUM; one teacher, one "
            "training run: a measurement, not a tested claim).",
            "",
        ]
    if "source" in ceil and r["ceilings"]["relevance"] != "source":
        lines += [
            "Under source relevance (only an image's own captions count) a perfect ranker would score "
            f"{ceil['source']['rsum']:.1f}: true captions of other images would count as misses.",
            "",
        ]
    return lines


def _arm_table(r: dict[str, Any]) -> list[str]:
    head = [
        "arm",
        "start",
        "seeds",
        "RSUM mean ± sd",
        "min–max",
        "i2t R@1/5/10",
        "t2i R@1/5/10",
        "parameters",
    ]
    body = []
    for arm, a in r["arms"].items():
        m = a["metrics"]
        body.append(
            [
                arm,
                "pretrained towers" if a["from_pretrained"] else "scratch",
                str(a["n_seeds"]),
                f"{m['rsum']['mean']:.1f} ± {m['rsum']['sd']:.1f}",
                f"{m['rsum']['min']:.1f}–{m['rsum']['max']:.1f}",
                "/".join(f"{m[f'i2t_R@{k}']['mean']:.1f}" for k in (1, 5, 10)),
                "/".join(f"{m[f't2i_R@{k}']['mean']:.1f}" for k in (1, 5, 10)),
                f"{a['parameters']:,}",
            ]
        )
    t = r["teacher"]["metrics"]
    body.append(
        [
            "teacher",
            "—",
            "1",
            f"{t['rsum']:.1f}",
            "—",
            "/".join(f"{t[f'i2t_R@{k}']:.1f}" for k in (1, 5, 10)),
            "/".join(f"{t[f't2i_R@{k}']:.1f}" for k in (1, 5, 10)),
            f"{r['teacher']['parameters']:,}",
        ]
    )
    return ["## Arms (supporting)", "", markdown_table(head, body, align="lllrrrrr"), ""]


def _seed_table(r: dict[str, Any]) -> list[str]:
    seeds = [str(s) for s in r["config"]["seeds"]]
    body = [
        [arm, *(_f(r["runs"][arm][s]["rsum"]) if s in r["runs"][arm] else "—" for s in seeds)]
        for arm in r["arms"]
    ]
    scratch = r["initialisations"]["scratch"]
    if scratch:
        body.append(
            [
                "(scratch init, before training)",
                *(_f(scratch[s]["rsum"]) if s in scratch else "—" for s in seeds),
            ]
        )
    return [
        "## Test RSUM per seed",
        "",
        markdown_table(["arm", *(f"seed {s}" for s in seeds)], body, align="l" + "r" * len(seeds)),
        "",
    ]


def _weights_table(r: dict[str, Any]) -> list[str]:
    keys = ("w_max_rel", "w_min_rel", "r_max_rel", "r_min_rel", "teacher_pos_first")
    body = []
    for arm, a in r["arms"].items():
        dg = a["diagnostics"]
        if a.get("weighting") and any(k in dg for k in keys):
            body.append([arm, *(f"{dg[k]['mean']:.3f}" if k in dg else "—" for k in keys)])
    if not body:
        return []
    return [
        "### Weights actually applied",
        "",
        "Mean over seeds of per-step means, relative to uniform `1/B`: `w` weighs the ground-truth term, `r` "
        "the distillation term; the last column is the share of training images whose positive the teacher "
        "scored above every candidate.",
        "",
        markdown_table(
            ["arm", "w max", "w min", "r max", "r min", "teacher ranks the positive first"],
            body,
            align="lrrrrr",
        ),
        "",
    ]


def _below_init(r: dict[str, Any]) -> list[str]:
    """How often a trained student ends below the weights it started from (same seed)."""
    scratch = r["initialisations"]["scratch"]
    pre = r["initialisations"]["pretrained"]
    body = []
    for arm, a in r["arms"].items():
        runs = r["runs"][arm]
        if a["from_pretrained"]:
            if not pre:
                continue
            start = {s: pre["metrics"]["rsum"] for s in runs}
        else:
            start = {s: scratch[s]["rsum"] for s in runs if s in scratch}
        seeds = [s for s in runs if s in start]
        if not seeds:
            continue
        below = sum(runs[s]["rsum"] < start[s] for s in seeds)
        delta = float(np.mean([runs[s]["rsum"] - start[s] for s in seeds]))
        body.append([arm, f"{below}/{len(seeds)}", f"{delta:+.1f}"])
    if not body:
        return []
    return [
        "### Trained students against their own starting point",
        "",
        "Test RSUM after training minus before, per seed (scratch arms: that seed's freshly built student; "
        "`-init` arms: the pretrained towers). The best epoch is chosen by dev RSUM among the trained "
        "epochs, so a run cannot fall back to its start.",
        "",
        markdown_table(["arm", "seeds below their start", "Δ RSUM (mean)"], body, align="lrr"),
        "",
    ]


def render_report(r: dict[str, Any]) -> str:
    """The experiment's page, from its results dict alone.

    docs/results/dcd.md is this of docs/results/dcd.json.
    """
    exp = r["config"]
    claims = claims_from_config(exp["claims"])
    rows = r["claims"]
    n_seeds = len(exp["seeds"])
    tests = sorted({c.test for c in claims})
    lines = ["# DCD: teacher-mined hard negatives and dynamic distillation weights (IEEE TMM 2023)", ""]
    if r["quick"]:
        lines += [
            "**Quick settings: supports no verdict.** Tiny data, one epoch, two seeds: this page only shows "
            "that the pipeline runs.",
            "",
        ]
    lines += [
        "Does a cross-encoder teacher that mines hard negatives, distils its scores and reweights samples "
        "by difficulty make a better dual student, and how much faster is the student? Tested on "
        "near-duplicate ShapesWorld, where hard negatives exist by construction and relevance comes from "
        "the truth evaluator.",
        "",
        _setting(r),
        "",
        _method_note(),
        "",
    ]
    lines += [plan_markdown(claims).rstrip("\n"), ""]
    lines += [seeds_note(n_seeds, test, claims[0].alpha, len(claims)) for test in tests]
    floor = smallest_p(n_seeds, "sign-flip") * len(claims)
    if "t" in tests and floor >= claims[0].alpha:
        lines += [
            "",
            f"With {n_seeds} paired seeds an exact sign-flip test could not reach alpha "
            f"{claims[0].alpha:g} after Holm over {len(claims)} claims (its floor times {len(claims)} is "
            f"{min(floor, 1.0):.3g}), so the claims declare the paired t-test over seeds.",
        ]
    lines += ["", analysis_markdown(claims, rows).rstrip("\n"), ""]
    lines += [f"* {verdict_line(row)}" for row in rows]
    lines += [""]
    lines += _where_they_sit(r)
    lines += _arm_table(r)
    lines += _seed_table(r)
    lines += [
        "## Speed (supporting benchmark)",
        "",
        "Teacher and dual students ranking the test set in one process, side by side (not a seed claim). "
        "Cross encoders are timed at their cheapest — towers once per image and per caption, fusion once "
        "per pair — so the speed-ups are conservative.",
        "",
        r["speed"]["table"].rstrip("\n"),
        "",
    ]
    lines += [
        "## Exploratory",
        "",
        "Not pre-registered: read as descriptions of this run, not as tested claims.",
        "",
    ]
    lines += _below_init(r)
    lines += _weights_table(r)
    pairs = r["arms"].get("dcd", {}).get("teacher_pairs_scored")
    if pairs:
        lines += [
            f"The teacher scored {pairs:,} (image, candidate) pairs for the `dcd` arm's runs; the other "
            "teacher arms of a seed reuse the same scores (same pools).",
            "",
        ]
    lines += [
        "## Caveats",
        "",
        "* Tiny models and synthetic data on one CPU thread; one teacher, trained once — the claims are "
        "about students given this teacher, and the teacher's own variance is not sampled.",
        "* The `-init` students all start from the same pretrained weights and differ only in batching and "
        "sampling, so their seeds vary less than scratch seeds.",
        *(
            [
                "* The students' positive is one of an image's *own* captions; captions true of the image "
                "never serve as negatives (pools exclude them, and the caption → image term masks the other "
                "images a caption is true of). Scoring uses truth relevance, so a student is not penalised "
                "for ranking a generic true caption high, but it is not trained to either."
            ]
            if exp.get("t2i_mask_true")
            else [
                "* The students' ground truth still follows an image's *own* captions: the positive is one "
                "of them, and the caption → image term counts other images of the batch as negatives even "
                "where the caption is true of them (near-duplicate siblings, generic captions). The pools "
                "(the teacher-mined negatives) do exclude true captions."
            ]
        ),
        "* A verdict is about this setting: `inconclusive` means the seeds cannot tell the arms apart at the "
        "declared margin, not that the method fails in general.",
        "",
    ]
    m = r["manifest"]
    cmd = "alignlab experiment dcd --out runs/experiment-dcd" + (" --quick" if r["quick"] else "")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in (m.get("cpu_s_by_stage") or {}).items())
    tcpu = r["teacher"].get("train_cpu_s") or {}
    if tcpu.get("total_s") is not None:
        stages += f"; the teacher's own training {tcpu['total_s']:.0f} s CPU when it was trained"
    lines += [
        "## Reproduce",
        "",
        f"`{cmd}` — {m.get('wall_s') or 0:.0f} s wall, {m.get('cpu_s') or 0:.0f} s CPU "
        f"({stages}) with {exp['threads']} torch thread(s) on "
        f"{m.get('environment', {}).get('processor') or 'this machine'}; finished runs in the out folder are "
        "read back, not retrained (the CPU times are those of the invocation that wrote this page).",
        "",
    ]
    return "\n".join(lines)
