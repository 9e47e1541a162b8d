"""``alignlab experiment repro`` in quick mode: every arm, comparisons, gallery sizes and a report."""

from __future__ import annotations

from alignlab.core.io import read_json
from alignlab.retrieval.experiment import run


def test_quick_repro_experiment_writes_comparisons_and_gallery_effect(tmp_path):
    res = run(tmp_path, quick=True, seeds=[0, 1], overrides={"arms": ["infonce", "vse-sum"], "train_images": 96,
                                                             "val_images": 24, "test_images": 120})
    assert set(res["arms"]) == {"infonce", "vse-sum"}
    c = res["comparisons"]["vse-sum"]
    assert c["seeds_a"] == c["seeds_b"] == 2 and 0 < c["p_value"] <= 1
    g = res["gallery"]
    assert (g["n_small"], g["n_large"]) == (24, 120)
    # The same weights rank among 5x fewer distractors: the smaller gallery scores higher.
    assert g["small"]["mean"] > g["large"]["mean"]
    report = (tmp_path / "report.md").read_text()
    assert "| vse-sum |" in report and "Gallery size" in report
    assert read_json(tmp_path / "results.json")["experiment"] == "repro"
