"""One way every claim experiment writes its results and its report.

An experiment's ``run`` builds a JSON-able results dict and calls :func:`write_results`: the dict is
written to ``results.json`` and ``report.md`` is rendered *from the file just written* (read back), so
the report is exactly what ``alignlab experiment NAME --render results.json`` gives later from the same
file. docs/results/NAME.md is that rendering of docs/results/NAME.json, and a test checks they agree:
no number in those pages is typed by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignlab.core.io import read_json, write_json, write_text

Renderer = Callable[[dict[str, Any]], str]


def write_results(out: str | os.PathLike, result: dict[str, Any], render: Renderer) -> dict[str, Any]:
    """Write ``results.json``, then ``report.md`` rendered from the file read back; return what was read."""
    out = Path(out)
    write_json(out / "results.json", result)
    stored = read_json(out / "results.json")
    write_text(out / "report.md", render(stored))
    return stored
