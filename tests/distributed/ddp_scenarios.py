"""What the 2-process DDP tests run, and the tiny models and data both sides build.

:func:`worker` runs in each of 2 CPU processes joined by gloo (``alignlab.train.distributed.spawn``) and
writes what it measured under ``out/``; the tests in ``test_ddp_*.py`` compute the single-process
references with the same builders and compare. Everything is tiny (2 shared CPU cores).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alignlab.core.errors import ConfigError
from alignlab.core.io import to_jsonable
from alignlab.core.seed import derive_seed, set_seed
from alignlab.data.pairs import ImageTextPairs, from_shapes
from alignlab.data.shapes import ShapesConfig, ShapesWorld
from alignlab.data.text import WordTokenizer
from alignlab.models.factory import build_model
from alignlab.retrieval.training import (
    CrossMatchTask,
    DataConfig,
    DualContrastiveTask,
    RetrievalRunConfig,
    evaluate_cross,
    evaluate_dual,
    run_retrieval,
)
from alignlab.train import distributed as ddp_
from alignlab.train.loop import StopTraining, TrainConfig, fit
from alignlab.train.losses import build_loss

SIZE = 32
# GroupNorm towers: the equivalence "one DDP step = one process with the global batch" holds exactly only
# for normalisation that does not depend on the batch. With the default BatchNorm each rank normalises with
# its own batch's statistics (as DDP does everywhere; SyncBatchNorm needs GPUs), which is a different step.
DUAL = {
    "image_size": SIZE,
    "width": 32,
    "embed_dim": 32,
    "image_channels": [8, 16, 32],
    "text_layers": 1,
    "heads": 2,
    "image_norm": "group",
}
CROSS = {
    "image_size": SIZE,
    "width": 32,
    "image_channels": [8, 16, 32],
    "text_layers": 1,
    "fusion_layers": 1,
    "heads": 2,
    "max_text_len": 16,
    "image_norm": "group",
}
# (name, loss, local_loss, global batch): per-rank batches 4+4 (even) and 4+3 (uneven: padding in the gather).
GRAD_CASES = [
    ("infonce_local", "infonce", True, 8),
    ("infonce_full", "infonce", False, 8),
    ("infonce_uneven", "infonce", True, 7),
    ("vse_max_local", "vse-max", True, 8),
    ("vse_sum_full", "vse-sum", False, 7),
]
PER_RANK_BATCH = 4  # fit runs: 2 ranks x 4 (DDP) against 1 process x 8, both with 2 accumulation steps


@lru_cache(maxsize=1)
def data() -> dict[str, ImageTextPairs]:
    world = ShapesWorld(ShapesConfig(image_size=SIZE))
    return {
        "train": from_shapes(world.generate(40, 0, "train"), name="shapes-train"),
        "val": from_shapes(world.generate(13, 0, "val"), name="shapes-val"),  # odd: padded eval shards
        "test": from_shapes(world.generate(11, 0, "test"), name="shapes-test"),
    }


def tokenizer() -> WordTokenizer:
    return WordTokenizer.build(data()["train"].captions)


def dual(seed: int = 0, **overrides: Any) -> nn.Module:
    set_seed(seed)
    return build_model("tiny-dual", {**DUAL, **overrides}, tokenizer())


def cross(seed: int = 0) -> nn.Module:
    set_seed(seed)
    return build_model("tiny-cross", CROSS, tokenizer())


def grad_task(model: nn.Module, loss: str, local_loss: bool, batch: int, gather: bool) -> DualContrastiveTask:
    return DualContrastiveTask(
        model, data()["train"], build_loss(loss, 0.2, gather=gather, local_loss=local_loss), batch, seed=3
    )


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def run_config(
    *, batch: int, epochs: int = 2, dropout: float = 0.0, checkpoint_every: int = 0
) -> RetrievalRunConfig:
    train = TrainConfig(
        epochs=epochs,
        batch_size=batch,
        lr=3e-3,
        warmup_steps=0,
        grad_accum=2,
        log_every=1,
        select_metric="rsum",
        checkpoint_every=checkpoint_every,
    )
    return RetrievalRunConfig(
        model="tiny-dual",
        model_config={**DUAL, "dropout": dropout},
        data=DataConfig(image_size=SIZE),
        train=train,
        seed=1,
    )


# --- a toy regression task for the generic path (shard_batch) and CommonIT (SamplerBatches) ---------


def regression_data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 6, generator=g)
    return x, x @ torch.randn(6, 1, generator=g)


class RegressionTask:
    """Global batches of a fixed size from a per-epoch permutation (no local_batch: the loop shards it)."""

    def __init__(self, batch: int):
        self.x, self.y = regression_data()
        self.bs = batch

    def num_batches(self, epoch: int) -> int:
        return len(self.x) // self.bs

    def batch(self, epoch: int, index: int):
        perm = np.random.default_rng(derive_seed("reg", epoch)).permutation(len(self.x))
        idx = torch.from_numpy(perm[index * self.bs : (index + 1) * self.bs])
        return self.x[idx], self.y[idx]

    def loss(self, model, batch):
        x, y = batch
        # A sum over the global batch divided by its size: each rank returns its share times W (as the
        # gathered losses do), so that DDP's average is the global mean.
        share = ((model(x) - y) ** 2).sum() * (ddp_.world_size() / self.bs)
        return {"mse_loss": share}


class BypassTask(RegressionTask):
    """Calls the plain model instead of the DDP wrapper: its gradients are never synchronised."""

    def loss(self, model, batch):
        x, y = batch
        return {"mse_loss": ((ddp_.unwrap(model)(x) - y) ** 2).mean()}


def regression_model() -> nn.Module:
    set_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))


COMMONIT_GROUPS = ["a"] * 16 + ["b"] * 8 + ["c"] * 24  # multiples of 8 = 2 ranks x 2 accum x batch 2
COMMONIT_B, COMMONIT_A = 2, 2


class CommonITTask(ddp_.SamplerBatches):
    """Regression trained with CommonIT batches; records the example indices of every micro-batch."""

    def __init__(self, sampler: Any):
        x, y = regression_data()
        super().__init__(sampler, lambda idx: (torch.tensor(idx), x[idx], y[idx]))
        self.seen: list[tuple[int, int, list[int]]] = []

    def local_batch(self, epoch: int, index: int, rank: int, world: int):
        b = super().local_batch(epoch, index, rank, world)
        self.seen.append((epoch, index, b[0].tolist()))
        return b

    def loss(self, model, batch):
        _, x, y = batch
        return {"mse_loss": ((model(x) - y) ** 2).mean()}


# --- DCD: teacher-mined candidates, globally normalised weights, gathered caption -> image negatives ----

# Per-rank batch 5: the global batch of 10 packs whole groups of 3, so batch (0, 0) holds 9 images and
# the ranks get 5 + 4 (uneven shards: padding in the gathers, W/N scaling).
DCD_PER_RANK = 5
# (case, DCD arm, student): the arms of the experiment, the two in-batch baselines, a shallow cross student.
DCD_CASES = [
    ("dcd", "dcd", "dual"),
    ("static-kd", "static-kd", "dual"),
    ("no-kd", "no-kd", "dual"),
    ("dcd-released", "dcd-released", "dual"),
    ("dcd-shuffled", "dcd-shuffled", "dual"),
    ("hard-negatives", "hard-negatives", "dual"),
    ("relation-kd", "relation-kd", "dual"),
    ("feature-mse", "feature-mse", "dual"),
    ("dcd-shallow-cross", "dcd", "shallow-cross"),
]


@lru_cache(maxsize=1)
def dcd_data() -> ImageTextPairs:
    from alignlab.distill.dcd.data import NearDupConfig, near_duplicate_pairs

    return near_duplicate_pairs(30, 0, "train", NearDupConfig(group_size=3, image_size=SIZE))


@lru_cache(maxsize=1)
def dcd_teacher() -> tuple[nn.Module, Any]:
    """A frozen tiny cross encoder (random weights, sharpened so its candidate entropies differ) and its
    scores."""
    from alignlab.distill.dcd.miner import TeacherScores
    from alignlab.distill.dcd.students import load_teacher

    set_seed(11)
    model = build_model("tiny-cross", CROSS, WordTokenizer.build(dcd_data().captions))
    with torch.no_grad():  # an untrained head scores every pair alike; a larger one spreads the scores
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(3.0)
    teacher = load_teacher(model)
    return teacher, TeacherScores(teacher, dcd_data())


def dcd_task(case: str, per_process_batch: int):
    """``(task, student)`` of a DCD case, the student built with the same seed on every rank and process."""
    from alignlab.distill.dcd.students import build_dual_student, build_shallow_cross
    from alignlab.distill.dcd.train import ARMS, DCDRunConfig, DCDTask

    _, arm, student_kind = next(c for c in DCD_CASES if c[0] == case)
    cfg = DCDRunConfig(
        student=student_kind,
        student_config={k: v for k, v in DUAL.items() if k != "image_size"},
        pool_size=8,
        keep=3,
        seed=2,
        train=TrainConfig(batch_size=per_process_batch),
        **ARMS[arm],
    )
    teacher, ts = dcd_teacher()
    set_seed(5)
    if student_kind == "dual":
        student = build_dual_student(teacher, cfg.student_config, captions=dcd_data().captions)
    else:
        student = build_shallow_cross(teacher, fusion_layers=1)
    return DCDTask(cfg, student, dcd_data(), ts if cfg.needs_teacher else None), student


def dcd_step(rank: int, world: int, out_dir: Path) -> None:
    """One DDP step of every DCD case: loss, gradients and what each rank mined (rank 0 saves)."""
    for case, _, _ in DCD_CASES:
        task, student = dcd_task(case, DCD_PER_RANK)
        wrapped = ddp_.DDPModel(student)  # held until after backward: DDP's gradient hooks live with it
        b = task.local_batch(0, 0, rank, world)
        terms = task.loss(wrapped, b)
        sum(terms.values()).backward()
        extra = list(task.parameters())  # feature KD's projections: averaged like fit does
        ddp_.average_gradients(extra)
        value = ddp_.all_reduce_mean({k: float(v.detach()) for k, v in terms.items()})
        g = grads(student)
        g.update({f"task.{i}": p.grad.detach().clone() for i, p in enumerate(extra)})
        mined = ddp_.all_gather_object(
            {
                "images": b.images.tolist(),
                "candidates": b.candidates.tolist(),
                "teacher": None if b.teacher is None else b.teacher.tolist(),
                "shard": [b.shard.lo, b.shard.hi, b.shard.n],
            }
        )
        same = ddp_.all_gather_object({k: v.sum().item() for k, v in g.items()})
        if rank == 0:
            torch.save(
                {
                    "loss": value,
                    "grads": g,
                    "mined": mined,
                    "ranks_agree": same[0] == same[1],
                    "diagnostics": task.loss_fn.last,
                },
                out_dir / f"dcd_{case}.pt",
            )


# --- the worker --------------------------------------------------------------------------------------


def worker(rank: int, world: int, out: str) -> None:
    out_dir = Path(out)
    main = rank == 0

    # DCD: one step per arm against one process with the global batch.
    dcd_step(rank, world, out_dir)

    # (a) one DDP step with gathered negatives: loss and gradients.
    for name, loss, local_loss, batch in GRAD_CASES:
        model = dual()
        task = grad_task(model, loss, local_loss, batch, gather=True)
        wrapped = ddp_.DDPModel(model, find_unused_parameters=task.find_unused_parameters)
        terms = task.loss(wrapped, task.local_batch(0, 0, rank, world))
        sum(terms.values()).backward()
        value = ddp_.all_reduce_mean({k: float(v.detach()) for k, v in terms.items()})
        g = grads(model)
        same = ddp_.all_gather_object({k: v.sum().item() for k, v in g.items()})
        if main:
            torch.save(
                {
                    "loss": value,
                    "grads": g,
                    "ranks_agree": same[0] == same[1],
                    "local_size": len(task.local_batch(0, 0, rank, world)[1]),
                },
                out_dir / f"grad_{name}.pt",
            )
    model = cross()
    task = CrossMatchTask(model, data()["train"], 6, seed=3, gather=True)
    wrapped = ddp_.DDPModel(model)  # held until after backward: DDP's gradient hooks live with it
    terms = task.loss(wrapped, task.local_batch(0, 0, rank, world))
    sum(terms.values()).backward()
    value = ddp_.all_reduce_mean({k: float(v.detach()) for k, v in terms.items()})
    if main:
        torch.save({"loss": value, "grads": grads(model)}, out_dir / "grad_cross.pt")

    # (d) distributed evaluation of a dual and a cross encoder (13 images: padded shards).
    model = dual(seed=4)
    rep = evaluate_dual(model, data()["val"], distributed=True)
    from alignlab.retrieval.evaluate import evaluate_model

    rep2 = evaluate_model(model, data()["val"], distributed=True)
    crep = evaluate_cross(cross(seed=4), data()["val"], distributed=True)
    if main:
        (out_dir / "eval.json").write_text(
            json.dumps(
                to_jsonable(
                    {
                        "dual": rep.metrics,
                        "dual_ranks": [rep.i2t_ranks, rep.t2i_ranks],
                        "model": rep2.metrics,
                        "cross": crep.metrics,
                        "cross_ranks": [crep.i2t_ranks, crep.t2i_ranks],
                    }
                )
            )
        )

    # (b) a short training run: 2 ranks x batch 4 x 2 accumulation steps (global 16 per step).
    result = run_retrieval(run_config(batch=PER_RANK_BATCH), out_dir / "run_ddp", data=data())
    if main:
        (out_dir / "run_ddp.json").write_text(
            json.dumps({"metrics": result["metrics"], "dev_curve": result["dev_curve"]})
        )

    # Resume: stop every rank at step 3 (checkpoints every 2 steps), resume; compare with one run.
    # Dropout makes every rank's generator matter, so a wrong per-rank RNG restore would show.
    cfg = run_config(batch=PER_RANK_BATCH, epochs=2, dropout=0.1, checkpoint_every=2)
    full = run_retrieval(cfg, out_dir / "resume_full", data=data())

    def stop(state: dict[str, Any]) -> None:
        if state["step"] == 3:
            raise StopTraining

    with contextlib.suppress(StopTraining):
        run_retrieval(cfg, out_dir / "resume_cut", data=data(), callbacks=[stop])
    resumed = run_retrieval(cfg, out_dir / "resume_cut", data=data())
    if main:
        (out_dir / "resume.json").write_text(
            json.dumps(
                {
                    "full": full["dev_curve"],
                    "resumed": resumed["dev_curve"],
                    "full_metrics": full["metrics"],
                    "resumed_metrics": resumed["metrics"],
                }
            )
        )
    # Ranks draw different random numbers after the rank-offset seeding.
    draws = ddp_.all_gather_object(torch.rand(3).tolist())
    if main:
        (out_dir / "draws.json").write_text(json.dumps(draws))

    # The generic path: a task without local_batch, sharded by the loop (shard_batch); 2 x 6 vs 1 x 12.
    model = regression_model()
    fit(
        model,
        RegressionTask(12),
        TrainConfig(epochs=2, lr=0.05, optimizer="sgd", log_every=1, grad_clip=0),
        out_dir / "reg_ddp",
    )
    if main:
        torch.save(model.state_dict(), out_dir / "reg_ddp.pt")

    # A task that bypasses DDP's forward is stopped at its first step instead of drifting apart.
    try:
        fit(regression_model(), BypassTask(12), TrainConfig(epochs=1, log_every=1), out_dir / "bypass")
        message = "trained without an error"
    except ConfigError as e:
        message = e.one_line()
    if main:
        (out_dir / "bypass.txt").write_text(message)

    # (c) CommonIT: the sampler's own rank sharding; every optimizer step one group across both ranks.
    from alignlab.commonit import CommonITBatchSampler

    sampler = CommonITBatchSampler(
        COMMONIT_GROUPS,
        COMMONIT_B,
        world_size=world,
        rank=rank,
        grad_accum_steps=COMMONIT_A,
        seed=2,
        warn=False,
    )
    task = CommonITTask(sampler)
    model = regression_model()
    fit(model, task, TrainConfig(epochs=2, lr=0.01, grad_accum=COMMONIT_A, log_every=1), out_dir / "commonit")
    seen = ddp_.all_gather_object(task.seen)
    weights = ddp_.all_gather_object([p.detach().sum().item() for p in model.parameters()])
    if main:
        (out_dir / "commonit.json").write_text(
            json.dumps({"seen": seen, "weights": weights, "len": len(sampler)})
        )


def config_dict(cfg: RetrievalRunConfig) -> dict[str, Any]:
    return asdict(cfg)
