"""Truth relevance on ShapesWorld: a caption is relevant to every image it is true of.

Pinned against the truth evaluator itself (:func:`alignlab.data.shapes.evaluate`, one call per pair):
the vectorised table, the grouping of captions by meaning, the relevance map of the loaders, subsets and
exports, the source labels kept by name, and discriminative captions (true of their own image only).
"""

from __future__ import annotations

import numpy as np
import pytest

from alignlab.core.errors import DataError
from alignlab.data.pairs import ImageTextPairs, from_shapes, load_pairs, save_karpathy
from alignlab.data.shapes import (
    NP,
    And,
    Count,
    Exists,
    Property,
    Relation,
    Respectively,
    SceneTable,
    ShapesConfig,
    ShapesWorld,
    evaluate,
    group_meanings,
    meaning,
    truth_matrix,
    truth_relevance,
)


@pytest.fixture(scope="module")
def gallery():
    return ShapesWorld(ShapesConfig(negation_rate=0.5)).generate(60, seed=3, split="test")


def brute_force(forms, scenes) -> np.ndarray:
    return np.array([[evaluate(f, s) for s in scenes] for f in forms], dtype=bool)


def test_truth_relevance_equals_the_evaluator_on_every_pair(gallery):
    pairs = from_shapes(gallery)
    forms = [c.form for ex in gallery for c in ex.captions]
    truth = brute_force(forms, [ex.scene for ex in gallery])  # [captions, images]
    assert pairs.relevance_kind == "truth"
    for i in range(pairs.n_images):
        assert sorted(pairs.relevance[i]) == np.flatnonzero(truth[:, i]).tolist()
        own = pairs.sources[i]
        assert pairs.relevance[i][: len(own)] == own  # the image's own captions first
    assert sum(len(r) for r in pairs.relevance) > sum(len(r) for r in pairs.sources)  # shared truth exists


def test_vectorised_table_equals_per_pair_evaluation_on_every_form_type(gallery):
    rng = np.random.default_rng(0)
    scenes = [ex.scene for ex in gallery]
    forms = [c.form for ex in gallery for c in ex.captions]
    # Forms the generator rarely writes: indefinite properties, failed presuppositions, respectively
    # with one object named twice, counts of zero, conjunctions of mixed kinds, unknown words.
    kinds, colours = ["circle", "bat", "square", None], ["red", "blue", None]
    for _ in range(300):
        a = NP(
            kinds[rng.integers(4)],
            colours[rng.integers(3)],
            [None, "small", "large"][rng.integers(3)],
            bool(rng.integers(2)),
        )
        b = NP(kinds[rng.integers(4)], colours[rng.integers(3)], None, bool(rng.integers(2)))
        forms += [
            Property(a, ["red", "large", "small"][rng.integers(3)], bool(rng.integers(2))),
            Respectively(a, b, "red", ["blue", "small"][rng.integers(2)]),
            Relation(a, ["left_of", "right_of", "above", "below"][rng.integers(4)], b),
            Count(int(rng.integers(0, 5)), a),
            Exists(a),
            And((Exists(a), Count(1, b))),
        ]
    forms.append(Exists(NP("dragon")))
    assert np.array_equal(truth_matrix(forms, scenes), brute_force(forms, scenes))
    assert np.array_equal(
        truth_matrix(forms, SceneTable(scenes).take([5, 0, 5])),
        brute_force(forms, [scenes[5], scenes[0], scenes[5]]),
    )


def test_captions_with_one_meaning_share_one_truth_row():
    bat_animal = Exists(NP("bat", "red", None, False, "bat.n.01"))
    bat_club = Exists(NP("bat", "red", None, False, "bat.n.05"))  # the sense picks the Chinese word only
    other = Exists(NP("bat", "blue"))
    distinct, inverse = group_meanings([bat_animal, other, bat_club, bat_animal])
    assert distinct == [meaning(bat_animal), other] and inverse.tolist() == [0, 1, 0, 0]


def test_relevance_is_computed_once_per_meaning_not_per_pair(monkeypatch, gallery):
    calls = []
    original = SceneTable.truth

    def counted(self, form):
        calls.append(form)
        return original(self, form)

    monkeypatch.setattr(SceneTable, "truth", counted)
    forms = [c.form for ex in gallery for c in ex.captions]
    scenes = [ex.scene for ex in gallery]
    once = truth_relevance(forms, scenes)
    n_once = len(calls)
    twice = truth_relevance(forms + forms, scenes)  # every meaning twice: no more evaluations
    assert len(calls) == 2 * n_once
    assert [r[: len(o)] for r, o in zip(twice, once, strict=True)] == once


def test_source_labels_stay_available_by_name(gallery):
    truth = from_shapes(gallery)
    source = from_shapes(gallery, relevance="source")
    assert source.relevance_kind == "source" and source.relevance == source.sources == truth.sources
    assert truth.with_relevance("source").relevance == source.relevance
    assert source.with_relevance("truth").relevance == truth.relevance
    with pytest.raises(DataError, match="unknown relevance"):
        from_shapes(gallery, relevance="oracle")


def test_a_subset_keeps_its_own_captions_and_their_truth(gallery):
    pairs = from_shapes(gallery)
    sub = pairs.subset([7, 2, 9])
    expected = from_shapes([gallery[7], gallery[2], gallery[9]])
    assert sub.captions == expected.captions and sub.relevance == expected.relevance
    assert sub.sources == expected.sources and sub.relevance_kind == "truth"


def test_an_export_loads_back_with_truth_and_writes_each_caption_once(tmp_path, gallery):
    pairs = from_shapes(gallery[:20])
    save_karpathy(tmp_path, {"test": pairs})
    back = load_pairs(tmp_path, "test")
    assert back.relevance_kind == "truth" and back.relevance == pairs.relevance
    assert back.n_captions == sum(len(ex.captions) for ex in gallery[:20])
    assert load_pairs(tmp_path, "test", relevance="source").relevance == pairs.sources


def test_truth_relevance_of_data_without_scenes_is_a_data_error():
    plain = ImageTextPairs(["a", "b"], ["x", "y"], [[0], [1]], image_array=np.zeros((2, 1, 1, 3), np.uint8))
    assert not plain.has_truth
    with pytest.raises(DataError, match="no ShapesWorld scenes"):
        plain.with_relevance("truth")
    assert plain.known_true([0, 1], [0, 1]).tolist() == [[True, False], [False, True]]


def test_an_own_caption_false_of_its_image_is_a_data_error(gallery):
    forms = [gallery[0].captions[0].form, Exists(NP("dragon"))]
    with pytest.raises(DataError, match="false of its own scene"):
        truth_relevance(forms, [gallery[0].scene, gallery[1].scene], own=[[0], [1]])


def test_known_true_is_the_evaluator_on_any_images_and_captions(gallery):
    pairs = from_shapes(gallery, relevance="source")
    imgs, caps = [3, 0, 3, 11], [0, 17, 40, 2, 5]
    forms = [c.form for ex in gallery for c in ex.captions]
    expected = brute_force([forms[c] for c in caps], [gallery[i].scene for i in imgs]).T
    assert np.array_equal(pairs.known_true(imgs, caps), expected)


def test_discriminative_captions_are_true_of_their_own_image_only():
    world = ShapesWorld(ShapesConfig(discriminative=True))
    gallery = world.generate(80, seed=0, split="test")
    scenes = [ex.scene for ex in gallery]
    for i, ex in enumerate(gallery):
        assert 1 <= len(ex.captions) <= 5
        for c in ex.captions:
            assert [k for k, s in enumerate(scenes) if evaluate(c.form, s)] == [i], c.en
    pairs = from_shapes(gallery)
    assert pairs.relevance == pairs.sources  # unique captions: truth and source labels agree
    again = world.generate(80, seed=0, split="test")
    assert [[c.en for c in ex.captions] for ex in again] == [[c.en for c in ex.captions] for ex in gallery]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(again, gallery, strict=True))


def test_discriminative_gallery_redraws_scenes_without_a_unique_caption():
    # Few kinds and colours: one-object scenes repeat and cannot be told apart, so some are redrawn.
    cfg = ShapesConfig(
        discriminative=True,
        min_objects=1,
        max_objects=3,
        shapes=("circle", "square"),
        colours=("red", "blue"),
        polysemous_rate=0.0,
        captions_per_image=1,
    )
    gallery = ShapesWorld(cfg).generate(12, seed=1, split="val")
    plain = ShapesWorld(ShapesConfig(**{**cfg.__dict__, "discriminative": False})).generate(12, 1, "val")
    assert [ex.scene for ex in gallery] != [ex.scene for ex in plain]
    scenes = [ex.scene for ex in gallery]
    for i, ex in enumerate(gallery):
        assert [k for k, s in enumerate(scenes) if evaluate(ex.captions[0].form, s)] == [i]


def test_data_shapes_cli_writes_discriminative_captions(tmp_path, capsys):
    from alignlab.cli import main

    out = tmp_path / "disc"
    assert (
        main(
            [
                "data",
                "shapes",
                "--out",
                str(out),
                "--train",
                "0",
                "--val",
                "0",
                "--test",
                "30",
                "--discriminative",
                "--quiet",
            ]
        )
        == 0
    )
    pairs = load_pairs(out, "test")
    assert pairs.relevance_kind == "truth" and pairs.relevance == pairs.sources  # each caption: one image
