"""open_clip adapter. open_clip needs torchvision, which does not import beside this project's torch, so the
tests that build open_clip models skip unless the ``openclip`` extra is installed; the error a user gets
without it is tested always."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from alignlab.core.errors import ConfigError, DependencyError
from alignlab.models.factory import load_model


def _open_clip():
    try:
        import open_clip
    except Exception as e:  # ImportError, or torchvision failing to load beside this torch
        pytest.skip(
            f"open_clip is not importable here ({type(e).__name__}: {e}); install the openclip extra "
            "(torch==2.14.1 + torchvision==0.29.1 on x86_64) to run these tests"
        )
    return open_clip


TEXTS = ["a red circle", "a blue square left of a green triangle", "two small stars", "a red circle"]
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 30, "layers": 2, "width": 32, "patch_size": 6, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def test_missing_open_clip_is_a_dependency_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` fail
    with pytest.raises(DependencyError) as e:
        load_model("open_clip:ViT-B-32@laion2b_s34b_b79k")
    assert "alignlab[openclip]" in str(e.value) and "torchvision" in str(e.value)


def test_open_clip_spec_needs_weights():
    with pytest.raises(ConfigError, match="needs an architecture and pretrained weights"):
        load_model("open_clip:ViT-B-32")


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    open_clip = _open_clip()
    root = tmp_path_factory.mktemp("tiny_open_clip")
    cfg = root / "alignlab-tiny-oc.json"
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("alignlab-tiny-oc")
    weights = root / "tiny.pt"
    torch.save(model.state_dict(), weights)
    return open_clip, weights


def test_open_clip_scores_equal_its_own_encoders(tiny_open_clip):
    from PIL import Image

    open_clip, weights = tiny_open_clip
    adapter = load_model(f"open_clip:alignlab-tiny-oc@{weights}")
    model, _, preprocess = open_clip.create_model_and_transforms("alignlab-tiny-oc", pretrained=str(weights))
    model.eval()
    tokenizer = open_clip.get_tokenizer("alignlab-tiny-oc")
    imgs = torch.randint(
        0, 256, (3, 3, 40, 44), generator=torch.Generator().manual_seed(2), dtype=torch.uint8
    )
    pil = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in imgs]
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(p) for p in pil]), normalize=True)
        txt = model.encode_text(tokenizer(TEXTS), normalize=True)
        ref = model.logit_scale.exp() * img @ txt.T
    assert adapter.score_semantics == "cosine" and adapter.is_dual
    torch.testing.assert_close(adapter.score(imgs, TEXTS), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(adapter.score(pil, TEXTS), ref, atol=1e-5, rtol=1e-5)


def test_open_clip_sigmoid_model_scores_are_logits_with_its_bias(tiny_open_clip, tmp_path):
    open_clip, _ = tiny_open_clip
    cfg = tmp_path / "alignlab-tiny-oc-sig.json"
    cfg.write_text(json.dumps({**TINY, "init_logit_bias": -10.0}))
    open_clip.add_model_config(cfg)
    weights = tmp_path / "sig.pt"
    torch.save(open_clip.create_model("alignlab-tiny-oc-sig").state_dict(), weights)
    adapter = load_model(f"open_clip:alignlab-tiny-oc-sig@{weights}")
    assert adapter.score_semantics == "logit" and adapter.score_bias == pytest.approx(-10.0)
    imgs = torch.randint(
        0, 256, (2, 3, 30, 30), generator=torch.Generator().manual_seed(3), dtype=torch.uint8
    )
    cos = adapter.encode_images(imgs) @ adapter.encode_texts(TEXTS).T
    torch.testing.assert_close(adapter.score(imgs, TEXTS), adapter.score_scale * cos - 10.0)


def test_open_clip_tag_that_is_not_cached_fails_without_network(tiny_open_clip, tmp_path):
    # Downloads are off: open_clip runs with the hub offline and URL fetches refused (the conftest also
    # fails any socket connection), so an uncached tag ends in a DependencyError.
    with pytest.raises(DependencyError, match="--allow-download"):
        load_model("open_clip:ViT-B-32@openai", cache_dir=str(tmp_path))


def test_open_clip_unknown_architecture_or_tag(tiny_open_clip):
    with pytest.raises(ConfigError, match="unknown open_clip architecture"):
        load_model("open_clip:ViT-B-33@openai")
    with pytest.raises(ConfigError, match="tags of ViT-B-32"):
        load_model("open_clip:ViT-B-32@no-such-tag")
