"""``alignlab distill dcd teacher|train|mine`` and ``alignlab distill bench``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from alignlab.core.cliargs import add_device, add_out, add_overrides, add_overwrite, add_seed
from alignlab.core.errors import ConfigError
from alignlab.core.io import write_json, write_text


def register_verbs(verbs: argparse._SubParsersAction) -> None:
    from alignlab.distill.dcd.train import ARMS

    d = verbs.add_parser(
        "dcd",
        help="dynamic contrastive distillation for image–text retrieval",
        description="DCD (Rao et al., TMM 2023): a cross-encoder teacher mines hard negatives "
        "and its scores are distilled into a fast student with per-sample "
        "difficulty weights.",
    )
    dv = d.add_subparsers(dest="dcd_verb", required=True, metavar="<verb>")

    t = dv.add_parser(
        "teacher",
        help="train a tiny cross-encoder teacher on near-duplicate ShapesWorld",
        description="Train the tiny cross encoder that DCD students learn from (batches of whole "
        "near-duplicate groups, CE over the batch's score grid); resumable.",
    )
    _common(t, default_out="runs/dcd-teacher")
    t.set_defaults(run=run_teacher)

    tr = dv.add_parser(
        "train",
        help="distil a teacher into a dual or shallow cross-encoder student",
        description="Train a student with teacher-mined hard negatives and the DCD loss (or a "
        "baseline, see --arm); evaluates the best checkpoint on the test split and "
        "writes results.json + per_query.json (readable by `alignlab repro compare`). "
        "Re-running the same command resumes an interrupted run.",
    )
    tr.add_argument(
        "--teacher",
        default=None,
        help="the teacher: ckpt:<dir> (e.g. from `distill dcd teacher`) or any model spec",
    )
    tr.add_argument(
        "--arm",
        choices=sorted(ARMS),
        default="dcd",
        help="named setting: "
        + "; ".join(f"{k}: {', '.join(f'{a}={b}' for a, b in v.items())}" for k, v in ARMS.items())
        + " (default: dcd)",
    )
    tr.add_argument(
        "--student",
        choices=["dual", "shallow-cross"],
        default=None,
        help="student kind (default: the config's, dual)",
    )
    tr.add_argument(
        "--student-init",
        default=None,
        metavar="SPEC",
        help="dual student to start from: ckpt:<tiny dual dir>, or a real dual encoder hf:<folder or hub "
        "id> (CLIP, SigLIP, BLIP with #itc), trained whole and saved to <out>/student "
        "(same as --set student_init=SPEC)",
    )
    tr.add_argument(
        "--mined",
        type=Path,
        default=None,
        metavar="DIR",
        help="teacher scores from `distill dcd mine` (same data, seed, batching and pool size): "
        "training reads them instead of running the teacher on those batches",
    )
    _common(tr, default_out="runs/dcd-student")
    tr.set_defaults(run=run_train)

    mi = dv.add_parser(
        "mine",
        help="score every training batch's candidate pools with the teacher, sharded",
        description="Run the teacher over the candidate pools of every training batch ahead of "
        "training (the pools depend only on seed, epoch and batch), in shards that "
        "resume, on this process or on Ray (--engine). `distill dcd train --mined "
        "DIR` then reads the scores. Takes the same config as `distill dcd train`.",
    )
    mi.add_argument(
        "--teacher", default=None, help="the teacher: ckpt:<dir> (e.g. from `distill dcd teacher`)"
    )
    mi.add_argument("--config", type=Path, default=None, help="YAML run config of the training to mine for")
    add_out(
        mi,
        default=Path("runs/dcd-mined"),
        help="output folder: Parquet shards + manifest.json (default: runs/dcd-mined)",
    )
    add_seed(mi, default=None, help="override the config's seed")
    add_overrides(mi)
    add_device(mi)
    mi.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths in data files that leave the data root (absolute or with '..')",
    )
    from alignlab.scale.cli import add_engine_args

    add_engine_args(mi, rows_default=8)  # a row is one training batch
    mi.set_defaults(run=run_mine)

    b = verbs.add_parser(
        "bench",
        help="full-ranking time of a cross-encoder teacher vs its students",
        description="Rank N images × C captions with the teacher and each student in one "
        "process: seconds, pairs fused, speed-up, R@K, RSUM and the share of the "
        "teacher's RSUM kept (goal: a dual student >= 500× faster keeping >= 90%).",
    )
    b.add_argument("--teacher", required=True, help="teacher spec, e.g. ckpt:runs/dcd-teacher")
    b.add_argument(
        "--student",
        dest="students",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="a student to time, e.g. dual=ckpt:runs/dcd-student (repeatable)",
    )
    b.add_argument("--images", type=int, default=1000, help="images in the retrieval set (default: 1000)")
    b.add_argument("--captions-per-image", type=int, default=5, help="captions per image (default: 5)")
    b.add_argument(
        "--data",
        choices=["neardup", "shapes"],
        default="neardup",
        help="near-duplicate ShapesWorld (default) or plain ShapesWorld test images",
    )
    b.add_argument(
        "--teacher-rows",
        type=int,
        default=None,
        help="time cross encoders on the first N image rows and extrapolate (default: all rows)",
    )
    b.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    add_seed(b, default=0, help="data seed (default: 0)")
    add_out(b, default=None, help="write the results JSON here (and a .md beside it)")
    b.set_defaults(run=run_bench_cli)


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--config", type=Path, default=None, help="YAML run config (default: built-in defaults)")
    add_out(p, default=Path(default_out), help=f"run folder (default: {default_out})")
    add_seed(p, default=None, help="override the config's seed")
    add_overrides(p)
    p.add_argument(
        "--no-resume", action="store_true", help="start again even if the run folder has a checkpoint"
    )
    add_overwrite(p)
    add_device(p)
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths in data files that leave the data root (absolute or with '..')",
    )


def _flags(args: argparse.Namespace) -> dict[str, tuple[Any, str]]:
    """The settings this command's flags give (dotted key -> (value or None, option))."""
    flags: dict[str, tuple[Any, str]] = {"seed": (getattr(args, "seed", None), "--seed")}
    arm = getattr(args, "arm", None)
    if arm is not None:
        from alignlab.distill.dcd.train import ARMS

        flags.update({key: (value, f"--arm {arm}") for key, value in ARMS[arm].items()})
    for key in ("teacher", "student", "student_init"):
        value = getattr(args, key, None)
        flags[key] = (value, f"--{key.replace('_', '-')} {value}")
    return flags


def _teacher_config(args: argparse.Namespace) -> Any:
    from alignlab.core.config import command_config
    from alignlab.distill.dcd.train import load_teacher_config

    return command_config(load_teacher_config, path=args.config, overrides=args.overrides, flags=_flags(args))


def _student_config(args: argparse.Namespace) -> Any:
    """`dcd train` and `dcd mine`: the YAML file, then --arm and the other flags, then --set."""
    from alignlab.core.config import command_config
    from alignlab.distill.dcd.train import load_run_config

    return command_config(load_run_config, path=args.config, overrides=args.overrides, flags=_flags(args))


def _check_out(args: argparse.Namespace, cfg: Any) -> None:
    """The run folder is checked before any work; a finished run is replaced only on --overwrite."""
    import os

    from alignlab.core.config import check_run_dir, clear_run_dir
    from alignlab.distill.dcd.train import _finished

    if not args.overwrite and not args.no_resume and _finished(args.out, cfg) is not None:
        return  # the same finished run: it is read back, nothing in it changes
    check_run_dir(args.out, overwrite=args.overwrite, config=cfg, resume=not args.no_resume)
    if args.overwrite and os.environ.get("RANK", "0") == "0":
        clear_run_dir(args.out)


def _device(name: str) -> str:
    from alignlab.models.base import resolve_device

    return str(resolve_device(name))


def _summary(result: dict[str, Any], out: Path) -> None:
    m = result["metrics"]
    print(
        f"best epoch {(result.get('best') or {}).get('epoch')}; test "
        + ", ".join(f"{k}={m[k]:.2f}" for k in m if "R@" in k or k == "rsum")
    )
    print(f"results: {out / 'results.json'}")


def run_teacher(args: argparse.Namespace) -> int:
    from alignlab.distill.dcd.train import train_teacher

    cfg = _teacher_config(args)
    _check_out(args, cfg)
    result = train_teacher(cfg, args.out, resume=not args.no_resume, device=_device(args.device))
    _summary(result, args.out)
    print(f"teacher: ckpt:{args.out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from alignlab.distill.dcd.train import run_dcd
    from alignlab.train import distributed as ddp_

    cfg = _student_config(args)
    if cfg.needs_teacher and not cfg.teacher:
        raise ConfigError(
            f"arm {args.arm} needs a teacher",
            where="--teacher",
            fix="pass --teacher ckpt:<dir> (train one with `alignlab distill dcd teacher`)",
        )
    if cfg.needs_teacher and not args.mined and not cfg.teacher.startswith(("hf:", "open_clip:")):
        from alignlab.distill.dcd.students import load_teacher

        load_teacher(cfg.teacher)  # a tiny checkpoint loads in a moment: check it before any data is made
    device = _device(args.device)
    _check_out(args, cfg)
    # torchrun sets WORLD_SIZE > 1: start the process group; train.batch_size is then per process.
    with ddp_.group_from_launcher(device):
        mined = _mined_inputs(args.mined, cfg, str(ddp_.device_for(device))) if args.mined else {}
        result = run_dcd(
            cfg, args.out, resume=not args.no_resume, device=str(ddp_.device_for(device)), **mined
        )
        main = ddp_.is_main()
    if not main:  # rank 0 prints the summary
        return 0
    _summary(result, args.out)
    if result.get("student_model"):
        print(f"student: {result['student_model']}")
    return 0


def _mined_inputs(mined: Path, cfg: Any, device: str) -> dict[str, Any]:
    """teacher, data, teacher_scores and the memo of mined scores for :func:`run_dcd`."""
    from alignlab.distill.dcd.mine import load_mined
    from alignlab.distill.dcd.miner import TeacherScores
    from alignlab.distill.dcd.students import load_teacher
    from alignlab.distill.dcd.train import load_dcd_data
    from alignlab.train import distributed as ddp_

    if not cfg.needs_teacher:
        raise ConfigError("--mined holds teacher scores, and this arm uses no teacher", fix="drop --mined")
    data = load_dcd_data(cfg.data)
    teacher = load_teacher(cfg.teacher, device=device)
    ts = TeacherScores(teacher, data["train"])
    memo = load_mined(mined, cfg, ts, cfg.train.batch_size * ddp_.world_size())
    return {"teacher": teacher, "data": data, "teacher_scores": ts, "memo": memo}


def run_mine(args: argparse.Namespace) -> int:
    from alignlab.distill.dcd.mine import mine
    from alignlab.scale.cli import engine_options

    cfg = _student_config(args)
    out = args.shards_dir or args.out
    report = mine(
        cfg, out, engine_options(args), batches_per_shard=args.rows_per_shard, device=_device(args.device)
    )
    print(report.summary())
    print(f"mined: {out} (train with --mined {out})")
    return 0


BENCH_FLAGS = {
    "images": "--images",
    "captions_per_image": "--captions-per-image",
    "data": "--data",
    "teacher_rows": "--teacher-rows",
    "threads": "--threads",
    "seed": "--seed",
}


def _parse_students(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise ConfigError(
                f"--student {item!r} is not NAME=SPEC",
                where=f"--student {item}",
                fix="write e.g. --student dual=ckpt:runs/x",
            )
        if name in out or name == "teacher":
            raise ConfigError(
                f"student name {name!r} is used twice or is reserved",
                where=f"--student {item}",
                fix="give each student its own name (not 'teacher')",
            )
        out[name] = spec
    return out


def run_bench_cli(args: argparse.Namespace) -> int:
    from alignlab.core.config import Sources, check_out_file, from_dict
    from alignlab.distill.dcd.bench import BenchConfig, bench_set, format_bench, goal_met, run_bench
    from alignlab.distill.dcd.students import check_compatible, load_teacher

    cfg = from_dict(
        BenchConfig,
        {
            "images": args.images,
            "captions_per_image": args.captions_per_image,
            "data": args.data,
            "teacher_rows": args.teacher_rows,
            "threads": args.threads,
            "seed": args.seed,
        },
        where=Sources(None, BENCH_FLAGS),
    )
    if args.out is not None:
        check_out_file(args.out)
        check_out_file(args.out.with_suffix(".md"))
    teacher = load_teacher(args.teacher)
    students = {name: load_teacher(spec) for name, spec in _parse_students(args.students).items()}
    for s in students.values():
        check_compatible(teacher, s)
    size = getattr(getattr(teacher, "config", None), "image_size", 64)
    pairs = bench_set(cfg, size)
    result = run_bench(teacher, students, pairs, cfg)
    result["config"] = {**vars(cfg), "teacher": args.teacher, "students": args.students}
    text = format_bench(result)
    for name, m in result["models"].items():
        if m["kind"] == "dual":
            text += (
                f"\nGoal for `{name}` (>= 500× faster, >= 90% of the teacher's RSUM): "
                f"{'met' if goal_met(result, name) else 'not met'} ({m['speedup_vs_teacher']:.0f}×, "
                f"{m['rsum_kept_pct']:.1f}%)."
            )
    print(text)
    if args.out:
        write_json(args.out, result)
        write_text(args.out.with_suffix(".md"), text + "\n")
        print(f"\nresults: {args.out}")
    else:
        print(json.dumps({n: round(m["speedup_vs_teacher"], 1) for n, m in result["models"].items()}))
    return 0
