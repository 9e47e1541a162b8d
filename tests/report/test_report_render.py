"""``alignlab report``: every folder kind renders to report.md and a self-contained report.html."""

from __future__ import annotations

import csv
import json
import re

import pytest

from alignlab.cli import main
from alignlab.core.errors import DataError
from alignlab.core.io import write_json
from alignlab.core.stats import summarize
from alignlab.report.fmt import clip_ci, fmt_metric, fmt_num, order_names
from alignlab.report.render import compare, render

from .conftest import make_run

NOISE = re.compile(r"\d+\.\d{5,}")  # a float printed with its representation noise


def _html(md_path):
    return md_path.with_suffix(".html").read_text(encoding="utf-8")


def assert_self_contained(page: str) -> None:
    """Nothing is fetched: no remote src/href, no external script or style sheet; every image is inline."""
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert all(src.startswith("data:image/") for src in re.findall(r'<img src="([^"]*)"', page))


def _rows(md: str, first_cell: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith(f"| {first_cell} |")]


def test_metrics_come_in_natural_order_not_text_order():
    text_order = sorted(
        ["t2i_R@5", "rsum", "i2t_R@10", "i2t_medr", "i2t_R@1", "t2i_R@1", "t2i_R@10", "i2t_R@5"]
    )
    assert text_order[:3] == ["i2t_R@1", "i2t_R@10", "i2t_R@5"]  # what the issue saw
    assert order_names(text_order) == [
        "i2t_R@1",
        "i2t_R@5",
        "i2t_R@10",
        "t2i_R@1",
        "t2i_R@5",
        "t2i_R@10",
        "rsum",
        "i2t_medr",
    ]
    assert order_names(["negation_acc_pct", "accuracy", "R@10", "R@5"]) == [
        "R@5",
        "R@10",
        "negation_acc_pct",
        "accuracy",
    ]


def test_numbers_are_rounded_without_float_noise():
    assert fmt_num(13.459999999999999) == "13.46" and fmt_metric("i2t_R@1", 13.459999999999999) == "13.46"
    assert fmt_metric("i2t_R@10", 48.0) == "48.00" and fmt_metric("t2i_medr", 19.0) == "19"
    assert fmt_num(183.06666666666666) == "183.1" and fmt_num(0.00012345) == "0.000123"
    assert fmt_num(0.8) == "0.800" and fmt_num(0.80333333) == "0.803" and fmt_num(0.0263157) == "0.0263"
    assert fmt_num(float("nan")) == "n/a" and fmt_num(None) == "n/a" and fmt_num(3, signed=True) == "+3"


def test_ci_of_a_count_never_goes_negative():
    s = summarize([0, 0, 1])  # a plain t-interval over three seeds reaches below zero
    assert s["ci_low"] < 0
    bounded = summarize([0, 0, 1], bounds=(0, None))
    assert bounded["ci_low"] == 0.0 and bounded["ci_high"] == s["ci_high"]
    assert summarize([99.0, 100.0], bounds=(0, 100))["ci_high"] == 100.0
    assert clip_ci("t2i_tied_queries", -1.1, 1.8) == (0.0, 1.8)
    assert clip_ci("i2t_R@1", 90.0, 104.0) == (90.0, 100.0)
    assert clip_ci("i2t_medr", -3.0, 5.0) == (1.0, 5.0)
    assert clip_ci("negation_gap_pct", -30.0, 3.3) == (-30.0, 3.3)  # a difference may be negative


def test_run_folder_renders_metrics_curves_and_chance_note(run_folder):
    md_path = render(run_folder)
    md, page = md_path.read_text(encoding="utf-8"), _html(md_path)
    assert md_path == run_folder / "report.md" and "Best epoch 1 by dev rsum (216.6)" in md
    names = [line.split(" | ")[0][2:] for line in md.splitlines() if re.match(r"\| (i2t|t2i)_R@", line)]
    assert names == ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]
    assert "| i2t_R@1 | 13.46 |" in md and "| i2t_R@10 | 48.00 |" in md and "| t2i_tied_queries | 3 |" in md
    assert not NOISE.search(md) and not NOISE.search(re.sub(r"data:image/[^\"]+", "", page))
    assert (run_folder / "plots" / "curves.png").stat().st_size > 2000
    assert (run_folder / "plots" / "final.png").stat().st_size > 2000
    assert "chance level is not recorded" in md and "single logged steps" not in md
    assert_self_contained(page)
    assert page.count("<img ") == 2 and page.count("<table>") == 1 and "id=report-status" in page


def test_log_of_single_step_losses_is_labelled_as_such(tmp_path):
    run = make_run(tmp_path / "old", interval_mean=False)
    assert "loss of single logged steps" in render(run).read_text(encoding="utf-8")


def test_repro_folder_shows_every_seed_mean_with_bounded_ci_and_verdicts(seeds_folder):
    agg = json.loads((seeds_folder / "aggregate.json").read_text())
    assert agg["metrics"]["t2i_tied_queries"]["ci_low"] >= 0  # `repro run` bounds a count's CI at 0
    agg["metrics"]["t2i_tied_queries"]["ci_low"] = -1.5  # an older aggregate: the renderer still cuts it
    (seeds_folder / "aggregate.json").write_text(json.dumps(agg))
    md_path = render(seeds_folder)
    md, page = md_path.read_text(encoding="utf-8"), _html(md_path)
    order = [
        line.split(" | ")[0][2:] for line in md.splitlines() if re.match(r"\| [it]2[it]_R@\d+ \| \d", line)
    ]
    assert order == ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]
    (tied,) = _rows(md, "t2i_tied_queries")
    assert "[0, " in tied and "-" not in tied.split("|")[6]
    assert "cut to the range" in md
    (r1,) = _rows(md, "i2t_R@1")
    assert r1.endswith("| 2.00 | 100.00 |")  # chance and oracle columns
    assert len(_rows(md, "0")) == 1 and len(_rows(md, "2")) == 1  # every seed's row
    assert "| oracle | pass |" in md and "| random | FAIL |" in md
    for name in ("seeds.png", "final.png", "seed_curves.png"):
        assert (seeds_folder / "plots" / name).stat().st_size > 2000
    assert_self_contained(page)
    assert page.count("<img ") == 3 and page.count("<table>") == 3


def test_repro_folder_still_running_is_reported_from_its_finished_seeds(tmp_path):
    for s in (0, 1):
        make_run(tmp_path / "repro" / f"seed-{s}", seed=s, shift=s)
    md = render(tmp_path / "repro").read_text(encoding="utf-8")
    assert "No aggregate.json yet" in md and "# Seeds 0, 1" in md


def test_probe_run_folder_renders_tasks_blinds_and_grounded_gap(probe_folder):
    own_md = (probe_folder / "report.md").read_bytes()
    md_path = render(probe_folder)
    page = _html(md_path)
    assert (probe_folder / "report.md").read_bytes() == own_md  # probe eval's own tables are kept
    result = json.loads((probe_folder / "results.json").read_text())
    for task, entry in result["probe"]["model"]["tasks"].items():
        acc = entry["accuracy"]["acc_pct"]
        assert f"<td>{task}</td><td class=num>{acc:.1f} [" in page
    assert "grounded gap [95% CI]" in page and "Blind baselines" in page and "never_not" in page
    assert_self_contained(page)
    assert page.count("<img ") >= 5  # the summary chart and one chart per task from probe eval
    assert page.count("<table>") >= 3


def test_experiment_folder_renders_claims_tables_and_every_plot(experiment_folder):
    md_path = render(experiment_folder)
    page = _html(md_path)
    assert md_path.read_text(encoding="utf-8").startswith("# PESF-KD experiment")  # its own report.md is kept
    assert "<td>PESF-KD beats vanilla KD</td><td>does not hold</td>" in page
    assert "<td>the teacher stays bit-identical</td><td>holds</td>" in page
    assert "<h2>Claim tables (report.md)</h2>" in page and "<td class=num>+0.4</td>" in page
    assert (
        'alt="digits"' in page and 'alt="extra diagnostics"' in page
    )  # referenced plot + the one it does not cite
    assert_self_contained(page)


def test_experiment_with_analysed_claims_shows_one_claims_table(tmp_path):
    from alignlab.core.analysis import analyse, claims_from_config

    claims = claims_from_config(
        [
            {
                "name": "KD helps",
                "treatment": "kd",
                "control": "none",
                "metric": "acc",
                "direction": "improves",
                "margin": 0.5,
            },
            {
                "name": "adapter is as good as a temperature",
                "treatment": "adapter",
                "control": "temp",
                "metric": "acc",
                "direction": "equivalent",
                "margin": 5.0,
            },
        ]
    )
    runs = {
        "kd": {s: 80.0 + s for s in range(6)},
        "none": {s: 78.0 + s for s in range(6)},
        "adapter": {s: 70.0 + 0.1 * s for s in range(6)},
        "temp": {s: 70.0 + 0.1 * (s % 2) for s in range(6)},
    }
    folder = tmp_path / "experiment-x"
    folder.mkdir()
    write_json(folder / "results.json", {"experiment": "x", "quick": False, "claims": analyse(claims, runs)})
    page = _html(render(folder))
    assert "<h2>Pre-registered claims and verdicts</h2>" in page
    assert "<td>KD helps</td><td class=num>6</td><td class=num>+2.00</td>" in page
    assert "<td>equivalent within ±5</td><td>yes</td>" in page
    assert "<h2>Claims and verdicts</h2>" not in page  # the old scan of verdict keys is not shown as well


def test_demo_folder_renders_every_stage_and_its_runs_curves(demo_folder):
    own_md = (demo_folder / "report.md").read_bytes()
    render(demo_folder)
    page = (demo_folder / "report.html").read_text(encoding="utf-8")
    assert (demo_folder / "report.md").read_bytes() == own_md
    for heading in (
        "ShapesWorld data",
        "Image–text retrieval",
        "DCD",
        "Timings",
        "Training curves of the demo",
    ):
        assert heading in page
    assert 'alt="contact sheet"' in page and "<h3>dcd</h3>" in page and "<h3>retrieval</h3>" in page
    assert_self_contained(page)
    assert page.count("<img ") == 3 and page.count("<table>") == 3


def test_results_json_file_alone_renders_its_metrics(tmp_path):
    write_json(
        tmp_path / "eval.json",
        {"task": "retrieval", "model": "m", "metrics": {"i2t_R@10": 5.0, "i2t_R@5": 4.0}},
    )
    md = render(tmp_path / "eval.json").read_text(encoding="utf-8")
    assert md.index("i2t_R@5") < md.index("i2t_R@10") and (tmp_path / "report.html").is_file()


def test_comparison_has_side_by_side_table_overlaid_curves_and_csv(tmp_path, capsys):
    a, b = make_run(tmp_path / "a" / "run", seed=0), make_run(tmp_path / "b" / "run", seed=1, shift=2.5)
    out, table = tmp_path / "cmp" / "report.md", tmp_path / "metrics.csv"
    assert main(["report", str(a), str(b), "--out", str(out), "--csv", str(table)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out.with_suffix('.html')}" in printed and f"metrics CSV: {table}" in printed
    md = out.read_text(encoding="utf-8")
    assert "| metric | a/run | b/run |" in md and "| i2t_R@1 | 13.46 | 15.96 |" in md
    assert (tmp_path / "cmp" / "plots" / "compare_curves.png").stat().st_size > 2000
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [r["run"] for r in rows] == ["a/run", "b/run"] and rows[1]["seed"] == "1"
    header = next(csv.reader(table.open(encoding="utf-8")))
    assert header[7:10] == ["i2t_R@1", "i2t_R@5", "i2t_R@10"]
    assert rows[0]["i2t_R@1"] == "13.46" and rows[0]["t2i_tied_queries"] == "3"
    assert not NOISE.search(table.read_text())
    assert_self_contained(out.with_suffix(".html").read_text(encoding="utf-8"))


def test_comparing_repro_folders_uses_mean_over_seeds(seeds_folder, tmp_path):
    other = make_run(tmp_path / "single", seed=7, shift=-1.0)
    md = compare([seeds_folder, other], tmp_path / "c.md").read_text(encoding="utf-8")
    assert "| metric | repro | single |" in md and "mean over seeds" in md
    assert "| i2t_R@1 | 14.46 | 12.46 |" in md  # seeds 0..2 shift by 0, 1, 2: mean +1


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2, 3]", "not an alignlab results file"),
        ('{"hello": "world"}', "not an alignlab results file"),
        ('{"metrics": {', "invalid JSON"),
    ],
)
def test_garbage_input_fails_with_a_clear_one_line_error(tmp_path, capsys, content, message):
    (tmp_path / "results.json").write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        render(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_folder_without_anything_to_report_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no results.json") and err.count("\n") == 1
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_demo_folder_cannot_be_one_side_of_a_comparison(demo_folder, run_folder):
    with pytest.raises(DataError, match="demo folder holds many runs"):
        compare([demo_folder, run_folder])


def test_one_run_exports_its_metrics_as_csv(seeds_folder, tmp_path, capsys):
    table = tmp_path / "one.csv"
    assert main(["report", str(seeds_folder), "--csv", str(table)]) == 0
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert len(rows) == 1 and rows[0]["kind"] == "seeds" and rows[0]["seed"] == "0 1 2"
    assert rows[0]["i2t_R@1"] == "14.46" and (seeds_folder / "report.html").is_file()


def test_without_markdown_it_foreign_markdown_is_shown_as_text_with_its_images(demo_folder, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "markdown_it", None)  # as if the package were not installed
    render(demo_folder)
    page = (demo_folder / "report.html").read_text(encoding="utf-8")
    assert "<pre>" in page and "## ShapesWorld data" in page and 'alt="contact sheet"' in page
    assert_self_contained(page)
