"""The evaluation harness: sanity models, ties, blind baselines, grounded gap and bad model output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignlab.core.errors import ModelError
from alignlab.models.base import Scorer
from alignlab.probe.baselines import (
    BagOfWordsOracle,
    NeverNotScorer,
    RandomScorer,
    SceneGraphOracle,
    ShorterScorer,
    UnigramLMScorer,
)
from alignlab.probe.evaluate import evaluate_scorer, judge, run_probe, summarize_results
from alignlab.probe.items import ProbeItem

from .conftest import TINY_CROSS, TINY_DUAL

STRUCTURE_TASKS = ("attribute_ownership", "relationship_composition", "semantic_structure")


def _pooled(run, tasks):
    """Pooled accuracy, chance and n over the accuracy items of ``tasks``."""
    accs = [run["tasks"][t]["accuracy"] for t in tasks]
    n = sum(a["n"] for a in accs)
    acc = sum(a["acc_pct"] * a["n"] for a in accs) / n
    chance = sum(a["chance_pct"] * a["n"] for a in accs) / n
    return acc, chance, n


def _within_chance(acc, chance, n, z=3.0):
    se = 100 * math.sqrt(chance / 100 * (1 - chance / 100) / n)
    return abs(acc - chance) <= z * se


def test_random_scores_are_at_chance(shapes_probe, shapes_images):
    run = evaluate_scorer(RandomScorer(0), shapes_probe, shapes_images, bootstrap=200)
    acc, chance, n = _pooled(run, (*STRUCTURE_TASKS, "negation"))
    assert _within_chance(acc, chance, n)
    pairs = [run["tasks"][t]["pairs"]["all"] for t in ("attribute_ownership", "relationship_composition")]
    group = np.mean([p["group"]["pct"] for p in pairs])
    assert abs(group - 100 / 6) < 15


def test_bag_of_words_oracle_is_at_chance_on_ownership_composition_and_order(shapes_probe, shapes_images):
    run = evaluate_scorer(
        BagOfWordsOracle.from_probe(shapes_probe), shapes_probe, shapes_images, bootstrap=200
    )
    acc, chance, n = _pooled(run, STRUCTURE_TASKS)
    assert _within_chance(acc, chance, n)
    assert all(run["tasks"][t]["accuracy"]["tie_rate_pct"] == 0 for t in STRUCTURE_TASKS)
    # Without random tie-breaking every same-bag distractor ties, and ties count as wrong.
    tied = evaluate_scorer(
        BagOfWordsOracle.from_probe(shapes_probe, tie_break=False), shapes_probe, shapes_images, bootstrap=200
    )
    for t in ("attribute_ownership", "semantic_structure"):
        assert tied["tasks"][t]["accuracy"]["acc_pct"] == 0.0
        assert tied["tasks"][t]["accuracy"]["tie_rate_pct"] == 100.0


def test_scene_graph_oracle_scores_100(shapes_probe, shapes_images):
    run = evaluate_scorer(
        SceneGraphOracle.from_probe(shapes_probe), shapes_probe, shapes_images, bootstrap=200
    )
    for t, entry in run["tasks"].items():
        assert entry["accuracy"]["acc_pct"] == 100.0, t
        for name, cat in entry["categories"].items():
            assert cat["acc_pct"] == 100.0, (t, name)
        if "pairs" in entry:
            assert entry["pairs"]["all"]["group"]["pct"] == 100.0


class _Constant(Scorer):
    name = "constant"

    def score(self, images, texts):
        return torch.zeros(len(images), len(texts))

    def score_pairs(self, images, texts):
        return torch.zeros(len(texts))


def test_ties_count_as_wrong_and_are_reported(shapes_probe, shapes_images):
    run = evaluate_scorer(_Constant(), shapes_probe, shapes_images, bootstrap=200)
    for entry in run["tasks"].values():
        assert entry["accuracy"]["acc_pct"] == 0.0 and entry["accuracy"]["tie_rate_pct"] == 100.0
        assert entry["accuracy"]["winners"] == {"tie": 100.0}


def test_heuristic_baselines_on_balanced_negation_score_50(shapes_probe, shapes_images):
    for s in (
        NeverNotScorer(),
        ShorterScorer(),
        UnigramLMScorer(["the circle is red", "the square is not blue"]),
    ):
        neg = evaluate_scorer(s, shapes_probe, shapes_images, bootstrap=200)["tasks"]["negation"]
        assert neg["accuracy"]["acc_pct"] == 50.0
        assert neg["categories"]["affirmative_true"]["acc_pct"] == 100.0
        assert neg["categories"]["negated_true"]["acc_pct"] == 0.0


def test_heuristics_tie_on_same_bag_distractors_and_earn_exactly_chance(shapes_probe, shapes_images):
    run = evaluate_scorer(
        UnigramLMScorer(["a red circle", "the big star"]), shapes_probe, shapes_images, bootstrap=200
    )
    for t in ("semantic_structure", "attribute_ownership"):
        acc = run["tasks"][t]["accuracy"]
        assert acc["tie_rate_pct"] == 100.0 and acc["acc_pct"] == pytest.approx(acc["chance_pct"])
    swap = run["tasks"]["relationship_composition"]["categories"]["swap"]
    assert swap["acc_pct"] == 50.0 and swap["tie_rate_pct"] == 100.0


def test_expected_tie_credit_is_one_over_the_number_of_tied_options():
    it = _item(n=4, correct=1)
    assert judge(it, np.array([[0.5, 0.5, 0.5, 0.1]]), "expected").correct == pytest.approx(1 / 3)
    assert judge(it, np.array([[0.5, 0.5, 0.5, 0.1]])).correct == 0.0
    assert judge(it, np.array([[0.5, 0.2, 0.5, 0.1]]), "expected").correct == 0.0
    assert judge(it, np.array([[0.2, 0.2, 0.1, 0.1]]), "expected").pairwise == {"distractor": 0.5}


def test_unigram_lm_prefers_frequent_words_and_shorter_sentences():
    lm = UnigramLMScorer(["a red circle", "a red square", "a blue circle"])
    s = lm.score(
        torch.zeros(1, 3, 4, 4, dtype=torch.uint8), ["a red circle", "a green circle", "a red circle red"]
    )
    assert s[0, 0] > s[0, 1] and s[0, 0] > s[0, 2]


def test_grounded_gap_is_model_minus_best_blind(shapes_probe, shapes_images):
    oracle = SceneGraphOracle.from_probe(shapes_probe, unknown="empty")  # blind images show an empty scene
    run = run_probe(oracle, shapes_probe, images=shapes_images, lm_captions=["a red circle"], bootstrap=200)
    for g in run["gaps"].values():
        a = g["accuracy"]
        assert a["best_blind_pct"] == max(a["blinds_pct"].values())
        assert a["gap_pct"] == pytest.approx(100.0 - a["best_blind_pct"])
        assert a["ci_low"] <= a["gap_pct"] <= a["ci_high"]
    assert set(run["blinds"]) == {
        "null_image",
        "mean_image",
        "shuffled_image",
        "never_not",
        "shorter",
        "unigram_lm",
    }
    # A text-only view of the oracle cannot solve counterfactual pairs: both images are the same blind image.
    assert (
        run["blinds"]["null_image"]["tasks"]["relationship_composition"]["pairs"]["all"]["group"]["pct"]
        == 0.0
    )


def _item(fmt="choice", correct=0, n=2, kinds=None, scoring="accuracy"):
    return ProbeItem(
        id="x",
        task="relationship_composition",
        category="c",
        images=["a"] * (2 if fmt == "pair" else 1),
        options=[f"o{j}" for j in range(n)],
        correct=correct,
        format=fmt,
        option_kinds=kinds,
        scoring=scoring,
    )


def test_winoground_text_image_and_group_scores():
    it = _item("pair", [0, 1])
    r = judge(it, np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert r.text and r.image and r.correct and not r.tie
    r = judge(it, np.array([[0.9, 0.1], [0.95, 0.99]]))  # right caption per image, wrong image for caption 0
    assert r.text and not r.image and not r.correct
    r = judge(it, np.array([[0.5, 0.5], [0.2, 0.8]]))
    assert r.tie and not r.text


def test_which_distractor_won_and_pairwise_accuracy():
    it = _item(n=4, correct=2, kinds=["orthogonal", "inverse", "gold", "orthogonal"])
    r = judge(it, np.array([[0.1, 0.9, 0.5, 0.2]]))
    assert not r.correct and r.winner == "inverse"
    assert r.pairwise == {"orthogonal": True, "inverse": False}


def test_categories_under_25_items_are_not_broken_out():
    results = []
    for k in range(40):
        it = _item(correct=0)
        it.id, it.category = f"i{k}", "big" if k < 25 else "small"
        results.append(judge(it, np.array([[1.0, 0.0]])))
    s = summarize_results(results, bootstrap=100)["relationship_composition"]
    assert set(s["categories"]) == {"big"} and s["small_categories"] == {
        "categories": {"small": 15},
        "n_items": 15,
    }
    assert s["accuracy"]["n"] == 40


class _WrongShape(Scorer):
    name = "wrong-shape"
    is_dual = True

    def score(self, images, texts):
        return torch.zeros(len(images), len(texts) + 1)


class _BadProbability(_Constant):
    score_semantics = "itm_probability"

    def score_pairs(self, images, texts):
        return torch.full((len(texts),), 3.0)


def test_a_wrong_score_shape_names_the_item_and_its_line(shapes_probe, shapes_images):
    with pytest.raises(ModelError, match="shape") as err:
        evaluate_scorer(_WrongShape(), shapes_probe, shapes_images)
    first = shapes_probe.items[0]
    assert repr(first.id) in str(err.value) and f"items.jsonl:{first.line}" in str(err.value)


def test_probabilities_outside_the_unit_interval_are_refused(shapes_probe, shapes_images):
    with pytest.raises(ModelError, match="itm_probability"):
        evaluate_scorer(_BadProbability(), shapes_probe, shapes_images)


def test_tiny_dual_and_cross_encoders_run_through_the_harness(shapes_probe, shapes_images):
    from alignlab.models.factory import load_model

    few = type(shapes_probe)(
        shapes_probe.items[::6], shapes_probe.path, shapes_probe.root, shapes_probe.sha256
    )
    imgs = shapes_images[::6]
    for spec, cfg in (("tiny-dual", TINY_DUAL), ("tiny-cross", TINY_CROSS)):
        model = load_model(spec, config=cfg)
        run = run_probe(model, few, images=imgs, blinds=("null_image", "never_not"), bootstrap=100)
        assert run["score_semantics"] == model.score_semantics
        for t in run["model"]["tasks"].values():
            assert 0 <= t["accuracy"]["acc_pct"] <= 100
        # dual: one matrix per block; the scores must equal scoring each item on its own
        if spec == "tiny-dual":
            it, ims = few.items[0], imgs[0]
            direct = model.score(
                torch.stack([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in ims]), it.options
            ).numpy()
            assert np.allclose(run["model"]["per_item"][it.id].scores, direct, atol=1e-5)
