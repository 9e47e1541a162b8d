"""ShapesWorld's English grammar: generation and parsing are inverse; text outside the grammar is refused."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from alignlab.core.errors import DataError
from alignlab.data.shapes import (
    COLOURS,
    NP,
    POLYSEMOUS,
    RELATIONS,
    SHAPES,
    SIZES,
    And,
    Count,
    Exists,
    GrammarError,
    Property,
    Relation,
    Respectively,
    ShapesWorld,
    english,
    form_from_dict,
    form_to_dict,
    parse_caption,
)

KINDS = [None, *SHAPES, *POLYSEMOUS]
VALUES = [*COLOURS, *SIZES]


def _np(rng: np.random.Generator, definite: bool) -> NP:
    kind = KINDS[int(rng.integers(len(KINDS)))]
    sense = None
    if kind in POLYSEMOUS:
        senses = POLYSEMOUS[kind][1]
        sense = senses[int(rng.integers(len(senses)))].synset
    colour = [None, *COLOURS][int(rng.integers(len(COLOURS) + 1))]
    size = [None, *SIZES][int(rng.integers(len(SIZES) + 1))]
    return NP(kind, colour, size, definite, sense)


def random_form(rng: np.random.Generator):
    """A random form of the grammar (any words, not only what is true of some scene)."""
    t = int(rng.integers(7))
    coin = lambda: bool(rng.integers(2))  # noqa: E731
    value = lambda: VALUES[int(rng.integers(len(VALUES)))]  # noqa: E731
    if t == 0:
        return Exists(_np(rng, coin()))
    if t == 1:
        return Relation(_np(rng, coin()), RELATIONS[int(rng.integers(4))], _np(rng, coin()))
    if t == 2:
        return Count(int(rng.integers(0, 5)), _np(rng, False))
    if t == 3:
        return Property(_np(rng, True), value(), coin())
    if t == 4:
        return And(tuple(Exists(_np(rng, False)) for _ in range(int(rng.integers(2, 5)))))
    if t == 5:
        return And((Property(_np(rng, True), value(), coin()), Property(_np(rng, True), value(), coin())))
    return Respectively(_np(rng, True), _np(rng, True), value(), value())


def without_sense(form):
    """``form`` with every NP's ``sense`` cleared: English does not say which sense is meant."""
    if isinstance(form, NP):
        return dataclasses.replace(form, sense=None)
    if isinstance(form, And):
        return And(tuple(without_sense(p) for p in form.parts))
    return dataclasses.replace(
        form, **{k: without_sense(v) for k, v in vars(form).items() if isinstance(v, NP)}
    )


def test_parse_inverts_english_for_random_forms_and_templates():
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(3000):
        form = random_form(rng)
        text = english(form, rng)  # rng picks templates and synonyms
        parsed = parse_caption(text)
        assert without_sense(parsed) == without_sense(form), text
        assert without_sense(parse_caption(english(form))) == without_sense(form)  # the first template
        kinds.add(type(form).__name__)
    assert kinds == {"Exists", "Relation", "Count", "Property", "And", "Respectively"}


def test_parse_inverts_english_for_every_generated_caption():
    for ex in ShapesWorld().generate(300, seed=9):
        for c in ex.captions:
            assert without_sense(parse_caption(c.en)) == without_sense(c.form), c.en


def test_every_template_and_synonym_parses_to_the_same_form():
    form = Relation(NP("circle", "red", "large"), "below", NP("mouse", None, "small", sense="mouse.n.04"))
    texts = {english(form, np.random.default_rng(s)) for s in range(200)}
    assert len(texts) >= 12  # 3 templates x 3 phrases x size synonyms
    assert {without_sense(parse_caption(t)) for t in texts} == {without_sense(form)}


def test_parsing_ignores_case_commas_and_a_final_full_stop():
    assert parse_caption("A Red Circle, a blue square and a star.") == parse_caption(
        "a red circle a blue square and a star"
    )
    assert parse_caption("An orange mouse is left of the kite.") == Relation(
        NP("mouse", "orange"), "left_of", NP("kite", definite=True)
    )


def test_forms_round_trip_through_json_dicts():
    rng = np.random.default_rng(1)
    for _ in range(300):
        form = random_form(rng)
        assert form_from_dict(form_to_dict(form)) == form


def _reverse(text: str) -> str:
    return " ".join(reversed(text.split()))


def test_captions_with_reversed_word_order_are_refused():
    # Every sentence of the grammar starts with a determiner, "there", "exactly" or a number and ends
    # with a noun, a value, "image" or "respectively", so the reversed order is never grammatical.
    n = 0
    for ex in ShapesWorld().generate(200, seed=3):
        for c in ex.captions:
            with pytest.raises(GrammarError):
                parse_caption(_reverse(c.en))
            n += 1
    assert n >= 1000


def test_shuffled_words_are_refused_except_for_rare_grammatical_permutations():
    rnd = random.Random(0)
    tried = accepted = 0
    for ex in ShapesWorld().generate(200, seed=3):
        for c in ex.captions:
            words = c.en.split()
            shuffled = words[:]
            while len(set(words)) > 1 and shuffled == words:
                rnd.shuffle(shuffled)
            if shuffled == words:
                continue
            tried += 1
            try:
                parse_caption(" ".join(shuffled))
                accepted += 1  # e.g. "a star over a seal" -> "a seal over a star": still a sentence
            except GrammarError:
                pass
    assert tried >= 900
    assert accepted / tried < 0.01


@pytest.mark.parametrize(
    "text",
    [
        "",
        "circle red a",
        "a circle red",
        "red a circle",
        "there are two circle",
        "there is one circles",
        "the circles is red",
        "the circles and the square are red and blue respectively",
        "a red circle left of",
        "left of a red circle",
        "the circle is",
        "the circle is round",
        "two circles respectively",
        "a circle and the square are red and blue respectively",
        "the circle and the square are red and blue",
        "a dog",
        "a red circle is red",
        "there are five circles",
        "a circle next to a square",
        "the circle is not",
        "there is",
        "a red circle, and",
    ],
)
def test_text_outside_the_grammar_raises_grammar_error(text):
    with pytest.raises(GrammarError) as e:
        parse_caption(text)
    assert isinstance(e.value, DataError)  # the CLI reports it in one line
