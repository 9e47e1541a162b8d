"""docs/results/*.md and docs/RESULTS.md are rendered by code from the stored results JSON.

Each page must equal what ``alignlab experiment NAME --render docs/results/NAME.json`` gives, and
docs/RESULTS.md what ``alignlab experiment summary`` gives: a number typed by hand, or a renderer
changed without re-rendering the pages, fails here. Re-render with ``make results-docs``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from alignlab.experiments import EXPERIMENTS, load_results, render_summary

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_page_is_rendered_from_its_results(name: str) -> None:
    module = importlib.import_module(EXPERIMENTS[name])
    data = load_results(RESULTS / f"{name}.json", name)
    assert not data.get("quick"), "the docs must hold a full run, not --quick settings"
    assert data.get("claims"), "the results carry the analysed pre-registered claims"
    page = (RESULTS / f"{name}.md").read_text(encoding="utf-8")
    assert module.render_report(data) == page, (
        f"re-render: alignlab experiment {name} --render docs/results/{name}.json --to docs/results/{name}.md"
    )


def test_summary_is_rendered_from_the_six_results() -> None:
    assert render_summary(RESULTS) == (ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8")


def test_the_plan_comes_before_the_results() -> None:
    for name in sorted(EXPERIMENTS):
        page = (RESULTS / f"{name}.md").read_text(encoding="utf-8")
        plan = page.find("## Pre-registered plan")
        assert plan != -1, name
        assert plan < page.find("## Pre-registered claims: results"), name
        exploratory = page.find("## Exploratory")
        assert exploratory == -1 or exploratory > plan, name
