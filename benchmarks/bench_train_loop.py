"""Overhead of alignlab's training loop against a minimal hand-written PyTorch loop.

Both train the same tiny dual encoder on the same pre-built ShapesWorld batches with the same optimizer
and schedule; only the loop differs (fit() adds progress, logging, gradient clipping, a checkpoint at
each epoch end and the dev-metric bookkeeping). Each is run ``--repeats`` times, alternating, and the
fastest run of each is kept. Target: fit() within 5% of the bare loop.

    python benchmarks/bench_train_loop.py [--steps 60] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("ALIGNLAB_QUIET", "1")

import torch  # noqa: E402

from alignlab.core.seed import set_seed  # noqa: E402
from alignlab.data.pairs import from_shapes  # noqa: E402
from alignlab.data.shapes import ShapesWorld  # noqa: E402
from alignlab.data.text import WordTokenizer  # noqa: E402
from alignlab.models.factory import build_model  # noqa: E402
from alignlab.retrieval.training import DualContrastiveTask  # noqa: E402
from alignlab.train.loop import TrainConfig, _lr_lambda, fit  # noqa: E402
from alignlab.train.losses import InfoNCELoss  # noqa: E402


class FixedBatches(DualContrastiveTask):
    """The retrieval task with every batch built once up front, so both loops get identical inputs."""

    def __init__(self, *a, steps: int, **kw):
        super().__init__(*a, **kw)
        n = DualContrastiveTask.num_batches(self, 0)
        self._cache = [DualContrastiveTask.batch(self, 0, i % n) for i in range(steps)]

    def num_batches(self, epoch):
        return len(self._cache)

    def batch(self, epoch, index):
        return self._cache[index]


def make(steps: int, pairs, tok):
    set_seed(0)
    model = build_model("tiny-dual", {}, tok)
    return model, FixedBatches(model, pairs, InfoNCELoss(), batch_size=64, seed=0, steps=steps)


def bare_loop(model, task, cfg: TrainConfig) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, task.num_batches(0)))
    model.train()
    t = time.perf_counter()
    for i in range(task.num_batches(0)):
        opt.zero_grad(set_to_none=True)
        loss = sum(task.loss(model, task.batch(0, i)).values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
    return time.perf_counter() - t


def fit_loop(model, task, cfg: TrainConfig) -> float:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        fit(model, task, cfg, d, resume=False)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--repeats", type=int, default=5, help="alternating runs of each loop (the fastest is kept)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = from_shapes(ShapesWorld().generate(1000, 0, "train"), "bench")
    tok = WordTokenizer.build(pairs.captions)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-3, log_every=10**9, grad_clip=1.0)
    times = {"bare": [], "fit": []}
    for _ in range(args.repeats):
        for name, loop in (("bare", bare_loop), ("fit", fit_loop)):
            model, task = make(args.steps, pairs, tok)
            times[name].append(loop(model, task, cfg))
    bare, fitted = min(times["bare"]), min(times["fit"])
    print(
        f"steps: {args.steps}, batch 64, threads {args.threads}, repeats {args.repeats}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    for name, ts in times.items():
        print(f"  {name:5s} runs (s): {', '.join(f'{t:.2f}' for t in ts)}")
    print(f"bare loop: {bare:.2f} s ({args.steps / bare:.2f} steps/s)")
    print(f"fit():     {fitted:.2f} s ({args.steps / fitted:.2f} steps/s)")
    print(f"overhead of fit(): {100 * (fitted / bare - 1):+.1f}% (ratio {fitted / bare:.3f}; target <= 1.05)")


if __name__ == "__main__":
    main()
