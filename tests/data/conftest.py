"""Fixtures for the data tests: tiny image files and small ShapesWorld splits."""

from __future__ import annotations

import pytest
from datahelpers import write_png


@pytest.fixture
def png():
    return write_png


@pytest.fixture(scope="module")
def shapes_splits():
    """ShapesWorld train/val/test examples with polysemous objects (made once per module)."""
    from alignlab.data.shapes import ShapesConfig, ShapesWorld

    world = ShapesWorld(ShapesConfig(polysemous_rate=0.5, negation_rate=0.2))
    return {
        "train": world.generate(7, seed=1, split="train"),
        "val": world.generate(3, seed=1, split="val"),
        "test": world.generate(5, seed=1, split="test"),
    }
