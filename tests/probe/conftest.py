"""Fixtures for the probe tests: one small ShapesWorld probe set built once per session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny models run several times faster on one thread on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shapes_probe(tmp_path_factory):
    """30 items per category of every task (420 items), seed 0."""
    from alignlab.probe.build_shapes import ShapesProbeConfig, build_shapes_probe
    from alignlab.probe.items import load_probe

    out = tmp_path_factory.mktemp("probe") / "shapes"
    build_shapes_probe(ShapesProbeConfig(items_per_category=30, seed=0), out)
    return load_probe(out)


@pytest.fixture(scope="session")
def shapes_images(shapes_probe):
    from alignlab.probe.evaluate import load_all_images

    return load_all_images(shapes_probe)


TINY_DUAL = {"width": 32, "embed_dim": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2}
TINY_CROSS = {"width": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2, "fusion_layers": 1}
