"""``alignlab <area> <verb>``: the command line.

Each area owns its sub-commands in its own ``cli.py`` with a ``register(subparsers)`` function; this
module only assembles them, adds ``--quiet`` to every command, and is the one error path:

* a user mistake (an :class:`~alignlab.core.errors.AlignlabError`, an argument argparse rejects, a path the
  system refuses) becomes one line ``error: <what> (<where>); <fix>`` on stderr and exit status 2;
* anything else is a bug in alignlab: its traceback, then one line asking to report it, exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
import traceback
from collections.abc import Sequence

from alignlab import __version__, needs
from alignlab.core.errors import AlignlabError
from alignlab.core.io import outside_root_allowed
from alignlab.core.logs import LEVELS as LOG_LEVELS
from alignlab.core.logs import configure as configure_logging
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
    "alignlab.configs",
    "alignlab.experiments",
    "alignlab.demo",
)


# Each top-level command, the module that registers it, and its one-line help. `alignlab --help` lists
# these without importing any area (the areas import torch: seconds instead of a tenth of one), and
# `alignlab <command> ...` imports only the module of that command. A test keeps this table equal to what
# the modules register.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("alignlab.data.cli", "generate ShapesWorld and check image–text data sets"),
    "train": ("alignlab.retrieval.cli", "train an image–text retrieval model from a config"),
    "eval": ("alignlab.retrieval.cli", "evaluate models (retrieval)"),
    "repro": ("alignlab.retrieval.cli", "seed-aware reproducibility: run over seeds, compare, diff"),
    "distill": ("alignlab.distill.cli", "distil image–text and classification models (DCD, PESF-KD)"),
    "probe": ("alignlab.probe.cli", "build and run SNARE probes (structure, negation, ownership, relations)"),
    "ambiguity": (
        "alignlab.ambiguity.cli",
        "word-sense disambiguation, caption ambiguity scores and selection (3AM)",
    ),
    "mmt": ("alignlab.mmt.cli", "multimodal machine translation: train and evaluate (English -> Chinese)"),
    "commonit": ("alignlab.commonit.cli", "CommonIT: group instruction data and train one group per step"),
    "report": (
        "alignlab.report.cli",
        "render a run, repro, probe, experiment or demo folder as HTML + Markdown, or compare several runs",
    ),
    "config": ("alignlab.configs", "list or print the example configs shipped with alignlab"),
    "experiment": ("alignlab.experiments", "run a method's headline-claim experiment"),
    "demo": ("alignlab.demo", "run every method on the built-in data and write a report"),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in the one-line form (sub-parsers inherit the class)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.match(r"argument ([^:]+): (.*)", message, re.S)
        where, what = (m.group(1), m.group(2)) if m else (self.prog, message)
        print(f"error: {' '.join(what.split())} ({where}); see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser (``command=None``), or one that loads only ``command``'s module and lists the other
    commands by name and help alone (``command=""``: none loaded, enough for ``alignlab --help``)."""
    parser = _Parser(
        prog="alignlab",
        description="alignlab: align vision and language models and curate the data that trains them.",
        epilog="Run `alignlab <command> --help` for a command's options. `alignlab demo --quick` shows "
        "every stage on the built-in data in under two minutes.",
    )
    parser.add_argument("--version", action="version", version=f"alignlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    wanted = (
        AREA_CLIS if command is None else tuple(m for name, (m, _) in COMMANDS.items() if name == command)
    )
    loaded: set[str] = set()
    for name, (module, help_text) in COMMANDS.items():
        if module in loaded:
            continue
        if module in wanted and _available(module):
            importlib.import_module(module).register(sub)
            loaded.add(module)
        elif module not in wanted:
            sub.add_parser(name, help=help_text)  # listed only: parsing `name` builds the real one
    for name, leaf in leaf_parsers(parser).items():
        _add_common_flags(name, leaf)
    return parser


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> dict[str, argparse.ArgumentParser]:
    """Every runnable command of the parser tree by its path (``"distill dcd train"``), in listing order."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {" ".join(path): parser}
    return {
        name: leaf
        for action in subs
        for child_name, child in action.choices.items()
        for name, leaf in leaf_parsers(child, (*path, child_name)).items()
    }


def _add_common_flags(name: str, parser: argparse.ArgumentParser) -> None:
    """Give a command ``--quiet``, ``--verbose`` and ``--log-level``, and record its path for the extras
    check (:mod:`alignlab.needs`)."""
    if not any("--quiet" in a.option_strings for a in parser._actions):
        parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    if not any("--log-level" in a.option_strings for a in parser._actions):
        parser.add_argument(
            "--verbose", action="store_true", help="also show debug lines (= --log-level DEBUG)"
        )
        parser.add_argument(
            "--log-level",
            default=None,
            type=str.upper,
            choices=LOG_LEVELS,
            help="lines shown on stderr: DEBUG, INFO (default), WARNING or ERROR",
        )
    parser.set_defaults(**{needs.COMMAND_KEY: name})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(first if first in COMMANDS else "")
    args = parser.parse_args(argv)
    if getattr(args, "quiet", False):  # without --quiet, ALIGNLAB_QUIET (read at import) decides
        set_quiet(True)
    configure_logging(getattr(args, "log_level", None), verbose=getattr(args, "verbose", False))
    try:
        needs.check(args)  # optional extras, before any work
        with outside_root_allowed(getattr(args, "allow_outside_root", False)):
            result = args.run(args)
    except AlignlabError as e:
        print(f"error: {_located(e, args).one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.filename is None:  # not about a path the user gave: treat it as a bug
            return _bug()
        # The system refused a path (permissions, disk full, a file where a folder should be).
        print(
            f"error: {e.strerror or e} ({e.filename}); check that path, its permissions and the free space",
            file=sys.stderr,
        )
        return 2
    except Exception:
        return _bug()
    return int(result or 0)


def _command(args: argparse.Namespace) -> str:
    words = [getattr(args, k, None) for k in ("command", "verb", "dcd_verb", "pesf_verb")]
    return "alignlab " + " ".join(w for w in words if isinstance(w, str))


def _located(e: AlignlabError, args: argparse.Namespace) -> AlignlabError:
    """Fill a missing where/fix: a key that is also an option of the command is blamed on that option."""
    where = None
    if e.key and e.key.replace("-", "_") in vars(args):
        where = "--" + e.key.replace("_", "-")
    return e.located(where or _command(args), f"see `{_command(args)} --help`")


def _bug() -> int:
    traceback.print_exc()
    print(
        f"This is a bug in alignlab {__version__}, not a mistake in your input: please report it with the "
        "command you ran and the traceback above.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
