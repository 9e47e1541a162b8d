"""Training-step cost of every KD method side by side in one process: time, teacher passes, memory.

For each method the same model sizes and batches are used; a step is ``task.loss`` + backward +
AdamW step, exactly what ``fit`` does. Methods are timed in interleaved rounds (round-robin, several
repeats, median per method) so that load changes on a shared machine hit all methods alike, and the
table prints ratios to CE and to PESF. Random-weight teacher (timing does not depend on its training).
Run::

    .venv/bin/python benchmarks/bench_pesf_cost.py                 # digits (8×8 grey, 10 classes)
    .venv/bin/python benchmarks/bench_pesf_cost.py --data shapes   # ShapesWorld 24×24 RGB, 20 classes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    from alignlab.distill.pesf.cost import training_memory
    from alignlab.distill.pesf.experiment import ExperimentConfig
    from alignlab.distill.pesf.models import ModelConfig, build_classifier
    from alignlab.distill.pesf.trainer import METHODS, KDConfig, KDTask, build_kd_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["digits", "shapes"], default="digits")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method and round (default 10)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    base: KDConfig = getattr(ExperimentConfig(), args.data)
    if base.data.name == "shapes":  # a smaller generated set is enough for timing
        base.data.n_train, base.data.n_val, base.data.n_test = 512, 64, 64
    data = base.data.load()
    torch.manual_seed(0)
    teacher = build_classifier(ModelConfig("wide", base.teacher.width), data.in_channels, data.n_classes)
    runs = {}
    for m in METHODS:
        cfg = KDConfig(**{**base.__dict__, "method": m})
        model = build_kd_model(cfg, data, _copy(teacher) if METHODS[m].teacher == "trained" else teacher)
        model.train()
        task = KDTask(cfg.spec, data, cfg)
        params = [q for q in model.parameters() if q.requires_grad]
        runs[m] = {
            "model": model,
            "task": task,
            "opt": torch.optim.AdamW(params, lr=1e-3),
            "times": [],
            "memory": training_memory(model, task.loss, task.batch(0, 0)),
            "trainable": sum(q.numel() for q in params),
        }
    for r in range(args.rounds):
        for run in runs.values():
            model, task, opt = run["model"], run["task"], run["opt"]
            n = task.num_batches(0)
            t0 = time.perf_counter()
            for s in range(args.steps):
                opt.zero_grad(set_to_none=True)
                sum(task.loss(model, task.batch(r, s % n)).values()).backward()
                opt.step()
            run["times"].append((time.perf_counter() - t0) / args.steps)
    ce = statistics.median(runs["ce"]["times"])
    pesf = statistics.median(runs["pesf"]["times"])
    print(
        f"{args.data}: batch {base.batch_size}, teacher width {base.teacher.width}, student width "
        f"{base.student_width}, {args.steps} steps × {args.rounds} rounds, {args.threads} thread(s)"
    )
    print(
        f"{'method':24s} {'ms/step':>8s} {'×CE':>6s} {'×PESF':>6s} {'trainable':>10s} {'T fwd/bwd':>9s} "
        f"{'memory MiB':>10s} {'activ. MiB':>10s}"
    )
    for m, run in runs.items():
        t = statistics.median(run["times"])
        c = run["model"].counter
        steps = args.steps * args.rounds
        fb = f"{c.forward / steps:g}/{c.backward / steps:g}" if c is not None else "0/0"
        print(
            f"{m:24s} {1000 * t:8.2f} {t / ce:6.2f} {t / pesf:6.2f} {run['trainable']:10,d} {fb:>9s} "
            f"{run['memory']['total_mib']:10.3f} {run['memory']['activations_mib']:10.3f}"
        )
    return 0


def _copy(module):
    import copy

    return copy.deepcopy(module)


if __name__ == "__main__":
    sys.exit(main())
