"""Full-ranking speed of DCD's cross-encoder teacher vs its students, side by side in one process.

A thin wrapper around ``alignlab distill bench`` (see :mod:`alignlab.distill.dcd.bench` for what is
timed and how). Run::

    # trained models (e.g. from `alignlab experiment dcd --out runs/experiment-dcd`):
    .venv/bin/python benchmarks/bench_dcd_speed.py --teacher ckpt:runs/experiment-dcd/teacher \\
        --student dual=ckpt:runs/experiment-dcd/arms/dcd/seed-0 --teacher-rows 100

    # no checkpoints: random-weight models with the experiment's architectures (timing only; the
    # R@K columns then mean nothing)
    .venv/bin/python benchmarks/bench_dcd_speed.py --random-init --teacher-rows 50

    # no arguments (what `make bench` does): the experiment's checkpoints if runs/experiment-dcd has
    # them, else random-weight models; --teacher-rows 50
    .venv/bin/python benchmarks/bench_dcd_speed.py

Defaults: 1,000 near-duplicate ShapesWorld images × 5,000 captions, one torch thread. ``--teacher-rows N``
times a cross encoder on the first N image rows and extrapolates linearly (every row does the same
work), which keeps the run short on a small CPU; here it defaults to 50.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from alignlab.cli import main as alignlab_main


def _random_models(folder: Path) -> tuple[str, dict[str, str]]:
    """Save random-weight teacher and students with the experiment's default architectures."""
    from alignlab.distill.dcd.students import build_dual_student, build_shallow_cross
    from alignlab.distill.dcd.train import STUDENT_MODEL, TEACHER_MODEL
    from alignlab.models.factory import build_model, save_model

    teacher = build_model("tiny-cross", TEACHER_MODEL)
    save_model(teacher, folder / "teacher")
    save_model(build_dual_student(teacher, STUDENT_MODEL), folder / "dual")
    save_model(build_shallow_cross(teacher, fusion_layers=1), folder / "shallow-cross")
    return f"ckpt:{folder / 'teacher'}", {
        "dual": f"ckpt:{folder / 'dual'}",
        "shallow-cross": f"ckpt:{folder / 'shallow-cross'}",
    }


EXPERIMENT = Path("runs/experiment-dcd")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--random-init", action="store_true", help="benchmark random-weight models (timing only)")
    args, rest = p.parse_known_args(argv)
    if "--teacher-rows" not in rest:
        rest += ["--teacher-rows", "50"]  # keeps `make bench` to minutes; the cross encoders are extrapolated
    if "--teacher" not in rest and not args.random_init:
        teacher, student = EXPERIMENT / "teacher", EXPERIMENT / "arms" / "dcd" / "seed-0"
        if (teacher / "results.json").is_file() and (student / "results.json").is_file():
            print(f"using the experiment's checkpoints in {EXPERIMENT}")
            rest += ["--teacher", f"ckpt:{teacher}", "--student", f"dual=ckpt:{student}"]
        else:
            print(f"no trained models in {EXPERIMENT}: timing random-weight models (R@K meaningless)")
            args.random_init = True
    if args.random_init:
        with tempfile.TemporaryDirectory() as tmp:
            teacher, students = _random_models(Path(tmp))
            extra = ["--teacher", teacher] + [
                a for n, s in students.items() for a in ("--student", f"{n}={s}")
            ]
            return alignlab_main(["distill", "bench", *extra, *rest])
    return alignlab_main(["distill", "bench", *rest])


if __name__ == "__main__":
    sys.exit(main())
