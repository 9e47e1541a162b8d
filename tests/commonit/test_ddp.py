"""CommonITTrainer under torchrun with 2 CPU processes: one group per optimizer step across both ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_training_keeps_steps_homogeneous_and_shards_disjoint(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(worker),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["len"] == ranks[1]["len"]
    groups = ranks[0]["groups"]
    steps = sorted(ranks[0]["steps"], key=int)
    assert steps == sorted(ranks[1]["steps"], key=int) and len(steps) > 4
    seen = []
    for k in steps:
        batches = ranks[0]["steps"][k] + ranks[1]["steps"][k]
        assert len(batches) == 4  # 2 ranks x 2 accumulation steps
        assert len({groups[i] for b in batches for i in b}) == 1
        seen.append([i for b in batches for i in b])
    epoch = len(steps) // 2
    # Both ranks followed the sampler's plan for epoch 0, rank r taking slots r*A .. r*A+A-1 of each step.
    from alignlab.commonit import CommonITBatchSampler

    ref = CommonITBatchSampler(groups, 2, world_size=2, grad_accum_steps=2, seed=4, warn=False)
    assert [[i for b in batches for i in b] for _, batches in ref.steps(0)] == seen[:epoch]
    first = [i for s in seen[:epoch] for i in s]
    assert sorted(set(first)) == list(range(len(groups)))  # every example trained in the first epoch
    assert len(first) - len(set(first)) == ref.report["leftover"]["repeats_per_epoch"]
