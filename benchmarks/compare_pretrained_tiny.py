"""Quality at equal CPU budget: the pretrained LiT encoder (locked towers) against the tiny dual encoder.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_pretrained_tiny.py MODEL BUDGET_CPU_S OUT_JSON \
          [EPOCHS] [SEED]      (MODEL: pretrained-lit or tiny-dual)

Both models train with InfoNCE on 4,000 ShapesWorld training images (one own caption per image per epoch,
batch 128, lr 2e-3, 20 warm-up steps, cosine) in one process on one thread. The budget counts process
CPU time from building the model to the end of training, the LiT's locked-tower feature extraction
included; training stops at the budget. Both are then scored on the shapes-1k images under truth labels
(a caption is relevant to every image it is true of) and under source labels (its own image only).
The figures in docs/pretrained.md come from this script.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from alignlab.core.seed import set_seed
from alignlab.data.pairs import from_shapes
from alignlab.data.shapes import ShapesConfig, ShapesWorld
from alignlab.data.text import WordTokenizer
from alignlab.models.factory import build_model
from alignlab.retrieval.metrics import evaluate_embeddings
from alignlab.retrieval.training import DualContrastiveTask
from alignlab.train.loop import StopTraining, TrainConfig, fit
from alignlab.train.losses import InfoNCELoss


def main(model_name: str, budget: float, out: str, epochs: int = 8, seed: int = 0) -> dict:
    torch.set_num_threads(1)
    world = ShapesWorld(ShapesConfig())
    train = from_shapes(world.generate(4000, 0, "train"), name="shapes-train", relevance="source")
    test_ex = world.generate(1000, 0, "test")  # the shapes-1k protocol's images
    source = from_shapes(test_ex, name="shapes-1k", relevance="source")
    truth = from_shapes(test_ex, name="shapes-1k", relevance="truth").relevance

    t0, w0 = time.process_time(), time.time()
    set_seed(seed)
    model = build_model(
        model_name,
        {"cache_dir": None} if model_name == "pretrained-lit" else {},
        WordTokenizer.build(train.captions),
    )
    task = DualContrastiveTask(model, train, InfoNCELoss(), 128, seed)
    stopped: dict = {"at": None}

    def budget_stop(state: dict) -> None:
        if time.process_time() - t0 > budget:
            stopped["at"] = (state["epoch"], state["step"])
            raise StopTraining()

    run_dir = Path(out).with_suffix("") / "run"
    res = fit(
        model,
        task,
        TrainConfig(epochs=epochs, batch_size=128, lr=2e-3, warmup_steps=20, seed=seed),
        run_dir,
        resume=False,
        callbacks=[budget_stop],
    )
    train_cpu, train_wall = time.process_time() - t0, time.time() - w0
    model.eval()
    t1 = time.process_time()
    img, txt = model.encode_images(source.load_images()), model.encode_texts(source.captions)
    eval_cpu = time.process_time() - t1

    def keep(metrics: dict) -> dict:
        return {k: round(v, 2) for k, v in metrics.items() if "R@" in k or k == "rsum"}

    row = {
        "model": model_name,
        "seed": seed,
        "epochs_planned": epochs,
        "stopped_at": stopped["at"],
        "steps": res.steps,
        "train_cpu_s": round(train_cpu, 1),
        "train_wall_s": round(train_wall, 1),
        "eval_cpu_s": round(eval_cpu, 1),
        "budget_cpu_s": budget,
        "threads": 1,
        "truth": keep(evaluate_embeddings(img, txt, truth).metrics),
        "source": keep(evaluate_embeddings(img, txt, source.relevance).metrics),
    }
    Path(out).write_text(json.dumps(row, indent=1))
    print(json.dumps(row, indent=1))
    return row


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) < 3:
        raise SystemExit(__doc__)
    main(a[0], float(a[1]), a[2], int(a[3]) if len(a) > 3 else 8, int(a[4]) if len(a) > 4 else 0)
