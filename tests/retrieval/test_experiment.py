"""``alignlab experiment repro``: pre-registered claims analysed in quick mode, a report rendered from its
results, plans that cannot be analysed stopped before training, and the VSE++ warm start."""

from __future__ import annotations

import numpy as np
import pytest

from alignlab.cli import main
from alignlab.core.errors import ConfigError
from alignlab.core.io import read_json
from alignlab.retrieval import experiment
from alignlab.retrieval.training import DataConfig, RetrievalRunConfig, run_retrieval
from alignlab.train.loop import TrainConfig


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    return out, experiment.run(out, quick=True)


def test_quick_run_analyses_every_declared_claim_and_renders_its_report_from_the_results(quick):
    out, res = quick
    saved = read_json(out / "results.json")
    assert saved["experiment"] == "repro" and saved["quick"] is True
    declared = [c["name"] for c in experiment.DEFAULT_CLAIMS]
    assert [r["claim"] for r in saved["claims"]] == declared
    for r in saved["claims"]:
        assert r["n"] == 2 and r["verdict"] and 0 < r["p_difference"] <= 1
        assert r["smallest_p"] == 0.5  # two paired seeds: no verdict possible, and the report says so
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report == experiment.render_report(saved)
    assert report.index("## Pre-registered plan") < report.index("## Pre-registered claims: results")
    assert "Quick settings: supports no verdict" in report.split("## Pre-registered plan")[0]
    # every arm and both gallery conditions have a value per seed; the large gallery is the baseline's test
    runs = saved["runs"]["rsum"]
    assert set(runs) == {*experiment.ARMS, *experiment.CONDITIONS}
    assert runs["gallery-large"] == runs["infonce"]
    assert all(set(v) == {"0", "1"} for v in runs.values())
    assert saved["manifest"]["cpu_s"] > 0 and set(saved["towers"]) == {"0", "1"}


def test_per_query_items_average_to_the_runs_rsum(quick):
    out, res = quick
    for arm in ("infonce", "vse-max-warm"):
        items = experiment._per_query_items(out / "arms" / arm / "seed-0")
        assert np.mean(items) == pytest.approx(res["runs"]["rsum"][arm]["0"], abs=1e-3)


def test_galleries_are_disjoint_and_scored_against_their_own_chance_and_ceiling(quick):
    out, res = quick
    exp = experiment.experiment_config(quick=True)
    ranges = list(experiment.galleries(exp).values())
    seen: set[int] = set()
    for r in ranges:
        assert not seen & set(r)
        seen |= set(r)
    assert len(ranges) == 1 + exp.small_galleries
    b = res["bounds"]["galleries"]
    assert all(g["truth"]["ceiling"] == pytest.approx(600.0) for g in b.values())
    # under source labels a true caption of another image takes a top slot: the ceiling is below 600
    assert b["large"]["source"]["ceiling"] < 600.0
    assert all(g["truth"]["chance"] > g["source"]["chance"] for g in b.values())


def test_a_second_run_in_the_same_folder_reuses_every_finished_seed(quick, monkeypatch):
    out, res = quick

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(experiment, "run_retrieval", no_training)
    again = experiment.run(out, quick=True)
    assert again["runs"] == res["runs"]


@pytest.mark.parametrize(
    "claim, words",
    [
        ({"treatment": "no-such-arm", "control": "infonce", "margin": 6}, "no-such-arm"),
        ({"treatment": "pretrained", "control": "infonce", "margin": -1}, "margin"),
        ({"treatment": "gallery-large", "control": "infonce", "margin": 6}, "gallery condition"),
    ],
)
def test_a_plan_that_cannot_be_analysed_stops_the_cli_before_training(tmp_path, capsys, claim, words):
    spec = {"name": "x", "metric": "rsum", "direction": "improves", **claim}
    value = "[{" + ", ".join(f"{k}: {v}" for k, v in spec.items()) + "}]"
    out = tmp_path / "exp"
    assert main(["experiment", "repro", "--quick", "--out", str(out), "--set", f"claims={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert not (out / "arms").exists()


def test_an_unknown_metric_fails_before_training(tmp_path):
    claims = [
        {
            "name": "x",
            "treatment": "pretrained",
            "control": "infonce",
            "metric": "accuracy",
            "direction": "improves",
            "margin": 1,
        }
    ]
    with pytest.raises(ConfigError, match="accuracy"):
        experiment.run(tmp_path, quick=True, overrides={"claims": claims})
    assert not (tmp_path / "arms").exists()


# ---- the warm start (RetrievalRunConfig.warm_loss / warm_epochs) -----------------------------------------


def _tiny_run(tmp_path, name, **kwargs):
    cfg = RetrievalRunConfig(
        model_config={
            "image_size": 32,
            "width": 32,
            "embed_dim": 32,
            "image_channels": [8, 16],
            "image_stem": 4,
            "text_layers": 1,
            "heads": 2,
        },
        data=DataConfig(train=64, val=16, test=16, image_size=32),
        train=TrainConfig(epochs=2, batch_size=32, lr=2e-3, warmup_steps=2, select_metric="rsum"),
        **kwargs,
    )
    return run_retrieval(cfg, tmp_path / name, resume=False)


def test_a_warm_start_trains_its_first_epoch_with_the_warm_loss_then_switches(tmp_path):
    warm = _tiny_run(tmp_path, "warm", loss="vse-max", warm_loss="vse-sum", warm_epochs=1)
    summed = _tiny_run(tmp_path, "sum", loss="vse-sum")
    cold = _tiny_run(tmp_path, "cold", loss="vse-max")
    first = [r["dev_curve"][0]["rsum"] for r in (warm, summed, cold)]
    assert first[0] == first[1]  # epoch 1: the same seed, data and loss as the sum run
    second = [r["dev_curve"][1]["rsum"] for r in (warm, summed)]
    assert second[0] != second[1]  # epoch 2: max-violation
    assert warm["dev_curve"] != cold["dev_curve"]


def test_a_warm_start_must_leave_epochs_for_the_main_loss():
    with pytest.raises(ConfigError, match="warm_epochs"):
        RetrievalRunConfig(loss="vse-max", warm_epochs=2, train=TrainConfig(epochs=2))
    with pytest.raises(ConfigError, match="no-such-loss") as e:
        RetrievalRunConfig(warm_loss="no-such-loss")
    assert e.value.key == "warm_loss"
