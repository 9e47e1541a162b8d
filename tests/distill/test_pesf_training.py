"""PESF-KD trainer: freezing verified, released-code ablations, cost accounting, diagnostics, determinism."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from alignlab.core.errors import ModelError
from alignlab.distill.pesf.adapter import LogitAdapter
from alignlab.distill.pesf.models import count_parameters
from alignlab.distill.pesf.trainer import (
    DataConfig,
    KDConfig,
    KDModel,
    KDTask,
    TeacherConfig,
    build_kd_model,
    run_kd,
    train_teacher,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # One thread: on a shared machine several OpenMP threads mostly wait for each other.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_cfg(method: str = "pesf", **kw) -> KDConfig:
    base = dict(
        method=method,
        data=DataConfig(name="digits", max_train=160),
        teacher=TeacherConfig(width=8, epochs=2, lr=1e-2),
        student_width=4,
        epochs=2,
        batch_size=32,
        lr=1e-2,
        adapter_bottleneck=4,
    )
    base.update(kw)
    return KDConfig(**base)


@pytest.fixture(scope="module")
def digits():
    return small_cfg().data.load()


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    t, summary = train_teacher(small_cfg(), digits, tmp_path_factory.mktemp("teacher"))
    return t


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_pesf_trains_only_adapter_and_student_and_leaves_the_teacher_bit_identical(digits, teacher, tmp_path):
    before = _state(teacher)
    res = run_kd(small_cfg("pesf"), digits, tmp_path / "pesf", teacher)
    assert res.teacher_unchanged is True
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and batch-norm buffers
    adapter = LogitAdapter(teacher.feature_dim, 10, 4)
    assert res.trainable["teacher"] == {"trainable": 0, "total": count_parameters(teacher)}
    assert res.trainable["head"]["trainable"] == count_parameters(adapter)
    assert res.trainable["student"]["trainable"] == res.trainable["student"]["total"] > 0
    # Counted by hooks during training: one teacher forward per step and no backward through it.
    assert res.cost["teacher_fwd_per_step"] == 1.0
    assert res.cost["teacher_bwd_per_step"] == 0.0
    # The adapter actually moved away from its zero initialisation (it was trained).
    saved = json.loads((tmp_path / "pesf" / "results.json").read_text())
    assert saved["teacher_unchanged"] is True
    assert saved["metrics"]["test_adapted_entropy"] != pytest.approx(
        saved["metrics"]["test_teacher_entropy"], abs=1e-6
    )


def test_released_cv_code_mode_gives_exactly_the_vanilla_kd_student(digits, teacher, tmp_path):
    # The adapter is trained but the student never sees it: the student must be bit-identical to KD's.
    kd_model = build_kd_model(small_cfg("kd"), digits, teacher)
    run_kd(small_cfg("kd"), digits, tmp_path / "kd", model=kd_model)
    unused_model = build_kd_model(small_cfg("pesf_adapter_unused"), digits, teacher)
    res = run_kd(small_cfg("pesf_adapter_unused"), digits, tmp_path / "unused", model=unused_model)
    for k, v in kd_model.student.state_dict().items():
        assert torch.equal(v, unused_model.student.state_dict()[k])
    assert res.trainable["head"]["trainable"] > 0  # ... although an adapter was trained alongside
    # Whereas PESF proper (adapter feeding the student) gives a different student.
    pesf_model = build_kd_model(small_cfg("pesf"), digits, teacher)
    run_kd(small_cfg("pesf"), digits, tmp_path / "pesf", model=pesf_model)
    assert not all(
        torch.equal(v, pesf_model.student.state_dict()[k]) for k, v in kd_model.student.state_dict().items()
    )


def test_typo_variant_trains_the_whole_teacher_and_costs_teacher_backward_passes(digits, teacher, tmp_path):
    import copy

    own = copy.deepcopy(teacher)
    before = _state(own)
    res = run_kd(small_cfg("pesf_teacher_unfrozen"), digits, tmp_path / "typo", own)
    assert res.teacher_unchanged is False
    assert not all(torch.equal(before[k], own.state_dict()[k]) for k in before)
    assert res.trainable["teacher"]["trainable"] == count_parameters(teacher)
    assert res.cost["teacher_bwd_per_step"] == 1.0
    frozen = run_kd(small_cfg("pesf"), digits, tmp_path / "pesf", teacher)
    # Memory accounting: training the teacher adds its gradients, AdamW state and saved activations.
    assert res.cost["memory"]["activations_mib"] > frozen.cost["memory"]["activations_mib"]
    assert res.cost["memory"]["total_mib"] > frozen.cost["memory"]["total_mib"]
    assert res.cost["trainable_params"] == frozen.cost["trainable_params"] + count_parameters(teacher)


def test_dml_trains_a_fresh_teacher_online(digits, tmp_path):
    res = run_kd(small_cfg("dml"), digits, tmp_path / "dml")
    assert res.teacher_unchanged is False
    assert res.cost["teacher_fwd_per_step"] == 1.0 and res.cost["teacher_bwd_per_step"] == 1.0
    assert res.trainable["teacher"]["trainable"] == res.trainable["teacher"]["total"] > 0


def test_frozen_teacher_check_catches_batch_norm_drift(digits, teacher, tmp_path, monkeypatch):
    # Without KDModel.train keeping the frozen teacher in eval mode, its batch-norm running statistics
    # would move during training: the bit-identity check must notice and refuse the run.
    import copy

    own = copy.deepcopy(teacher)
    monkeypatch.setattr(KDModel, "train", nn.Module.train)
    with pytest.raises(ModelError, match="frozen teacher"):
        run_kd(small_cfg("kd"), digits, tmp_path / "drift", own)


def test_diagnostics_are_logged_every_epoch_and_plotted(digits, teacher, tmp_path):
    run_kd(small_cfg("kd_learned_t", epochs=3), digits, tmp_path / "lt", teacher)
    dev = [
        json.loads(line)["dev"]
        for line in (tmp_path / "lt" / "log.jsonl").read_text().splitlines()
        if '"dev"' in line
    ]
    assert len(dev) == 3
    for d in dev:
        for role in ("teacher", "adapted", "student"):
            for stat in ("entropy", "maxp", "ece", "acc"):
                assert f"{role}_{stat}" in d
        assert d["gap"] == pytest.approx(d["student_entropy"] - d["adapted_entropy"])
        assert d["tau"] > 0
    png = tmp_path / "lt" / "plots" / "diagnostics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_gives_the_same_numbers(digits, teacher, tmp_path):
    a = run_kd(small_cfg("pesf"), digits, tmp_path / "a", teacher)
    b = run_kd(small_cfg("pesf"), digits, tmp_path / "b", teacher)
    c = run_kd(small_cfg("pesf", seed=1), digits, tmp_path / "c", teacher)
    keys = [k for k in a.metrics if k.startswith("test_")]
    assert [a.metrics[k] for k in keys] == [b.metrics[k] for k in keys]
    assert [a.metrics[k] for k in keys] != [c.metrics[k] for k in keys]


def test_adapter_starts_as_the_identity_on_the_teacher_logits(digits, teacher):
    model = build_kd_model(small_cfg("pesf"), digits, teacher)
    task = KDTask(small_cfg("pesf").spec, digits, small_cfg("pesf"))
    logits, _ = task.logits(model, "val")
    assert torch.equal(logits["adapted"], logits["teacher"])
