"""ShapesWorld's truth evaluator: generated captions are true, altered ones false when the scene says so."""

from __future__ import annotations

import dataclasses
import functools

import pytest

from alignlab.data.shapes import (
    COLOURS,
    INVERSE,
    NP,
    And,
    Count,
    Exists,
    Obj,
    Property,
    Relation,
    Respectively,
    Scene,
    ShapesConfig,
    ShapesWorld,
    evaluate,
    is_true,
    mirror,
    parse_caption,
    swap_colours,
)

CONFIGS = {
    "default": ShapesConfig(),
    "polysemous+negation": ShapesConfig(polysemous_rate=0.5, negation_rate=0.5),
    "crowded-two-colours": ShapesConfig(
        min_objects=4,
        max_objects=4,
        colours=("red", "blue"),
        shapes=("circle", "square"),
        captions_per_image=6,
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_generated_caption_is_true_of_its_own_scene_as_form_and_as_english(name):
    examples = ShapesWorld(CONFIGS[name]).generate(400, seed=11)
    n = 0
    for ex in examples:
        for c in ex.captions:
            assert evaluate(c.form, ex.scene), (c, ex.scene)
            assert is_true(c.en, ex.scene), (c.en, ex.scene)
            assert evaluate(parse_caption(c.en), ex.scene)
            n += 1
    assert n >= 400 * 5


def _unique(np_: NP, scene: Scene) -> bool:
    return sum(np_.matches(o) for o in scene.objects) == 1


@functools.lru_cache(maxsize=1)
def _generated(n=600):
    """(scene, caption) of every caption of ``n`` generated images (made once per test session)."""
    world = ShapesWorld(ShapesConfig(polysemous_rate=0.3, negation_rate=0.3))
    return [(ex.scene, c) for ex in world.generate(n, seed=7) for c in ex.captions]


def test_reversed_relations_are_false_when_both_noun_phrases_pick_out_one_object():
    tested = 0
    for scene, c in _generated():
        f = c.form
        if isinstance(f, Relation) and _unique(f.a, scene) and _unique(f.b, scene):
            reversed_ = dataclasses.replace(f, rel=INVERSE[f.rel])
            assert not evaluate(reversed_, scene), (c.en, scene)
            swapped_roles = Relation(f.b, f.rel, f.a)
            assert not evaluate(swapped_roles, scene)
            assert evaluate(Relation(f.b, INVERSE[f.rel], f.a), scene)  # the converse stays true
            tested += 1
    assert tested > 200


def test_swapping_the_values_of_a_respectively_caption_makes_it_false_when_they_differ():
    tested = 0
    for scene, c in _generated():
        f = c.form
        if isinstance(f, Respectively) and f.value_a != f.value_b:
            assert not evaluate(dataclasses.replace(f, value_a=f.value_b, value_b=f.value_a), scene), c.en
            assert not evaluate(Respectively(f.b, f.a, f.value_a, f.value_b), scene)
            tested += 1
    assert tested > 30


def test_flipping_a_property_makes_it_false():
    tested = 0
    for scene, c in _generated():
        f = c.form
        if isinstance(f, Property):
            assert not evaluate(dataclasses.replace(f, negated=not f.negated), scene), c.en
            if not f.negated and f.value in COLOURS:
                for other in COLOURS:
                    if other != f.value:
                        assert not evaluate(dataclasses.replace(f, value=other), scene)
            tested += 1
    assert tested > 200


def test_changing_a_count_by_one_makes_it_false():
    tested = 0
    for scene, c in _generated():
        f = c.form
        if isinstance(f, Count):
            for n in (f.n - 1, f.n + 1):
                if 0 <= n <= 4:
                    assert not evaluate(Count(n, f.np), scene)
            tested += 1
    assert tested > 100


def test_swapping_the_colours_of_two_objects_falsifies_fully_described_relations():
    tested = 0
    for scene, c in _generated():
        f = c.form
        if not (isinstance(f, Relation) and f.a.colour and f.b.colour and f.a.colour != f.b.colour):
            continue
        if not (_unique(f.a, scene) and _unique(f.b, scene)):
            continue
        i = next(k for k, o in enumerate(scene.objects) if f.a.matches(o))
        j = next(k for k, o in enumerate(scene.objects) if f.b.matches(o))
        swapped = swap_colours(scene, i, j)
        if (
            sum(f.a.matches(o) for o in swapped.objects) == 0
            or sum(f.b.matches(o) for o in swapped.objects) == 0
        ):
            assert not evaluate(f, swapped), (c.en, swapped)
            tested += 1
    assert tested > 30


def test_mirrored_scenes_falsify_left_right_captions_and_keep_above_below_ones():
    tested = 0
    for scene, c in _generated():
        f = c.form
        if isinstance(f, Relation) and _unique(f.a, scene) and _unique(f.b, scene):
            flipped = mirror(scene)
            if f.rel in ("left_of", "right_of"):
                assert not evaluate(f, flipped) and evaluate(
                    dataclasses.replace(f, rel=INVERSE[f.rel]), flipped
                )
            else:
                assert evaluate(f, flipped)
            tested += 1
    assert tested > 200


# --- hand-built scenes ---------------------------------------------------------------------------------

# A red circle top-left, a blue square top-right, a small green triangle bottom-middle.
SCENE = Scene(
    (
        Obj("circle", "red", "large", 0, 0),
        Obj("square", "blue", "large", 0, 2),
        Obj("triangle", "green", "small", 2, 1),
    )
)


@pytest.mark.parametrize(
    "text, truth",
    [
        ("a red circle to the left of a blue square", True),
        ("a blue circle to the left of a red square", False),  # colours of the two NPs swapped
        ("a red circle to the right of a blue square", False),  # relation reversed
        ("a blue square is right of a red circle", True),
        ("a red circle is above a green triangle", True),
        ("a green triangle is above a red circle", False),
        ("there is a red square under a blue circle", False),
        ("a red circle above a blue square", False),  # same row: neither above nor below
        ("a triangle below a thing", True),
        ("the circle and the square are red and blue respectively", True),
        ("the circle and the square are blue and red respectively", False),
        ("the square and the circle are red and blue respectively", False),
        ("the triangle and the big circle are small and large respectively", True),
        ("the circle is red", True),
        ("the circle is blue", False),
        ("the circle is not blue", True),
        ("the circle is not red", False),
        ("the triangle is little", True),
        ("the triangle is big", False),
        ("the red thing is large", True),
        ("there are three objects", True),
        ("there are two objects", False),
        ("there are zero stars", True),
        ("there is one large red circle", True),
        ("exactly one green shape", True),
        ("two large things", True),
        ("there is a big blue square in the image", True),
        ("a small blue square", False),
        ("a large red circle, a blue square and a little green triangle", True),
        ("there is a red circle and a red square", False),
        ("the circle is red and the square is blue", True),
        ("the circle is red and the square is red", False),
    ],
)
def test_hand_written_captions_have_the_truth_the_scene_gives_them(text, truth):
    assert is_true(text, SCENE) is truth


def test_a_definite_noun_phrase_presupposes_exactly_one_referent():
    two_circles = Scene(
        (
            Obj("circle", "red", "large", 0, 0),
            Obj("circle", "red", "small", 0, 2),
            Obj("square", "blue", "small", 2, 2),
        )
    )
    # "the circle" has two referents: every sentence built on it is false, negated or not.
    for text in (
        "the circle is red",
        "the circle is not blue",
        "the circle is large",
        "the circle is not large",
        "the circle and the square are red and blue respectively",
        "the circle is left of a square",
        "a square is below the circle",
    ):
        assert not is_true(text, two_circles), text
    # Adding an attribute that picks one out restores the sentence.
    for text in (
        "the large circle is red",
        "the small circle is not blue",
        "the large circle and the square are red and blue respectively",
        "the large circle is left of a square",
        "a square is below the small circle",
    ):
        assert is_true(text, two_circles), text
    # No referent at all is false as well.
    assert not is_true("the star is red", two_circles) and not is_true("the star is not red", two_circles)
    # An indefinite NP only needs one witness: "a circle is left of a square" holds (the large one).
    assert is_true("a circle is left of a square", two_circles)
    assert is_true("there are two red circles", two_circles)


def test_a_relation_needs_two_different_objects():
    one = Scene((Obj("circle", "red", "large", 1, 1),))
    assert not evaluate(Relation(NP("circle"), "left_of", NP("circle")), one)
    assert not evaluate(Respectively(NP("circle", definite=True), NP(None, definite=True), "red", "red"), one)
    assert evaluate(Exists(NP(None, "red")), one) and evaluate(Count(0, NP("square")), one)


def test_relations_are_decided_by_grid_cells_not_by_jitter():
    # Jitter pushes the right-hand object far left inside its cell; the cells still decide.
    scene = Scene(
        (Obj("circle", "red", "large", 1, 0, dx=0.5), Obj("square", "blue", "large", 1, 1, dx=-0.5))
    )
    assert is_true("a circle is left of a square", scene)
    assert not is_true("a circle is right of a square", scene)
    assert not is_true("a circle is above a square", scene) and not is_true(
        "a circle is below a square", scene
    )


def test_truth_ignores_the_sense_field_that_english_does_not_express():
    scene = Scene((Obj("bat", "gray", "small", 0, 0, sense="bat.n.01"),))
    assert evaluate(Exists(NP("bat", sense="bat.n.05")), scene)
    assert evaluate(And((Exists(NP("bat")), Exists(NP(None, "gray")))), scene)


def test_evaluate_rejects_what_is_not_a_form():
    with pytest.raises(TypeError):
        evaluate("a red circle", SCENE)  # strings go through is_true
