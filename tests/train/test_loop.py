"""The training loop: exact resume, model selection by a declared dev metric, logs and bad config."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from alignlab.core.errors import ResumeError
from alignlab.core.seed import derive_seed, set_seed
from alignlab.train.loop import StopTraining, TrainConfig, fit, load_best


class RegressionTask:
    """Noisy linear regression with dropout in the model, so RNG state matters for exact resume."""

    def __init__(self, n: int = 96, batch_size: int = 16, seed: int = 0, dev_metric_drift: bool = False):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
        self.bs = batch_size
        self.seed = seed

    def num_batches(self, epoch: int) -> int:
        return len(self.x) // self.bs

    def batch(self, epoch: int, index: int):
        perm = torch.randperm(
            len(self.x), generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        )
        idx = perm[index * self.bs : (index + 1) * self.bs]
        return self.x[idx], self.y[idx]

    def loss(self, model, batch):
        x, y = batch
        return {"mse_loss": ((model(x) - y) ** 2).mean()}

    def evaluate(self, model):
        with torch.no_grad():
            mse = float(((model(self.x) - self.y) ** 2).mean())
        # A dev metric that is a function of the weights but not monotone in training, so that the best
        # epoch is not simply the last one.
        return {"neg_mse": -mse, "wiggle": float(int(mse * 1e4) % 7)}


def make_model():
    set_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))


def cfg(**kw):
    base = dict(epochs=4, batch_size=16, lr=0.01, log_every=1, select_metric="wiggle", checkpoint_every=2)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_after_a_crash_ends_with_identical_weights_and_metrics(tmp_path):
    full = make_model()
    res_full = fit(full, RegressionTask(), cfg(), tmp_path / "full")

    crashed = make_model()

    def crash(state):
        if state["step"] == 11:  # mid-epoch, after the checkpoint at step 10
            raise StopTraining

    with pytest.raises(StopTraining):
        fit(crashed, RegressionTask(), cfg(), tmp_path / "crash", callbacks=[crash])
    resumed = make_model()  # a fresh process would start from fresh weights
    res = fit(resumed, RegressionTask(), cfg(), tmp_path / "crash")
    assert res.resumed_from_step == 10
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert res.dev_curve == res_full.dev_curve
    # The log has no duplicated steps after the resume.
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "crash" / "log.jsonl").read_text().splitlines()
        if "dev" not in line
    ]
    assert steps == sorted(set(steps)) == list(range(1, res.steps + 1))


def test_best_checkpoint_is_the_argmax_of_the_stored_dev_curve(tmp_path):
    model = make_model()
    res = fit(model, RegressionTask(), cfg(epochs=5), tmp_path / "run")
    values = [e["wiggle"] for e in res.dev_curve]
    best_epoch = values.index(max(values)) + 1
    assert res.best["epoch"] == best_epoch and res.best["value"] == max(values)
    assert best_epoch != len(values)  # the test is only meaningful when best differs from last
    reloaded = make_model()
    info = load_best(reloaded, tmp_path / "run")
    assert info["epoch"] == best_epoch
    # best/ weights differ from final/ weights
    assert any(
        not torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values())
    )


def test_finished_run_is_not_trained_again_and_other_config_is_refused(tmp_path):
    model = make_model()
    res = fit(model, RegressionTask(), cfg(epochs=2), tmp_path / "run")
    again = fit(make_model(), RegressionTask(), cfg(epochs=2), tmp_path / "run")
    assert again.steps == res.steps and again.dev_curve == res.dev_curve
    with pytest.raises(ResumeError, match="different config"):
        fit(make_model(), RegressionTask(), cfg(epochs=3), tmp_path / "run")


def test_gradient_accumulation_steps_the_optimizer_once_per_group(tmp_path):
    res = fit(make_model(), RegressionTask(), cfg(epochs=1, grad_accum=3, select_metric=None), tmp_path / "r")
    assert res.steps == 2  # 6 batches / 3


def test_unknown_select_metric_is_a_clear_error(tmp_path):
    from alignlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="select_metric 'nope'"):
        fit(make_model(), RegressionTask(), cfg(epochs=1, select_metric="nope"), tmp_path / "r")


def test_bad_optimizer_name_is_rejected():
    from alignlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="optimizer"):  # a user's config mistake: one line, exit 2
        TrainConfig(optimizer="adam!")


class RequiredOnlyTask:
    """Only the three required TrainTask methods: every optional hook takes its documented default."""

    def __init__(self) -> None:
        self.inner = RegressionTask()

    def num_batches(self, epoch: int) -> int:
        return self.inner.num_batches(epoch)

    def batch(self, epoch: int, index: int):
        return self.inner.batch(epoch, index)

    def loss(self, model, batch):
        return self.inner.loss(model, batch)


class HookedTask(RegressionTask):
    """All optional hooks: a trainable output scale, a checkpointed counter and a sample count."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.losses_seen = 0
        self.loaded: list[dict] = []

    def loss(self, model, batch):
        self.losses_seen += 1
        x, y = batch
        return {"mse_loss": ((self.scale * model(x) - y) ** 2).mean()}

    def parameters(self):
        return [self.scale]

    def batch_size(self, batch) -> int:
        return len(batch[0])

    def state_dict(self) -> dict:
        return {"losses_seen": self.losses_seen}

    def load_state_dict(self, state: dict) -> None:
        self.loaded.append(dict(state))
        self.losses_seen = state["losses_seen"]


def test_the_optional_hooks_are_recognised_by_their_protocols():
    from alignlab.train.loop import CountsSamples, EvaluatingTask, HasParameters, ShardingTask, StatefulTask

    hooked, bare = HookedTask(), RequiredOnlyTask()
    for proto in (EvaluatingTask, CountsSamples, HasParameters, StatefulTask):
        assert isinstance(hooked, proto) and not isinstance(bare, proto)
    assert not isinstance(hooked, ShardingTask)


def test_a_task_without_evaluate_has_no_dev_curve_and_its_last_epoch_is_best(tmp_path):
    res = fit(make_model(), RequiredOnlyTask(), cfg(epochs=2, select_metric=None), tmp_path / "r")
    assert res.dev_curve == [] and res.best == {"epoch": 2, "step": 12, "metric": None, "value": None}
    assert (tmp_path / "r" / "best" / "model.safetensors").exists()
    assert all(
        "dev" not in json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()
    )


def test_task_parameters_train_and_task_state_resumes_from_the_checkpoint(tmp_path):
    task = HookedTask()
    full = fit(make_model(), task, cfg(), tmp_path / "full")
    assert float(task.scale.detach()) != 0.5  # the task's own parameter was optimised with the model's
    assert full.log[0]["samples_s"] > 0

    def crash(state):
        if state["step"] == 11:  # after the checkpoint at step 10
            raise StopTraining

    with pytest.raises(StopTraining):
        fit(make_model(), HookedTask(), cfg(), tmp_path / "crash", callbacks=[crash])
    resumed_task = HookedTask()
    res = fit(make_model(), resumed_task, cfg(), tmp_path / "crash")
    assert resumed_task.loaded == [{"losses_seen": 10}]  # 10 single-batch steps before the checkpoint
    assert resumed_task.losses_seen == task.losses_seen == 24 and res.resumed_from_step == 10
