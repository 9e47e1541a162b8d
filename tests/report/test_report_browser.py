"""The HTML reports in a real browser: headless Chromium loads them offline, without errors, every image
decoded.

The page carries its own check (a small inline script fills ``#report-status`` once the page has
loaded: images with ``naturalWidth > 0``, tables, script errors); Chromium's ``--dump-dom`` returns the
DOM after load, and its log (``--enable-logging=stderr``) has one CONSOLE line per console message.
Name resolution is switched off, so a page that needed the network would show broken images or errors.
Each test leaves a screenshot in its temp folder. Skipped when no Chromium is installed.
"""

from __future__ import annotations

import pytest
from PIL import Image

from alignlab.cli import main
from alignlab.report.render import render

from .conftest import make_run


def assert_page_is_healthy(browser, page, min_images: int, min_tables: int) -> None:
    facts, console = browser.load(page)
    status = facts.status
    assert status.get("data-loaded") == "1", f"the page's load check did not run: {facts.status_text!r}"
    assert console == [], f"console messages: {console}"
    assert status["data-errors"] == "0", facts.status_text
    assert int(status["data-images"]) == facts.images >= min_images
    assert status["data-broken-images"] == "0", facts.status_text  # every <img> has naturalWidth > 0
    assert int(status["data-tables"]) == facts.tables >= min_tables


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """`alignlab demo --quick --only data`: the real demo command, which ends by writing report.html."""
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    assert main(["demo", "--quick", "--only", "data", "--out", str(out), "--quiet"]) == 0
    return out


def test_demo_report_loads_in_chromium_with_every_image_and_table(browser, quick_demo, tmp_path):
    page = quick_demo / "report.html"
    assert page.is_file()
    assert_page_is_healthy(browser, page, min_images=1, min_tables=2)
    shot = browser.screenshot(page, tmp_path / "demo-report.png")
    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        colours = im.convert("RGB").resize((60, 120)).getcolors(maxcolors=60 * 120)
        assert colours is not None and len(colours) > 20  # rendered content, not a blank page


def test_run_and_comparison_reports_load_in_chromium(browser, tmp_path):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", shift=3.0)
    assert_page_is_healthy(browser, render(a).with_suffix(".html"), min_images=2, min_tables=1)
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "cmp" / "report.md")]) == 0
    assert_page_is_healthy(browser, tmp_path / "cmp" / "report.html", min_images=2, min_tables=2)
    browser.screenshot(tmp_path / "cmp" / "report.html", tmp_path / "compare.png", size="1200,1600")


def test_a_page_with_a_broken_image_or_script_error_is_caught(browser, tmp_path):
    """The check itself can fail: a missing image and a throwing script are both reported."""
    bad = tmp_path / "bad.html"
    good = render(make_run(tmp_path / "r")).with_suffix(".html")
    text = good.read_text(encoding="utf-8").replace(
        "</body>", '<img src="missing.png"><script>notAFunction();</script></body>'
    )
    bad.write_text(text, encoding="utf-8")
    facts, console = browser.load(bad)
    assert facts.status["data-broken-images"] == "1"
    assert int(facts.status["data-errors"]) >= 1 and any("notAFunction" in line for line in console)


@pytest.mark.slow
def test_full_quick_demo_report_loads_in_chromium(browser, tmp_path):
    """Every stage of `alignlab demo --quick` (minutes on 2 cores) on one page, checked in the browser."""
    out = tmp_path / "demo-out"
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    assert_page_is_healthy(browser, out / "report.html", min_images=8, min_tables=9)
    browser.screenshot(out / "report.html", tmp_path / "full-demo.png", size="1200,4000")
