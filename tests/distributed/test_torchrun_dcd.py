"""`torchrun --nproc_per_node 2 -m alignlab distill dcd train` against one process with twice the batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

DATA = [
    "--set",
    "data.train=48",
    "--set",
    "data.val=12",
    "--set",
    "data.test=12",
    "--set",
    "data.image_size=32",
]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_torchrun_dcd_student_matches_one_process_with_the_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ALIGNLAB_QUIET": "1"}
    alignlab = [sys.executable, "-m", "alignlab"]
    teacher = _run(
        [
            *alignlab,
            "distill",
            "dcd",
            "teacher",
            "--out",
            str(tmp_path / "teacher"),
            *DATA,
            "--set",
            "train.epochs=1",
            "--set",
            "model_config.width=16",
            "--set",
            "model_config.image_channels=[8, 16]",
            "--set",
            "dev_images=6",
        ],
        env,
    )
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    student = [
        "distill",
        "dcd",
        "train",
        "--teacher",
        f"ckpt:{tmp_path / 'teacher'}",
        "--arm",
        "dcd",
        *DATA,
        "--set",
        "train.epochs=2",
        "--set",
        "pool_size=6",
        "--set",
        "keep=3",
        "--set",
        "threads=1",
        "--set",
        "student_config.image_size=32",
    ]
    ddp = _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "alignlab",
            *student,
            "--set",
            "train.batch_size=6",
            "--out",
            str(tmp_path / "ddp"),
        ],
        env,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("results:") == 1  # rank 0 alone prints the summary
    one = _run([*alignlab, *student, "--set", "train.batch_size=12", "--out", str(tmp_path / "one")], env)
    assert one.returncode == 0, one.stderr[-3000:]
    a = json.loads((tmp_path / "ddp" / "results.json").read_text())
    b = json.loads((tmp_path / "one" / "results.json").read_text())
    assert a["world_size"] == 2 and a["global_batch"] == 12 and "world_size" not in b
    assert a["steps"] == b["steps"]
    assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-6)
    for x, y in zip(a["dev_curve"], b["dev_curve"], strict=True):
        assert x == pytest.approx(y, abs=1e-6)
