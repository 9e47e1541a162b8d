"""The encoding cache: each distinct caption / image is encoded once; disk shards keyed by model identity."""

from __future__ import annotations

import pytest
import torch

from alignlab.core.errors import ConfigError, DataError
from alignlab.models.cache import CachedEncoder, cached, dedupe, encode_unique_texts, model_identity
from alignlab.models.factory import load_model

CFG = {"width": 32, "embed_dim": 16, "image_size": 32, "image_channels": [8], "text_layers": 1}
TEXTS = ["a red circle", "a blue square", "a red circle", "two small stars", "a blue square", "a red circle"]


class Counting:
    """Wraps a dual encoder and records what reaches it."""

    def __init__(self, model):
        self.model = model
        self.text_calls: list[list[str]] = []
        self.image_calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    @property
    def identity(self) -> str:  # the wrapped model's: counting calls does not change the outputs
        return model_identity(self.model)

    def encode_texts(self, texts):
        self.text_calls.append(list(texts))
        return self.model.encode_texts(texts)

    def encode_images(self, images):
        self.image_calls.append(len(images))
        return self.model.encode_images(images)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return load_model("tiny-dual", config=CFG, texts=TEXTS)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_duplicate_captions_are_encoded_once_in_the_order_asked(model):
    counting = Counting(model)
    enc = CachedEncoder(counting)
    out = enc.encode_texts(TEXTS)
    assert counting.text_calls == [["a red circle", "a blue square", "two small stars"]]
    torch.testing.assert_close(out, model.encode_texts(TEXTS), atol=1e-6, rtol=1e-5)
    assert torch.equal(out[0], out[2]) and torch.equal(out[0], out[5]) and torch.equal(out[1], out[4])
    enc.encode_texts(["two small stars", "a new caption"])  # only the new one reaches the model
    assert counting.text_calls[-1] == ["a new caption"]
    assert enc.stats["text_requests"] == 8 and enc.stats["text_encoded"] == 4


def test_identical_images_are_encoded_once(model):
    imgs = _images(3)
    batch = torch.cat([imgs, imgs[:2]])  # images 3 and 4 repeat 0 and 1
    counting = Counting(model)
    enc = CachedEncoder(counting)
    out = enc.encode_images(batch)
    assert counting.image_calls == [3]
    torch.testing.assert_close(out, model.encode_images(batch), atol=1e-6, rtol=1e-5)
    assert enc.stats["image_unique"] == 3 and enc.stats["image_encoded"] == 3


def test_cached_scores_equal_the_models_scores(model):
    imgs = _images(4)
    enc = cached(model)
    assert isinstance(enc, CachedEncoder)
    assert (enc.name, enc.score_semantics, enc.score_scale) == (
        model.name,
        model.score_semantics,
        model.score_scale,
    )
    torch.testing.assert_close(enc.score(imgs, TEXTS), model.score(imgs, TEXTS), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        enc.score_pairs(imgs, TEXTS[:4]), model.score_pairs(imgs, TEXTS[:4]), atol=1e-5, rtol=1e-5
    )


def test_disk_cache_is_reused_by_a_later_run(model, tmp_path):
    first = CachedEncoder(model, tmp_path)
    a = first.encode_texts(TEXTS)
    imgs = _images(2)
    ia = first.encode_images(imgs)
    folder = tmp_path / first.identity[:24]
    assert (folder / "identity.json").is_file() and list(folder.glob("text-*.safetensors"))

    counting = Counting(model)
    second = CachedEncoder(counting, tmp_path)
    assert second.identity == first.identity
    b = second.encode_texts(list(reversed(TEXTS)))
    ib = second.encode_images(imgs)
    assert counting.text_calls == [] and counting.image_calls == []
    assert torch.equal(b, a.flip(0)) and torch.equal(ib, ia)
    assert second.stats["text_disk_hits"] == 3 and second.stats["text_encoded"] == 0


def test_different_weights_never_share_cached_embeddings(model, tmp_path):
    torch.manual_seed(1)
    other = load_model("tiny-dual", config=CFG, texts=TEXTS)
    assert model_identity(other) != model_identity(model)
    CachedEncoder(model, tmp_path).encode_texts(TEXTS)
    counting = Counting(other)
    out = CachedEncoder(counting, tmp_path).encode_texts(TEXTS)
    assert counting.text_calls  # nothing was taken from the first model's shards
    torch.testing.assert_close(out, other.encode_texts(TEXTS), atol=1e-6, rtol=1e-5)
    assert len(list(tmp_path.iterdir())) == 2


def test_torn_shard_is_a_clear_error(model, tmp_path):
    CachedEncoder(model, tmp_path).encode_texts(TEXTS)
    shard = next(tmp_path.glob("*/text-*.safetensors"))
    shard.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="delete the file"):
        CachedEncoder(model, tmp_path).encode_texts(TEXTS)


def test_cross_encoders_pass_through_and_cannot_be_wrapped():
    cross = load_model(
        "tiny-cross", config={"width": 32, "image_size": 32, "image_channels": [8]}, texts=TEXTS
    )
    assert cached(cross) is cross
    with pytest.raises(ConfigError, match="not a dual encoder"):
        CachedEncoder(cross)


def test_dedupe_helpers(model):
    assert dedupe(["b", "a", "b", "c", "a"]) == ([0, 1, 3], [0, 1, 0, 2, 1])
    torch.testing.assert_close(
        encode_unique_texts(model, TEXTS), model.encode_texts(TEXTS), atol=1e-6, rtol=1e-5
    )
    assert CachedEncoder(model).encode_texts([]).shape == (0, 16)
