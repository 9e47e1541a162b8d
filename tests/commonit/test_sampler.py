"""CommonITBatchSampler: policies, errors, epochs, resuming and use in a DataLoader."""

from __future__ import annotations

import random
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from alignlab.commonit import CommonITBatchSampler, CommonITWarning
from alignlab.core.errors import AlignlabError, ConfigError, DataError, ResumeError


def groups(*sizes):
    return [g for g, n in enumerate(sizes) for _ in range(n)]


def test_small_group_under_error_policy_names_the_group_and_the_needed_size():
    gids = ["big"] * 20 + ["tiny"] * 3
    with pytest.raises(ConfigError) as e:
        CommonITBatchSampler(gids, 4, small_groups="error")
    assert "'tiny' (3)" in str(e.value) and "4 examples" in str(e.value)


def test_batch_larger_than_every_group_is_an_error_under_the_error_policy():
    with pytest.raises(AlignlabError, match="2 group"):
        CommonITBatchSampler(groups(5, 6), 8, small_groups="error")


def test_a_group_too_small_for_one_step_across_ranks_and_accumulation_is_small():
    # 2 ranks x 2 accumulation x batch 3 = 12 examples per step; a group of 10 cannot fill one.
    with pytest.raises(ConfigError, match="one optimizer step of 2 rank"):
        CommonITBatchSampler(groups(30, 10), 3, world_size=2, grad_accum_steps=2, small_groups="error")


def test_drop_policy_warns_and_leaves_the_small_group_out():
    gids = groups(12, 2)
    with pytest.warns(CommonITWarning, match="dropped 1 group"):
        s = CommonITBatchSampler(gids, 4, small_groups="drop")
    seen = {i for b in s for i in b}
    assert seen == set(range(12))
    assert s.report["small_groups"]["dropped_examples"] == 2


def test_merge_policy_warns_and_trains_the_merged_examples():
    gids = groups(12, 2, 3)
    with pytest.warns(CommonITWarning, match="merged 2 group"):
        s = CommonITBatchSampler(gids, 4)
    assert {i for b in s for i in b} == set(range(17))
    assert s.report["small_groups"]["merged_examples"] == 5


def test_leftover_drop_warns_with_the_count_and_changes_the_dropped_subset_each_epoch():
    gids = groups(10, 7)
    with pytest.warns(CommonITWarning, match="leaves 5 of 17"):
        s = CommonITBatchSampler(gids, 4, leftover="drop")
    used = []
    for epoch in range(4):
        s.set_epoch(epoch)
        used.append(frozenset(i for b in s for i in b))
    assert all(len(u) == 12 for u in used)
    assert len(set(used)) > 1


def test_pad_leftover_fills_every_micro_batch_from_the_same_group():
    s = CommonITBatchSampler(groups(10, 7), 4, leftover="pad")
    batches = list(s)
    assert all(len(b) == 4 for b in batches)
    assert all(len(set(s.group_of(b).tolist())) == 1 for b in batches)
    assert s.report["leftover"]["repeats_per_epoch"] == 2 + 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"rank": 2, "world_size": 2}, "rank 2"),
        ({"order": "sorted"}, "unknown order"),
        ({"mix_ratio": 1.5}, "mix_ratio"),
        ({"temperature": 0.0}, "temperature"),
        ({"steps_per_epoch": 3}, "steps_per_epoch"),
        ({"leftover": "keep"}, "unknown leftover"),
    ],
)
def test_bad_options_are_config_errors(kwargs, message):
    args = {"batch_size": 2, **kwargs}
    with pytest.raises(ConfigError, match=message):
        CommonITBatchSampler(groups(5, 5), **args)


def test_a_missing_group_id_names_the_example():
    with pytest.raises(DataError) as e:
        CommonITBatchSampler(["a", "b", None, "a"], 1)
    assert e.value.where == "group_ids[2]"


def test_empty_group_ids_are_a_data_error():
    with pytest.raises(DataError, match="empty"):
        CommonITBatchSampler([], 2)


def test_string_integer_and_array_labels_give_the_same_plan():
    base = groups(9, 5, 7)
    as_str = [f"g{g}" for g in base]
    a = list(CommonITBatchSampler(base, 3, seed=4))
    b = list(CommonITBatchSampler(as_str, 3, seed=4))
    c = list(CommonITBatchSampler(np.asarray(base, dtype=np.int32) + 100, 3, seed=4))
    assert a == b == c


def test_set_epoch_reaches_the_sampler_inside_a_dataloader_and_changes_the_order():
    data = list(range(40))
    s = CommonITBatchSampler(groups(16, 12, 12), 4, seed=7)
    loader = DataLoader(data, batch_sampler=s)
    assert len(loader) == len(s)
    orders = []
    for epoch in range(3):
        s.set_epoch(epoch)
        orders.append([b.tolist() for b in loader])
    assert orders[0] != orders[1] != orders[2]
    s.set_epoch(1)
    assert [b.tolist() for b in loader] == orders[1]


def test_sampler_never_touches_the_global_generators():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    s = CommonITBatchSampler(groups(30, 20), 4, mix_ratio=0.5)
    for e in range(2):
        s.set_epoch(e)
        list(s)
    after = (random.getstate(), np.random.get_state()[1], torch.get_rng_state())
    assert before[0] == after[0]
    assert np.array_equal(before[1], after[1])
    assert torch.equal(before[2], after[2])


def test_resume_builds_only_the_remaining_batches(monkeypatch):
    s = CommonITBatchSampler(groups(40, 30), 2, seed=3)
    it = iter(s)
    head = [next(it) for _ in range(11)]
    state = s.state_dict()
    fresh = CommonITBatchSampler(groups(40, 30), 2, seed=3)
    fresh.load_state_dict(state)
    built = []
    real = fresh._micro_batch
    monkeypatch.setattr(fresh, "_micro_batch", lambda plan, k: built.append(k) or real(plan, k))
    tail = list(fresh)
    assert built == list(range(11, len(s)))
    assert head + tail == [b for b in CommonITBatchSampler(groups(40, 30), 2, seed=3)]


def test_state_from_other_settings_is_refused():
    a = CommonITBatchSampler(groups(20, 20), 4, seed=0)
    state = a.state_dict()
    for other in (
        CommonITBatchSampler(groups(20, 20), 4, seed=1),
        CommonITBatchSampler(groups(20, 20), 2, seed=0),
        CommonITBatchSampler(groups(21, 19), 4, seed=0),
    ):
        with pytest.raises(ResumeError, match="different data or settings"):
            other.load_state_dict(state)
    with pytest.raises(ResumeError, match="malformed"):
        a.load_state_dict({"epoch": 0})


def test_state_at_a_later_epoch_resumes_that_epoch():
    a = CommonITBatchSampler(groups(20, 20), 4, seed=0)
    a.set_epoch(5)
    it = iter(a)
    next(it)
    b = CommonITBatchSampler(groups(20, 20), 4, seed=0)
    b.load_state_dict(a.state_dict())
    assert b.epoch == 5
    a.set_epoch(5)
    assert list(b) == list(a)[1:]


def test_temperature_order_follows_n_to_the_one_over_t():
    gids = groups(900, 100)
    share = {}
    for order, t in (("temperature", 1.0), ("uniform", 1.0), ("temperature", 1e6)):
        s = CommonITBatchSampler(gids, 1, order=order, temperature=t, steps_per_epoch=4000, seed=0)
        share[(order, t)] = Counter(s.group_of([b[0] for b in s]).tolist())[1] / 4000
    assert abs(share[("temperature", 1.0)] - 0.1) < 0.02
    assert abs(share[("uniform", 1.0)] - 0.5) < 0.03
    assert abs(share[("temperature", 1e6)] - 0.5) < 0.03


def test_mix_ratio_turns_that_share_of_steps_into_random_steps():
    s = CommonITBatchSampler(groups(400, 400), 4, mix_ratio=0.25, seed=0)
    labels = [g for g, _ in s.steps()]
    assert len(labels) == 200
    assert labels.count(-1) == 50
    pure = CommonITBatchSampler(groups(400, 400), 4, seed=0)
    assert [g for g, _ in pure.steps()].count(-1) == 0


def test_random_mode_mixes_groups_within_steps():
    s = CommonITBatchSampler(groups(200, 200), 8, mode="random", seed=0)
    mixed = sum(len(set(s.group_of(b).tolist())) > 1 for b in s)
    assert mixed > 0.9 * len(s)


def test_large_integer_arrays_take_the_fast_path_and_stay_exact():
    rng = np.random.default_rng(0)
    gids = rng.integers(0, 50, 200_000).astype(np.int32)
    s = CommonITBatchSampler(gids, 8, world_size=4, grad_accum_steps=2, seed=0, warn=False)
    plan = s.plan(0)
    counts = np.bincount(plan.order, minlength=gids.size)
    assert counts.min() >= 1
    assert int(counts.sum()) - gids.size == s.report["leftover"]["repeats_per_epoch"]
    for u in range(0, plan.group.size, 97):
        assert set(gids[plan.unit(u)].tolist()) == {int(plan.group[u])}


def test_docstring_example_holds():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = CommonITBatchSampler(["a"] * 6 + ["b"] * 4, batch_size=2, seed=0)
    assert len(list(s)) == len(s) == 5
