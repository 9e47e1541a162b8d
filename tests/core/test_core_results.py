"""write_results: the report is rendered from results.json as read back, so --render gives the same page."""

from __future__ import annotations

import math

from alignlab.core.io import read_json
from alignlab.core.results import write_results


def test_report_is_rendered_from_the_file_read_back(tmp_path):
    seen = []

    def render(r):
        seen.append(r)
        return f"# x\n\n{r['value']!r} {r['pair']!r}\n"

    stored = write_results(tmp_path, {"value": math.pi, "pair": (1, 2)}, render)
    # A tuple becomes a list in JSON: the renderer sees what --render will see later, not the live dict.
    assert seen == [stored] and stored["pair"] == [1, 2]
    assert read_json(tmp_path / "results.json") == stored
    assert (tmp_path / "report.md").read_text() == render(stored)
