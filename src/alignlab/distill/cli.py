"""``alignlab distill <verb>``: each method adds its verbs (``dcd``, ``pesf``, ``bench`` ...)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util

# Each module has ``register_verbs(verbs)`` adding its sub-commands to ``alignlab distill``.
METHOD_CLIS = ("alignlab.distill.dcd.cli", "alignlab.distill.pesf.cli")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="distil image–text and classification models (DCD, PESF-KD)",
        description="Knowledge distillation: DCD for image–text retrieval, PESF-KD and "
        "classic KD baselines for classification.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="<verb>")
    for module in METHOD_CLIS:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            importlib.import_module(module).register_verbs(verbs)
