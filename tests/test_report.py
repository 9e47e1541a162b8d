"""``alignlab report``: Markdown and plots from run folders, repro folders and results files."""

from __future__ import annotations

import json

import pytest

from alignlab.cli import main
from alignlab.core.io import write_json
from alignlab.report.render import render


def test_run_folder_report_has_metrics_best_epoch_and_curves(tmp_path):
    run = tmp_path / "run"
    write_json(run / "results.json", {"task": "retrieval", "model": "m", "data": "d", "seed": 1,
                                      "metrics": {"rsum": 123.456}, "best": {"epoch": 3, "metric": "rsum", "value": 50.0},
                                      "manifest": {"alignlab": "0.1.0", "torch": "2"}})
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "dev": {"rsum": 40.0}},
        {"step": 4, "loss": 1.0}, {"step": 4, "dev": {"rsum": 50.0}}]))
    out = render(run)
    text = out.read_text()
    assert "| rsum | 123.46 |" in text and "Best epoch 3" in text and "![plot](plots/curves.png)" in text
    assert (run / "plots" / "curves.png").stat().st_size > 1000


def test_repro_folder_report_lists_spread_per_metric(tmp_path):
    agg = {"seeds": [0, 1], "metrics": {"rsum": {"mean": 10.0, "sd": 1.0, "min": 9.0, "max": 11.0, "range": 2.0,
                                                 "ci_low": 1.0, "ci_high": 19.0}},
           "per_seed": {"0": {"rsum": 9.0}, "1": {"rsum": 11.0}}}
    write_json(tmp_path / "aggregate.json", agg)
    text = render(tmp_path).read_text()
    assert "| rsum | 10.00 | 1.00 | 9.00 | 11.00 | 2.00 | [1.00, 19.00] |" in text
    assert (tmp_path / "plots" / "seeds.png").is_file()


def test_report_of_a_folder_without_results_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no results.json") and err.count("\n") == 1
    with pytest.raises(Exception, match="not found"):
        render(tmp_path / "missing.json")
