"""The translation model: tokenizer, fusion variants, cached decoding = teacher forcing, visual encoder."""

from __future__ import annotations

import pytest
import torch

from alignlab.core.errors import ConfigError
from alignlab.mmt.model import MMTConfig, MMTModel, TargetTokenizer, VisualEncoder


def test_char_tokenizer_round_trip_and_unknowns():
    tok = TargetTokenizer.build(["一只蝙蝠", "一只鹤", "一只鹤"])
    assert tok.vocab[:6] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "一", "只"]
    ids = tok.encode(["一只鹤", "鹤"], max_len=8)
    assert ids.shape == (2, 5) and ids[0, 0] == tok.BOS and ids[1, 2] == tok.EOS
    assert tok.decode(ids[0]) == "一只鹤" and tok.decode(tok.encode(["一只猫"], 8)[0]) == "一只□"
    assert tok.encode(["一只蝙蝠"], max_len=4)[0].tolist() == [2, 4, 5, 3]  # truncated, EOS kept


def test_word_tokenizer_makes_a_sense_word_one_unit_and_saves_its_unit(tmp_path):
    texts = ["一只红色的蝙蝠在一个正方形的左边", "有一根球棒"]
    tok = TargetTokenizer.build(texts, unit="word")
    ids = tok.encode(texts[:1], 32)[0].tolist()
    assert tok.vocab[ids[4]] == "蝙蝠" and len(ids) < len(texts[0]) + 2  # shorter than by characters
    assert tok.decode(ids) == texts[0]
    tok.save(tmp_path / "t.json")
    back = TargetTokenizer.load(tmp_path / "t.json")
    assert back.unit == "word" and back.vocab == tok.vocab


def _model(shapes_data, fusion, **kw):
    torch.manual_seed(0)
    m = MMTModel(
        MMTConfig(
            width=32,
            heads=2,
            encoder_layers=1,
            decoder_layers=2,
            fusion=fusion,
            visual_dim=16,
            dropout=0.0,
            **kw,
        ),
        shapes_data["src"],
        shapes_data["tgt"],
    )
    with torch.no_grad():  # large random weights: decoding produces varied, non-trivial ids
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m.eval()


@pytest.mark.parametrize("fusion", ["none", "prefix", "gated"])
def test_cached_decoding_steps_equal_teacher_forcing(shapes_data, fusion):
    m = _model(shapes_data, fusion)
    pairs = shapes_data["test_pairs"][:6]
    ids, mask = m.encode_source([p.en for p in pairs])
    v = torch.randn(6, 10, 16)
    y = shapes_data["tgt"].encode([p.zh for p in pairs], 40)
    memory, pad = m.encode(ids, mask, v)
    full = m.decode_logits(memory, pad, y)
    kvs, mem_mask = m._memory_kv(memory, pad)
    caches = [{} for _ in m.decoder]
    for t in range(y.shape[1]):  # one position at a time, with cached keys/values
        h = m.tgt_embed(y[:, t : t + 1]) + m.tgt_pos[:, t : t + 1]
        for layer, kv, cache in zip(m.decoder, kvs, caches):
            h = layer(h, kv, mem_mask, cache)
        assert torch.allclose(m.out(m.dec_norm(h))[:, 0], full[:, t], atol=1e-4), t
    ys = m.greedy_ids(ids, mask, v, max_len=12)  # greedy output is the argmax of its own teacher forcing
    logits = m(ids, mask, ys, v)
    logits[..., [TargetTokenizer.PAD, TargetTokenizer.BOS]] = float("-inf")
    keep = ys[:, 1:] != TargetTokenizer.PAD
    assert torch.equal(logits.argmax(-1)[keep], ys[:, 1:][keep])


def test_image_models_depend_on_the_image_and_text_models_do_not(shapes_data):
    ids, mask = _model(shapes_data, "none").encode_source(["a red bat", "a blue crane"])
    y = shapes_data["tgt"].encode(["有一只红色的蝙蝠", "有一只蓝色的鹤"], 32)
    v1, v2 = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    for fusion in ("prefix", "gated"):
        m = _model(shapes_data, fusion)
        assert not torch.allclose(m.sequence_logprob(ids, mask, y, v1), m.sequence_logprob(ids, mask, y, v2))
        with pytest.raises(ConfigError, match="no visual tokens"):
            m(ids, mask, y, None)
        with pytest.raises(ConfigError, match="visual tokens must be"):
            m(ids, mask, y, torch.randn(2, 10, 8))
    text = _model(shapes_data, "none")
    assert torch.equal(text.sequence_logprob(ids, mask, y, v1), text.sequence_logprob(ids, mask, y, v2))


def test_loss_is_a_dict_of_named_terms_and_ignores_padding(shapes_data):
    m = _model(shapes_data, "gated")
    ids, mask = m.encode_source(["a red bat", "a blue crane to the left of a small star"])
    y = shapes_data["tgt"].encode(["有一只红色的蝙蝠", "一台蓝色的起重机在一个小星形的左边"], 40)
    v = torch.randn(2, 10, 16)
    terms = m.loss(ids, mask, y, v)
    assert list(terms) == ["ce_loss"] and terms["ce_loss"].ndim == 0
    padded = torch.cat([y, torch.zeros(2, 5, dtype=torch.long)], dim=1)  # extra padding changes nothing
    assert torch.allclose(m.loss(ids, mask, padded, v)["ce_loss"], terms["ce_loss"], atol=1e-6)


def test_unknown_fusion_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown fusion"):
        MMTConfig(fusion="late")


def test_visual_encoder_gives_cls_plus_3x3_cell_tokens():
    enc = VisualEncoder()
    imgs = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    f = enc.features(imgs)
    assert f.shape == (3, 10, enc.width) and enc.n_tokens == 10
    # the first cell token pools only the top-left part of the grid: changing the bottom-right corner
    # leaves it (nearly) alone when there is no attention mixing, so use the CNN grid directly
    assert torch.isfinite(f).all()
