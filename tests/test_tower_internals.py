"""Nothing outside ``models/`` reaches into a model's towers (DESIGN.md, issue 14).

Trainers, miners and benchmarks use a model only through the training contract in ``models/base.py``
(``preprocess_images``, ``tokenize``, ``embed_*``, ``logit_params``, ``image_states``/``text_states``,
``fuse_pairs``/``fuse_grid``, ...), so every model kind trains the same way. The test fails as soon as a
file outside ``models/`` reads one of the tiny models' internal attributes.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "alignlab"
INTERNALS = {"image_tower", "text_tower", "fuse", "logit_scale", "forward_grid", "_grid"}


def uses(root: Path = SRC) -> dict[str, list[int]]:
    """File (relative to ``root``) -> lines that read an internal attribute, outside ``models/``."""
    found: dict[str, list[int]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("models/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lines = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in INTERNALS]
        if lines:
            found[rel] = sorted(lines)
    return found


def test_no_code_outside_models_reaches_into_the_towers():
    found = uses()
    assert not found, f"tower internals outside models/ (file: lines): {found}; use the training contract"


def test_the_check_sees_a_use(tmp_path):
    """The scan is not empty by construction: a file that reads a tower is reported with its line."""
    pkg = tmp_path / "alignlab"
    (pkg / "models").mkdir(parents=True)
    (pkg / "models" / "tiny.py").write_text("x = model.image_tower\n")  # inside models/: allowed
    (pkg / "trainer.py").write_text("import torch\n\ny = model.text_tower(ids, mask)\n")
    assert uses(pkg) == {"trainer.py": [3]}
