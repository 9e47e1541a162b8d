"""The snare experiment (quick settings) and the demo stage, end to end."""

from __future__ import annotations

import json


def test_quick_experiment_writes_results_report_and_comparisons(tmp_path):
    from alignlab.probe.experiment import run

    out = tmp_path / "snare"
    res = run(out, quick=True, seeds=[0])
    assert set(res["arms"]) == {"tiny-dual", "tiny-cross"}
    for arch, comp in res["comparisons"].items():
        assert {"negation/accuracy", "attribute_ownership/pairs"} <= set(comp), arch
        for c in comp.values():
            assert c["delta"] == c["hardneg"] - c["base"] or abs(c["delta"] - (c["hardneg"] - c["base"])) < 1e-9
            assert 0 < c["items_p"] <= 1
        for arm in ("base", "hardneg"):
            f = res["findings"][arch][arm]
            assert {"content_words", "weak_negation", "weak_relations"} <= set(f)
    runs = sorted((out / "runs").glob("*/*/seed-*/probe_result.json"))
    assert len(runs) == 4
    hard = json.loads((out / "runs" / "tiny-dual" / "hardneg" / "seed-0" / "probe_result.json").read_text())
    assert sum(hard["train"]["negatives"].values()) > 0
    report = (out / "report.md").read_text()
    assert "## tiny-dual" in report and "weak negation" in report
    # A second run reuses the frozen probe set and the finished runs: same numbers.
    again = run(out, quick=True, seeds=[0])
    means = {k: v["mean"] for k, v in res["arms"]["tiny-dual"]["base"]["metrics"].items()}
    assert {k: v["mean"] for k, v in again["arms"]["tiny-dual"]["base"]["metrics"].items()} == means


def test_demo_stage_writes_a_bar_chart_per_task(tmp_path):
    from alignlab.demo import DemoContext
    from alignlab.probe.demo import STAGE_TITLE, demo_stage

    ctx = DemoContext(out=tmp_path, quick=True, seed=0)
    lines = demo_stage(ctx)
    assert STAGE_TITLE and any("untrained" in line for line in lines)
    pngs = sorted(p.name for p in (tmp_path / "probe" / "plots").glob("*.png"))
    assert pngs == ["attribute_ownership.png", "negation.png", "relationship_composition.png", "semantic_structure.png"]
    assert sum(line.startswith("![") for line in lines) == 4
