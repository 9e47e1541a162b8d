"""Image helpers (Pillow -> uint8 tensors, resizing) and the word tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alignlab.core.errors import DataError
from alignlab.data.images import check_image, open_image, pil_to_uint8, resize, stack_images, to_float
from alignlab.data.text import CLS, PAD, UNK, WordTokenizer, split_words


def _pil(w, h, colour=(10, 20, 30)):
    return Image.new("RGB", (w, h), colour)


def test_stack_images_of_pillow_images_gives_uint8_b3hw():
    t = stack_images([_pil(8, 6), _pil(8, 6, (1, 2, 3))])
    assert t.dtype == torch.uint8 and t.shape == (2, 3, 6, 8)
    assert t[1, :, 0, 0].tolist() == [1, 2, 3]


def test_stack_images_resizes_to_square_or_height_width():
    imgs = [_pil(8, 6), _pil(20, 10)]
    assert stack_images(imgs, 16).shape == (2, 3, 16, 16)
    assert stack_images(imgs, (12, 24)).shape == (2, 3, 12, 24)
    with pytest.raises(DataError, match="different sizes"):
        stack_images(imgs)


def test_stack_images_of_arrays_and_tensors_keeps_or_resizes_them():
    arr = np.random.default_rng(0).integers(0, 256, size=(3, 10, 12, 3), dtype=np.uint8)
    t = stack_images(arr)
    assert t.dtype == torch.uint8 and t.shape == (3, 3, 10, 12)
    assert np.array_equal(t.permute(0, 2, 3, 1).numpy(), arr)
    assert stack_images(t) is t
    r = stack_images(arr, (5, 6))
    assert r.dtype == torch.uint8 and r.shape == (3, 3, 5, 6)
    flat = np.full((1, 16, 16, 3), 77, np.uint8)
    assert (stack_images(flat, 4) == 77).all()  # a flat image stays flat after antialiased resizing
    with pytest.raises(DataError, match=r"\[B, H, W, 3\]"):
        stack_images(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"\[B, 3, H, W\]"):
        stack_images(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))


def test_stack_images_of_nothing_is_an_empty_batch():
    assert stack_images([], 8).shape == (0, 3, 8, 8)


def test_resize_and_pil_to_uint8():
    img = _pil(30, 20)
    assert resize(img, 10).size == (10, 10)
    assert resize(img, (5, 15)).size == (15, 5)  # (height, width) -> Pillow's (width, height)
    assert resize(img, (20, 30)) is img
    t = pil_to_uint8(Image.new("L", (4, 3), 200))
    assert t.shape == (3, 3, 4) and t.dtype == torch.uint8 and (t == 200).all()


def test_to_float_scales_uint8_to_unit_range():
    t = torch.tensor([[0, 255, 51]], dtype=torch.uint8)
    assert torch.allclose(to_float(t), torch.tensor([[0.0, 1.0, 0.2]]))
    f = torch.tensor([0.5], dtype=torch.float64)
    assert to_float(f).dtype == torch.float32


def test_open_and_check_image_report_missing_and_unreadable_files(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGBA", (3, 2), (1, 2, 3, 4)).save(p)
    assert open_image(p).mode == "RGB" and check_image(p) is None
    assert check_image(tmp_path / "none.png") == "image not found"
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    assert check_image(tmp_path / "bad.jpg").startswith("unreadable image")
    with pytest.raises(DataError) as e:
        open_image(tmp_path / "bad.jpg")
    assert e.value.where == str(tmp_path / "bad.jpg")
    with pytest.raises(DataError, match="image not found"):
        open_image(tmp_path / "none.png")


# --- tokenizer -----------------------------------------------------------------------------------------

TEXTS = ["a red circle left of a blue square", "the circle is red", "有一个红色的圆形", "two big stars"]


def test_tokenizer_round_trips_known_words():
    tok = WordTokenizer.build(TEXTS)
    ids, mask = tok.encode(["a red square", "The circle is RED, left of two stars"], max_len=16)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == (2, 9)
    assert ids[:, 0].tolist() == [CLS, CLS]
    assert (
        tok.decode(ids[0]) == "a red square" and tok.decode(ids[1]) == "the circle is red left of two stars"
    )
    assert mask[0].tolist() == [True] * 4 + [False] * 5 and (ids[0, 4:] == PAD).all()


def test_tokenizer_maps_unknown_words_to_unk_and_truncates():
    tok = WordTokenizer.build(TEXTS)
    ids, mask = tok.encode(["a purple hexagon"], max_len=3)
    assert ids.tolist() == [[CLS, tok.index["a"], UNK]] and mask.all()
    assert tok.decode([tok.index["a"], UNK]) == "a [UNK]"
    ids, _ = tok.encode(["red"], add_cls=False)
    assert ids.tolist() == [[tok.index["red"]]]


def test_tokenizer_vocabulary_is_deterministic_by_frequency_then_alphabet():
    tok = WordTokenizer.build(TEXTS)
    assert tok.vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    assert tok.vocab[4:7] == ["a", "circle", "red"]  # each twice; ties alphabetical
    assert WordTokenizer.build(list(reversed(TEXTS))).vocab == tok.vocab
    assert len(WordTokenizer.build(TEXTS, min_count=2)) == 4 + 3
    assert len(WordTokenizer.build(TEXTS, max_size=6)) == 6


def test_tokenizer_splits_chinese_into_characters():
    assert split_words("有一个红色的圆形") == list("有一个红色的圆形")
    assert split_words("A bat's wing, 2 bats") == ["a", "bat's", "wing", "2", "bats"]


def test_tokenizer_save_and_load_give_the_same_encoding(tmp_path):
    tok = WordTokenizer.build(TEXTS)
    tok.save(tmp_path / "tok" / "tokenizer.json")
    back = WordTokenizer.load(tmp_path / "tok" / "tokenizer.json")
    assert back.vocab == tok.vocab
    a, _ = tok.encode(TEXTS)
    b, _ = back.encode(TEXTS)
    assert torch.equal(a, b)


def test_tokenizer_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError) as e:
        WordTokenizer.load(tmp_path / "missing.json")
    assert e.value.where == str(tmp_path / "missing.json")
    (tmp_path / "t.json").write_text('{"type": "word"}')
    with pytest.raises(DataError, match="cannot read tokenizer"):
        WordTokenizer.load(tmp_path / "t.json")
    with pytest.raises(DataError, match="special tokens"):
        WordTokenizer(["a", "b"])
