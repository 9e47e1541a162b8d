"""Atomic writes get the umask's mode, and the temp files of interrupted writes are removed when a run
starts."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from alignlab.core.io import atomic_path, current_umask, remove_stale_temps, write_json


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomically_written_files_get_the_mode_of_a_plain_open(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    write_json(tmp_path / "r.json", {"a": 1})
    with atomic_path(tmp_path / "w.pt") as tmp:
        torch.save({"x": 1}, tmp)
    with open(tmp_path / "plain", "w"):
        pass
    for name in ("r.json", "w.pt", "plain"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_only_temp_files_named_like_atomic_writes_are_removed(tmp_path):
    (tmp_path / "ckpt").mkdir()
    stale = [tmp_path / "ckpt" / ".last.pt.k2j_8x0q.tmp", tmp_path / ".results.json.abcdefgh.tmp"]
    kept = [
        tmp_path / "notes.tmp",
        tmp_path / ".x.tmp",
        tmp_path / "ckpt" / "last.pt",
        tmp_path / ".a.toolong123.tmp",
    ]
    for p in stale + kept:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert remove_stale_temps(tmp_path / "absent") == []


class _Task:
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)

    def num_batches(self, epoch):
        return 4

    def batch(self, epoch, index):
        return slice(index * 8, index * 8 + 8)

    def loss(self, model, b):
        return {"mse_loss": ((model(self.x[b]) - self.y[b]) ** 2).mean()}


def test_a_resumed_run_removes_the_temp_file_its_interrupted_checkpoint_left(tmp_path):
    from alignlab.train.loop import StopTraining, TrainConfig, fit

    cfg = TrainConfig(epochs=2, batch_size=8, log_every=1)

    def stop_in_epoch_two(state):
        if state["epoch"] == 1:
            raise StopTraining

    torch.manual_seed(0)
    with pytest.raises(StopTraining):
        fit(torch.nn.Linear(4, 1), _Task(), cfg, tmp_path, callbacks=[stop_in_epoch_two])
    leftover = tmp_path / "ckpt" / ".last.pt.q1w2e3r4.tmp"
    leftover.write_bytes(b"half a checkpoint")
    torch.manual_seed(0)
    result = fit(torch.nn.Linear(4, 1), _Task(), cfg, tmp_path)
    assert result.resumed_from_step == 4 and result.steps == 8
    assert not leftover.exists()
    assert not [p for p in tmp_path.rglob("*.tmp")]
