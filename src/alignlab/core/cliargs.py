"""The flags every area's commands share, defined once: output, seed, overwrite and device.

Each area still owns its sub-parser (DESIGN.md); these helpers keep the shared flags' type, metavar,
validation and wording the same everywhere. ``--quiet``, ``--verbose`` and ``--log-level`` are added
to every command by :mod:`alignlab.cli`; the model-loading flags (``--allow-download``, ``--fp16``,
``--model-batch-size``) by :func:`alignlab.models.adapters.add_model_arguments`.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_seed(p); add_out(p, default=None, help="output folder"); add_device(p)
>>> a = p.parse_args(["--seed", "3", "--device", "cuda:1"])
>>> (a.seed, a.out, a.device)
(3, None, 'cuda:1')
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

DEVICES = ("auto", "cpu", "cuda", "mps")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def seed_value(text: str) -> int:
    """A seed: a non-negative integer (numpy's seed sequences refuse negative ones)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: give a non-negative integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid seed {value}: give a non-negative integer")
    return value


def device_value(text: str) -> str:
    """A device name as the models take it: auto, cpu, mps, cuda or cuda:<index>."""
    name = text.strip().lower()
    if not _DEVICE.match(name):
        raise argparse.ArgumentTypeError(f"invalid device {text!r}: use auto, cpu, cuda, cuda:<index> or mps")
    return name


def add_out(
    parser: argparse.ArgumentParser,
    *,
    help: str,
    default: Path | None = None,
    required: bool = False,
    metavar: str = "PATH",
) -> None:
    """``--out``: where the command writes (a folder or a file, as ``help`` says)."""
    kwargs: dict[str, Any] = {"required": True} if required else {"default": default}
    parser.add_argument("--out", type=Path, metavar=metavar, help=help, **kwargs)


def add_seed(parser: argparse.ArgumentParser, *, default: int | None = 0, help: str = "random seed") -> None:
    """``--seed``: a non-negative integer; ``default=None`` means the config's own seed."""
    if "default" not in help and not (default is None and "config" in help):
        help += " (default: the config's seed)" if default is None else f" (default {default})"
    parser.add_argument("--seed", type=seed_value, default=default, metavar="N", help=help)


def add_overrides(
    parser: argparse.ArgumentParser,
    *,
    help: str = "override a config value, e.g. --set train.epochs=3 (repeatable)",
) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``, which
    :func:`alignlab.core.config.command_config` (commands) and
    :func:`alignlab.core.config.experiment_config` (experiments) read."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_overwrite(
    parser: argparse.ArgumentParser, *, help: str = "replace a finished run in --out (never done otherwise)"
) -> None:
    """``--overwrite``: the only way a command replaces finished work in ``--out``."""
    parser.add_argument("--overwrite", action="store_true", help=help)


def add_device(parser: argparse.ArgumentParser, *, default: str = "cpu", note: str = "") -> None:
    """``--device``: checked when parsed; whether this machine has it is checked when the model is placed."""
    text = f"cpu, cuda, cuda:<index>, mps or auto (default: {default}; auto = cuda, then mps, then cpu)"
    parser.add_argument(
        "--device",
        type=device_value,
        default=default,
        metavar="DEVICE",
        help=text + (f"; {note}" if note else ""),
    )
