"""Bad input to the PESF trainer fails with an AlignlabError before any training step."""

from __future__ import annotations

import pytest
import torch

from alignlab.core.errors import ConfigError, ModelError
from alignlab.distill.pesf.adapter import LogitAdapter
from alignlab.distill.pesf.models import TinyCNN, WideCNN
from alignlab.distill.pesf.trainer import (
    DataConfig,
    KDConfig,
    KDModel,
    TeacherConfig,
    build_kd_model,
    freeze,
    run_kd,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # One thread: on a shared machine several OpenMP threads mostly wait for each other.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg(method: str = "pesf", **kw) -> KDConfig:
    base = dict(
        method=method,
        data=DataConfig(name="digits", max_train=100),
        teacher=TeacherConfig(width=4, epochs=1),
        student_width=2,
        epochs=1,
        adapter_bottleneck=4,
    )
    base.update(kw)
    return KDConfig(**base)


@pytest.fixture(scope="module")
def digits():
    return cfg().data.load()


def _assert_nothing_trained(run_dir):
    assert not (run_dir / "log.jsonl").exists()
    assert not (run_dir / "ckpt").exists()


def test_teacher_with_a_different_class_count_is_rejected(digits, tmp_path):
    teacher = freeze(WideCNN(1, 7, width=4))
    with pytest.raises(ModelError, match="teacher predicts 7 classes but the student predicts 10"):
        run_kd(cfg("kd"), digits, tmp_path / "run", teacher)
    _assert_nothing_trained(tmp_path / "run")


def test_student_with_a_different_class_count_than_the_data_is_rejected(digits, tmp_path):
    teacher = freeze(WideCNN(1, 10, width=4))
    model = KDModel(TinyCNN(1, 5, width=2), teacher, teacher_trainable=False)
    with pytest.raises(ModelError, match="student predicts 5 classes"):
        run_kd(cfg("kd"), digits, tmp_path / "run", model=model)
    _assert_nothing_trained(tmp_path / "run")


def test_adapter_that_does_not_fit_the_teacher_features_is_rejected(digits, tmp_path):
    teacher = freeze(WideCNN(1, 10, width=4))  # features are 8-d
    with pytest.raises(ModelError, match="adapter reads 12-d features but the teacher's are 8-d"):
        run_kd(cfg("pesf", adapter_feature_dim=12), digits, tmp_path / "run", teacher)
    _assert_nothing_trained(tmp_path / "run")


def test_non_frozen_teacher_is_rejected_when_pesf_needs_it_frozen(digits, tmp_path):
    teacher = WideCNN(1, 10, width=4)
    model = KDModel(
        TinyCNN(1, 10, 2), teacher, LogitAdapter(teacher.feature_dim, 10, 4), teacher_trainable=False
    )
    with pytest.raises(ModelError, match="needs a frozen teacher"):
        run_kd(cfg("pesf"), digits, tmp_path / "run", model=model)
    _assert_nothing_trained(tmp_path / "run")


def test_the_required_grad_typo_is_caught(digits, tmp_path):
    # The released NLP code's freezing loop: a misspelt attribute that freezes nothing.
    teacher = WideCNN(1, 10, width=4)
    for p in teacher.parameters():
        p.required_grad = False
    model = KDModel(
        TinyCNN(1, 10, 2), teacher, LogitAdapter(teacher.feature_dim, 10, 4), teacher_trainable=False
    )
    with pytest.raises(ModelError, match="required_grad"):
        run_kd(cfg("pesf"), digits, tmp_path / "run", model=model)


def test_teacher_for_other_images_is_rejected(digits, tmp_path):
    teacher = freeze(WideCNN(3, 10, width=4))  # RGB teacher, grey digits
    with pytest.raises(ModelError, match="teacher cannot run on the data's images"):
        run_kd(cfg("kd"), digits, tmp_path / "run", teacher)


def test_bad_config_values_are_config_errors():
    with pytest.raises(ConfigError, match="unknown KD method"):
        cfg("pesff")
    with pytest.raises(ConfigError, match="temperature"):
        cfg(temperature=0.0)
    with pytest.raises(ConfigError, match="alpha"):
        cfg(alpha=1.5)
    with pytest.raises(ConfigError, match="unknown data set"):
        DataConfig(name="cifar").load()


def test_missing_teacher_is_a_model_error(digits):
    with pytest.raises(ModelError, match="needs a trained teacher"):
        build_kd_model(cfg("kd"), digits, None)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from alignlab.cli import main

    code = main(
        [
            "distill",
            "pesf",
            "train",
            "--method",
            "pesf",
            "--out",
            str(tmp_path),
            "--set",
            "adapter_feature_dim=3",
            "--set",
            "data.max_train=100",
            "--set",
            "teacher.width=4",
            "--teacher-epochs",
            "1",
            "--epochs",
            "1",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: the adapter reads 3-d features") and err.count("\n") == 1
    code = main(["distill", "pesf", "train", "--set", "bogus=1", "--quiet"])
    assert code == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err


def test_a_plain_classifier_teacher_works_for_kd_but_not_for_the_adapter(digits, tmp_path):
    from torch import nn

    plain = freeze(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))  # no features()/head() pair
    with pytest.raises(ModelError, match="no features\\(\\)/head\\(\\) pair"):
        run_kd(cfg("pesf"), digits, tmp_path / "pesf", plain)
    res = run_kd(cfg("kd"), digits, tmp_path / "kd", plain, plot=False)
    assert res.teacher_unchanged is True and res.cost["teacher_fwd_per_step"] == 1.0
