"""Markdown tables, written one way everywhere.

>>> print(markdown_table(["metric", "value"], [["R@1", "41.2"], ["R@10", "80.0"]], align="lr"))
| metric | value |
|---|---:|
| R@1 | 41.2 |
| R@10 | 80.0 |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def _cell(value: Any) -> str:
    # A pipe inside a cell would start a new column; a newline would end the row.
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``align`` has one letter per column (l, r or c; default l)."""
    align = align or "l" * len(headers)
    if len(align) != len(headers):
        raise ValueError(f"align has {len(align)} letters for {len(headers)} columns")
    for i, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(f"row {i} has {len(row)} cells for {len(headers)} columns")
    lines = [
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "|" + "|".join(_ALIGN[a] for a in align) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
