"""fit() logs: the loss is the interval's mean, TensorBoard mirrors log.jsonl, log.txt is written."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch import nn

from alignlab.core.logs import tensorboard_scalars
from alignlab.core.seed import set_seed
from alignlab.train.loop import StopTraining, TrainConfig, fit


class KnownLossTask:
    """Batch ``i`` of an epoch has loss ``10 * epoch + i`` (plus a zero term that carries a gradient)."""

    def __init__(self, n_batches: int = 10):
        self.n = n_batches

    def num_batches(self, epoch: int) -> int:
        return self.n

    def batch(self, epoch: int, index: int):
        return torch.full((2, 3), float(10 * epoch + index))

    def loss(self, model, batch):
        return {"a_loss": (model(batch) * 0).sum() + batch[0, 0], "b_loss": (model(batch) * 0).sum() + 1.0}

    def batch_size(self, batch) -> int:
        return len(batch)

    def evaluate(self, model):
        return {"score": float(model.weight.detach().sum()), "other": 1.5}


def make_model():
    set_seed(0)
    return nn.Linear(3, 1)


def records(run):
    return [json.loads(s) for s in (run / "log.jsonl").read_text().splitlines()]


def test_logged_loss_is_the_mean_over_the_interval_and_the_rest_is_flushed(tmp_path):
    fit(
        make_model(),
        KnownLossTask(),
        TrainConfig(epochs=2, log_every=4, lr=0.1, select_metric=None),
        tmp_path,
    )
    train = [r for r in records(tmp_path) if "loss" in r]
    # Steps 1-4 have losses 0..3, steps 5-8 4..7, steps 9-12 8, 9, 10, 11 (epoch 2's batches are 10 + i) ...
    assert [r["step"] for r in train] == [4, 8, 12, 16, 20]
    assert [r["a_loss"] for r in train] == [1.5, 5.5, 9.5, 13.5, 17.5]
    assert all(r["loss"] == pytest.approx(r["a_loss"] + 1.0) for r in train)
    assert all(r["samples_s"] > 0 for r in train)
    fit(
        make_model(),
        KnownLossTask(n_batches=9),
        TrainConfig(epochs=1, log_every=4, select_metric=None),
        tmp_path / "rest",
    )
    rest = [r for r in records(tmp_path / "rest") if "loss" in r]
    assert [(r["step"], r["a_loss"]) for r in rest] == [
        (4, 1.5),
        (8, 5.5),
        (9, 8.0),
    ]  # the last, short interval


def test_interval_mean_survives_a_crash_and_resume(tmp_path):
    cfg = TrainConfig(epochs=2, log_every=4, checkpoint_every=3, lr=0.1, select_metric=None)
    fit(make_model(), KnownLossTask(), cfg, tmp_path / "full")

    def crash(state):
        if state["step"] == 5:  # after the checkpoint at step 3, inside the interval 5-8
            raise StopTraining

    with pytest.raises(StopTraining):
        fit(make_model(), KnownLossTask(), cfg, tmp_path / "crash", callbacks=[crash])
    fit(make_model(), KnownLossTask(), cfg, tmp_path / "crash")
    strip = [{k: v for k, v in r.items() if k != "samples_s"} for r in records(tmp_path / "full")]
    assert [{k: v for k, v in r.items() if k != "samples_s"} for r in records(tmp_path / "crash")] == strip


def _event_scalars(run):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea_mod.EventAccumulator(str(run / "tensorboard"), size_guidance={ea_mod.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _jsonl_scalars(run):
    want: dict[str, list[tuple[int, float]]] = {}
    for rec in records(run):
        for tag, value in tensorboard_scalars(rec).items():
            want.setdefault(tag, []).append((rec["step"], value))
    return want


def _assert_same(got, want):
    assert set(got) == set(want)
    for tag in want:
        assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in want[tag]], rel=1e-6), tag


def test_tensorboard_events_hold_the_scalars_of_log_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    fit(
        make_model(),
        KnownLossTask(),
        TrainConfig(epochs=2, log_every=3, lr=0.1, select_metric="score"),
        tmp_path,
    )
    got, want = _event_scalars(tmp_path), _jsonl_scalars(tmp_path)
    assert {
        "train/a_loss",
        "train/b_loss",
        "train/loss",
        "train/lr",
        "train/samples_s",
        "dev/score",
        "dev/other",
    } == set(want)
    _assert_same(got, want)
    assert "epoch 2 dev" in (tmp_path / "log.txt").read_text()


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = TrainConfig(epochs=2, log_every=1, checkpoint_every=3, lr=0.1, select_metric=None)

    def crash(state):
        if state["step"] == 5:
            raise StopTraining

    with pytest.raises(StopTraining):
        fit(make_model(), KnownLossTask(), cfg, tmp_path, callbacks=[crash])
    fit(make_model(), KnownLossTask(), cfg, tmp_path)
    got = _event_scalars(tmp_path)
    assert [s for s, _ in got["train/loss"]] == list(range(1, 21))
    _assert_same(got, _jsonl_scalars(tmp_path))
    assert "resuming" in (tmp_path / "log.txt").read_text()


def test_without_tensorboard_training_goes_on_with_one_debug_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    fit(make_model(), KnownLossTask(), TrainConfig(epochs=1, log_every=5, select_metric=None), tmp_path)
    assert not (tmp_path / "tensorboard").exists()
    assert len(records(tmp_path)) == 3  # two loss lines, one dev line
    debug = [
        line
        for line in (tmp_path / "log.txt").read_text().splitlines()
        if "tensorboard is not installed" in line
    ]
    assert len(debug) == 1 and " DEBUG " in debug[0]
