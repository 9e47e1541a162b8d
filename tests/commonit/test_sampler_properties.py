"""Property tests (hypothesis) of CommonITBatchSampler over simulated ranks."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignlab.commonit import CommonITBatchSampler

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def setups(draw, orders=("proportional",), leftovers=("partial", "pad", "drop", "mix")):
    n_groups = draw(st.integers(1, 6))
    sizes = draw(st.lists(st.integers(1, 40), min_size=n_groups, max_size=n_groups))
    gids = np.repeat(np.arange(n_groups), sizes)
    gids = gids[np.random.default_rng(draw(st.integers(0, 999))).permutation(gids.size)]
    kw = dict(
        batch_size=draw(st.integers(1, 5)),
        world_size=draw(st.integers(1, 3)),
        grad_accum_steps=draw(st.integers(1, 3)),
        seed=draw(st.integers(0, 10**6)),
        order=draw(st.sampled_from(orders)),
        leftover=draw(st.sampled_from(leftovers)),
        small_groups=draw(st.sampled_from(["merge", "drop"])),
    )
    return gids.tolist(), kw


def make_ranks(gids, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return [CommonITBatchSampler(gids, rank=r, **kw) for r in range(kw["world_size"])]
        except Exception as e:  # every group dropped: an explicit error, not an empty epoch
            assert "leaves nothing" in str(e) or "no complete optimizer step" in str(e), e
            return None


def steps_of(ranks, epoch=0):
    """Optimizer steps as seen by the ranks: step k = every rank's k-th group of A micro-batches."""
    A = ranks[0].grad_accum_steps
    per_rank = []
    for s in ranks:
        s.set_epoch(epoch)
        per_rank.append(list(s))
    n = len(per_rank[0])
    return [[b for r in per_rank for b in r[k : k + A]] for k in range(0, n, A)], per_rank


@SETTINGS
@given(setups(leftovers=("partial", "mix")))
def test_every_kept_example_is_used_exactly_once_per_epoch_under_the_exhaustive_policy(setup):
    gids, kw = setup
    ranks = make_ranks(gids, **kw)
    if ranks is None:
        return
    s = ranks[0]
    steps, _ = steps_of(ranks)
    counts = Counter(i for step in steps for b in step for i in b)
    kept = {i for i in range(len(gids)) if s.group_of([i])[0] >= 0}
    assert set(counts) == kept
    # Repeats only top up a leftover too small to give every micro-batch one example; they are counted.
    assert sum(counts.values()) - len(kept) == s.report["leftover"]["repeats_per_epoch"]
    if s.report["leftover"]["repeats_per_epoch"] == 0:
        assert set(counts.values()) == {1}


@SETTINGS
@given(setups(orders=("proportional", "uniform", "temperature")))
def test_every_optimizer_step_draws_from_one_group_across_all_ranks(setup):
    gids, kw = setup
    ranks = make_ranks(gids, **kw)
    if ranks is None:
        return
    s = ranks[0]
    steps, per_rank = steps_of(ranks)
    assert len(steps) == s.steps_per_epoch
    mixed_allowed = s.report["leftover"]["mixed_units"]
    mixed = 0
    for step in steps:
        assert all(len(b) > 0 for b in step)  # no rank ever gets an empty micro-batch
        groups = set(s.group_of([i for b in step for i in b]).tolist())
        assert -1 not in groups
        mixed += len(groups) > 1
    assert mixed <= mixed_allowed  # only the pooled leftovers of leftover='mix' may mix groups


@SETTINGS
@given(setups(orders=("proportional", "uniform", "temperature")))
def test_rank_shards_are_disjoint_and_equally_long(setup):
    gids, kw = setup
    ranks = make_ranks(gids, **kw)
    if ranks is None:
        return
    _, per_rank = steps_of(ranks, epoch=3)
    assert len({len(s) for s in ranks}) == 1
    assert all(len(b) == len(ranks[0]) for b in per_rank)
    if kw["order"] == "proportional" and ranks[0].report["leftover"]["repeats_per_epoch"] == 0:
        # Without repeats, no example appears on two ranks (or twice on one).
        flat = [i for b in per_rank for batch in b for i in batch]
        assert len(flat) == len(set(flat))
    else:
        # With repeats, the positions in the plan are still disjoint: each (step, slot) is one rank's.
        plan = ranks[0].plan(3)
        assert plan.order.size >= sum(len(batch) for b in per_rank for batch in b)


@SETTINGS
@given(setups(orders=("proportional", "uniform", "temperature")), st.integers(0, 5))
def test_same_seed_gives_the_same_order_and_other_epochs_give_other_orders(setup, epoch):
    gids, kw = setup
    a, b = make_ranks(gids, **kw), make_ranks(gids, **kw)
    if a is None:
        return
    assert steps_of(a, epoch)[1] == steps_of(b, epoch)[1]
    s = a[0]
    # With several possible plans, the next epochs cannot all repeat this one.
    if len(gids) >= 8 and s.steps_per_epoch >= 2:
        here = steps_of(a, epoch)[1]
        assert any(steps_of(a, e)[1] != here for e in range(epoch + 1, epoch + 4))


@SETTINGS
@given(setups(orders=("proportional", "uniform", "temperature")), st.integers(0, 3), st.data())
def test_resuming_mid_epoch_continues_with_the_very_next_batch(setup, epoch, data):
    gids, kw = setup
    ranks = make_ranks(gids, **kw)
    if ranks is None:
        return
    for s in ranks:
        s.set_epoch(epoch)
        full = list(s)
        cut = data.draw(st.integers(0, len(full)))
        s.set_epoch(epoch)
        it = iter(s)
        head = [next(it) for _ in range(cut)]
        state = s.state_dict()
        assert state["position"] == cut and state["epoch"] == epoch
        fresh = CommonITBatchSampler(gids, rank=s.rank, warn=False, **kw)
        fresh.load_state_dict(state)
        fresh.set_epoch(epoch)  # what a training loop does at the start of the (resumed) epoch
        assert head + list(fresh) == full
        fresh.set_epoch(epoch + 1)
        s.set_epoch(epoch + 1)
        assert list(fresh) == list(s)


@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=8), st.integers(2, 8), st.integers(0, 100))
def test_tiny_groups_are_merged_not_lost(sizes, batch_size, seed):
    gids = np.repeat(np.arange(len(sizes)), sizes).tolist()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = CommonITBatchSampler(gids, batch_size, seed=seed)
    small = [g for g, n in enumerate(sizes) if n < batch_size]
    if small:
        assert any("merged" in str(w.message) for w in caught)
    seen = Counter(i for b in s for i in b)
    assert set(seen) == set(range(len(gids)))  # nothing silently untrained


@SETTINGS
@given(setups(), st.floats(0.0, 1.0))
def test_random_mode_and_mix_ratio_use_exactly_the_commonit_data(setup, ratio):
    gids, kw = setup
    kw["world_size"] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            base = CommonITBatchSampler(gids, **kw)
        except Exception:
            return
        other = [
            CommonITBatchSampler(gids, mode="random", **kw),
            CommonITBatchSampler(gids, mix_ratio=ratio, **kw),
        ]
    ref = Counter(i for b in base for i in b)
    for o in other:
        assert len(o) == len(base)
        assert Counter(i for b in o for i in b) == ref
        assert sorted(len(b) for b in o) == sorted(len(b) for b in base)


@pytest.mark.parametrize("homogeneity", ["batch"])
def test_batch_homogeneity_keeps_each_device_batch_in_one_group(homogeneity):
    rng = np.random.default_rng(0)
    gids = rng.integers(0, 4, 200).tolist()
    ranks = [
        CommonITBatchSampler(
            gids, 5, world_size=2, rank=r, grad_accum_steps=2, homogeneity=homogeneity, seed=1
        )
        for r in range(2)
    ]
    per_rank = [list(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1])
    for batches in per_rank:
        for b in batches:
            assert len(set(ranks[0].group_of(b).tolist())) == 1
    flat = [i for r in per_rank for b in r for i in b]
    assert set(flat) == set(range(200))
