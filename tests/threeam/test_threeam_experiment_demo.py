"""`alignlab experiment 3am` (tiny settings) and the demo stage."""

from __future__ import annotations

import json

import pytest

TINY = {"pool_images": 40, "train_size": 80, "test_images": 10, "contrastive_items": 20, "corpus_captions": 0,
        "pool_polysemous_rate": 0.1,
        "model": {"width": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "max_tgt_len": 40},
        "train": {"epochs": 1, "batch_size": 32, "warmup_steps": 2},
        "visual": {"images": 48, "val_images": 8, "epochs": 1}}


@pytest.mark.slow
def test_experiment_writes_results_report_and_verdict(tmp_path):
    from alignlab.ambiguity.wordnet import wordnet_available
    from alignlab.threeam import experiment

    if not wordnet_available():
        pytest.skip("WordNet not installed")
    res = experiment.run(tmp_path, quick=True, seeds=[0, 1], overrides=TINY)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["verdict"]["claim"] == res["verdict"]["claim"] and saved["seeds"] == [0, 1]
    assert len(saved["runs"]) == 8  # 2 seeds x {selected, random} x {text, visual}
    for run in saved["runs"]:
        if run["model"] == "text":
            assert run["metrics"]["sense_gap"] == 0.0 and run["metrics"]["contrastive_acc"] == 0.5
    sel = saved["selection"]
    assert sel["pool_captions"] == 200 and set(sel["strategy_ablation"]) >= {"balanced_fine", "score_only_fine"}
    # the random sets really are drawn per seed; the selected set is the same for every seed
    assert {r["train_visually_necessary"] for r in saved["runs"] if r["set"] == "selected"} == {
        sel["selected_visually_necessary"]}
    report = (tmp_path / "report.md").read_text()
    assert "Verdict" in report and "tok:zh" in report and "| selected | visual |" in report


def _fake_runs(gap_selected, gap_random, seeds=(0, 1, 2, 3, 4)):
    """Runs and per-caption results as the experiment records them, with chosen congruence gaps."""
    import numpy as np

    runs, per_item = [], {}
    rng = np.random.default_rng(0)
    for seed in seeds:
        for set_name, gap in (("selected", gap_selected), ("random", gap_random)):
            for model in ("text", "visual"):
                g = gap + rng.normal(0, 0.01) if model == "visual" else 0.0
                cong = (rng.random(200) < 0.5 + g / 2).astype(float)
                inc = (rng.random(200) < 0.5 - g / 2).astype(float) if model == "visual" else cong
                m = {"sense_acc": cong.mean(), "sense_acc_incongruent": inc.mean(),
                     "sense_gap": cong.mean() - inc.mean(), "bleu": 50.0, "bleu_incongruent": 49.0, "bleu_gap": 1.0,
                     "chrf": 60.0, "contrastive_acc": 0.5 + g / 2, "sense_wrong_rate": 0.1}
                runs.append({"set": set_name, "model": model, "seed": seed, "metrics": m,
                             "train_visually_necessary": 0.2 if set_name == "selected" else 0.02})
                per_item[(set_name, model, seed)] = {"sense_congruent": cong.tolist(),
                                                     "sense_incongruent": inc.tolist()}
    return runs, per_item


@pytest.mark.parametrize("gaps, supported", [((0.4, 0.05), True), ((0.05, 0.05), False), ((0.0, 0.3), False)])
def test_verdict_needs_a_larger_gap_in_every_seed_and_significance(gaps, supported):
    from alignlab.core.stats import summarize
    from alignlab.threeam.experiment import _comparisons, _verdict

    seeds = [0, 1, 2, 3, 4]
    runs, per_item = _fake_runs(*gaps, seeds)
    summary = {f"{s}/{m}": {k: summarize([r["metrics"][k] for r in runs if r["set"] == s and r["model"] == m])
                            for k in runs[0]["metrics"]} for s in ("selected", "random") for m in ("text", "visual")}
    comp = _comparisons(runs, per_item, seeds)
    verdict = _verdict(summary, comp, len(seeds))
    assert verdict["supported"] is supported
    c = comp["visual_selected_minus_random/sense_gap"]
    assert c["delta"] == pytest.approx(summary["selected/visual"]["sense_gap"]["mean"]
                                       - summary["random/visual"]["sense_gap"]["mean"])
    assert comp["selected/visual/congruent_minus_incongruent"]["seed_summary"]["n"] == 5


def test_demo_stage_quick(tmp_path, monkeypatch):
    from alignlab.ambiguity.wordnet import wordnet_available
    from alignlab.demo import DemoContext
    from alignlab.threeam import demo

    if not wordnet_available():
        pytest.skip("WordNet not installed")
    monkeypatch.setitem(demo.QUICK, "pool", 30)
    monkeypatch.setitem(demo.QUICK, "train_scenes", 30)
    monkeypatch.setitem(demo.QUICK, "test_scenes", 8)
    monkeypatch.setitem(demo.QUICK, "tower_images", 48)
    monkeypatch.setitem(demo.QUICK, "epochs", 1)
    lines = demo.demo_stage(DemoContext(out=tmp_path, quick=True))
    text = "\n".join(lines)
    assert "bat.n.01" in text and "| gated fusion |" in text and "Quick settings" in text
    assert json.loads((tmp_path / "ambiguity" / "results.json").read_text())["selection"]["pool"] == 150
