"""Tiny models and the factory: the scorer contract, save/load round trips and clear errors."""

from __future__ import annotations

import pytest
import torch

from alignlab.core.errors import ConfigError, ModelError
from alignlab.models.base import check_score_shape
from alignlab.models.factory import build_model, load_checkpoint, load_model, save_model

SMALL = {"width": 32, "image_channels": [8, 16], "text_layers": 1, "heads": 2}
TEXTS = [
    "a red circle",
    "a blue square to the left of a green star",
    "there are two objects",
    "the bat is not red",
]


def images(n=3, seed=0):
    return torch.randint(
        0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_dual_score_is_scaled_cosine_of_normalised_embeddings():
    m = build_model("tiny-dual", {**SMALL, "embed_dim": 16}).eval()
    img, txt = m.encode_images(images()), m.encode_texts(TEXTS)
    assert img.shape == (3, 16) and txt.shape == (4, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3)) and torch.allclose(txt.norm(dim=-1), torch.ones(4))
    assert torch.allclose(m.score(images(), TEXTS), m.score_scale * img @ txt.T, atol=1e-6)
    assert m.score_semantics == "cosine" and m.is_dual


def test_encoding_in_batches_equals_encoding_at_once():
    m = build_model("tiny-dual", SMALL).eval()
    whole = m.encode_images(images(5))
    m.encode_batch = 2
    assert torch.allclose(whole, m.encode_images(images(5)), atol=1e-6)
    assert torch.allclose(m.encode_texts(TEXTS * 3)[:4], m.encode_texts(TEXTS), atol=1e-6)


def test_cross_encoder_grid_pairs_and_forward_agree():
    m = build_model("tiny-cross", {**SMALL, "fusion_layers": 1, "pair_chunk": 5}).eval()
    grid = m.score(images(3), TEXTS[:3])
    assert grid.shape == (3, 3) and m.score_semantics == "logit" and not m.is_dual
    diag = m.score_pairs(images(3), TEXTS[:3])
    assert torch.allclose(grid.diag(), diag, atol=1e-5)
    x = m.image_tower.preprocess(images(3))
    with torch.no_grad():
        assert torch.allclose(m.forward_grid(x, *m.tokenize(TEXTS[:3])), grid, atol=1e-5)


def test_images_of_another_size_are_resized_by_the_model():
    m = build_model("tiny-dual", SMALL).eval()
    big = torch.randint(0, 256, (2, 3, 96, 80), dtype=torch.uint8)
    assert m.encode_images(big).shape[0] == 2


@pytest.mark.parametrize("arch", ["tiny-dual", "tiny-cross"])
def test_save_and_load_round_trip_gives_identical_scores(tmp_path, arch):
    m = build_model(arch, SMALL, texts=TEXTS).eval()
    save_model(m, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    loaded = load_model(f"ckpt:{tmp_path / 'm'}")
    assert torch.equal(m.score(images(), TEXTS), loaded.score(images(), TEXTS))
    assert loaded.tokenizer.vocab == m.tokenizer.vocab


def test_factory_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'tiny-duel'"):
        load_model("tiny-duel")
    with pytest.raises(ModelError, match="model.json missing"):
        load_checkpoint(tmp_path)
    m = build_model("tiny-dual", SMALL)
    save_model(m, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read weights"):
        load_checkpoint(tmp_path / "m")
    with pytest.raises(ConfigError, match="unknown key 'widht'"):
        build_model("tiny-dual", {"widht": 3})


def test_score_shape_check_rejects_wrong_shapes_and_nan():
    with pytest.raises(ModelError, match=r"shape \(2, 3\), expected \(3, 2\)"):
        check_score_shape(torch.zeros(2, 3), 3, 2, "m")
    with pytest.raises(ModelError, match="NaN"):
        check_score_shape(torch.tensor([[float("nan")]]), 1, 1, "m")


def test_a_single_string_is_not_silently_split_into_characters():
    m = build_model("tiny-dual", SMALL)
    with pytest.raises(ModelError, match="list of strings"):
        m.encode_texts("a red circle")


def test_default_image_tower_sees_full_resolution_and_keeps_an_8x8_grid():
    from alignlab.models.tiny import ImageTower, TinyImageConfig

    tower = ImageTower(TinyImageConfig()).eval()
    first = tower.cnn[0]
    assert first.stride == (1, 1) and first.in_channels == 3  # the stem runs at 64 x 64
    strides = [m.stride[0] for m in tower.cnn if isinstance(m, torch.nn.Conv2d)]
    assert strides.count(2) == 3 and len(strides) == 7  # stem + 3 stages of (stride 2, stride 1)
    with torch.no_grad():
        tokens, pooled = tower(tower.preprocess(images(2)))
    assert tokens.shape == (2, 1 + 8 * 8, 128) and pooled.shape == (2, 128)


def test_norm_option_picks_batch_or_group_norm_and_bad_settings_are_rejected():
    from alignlab.models.tiny import ImageTower, TinyImageConfig

    kinds = {
        n: {type(m).__name__ for m in ImageTower(TinyImageConfig(norm=n)).cnn} for n in ("batch", "group")
    }
    assert "BatchNorm2d" in kinds["batch"] and "GroupNorm" not in kinds["batch"]
    assert "GroupNorm" in kinds["group"] and "BatchNorm2d" not in kinds["group"]
    no_stem = ImageTower(TinyImageConfig(stem=0, stage_depth=1))
    assert [m.stride[0] for m in no_stem.cnn if isinstance(m, torch.nn.Conv2d)] == [2, 2, 2]
    for bad in ({"norm": "layer"}, {"stage_depth": 0}, {"stem": -1}):
        with pytest.raises(ValueError):
            TinyImageConfig(**bad)


def test_after_training_steps_an_image_scores_the_same_alone_or_in_a_batch():
    # BatchNorm: training updates running statistics; in eval mode they, not the batch, normalise.
    m = build_model("tiny-dual", SMALL, texts=TEXTS)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for seed in range(2):
        out = m(m.image_tower.preprocess(images(4, seed)), *m.tokenize(TEXTS))
        loss = -(out["image_emb"] @ out["text_emb"].T).diag().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    batch = m.encode_images(images(4, 7))
    alone = torch.cat([m.encode_images(images(4, 7)[i : i + 1]) for i in range(4)])
    assert torch.allclose(batch, alone, atol=1e-5)
    bn = next(x for x in m.image_tower.cnn if isinstance(x, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 2 and bn.running_mean.abs().sum() > 0  # the statistics were updated


def _trained_looking(model):
    """Move every parameter off its initial value (a fresh model's zero-initialised head would hide bugs)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model


def test_cross_encoder_with_a_dual_score_starts_as_the_dual_it_copies():
    dual = _trained_looking(build_model("tiny-dual", {**SMALL, "embed_dim": 16}, texts=TEXTS)).eval()
    cross = build_model(
        "tiny-cross",
        {
            **SMALL,
            "fusion_layers": 1,
            "dual_score": True,
            "embed_dim": 16,
            "head_pool": "mean",
            "pair_chunk": 5,
        },
        dual.tokenizer,
    ).eval()
    cross.load_dual(dual)
    # the fusion head starts at zero: the cross encoder's scores are the dual's, grid and pairs alike
    assert torch.allclose(cross.score(images(3), TEXTS), dual.score(images(3), TEXTS), atol=1e-5)
    assert torch.allclose(
        cross.score_pairs(images(3), TEXTS[:3]), dual.score(images(3), TEXTS[:3]).diag(), atol=1e-5
    )
    # once the head is not zero the fusion adds to the dual score, and only it differs between the two
    with torch.no_grad():
        cross.head[1].bias.fill_(0.5)
    x = cross.image_tower.preprocess(images(3))
    ids, mask = cross.tokenize(TEXTS[:3])
    with torch.no_grad():
        img, _ = cross.image_tower(x)
        txt, _ = cross.text_tower(ids, mask)
        fused = cross.fuse(img, txt, mask)
        assert torch.allclose(fused, cross.dual_logits(img, txt, mask) + cross.fusion_logits(img, txt, mask))
    assert torch.allclose(cross.score(images(3), TEXTS[:3]).diag(), fused, atol=1e-5)
    assert not torch.allclose(cross.score(images(3), TEXTS), dual.score(images(3), TEXTS), atol=1e-3)


def test_cross_encoder_defaults_keep_the_old_layout_and_load_dual_refuses_other_shapes(tmp_path):
    plain = build_model("tiny-cross", {**SMALL, "fusion_layers": 1}, texts=TEXTS)
    assert not any(k.startswith(("image_proj", "text_proj", "logit_scale")) for k in plain.state_dict())
    # a dual-score cross encoder saves and loads like any tiny model
    m = build_model("tiny-cross", {**SMALL, "fusion_layers": 1, "dual_score": True}, texts=TEXTS).eval()
    save_model(_trained_looking(m), tmp_path / "m")
    assert torch.equal(m.score(images(), TEXTS), load_model(f"ckpt:{tmp_path / 'm'}").score(images(), TEXTS))
    wide = build_model("tiny-dual", {**SMALL, "width": 64}, texts=TEXTS)
    with pytest.raises(ModelError, match="shapes"):
        m.load_dual(wide)
    with pytest.raises(ModelError, match="shapes"):
        m.load_dual(build_model("tiny-dual", {**SMALL, "pool": "cls"}, texts=TEXTS))
    with pytest.raises(ModelError, match="embed_dim"):
        m.load_dual(build_model("tiny-dual", {**SMALL, "embed_dim": 8}, texts=TEXTS))
    with pytest.raises(ConfigError, match="head_pool"):
        build_model("tiny-cross", {**SMALL, "head_pool": "max"})


# --- the training contract (models/base.py) ------------------------------------------------------------


def _contract_models():
    from alignlab.data.text import WordTokenizer
    from alignlab.models.tiny import TinyCrossConfig, TinyCrossEncoder, TinyDualConfig, TinyDualEncoder

    tok = WordTokenizer.build(["a red circle left of a blue square", "two green stars", "one big triangle"])
    torch.manual_seed(0)
    dual = TinyDualEncoder(TinyDualConfig(image_size=32, width=32, embed_dim=16, heads=2), tok)
    cross = TinyCrossEncoder(
        TinyCrossConfig(image_size=32, width=32, heads=2, dual_score=True, embed_dim=16, pair_chunk=5), tok
    )
    with torch.no_grad():  # a fusion head that is not zero, so the fusion part counts in the scores
        cross.head[1].weight.normal_(0, 0.5)
    images = torch.randint(
        0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
    texts = ["a red circle left of a blue square", "two green stars", "one big triangle", "a circle"]
    return dual.eval(), cross.eval(), images, texts


def test_tiny_cross_contract_grid_equals_the_pairwise_fusion():
    from alignlab.models.base import TokenStates

    _, cross, images, texts = _contract_models()
    img = cross.image_states(cross.preprocess_images(images))
    txt = cross.text_states(cross.tokenize(texts))
    grid = cross.fuse_grid(img, txt)  # pair_chunk 5 < 3 x 4: several fusion passes
    assert grid.shape == (3, 4)
    torch.testing.assert_close(grid, cross.score(images, texts))
    # Row selection copies values: one pair at a time gives the grid's numbers (up to the last bits).
    single = torch.stack(
        [cross.fuse_pairs(img.select([i]), txt.select([j]))[0] for i in range(3) for j in range(4)]
    )
    torch.testing.assert_close(single.view(3, 4), grid, atol=1e-5, rtol=1e-5)
    # Trimming shared padding changes the padded length only, not the scores (up to rounding).
    trimmed = txt.select([1, 2], trim=True)
    assert trimmed.length < txt.length
    torch.testing.assert_close(
        cross.fuse_pairs(img.select([0, 0]), trimmed), grid[0, 1:3], atol=1e-5, rtol=1e-5
    )
    # Padding back and concatenating keep the rows.
    both = TokenStates.cat([trimmed, txt.select([3])])
    assert len(both) == 3 and both.length == max(trimmed.length, txt.length)
    torch.testing.assert_close(
        cross.fuse_pairs(img.select([1, 1, 1]), both), grid[1, 1:4], atol=1e-5, rtol=1e-5
    )


def test_tiny_contract_freezes_what_reads_the_towers_alone():
    dual, cross, _, _ = _contract_models()
    cross.set_encoders_trainable(False)
    frozen = {id(p) for p in cross.encoder_parameters()}
    assert id(cross.logit_scale) in frozen and id(cross.image_proj.weight) in frozen  # the dual score
    assert all(not p.requires_grad for p in cross.image_tower.parameters())
    assert all(p.requires_grad for p in cross.fusion.parameters()) and cross.head[1].weight.requires_grad
    dual.set_encoders_trainable(False)
    assert all(not p.requires_grad for p in dual.text_tower.parameters())
    assert dual.logit_scale.requires_grad and dual.image_proj.weight.requires_grad


def test_tiny_dual_contract_pieces_equal_forward():
    dual, _, images, texts = _contract_models()
    pixels = dual.preprocess_images(images)
    ids, mask = dual.tokenize(texts)
    out = dual(pixels, ids, mask)
    assert torch.equal(dual.embed_images(pixels), out["image_emb"])
    assert torch.equal(dual.embed_texts(dual.tokenize(texts)), out["text_emb"])
    scale, bias = dual.logit_params()
    assert bias is None and torch.equal(scale.clamp(max=100.0), out["logit_scale"])


def test_a_scorer_without_the_training_contract_says_so():
    from alignlab.core.errors import ModelError
    from alignlab.models.base import CrossEncoder, DualEncoder

    class Frozen(DualEncoder):
        name = "frozen"

        def encode_images(self, images):
            return torch.zeros(len(images), 2)

        def encode_texts(self, texts):
            return torch.zeros(len(texts), 2)

    with pytest.raises(ModelError, match="frozen cannot be trained"):
        Frozen().embed_images(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ModelError, match="cannot be trained"):
        Frozen().set_encoders_trainable(False)
    with pytest.raises(ModelError, match="cannot be trained"):
        CrossEncoder().image_states(torch.zeros(1, 3, 8, 8))
