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

    code = main(
        [
            "distill",
            "pesf",
            "train",
            "--method",
            "pesf",
            "--data",
            "digits",
            "--out",
            str(tmp_path),
            "--epochs",
            "1",
            "--teacher-epochs",
            "1",
            "--set",
            "data.max_train=120",
            "--set",
            "teacher.width=4",
            "--set",
            "student_width=2",
            "--quiet",
        ]
    )
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


def test_quick_experiment_writes_analysed_claims_and_a_report_with_the_plan_first(quick):
    from alignlab.core.analysis import claims_from_config
    from alignlab.distill.pesf.experiment import ExperimentConfig, arms_of

    out, res = quick
    stored = json.loads((out / "results.json").read_text())
    assert stored["experiment"] == "pesf" and stored["quick"] is True and stored["seeds"] == [0, 1]
    # Quick settings keep the pre-registered plan of the full config: the same claims, in the same order.
    declared = claims_from_config(ExperimentConfig().claims, arms=arms_of(ExperimentConfig()))
    assert [r["claim"] for r in stored["claims"]] == [c.name for c in declared]
    for row in stored["claims"]:
        assert row["n"] == 2
        assert row["verdict"] in ("improves", "hurts", "inconclusive") or row["verdict"].startswith(
            "equivalent"
        )
        assert row["smallest_p"] == 0.5 and row["p_difference"] >= row["smallest_p"]
    # Per-seed values of every arm; per-item correctness lives in the run folders, not in results.json.
    for d in ("digits", "shapes"):
        ms = stored["datasets"][d]["methods"]
        assert set(ms) == set(ExperimentConfig().methods)
        for e in ms.values():
            assert len(e["acc_pct"]) == 2 and all(0.0 <= a <= 100.0 for a in e["acc_pct"])
        items = json.loads((out / "runs" / d / "pesf" / "seed0" / "items.json").read_text())["correct_pct"]
        assert len(items) == stored["datasets"][d]["data"]["sizes"]["test"]
        assert sum(items) / len(items) == pytest.approx(ms["pesf"]["acc_pct"][0])
        assert all(
            ok for m, e in ms.items() if METHODS[m].teacher == "frozen" for ok in e["teacher_unchanged"]
        )
        assert stored["datasets"][d]["floors"]["chance_pct"] == pytest.approx(
            100 / stored["datasets"][d]["data"]["n_classes"]
        )
        # The cost benchmark: DML back-propagates through its wide peer, PESF never through the teacher.
        bench = stored["benchmark"][d]["methods"]
        assert bench["dml"]["teacher_bwd_per_step"] == 1 and bench["pesf"]["teacher_bwd_per_step"] == 0
        assert bench["pesf"]["trainable_params"] < bench["dml"]["trainable_params"]
        assert stored["benchmark"][d]["dml_over_pesf"]["median"] > 0
    report = (out / "report.md").read_text()
    assert "Quick settings: supports no verdict" in report
    plan = report.index("## Pre-registered plan")
    assert plan < report.index("## Pre-registered claims: results") < report.index("## Exploratory")


def test_render_report_of_the_quick_results_is_the_report(quick):
    from alignlab.cli import main
    from alignlab.distill.pesf.experiment import render_report

    out, _ = quick
    stored = json.loads((out / "results.json").read_text())
    assert render_report(stored) == (out / "report.md").read_text()
    assert (
        main(
            [
                "experiment",
                "pesf",
                "--render",
                str(out / "results.json"),
                "--to",
                str(out / "again.md"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (out / "again.md").read_text() == (out / "report.md").read_text()


def test_rerunning_the_experiment_reuses_finished_runs(quick):
    from alignlab.distill.pesf.experiment import run

    out, res = quick
    probe = out / "runs" / "digits" / "pesf" / "seed0" / "record.json"
    before = probe.stat().st_mtime_ns
    again = run(out, quick=True, seeds=None, overrides={})
    assert probe.stat().st_mtime_ns == before
    assert (
        again["datasets"]["digits"]["methods"]["pesf"]["acc_pct"]
        == res["datasets"]["digits"]["methods"]["pesf"]["acc_pct"]
    )


@pytest.mark.parametrize(
    "claim, message",
    [
        (
            "{name: x, treatment: digits/pesf, control: digits/nope,"
            " metric: acc_pct, direction: improves, margin: 1}",
            "which the experiment does not run",
        ),
        (
            "{name: x, treatment: digits/pesf, control: digits/kd,"
            " metric: acc_pct, direction: improves, margin: 0}",
            "margin must be a positive number",
        ),
        (
            "{name: x, treatment: digits/pesf, control: digits/kd,"
            " metric: nll, direction: improves, margin: 1}",
            "does not measure",
        ),
    ],
)
def test_a_bad_claim_fails_in_one_line_before_any_training(tmp_path, capsys, claim, message):
    from alignlab.cli import main

    out = tmp_path / "exp"
    code = main(["experiment", "pesf", "--quick", "--out", str(out), "--set", f"claims=[{claim}]", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not (out / "runs").exists() and not (out / "teachers").exists()


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
