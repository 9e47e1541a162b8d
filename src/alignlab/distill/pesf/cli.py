"""``alignlab distill pesf train|methods``: PESF-KD and the classic KD baselines on digits or ShapesWorld."""

from __future__ import annotations

import argparse
from pathlib import Path

from alignlab.core.cliargs import add_out, add_overrides, add_seed


def register_verbs(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "pesf",
        help="PESF-KD and classic KD baselines for classification (digits, ShapesWorld)",
        description="Parameter-efficient, student-friendly KD: a frozen teacher with a small "
        "trained adapter that smooths its soft labels for a tiny student; plus CE, "
        "KD, learned-temperature KD, label smoothing, DML and the released-code "
        "ablations.",
    )
    sub = p.add_subparsers(dest="pesf_verb", required=True, metavar="<verb>")

    t = sub.add_parser(
        "train",
        help="train a teacher (once) and a student with one method",
        description="Train the over-confident wide-CNN teacher (reused when "
        "OUT/teacher-<data>-seed<N> holds a finished run), then a tiny-CNN student "
        "with --method. Writes results.json, log.jsonl, config.yaml and "
        "plots/diagnostics.png under OUT/<data>-<method>-seed<N> and prints test "
        "accuracy, sharpness gap and cost. Bad settings fail before any training.",
    )
    t.add_argument(
        "--method", default="pesf", help="KD method (see `alignlab distill pesf methods`; default pesf)"
    )
    t.add_argument("--data", choices=["digits", "shapes"], default="digits", help="data set (default digits)")
    add_out(t, default=Path("runs/pesf"), help="output folder (default runs/pesf)")
    add_seed(t, default=0, help="model and batch-order seed (default 0)")
    t.add_argument("--epochs", type=int, default=None, help="student epochs (default 25)")
    t.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (default 30)")
    t.add_argument("--temperature", type=float, default=None, help="KD temperature T (default 4)")
    t.add_argument(
        "--alpha", type=float, default=None, help="weight of the KD term; CE gets 1 - alpha (default 0.5)"
    )
    t.add_argument("--config", type=Path, default=None, help="YAML file with KDConfig fields")
    add_overrides(
        t, help="override a KDConfig field, e.g. adapter_bottleneck=32 or teacher.width=16 (repeatable)"
    )
    t.add_argument("--no-resume", action="store_true", help="train the student again even if OUT holds a run")
    t.set_defaults(run=run_train)

    m = sub.add_parser(
        "methods",
        help="list the KD methods and what each trains",
        description="List every method with what it trains (teacher, adapter/temperature, student).",
    )
    m.set_defaults(run=run_methods)


def _config(args: argparse.Namespace):
    from alignlab.core.config import command_config
    from alignlab.distill.pesf.trainer import KDConfig

    flags = {
        "method": (args.method, f"--method {args.method}"),
        "seed": (args.seed, "--seed"),
        "data.name": (args.data, f"--data {args.data}"),
        "epochs": (args.epochs, "--epochs"),
        "temperature": (args.temperature, "--temperature"),
        "alpha": (args.alpha, "--alpha"),
        "teacher.epochs": (args.teacher_epochs, "--teacher-epochs"),
    }
    return command_config(KDConfig, path=args.config, overrides=args.overrides, flags=flags)


def run_train(args: argparse.Namespace) -> int:
    from alignlab.distill.pesf.trainer import METHODS, preflight, run_kd, train_teacher

    cfg = _config(args)
    from alignlab.core.config import check_run_dir

    if not args.out.is_dir():  # OUT holds the teacher and student runs; check that it can be made
        check_run_dir(args.out)
    spec = METHODS[cfg.method]
    from alignlab.core.seed import set_seed

    # The trainers seed torch per model; Python's and NumPy's global generators (saved in checkpoints,
    # drawn by libraries) need the run's seed too, or a fresh process starts from a random state.
    set_seed(cfg.seed)
    data = cfg.data.load()
    preflight(cfg, data)  # bad input fails here, before the teacher is trained
    teacher = None
    if spec.teacher != "none" and spec.teacher_init == "pretrained":
        teacher, summary = train_teacher(cfg, data, args.out / f"teacher-{cfg.data.name}-seed{cfg.seed}")
        print(
            f"teacher: test acc {100 * summary['test']['acc']:.2f} %, "
            f"mean max prob {summary['test_T1']['maxp']:.3f} (T=1), entropy {summary['test']['entropy']:.3f} "
            f"nats at T={cfg.temperature:g}"
        )
    res = run_kd(
        cfg,
        data,
        args.out / f"{cfg.data.name}-{cfg.method}-seed{cfg.seed}",
        teacher,
        resume=not args.no_resume,
    )
    m, c = res.metrics, res.cost
    print(
        "trainable parameters: "
        + ", ".join(f"{k} {v['trainable']:,} of {v['total']:,}" for k, v in res.trainable.items())
    )
    line = f"{cfg.method}: student test acc {100 * m['test_student_acc']:.2f} %"
    if "test_gap" in m:
        line += f", sharpness gap {m['test_gap']:+.3f} nats"
    if "test_tau" in m:
        line += f", learned tau {m['test_tau']:.3f}"
    print(line)
    fwd = c["teacher_fwd_per_step"]
    print(
        f"cost: teacher forward/backward per step {fwd if fwd is not None else 0:g}/"
        f"{c['teacher_bwd_per_step'] if c['teacher_bwd_per_step'] is not None else 0:g}, "
        f"{c['train_s_per_epoch']:.2f} s per epoch, training-step memory {c['memory']['total_mib']:.3f} MiB"
    )
    if res.teacher_unchanged is not None:
        print(f"teacher weights bit-identical after training: {res.teacher_unchanged}")
    print(res.run_dir / "results.json")
    return 0


def run_methods(args: argparse.Namespace) -> int:
    from alignlab.distill.pesf.trainer import METHODS

    for name, s in METHODS.items():
        trains = ["student"]
        if s.head != "none":
            trains.insert(0, s.head)
        if s.teacher == "trained":
            trains.insert(0, "teacher" + (" (from scratch)" if s.teacher_init == "scratch" else ""))
        print(f"{name:24s} trains {', '.join(trains):38s} {s.description}")
    return 0
