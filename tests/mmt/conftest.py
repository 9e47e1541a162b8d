"""Small ShapesWorld data and tiny models for the MMT tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def shapes_data():
    from alignlab.data.shapes import ShapesConfig, ShapesWorld
    from alignlab.mmt.train import build_tokenizers, pairs_from_shapes

    world = ShapesWorld(ShapesConfig(polysemous_rate=0.5))
    train = world.generate(60, 0, "train")
    test = world.generate(12, 0, "test")
    train_pairs = pairs_from_shapes(train)
    test_pairs = pairs_from_shapes(test, image_offset=len(train))
    src, tgt = build_tokenizers(train_pairs + test_pairs)
    return {
        "train": train,
        "test": test,
        "train_pairs": train_pairs,
        "test_pairs": test_pairs,
        "src": src,
        "tgt": tgt,
    }


@pytest.fixture(scope="session")
def tiny_encoder():
    """A visual encoder pretrained for a few steps (enough to test the plumbing, not recognition)."""
    from alignlab.mmt.model import default_image_config
    from alignlab.mmt.train import VisualPretrainConfig, pretrain_visual_encoder

    return pretrain_visual_encoder(
        VisualPretrainConfig(images=64, val_images=16, epochs=1, batch_size=32, image=default_image_config()),
        seed=0,
    )
