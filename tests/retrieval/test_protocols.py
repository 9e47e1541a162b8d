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
    return ImageTextPairs([f"im{i}" for i in range(n_images)], [f"cap{c}" for c in range(m)], relevance,
                          image_array=np.zeros((n_images, 1, 1, 3), np.uint8), name="synthetic")


def test_all_named_protocols_are_registered():
    assert set(PROTOCOLS.names()) == {"f30k-1k", "coco-5k", "coco-1k-5fold", "shapes-1k", "shapes-5k"}
    assert get_protocol("coco-1k-5fold").folds == 5 and get_protocol("coco-5k").folds == 1


def test_unknown_protocol_is_a_config_error_listing_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        get_protocol("coco-1k")
    assert "coco-1k-5fold, coco-5k, f30k-1k, shapes-1k, shapes-5k" in str(e.value)
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
        own = evaluate_embeddings(img[1000 * k:1000 * (k + 1)], txt[rep.fold_caption_ids[k]], relevance)
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
    pairs = ImageTextPairs(["a", "b", "c"], ["x", "y", "z", "w"], [[0, 1], [1, 2], [3]],
                           image_array=np.zeros((3, 1, 1, 3), np.uint8))
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


def test_shapes_1k_is_the_documented_shapesworld_test_split():
    p = get_protocol("shapes-1k")
    pairs = p.load()
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
