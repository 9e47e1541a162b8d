"""Named retrieval protocols: registry, folds with renumbered relevance, sizes, ShapesWorld sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignlab.core.errors import ConfigError, DataError
from alignlab.data.pairs import ImageTextPairs, from_shapes
from alignlab.data.shapes import ShapesConfig, ShapesWorld
from alignlab.retrieval import (
    PROTOCOLS,
    evaluate_embeddings,
    evaluate_protocol,
    evaluate_protocol_scores,
    evaluate_scores,
    get_protocol,
)
from alignlab.retrieval.protocols import Protocol, fold_pairs


def synthetic_pairs(n_images: int, seed: int = 0, max_per_image: int = 3) -> ImageTextPairs:
    """1–max_per_image captions per image, caption ids interleaved across images (not contiguous)."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, max_per_image + 1, size=n_images)
    m = int(per.sum())
    owner = np.repeat(np.arange(n_images), per)
    ids = rng.permutation(m)  # caption id of the k-th (image-ordered) caption
    relevance = [[] for _ in range(n_images)]
    for k, c in enumerate(ids):
        relevance[owner[k]].append(int(c))
    return ImageTextPairs(
        [f"im{i}" for i in range(n_images)],
        [f"cap{c}" for c in range(m)],
        relevance,
        image_array=np.zeros((n_images, 1, 1, 3), np.uint8),
        name="synthetic",
    )


def test_all_named_protocols_are_registered():
    assert set(PROTOCOLS.names()) == {
        "f30k-1k",
        "coco-5k",
        "coco-1k-5fold",
        "shapes-1k",
        "shapes-5k",
        "shapes-1k-source",
        "shapes-5k-source",
        "shapes-1k-disc",
        "shapes-5k-disc",
    }
    assert get_protocol("coco-1k-5fold").folds == 5 and get_protocol("coco-5k").folds == 1


def test_unknown_protocol_is_a_config_error_listing_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        get_protocol("coco-1k")
    assert "coco-1k-5fold, coco-5k, f30k-1k, shapes-1k" in str(e.value)
    with pytest.raises(ConfigError):
        evaluate_protocol("f30k-5k", np.zeros((1, 2)), np.zeros((1, 2)), synthetic_pairs(1))


def test_coco_1k_folds_are_sequential_thousands_with_renumbered_captions():
    pairs = synthetic_pairs(5000)
    rng = np.random.default_rng(1)
    img = torch.from_numpy(rng.standard_normal((5000, 16)).astype(np.float32))
    txt = torch.from_numpy(rng.standard_normal((pairs.n_captions, 16)).astype(np.float32))
    # Captions must follow their images into each fold: make image i's captions close to image i.
    for i, ids in enumerate(pairs.relevance):
        txt[ids] = img[i] + 0.8 * txt[ids]
    rep = evaluate_protocol("coco-1k-5fold", img, txt, pairs, ks=(1, 5, 10))
    assert len(rep.folds) == 5
    for k, fold in enumerate(rep.folds):
        images = list(range(1000 * k, 1000 * (k + 1)))
        cap_ids = [c for i in images for c in pairs.relevance[i]]  # every caption here belongs to one image
        assert sorted(rep.fold_caption_ids[k].tolist()) == sorted(cap_ids)
        # Built by hand: the fold's images against only the fold's captions, relevance renumbered.
        local = {c: j for j, c in enumerate(rep.fold_caption_ids[k].tolist())}
        relevance = [[local[c] for c in pairs.relevance[i]] for i in images]
        own = evaluate_embeddings(img[1000 * k : 1000 * (k + 1)], txt[rep.fold_caption_ids[k]], relevance)
        np.testing.assert_array_equal(fold.i2t_ranks, own.i2t_ranks)
        np.testing.assert_array_equal(fold.t2i_ranks, own.t2i_ranks)
        assert fold.n_images == 1000 and fold.n_captions == len(cap_ids)
    for key in ("i2t_R@1", "t2i_R@10", "rsum", "i2t_medr", "t2i_meanr"):
        assert rep.metrics[key] == pytest.approx(np.mean([f.metrics[key] for f in rep.folds]))
    assert rep.metrics["i2t_tied_queries"] == sum(f.metrics["i2t_tied_queries"] for f in rep.folds)
    # 1K folds have a fifth of the distractors: the same embeddings score higher than on 5K.
    five_k = evaluate_protocol("coco-5k", img, txt, pairs)
    assert rep.metrics["rsum"] > five_k.metrics["rsum"]
    d = rep.to_dict()
    assert len(d["folds"]) == 5 and "5 sequential folds" in d["definitions"]["folds"]
    assert len(rep.i2t_ranks) == 5000 and len(rep.t2i_ranks) == len(rep.t2i_caption_ids) == pairs.n_captions


def test_score_matrix_protocol_equals_embedding_protocol():
    small = Protocol("test-3fold", "3 folds of 200 images", 600, folds=3)  # any Protocol instance works
    pairs = synthetic_pairs(600, seed=3, max_per_image=7)
    rng = np.random.default_rng(2)
    img = rng.integers(-2, 3, size=(600, 6)).astype(np.float32)  # exact integer scores: ties included
    txt = rng.integers(-2, 3, size=(pairs.n_captions, 6)).astype(np.float32)
    for ties in ("pessimistic", "optimistic", "index"):
        a = evaluate_protocol(small, img, txt, pairs, ties=ties)
        b = evaluate_protocol_scores(small, img @ txt.T, pairs, ties=ties)
        assert [f.n_images for f in a.folds] == [200, 200, 200]
        np.testing.assert_array_equal(a.i2t_ranks, b.i2t_ranks)
        np.testing.assert_array_equal(a.t2i_ranks, b.t2i_ranks)
        assert a.metrics == b.metrics and a.ties["i2t_tied_queries"] > 0


def test_fold_pairs_keeps_captions_shared_across_images():
    pairs = ImageTextPairs(
        ["a", "b", "c"],
        ["x", "y", "z", "w"],
        [[0, 1], [1, 2], [3]],
        image_array=np.zeros((3, 1, 1, 3), np.uint8),
    )
    sub, cap_ids = fold_pairs(pairs, [1, 2])
    assert cap_ids.tolist() == [1, 2, 3] and sub.relevance == [[0, 1], [2]]
    assert sub.captions == ["y", "z", "w"]


def test_protocol_rejects_data_of_the_wrong_size():
    pairs = synthetic_pairs(900)
    emb = np.zeros((900, 2), np.float32)
    with pytest.raises(DataError, match="f30k-1k evaluates 1000 images .* has 900"):
        evaluate_protocol("f30k-1k", emb, np.zeros((pairs.n_captions, 2)), pairs)
    pairs = synthetic_pairs(1000)
    with pytest.raises(DataError, match="caption rows"):
        evaluate_protocol("f30k-1k", np.zeros((1000, 2)), np.zeros((pairs.n_captions - 1, 2)), pairs)
    with pytest.raises(DataError, match="score matrix has shape"):
        evaluate_protocol_scores("f30k-1k", np.zeros((1000, 3)), pairs)
    with pytest.raises(DataError, match="needs data"):
        get_protocol("coco-5k").load()


def test_single_fold_protocol_is_the_plain_evaluation():
    pairs = synthetic_pairs(1000, seed=5)
    rng = np.random.default_rng(0)
    s = rng.standard_normal((1000, pairs.n_captions))
    rep = evaluate_protocol_scores("f30k-1k", s, pairs)
    plain = evaluate_scores(s, pairs.relevance)
    assert rep.metrics == plain.metrics and len(rep.folds) == 1
    assert "f30k-1k" in rep.definitions["protocol"] and rep.to_dict()["n_images"] == 1000


@pytest.fixture(scope="module")
def shapes_1k() -> ImageTextPairs:
    return get_protocol("shapes-1k").load()


def test_shapes_1k_is_the_documented_shapesworld_test_split(shapes_1k):
    p = get_protocol("shapes-1k")
    pairs = shapes_1k
    direct = from_shapes(ShapesWorld(ShapesConfig()).generate(1000, 0, "test"))
    assert pairs.n_images == 1000 and pairs.image_ids == direct.image_ids
    assert pairs.captions == direct.captions and pairs.relevance == direct.relevance
    assert np.array_equal(pairs.image_array, direct.image_array)
    assert pairs.image_ids[0] == "test_000000"
    five = get_protocol("shapes-5k")
    assert five.shapes_seed == p.shapes_seed == 0 and five.n_images == 5000 and five.shapes_config == {}


@pytest.mark.slow
def test_shapes_5k_starts_with_shapes_1k():
    five = get_protocol("shapes-5k").load()
    one = get_protocol("shapes-1k").load()
    assert five.image_ids[:1000] == one.image_ids
    assert five.subset(range(1000)).captions == one.captions


# --- truth relevance and the perfect-ranker ceiling -------------------------------------------------------


def test_shapes_protocols_label_with_truth_and_keep_source_labels_by_name():
    from alignlab.retrieval.protocols import with_relevance

    assert get_protocol("shapes-1k-source").relevance == "source"
    assert with_relevance("shapes-1k", "source").name == "shapes-1k-source"
    assert with_relevance("shapes-1k-source", "truth").name == "shapes-1k"
    assert with_relevance("shapes-1k", None) is get_protocol("shapes-1k")
    small = Protocol("shapes-tiny", "", 40, shapes_seed=0)
    truth, source = small.load(), with_relevance(small, "source").load()
    assert truth.relevance_kind == "truth" and source.relevance_kind == "source"
    assert truth.sources == source.relevance and truth.captions == source.captions
    assert any(len(t) > len(s) for t, s in zip(truth.relevance, source.relevance, strict=True))
    with pytest.raises(ConfigError):
        with_relevance("shapes-1k", "oracle")


def test_perfect_ranker_is_100_under_truth_and_its_closed_form_under_source_labels():
    from alignlab.retrieval.protocols import perfect_ranker

    # Caption 2 ("there is a circle", written for image 1) is true of images 0 and 1; the others are unique.
    truth = [[0, 2], [1, 2]]
    pairs = ImageTextPairs(
        ["a", "b"],
        ["c0", "c1", "c2"],
        truth,
        relevance_kind="truth",
        source_relevance=[[0], [1, 2]],
        image_array=np.zeros((2, 1, 1, 3), np.uint8),
    )
    from alignlab.retrieval.protocols import _ceiling

    full = _ceiling(truth, truth, 3, (1, 2))
    assert all(v == 100.0 for k, v in full.items() if k != "rsum") and full["rsum"] == 400.0
    src = _ceiling(truth, [[0], [1, 2]], 3, (1, 2))
    # i2t: image 0 ranks {c0, c2} first in random order: R@1 = 1/2 (c0 first); image 1: both of its own.
    assert src["i2t_R@1"] == pytest.approx(75.0) and src["i2t_R@2"] == 100.0
    # t2i: c2 is true of both images and labelled for image 1 only: 1/2 at R@1; c0, c1 are unique.
    assert src["t2i_R@1"] == pytest.approx(100 * (1 + 1 + 0.5) / 3) and src["t2i_R@2"] == 100.0
    only = perfect_ranker(pairs, (1, 2))  # no scenes: one labelling only, and 100 under it
    assert set(only) == {"truth"} and only["truth"]["rsum"] == 400.0


def test_protocol_reports_carry_the_ceiling_under_each_labelling():
    p = Protocol("shapes-tiny", "", 60, shapes_seed=0)
    pairs = p.load()
    rng = np.random.default_rng(0)
    rep = evaluate_protocol(
        p, rng.standard_normal((60, 8)), rng.standard_normal((pairs.n_captions, 8)), pairs
    )
    d = rep.to_dict()
    assert d["relevance"] == "truth" and set(d["perfect_ranker"]) == {"truth", "source"}
    assert d["perfect_ranker"]["truth"]["rsum"] == 600.0
    assert 0 < d["perfect_ranker"]["source"]["rsum"] < 600.0
    assert "perfect ranker under source labels" in rep.format()
    # The same ceiling from a perfect score matrix scored under the source labels, with random tie order:
    # its expected value is the closed form (checked here on one direction's R@1 by averaging orders).
    truth = np.zeros((60, pairs.n_captions))
    for i, row in enumerate(pairs.relevance):
        truth[i, row] = 1.0
    source = pairs.with_relevance("source")
    draws = [
        evaluate_scores(truth + 1e-6 * rng.random(truth.shape), source.relevance, ks=(1,)).metrics["t2i_R@1"]
        for _ in range(40)
    ]
    assert np.mean(draws) == pytest.approx(d["perfect_ranker"]["source"]["t2i_R@1"], abs=3.0)


def test_shapes_1k_relevance_is_the_evaluators_answer_for_sampled_captions(shapes_1k):
    from alignlab.data.shapes import Scene, evaluate, form_from_dict

    pairs = shapes_1k
    scenes = [Scene.from_dict(m["scene"]) for m in pairs.image_meta]
    inverse = pairs.caption_images()
    for c in np.random.default_rng(0).choice(pairs.n_captions, 15, replace=False):
        form = form_from_dict(pairs.caption_meta[int(c)]["form"])
        assert inverse[int(c)] == [i for i, s in enumerate(scenes) if evaluate(form, s)]
