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
    assert main(["commonit", "group", str(data), "--metric", "length", "--tokenizer", "chars", "--bins", "3",
                 "--out", str(tmp_path / "l"), "--quiet"]) == 0
    assert "bin edges (chars tokens of response)" in capsys.readouterr().out


def test_bad_input_exits_2_with_one_line_naming_record_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "input": "d"}\n', encoding="utf-8")
    assert main(["commonit", "group", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: record lacks field 'output'") and f"{bad}:2" in err


def test_k_larger_than_data_and_small_groups_under_error_policy_exit_2(data, tmp_path, capsys):
    assert main(["commonit", "group", str(data), "--metric", "embedding", "--encoder", "tfidf", "--k", "100",
                 "--out", str(tmp_path / "e")]) == 2
    assert "k=100" in capsys.readouterr().err
    out = tmp_path / "g"
    main(["commonit", "group", str(data), "--out", str(out), "--quiet"])
    assert main(["commonit", "stats", str(out), "--batch-size", "64", "--small-groups", "error"]) == 2
    assert "6 group(s) have fewer than 64 examples" in capsys.readouterr().err


def test_stats_reads_one_file_per_group(tmp_path, capsys):
    d = tmp_path / "groups"
    d.mkdir()
    for name in ("alpha", "beta"):
        (d / f"{name}.jsonl").write_text(json.dumps({"instruction": name, "output": "x"}) + "\n", encoding="utf-8")
    (d / "gamma.jsonl").write_text("", encoding="utf-8")
    assert main(["commonit", "stats", str(d), "--group-files"]) == 2
    assert "group file is empty" in capsys.readouterr().err


def test_train_commonit_and_random_on_the_same_data(data, tmp_path):
    g = tmp_path / "g"
    main(["commonit", "group", str(data), "--out", str(g), "--quiet"])
    common = ["--epochs", "1", "--batch-size", "4", "--n-embd", "16", "--n-layer", "1", "--quiet"]
    assert main(["commonit", "train", str(g), "--out", str(tmp_path / "c"), *common]) == 0
    assert main(["commonit", "train", str(g), "--out", str(tmp_path / "r"), "--batching", "random", *common]) == 0
    c = json.loads((tmp_path / "c" / "results.json").read_text())
    r = json.loads((tmp_path / "r" / "results.json").read_text())
    assert c["metrics"]["task_pure_steps"] == 1.0
    assert r["metrics"]["task_pure_steps"] < 0.5
    assert c["metrics"]["optimizer_steps"] == r["metrics"]["optimizer_steps"]
    assert (tmp_path / "c" / "model" / "char_tokenizer.json").exists()


def test_quick_experiment_compares_all_methods_on_the_same_data(tmp_path):
    from alignlab.commonit.experiment import run

    res = run(tmp_path, quick=True, seeds=[0, 1], overrides={"n_train": 120, "n_test": 30})
    assert sorted(res["metrics"]) == ["embedding", "length", "random", "task"]
    runs = res["runs"]
    assert len(runs) == 8
    assert len({r["examples_trained"] for r in runs}) == 1  # every method trains on the same examples
    pure = {m: s["task_pure_steps"] for m, s in res["analysis"]["summary"].items()}
    assert pure["task"] == 1.0 and pure["random"] < 0.3
    assert set(res["analysis"]["comparisons"]) == {"task", "embedding", "length"}
    assert all(0 < c["p_seeds"] <= 1 for c in res["analysis"]["comparisons"].values())
    report = (tmp_path / "report.md").read_text()
    assert "Verdict" in report and "| random |" in report


def test_demo_stage_shows_homogeneous_steps(tmp_path):
    from alignlab.commonit.demo import demo_stage
    from alignlab.demo import DemoContext

    lines = demo_stage(DemoContext(out=tmp_path, quick=True))
    text = "\n".join(lines)
    m = re.search(r"\*\*(\d+)/(\d+) steps draw all their examples from one group\*\*", text)
    assert m and m.group(1) == m.group(2)
    assert "| task |" in text and "| embedding |" in text and "| length |" in text
    assert (tmp_path / "commonit" / "by-task" / "manifest.json").exists()
