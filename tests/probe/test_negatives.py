"""Compositional hard negatives and the training tasks that use them."""

from __future__ import annotations

import numpy as np
import torch

from alignlab.data.pairs import from_shapes
from alignlab.data.shapes import Scene, ShapesConfig, ShapesWorld
from alignlab.probe.build_shapes import caption_truth
from alignlab.probe.negatives import (
    CrossHardNegativeTask,
    DualHardNegativeTask,
    ProbeTrainConfig,
    make_hard_negative,
    np_spans,
    train_probe_model,
)
from alignlab.probe.perturb import tokenize
from alignlab.train.loop import TrainConfig

from .conftest import TINY_CROSS, TINY_DUAL


def test_swaps_exchange_whole_attributes_and_relation_arguments():
    rng = np.random.default_rng(0)
    assert make_hard_negative("an orange circle and a red square", None, rng, ("swap_attribute",)) == (
        "a red circle and an orange square",
        "swap_attribute",
    )
    assert make_hard_negative(
        "the big circle is left of a small blue square", None, rng, ("swap_relation",)
    ) == ("a small blue square is left of the big circle", "swap_relation")
    assert make_hard_negative("a red circle", None, rng, ("swap_attribute", "swap_relation")) is None
    assert np_spans(tokenize("there is a big red circle above the star")) == [(2, 6), (7, 9)]


def test_hard_negatives_are_never_true_of_the_image():
    world = ShapesWorld(ShapesConfig(negation_rate=0.4))
    rng = np.random.default_rng(0)
    kinds = set()
    for ex in world.generate(40, 3, "train"):
        for c in ex.captions:
            made = make_hard_negative(c.en, ex.scene, rng)
            assert made is not None
            assert not caption_truth(made[0], ex.scene) and made[0] != c.en
            kinds.add(made[1])
    assert kinds == {"swap_attribute", "swap_relation", "shuffle"}


def _pairs(n=24):
    return from_shapes(ShapesWorld(ShapesConfig()).generate(n, 0, "train"))


def test_dual_task_adds_one_text_column_per_hard_negative():
    from alignlab.models.factory import build_model

    pairs = _pairs()
    model = build_model("tiny-dual", TINY_DUAL, texts=pairs.captions)
    with_neg = DualHardNegativeTask(model, pairs, 8, seed=0, hard_negatives=True)
    plain = DualHardNegativeTask(model, pairs, 8, seed=0, hard_negatives=False)
    b1, b0 = with_neg.batch(0, 0), plain.batch(0, 0)
    assert b1[1] == b0[1] and all(n is not None for n in b1[3]) and all(n is None for n in b0[3])
    assert with_neg.batch(0, 0)[3] == b1[3]  # deterministic in (seed, epoch, index)
    l1, l0 = with_neg.loss(model, b1)["contrastive_loss"], plain.loss(model, b0)["contrastive_loss"]
    assert torch.isfinite(l1) and l1 > l0  # extra negatives can only add to the image->text loss


def test_cross_task_scores_sampled_candidates_and_trains():
    from alignlab.models.factory import build_model

    pairs = _pairs()
    model = build_model("tiny-cross", TINY_CROSS, texts=pairs.captions)
    task = CrossHardNegativeTask(model, pairs, 8, seed=0, hard_negatives=True, sampled_negatives=3)
    loss = task.loss(model, task.batch(0, 0))["match_loss"]
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in model.fusion.parameters())


def test_training_is_deterministic_for_a_seed(tmp_path):
    pairs = _pairs(32)
    cfg = ProbeTrainConfig(
        arch="tiny-dual",
        model_config=TINY_DUAL,
        hard_negatives=True,
        train=TrainConfig(epochs=1, batch_size=16, lr=2e-3, log_every=1),
    )
    a, info = train_probe_model(cfg, pairs, tmp_path / "a", resume=False)
    b, _ = train_probe_model(cfg, pairs, tmp_path / "b", resume=False)
    assert info["steps"] == 2 and sum(info["negatives"].values()) == 32
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k
    # A finished run folder is loaded, not retrained.
    c, again = train_probe_model(cfg, pairs, tmp_path / "a")
    assert again["negatives"] == {} and torch.equal(
        next(iter(c.state_dict().values())), next(iter(a.state_dict().values()))
    )


def test_scenes_travel_with_the_pairs():
    pairs = _pairs(4)
    assert Scene.from_dict(pairs.image_meta[0]["scene"]).objects


def test_a_hard_negative_found_true_is_dropped_and_counted():
    world = ShapesWorld(ShapesConfig())
    stats: dict[str, int] = {}
    for ex in world.generate(60, 5, "train"):
        for c in ex.captions:
            made = make_hard_negative(c.en, ex.scene, np.random.default_rng(0), stats=stats)
            assert made is None or not caption_truth(made[0], ex.scene)
    # "a red circle and a red square" swapped is itself: a swap that stays true happens and is redrawn.
    assert stats.get("dropped_true", 0) > 0


def test_a_hard_negative_true_of_another_batch_image_is_masked_in_the_dual_loss():
    from alignlab.models.factory import build_model

    pairs = _pairs(32)
    model = build_model("tiny-dual", TINY_DUAL, texts=pairs.captions)
    task = DualHardNegativeTask(model, pairs, 16, seed=0, hard_negatives=True)
    images, texts, idx, negs, positives, negs_true = task.batch(0, 0)
    hard = [n for n in negs if n is not None]
    scenes = [Scene.from_dict(pairs.image_meta[int(i)]["scene"]) for i in idx]
    expected = [[caption_truth(h, s) for h in hard] for s in scenes]
    assert negs_true.tolist() == expected
    for r, n in enumerate(negs):  # a hard negative is false of its own image
        if n is not None:
            assert not negs_true[r, hard.index(n)]
    assert torch.isfinite(
        task.loss(model, (images, texts, idx, negs, positives, negs_true))["contrastive_loss"]
    )
