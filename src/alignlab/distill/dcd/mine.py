"""``distill dcd mine``: the teacher scores every training batch's candidate pools, sharded, ahead of
training.

DCD's cost is the teacher: each batch scores ``B × (1 + M)`` (image, caption) pairs with the cross
encoder. The pools are pure functions of ``(seed, epoch, index)``
(:func:`~alignlab.distill.dcd.train.pool_candidates`), so they can be scored before training, in parallel,
on any number of workers: one row per training
batch, sharded by :mod:`alignlab.scale` (``--engine local|ray``), each worker loading the teacher and the
training set once and scoring its batches with the same :meth:`TeacherScores.pair_scores` call that
training makes — so the scores are the ones training would compute, bit for bit.

Output folder: ``part-*.parquet`` (columns ``epoch``, ``index``, ``images [B]``, ``candidates [B·(1+M)]``
— positive first in each row of ``1 + M`` — and ``scores [B·(1+M)]`` float32) with ``manifest.json``.
``distill dcd train --mined DIR`` reads it: it checks that the folder was mined for the same data, seed,
batching and pool size, that every batch's candidates are the ones it draws, and then takes the teacher's
scores from the file instead of recomputing them (``teacher_pairs_scored`` in results.json shows 0 for
the mined batches).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.errors import ConfigError, DataError
from alignlab.scale.shards import Shard

MINE_VERSION = 1


def mine_identity(cfg: Any, global_batch: int) -> dict[str, Any]:
    """What decides the mined scores: teacher, data, seed, batching, pool size and epochs."""
    return {
        "version": MINE_VERSION,
        "teacher": cfg.teacher,
        "data": asdict(cfg.data),
        "seed": cfg.seed,
        "global_batch": global_batch,
        "pool_size": cfg.pool_size,
        "epochs": cfg.train.epochs,
    }


def batch_plan(cfg: Any, train: Any, global_batch: int) -> list[tuple[int, int]]:
    """Every training batch ``(epoch, index)`` in training order."""
    from alignlab.distill.dcd.data import GroupBatches, groups_of

    batches = GroupBatches(groups_of(train), global_batch, cfg.seed)
    return [(e, i) for e in range(cfg.train.epochs) for i in range(len(batches.batches(e)))]


@dataclass
class MineJob:
    cfg: Any  # DCDRunConfig
    global_batch: int
    plan: list[tuple[int, int]]  # row r of the job is training batch plan[r]
    device: str = "cpu"
    name: str = "dcd-mine"

    def identity(self) -> dict[str, Any]:
        return mine_identity(self.cfg, self.global_batch)

    def open(self) -> _Worker:
        from alignlab.distill.dcd.data import GroupBatches, groups_of
        from alignlab.distill.dcd.miner import TeacherScores
        from alignlab.distill.dcd.students import load_teacher
        from alignlab.distill.dcd.train import load_dcd_data

        train = load_dcd_data(self.cfg.data)["train"]
        teacher = load_teacher(self.cfg.teacher, device=self.device)
        batches = GroupBatches(groups_of(train), self.global_batch, self.cfg.seed)
        return _Worker(self, TeacherScores(teacher, train), batches, train)


class _Worker:
    def __init__(self, job: MineJob, ts: Any, batches: Any, train: Any):
        self.job, self.ts, self.batches, self.train = job, ts, batches, train

    def process(self, shard: Shard, rows: list[dict[str, Any]]):
        import pyarrow as pa

        from alignlab.distill.dcd.train import pool_candidates

        out: dict[str, list] = {"epoch": [], "index": [], "images": [], "candidates": [], "scores": []}
        for r in rows:
            epoch, index = self.job.plan[r["_row"]]
            idx, pos, pool = pool_candidates(self.job.cfg, self.batches, self.train, epoch, index)
            cand = np.concatenate([pos[:, None], pool], axis=1)
            # The very call DCDTask.batch makes, so the scores are training's own.
            t_all = self.ts.pair_scores(np.repeat(idx, cand.shape[1]), cand.reshape(-1)).view(cand.shape)
            out["epoch"].append(epoch)
            out["index"].append(index)
            out["images"].append(np.asarray(idx, dtype=np.int64))
            out["candidates"].append(cand.reshape(-1).astype(np.int64))
            out["scores"].append(t_all.reshape(-1).numpy().astype(np.float32))
        return pa.table(
            {
                "epoch": pa.array(out["epoch"], pa.int64()),
                "index": pa.array(out["index"], pa.int64()),
                "images": pa.array(out["images"], pa.list_(pa.int64())),
                "candidates": pa.array(out["candidates"], pa.list_(pa.int64())),
                "scores": pa.array(out["scores"], pa.list_(pa.float32())),
            }
        )


def mine(cfg: Any, out_dir: Path, opts: Any, batches_per_shard: int = 8, device: str = "cpu"):
    """Score every training batch's pools into ``out_dir``; returns the run report."""
    from alignlab.distill.dcd.train import load_dcd_data
    from alignlab.scale.engine import run_job
    from alignlab.scale.shards import plan_range

    if not cfg.teacher:
        raise ConfigError(
            "no teacher given", fix="pass --teacher ckpt:<dir> (train one with `distill dcd teacher`)"
        )
    global_batch = cfg.train.batch_size  # mined for one process; DDP ranks rebuild the same global batch
    plan = batch_plan(cfg, load_dcd_data(cfg.data)["train"], global_batch)
    shards = plan_range(len(plan), batches_per_shard, source="batches")
    return run_job(MineJob(cfg, global_batch, plan, device), shards, out_dir, opts)


def load_mined(mined_dir: str | Path, cfg: Any, ts: Any, global_batch: int) -> dict[tuple, Any]:
    """The teacher-score memo that :class:`~alignlab.distill.dcd.train.DCDTask` reads, from a mined folder.

    Refuses a folder mined for other data, seed, batching or pool size, and checks every batch's
    candidates against the ones training draws (a :class:`DataError` names the first that differs).
    """
    import torch

    from alignlab.distill.dcd.data import GroupBatches, groups_of
    from alignlab.distill.dcd.train import pool_candidates
    from alignlab.scale.engine import load_manifest, read_output

    mined_dir = Path(mined_dir)
    manifest = load_manifest(mined_dir)
    if manifest is None or manifest.get("job") != MineJob.name:
        raise DataError(
            "not a folder written by `distill dcd mine`",
            where=str(mined_dir),
            fix="run `alignlab distill dcd mine` first, or give its --out folder",
        )
    want = mine_identity(cfg, global_batch)
    have = manifest["identity"]
    diff = sorted(k for k in want if k not in ("teacher", "epochs") and want[k] != have.get(k))
    if diff:
        raise ConfigError(
            f"the mined scores were made with other {', '.join(diff)}",
            where=str(mined_dir),
            fix="mine again with this run's config, or train without --mined",
        )
    if have.get("teacher") != cfg.teacher:
        raise ConfigError(
            f"the mined scores come from teacher {have.get('teacher')!r}, this run's is {cfg.teacher!r}",
            where=str(mined_dir),
            fix="pass the same --teacher",
        )
    table = read_output(mined_dir)
    batches = GroupBatches(groups_of(ts.pairs), global_batch, cfg.seed)
    memo: dict[tuple, Any] = {}
    width = cfg.pool_size + 1
    for row in table.to_pylist():
        epoch, index = row["epoch"], row["index"]
        idx, pos, pool = pool_candidates(cfg, batches, ts.pairs, epoch, index)
        cand = np.concatenate([pos[:, None], pool], axis=1)
        if not np.array_equal(np.asarray(row["images"]), idx) or not np.array_equal(
            np.asarray(row["candidates"]).reshape(-1, width), cand
        ):
            raise DataError(
                f"mined batch (epoch {epoch}, index {index}) has other candidates than training draws",
                where=str(mined_dir),
                fix="mine again with this run's config and data",
            )
        scores = torch.from_numpy(np.asarray(row["scores"], dtype=np.float32).reshape(cand.shape))
        # DCDTask._memo_key for the pool scores of this batch.
        memo[("pool", id(ts), cfg.seed, global_batch, cfg.pool_size, cfg.pools, epoch, index)] = scores
    return memo
