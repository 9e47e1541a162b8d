"""The DCD experiment: pre-registered claims analysed by core.analysis, a report rendered from its results,
bad plans refused before any training; and the demo stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignlab.core.analysis import claims_from_config
from alignlab.core.io import read_json
from alignlab.demo import DemoContext
from alignlab.distill.dcd import demo, experiment
from alignlab.distill.dcd.train import TeacherRunConfig


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("dcd-exp") / "exp"
    res = experiment.run(out, quick=True)
    return out, res


def test_quick_run_analyses_every_declared_claim(quick):
    out, res = quick
    saved = read_json(out / "results.json")
    assert saved == res  # write_results returns what it read back
    assert saved["experiment"] == "dcd" and saved["quick"] is True
    declared = claims_from_config(saved["config"]["claims"])
    assert [r["claim"] for r in saved["claims"]] == [c.name for c in declared]
    for row in saved["claims"]:
        assert row["n"] == 2 and row["seeds"] == [0, 1]
        assert row["verdict"].split()[0] in ("improves", "hurts", "equivalent", "inconclusive")
        assert (
            row["plan"]["test"] == "t" and row["p_difference"] >= row["p_difference_raw"]
        )  # Holm never lowers p
    # per-arm, per-seed values of the claimed metric; each is the run folder's own test RSUM
    for arm in saved["config"]["arms"]:
        for seed in (0, 1):
            run = read_json(out / "arms" / arm / f"seed-{seed}" / "results.json")
            assert saved["runs"][arm][str(seed)]["rsum"] == pytest.approx(run["metrics"]["rsum"])
    # a claim's mean difference is the mean of the paired per-seed differences
    row = next(r for r in saved["claims"] if r["plan"]["treatment"] == "dcd")
    t, c = row["plan"]["treatment"], row["plan"]["control"]
    diffs = [saved["runs"][t][s]["rsum"] - saved["runs"][c][s]["rsum"] for s in ("0", "1")]
    assert row["mean_diff"] == pytest.approx(sum(diffs) / 2)


def test_quick_run_reports_floor_initialisations_teacher_and_ceiling(quick):
    out, res = quick
    assert res["ceilings"]["relevance"] == "truth"
    assert res["ceilings"]["perfect_ranker"]["truth"]["rsum"] == pytest.approx(600.0)
    assert 0 < res["floors"]["chance"]["rsum"] < 600
    inits = res["initialisations"]
    assert set(inits["scratch"]) == {"0", "1"} and inits["pretrained"]["metrics"]["rsum"] > 0
    assert res["teacher"]["pretrain"]["images"] > res["data"]["train"]["images"]
    # the -init arms start from the teacher's pretrained towers, at the init learning rate
    cfg = read_json(out / "arms" / "dcd-init" / "seed-0" / "results.json")["manifest"]["config"]
    assert (
        cfg["student_init"].endswith("teacher/pretrain/best")
        and cfg["train"]["lr"] == res["config"]["init_lr"]
    )
    # the no-teacher arm never asked the teacher; DCD logged the weights it applied
    assert res["arms"]["no-kd"]["teacher_pairs_scored"] == 0
    assert "w_max_rel" in res["arms"]["dcd"]["diagnostics"]
    speed = res["speed"]["models"]
    assert speed["teacher"]["pairs_fused"] > 0 and sum(m["kind"] == "dual" for m in speed.values()) == 2


def test_report_is_rendered_from_results_with_the_plan_first(quick):
    out, res = quick
    page = (out / "report.md").read_text(encoding="utf-8")
    assert experiment.render_report(read_json(out / "results.json")) == page
    assert "Quick settings: supports no verdict" in page
    plan, results = page.find("## Pre-registered plan"), page.find("## Pre-registered claims: results")
    assert -1 < plan < results < page.find("## Exploratory")
    assert "chance" in page and "perfect ranker" in page and "before training" in page


def test_teacher_recipe_is_train_py_default():
    exp = experiment.experiment_config(quick=False)
    tcfg = experiment.teacher_config(exp)
    default = TeacherRunConfig()
    assert tcfg.model_config == default.model_config and tcfg.train == default.train
    assert tcfg.pretrain_epochs == default.pretrain_epochs and tcfg.data == exp.data and tcfg.threads == 1
    claims = claims_from_config(exp.claims, arms=exp.arms)  # the full plan is valid for the full arms
    assert all(c.margin > 0 and c.metric == "rsum" for c in claims)


def _cli(tmp_path: Path, *sets: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "alignlab", "experiment", "dcd", "--quick", "--out", str(tmp_path / "bad")]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "claim, needle",
    [
        (
            {
                "name": "x",
                "treatment": "dcd",
                "control": "no-such-arm",
                "metric": "rsum",
                "direction": "improves",
                "margin": 6,
            },
            "no-such-arm",
        ),
        (
            {
                "name": "x",
                "treatment": "dcd",
                "control": "no-kd",
                "metric": "rsum",
                "direction": "improves",
                "margin": 0,
            },
            "margin",
        ),
    ],
)
def test_a_bad_plan_fails_before_any_training(tmp_path, claim, needle):
    proc = _cli(tmp_path, f"claims={json.dumps([claim])}")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0]
    assert not (tmp_path / "bad" / "teacher").exists()  # nothing was trained


def test_init_arms_need_a_pretrained_teacher():
    with pytest.raises(Exception, match="pretrained"):
        experiment.validate(
            experiment.experiment_config(
                quick=True, overrides={"teacher": {"pretrain_epochs": 0, "fusion": "grid"}}
            )
        )


def test_demo_stage_returns_markdown_and_leaves_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setitem(demo.QUICK, "data", {"train": 72, "val": 24, "test": 30})
    monkeypatch.setitem(demo.QUICK, "student_epochs", 1)
    monkeypatch.setitem(demo.QUICK, "teacher_epochs", 1)
    monkeypatch.setitem(demo.QUICK, "pretrain_epochs", 1)
    monkeypatch.setitem(demo.QUICK, "pretrain_images", 24)
    ctx = DemoContext(out=Path(tmp_path), quick=True)
    lines = demo.demo_stage(ctx)
    text = "\n".join(lines)
    assert "| no-kd |" in text and "| dcd |" in text and "speed-up" in text
    assert (ctx.artifacts["dcd_student"] / "results.json").is_file()
