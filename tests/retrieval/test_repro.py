"""Seed-aware reproducibility tools: aggregation over seeds, paired comparison verdicts, run diffs, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from alignlab.cli import main
from alignlab.core.io import write_json
from alignlab.retrieval.repro import aggregate_results, compare, diff_runs, run_seeds, verdict
from alignlab.retrieval.training import DataConfig, RetrievalRunConfig
from alignlab.train.loop import TrainConfig


def fake_run(folder, seed, i2t, t2i, data="shapes-test:4", lr=0.1):
    """A run folder with given per-query ranks, as run_retrieval writes it."""
    from alignlab.retrieval.metrics import metrics_from_ranks

    folder.mkdir(parents=True)
    write_json(folder / "per_query.json", {"i2t_rank": list(i2t), "t2i_rank": list(t2i)})
    write_json(
        folder / "results.json",
        {
            "task": "retrieval",
            "model": "m",
            "data": data,
            "seed": seed,
            "metrics": metrics_from_ranks(np.array(i2t), np.array(t2i)),
            "manifest": {"config": {"lr": lr, "seed": seed}, "torch": "x"},
        },
    )


def test_aggregate_reports_mean_sd_range_and_ci_per_metric():
    runs = [{"seed": s, "metrics": {"rsum": v, "i2t_R@1": v / 6}} for s, v in enumerate([100.0, 110.0, 90.0])]
    agg = aggregate_results(runs)
    r = agg["metrics"]["rsum"]
    assert (r["mean"], r["min"], r["max"], r["range"]) == (100.0, 90.0, 110.0, 20.0)
    assert r["sd"] == pytest.approx(10.0) and r["ci_low"] < 100 < r["ci_high"]
    assert agg["seeds"] == [0, 1, 2]


def _systems(tmp_path, n_seeds, shrink, seed=1):
    """A and B over ``n_seeds`` seeds; B's ranks are A's divided by ``shrink`` (1 = the same system)."""
    rng = np.random.default_rng(seed)
    for s in range(n_seeds):
        i2t, t2i = rng.integers(1, 30, 200), rng.integers(1, 100, 1000)
        fake_run(tmp_path / "A" / f"seed-{s}", s, i2t, t2i)
        fake_run(tmp_path / "B" / f"seed-{s}", s, np.maximum(1, i2t // shrink), np.maximum(1, t2i // shrink))
    return tmp_path / "A", tmp_path / "B"


def test_identical_systems_are_equivalent_only_with_enough_seeds(tmp_path):
    a, b = _systems(tmp_path / "three", 3, 1)
    c = compare(a, b, n_resamples=500)
    # 3 paired seeds cannot reach p < 0.05 with the exact test (smallest p = 0.25): no verdict either way
    assert c["delta_rsum"] == 0 and c["p_value"] == 1.0 and c["verdict_word"] == "inconclusive"
    a, b = _systems(tmp_path / "six", 6, 1)
    c = compare(a, b, n_resamples=500)
    assert c["verdict_word"] == "equivalent within ±5" and c["p_equivalence"] == pytest.approx(1 / 64)


def test_a_consistent_gain_over_seeds_improves_and_the_unit_is_the_run(tmp_path):
    a, b = _systems(tmp_path / "six", 6, 4)
    c = compare(a, b, n_resamples=1000)
    assert c["delta_rsum"] > 50 and c["p_value"] == pytest.approx(2 / 64) and c["same_sign"] == 6
    assert c["verdict"].endswith("B improves on A") and c["ci_low"] > 0
    # the same gain over 3 seeds: the test over seeds cannot reach significance, whatever the query count
    a, b = _systems(tmp_path / "three", 3, 4)
    c = compare(a, b, n_resamples=1000)
    assert c["p_value"] == pytest.approx(0.25) and c["verdict_word"] == "inconclusive"


def test_one_run_per_side_is_inconclusive_and_says_why(tmp_path):
    fake_run(tmp_path / "A", 0, [1, 2, 3, 4], [1] * 20)
    fake_run(tmp_path / "B", 0, [1, 1, 1, 1], [1] * 20)
    c = compare(tmp_path / "A", tmp_path / "B", n_resamples=200)
    assert c["verdict_word"] == "inconclusive" and c["p_value"] is None
    assert "one paired seed" in verdict(c) and c["delta_rsum"] > 0
    fake_run(tmp_path / "C", 7, [1, 1, 1, 1], [1] * 20)
    assert "no seed is shared" in compare(tmp_path / "A", tmp_path / "C", n_resamples=200)["verdict"]


def test_compare_refuses_different_test_sets(tmp_path):
    from alignlab.core.errors import DataError

    fake_run(tmp_path / "A", 0, [1, 2, 3, 4], [1] * 20)
    fake_run(tmp_path / "B", 0, [1, 2, 3, 4], [1] * 20, data="other:4")
    with pytest.raises(DataError, match="different test sets"):
        compare(tmp_path / "A", tmp_path / "B")


def test_diff_lists_changed_settings(tmp_path):
    fake_run(tmp_path / "A", 0, [1, 2], [1, 1, 2, 2])
    fake_run(tmp_path / "B", 0, [1, 2], [1, 1, 2, 2], lr=0.2)
    assert diff_runs(tmp_path / "A", tmp_path / "B") == [("config.lr", 0.1, 0.2)]


def test_run_seeds_end_to_end_with_cli_compare(tmp_path, capsys):
    model = {"width": 32, "embed_dim": 32, "image_channels": [8, 16, 32], "text_layers": 1, "heads": 2}
    cfg = RetrievalRunConfig(
        model_config=model,
        data=DataConfig(train=64, val=16, test=24),
        train=TrainConfig(epochs=1, batch_size=32, select_metric="rsum"),
    )
    agg = run_seeds(cfg, [0, 1], tmp_path / "A")
    assert agg["n_seeds"] == 2 and agg["sanity"]["oracle_ok"] and agg["sanity"]["random_ok"]
    assert (tmp_path / "A" / "report.md").read_text().count("| rsum |") == 1
    # resuming a finished repro run does not train again
    assert run_seeds(cfg, [0, 1], tmp_path / "A")["per_seed"] == agg["per_seed"]
    assert main(["repro", "compare", str(tmp_path / "A"), str(tmp_path / "A"), "--resamples", "200"]) == 0
    assert "over 2 paired seeds" in capsys.readouterr().out  # two seeds: an honest "inconclusive"
