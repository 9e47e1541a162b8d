"""Exact retrieval metrics: conformance with a full-sort reference, chunking, sanity checks, bad input."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from alignlab.core.errors import ConfigError, DataError
from alignlab.core.io import dumps_json
from alignlab.retrieval import (
    chance_metrics,
    evaluate_embeddings,
    evaluate_scores,
    metrics_from_ranks,
    oracle_report,
    sanity_check,
)
from alignlab.retrieval import metrics as metrics_mod

POLICIES = ("pessimistic", "optimistic", "index")


# --- a naive reference: sort every query's candidates in full, written plainly --------------------------


def reference_ranks(scores: np.ndarray, relevant: list[set[int]], ties: str) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each query row = 1-based position of its first relevant candidate in a full sort.

    Ties are broken by the policy: irrelevant first (pessimistic), relevant first (optimistic), or by
    candidate index. Also returns, per query, how many irrelevant candidates tie its best relevant score.
    """
    ranks, tied = [], []
    for q in range(scores.shape[0]):
        row = scores[q].tolist()

        def key(c, row=row, rel=relevant[q]):
            if ties == "pessimistic":
                return (-row[c], c in rel)
            if ties == "optimistic":
                return (-row[c], c not in rel)
            return (-row[c], c)

        order = sorted(range(len(row)), key=key)
        position = next(p for p, c in enumerate(order) if c in relevant[q])
        ranks.append(position + 1)
        best = max(row[c] for c in relevant[q])
        tied.append(sum(1 for c in range(len(row)) if c not in relevant[q] and row[c] == best))
    return np.array(ranks), np.array(tied)


def reference(scores: np.ndarray, relevance: list[list[int]], ties: str) -> dict[str, np.ndarray]:
    n, m = scores.shape
    inverse: list[set[int]] = [set() for _ in range(m)]
    for i, ids in enumerate(relevance):
        for c in ids:
            inverse[c].add(i)
    i2t, i2t_tied = reference_ranks(scores, [set(r) for r in relevance], ties)
    t2i, t2i_tied = reference_ranks(scores.T, inverse, ties)
    return {"i2t": i2t, "t2i": t2i, "i2t_tied": i2t_tied, "t2i_tied": t2i_tied}


def random_relevance(
    rng: np.random.Generator, n_images: int, shared: int = 10
) -> tuple[list[list[int]], int]:
    """1–7 captions per image, shuffled ids (never caption // 5), and a few captions shared by two images."""
    per = rng.integers(1, 8, size=n_images)
    m = int(per.sum())
    perm = rng.permutation(m)
    relevance, start = [], 0
    for k in per:
        relevance.append([int(c) for c in perm[start : start + k]])
        start += k
    for _ in range(shared):
        i, c = int(rng.integers(n_images)), int(rng.integers(m))
        if c not in relevance[i]:
            relevance[i].append(c)
    return relevance, m


def assert_matches_reference(rep, scores: np.ndarray, relevance: list[list[int]], ties: str) -> None:
    ref = reference(scores, relevance, ties)
    np.testing.assert_array_equal(rep.i2t_ranks, ref["i2t"])
    np.testing.assert_array_equal(rep.t2i_ranks, ref["t2i"])
    assert rep.ties["i2t_tied_candidates"] == ref["i2t_tied"].sum()
    assert rep.ties["t2i_tied_candidates"] == ref["t2i_tied"].sum()
    assert rep.metrics["i2t_tied_queries"] == (ref["i2t_tied"] > 0).sum()
    assert rep.metrics["t2i_tied_queries"] == (ref["t2i_tied"] > 0).sum()


# --- conformance ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", POLICIES)
@pytest.mark.parametrize("seed", range(4))
def test_score_matrix_ranks_equal_full_sort_reference_with_many_ties(ties, seed):
    rng = np.random.default_rng(seed)
    relevance, m = random_relevance(rng, 40)
    scores = rng.integers(0, 3 + seed, size=(40, m)).astype(np.float32)  # few levels: ties everywhere
    rep = evaluate_scores(scores, relevance, ks=(1, 5, 10), ties=ties, chunk_size=7)
    assert rep.t2i_method == "one pass"
    assert rep.ties["i2t_tied_queries"] > 0 and rep.ties["t2i_tied_queries"] > 0
    assert_matches_reference(rep, scores, relevance, ties)


@pytest.mark.parametrize("ties", POLICIES)
def test_embedding_ranks_equal_full_sort_reference_with_exact_ties(ties):
    # Small integer embeddings: every dot product is exact in float32, so ties are real and plentiful.
    rng = np.random.default_rng(11)
    relevance, m = random_relevance(rng, 50)
    img = rng.integers(-1, 3, size=(50, 4)).astype(np.float32)
    txt = rng.integers(-1, 3, size=(m, 4)).astype(np.float32)
    rep = evaluate_embeddings(img, txt, relevance, ties=ties, chunk_size=8)
    assert rep.t2i_method == "one pass" and rep.ties["t2i_tied_queries"] > 0
    assert_matches_reference(rep, img.astype(np.float64) @ txt.T.astype(np.float64), relevance, ties)


@pytest.mark.parametrize("ties", POLICIES)
def test_continuous_embeddings_match_reference_on_the_same_float32_scores(ties):
    rng = np.random.default_rng(5)
    relevance, m = random_relevance(rng, 60)
    img = torch.from_numpy(rng.standard_normal((60, 16)).astype(np.float32))
    txt = torch.from_numpy(rng.standard_normal((m, 16)).astype(np.float32))
    rep = evaluate_embeddings(img, txt, relevance, ties=ties, chunk_size=60)  # one block: same GEMM as below
    assert rep.t2i_method == "one pass"
    assert_matches_reference(rep, (img @ txt.T).numpy(), relevance, ties)


def test_any_relevant_caption_in_the_top_k_is_a_hit():
    scores = np.array(
        [
            [0.1, 0.2, 0.9, 0.8],  # image 0: captions 0, 1 relevant; two irrelevant above
            [0.5, 0.4, 0.3, 0.6],
        ]
    )  # image 1: captions 2, 3 relevant; 3 is on top
    rep = evaluate_scores(scores, [[0, 1], [2, 3]], ks=(1, 2, 3))
    assert rep.i2t_ranks.tolist() == [3, 1]  # image 0: best relevant (0.2) has two irrelevant above
    assert rep.t2i_ranks.tolist() == [2, 2, 2, 2]  # each caption: the other image scores it higher
    assert (
        rep.metrics["i2t_R@1"] == 50.0 and rep.metrics["i2t_R@2"] == 50.0 and rep.metrics["i2t_R@3"] == 100.0
    )
    assert rep.metrics["t2i_R@1"] == 0.0 and rep.metrics["t2i_R@2"] == 100.0


def test_tie_policies_order_a_tied_irrelevant_candidate():
    scores = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.7]])
    rel = [[1], [0, 2]]  # image 0: caption 1 ties irrelevant caption 0 (lower index)
    ranks = {t: evaluate_scores(scores, rel, ks=(1,), ties=t).i2t_ranks[0] for t in POLICIES}
    assert ranks == {"pessimistic": 2, "optimistic": 1, "index": 2}
    rep = evaluate_scores(scores, rel, ks=(1,))
    assert rep.ties["i2t_tied_queries"] == 1 and rep.ties["i2t_tied_candidates"] == 1
    assert "pessimistic" in rep.definitions["ties"] and "any" not in rep.definitions["ties"]


# --- chunking and the second pass ---------------------------------------------------------------------------


@pytest.mark.parametrize("ties", POLICIES)
def test_ranks_do_not_depend_on_chunk_size(ties):
    rng = np.random.default_rng(3)
    relevance, m = random_relevance(rng, 45)
    scores = rng.integers(0, 4, size=(45, m)).astype(np.float64)
    img = rng.integers(-2, 3, size=(45, 3)).astype(np.float32)
    txt = rng.integers(-2, 3, size=(m, 3)).astype(np.float32)
    s_reports = [evaluate_scores(scores, relevance, ties=ties, chunk_size=c) for c in (1, 4, 45, 1000)]
    e_reports = [
        evaluate_embeddings(img, txt, relevance, ties=ties, chunk_size=c) for c in (1, 6, 1000, None)
    ]
    for reports in (s_reports, e_reports):
        for rep in reports[1:]:
            np.testing.assert_array_equal(rep.i2t_ranks, reports[0].i2t_ranks)
            np.testing.assert_array_equal(rep.t2i_ranks, reports[0].t2i_ranks)
            assert rep.metrics == reports[0].metrics


@pytest.mark.parametrize("ties", POLICIES)
def test_second_pass_takes_over_when_near_ties_overflow_the_memory_bound(ties, monkeypatch):
    monkeypatch.setattr(metrics_mod, "_BAND_MIN", 0)
    rng = np.random.default_rng(8)
    relevance, m = random_relevance(rng, 30)
    scores = rng.integers(0, 2, size=(30, m)).astype(np.float32)  # half of all entries tie s*
    rep = evaluate_scores(scores, relevance, ties=ties, chunk_size=1)
    assert rep.t2i_method == "second pass"
    assert_matches_reference(rep, scores, relevance, ties)
    img = rng.integers(0, 2, size=(30, 2)).astype(np.float32)
    txt = rng.integers(0, 2, size=(m, 2)).astype(np.float32)
    rep = evaluate_embeddings(img, txt, relevance, ties=ties, chunk_size=1)
    assert rep.t2i_method == "second pass"
    assert_matches_reference(rep, img.astype(np.float64) @ txt.T, relevance, ties)


@pytest.mark.parametrize("ties", POLICIES)
def test_compare_counting_path_equals_sign_counting_path(ties, monkeypatch):
    rng = np.random.default_rng(9)
    relevance, m = random_relevance(rng, 35)
    scores = rng.integers(0, 3, size=(35, m)).astype(np.float32)
    fast = evaluate_scores(scores, relevance, ties=ties, chunk_size=5)
    monkeypatch.setattr(metrics_mod, "_USE_SIGN_COUNTS", False)
    plain = evaluate_scores(scores, relevance, ties=ties, chunk_size=5)
    np.testing.assert_array_equal(fast.i2t_ranks, plain.i2t_ranks)
    assert fast.ties == plain.ties
    assert_matches_reference(plain, scores, relevance, ties)


def test_flush_to_zero_switches_off_sign_counting(monkeypatch):
    monkeypatch.setattr(metrics_mod, "_SIGN_EXACT", {})
    s = torch.zeros(2, 2)
    assert metrics_mod._sign_counts_exact(s, 2)
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        metrics_mod._SIGN_EXACT.clear()
        assert not metrics_mod._sign_counts_exact(s, 2)  # tiny gaps would read as ties: use compares
    finally:
        torch.set_flush_denormal(False)
        metrics_mod._SIGN_EXACT.clear()


def test_a_matmul_outside_the_error_bound_is_caught_and_recomputed(monkeypatch):
    # Pretend the matmul rounds worse than IEEE float32 allows (as TF32 would): the interval check must
    # notice that a caption's best score lies outside [lo, hi] and fall back to the exact second pass.
    def bad_bounds(self, rows, cols, n_cols):
        lo = torch.full((n_cols,), 1e6)
        return lo, lo.clone()

    monkeypatch.setattr(metrics_mod._EmbeddingSource, "column_bounds", bad_bounds)
    rng = np.random.default_rng(2)
    relevance, m = random_relevance(rng, 25)
    img = rng.integers(-1, 2, size=(25, 3)).astype(np.float32)
    txt = rng.integers(-1, 2, size=(m, 3)).astype(np.float32)
    rep = evaluate_embeddings(img, txt, relevance, ties="index")
    assert rep.t2i_method == "second pass"
    assert_matches_reference(rep, img.astype(np.float64) @ txt.T, relevance, "index")


# --- inputs -------------------------------------------------------------------------------------------------


def test_numpy_torch_and_half_precision_inputs_agree():
    rng = np.random.default_rng(4)
    relevance, m = random_relevance(rng, 30)
    img = rng.standard_normal((30, 8)).astype(np.float16)
    txt = rng.standard_normal((m, 8)).astype(np.float16)
    a = evaluate_embeddings(img, txt, relevance)
    b = evaluate_embeddings(torch.from_numpy(img), torch.from_numpy(txt), relevance)
    c = evaluate_embeddings(
        img.astype(np.float32), txt.astype(np.float32), relevance
    )  # fp16 -> fp32 is exact
    for rep in (b, c):
        np.testing.assert_array_equal(rep.i2t_ranks, a.i2t_ranks)
        np.testing.assert_array_equal(rep.t2i_ranks, a.t2i_ranks)
    assert "float32" in a.definitions["similarity"]
    d = evaluate_embeddings(img.astype(np.float64), txt.astype(np.float64), relevance)
    assert "float64" in d.definitions["similarity"]
    assert_matches_reference(d, img.astype(np.float64) @ txt.T.astype(np.float64), relevance, "pessimistic")


def test_normalize_flag_gives_cosine_similarity_and_is_off_by_default():
    img = np.array([[10.0, 0.0], [0.0, 1.0]], np.float32)
    txt = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    rel = [[2], [0, 1]]
    dot = evaluate_embeddings(img, txt, rel, ks=(1,))
    cos = evaluate_embeddings(img, txt, rel, ks=(1,), normalize=True)
    # caption 0 = (1, 1): by dot product image 0 (10) beats relevant image 1 (1); by cosine they tie.
    assert dot.t2i_ranks[0] == 2 and cos.t2i_ranks[0] == 2  # pessimistic tie under cosine
    assert evaluate_embeddings(img, txt, rel, ks=(1,), normalize=True, ties="optimistic").t2i_ranks[0] == 1
    assert "not normalised" in dot.definitions["similarity"] and "cosine" in cos.definitions["similarity"]
    with pytest.raises(DataError, match="all zeros"):
        evaluate_embeddings(np.zeros((2, 2), np.float32), txt, rel, normalize=True)


def test_report_is_json_ready_and_states_its_definitions():
    rng = np.random.default_rng(0)
    relevance, m = random_relevance(rng, 20)
    rep = evaluate_scores(rng.standard_normal((20, m)), relevance)
    d = json.loads(dumps_json(rep.to_dict(include_ranks=True)))
    assert set(d["metrics"]) >= {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "rsum", "i2t_medr", "t2i_meanr"}
    assert "any" in d["definitions"]["R@K"].lower() or "at least one" in d["definitions"]["R@K"]
    assert d["definitions"]["rank"].startswith("1 + number of irrelevant")
    assert len(d["i2t_ranks"]) == 20 and len(d["t2i_ranks"]) == m
    assert rep.i2t_ranks.dtype == np.int64 and rep.t2i_ranks.dtype == np.int64
    assert "| R@1 |" in rep.format()


def test_metrics_follow_their_definitions_from_ranks():
    out = metrics_from_ranks(np.array([1, 2, 6, 11]), np.array([1, 1, 3]), ks=(1, 5, 10))
    assert out["i2t_R@1"] == 25.0 and out["i2t_R@5"] == 50.0 and out["i2t_R@10"] == 75.0
    assert out["t2i_R@1"] == pytest.approx(200 / 3) and out["t2i_R@5"] == 100.0
    assert out["rsum"] == pytest.approx(25 + 50 + 75 + 200 / 3 + 100 + 100)
    assert out["i2t_medr"] == 4.0  # floor(median(1, 2, 6, 11) = 4.0)
    assert out["i2t_meanr"] == 5.0 and out["t2i_medr"] == 1.0


# --- sanity: chance and oracle --------------------------------------------------------------------------


def test_chance_formula_equals_enumerating_every_ranking():
    # 2 images with 1 and 2 captions among 3 captions: average the hit@K over all 3! rankings.
    relevance = [[0], [1, 2]]
    expected = chance_metrics(relevance, 3, ks=(1, 2))
    for k in (1, 2):
        hits = [
            np.mean([any(c in ids for c in perm[:k]) for perm in itertools.permutations(range(3))])
            for ids in relevance
        ]
        assert expected[f"i2t_R@{k}"] == pytest.approx(100 * np.mean(hits))
    assert expected["i2t_meanr"] == pytest.approx(np.mean([1 + 2 / 2, 1 + 1 / 3]))
    assert expected["t2i_R@1"] == pytest.approx(50.0)  # each caption: one of 2 images


def test_random_scores_give_chance_and_an_oracle_gives_100():
    rng = np.random.default_rng(1)
    relevance, m = random_relevance(rng, 300)
    out = sanity_check(relevance, m, ks=(1, 5, 10), seed=0)
    assert out["oracle_ok"] and out["random_ok"], out
    assert all(v == 100.0 for k, v in out["oracle"].items() if "R@" in k)
    assert out["random"]["i2t_R@10"] == pytest.approx(out["chance"]["i2t_R@10"], abs=5)
    # A scorer that is better than chance is flagged as not chance.
    good = evaluate_scores(oracle_dense(relevance, m) + rng.standard_normal((300, m)) * 0.5, relevance)
    assert good.metrics["i2t_R@1"] > out["chance"]["i2t_R@1"] + 20


def oracle_dense(relevance: list[list[int]], m: int) -> np.ndarray:
    s = np.zeros((len(relevance), m))
    for i, ids in enumerate(relevance):
        s[i, ids] = 1.0
    return s


def test_oracle_report_is_perfect_and_matches_a_dense_oracle():
    rng = np.random.default_rng(6)
    relevance, m = random_relevance(rng, 70)
    rep = oracle_report(relevance, m, chunk_size=9)
    assert (rep.i2t_ranks == 1).all() and (rep.t2i_ranks == 1).all() and rep.metrics["rsum"] == 600.0
    dense = evaluate_scores(oracle_dense(relevance, m), relevance)
    assert dense.metrics == rep.metrics


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (dict(image_emb=np.ones((3, 4)), text_emb=np.ones((3, 5))), DataError, "widths differ"),
        (dict(image_emb=np.ones((3,))), DataError, "2-D"),
        (dict(relevance=[[0], [1]]), DataError, "2 entries for 3 images"),
        (dict(relevance=[[0], [], [1, 2]]), DataError, "no relevant caption"),
        (dict(relevance=[[0], [1], [2, 3]]), DataError, "out of range"),
        (dict(relevance=[[0], [1], [1]]), DataError, "caption 2 is relevant to no image"),
        (dict(image_emb=np.array([[1.0, 0], [np.nan, 0], [0, 1]])), DataError, "image_emb row 1 has NaN"),
        (
            dict(text_emb=np.array([[1.0, 0], [np.inf, 0], [0, 1]])),
            DataError,
            "text_emb row 1 has NaN or inf",
        ),
        (dict(ties="random"), ConfigError, "unknown tie policy 'random'"),
        (dict(ks=()), ConfigError, "ks is empty"),
        (dict(ks=(0, 1)), ConfigError, "bad K 0"),
        (dict(ks=(1, 1)), ConfigError, "repeats"),
        (dict(ks=("1",)), ConfigError, "bad K"),
        (dict(chunk_size=0), ConfigError, "chunk_size"),
        (dict(image_emb=np.ones((0, 2)), relevance=[]), DataError, "nothing to evaluate"),
        (dict(image_emb=np.array([["a", "b"]] * 3)), DataError, "not numbers"),
    ],
)
def test_bad_embedding_input_raises_an_error_naming_the_problem(bad, error, message):
    args = dict(image_emb=np.eye(3, 2), text_emb=np.eye(3, 2), relevance=[[0], [1], [2]])
    args.update(bad)
    with pytest.raises(error, match=message):
        evaluate_embeddings(args.pop("image_emb"), args.pop("text_emb"), args.pop("relevance"), **args)


def test_bad_score_matrix_raises_an_error_naming_the_problem():
    rel = [[0], [1]]
    with pytest.raises(DataError, match=r"NaN or inf at \[1, 0\]"):
        evaluate_scores(np.array([[1.0, 0.0], [np.nan, 1.0]]), rel)
    with pytest.raises(DataError, match=r"NaN or inf at \[0, 1\]"):
        evaluate_scores(np.array([[1.0, -np.inf], [0.0, 1.0]]), rel)
    with pytest.raises(DataError, match="2-D"):
        evaluate_scores(np.ones((2, 2, 2)), rel)
    with pytest.raises(DataError, match="3 entries for 2 images"):
        evaluate_scores(np.ones((2, 2)), [[0], [1], [1]])
    with pytest.raises(DataError, match="out of range"):
        evaluate_scores(np.ones((2, 2)), [[0], [2]])
    with pytest.raises(DataError, match="list of caption-id lists"):
        evaluate_scores(np.ones((2, 2)), "01")


def test_overflowing_similarities_are_reported():
    big = np.full((2, 2), 3e38, np.float32)
    with pytest.raises(DataError, match="overflows"):
        evaluate_embeddings(big, big, [[0], [1]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_are_evaluated_on_their_device():
    rng = np.random.default_rng(0)
    relevance, m = random_relevance(rng, 40)
    img = torch.from_numpy(rng.integers(-1, 3, size=(40, 4)).astype(np.float32))
    txt = torch.from_numpy(rng.integers(-1, 3, size=(m, 4)).astype(np.float32))
    for ties in POLICIES:
        cpu = evaluate_embeddings(img, txt, relevance, ties=ties)
        gpu = evaluate_embeddings(img.cuda(), txt.cuda(), relevance, ties=ties)
        np.testing.assert_array_equal(gpu.i2t_ranks, cpu.i2t_ranks)
        np.testing.assert_array_equal(gpu.t2i_ranks, cpu.t2i_ranks)
    assert math.isfinite(gpu.metrics["rsum"])
