"""The ShapesWorld builder: labels come from the truth evaluator, never from assumptions."""

from __future__ import annotations

from collections import Counter

from alignlab.data.shapes import GrammarError, Scene, evaluate, parse_caption
from alignlab.probe.build_shapes import (
    CATEGORIES,
    ShapesProbeConfig,
    build_shapes_items,
    caption_truth,
    same_words,
    swap_words,
)
from alignlab.probe.items import TASKS, items_hash


def _truth(text, scene):
    try:
        return evaluate(parse_caption(text), scene)
    except GrammarError:
        return False


def test_every_option_is_labelled_by_the_truth_evaluator(shapes_probe):
    for it in shapes_probe.items:
        scenes = [Scene.from_dict(d) for d in it.meta["scenes"]]
        assert it.truth == [[_truth(o, s) for o in it.options] for s in scenes], it.id
        if it.format == "choice" and it.scoring == "accuracy":
            assert it.truth[0][it.correct] and sum(it.truth[0]) == 1, it.id


def test_all_four_tasks_and_their_categories_are_built(shapes_probe):
    got = Counter((it.task, it.category) for it in shapes_probe.items)
    assert got == Counter({(t, c): 30 for t in TASKS for c in CATEGORIES[t]})


def test_distractors_differ_from_the_gold_caption_and_from_each_other(shapes_probe):
    for it in shapes_probe.items:
        assert len({o.lower() for o in it.options}) == len(it.options), it.id
        if it.task == "semantic_structure":
            assert sorted(it.option_kinds) == ["gold", "shuffle_all", "shuffle_content", "shuffle_function"]


def test_structure_distractors_use_exactly_the_gold_captions_words(shapes_probe):
    checked = 0
    for it in shapes_probe.items:
        if it.task in ("semantic_structure", "attribute_ownership") or it.category in ("swap", "pair_mirror"):
            gold = it.options[it.correct if it.format == "choice" else 0]
            assert all(same_words(o, gold) for o in it.options), it.id
            checked += 1
    assert checked == 30 * 10


def test_negation_is_a_balanced_two_by_two(shapes_probe):
    neg = [it for it in shapes_probe.items if it.task == "negation"]
    negated_right = [it.option_kinds[it.correct] == "negated" for it in neg]
    assert sum(negated_right) * 2 == len(neg)
    for it in neg:
        aff, ng = (
            it.options[it.option_kinds.index("affirmative")],
            it.options[it.option_kinds.index("negated")],
        )
        assert ng.replace(" not", "") == aff and ng.count(" not ") == 2
        assert (it.category == "negated_true") == (it.option_kinds[it.correct] == "negated")


def test_counterfactual_pairs_make_each_caption_true_in_exactly_one_image(shapes_probe):
    pairs = [it for it in shapes_probe.items if it.format == "pair"]
    assert {it.category for it in pairs} == {"pair_colour_swap", "pair_mirror"}
    for it in pairs:
        assert it.truth == [[True, False], [False, True]] and it.correct == [0, 1]
        assert it.images[0] != it.images[1]


def test_preference_items_hold_two_true_sentences(shapes_probe):
    pref = [it for it in shapes_probe.items if it.scoring == "preference"]
    assert pref and all(it.truth == [[True, True]] for it in pref)
    assert all(it.option_kinds[it.correct] == "relation" for it in pref)


def test_the_correct_answer_is_not_always_in_the_same_position(shapes_probe):
    positions = Counter(it.correct for it in shapes_probe.items if it.format == "choice")
    assert len(positions) >= 4 and max(positions.values()) < 0.6 * sum(positions.values())


def test_the_build_is_deterministic_and_depends_on_the_seed():
    cfg = dict(items_per_category=3, tasks=["negation", "relationship_composition"])
    a, ia, _ = build_shapes_items(ShapesProbeConfig(**cfg, seed=0))
    b, ib, _ = build_shapes_items(ShapesProbeConfig(**cfg, seed=0))
    c, _, _ = build_shapes_items(ShapesProbeConfig(**cfg, seed=1))
    assert items_hash(a) == items_hash(b) and ia == ib
    assert items_hash(a) != items_hash(c)


def test_unparseable_shuffles_are_false_and_swaps_are_whole_tokens():
    scene = Scene.from_dict(
        {
            "objects": [
                {"kind": "circle", "colour": "red", "size": "large", "row": 0, "col": 0},
                {"kind": "square", "colour": "blue", "size": "small", "row": 0, "col": 2},
            ]
        }
    )
    assert caption_truth("a red circle", scene)
    assert not caption_truth("circle red a", scene)  # outside the grammar: asserts nothing
    assert (
        swap_words("an orange circle and a red square", {"orange", "red"})
        == "a red circle and an orange square"
    )
    assert swap_words("a red circle", {"red", "blue"}) is None


def test_every_distractor_is_false_of_its_image_and_drops_are_counted():
    items, _, stats = build_shapes_items(ShapesProbeConfig(items_per_category=4, seed=2))
    for it in items:
        scenes = [Scene.from_dict(d) for d in it.meta["scenes"]]
        if it.format == "pair":
            for k, s in enumerate(scenes):
                assert not _truth(it.options[1 - it.correct[k]], s), it.id
        elif it.scoring == "accuracy":
            assert not any(_truth(o, scenes[0]) for j, o in enumerate(it.options) if j != it.correct), it.id
    # Shuffles that happened to be true were redrawn, and whole drafts with a true distractor dropped.
    assert stats["shuffle_draws_coincidentally_true"] > 0 and "true_negatives_dropped" in stats
