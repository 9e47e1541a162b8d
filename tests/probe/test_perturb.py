"""Token-level word-order perturbations and the part-of-speech fallback."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from alignlab.core.errors import DependencyError
from alignlab.probe.perturb import (
    PERTURBATIONS,
    LexiconTagger,
    detokenize,
    get_tagger,
    perturb,
    shuffle_content,
    tokenize,
)


def test_every_perturbation_differs_from_the_caption_token_wise():
    rng = np.random.default_rng(0)
    caption = "the small red circle is to the left of the blue square"
    for kind in PERTURBATIONS:
        for _ in range(20):
            out = perturb(caption, kind, rng)
            assert out is not None and tokenize(out) != tokenize(caption)
            assert sorted(tokenize(out.replace("an ", "a "))) == sorted(
                tokenize(caption.replace("an ", "a "))
            )


def test_shuffle_content_moves_nouns_among_nouns_and_adjectives_among_adjectives():
    rng = np.random.default_rng(1)
    toks = tokenize("a big red circle left of a small blue square")
    tags = LexiconTagger().tag(toks)
    for _ in range(20):
        out = shuffle_content(toks, tags, rng)
        for i, t in enumerate(tags):
            if t == "other":
                assert out[i] == toks[i]
            else:
                assert LexiconTagger().tag_word(out[i]) == t


def test_a_caption_that_cannot_change_gives_none():
    assert perturb("dog dog", "shuffle_all", np.random.default_rng(0)) is None
    assert perturb("a red circle", "shuffle_content", np.random.default_rng(0)) is None


def test_replacement_is_whole_tokens_never_substrings():
    rng = np.random.default_rng(0)
    for _ in range(30):
        out = perturb("a lemon on a melon below an onion", "shuffle_function", rng)
        assert set(tokenize(out)) <= {"a", "an", "lemon", "on", "melon", "below", "onion"}
        assert "lembelow" not in out


def test_punctuation_stays_in_place_and_detokenizes_cleanly():
    rng = np.random.default_rng(0)
    out = perturb("a dog, a cat and a bird.", "shuffle_all", rng)
    assert out.endswith(".") and ", " in out and " ," not in out
    assert detokenize(tokenize("a dog, running.")) == "a dog, running."


def test_lexicon_tagger_is_exact_on_the_shapesworld_vocabulary():
    tag = LexiconTagger()
    assert tag.tag(tokenize("there are two large green stars above the little seal")) == [
        "other",
        "other",
        "other",
        "adj",
        "adj",
        "noun",
        "other",
        "other",
        "adj",
        "noun",
    ]
    assert tag.tag_word("square") == "noun" and tag.tag_word("orange") == "adj"
    assert tag.tag_word("walking") == "other" and tag.tag_word("giraffe") == "noun"


@pytest.mark.skipif(importlib.util.find_spec("spacy") is not None, reason="spaCy is installed here")
def test_asking_for_spacy_without_it_is_a_dependency_error_and_auto_falls_back():
    with pytest.raises(DependencyError, match="spaCy"):
        get_tagger("spacy:en_core_web_sm")
    assert get_tagger("auto").name == "lexicon"


def test_caption_file_builder_writes_semantic_structure_items(tmp_path):
    from alignlab.probe.items import load_probe
    from alignlab.probe.perturb import build_caption_items

    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    csv = tmp_path / "caps.csv"
    csv.write_text(
        "image,caption\na.png,a brown dog runs on the green grass\nb.png,two men ride red bikes\nb.png,dog\n"
    )
    path, info = build_caption_items(
        csv, tmp_path / "probe", split=None, image_root=tmp_path, tagger="lexicon"
    )
    ps = load_probe(path)
    assert len(ps.items) == 2 and info["skipped_captions"] == 1
    for it in ps.items:
        assert it.task == "semantic_structure" and it.option_kinds[it.correct] == "gold"
        assert len(set(it.options)) == len(it.options) >= 3
    assert info["tagger"]["tagger"] == "lexicon"


def test_caption_items_from_a_shapesworld_export_have_only_false_distractors(tmp_path):
    from alignlab.data.pairs import from_shapes, save_karpathy
    from alignlab.data.shapes import GrammarError, Scene, ShapesWorld, evaluate, parse_caption
    from alignlab.probe.items import load_probe
    from alignlab.probe.perturb import build_caption_items

    def true_of(text, scene):
        try:
            return evaluate(parse_caption(text), scene)
        except GrammarError:
            return False

    save_karpathy(tmp_path / "shapes", {"test": from_shapes(ShapesWorld().generate(12, 0, "test"))})
    path, info = build_caption_items(tmp_path / "shapes", tmp_path / "probe", split="test", tagger="lexicon")
    ps = load_probe(path)
    assert len(ps.items) == 12 * 5  # each caption once, with the image it was written for
    for it in ps.items:
        scene = Scene.from_dict(_scene_of(tmp_path / "shapes", it.meta["image_id"]))
        assert it.truth == [[true_of(o, scene) for o in it.options]]
        assert it.truth[0][it.correct] and sum(it.truth[0]) == 1, it.id
    assert isinstance(info["dropped_true_negatives"], int) and "truth evaluator" in info["labels"]


def _scene_of(folder, image_id):
    import json

    doc = json.loads((folder / "dataset.json").read_text())
    return next(img["scene"] for img in doc["images"] if img["filename"].startswith(image_id))
