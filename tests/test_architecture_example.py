"""docs/architecture.md's "Adding a model" example runs as written: registered, loaded by name, evaluated."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from alignlab.data.pairs import ImageTextPairs
from alignlab.models.factory import SOURCES, load_model
from alignlab.retrieval.evaluate import evaluate_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.fixture
def fake_mylab(monkeypatch):
    """A stand-in for the lab's package: images embed as their mean colour, texts as a colour word."""
    colours = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}

    class Model:
        def embed_image(self, pil):
            return np.asarray(pil, dtype=np.float32).reshape(-1, 3).mean(0)

        def embed_text(self, text):
            return np.asarray(colours[text.split()[1]], dtype=np.float32)

    monkeypatch.setitem(sys.modules, "mylab", types.SimpleNamespace(load=lambda name: Model()))
    yield
    SOURCES._items.pop("mylab", None)  # the registry is process-wide: leave it as it was


def test_the_documented_model_registers_loads_and_ranks(fake_mylab):
    code = re.search(r"## Adding a model.*?```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(
        1
    )
    exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})
    model = load_model("mylab:checkpoint-name")
    images = np.zeros((3, 8, 8, 3), np.uint8)
    for i in range(3):
        images[i, :, :, i] = 255  # a red, a green and a blue image
    pairs = ImageTextPairs(
        ["r", "g", "b"], ["a red one", "a green one", "a blue one"], [[0], [1], [2]], image_array=images
    )
    report = evaluate_model(model, pairs)
    assert report.metrics["i2t_R@1"] == 100.0 and report.metrics["t2i_R@1"] == 100.0
    # the same model with the colours swapped in the captions ranks the wrong image first
    swapped = ImageTextPairs(
        ["r", "g", "b"], ["a green one", "a blue one", "a red one"], [[0], [1], [2]], image_array=images
    )
    assert evaluate_model(model, swapped).metrics["i2t_R@1"] == 0.0


def test_the_documented_scoring_only_model_is_refused_by_a_trainer_before_any_run_folder(
    fake_mylab, tmp_path
):
    from alignlab.core.errors import ModelError
    from alignlab.retrieval.training import DataConfig, RetrievalRunConfig, run_retrieval

    code = re.search(r"## Adding a model.*?```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(
        1
    )
    exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})
    cfg = RetrievalRunConfig(
        model="mylab:checkpoint-name", data=DataConfig(train=8, val=4, test=4, image_size=32)
    )
    with pytest.raises(ModelError, match="cannot be trained"):
        run_retrieval(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
