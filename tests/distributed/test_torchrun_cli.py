"""`torchrun --standalone --nproc_per_node 2 -m alignlab train` against `alignlab train` with twice the
batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

CONFIG = {
    "model": "tiny-dual",
    "model_config": {
        "image_size": 32,
        "width": 32,
        "embed_dim": 32,
        "image_channels": [8, 16, 32],
        "text_layers": 1,
        "heads": 2,
    },
    "data": {"source": "shapes", "train": 40, "val": 13, "test": 11, "image_size": 32},
    "train": {
        "epochs": 2,
        "batch_size": 4,
        "lr": 0.003,
        "warmup_steps": 0,
        "grad_accum": 2,
        "log_every": 1,
        "select_metric": "rsum",
    },
    "seed": 1,
}


@pytest.mark.slow
def test_torchrun_two_processes_give_the_metrics_of_one_process_with_the_global_batch(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ALIGNLAB_QUIET": "1"}
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "alignlab",
            "train",
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "ddp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("results:") == 1  # rank 0 alone prints the summary
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "alignlab",
            "train",
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "one"),
            "--set",
            "train.batch_size=8",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a = json.loads((tmp_path / "ddp" / "results.json").read_text())
    b = json.loads((tmp_path / "one" / "results.json").read_text())
    assert a["world_size"] == 2 and a["global_batch"] == 16
    assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-6)
    for x, y in zip(a["dev_curve"], b["dev_curve"]):
        assert x == pytest.approx(y, abs=1e-6)
