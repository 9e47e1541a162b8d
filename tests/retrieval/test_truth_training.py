"""Training on ShapesWorld never treats a true caption as a negative: batch masks from the truth evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignlab.data.pairs import from_shapes
from alignlab.data.shapes import ShapesConfig, ShapesWorld, evaluate
from alignlab.data.text import WordTokenizer
from alignlab.models.factory import build_model
from alignlab.retrieval.training import DataConfig, load_run_data
from alignlab.train.losses import InfoNCELoss
from alignlab.train.tasks import CrossMatchTask, DualContrastiveTask

SIZE = 32
TINY = {
    "image_size": SIZE,
    "width": 32,
    "embed_dim": 32,
    "image_channels": [8, 16, 32],
    "text_layers": 1,
    "heads": 2,
}


@pytest.fixture(scope="module")
def examples():
    return ShapesWorld(ShapesConfig(image_size=SIZE)).generate(48, seed=0, split="train")


@pytest.fixture(scope="module")
def task(examples):
    pairs = from_shapes(examples)  # truth relevance: training must still draw each image's own captions
    model = build_model("tiny-dual", TINY, WordTokenizer.build(pairs.captions))
    return DualContrastiveTask(model, pairs, InfoNCELoss(), batch_size=24, seed=1)


def test_batches_draw_own_captions_and_mask_exactly_the_true_pairs(task, examples):
    pairs = task.pairs
    shared = 0
    for index in range(task.num_batches(0)):
        images, texts, idx, positives = task.batch(0, index)
        caps = task._indices(0, index)[1]
        assert all(c in pairs.sources[i] for i, c in zip(idx, caps, strict=True))
        flat = [c.form for ex in examples for c in ex.captions]
        forms = [flat[c] for c in caps]
        expected = np.array([[evaluate(f, examples[int(i)].scene) for f in forms] for i in idx])
        assert np.array_equal(positives.numpy(), expected)
        assert positives.diagonal().all()
        shared += int(positives.sum()) - len(idx)
    assert shared > 0  # ShapesWorld batches do hold captions true of two images


def test_a_ranks_local_batch_carries_the_global_batch_mask(task):
    whole = task.batch(0, 0)
    for rank in range(2):
        local = task.local_batch(0, 0, rank, 2)
        assert torch.equal(local[3], whole[3]) and len(local[1]) == 12


def test_the_dual_loss_uses_the_mask(task):
    images, texts, idx, positives = task.batch(0, 0)
    model = build_model("tiny-dual", TINY, WordTokenizer.build(task.pairs.captions))
    with torch.no_grad():
        masked = float(task.loss(model, (images, texts, idx, positives))["contrastive_loss"])
        plain = float(
            task.loss(model, (images, texts, idx, torch.eye(len(idx), dtype=torch.bool)))["contrastive_loss"]
        )
    assert masked < plain  # removing true captions from the negatives lowers the loss


def test_the_cross_encoder_grid_masks_true_pairs(examples):
    pairs = from_shapes(examples, relevance="source")
    cfg = {k: v for k, v in TINY.items() if k != "embed_dim"} | {"fusion_layers": 1, "max_text_len": 16}
    model = build_model("tiny-cross", cfg, WordTokenizer.build(pairs.captions))
    task = CrossMatchTask(model, pairs, batch_size=12, seed=0)
    images, texts, idx, positives = task.batch(0, 0)
    assert int(positives.sum()) > len(idx)
    with torch.no_grad():
        masked = float(task.loss(model, (images, texts, idx, positives))["match_loss"])
        plain = float(
            task.loss(model, (images, texts, idx, torch.eye(len(idx), dtype=torch.bool)))["match_loss"]
        )
    assert masked < plain


def test_run_data_scores_dev_and_test_under_truth_and_trains_on_own_captions():
    data = load_run_data(DataConfig(train=20, val=10, test=10, image_size=SIZE))
    assert data["train"].relevance_kind == "source"
    assert data["val"].relevance_kind == data["test"].relevance_kind == "truth"
