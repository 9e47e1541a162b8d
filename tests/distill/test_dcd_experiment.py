"""The DCD experiment and demo stage run end to end in quick mode and report what they measured."""

from __future__ import annotations

from pathlib import Path

from alignlab.core.io import read_json
from alignlab.demo import DemoContext
from alignlab.distill.dcd import demo, experiment


def test_quick_experiment_writes_arms_comparisons_speed_and_report(tmp_path):
    res = experiment.run(tmp_path / "exp", quick=True, overrides={"arms": ["no-kd", "dcd", "dcd-released"]})
    saved = read_json(tmp_path / "exp" / "results.json")
    assert set(saved["arms"]) == {"no-kd", "dcd", "dcd-released"}
    for arm in saved["arms"]:
        assert saved["arms"][arm]["n_seeds"] == 2
        for seed in (0, 1):
            assert (tmp_path / "exp" / "arms" / arm / f"seed-{seed}" / "per_query.json").is_file()
    # only the claims whose two arms ran are compared
    assert set(res["comparisons"]) == {"no-kd -> dcd", "dcd -> dcd-released"}
    assert set(res["vs_baseline"]) == {"dcd", "dcd-released"}  # every arm against the first (no-kd)
    c = res["comparisons"]["no-kd -> dcd"]
    assert c["seeds_a"] == 2 and c["claim"] and "verdict" in c
    speed = res["speed"]["models"]
    student = next(k for k in speed if k != "teacher")
    assert speed[student]["kind"] == "dual" and speed["teacher"]["pairs_fused"] > 0
    assert res["teacher"]["pretrain"]["images"] > 72
    report = (tmp_path / "exp" / "report.md").read_text(encoding="utf-8")
    assert "## Claims" in report and "dcd-released" in report and "speed-up" in report
    # the no-teacher arm never asked the teacher; the DCD arm logged the weights it applied
    assert saved["arms"]["no-kd"]["teacher_pairs_scored"] == 0
    assert "w_max_rel" in saved["arms"]["dcd"]["diagnostics"]


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
