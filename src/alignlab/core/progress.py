"""Progress bars (tqdm, with ETA and rate) and status messages that ``--quiet`` turns off.

The switch is process-wide: the CLI calls ``set_quiet(args.quiet)`` once; library code calls
:func:`progress` / :func:`info` and never decides on its own. ``ALIGNLAB_QUIET=1`` does the same.
Under torch.distributed only rank 0 shows bars and messages.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_quiet = os.environ.get("ALIGNLAB_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet or not _is_rank_zero()


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str | None = None,
             unit: str = "it", leave: bool = False, **kwargs: Any) -> Any:
    """A tqdm bar on stderr (``n/total [elapsed<ETA, rate]``), disabled when quiet."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=is_quiet(),
                file=sys.stderr, dynamic_ncols=True, mininterval=0.5, **kwargs)


def info(message: str) -> None:
    """A status line on stderr, unless quiet."""
    if not is_quiet():
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def library_bars_off(always: bool = False) -> Iterator[None]:
    """Hide the progress bars that Hugging Face libraries draw themselves, restoring them afterwards.

    transformers shows a "Loading weights" bar for every model it loads (sentence-transformers too) and a
    bar per saved shard; they ignore tqdm's ``disable`` and would leak through ``--quiet``. Off while
    quiet, or with ``always=True`` for loads where a bar is only noise (a small local model).
    """
    if not (always or is_quiet()):
        yield
        return
    restore: list[Any] = []
    try:
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            restore.append(hf_logging.enable_progress_bar)
    except ImportError:  # transformers not installed: nothing to hide
        pass
    try:
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )

        if not are_progress_bars_disabled():
            disable_progress_bars()
            restore.append(enable_progress_bars)
    except ImportError:
        pass
    try:
        yield
    finally:
        for undo in restore:
            undo()


def iter_progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    with progress(iterable, total=total, desc=desc) as bar:
        yield from bar
