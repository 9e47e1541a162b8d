"""Near-duplicate data, candidate pools, teacher mining and the teacher-score cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignlab.core.config import from_dict
from alignlab.core.errors import ConfigError
from alignlab.data.shapes import Scene, evaluate, form_from_dict
from alignlab.distill.dcd.data import GroupBatches, NearDupConfig, groups_of, near_duplicate_pairs
from alignlab.distill.dcd.miner import TeacherScores, check_pool, draw_pools, select_hard, select_random
from alignlab.distill.dcd.train import DCDRunConfig, torch_threads
from alignlab.models.factory import build_model

TINY_CROSS = {"width": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2, "fusion_layers": 1}


@pytest.fixture(scope="module")
def pairs():
    return near_duplicate_pairs(24, seed=0, split="train", cfg=NearDupConfig(group_size=3))


def test_near_duplicate_groups_have_captions_false_of_every_sibling(pairs):
    assert pairs.n_images == 24
    groups = groups_of(pairs)
    assert groups.tolist() == [g for g in range(8) for _ in range(3)]
    scenes = [Scene.from_dict(m["scene"]) for m in pairs.image_meta]
    for i, ids in enumerate(pairs.relevance):
        assert len(ids) >= 3
        siblings = [j for j in range(pairs.n_images) if groups[j] == groups[i] and j != i]
        for c in ids:
            form = form_from_dict(pairs.caption_meta[c]["form"])
            assert evaluate(form, scenes[i])
            assert not any(evaluate(form, scenes[j]) for j in siblings)
    # siblings look different (one attribute or relation), but share most of the scene
    a, b = scenes[0], scenes[1]
    assert a != b and len(a.objects) == len(b.objects)


def test_near_duplicate_sets_are_deterministic(pairs):
    again = near_duplicate_pairs(24, seed=0, split="train", cfg=NearDupConfig(group_size=3))
    assert again.captions == pairs.captions and np.array_equal(again.image_array, pairs.image_array)
    other = near_duplicate_pairs(24, seed=1, split="train", cfg=NearDupConfig(group_size=3))
    assert other.captions != pairs.captions


def test_group_batches_never_split_a_group_and_depend_only_on_seed_and_epoch(pairs):
    groups = groups_of(pairs)
    gb = GroupBatches(groups, batch_size=7, seed=3)
    batches = gb.batches(0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(24))
    for b in batches:
        assert len(b) <= 7
        assert all((groups == g).sum() == (groups[b] == g).sum() for g in set(groups[b].tolist()))
    again = GroupBatches(groups, batch_size=7, seed=3)
    assert [b.tolist() for b in again.batches(0)] == [b.tolist() for b in batches]
    assert [b.tolist() for b in gb.batches(1)] != [b.tolist() for b in batches]
    with pytest.raises(ConfigError):
        GroupBatches(groups, batch_size=2, seed=0)


def test_pools_hold_neither_own_captions_nor_their_text(pairs):
    batch = np.arange(12)
    pools = draw_pools(batch, pairs, 15, np.random.default_rng(0))
    assert pools.shape == (12, 15)
    in_batch = {c for i in batch for c in pairs.relevance[i]}
    for row, i in enumerate(batch):
        own_text = {pairs.captions[c] for c in pairs.relevance[i]}
        assert len(set(pools[row].tolist())) == 15
        assert not set(pools[row].tolist()) & set(pairs.relevance[i])
        assert not {pairs.captions[c] for c in pools[row]} & own_text
        assert set(pools[row].tolist()) <= in_batch
    # a batch too small for the pool is topped up from the whole set
    small = draw_pools([0, 1], pairs, 15, np.random.default_rng(0))
    assert small.shape == (2, 15) and not set(small[0].tolist()) & set(pairs.relevance[0])


def test_select_hard_keeps_the_teacher_top_k_with_the_positive_aligned_first():
    pos = torch.tensor([0.5, 9.0])
    pool = torch.tensor([[0.25, 3.0, -1.0, 0.75, 2.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    cols, t = select_hard(pos, pool, keep=3, rng=np.random.default_rng(0))
    assert cols.tolist() == [[1, 4, 3], [0, 1, 2]]
    assert t.tolist() == [[0.5, 3.0, 2.0, 0.75], [9.0, 5.0, 4.0, 3.0]]
    assert torch.equal(t[:, 0], pos)


def test_random_mix_replaces_a_share_of_the_kept_by_other_pool_members():
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(50, 15, generator=g)
    cols, t = select_hard(torch.zeros(50), pool, keep=6, rng=np.random.default_rng(1), random_mix=0.5)
    order = torch.argsort(pool, dim=1, descending=True).numpy()
    assert np.array_equal(cols[:, :3], order[:, :3])  # 3 hardest ...
    for row in range(50):  # ... and 3 drawn from the rest, never a duplicate
        assert set(cols[row, 3:].tolist()) <= set(order[row, 3:].tolist())
        assert len(set(cols[row].tolist())) == 6
    assert not np.array_equal(cols[:, 3:], order[:, 3:6])
    assert torch.equal(t[:, 1:], torch.gather(pool, 1, torch.from_numpy(cols)))


def test_random_selection_is_uniform_without_replacement():
    cols = select_random(2000, 15, 7, np.random.default_rng(0))
    assert all(len(set(r)) == 7 for r in cols.tolist())
    counts = np.bincount(cols.reshape(-1), minlength=15) / cols.size
    assert np.allclose(counts, 1 / 15, atol=0.01)


def test_k_not_smaller_than_m_is_a_config_error():
    with pytest.raises(ConfigError, match="smaller than the pool size"):
        check_pool(7, 7)
    with pytest.raises(ConfigError):
        from_dict(DCDRunConfig, {"pool_size": 5, "keep": 8})
    with pytest.raises(ConfigError):
        select_hard(torch.zeros(1), torch.zeros(1, 4), keep=4, rng=np.random.default_rng(0))


def test_teacher_scores_equal_the_models_own_scores(pairs):
    with torch_threads(1):
        _check_teacher_scores(pairs)


def _check_teacher_scores(pairs):
    torch.manual_seed(0)
    cross = build_model("tiny-cross", TINY_CROSS, texts=pairs.captions).eval()
    ts = TeacherScores(cross, pairs)
    imgs, caps = np.array([0, 0, 5, 7]), np.array([3, 40, 2, 11])
    got = ts.pair_scores(imgs, caps)
    want = torch.stack(
        [cross.score(pairs.load_images([i]), [pairs.captions[c]])[0, 0] for i, c in zip(imgs, caps)]
    )
    assert torch.allclose(got, want, atol=1e-5)
    assert ts.pairs_scored == 4
    grid = ts.grid(np.array([1, 2]), np.array([0, 1, 2]))
    assert torch.allclose(grid, cross.score(pairs.load_images([1, 2]), pairs.captions[:3]), atol=1e-5)
    # any other scorer goes through score(); a dual encoder through its embeddings (encoded in one padded
    # batch, hence not bit-equal to one caption at a time)
    dual = build_model(
        "tiny-dual",
        {"width": 32, "embed_dim": 16, "image_channels": [8, 16, 32], "heads": 2},
        texts=pairs.captions,
    ).eval()
    want = torch.stack(
        [dual.score(pairs.load_images([i]), [pairs.captions[c]])[0, 0] for i, c in zip(imgs, caps)]
    )
    assert torch.allclose(TeacherScores(dual, pairs).pair_scores(imgs, caps), want, atol=2e-3)

    class Generic:
        def score(self, images, texts):
            return dual.score(images, texts)

    assert torch.allclose(TeacherScores(Generic(), pairs).pair_scores(imgs, caps), want, atol=2e-3)


# --- pools without false negatives; the old pools as a named ablation ------------------------------------


def old_pools(batch, pairs, pool_size, rng):
    """The pools before truth relevance (reference): only the image's own captions and texts left out."""
    in_batch = [c for i in batch for c in pairs.sources[i]]
    pools = np.empty((len(batch), pool_size), dtype=np.int64)
    for row, i in enumerate(batch):
        own = set(pairs.sources[i])
        own_text = {pairs.captions[c] for c in own}
        cand = [c for c in in_batch if c not in own and pairs.captions[c] not in own_text]
        if len(cand) >= pool_size:
            pools[row] = rng.choice(np.asarray(cand), size=pool_size, replace=False)
            continue
        extra, taken = [], set(cand)
        for c in rng.permutation(pairs.n_captions):
            if len(cand) + len(extra) >= pool_size:
                break
            if int(c) not in own and int(c) not in taken and pairs.captions[int(c)] not in own_text:
                extra.append(int(c))
        pools[row] = rng.permutation(np.asarray(cand + extra))[:pool_size]
    return pools


@pytest.fixture(scope="module")
def big_pairs():
    return near_duplicate_pairs(60, seed=2, split="train", cfg=NearDupConfig(group_size=3))


def _true_in_pools(pairs, batch, pools):
    scenes = [Scene.from_dict(m["scene"]) for m in pairs.image_meta]
    forms = [form_from_dict(m["form"]) for m in pairs.caption_meta]
    return [[evaluate(forms[c], scenes[i]) for c in pools[row]] for row, i in enumerate(batch)]


def test_default_pools_hold_no_caption_true_of_the_image(big_pairs):
    batches = [np.arange(30), np.arange(30, 60), np.array([4, 5])]  # the last is topped up from the whole set
    for k, batch in enumerate(batches):
        pools = draw_pools(batch, big_pairs, 12, np.random.default_rng(k))
        assert not any(any(row) for row in _true_in_pools(big_pairs, batch, pools))
        assert all(len(set(row.tolist())) == 12 for row in pools)


def test_the_source_pool_ablation_reproduces_the_old_pools_and_their_false_negatives(big_pairs):
    false_negative_rows = 0
    for k, batch in enumerate([np.arange(30), np.arange(30, 60), np.array([4, 5])]):
        got = draw_pools(batch, big_pairs, 12, np.random.default_rng(k), exclude="source")
        assert np.array_equal(got, old_pools(batch, big_pairs, 12, np.random.default_rng(k)))
        false_negative_rows += sum(any(row) for row in _true_in_pools(big_pairs, batch, got))
    assert false_negative_rows > 0  # what the default pools remove
    with pytest.raises(ConfigError, match="pool exclusion"):
        draw_pools([0, 1], big_pairs, 4, np.random.default_rng(0), exclude="own")


def test_near_duplicate_evaluation_splits_use_truth_relevance_and_train_keeps_its_own_captions(pairs):
    assert pairs.relevance_kind == "source" and pairs.relevance == pairs.sources
    test = near_duplicate_pairs(24, seed=0, split="test", cfg=NearDupConfig(group_size=3))
    assert (
        test.relevance_kind == "truth"
        and test.sources
        == near_duplicate_pairs(
            24, seed=0, split="test", cfg=NearDupConfig(group_size=3), relevance="source"
        ).relevance
    )
    scenes = [Scene.from_dict(m["scene"]) for m in test.image_meta]
    forms = [form_from_dict(m["form"]) for m in test.caption_meta]
    for i, row in enumerate(test.relevance):
        assert sorted(row) == [c for c in range(test.n_captions) if evaluate(forms[c], scenes[i])]


def test_the_source_pools_ablation_is_a_named_arm_that_reaches_the_miner():
    from alignlab.distill.dcd.train import ARMS, load_run_config

    cfg = load_run_config(dict(ARMS["dcd-source-pools"]))
    assert cfg.pools == "source" and load_run_config(dict(ARMS["dcd"])).pools == "truth"
    with pytest.raises(ConfigError, match="pools"):
        load_run_config({"pools": "none"})
