"""`alignlab experiment 3am` (tiny settings: pre-registered claims, analysis, rendering) and the demo
stage."""

from __future__ import annotations

import json

import pytest

TINY = {
    "pool_images": 40,
    "train_size": 60,
    "test_images": 10,
    "contrastive_items": 20,
    "pool_polysemous_rate": 0.1,
    "corpus_chunks": 2,
    "corpus_chunk_size": 8,
    "model": {"width": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "max_tgt_len": 40},
    "train": {"epochs": 1, "batch_size": 32, "warmup_steps": 2},
    "visual": {"images": 48, "val_images": 8, "epochs": 1},
}


def _needs_real_data():
    from alignlab.ambiguity.wordnet import wordnet_available
    from alignlab.threeam.experiment import find_data_dir

    if not wordnet_available():
        pytest.skip("WordNet not installed")
    if find_data_dir() is None:
        pytest.skip("the real 3AM / Multi30K captions are not on this machine")


def test_quick_run_analyses_the_declared_claims_and_renders_its_report(tmp_path):
    from alignlab.threeam import experiment

    _needs_real_data()
    res = experiment.run(tmp_path, quick=True, seeds=[0, 1], overrides=TINY)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["experiment"] == "3am" and saved["quick"] and saved["seeds"] == [0, 1]
    # every declared claim analysed, in the declared order, on the arms it names
    declared = [c["name"] for c in experiment.DEFAULT_CLAIMS]
    assert [r["claim"] for r in saved["claims"]] == declared
    rows = {r["claim"]: r for r in saved["claims"]}
    assert rows["selection raises image use"]["n"] == 2  # training claims: paired by seed
    assert rows["3AM more ambiguous (supersenses)"]["n"] == 2  # corpus claims: paired by chunk
    assert all(
        r["verdict"] in ("improves", "hurts", "inconclusive") or r["verdict"].startswith("equivalent")
        for r in saved["claims"]
    )
    # the claimed metric's per-seed values are stored per arm, and the analysis used exactly them
    gaps = saved["runs"]["sense_gap"]
    assert set(gaps) == {"selected", "random", "matched"}
    diff = [a - b for a, b in zip(gaps["selected"], gaps["random"])]
    assert rows["selection raises image use"]["mean_diff"] == pytest.approx(sum(diff) / len(diff))
    # one pool per seed, and the matched arm copies the selected set's share of image-needing captions
    sel = saved["selection"]
    assert sel["0"]["pool_seed"] != sel["1"]["pool_seed"]
    for s in sel.values():
        assert s["needs_image"]["matched"] == s["needs_image"]["selected"]
    corpus = saved["corpus"]["corpora"]
    assert (
        len(corpus["3AM"]["ambiguous_share_synset"])
        == 2
        == len(corpus["Multi30K"]["ambiguous_share_supersense"])
    )
    # the report: rendered from the stored file, quick flagged, the plan before the results
    report = (tmp_path / "report.md").read_text()
    assert experiment.render_report(saved) == report
    assert "supports no verdict" in report
    assert -1 < report.find("## Pre-registered plan") < report.find("## Pre-registered claims: results")
    assert res["claims"] == saved["claims"]
    # a second run in the same folder reuses every seed (keyed on config, code and seed)
    again = experiment.run(tmp_path, quick=True, seeds=[0, 1], overrides=TINY)
    assert again["runs"] == saved["runs"]


@pytest.mark.parametrize(
    "claim, message",
    [
        (
            {
                "name": "x",
                "treatment": "nosuch",
                "control": "random",
                "metric": "sense_gap",
                "direction": "improves",
                "margin": 0.05,
            },
            "nosuch",
        ),
        (
            {
                "name": "x",
                "treatment": "selected",
                "control": "random",
                "metric": "sense_gap",
                "direction": "improves",
                "margin": 0,
            },
            "margin",
        ),
    ],
)
def test_a_bad_claim_fails_before_any_training(tmp_path, capsys, claim, message):
    from alignlab.cli import main

    out = tmp_path / "run"
    code = main(["experiment", "3am", "--quick", "--out", str(out), "--set", f"claims=[{json.dumps(claim)}]"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:") and message in err
    assert not (out / "seeds").exists() and not (out / "corpus.json").exists()


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
