"""``alignlab experiment pesf``: does a trained adapter on a frozen teacher make KD student-friendly?

For each data set (scikit-learn digits; ShapesWorld shape × colour) and each seed, a wide CNN teacher is
trained to be over-confident (long CE training, no regularisation), then a tiny CNN student is trained
with every method of :data:`alignlab.distill.pesf.trainer.METHODS` from the same initial weights and on
the same batches. Reported per method: test accuracy (mean ± sd over seeds) and its paired comparison
with vanilla KD (paired sign-flip randomization test over seeds, Welch's t-test, bootstrap CI of the
mean difference), the sharpness gap ``H(student) − H(soft labels)`` at ``T``, and the cost (trainable
parameters, teacher forward/backward passes per step, training seconds per epoch, training-step memory).

The verdicts answer the paper's claims on this small scale: does PESF beat vanilla KD; does the
per-example adapter beat one learned temperature; does PESF match online distillation (DML) at lower
cost; and what the two released-code defects do.

Quick mode (tests, demo): digits only, 2 seeds, a few epochs on 300 training digits — seconds, and
not meant to support any verdict.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.config import from_dict
from alignlab.core.errors import ConfigError
from alignlab.core.io import read_json, to_jsonable, write_json, write_text
from alignlab.core.manifest import build_manifest, cache_key
from alignlab.core.progress import info
from alignlab.core.stats import paired_bootstrap, paired_randomization_test, summarize, welch_t_test
from alignlab.core.threads import torch_threads
from alignlab.distill.pesf.trainer import (
    METHODS,
    DataConfig,
    KDConfig,
    TeacherConfig,
    preflight,
    run_kd,
    train_teacher,
)

DESCRIPTION = ("PESF-KD: frozen teacher + adapter vs KD, learned temperature, label smoothing and DML on digits "
               "and ShapesWorld (accuracy over seeds, sharpness gap, training cost)")


def _digits_kd() -> KDConfig:
    return KDConfig(data=DataConfig(name="digits"), teacher=TeacherConfig(width=32, epochs=30, lr=3e-3),
                    student_width=8, epochs=25, lr=1e-2)


def _shapes_kd() -> KDConfig:
    return KDConfig(data=DataConfig(name="shapes", n_train=1500, n_val=500, n_test=1000, image_size=24,
                                    max_distractors=1),
                    teacher=TeacherConfig(width=16, epochs=30, lr=1e-2), student_width=16, epochs=20, lr=1e-2)


@dataclass
class ExperimentConfig:
    datasets: list[str] = field(default_factory=lambda: ["digits", "shapes"])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    baseline: str = "kd"
    threads: int = 1  # torch threads (the machine is shared; one thread also makes timings comparable)
    keep_weights: bool = False  # keep every student's best/ and final/ weights (MBs per run)
    # Use only the first N of the seeds for a data set (ShapesWorld costs ~3× digits per seed).
    seed_limit: dict[str, int] = field(default_factory=lambda: {"shapes": 6})
    digits: KDConfig = field(default_factory=_digits_kd)
    shapes: KDConfig = field(default_factory=_shapes_kd)


FULL_SEEDS = list(range(8))
QUICK_SEEDS = [0, 1]


def quick_config() -> ExperimentConfig:
    kd = KDConfig(data=DataConfig(name="digits", max_train=300), teacher=TeacherConfig(width=16, epochs=8, lr=1e-2),
                  student_width=8, epochs=3, lr=1e-2)
    return ExperimentConfig(datasets=["digits"], digits=kd, seed_limit={})


def _check(cfg: ExperimentConfig) -> None:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}", fix=f"choose from {', '.join(METHODS)}")
    bad = [d for d in cfg.datasets if d not in ("digits", "shapes")]
    if bad:
        raise ConfigError(f"unknown data set(s) {', '.join(bad)}", fix="choose from digits, shapes")
    if cfg.baseline not in cfg.methods:
        raise ConfigError(f"baseline {cfg.baseline!r} is not among the methods run")


def _run_one(kd: KDConfig, data, run_dir: Path, teacher, keep_weights: bool) -> dict[str, Any]:
    """One student run, reusing a finished ``results.json`` of the same config (the experiment resumes)."""
    path = run_dir / "results.json"
    if path.exists():
        old = read_json(path)
        if old.get("manifest", {}).get("cache_key") == cache_key(asdict(kd)):  # same config and code
            return old
    run_kd(kd, data, run_dir, teacher, resume=True)
    if not keep_weights:
        for sub in ("ckpt", "best", "final"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    return read_json(path)


def run(out: Path, *, quick: bool = False, seeds: list[int] | None = None,
        overrides: dict | None = None) -> dict[str, Any]:
    started = time.time()
    out = Path(out)
    base = asdict(quick_config() if quick else ExperimentConfig())
    from alignlab.core.config import merge

    cfg = from_dict(ExperimentConfig, merge(base, overrides or {}) if overrides else base)
    _check(cfg)
    seeds = seeds or (QUICK_SEEDS if quick else FULL_SEEDS)
    with torch_threads(cfg.threads):
        per_data = {}
        for name in cfg.datasets:
            kd_base: KDConfig = getattr(cfg, name)
            limit = cfg.seed_limit.get(name)
            per_data[name] = _run_dataset(name, kd_base, cfg, seeds[:limit] if limit else seeds, out)
    results = {"experiment": "pesf", "quick": quick, "seeds": seeds, "config": to_jsonable(asdict(cfg)),
               "datasets": per_data, "verdicts": {d: _verdicts(v, cfg) for d, v in per_data.items()},
               "manifest": build_manifest(config=asdict(cfg), started=started)}
    write_json(out / "results.json", results)
    plots = {d: _plot(v, out / "plots" / f"pesf_{d}.png", d) for d, v in per_data.items()}
    write_text(out / "report.md", render_report(results, plots, out))
    return results


def _run_dataset(name: str, kd_base: KDConfig, cfg: ExperimentConfig, seeds: list[int], out: Path) -> dict[str, Any]:
    data = kd_base.data.load()
    info(f"pesf experiment: {name} {data.sizes()}, {data.n_classes} classes, seeds {seeds}")
    for method in cfg.methods:  # bad settings fail now, not after an hour of training
        preflight(KDConfig(**{**asdict(kd_base), "method": method, "data": kd_base.data,
                              "teacher": kd_base.teacher}), data)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in cfg.methods}
    teachers = []
    for seed in seeds:
        seed_cfg = KDConfig(**{**asdict(kd_base), "seed": seed, "data": kd_base.data, "teacher": kd_base.teacher})
        needs_teacher = any(METHODS[m].teacher != "none" and METHODS[m].teacher_init == "pretrained"
                            for m in cfg.methods)
        teacher = None
        if needs_teacher:
            teacher, summary = train_teacher(seed_cfg, data, out / "teachers" / f"{name}-seed{seed}")
            teachers.append(summary)
        for method in cfg.methods:
            kd = KDConfig(**{**asdict(seed_cfg), "method": method, "data": seed_cfg.data, "teacher": seed_cfg.teacher})
            # Each method gets its own copy of the teacher: a method that trains it must not leak into the next.
            t = _copy(teacher) if METHODS[method].teacher == "trained" else teacher
            res = _run_one(kd, data, out / "runs" / name / method / f"seed{seed}", t, cfg.keep_weights)
            runs[method].append(res)
    return _summarize_dataset(name, data, runs, teachers, cfg, seeds, kd_base)


def _copy(module):
    import copy

    return copy.deepcopy(module) if module is not None else None


def _summarize_dataset(name, data, runs, teachers, cfg, seeds, kd_base: KDConfig) -> dict[str, Any]:
    base_acc = [r["metrics"]["test_student_acc"] for r in runs[cfg.baseline]]
    methods = {}
    for m, rs in runs.items():
        acc = [r["metrics"]["test_student_acc"] for r in rs]
        gap = [r["metrics"].get("test_gap", float("nan")) for r in rs]
        entry: dict[str, Any] = {
            "description": METHODS[m].description,
            "acc": acc, "acc_summary": summarize(acc),
            "gap": gap, "gap_mean": _nanmean(gap),
            "student_entropy_mean": _nanmean([r["metrics"]["test_student_entropy"] for r in rs]),
            "target_entropy_mean": _nanmean([r["metrics"].get("test_adapted_entropy", r["metrics"].get(
                "test_teacher_entropy", float("nan"))) if METHODS[m].student_target == "adapted"
                else r["metrics"].get("test_teacher_entropy", float("nan")) for r in rs]),
            "student_ece_mean": _nanmean([r["metrics"]["test_student_ece"] for r in rs]),
            "teacher_acc_mean": _nanmean([r["metrics"].get("test_teacher_acc") for r in rs]),
            "adapted_acc_mean": _nanmean([r["metrics"].get("test_adapted_acc") for r in rs]),
            "teacher_unchanged": [r.get("teacher_unchanged") for r in rs],
            "cost": _cost_summary(rs),
        }
        if m == "kd_learned_t":
            entry["tau"] = [r["metrics"].get("test_tau") for r in rs]
        if m != cfg.baseline:
            entry["vs_baseline"] = _compare(base_acc, acc)
        methods[m] = entry
    # Holm's step-down adjustment over the family "every method vs the baseline" on this data set: with
    # eight comparisons, one raw p < 0.05 is expected by chance more often than not.
    family = [m for m in methods if "vs_baseline" in methods[m]]
    for m, p_adj in zip(family, holm([methods[m]["vs_baseline"]["p_randomization"] for m in family])):
        methods[m]["vs_baseline"]["p_holm"] = p_adj
    ce_time = methods.get("ce", {}).get("cost", {}).get("train_s_per_epoch")
    for entry in methods.values():
        t = entry["cost"]["train_s_per_epoch"]
        entry["cost"]["time_vs_ce"] = (t / ce_time) if (t and ce_time) else None
    teacher_info = None
    if teachers:
        teacher_info = {"params": teachers[0]["params"], "epochs": teachers[0]["epochs"],
                        "test_acc": summarize([t["test"]["acc"] for t in teachers]),
                        "test_entropy_T": _nanmean([t["test"]["entropy"] for t in teachers]),
                        "test_maxp_T": _nanmean([t["test"]["maxp"] for t in teachers]),
                        "test_maxp_T1": _nanmean([t["test_T1"]["maxp"] for t in teachers]),
                        "test_ece": _nanmean([t["test"]["ece"] for t in teachers]),
                        "train_s_per_epoch": float(np.median([t["train_s_per_epoch"] for t in teachers
                                                              if t.get("train_s_per_epoch")] or [np.nan]))}
    return {"data": {"name": name, "sizes": data.sizes(), "n_classes": data.n_classes,
                     "in_channels": data.in_channels, "image_size": data.image_size},
            "temperature": kd_base.temperature, "alpha": kd_base.alpha, "epochs": kd_base.epochs,
            "teacher": teacher_info, "methods": methods, "seeds": seeds}


def _nanmean(xs) -> float:
    arr = np.asarray([np.nan if x is None else x for x in xs], dtype=float)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given).

    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _compare(a: list[float], b: list[float]) -> dict[str, float]:
    """``b − a`` paired by seed: mean difference, bootstrap CI, randomization and Welch p-values."""
    d = paired_bootstrap(a, b, n_resamples=5000, seed=0)
    n_nonzero = int(np.sum(np.asarray(b) != np.asarray(a)))
    return {"delta": d["delta"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
            "p_randomization": paired_randomization_test(a, b), "p_welch": welch_t_test(a, b)["p"],
            "min_p_attainable": 2.0 / 2 ** n_nonzero if n_nonzero else 1.0,
            "identical": bool(np.array_equal(np.asarray(a), np.asarray(b)))}


def _cost_summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    c0 = rs[0]["cost"]
    times = [r["cost"]["train_s_per_epoch"] for r in rs if r["cost"].get("train_s_per_epoch") is not None]
    return {"trainable_params": c0["trainable_params"], "trainable_by_module": c0["trainable_by_module"],
            "teacher_fwd_per_step": c0.get("teacher_fwd_per_step"),
            "teacher_bwd_per_step": c0.get("teacher_bwd_per_step"),
            "train_s_per_epoch": float(np.median(times)) if times else None,
            "memory_total_mib": c0["memory"]["total_mib"], "memory_activations_mib": c0["memory"]["activations_mib"]}


# --- verdicts ---------------------------------------------------------------------------------------

ALPHA = 0.05


def _sig_words(c: dict[str, float], better: str, worse: str) -> tuple[str, str]:
    """(short verdict, detail) from a comparison; significance = paired randomization p < 0.05."""
    detail = (f"Δ = {100 * c['delta']:+.2f} points (95% CI {100 * c['ci_low']:+.2f} to {100 * c['ci_high']:+.2f}), "
              f"paired randomization p = {c['p_randomization']:.3f}, Welch p = {c['p_welch']:.3f}")
    if c.get("identical"):
        return "identical", "the same accuracy in every seed (Δ = 0)"
    if c["p_randomization"] < ALPHA:
        return (better if c["delta"] > 0 else worse), detail
    return "no significant difference", detail


def _verdicts(d: dict[str, Any], cfg: ExperimentConfig) -> dict[str, dict[str, str]]:
    ms = d["methods"]
    out: dict[str, dict[str, str]] = {}

    def acc_of(m):
        return ms[m]["acc"]

    if "pesf" in ms and cfg.baseline in ms:
        short, detail = _sig_words(_compare(acc_of(cfg.baseline), acc_of("pesf")), "PESF better", "PESF worse")
        out["pesf_vs_kd"] = {"question": "Does PESF-KD beat vanilla KD?", "answer": short, "detail": detail}
    if "pesf" in ms and "kd_learned_t" in ms:
        c = _compare(acc_of("kd_learned_t"), acc_of("pesf"))
        short, detail = _sig_words(c, "adapter better", "adapter worse")
        gaps = (f"; sharpness gap {ms['pesf']['gap_mean']:+.3f} (adapter) vs {ms['kd_learned_t']['gap_mean']:+.3f} "
                f"(temperature) nats")
        out["adapter_vs_temperature"] = {"question": "Does the adapter beat one learned temperature?",
                                         "answer": short, "detail": detail + gaps}
    if "pesf" in ms and "dml" in ms:
        c = _compare(acc_of("dml"), acc_of("pesf"))
        short, detail = _sig_words(c, "PESF better than DML", "PESF worse than DML")
        cp, cd = ms["pesf"]["cost"], ms["dml"]["cost"]
        cost = (f"; cost PESF vs DML: trainable parameters {cp['trainable_params']:,} vs {cd['trainable_params']:,}, "
                f"teacher backward passes per step {cp['teacher_bwd_per_step']:g} vs {cd['teacher_bwd_per_step']:g}, "
                f"training-step memory {cp['memory_total_mib']:.2f} vs {cd['memory_total_mib']:.2f} MiB")
        if cp.get("train_s_per_epoch") and cd.get("train_s_per_epoch"):
            cost += f", seconds per epoch {cp['train_s_per_epoch']:.2f} vs {cd['train_s_per_epoch']:.2f}"
        lower = cp["trainable_params"] < cd["trainable_params"] and cp["memory_total_mib"] < cd["memory_total_mib"]
        answer = f"{short}; {'lower' if lower else 'not lower'} cost"
        out["pesf_vs_dml"] = {"question": "Does PESF match DML (online distillation) at lower cost?",
                              "answer": answer, "detail": detail + cost}
    if "pesf_adapter_unused" in ms and cfg.baseline in ms:
        short, detail = _sig_words(_compare(acc_of(cfg.baseline), acc_of("pesf_adapter_unused")),
                                   "better than KD", "worse than KD")
        out["released_cv_code"] = {"question": "Released CV code (adapter trained, student never sees it) vs KD",
                                   "answer": short, "detail": detail}
    if "pesf_teacher_unfrozen" in ms and "pesf" in ms:
        short, detail = _sig_words(_compare(acc_of("pesf"), acc_of("pesf_teacher_unfrozen")),
                                   "unfrozen better", "unfrozen worse")
        cu, cp = ms["pesf_teacher_unfrozen"]["cost"], ms["pesf"]["cost"]
        detail += (f"; trainable parameters {cu['trainable_params']:,} vs {cp['trainable_params']:,}, memory "
                   f"{cu['memory_total_mib']:.2f} vs {cp['memory_total_mib']:.2f} MiB")
        out["released_nlp_typo"] = {"question": "Released NLP code's `required_grad` typo (whole teacher trains) "
                                                "vs PESF", "answer": short, "detail": detail}
    if "pesf_adapter_ce" in ms and "pesf" in ms:
        short, detail = _sig_words(_compare(acc_of("pesf_adapter_ce"), acc_of("pesf")), "KL term helps",
                                   "KL term hurts")
        detail += (f"; sharpness gap {ms['pesf']['gap_mean']:+.3f} (CE+KL) vs {ms['pesf_adapter_ce']['gap_mean']:+.3f} "
                   "(CE only) nats")
        out["adapter_kl_term"] = {"question": "Does the adapter's KL-to-student term matter (vs CE only)?",
                                  "answer": short, "detail": detail}
    return out


# --- plots and report --------------------------------------------------------------------------------


def _plot(d: dict[str, Any], path: Path, name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignlab.core.io import atomic_path

    ms = d["methods"]
    names = list(ms)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    means = [100 * ms[m]["acc_summary"]["mean"] for m in names]
    sds = [100 * ms[m]["acc_summary"]["sd"] for m in names]
    y = np.arange(len(names))
    axes[0].barh(y, means, xerr=sds, color="tab:blue", alpha=0.7)
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].set_xlim(max(0, min(means) - 3 * max(sds + [1])), min(100, max(means) + 3 * max(sds + [1])))
    axes[0].set_xlabel("student test accuracy, % (mean ± sd over seeds)")
    for m in names:
        if np.isfinite(ms[m]["gap_mean"]):
            axes[1].scatter(ms[m]["gap"], [100 * a for a in ms[m]["acc"]], label=m, s=18)
    axes[1].axvline(0, color="gray", lw=0.8)
    axes[1].set_xlabel("sharpness gap H(student) − H(soft labels) at T [nats]")
    axes[1].set_ylabel("test accuracy, %")
    axes[1].legend(fontsize=7)
    times = [ms[m]["cost"]["train_s_per_epoch"] or 0.0 for m in names]
    axes[2].barh(y, times, color="tab:gray")
    axes[2].set_yticks(y, names, fontsize=8)
    axes[2].set_xlabel("training seconds per epoch (median)")
    fig.suptitle(f"PESF-KD experiment: {name}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def _fmt(x: Any, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return format(x, spec)


def render_report(results: dict[str, Any], plots: dict[str, Path], out: Path) -> str:
    q = results["quick"]
    lines = ["# PESF-KD experiment", "",
             f"Settings: {'quick (not meant to support verdicts)' if q else 'full'}; seeds {results['seeds']}. "
             "Accuracy is the student's on the test split, at the epoch with the best dev accuracy.", ""]
    for name, d in results["datasets"].items():
        ms = d["methods"]
        t = d["teacher"]
        lines += [f"## {name}", "",
                  f"Data: {d['data']['sizes']} examples, {d['data']['n_classes']} classes, "
                  f"{d['data']['in_channels']}×{d['data']['image_size']}×{d['data']['image_size']}; "
                  f"T = {d['temperature']:g}, α = {d['alpha']:g}, {d['epochs']} student epochs; seeds {d['seeds']}.", ""]
        if t:
            lines += [f"Teacher (wide CNN, {t['params']:,} parameters, {t['epochs']} epochs of CE, no regularisation): "
                      f"test accuracy {100 * t['test_acc']['mean']:.2f} ± {100 * t['test_acc']['sd']:.2f} %, "
                      f"mean max probability {t['test_maxp_T1']:.3f} at T = 1 and {t['test_maxp_T']:.3f} at "
                      f"T = {d['temperature']:g}, ECE {t['test_ece']:.3f}; {_fmt(t['train_s_per_epoch'])} s per "
                      "epoch to pretrain (a one-time cost that every offline method shares).", ""]
        lines += ["| method | acc % (mean ± sd) | Δ vs KD (95% CI) | p (rand.) | p (Holm) | p (Welch) | gap [nats] | "
                  "student ECE | trainable params | teacher fwd/bwd per step | s/epoch (× CE) | step memory MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m, e in ms.items():
            s = e["acc_summary"]
            c = e.get("vs_baseline")
            vs = (f"{100 * c['delta']:+.2f} ({100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f})" if c else "—")
            pr = _fmt(c["p_randomization"], ".3f") if c else "—"
            pw = _fmt(c["p_welch"], ".3f") if c else "—"
            ph = _fmt(c.get("p_holm"), ".3f") if c else "—"
            cost = e["cost"]
            fb = (f"{_fmt(cost['teacher_fwd_per_step'], 'g')}/{_fmt(cost['teacher_bwd_per_step'], 'g')}"
                  if cost["teacher_fwd_per_step"] is not None else "0/0")
            tt = f"{_fmt(cost['train_s_per_epoch'])} (×{_fmt(cost['time_vs_ce'])})"
            lines.append(f"| {m} | {100 * s['mean']:.2f} ± {100 * s['sd']:.2f} | {vs} | {pr} | {ph} | {pw} | "
                         f"{_fmt(e['gap_mean'], '+.3f')} | {_fmt(e['student_ece_mean'], '.3f')} | "
                         f"{cost['trainable_params']:,} | {fb} | {tt} | {_fmt(cost['memory_total_mib'], '.3f')} |")
        n = len(d["seeds"])
        lines += ["", f"With {n} seeds the smallest two-sided p-value the exact paired randomization test can give is "
                      f"{2 / 2 ** n:.4f}. *p (Holm)* adjusts the randomization p-values for the {len(ms) - 1} "
                      "comparisons with KD on this data set; the verdicts below use the unadjusted test of their "
                      "own question.", ""]
        trained = [m for m in ms if METHODS[m].teacher == "trained"]
        if trained:
            lines += ["Test accuracy of the trained teacher/peer at the student's best epoch: " + ", ".join(
                f"{m} {100 * ms[m]['teacher_acc_mean']:.2f} %" for m in trained) + "; adapted teacher (PESF) "
                + (f"{100 * ms['pesf']['adapted_acc_mean']:.2f} %." if "pesf" in ms else "–."), ""]
        if "kd_learned_t" in ms and ms["kd_learned_t"].get("tau"):
            taus = [x for x in ms["kd_learned_t"]["tau"] if x is not None]
            if taus:
                lines += [f"Learned temperature τ (multiplies T): {', '.join(f'{x:.2f}' for x in taus)}.", ""]
        lines += ["Verdicts:", ""]
        for v in results["verdicts"][name].values():
            lines.append(f"- **{v['question']}** {v['answer']} — {v['detail']}.")
        if name in plots:
            lines += ["", f"![{name}]({plots[name].relative_to(out).as_posix()})", ""]
    lines += ["Columns: *gap* is H(student) − H(soft labels the student learns from) at T on the test split, "
              "averaged over seeds (positive: the soft labels are sharper than the student); *teacher fwd/bwd "
              "per step* are counted by hooks on the teacher during training steps; *s/epoch* is the median "
              "training time per epoch (evaluation excluded) on a shared CPU, so only large ratios mean much; "
              "*step memory* is parameters + gradients + AdamW state + activations saved for backward in one "
              "training step (see `alignlab.distill.pesf.cost`).", ""]
    return "\n".join(lines) + "\n"
