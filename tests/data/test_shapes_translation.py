"""Chinese translations: polysemous nouns take the word of the drawn sense; the lexicon is complete."""

from __future__ import annotations

import numpy as np
import pytest

from alignlab.data.shapes import (
    COLOURS,
    NP,
    POLYSEMOUS,
    SENSES,
    SHAPES,
    And,
    Caption,
    Count,
    Exists,
    Obj,
    Property,
    Relation,
    Respectively,
    Scene,
    ShapesConfig,
    ShapesWorld,
    chinese,
    generate_captions,
    noun_phrases,
)

SENSE_CASES = [
    (kind, s.synset, s.zh, other.zh)
    for kind, (_, senses) in POLYSEMOUS.items()
    for s in senses
    for other in senses
    if other is not s
]


def test_the_lexicon_has_the_expected_wordnet_senses_and_chinese_words():
    expected = {
        "bat": {"bat.n.01": "蝙蝠", "bat.n.05": "球棒"},
        "mouse": {"mouse.n.01": "老鼠", "mouse.n.04": "鼠标"},
        "crane": {"crane.n.05": "鹤", "crane.n.04": "起重机"},
        "seal": {"seal.n.09": "海豹", "seal.n.02": "印章"},
        "kite": {"kite.n.04": "鸢", "kite.n.03": "风筝"},
    }
    assert {k: {s.synset: s.zh for s in senses} for k, (_, senses) in POLYSEMOUS.items()} == expected
    assert set(SENSES) == {syn for d in expected.values() for syn in d}


@pytest.mark.parametrize("kind, synset, zh, other_zh", SENSE_CASES)
def test_captions_of_a_polysemous_object_use_the_chinese_word_of_its_drawn_sense(kind, synset, zh, other_zh):
    scene = Scene((Obj(kind, "red", "large", 0, 0, sense=synset), Obj("circle", "blue", "small", 2, 2)))
    rng = np.random.default_rng(0)
    cfg = ShapesConfig(captions_per_image=12, negation_rate=0.5)
    mentions = 0
    for _ in range(5):
        for c in generate_captions(scene, rng, cfg):
            if kind in c.en.split() or POLYSEMOUS[kind][0] in c.en.split():
                assert zh in c.zh and other_zh not in c.zh, (c.en, c.zh)
                assert c.sense_words() and all(w == (kind, synset, zh) for w in c.sense_words())
                mentions += 1
            else:
                assert zh not in c.zh
    assert mentions >= 5


@pytest.mark.parametrize("kind, synset, zh, other_zh", SENSE_CASES)
def test_translation_of_each_form_follows_the_np_sense(kind, synset, zh, other_zh):
    the = NP(kind, None, None, True, synset)
    a = NP(kind, "red", None, False, synset)
    for form in (
        Exists(a),
        Relation(a, "left_of", NP("square")),
        Count(2, NP(kind, None, None, False, synset)),
        Property(the, "red"),
        Property(the, "large", negated=True),
        And((Exists(a), Exists(NP("star")))),
        Respectively(the, NP("circle", definite=True), "red", "blue"),
    ):
        text = chinese(form)
        assert zh in text and other_zh not in text, (form, text)


def test_translating_a_polysemous_noun_without_its_sense_is_refused():
    with pytest.raises(ValueError, match="needs its sense"):
        chinese(Exists(NP("bat")))


def test_two_objects_of_one_kind_with_different_senses_get_different_words_in_one_scene():
    scene = Scene(
        (
            Obj("bat", "red", "large", 0, 0, sense="bat.n.01"),
            Obj("bat", "blue", "large", 0, 2, sense="bat.n.05"),
        )
    )
    rng = np.random.default_rng(1)
    found = set()
    for _ in range(20):
        for c in generate_captions(scene, rng, ShapesConfig(captions_per_image=5)):
            for np_ in noun_phrases(c.form):
                if np_.kind == "bat":
                    # The NP's sense is the sense of the object it describes (the one with its colour).
                    referent = [o for o in scene.objects if np_.matches(o)]
                    assert np_.sense in {o.sense for o in referent}
                    if np_.colour:
                        assert len(referent) == 1 and np_.sense == referent[0].sense
            if isinstance(c.form, Count) and c.form.np.kind == "bat":
                # "two bats" would need one Chinese noun for an animal and a club: never generated.
                assert c.form.n == 1
            found |= {w for w in ("蝙蝠", "球棒") if w in c.zh}
    assert found == {"蝙蝠", "球棒"}


def test_generated_polysemous_nouns_carry_the_sense_of_a_matching_object():
    world = ShapesWorld(ShapesConfig(polysemous_rate=0.7))
    checked = 0
    for ex in world.generate(300, seed=2):
        for c in ex.captions:
            for np_ in noun_phrases(c.form):
                if np_.kind in POLYSEMOUS:
                    matching = [o for o in ex.scene.objects if np_.matches(o)]
                    assert np_.sense in {o.sense for o in matching}, (c.en, ex.scene)
                    if np_.definite or isinstance(c.form, Count):
                        assert {o.sense for o in matching} == {np_.sense}
                    assert SENSES[np_.sense].zh in c.zh
                    checked += 1
    assert checked > 500


def test_plain_shapes_colours_sizes_and_relations_are_translated():
    assert chinese(Exists(NP("circle", "red", "large"))) == "有一个红色的大圆形"
    assert (
        chinese(Relation(NP("square", "blue"), "left_of", NP("star"))) == "一个蓝色的正方形在一个星形的左边"
    )
    assert chinese(Count(3, NP(None, "green"))) == "有三个绿色的物体"
    assert chinese(Property(NP("triangle", definite=True), "yellow", negated=True)) == "那个三角形不是黄色的"
    assert (
        chinese(Respectively(NP("circle", definite=True), NP("star", definite=True), "red", "small"))
        == "那个圆形和那个星形分别是红色的和小的"
    )
    for colour, (_, zh) in COLOURS.items():
        assert zh in chinese(Exists(NP("circle", colour)))
    for kind, (_, zh, _) in SHAPES.items():
        assert zh in chinese(Exists(NP(kind)))


def test_every_generated_caption_has_a_chinese_translation_without_latin_letters():
    for ex in ShapesWorld(ShapesConfig(polysemous_rate=0.5, negation_rate=0.3)).generate(200, seed=5):
        for c in ex.captions:
            assert isinstance(c, Caption) and c.zh == chinese(c.form)
            assert c.zh and not any("a" <= ch.lower() <= "z" for ch in c.zh), c.zh
