"""Example configs shipped with the package, and ``alignlab config list|show``.

Each YAML file here is the full default config of a command that takes ``--config``: every key, with
the value the command uses when the file leaves it out. Copy one, edit what you need, and pass it
back (``alignlab config show train --out my.yaml``, then ``alignlab train --config my.yaml``).
A test keeps each file equal to its command's built-in defaults, so the examples cannot drift.
"""

from __future__ import annotations

import argparse
import importlib
from importlib import resources
from pathlib import Path
from typing import Any

from alignlab.core.cliargs import add_out
from alignlab.core.errors import ConfigError

# name -> (what it configures, "module:loader"); the loader maps a (partial) dict to the config object.
CONFIGS: dict[str, tuple[str, str]] = {
    "train": (
        "`alignlab train --config` and `alignlab repro run --config` (tiny retrieval model)",
        "alignlab.retrieval.training:load_run_config",
    ),
    "dcd-teacher": (
        "`alignlab distill dcd teacher --config` (tiny cross-encoder teacher)",
        "alignlab.distill.dcd.train:load_teacher_config",
    ),
    "dcd-student": (
        "`alignlab distill dcd train --config` (DCD student, default arm)",
        "alignlab.distill.dcd.train:load_run_config",
    ),
    "pesf": (
        "`alignlab distill pesf train --config` (KD / PESF-KD run)",
        "alignlab.distill.pesf.trainer:KDConfig",
    ),
}


def loader(name: str) -> Any:
    """The callable that turns a (partial) dict into ``name``'s config object."""
    module, _, attr = CONFIGS[name][1].partition(":")
    obj = getattr(importlib.import_module(module), attr)
    if isinstance(obj, type):  # a dataclass: build it from the dict like the command does
        from alignlab.core.config import from_dict

        return lambda data, where=None: from_dict(obj, data, where=where)
    return obj


def render(name: str) -> str:
    """Config ``name`` rendered from its command's built-in defaults (what the shipped file must hold)."""
    import yaml

    from alignlab.core.config import to_dict

    what = CONFIGS[name][0]
    head = (
        f"# {name}: the full default config of {what}.\n"
        f"# Print it with `alignlab config show {name}`; every key may be left out.\n"
    )
    return head + yaml.safe_dump(to_dict(loader(name)({})), sort_keys=False, default_flow_style=False)


def write_all() -> None:
    """Rewrite the shipped files after a default changed:
    ``python -c 'import alignlab.configs as c; c.write_all()'``."""
    folder = Path(__file__).parent
    for name in CONFIGS:
        (folder / f"{name}.yaml").write_text(render(name), encoding="utf-8")


def text(name: str) -> str:
    """The shipped YAML of config ``name``."""
    if name not in CONFIGS:
        raise ConfigError(
            f"unknown config {name!r}",
            where="alignlab config show",
            fix=f"choose one of: {', '.join(CONFIGS)}",
        )
    return resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="list or print the example configs shipped with alignlab",
        description="Print a command's full default config as YAML, to copy and edit.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="<verb>")
    ls = verbs.add_parser("list", help="the shipped configs and the commands that read them")
    ls.set_defaults(run=run_list)
    show = verbs.add_parser("show", help="print one config (or write it with --out)")
    show.add_argument("name", choices=sorted(CONFIGS), help="which config")
    add_out(show, default=None, help="write it to this file instead of printing it")
    show.set_defaults(run=run_show)


def run_list(args: argparse.Namespace) -> int:
    width = max(map(len, CONFIGS))
    for name, (what, _) in CONFIGS.items():
        print(f"{name:<{width}}  {what}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    body = text(args.name)
    if args.out is None:
        print(body, end="")
        return 0
    from alignlab.core.io import write_text

    if args.out.exists():
        raise ConfigError("the output file exists", where=str(args.out), fix="choose a new file name")
    write_text(args.out, body)
    print(f"wrote {args.out}")
    return 0
