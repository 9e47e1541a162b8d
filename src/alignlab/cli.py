"""``alignlab <area> <verb>``: the command line.

Each area owns its sub-commands in its own ``cli.py`` with a ``register(subparsers)`` function; this
module only assembles them, adds ``--quiet`` to every command, and turns an
:class:`~alignlab.core.errors.AlignlabError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from alignlab import __version__
from alignlab.core.errors import AlignlabError
from alignlab.core.progress import set_quiet

# Area command modules, in the order their commands are listed by --help.
AREA_CLIS = (
    "alignlab.data.cli",
    "alignlab.retrieval.cli",
    "alignlab.distill.cli",
    "alignlab.probe.cli",
    "alignlab.ambiguity.cli",
    "alignlab.mmt.cli",
    "alignlab.commonit.cli",
    "alignlab.report.cli",
    "alignlab.experiments",
    "alignlab.demo",
)


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignlab",
        description="alignlab: align vision and language models and curate the data that trains them.",
        epilog="Run `alignlab <command> --help` for a command's options. `alignlab demo --quick` shows "
               "every stage on the built-in data in under two minutes.",
    )
    parser.add_argument("--version", action="version", version=f"alignlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for module in AREA_CLIS:
        if _available(module):
            importlib.import_module(module).register(sub)
    _add_quiet(parser, top=True)
    return parser


def _add_quiet(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """Give every leaf command a ``--quiet`` flag (progress bars and status lines off)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        if not any("--quiet" in a.option_strings for a in parser._actions):
            parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
        return
    for action in subs:
        for child in set(action.choices.values()):
            _add_quiet(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "quiet", False):  # without --quiet, ALIGNLAB_QUIET (read at import) decides
        set_quiet(True)
    try:
        result = args.run(args)
    except AlignlabError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
