"""``alignlab distill pesf`` commands, the quick ``alignlab experiment pesf`` and the demo stage."""

from __future__ import annotations

import json

import pytest
import torch

from alignlab.core.errors import ConfigError
from alignlab.distill.pesf.trainer import METHODS


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_methods_command_lists_every_method(capsys):
    from alignlab.cli import main

    assert main(["distill", "pesf", "methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS:
        assert name in out
    assert "teacher (from scratch)" in out  # DML trains its wide peer from scratch


def test_train_command_writes_results_and_reports_freezing(tmp_path, capsys):
    from alignlab.cli import main

    code = main(["distill", "pesf", "train", "--method", "pesf", "--data", "digits", "--out", str(tmp_path),
                 "--epochs", "1", "--teacher-epochs", "1", "--set", "data.max_train=120", "--set", "teacher.width=4",
                 "--set", "student_width=2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "teacher weights bit-identical after training: True" in out
    assert "trainable parameters: teacher 0 of" in out
    result = json.loads((tmp_path / "digits-pesf-seed0" / "results.json").read_text())
    assert result["model"] == "pesf" and result["data"] == "digits"
    assert 0.0 <= result["metrics"]["test_student_acc"] <= 1.0
    assert result["manifest"]["config_sha256"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from alignlab.distill.pesf.experiment import run

    out = tmp_path_factory.mktemp("exp")
    return out, run(out, quick=True, seeds=None, overrides={})


def test_quick_experiment_runs_every_method_over_seeds_and_writes_verdicts(quick):
    out, res = quick
    d = res["datasets"]["digits"]
    assert set(d["methods"]) == set(METHODS)
    assert res["seeds"] == [0, 1]
    for m, e in d["methods"].items():
        assert len(e["acc"]) == 2 and all(0.0 <= a <= 1.0 for a in e["acc"])
        if m != "kd":
            assert set(e["vs_baseline"]) >= {"delta", "p_randomization", "p_welch", "ci_low", "ci_high"}
    v = res["verdicts"]["digits"]
    assert set(v) == {"pesf_vs_kd", "adapter_vs_temperature", "pesf_vs_dml", "released_cv_code",
                      "released_nlp_typo", "adapter_kl_term"}
    # The released CV code trains an adapter the student never sees: its students equal KD's, seed by seed.
    assert v["released_cv_code"]["answer"] == "identical"
    costs = {m: e["cost"] for m, e in d["methods"].items()}
    assert costs["pesf"]["teacher_bwd_per_step"] == 0 and costs["dml"]["teacher_bwd_per_step"] == 1
    assert costs["pesf"]["trainable_params"] < costs["pesf_teacher_unfrozen"]["trainable_params"]
    assert all(e["teacher_unchanged"] == [True, True] for m, e in d["methods"].items()
               if METHODS[m].teacher == "frozen")
    report = (out / "report.md").read_text()
    for m in METHODS:
        assert f"| {m} |" in report
    assert (out / "plots" / "pesf_digits.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "results.json").read_text())["experiment"] == "pesf"


def test_rerunning_the_experiment_reuses_finished_runs(quick):
    from alignlab.distill.pesf.experiment import run

    out, res = quick
    probe = out / "runs" / "digits" / "pesf" / "seed0" / "results.json"
    before = probe.stat().st_mtime_ns
    again = run(out, quick=True, seeds=None, overrides={})
    assert probe.stat().st_mtime_ns == before
    assert again["datasets"]["digits"]["methods"]["pesf"]["acc"] == res["datasets"]["digits"]["methods"]["pesf"]["acc"]


def test_experiment_rejects_unknown_methods_before_training(tmp_path):
    from alignlab.distill.pesf.experiment import run

    with pytest.raises(ConfigError, match="unknown method"):
        run(tmp_path, quick=True, seeds=[0], overrides={"methods": ["kd", "pesff"]})
    assert not (tmp_path / "runs").exists()


def test_demo_stage_quick_writes_a_table_and_the_diagnostics_plot(tmp_path):
    from alignlab.demo import DemoContext
    from alignlab.distill.pesf.demo import DEMO_METHODS, demo_stage

    ctx = DemoContext(out=tmp_path, quick=True, seed=0)
    lines = demo_stage(ctx)
    text = "\n".join(lines)
    for m in DEMO_METHODS:
        assert f"| {m} |" in text
    assert "matches vanilla KD exactly" in text
    assert (tmp_path / "pesf" / "pesf" / "plots" / "diagnostics.png").exists()
