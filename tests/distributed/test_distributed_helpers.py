"""The distributed helpers in one process: shards, padding, batch slicing, and identities without a group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignlab.core.errors import ConfigError
from alignlab.train import distributed as ddp_
from alignlab.train.losses import InfoNCELoss, VSEMaxLoss, build_loss


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 5, 7, 13])
def test_eval_shards_are_equal_sized_and_cover_every_item_once_after_dropping_padding(n, world):
    m = -(-n // world)
    blocks = [ddp_.eval_shard(n, world, r) for r in range(world)]
    assert all(len(b) == m for b in blocks)  # equal shapes for the collective
    # What gather_eval keeps: the concatenation cut to n is range(n), in order.
    assert np.concatenate(blocks)[:n].tolist() == list(range(n))
    assert all(0 <= i < n for b in blocks for i in b)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [3, 7, 8])
def test_training_shards_partition_the_global_batch_in_order(n, world):
    ranges = [ddp_.shard_range(n, world, r) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [hi - lo for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_shard_batch_cuts_every_field_of_a_batch_alike():
    x = torch.arange(10).view(5, 2)
    batch = (x, [f"t{i}" for i in range(5)], np.arange(5))
    parts = [ddp_.shard_batch(batch, r, 2) for r in range(2)]
    assert parts[0][1] == ["t0", "t1", "t2"] and parts[1][1] == ["t3", "t4"]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    d = ddp_.shard_batch({"a": x, "b": list("abcde")}, 1, 2)
    assert d["b"] == ["d", "e"] and d["a"].shape == (2, 2)


def test_shard_batch_refuses_fields_of_different_lengths_and_batches_smaller_than_the_world():
    with pytest.raises(ConfigError, match="differ in length"):
        ddp_.shard_batch((torch.zeros(4), [1, 2]), 0, 2)
    with pytest.raises(ConfigError, match="cannot be split over 4 ranks"):
        ddp_.shard_batch(torch.zeros(3), 0, 4)


def test_without_a_process_group_gathers_and_reductions_are_identities():
    x = torch.randn(3, 4, requires_grad=True)
    out, offset = ddp_.all_gather_with_grad(x)
    assert out is x and offset == 0
    assert ddp_.gather_sizes(3) == [3] and ddp_.label_offset(3) == 0
    assert torch.equal(ddp_.gather_eval(x.detach(), 3), x.detach())
    assert ddp_.all_reduce_mean({"a": 2.0}) == {"a": 2.0}
    assert ddp_.broadcast_object({"k": 1}) == {"k": 1}
    assert not ddp_.is_distributed() and ddp_.world_size() == 1 and ddp_.is_main()


def test_init_from_env_does_nothing_without_a_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ddp_.init_from_env("cpu") is False
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        ddp_.init_from_env("cpu")


@pytest.mark.parametrize(
    "make",
    [
        lambda g: InfoNCELoss(gather=g),
        lambda g: VSEMaxLoss(gather=g),
        lambda g: build_loss("vse-sum", 0.2, gather=g, local_loss=False),
    ],
)
def test_gathering_losses_equal_the_plain_ones_in_one_process(make):
    img, txt = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    w = torch.rand(6)
    a, b = make(True)(img, txt, torch.tensor(10.0), w), make(False)(img, txt, torch.tensor(10.0), w)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_build_loss_passes_no_gather_arguments_unless_asked():
    assert isinstance(build_loss("infonce"), InfoNCELoss) and not build_loss("infonce").gather
    assert build_loss("vse-max", 0.3, gather=True).gather and build_loss("vse-max", 0.3).margin == 0.3


def test_sampler_batches_refuse_a_sampler_built_for_another_rank():
    class OneRank:
        world_size, rank = 2, 1

        def set_epoch(self, epoch):
            pass

        def __iter__(self):
            return iter([[0, 1]])

        def __len__(self):
            return 1

    task = ddp_.SamplerBatches(OneRank(), lambda idx: idx)
    assert task.local_batch(0, 0, 1, 2) == [0, 1]
    with pytest.raises(ConfigError, match="rank 1 of 2"):
        task.local_batch(0, 0, 0, 2)


def test_commands_that_cannot_scale_out_refuse_a_launcher_with_one_line(monkeypatch, capsys, tmp_path):
    from alignlab.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["mmt", "train", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not run under torchrun" in err[0] and "WORLD_SIZE" in err[0]
    assert not (tmp_path / "m").exists()
    monkeypatch.setenv("WORLD_SIZE", "1")
    from alignlab.train.distributed import refuse_launcher

    refuse_launcher("anything")  # one process: nothing to refuse
