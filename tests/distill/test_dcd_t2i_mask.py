"""DCD dual students: in the caption -> image term, an image the caption is true of is not a negative.

Near-duplicate ShapesWorld puts siblings in one batch, and a caption can be true of several of them; the
term used to push those images away as wrong answers (issue 15). ``t2i_mask_true=False`` keeps that
behaviour for ablation.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from alignlab.distill.dcd.train import ARMS, DCDDataConfig, DCDRunConfig, DCDTask, load_dcd_data
from alignlab.models.factory import build_model
from alignlab.train.loop import TrainConfig

TINY_DUAL = {"width": 32, "embed_dim": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2}
DATA = DCDDataConfig(train=72, val=24, test=24)


def _task(**kw) -> tuple[DCDTask, object]:
    cfg = replace(
        DCDRunConfig(
            student_config=dict(TINY_DUAL),
            data=DATA,
            pool_size=8,
            keep=3,
            threads=1,
            train=TrainConfig(epochs=1, batch_size=24),
        ),
        **ARMS["no-kd"],
        **kw,
    )
    train = load_dcd_data(DATA)["train"]
    torch.manual_seed(0)
    student = build_model("tiny-dual", TINY_DUAL)
    return DCDTask(cfg, student, train, None), student


def test_the_mask_marks_exactly_the_other_images_each_positive_caption_is_true_of():
    task, _ = _task()
    found = 0
    for index in range(task.num_batches(0)):
        b = task.batch(0, index)
        true = task.train.known_true(b.images, b.candidates[:, 0]).T
        np.fill_diagonal(true, False)
        assert b.t2i_true is not None and np.array_equal(b.t2i_true.numpy(), true)
        assert not b.t2i_true.diagonal().any()
        found += int(true.sum())
    assert found > 0  # near-duplicates: some captions are true of a sibling in the same batch


def test_masking_changes_the_loss_only_where_a_true_image_was_counted_wrong():
    masked, student = _task()
    plain, _ = _task(t2i_mask_true=False)
    b_masked = masked.batch(0, 0)
    b_plain = plain.batch(0, 0)
    assert b_plain.t2i_true is None
    with torch.no_grad():
        lm = masked.loss(student, b_masked)
        lp = plain.loss(student, b_plain)
    assert set(lm) == set(lp)
    total_m = sum(v for v in lm.values())
    total_p = sum(v for v in lp.values())
    # removing true images from a softmax's negatives can only lower each caption's cross-entropy
    assert float(total_m) < float(total_p)
