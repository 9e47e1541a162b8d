"""The snare experiment (quick settings), its defect modes, and the demo stage, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignlab.probe.items import ProbeItem


def test_quick_experiment_writes_analysed_claims_and_a_report_rendered_from_them(tmp_path):
    from alignlab.probe.experiment import CONTROL_ARMS, DEFECT_ARMS, default_claims, render_report, run

    out = tmp_path / "snare"
    res = run(out, quick=True, seeds=[0])
    assert res["experiment"] == "snare" and res["quick"] is True
    assert [r["claim"] for r in res["claims"]] == [c["name"] for c in default_claims()]
    for row in res["claims"]:
        assert row["n"] == 1 and row["verdict"] == "inconclusive"  # one seed supports no verdict
        assert row["p_difference"] == 1.0 and row["smallest_p"] == 1.0
    assert set(res["arms"]["claimed"]) >= {
        "base",
        "hardneg",
        "negrate-0",
        "negrate-1.6",
        *DEFECT_ARMS,
        *CONTROL_ARMS,
    }
    runs = res["runs"]
    # Controls and defects behave as their definitions say, on real scores.
    assert runs["word_order_acc_pct"]["scene-oracle"] == [100.0]
    assert runs["order_content_pct"]["order-blind"] == [50.0]  # blind to order: every comparison ties
    assert runs["word_order_acc_pct"]["order-blind"] == [0.0]  # ties count as wrong ...
    assert runs["word_order_acc_pct"]["order-blind:ties-correct"] == [100.0]  # ... and right under the defect
    assert runs["order_content_pct"]["bow-oracle"] == [50.0] and runs["negation_acc_pct"]["bow-oracle"] == [
        50.0
    ]
    # The affirmative key: the score is how often the affirmative is picked.
    base_aff = runs["negation_affirmative_true_pct"]["base"][0]
    base_neg = runs["negation_negated_true_pct"]["base"][0]
    assert runs["negation_acc_pct"]["base:affirmative-key"][0] == pytest.approx(
        (base_aff + 100 - base_neg) / 2
    )
    # The claims' effect is treatment − control of those per-seed numbers.
    by_name = {r["claim"]: r for r in res["claims"]}
    row = by_name["defect: ties counted correct make an order-blind model score high"]
    assert row["mean_diff"] == pytest.approx(100.0)
    record = json.loads((out / "runs" / "hardneg" / "seed-0" / "record.json").read_text())
    assert (
        sum(record["train"]["negatives"].values()) > 0
        and len(record["scores"]["model"]) == res["probe"]["n_items"]
    )
    report = (out / "report.md").read_text()
    assert report == render_report(json.loads((out / "results.json").read_text()))
    assert "supports no verdict" in report.split("## Pre-registered plan")[0]
    assert (
        report.index("## Pre-registered plan")
        < report.index("## Pre-registered claims: results")
        < report.index("## Exploratory")
    )


@pytest.mark.parametrize(
    "claim, message",
    [
        (
            "{name: x, treatment: nope, control: base,"
            " metric: order_content_pct, direction: improves, margin: 5}",
            "arm 'nope'",
        ),
        (
            "{name: x, treatment: hardneg, control: base,"
            " metric: order_content_pct, direction: improves, margin: 0}",
            "margin",
        ),
        (
            "{name: x, treatment: hardneg, control: base, metric: bleu, direction: improves, margin: 5}",
            "metric 'bleu'",
        ),
    ],
)
def test_a_bad_claim_fails_before_any_training(tmp_path, capsys, claim, message):
    from alignlab.cli import main

    out = tmp_path / "snare"
    assert main(["experiment", "snare", "--quick", "--out", str(out), "--set", f"claims=[{claim}]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (out / "runs").exists() and not (out / "probe").exists()


def test_released_defects_by_name():
    from alignlab.probe.defects import (
        affirmative_key,
        judge_ties_correct,
        substring_shuffle,
        substring_write_back,
    )
    from alignlab.probe.evaluate import judge

    item = ProbeItem(
        id="w",
        task="semantic_structure",
        category="relation",
        images=["a.png"],
        options=["a red circle left of a blue square", "a blue circle left of a red square"],
        correct=0,
    )
    tied = np.array([[0.3, 0.3]])
    assert judge(item, tied).correct == 0.0 and judge_ties_correct(item, tied) == 1.0
    assert judge_ties_correct(item, np.array([[0.2, 0.3]])) == 0.0
    neg = ProbeItem(
        id="n",
        task="negation",
        category="negated_true",
        images=["a.png"],
        options=["the circle is not red", "the circle is red"],
        correct=0,
        option_kinds=["negated", "affirmative"],
    )
    assert affirmative_key(neg).correct == 1 and affirmative_key(neg).truth is None
    # Substring write-back replaces inside words ("lemon" -> "lembelow"); the token fix never does.
    assert (
        substring_write_back("the lemon is on the table", ["the", "lemon", "is", "below", "the", "table"])
        == "the lembelow is below the table"
    )
    # Exchanging two words does not undo itself.
    assert (
        substring_write_back(
            "a red circle and a blue square", ["a", "blue", "circle", "and", "a", "red", "square"]
        )
        == "a blue circle and a red square"
    )
    out = substring_shuffle("there is a large circle", "shuffle_function", np.random.default_rng(0))
    assert out is not None and out != "there is a large circle"


def test_substring_items_keep_gold_and_image_and_corrupt_some_words():
    from alignlab.probe.build_shapes import ShapesProbeConfig, build_shapes_items
    from alignlab.probe.defects import substring_items

    items, _, _ = build_shapes_items(ShapesProbeConfig(items_per_category=4, tasks=["semantic_structure"]))
    sub, stats = substring_items(items)
    assert len(sub) == len(items) == stats["items"]
    for a, b in zip(items, sub, strict=True):
        assert (a.id, a.images, a.correct, a.option_kinds) == (b.id, b.images, b.correct, b.option_kinds)
        assert a.options[a.correct] == b.options[b.correct]
        assert len({o.lower() for o in b.options}) == len(b.options)
    assert stats["corrupted"] > 0


def test_item_values_tie_modes():
    from alignlab.probe.experiment import item_values

    item = ProbeItem(
        id="w",
        task="semantic_structure",
        category="relation",
        images=["a.png"],
        options=["g", "c", "f", "a"],
        correct=0,
        option_kinds=["gold", "shuffle_content", "shuffle_function", "shuffle_all"],
    )
    s = [[[1.0, 1.0, 0.0, 0.0]]]
    strict = item_values([item], s)
    assert strict["word_order_acc_pct"] == [0.0] and strict["order_content_pct"] == [0.5]
    assert strict["order_function_pct"] == [1.0]
    assert item_values([item], s, ties="expected")["word_order_acc_pct"] == [0.5]
    assert item_values([item], s, ties="correct")["word_order_acc_pct"] == [1.0]


def test_demo_stage_writes_a_bar_chart_per_task(tmp_path):
    from alignlab.demo import DemoContext
    from alignlab.probe.demo import STAGE_TITLE, demo_stage

    ctx = DemoContext(out=tmp_path, quick=True, seed=0)
    lines = demo_stage(ctx)
    assert STAGE_TITLE and any("untrained" in line for line in lines)
    pngs = sorted(p.name for p in (tmp_path / "probe" / "plots").glob("*.png"))
    assert pngs == [
        "attribute_ownership.png",
        "negation.png",
        "relationship_composition.png",
        "semantic_structure.png",
    ]
    assert sum(line.startswith("![") for line in lines) == 4
