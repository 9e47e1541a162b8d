"""Demo stage: PESF-KD on scikit-learn's digits — teacher, adapter, student, diagnostics and cost."""

from __future__ import annotations

import shutil

from alignlab.core.threads import torch_threads
from alignlab.distill.pesf.trainer import METHODS, DataConfig, KDConfig, TeacherConfig, run_kd, train_teacher

STAGE_TITLE = "PESF-KD: a frozen teacher's adapter makes soft labels student-friendly (digits)"

DEMO_METHODS = ("ce", "kd", "kd_learned_t", "pesf", "pesf_adapter_unused")


def _config(quick: bool, seed: int) -> KDConfig:
    if quick:
        return KDConfig(
            seed=seed,
            data=DataConfig(name="digits", max_train=600),
            teacher=TeacherConfig(width=16, epochs=10, lr=1e-2),
            student_width=8,
            epochs=10,
            lr=1e-2,
        )
    return KDConfig(
        seed=seed,
        data=DataConfig(name="digits"),
        teacher=TeacherConfig(width=32, epochs=20, lr=3e-3),
        student_width=8,
        epochs=15,
        lr=1e-2,
    )


def demo_stage(ctx) -> list[str]:
    out = ctx.stage_dir("pesf")
    base = _config(ctx.quick, ctx.seed)
    data = base.data.load()
    with torch_threads(1):
        teacher, summary = train_teacher(base, data, out / "teacher")
        rows = []
        for method in DEMO_METHODS:
            cfg = KDConfig(**{**base.__dict__, "method": method})
            res = run_kd(cfg, data, out / method, teacher, resume=False, plot=method == "pesf")
            for sub in ("ckpt", "final"):  # keep best/ (the student) and the plots; drop the rest
                shutil.rmtree(res.run_dir / sub, ignore_errors=True)
            rows.append(res)
    t = summary["test"]
    quick_note = (
        " (quick settings: too short for conclusions; `alignlab experiment pesf` tests the claims)"
        if ctx.quick
        else ""
    )
    lines = [
        f"Digits (scikit-learn, {data.sizes()} examples), seed {ctx.seed}. Teacher: wide CNN with "
        f"{summary['params']:,} parameters, test accuracy {100 * t['acc']:.1f} %, mean max probability "
        f"{summary['test_T1']['maxp']:.3f} at T = 1 and {t['maxp']:.3f} at T = {base.temperature:g}. "
        f"Student: tiny CNN. {base.epochs} student epochs{quick_note}.",
        "",
        "| method | student test acc % | sharpness gap [nats] "
        "| trainable params (teacher / head / student) | teacher fwd/bwd per step | step memory MiB | "
        "teacher bit-identical |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        by = r.cost["trainable_by_module"]
        tr = " / ".join(f"{by[k]:,}" if k in by else "–" for k in ("teacher", "head", "student"))
        fwd, bwd = r.cost["teacher_fwd_per_step"], r.cost["teacher_bwd_per_step"]
        fb = f"{fwd:g}/{bwd:g}" if fwd is not None else "0/0"
        gap = f"{r.metrics['test_gap']:+.3f}" if "test_gap" in r.metrics else "–"
        same = {True: "yes", False: "no", None: "–"}[r.teacher_unchanged]
        lines.append(
            f"| {r.method} | {100 * r.metrics['test_student_acc']:.1f} | {gap} | {tr} | {fb} | "
            f"{r.cost['memory']['total_mib']:.3f} | {same} |"
        )
    kd = next(r for r in rows if r.method == "kd")
    unused = next(r for r in rows if r.method == "pesf_adapter_unused")
    same = kd.metrics["test_student_acc"] == unused.metrics["test_student_acc"]
    lines += [
        "",
        f"Released-code check: with the adapter trained but unused (the released CV code), the student "
        f"{'matches vanilla KD exactly' if same else 'differs from vanilla KD'} "
        f"({100 * unused.metrics['test_student_acc']:.1f} % vs "
        f"{100 * kd.metrics['test_student_acc']:.1f} %).",
        "",
        "Sharpness (entropy and max probability of softmax(z/T)), ECE and accuracy per epoch for "
        "teacher, adapted teacher and student (PESF):",
        "",
        "![PESF diagnostics](pesf/pesf/plots/diagnostics.png)",
        "",
        f"Methods: {', '.join(f'`{m}` ({METHODS[m].description})' for m in DEMO_METHODS)}.",
    ]
    return lines
