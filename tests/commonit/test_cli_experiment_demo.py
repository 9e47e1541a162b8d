"""`alignlab commonit group|stats|train`, `alignlab experiment commonit --quick` and the demo stage."""

from __future__ import annotations

import json
import re

import pytest

from alignlab.cli import main
from alignlab.commonit import tasks


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = tasks.generate(60, seed=0)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_group_then_stats_report_sizes_and_purity(data, tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["commonit", "group", str(data), "--metric", "task", "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metric"] == "task" and sum(manifest["group_sizes"].values()) == 60
    capsys.readouterr()
    assert main(["commonit", "stats", str(out), "--batch-size", "4", "--json", "--quiet"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["agreement_with_tasks"]["purity"] == 1.0
    assert stats["sampler"]["steps_per_epoch"] == 6 * 3  # 10 per task = 2 full steps + 1 partial step


def test_length_grouping_prints_bin_edges(data, tmp_path, capsys):
    assert (
        main(
            [
                "commonit",
                "group",
                str(data),
                "--metric",
                "length",
                "--tokenizer",
                "chars",
                "--bins",
                "3",
                "--out",
                str(tmp_path / "l"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "bin edges (chars tokens of response)" in capsys.readouterr().out


def test_bad_input_exits_2_with_one_line_naming_record_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"instruction": "a", "output": "b"}\n{"instruction": "c", "input": "d"}\n', encoding="utf-8"
    )
    assert main(["commonit", "group", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: record lacks field 'output'") and f"{bad}:2" in err


def test_k_larger_than_data_and_small_groups_under_error_policy_exit_2(data, tmp_path, capsys):
    assert (
        main(
            [
                "commonit",
                "group",
                str(data),
                "--metric",
                "embedding",
                "--encoder",
                "tfidf",
                "--k",
                "100",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 2
    )
    assert "k=100" in capsys.readouterr().err
    out = tmp_path / "g"
    main(["commonit", "group", str(data), "--out", str(out), "--quiet"])
    assert main(["commonit", "stats", str(out), "--batch-size", "64", "--small-groups", "error"]) == 2
    assert "6 group(s) have fewer than 64 examples" in capsys.readouterr().err


def test_stats_reads_one_file_per_group(tmp_path, capsys):
    d = tmp_path / "groups"
    d.mkdir()
    for name in ("alpha", "beta"):
        (d / f"{name}.jsonl").write_text(
            json.dumps({"instruction": name, "output": "x"}) + "\n", encoding="utf-8"
        )
    (d / "gamma.jsonl").write_text("", encoding="utf-8")
    assert main(["commonit", "stats", str(d), "--group-files"]) == 2
    assert "group file is empty" in capsys.readouterr().err


def test_train_commonit_and_random_on_the_same_data(data, tmp_path):
    g = tmp_path / "g"
    main(["commonit", "group", str(data), "--out", str(g), "--quiet"])
    common = ["--epochs", "1", "--batch-size", "4", "--n-embd", "16", "--n-layer", "1", "--quiet"]
    assert main(["commonit", "train", str(g), "--out", str(tmp_path / "c"), *common]) == 0
    assert (
        main(["commonit", "train", str(g), "--out", str(tmp_path / "r"), "--batching", "random", *common])
        == 0
    )
    c = json.loads((tmp_path / "c" / "results.json").read_text())
    r = json.loads((tmp_path / "r" / "results.json").read_text())
    assert c["metrics"]["task_pure_steps"] == 1.0
    assert r["metrics"]["task_pure_steps"] < 0.5
    assert c["metrics"]["optimizer_steps"] == r["metrics"]["optimizer_steps"]
    assert (tmp_path / "c" / "model" / "char_tokenizer.json").exists()


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    from alignlab.commonit.experiment import run

    out = tmp_path_factory.mktemp("commonit-quick")
    return out, run(out, quick=True, seeds=[0, 1], overrides={})


def test_quick_experiment_writes_analysed_claims_and_a_report_with_the_plan_first(quick_results):
    out, res = quick_results
    assert res["experiment"] == "commonit" and res["quick"] is True
    declared = [c["name"] for c in res["config"]["claims"]]
    assert [r["claim"] for r in res["claims"]] == declared and len(declared) >= 4
    for row in res["claims"]:
        assert row["n"] == 2
        assert row["verdict"] in ("improves", "hurts", "inconclusive") or row["verdict"].startswith(
            "equivalent within"
        )
        assert 0 <= row["p_difference"] <= 1 and row["smallest_p"] == 0.5
    # per-arm per-seed values of every claimed metric, for the four cells of the grid and their mean
    assert set(res["metrics"]) == {s["metric"] for s in res["settings"]} | {"em@mean"}
    assert len(res["settings"]) == 4 and all(
        set(v) == set(res["config"]["arms"]) for v in res["metrics"].values()
    )
    report = (out / "report.md").read_text()
    assert "supports no verdict" in report
    assert report.index("## Pre-registered plan") < report.index("## Pre-registered claims: results")
    assert report.index("## Pre-registered claims: results") < report.index("## Exploratory")


def test_quick_report_is_rendered_from_the_stored_results(quick_results):
    from alignlab.commonit.experiment import render_report

    out, _ = quick_results
    stored = json.loads((out / "results.json").read_text())
    assert render_report(stored) == (out / "report.md").read_text()
    assert (out / "results.json").stat().st_size < 300_000


def test_small_groups_are_dropped_only_in_the_drop_arm_and_counted(quick_results):
    _, res = quick_results
    sizes = res["supporting"]["groupings"]["task"]["sizes"]
    for st in res["settings"]:
        s = res["summary"][st["metric"]]
        small = sum(n for n in sizes.values() if n < st["batch_size"])
        assert small > 0  # the long-tailed mix makes groups smaller than one step
        assert s["task_drop"]["dropped_examples"] == small
        assert s["task_drop"]["examples_kept"] == res["data"]["train"]["n"] - small
        assert s["random"]["dropped_examples"] == s["task"]["dropped_examples"] == 0
        # random batching trains exactly the examples CommonIT-Task trains, in mixed steps
        assert s["random"]["examples_trained"] == s["task"]["examples_trained"] == res["data"]["train"]["n"]
        assert s["task_drop"]["task_pure_steps"] == 1.0 and s["random"]["task_pure_steps"] < 0.5


def test_regime_is_chosen_on_dev_with_dev_seeds_only(quick_results):
    out, res = quick_results
    sel = res["regime_selection"]
    assert set(sel["candidates"]) == set(res["config"]["regimes"]) and sel["chosen"] in sel["candidates"]
    assert not set(sel["dev_seeds"]) & set(res["seeds"])
    dev_runs = [json.loads(p.read_text()) for p in (out / "runs" / "dev").glob("*.json")]
    assert dev_runs and all(r["split"] == "dev" for r in dev_runs)
    assert all(r["split"] == "test" and r["regime"] == res["config"]["regime"] for r in res["runs"])


@pytest.mark.parametrize(
    "claim, message",
    [
        (
            "{name: c, treatment: nope, control: random, metric: em@mean, direction: improves, margin: 1}",
            "compares arm 'nope'",
        ),
        (
            "{name: c, treatment: task, control: random, metric: em@mean, direction: improves, margin: 0}",
            "margin must be a positive number",
        ),
        (
            "{name: c, treatment: task, control: random, metric: acc, direction: improves, margin: 1}",
            "does not measure",
        ),
    ],
)
def test_a_bad_claim_fails_before_any_training(tmp_path, capsys, claim, message):
    out = tmp_path / "exp"
    assert main(["experiment", "commonit", "--quick", "--out", str(out), "--set", f"claims=[{claim}]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (out / "runs").exists() and not (out / "base").exists()


def test_demo_stage_shows_homogeneous_steps(tmp_path):
    from alignlab.commonit.demo import demo_stage
    from alignlab.demo import DemoContext

    lines = demo_stage(DemoContext(out=tmp_path, quick=True))
    text = "\n".join(lines)
    m = re.search(r"\*\*(\d+)/(\d+) steps draw all their examples from one group\*\*", text)
    assert m and m.group(1) == m.group(2)
    assert "| task |" in text and "| embedding |" in text and "| length |" in text
    assert (tmp_path / "commonit" / "by-task" / "manifest.json").exists()
