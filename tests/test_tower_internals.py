"""Nothing outside ``models/`` may reach into a model's towers (DESIGN.md, issue 14): a ratchet until it is
zero.

Training code still uses the tiny towers' internals in the places listed in ``ALLOWED`` (file -> number of
uses). The test fails when a file gains a use or a new file starts using them — new code goes through the
scorer contract (``models/base.py``) instead — and when a file loses some, so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "alignlab"
INTERNALS = {"image_tower", "text_tower", "fuse", "logit_scale", "forward_grid", "_grid"}

# Measured on main; lower a number (or drop the file) when you remove a use.
ALLOWED: dict[str, int] = {}


def uses() -> Counter[str]:
    found: Counter[str] = Counter()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("models/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        n = sum(isinstance(node, ast.Attribute) and node.attr in INTERNALS for node in ast.walk(tree))
        if n:
            found[rel] = n
    return found


def test_no_new_code_reaches_into_the_towers():
    now = uses()
    grown = {f: (ALLOWED.get(f, 0), n) for f, n in now.items() if n > ALLOWED.get(f, 0)}
    assert not grown, f"tower internals used outside models/ (allowed, now): {grown}; use the scorer contract"


def test_the_allowance_shrinks_with_the_code():
    now = uses()
    stale = {f: (n, now.get(f, 0)) for f, n in ALLOWED.items() if now.get(f, 0) < n}
    assert not stale, f"fewer uses than allowed (allowed, now): {stale}; lower ALLOWED to match"
