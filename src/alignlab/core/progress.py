"""Progress (live bars on a terminal, plain lines in logs) and status messages that ``--quiet`` turns off.

The switch is process-wide: the CLI calls ``set_quiet(args.quiet)`` once; library code calls
:func:`progress` / :func:`info` and never decides on its own. ``ALIGNLAB_QUIET=1`` does the same.
Under torch.distributed only rank 0 shows bars and messages.

Where progress goes depends on stderr:

* **a terminal**: a tqdm bar (``n/total [elapsed<ETA, rate]``). ``set_postfix`` does not force a redraw,
  so the bar is redrawn at most every ``mininterval`` (0.5 s), and ``TQDM_*`` environment variables
  (``TQDM_MININTERVAL``, ``TQDM_NCOLS``, ``TQDM_DISABLE`` ...) win over our defaults;
* **a pipe or file** (batch jobs, CI, ``make demo 2> log``): a plain log line (what, done/total, rate,
  ETA, the postfix) at every 10 % of the work or every 30 s, whichever comes first, never more than one
  a second, and a closing line; no carriage returns, no cursor codes. ``ALIGNLAB_PROGRESS=lines|bars``
  forces one of the two.

Progress lines are INFO records of the ``alignlab.progress`` logger (:mod:`alignlab.core.logs`), so a
run's ``log.txt`` holds them in both cases.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from alignlab.core.logs import bars_on_console, get_logger, is_quiet, is_rank_zero, set_quiet

T = TypeVar("T")
__all__ = ["debug", "info", "is_quiet", "library_bars_off", "progress", "set_quiet", "Progress"]

LINE_EVERY_S = 30.0  # a progress line at least this often ...
LINE_EVERY_FRACTION = 0.1  # ... and at every 10 % of the work ...
LINE_MIN_GAP_S = 1.0  # ... but never more than one per second (a fast loop prints no 10 % lines)
BAR_MININTERVAL_S = 0.5


def _is_rank_zero() -> bool:  # kept for callers of the old private name
    return is_rank_zero()


def _tqdm_defaults() -> dict[str, Any]:
    """Our bar settings, minus those a ``TQDM_<NAME>`` environment variable sets (tqdm reads them itself).

    tqdm (>= 4.66) applies ``TQDM_*`` variables as default arguments of its constructor, so an explicit
    argument would silently override the user's variable: leave those out.
    """
    ours = {"dynamic_ncols": True, "mininterval": BAR_MININTERVAL_S, "file": sys.stderr}
    given = {k for k in ours if f"TQDM_{k.upper()}" in os.environ}
    if "TQDM_NCOLS" in os.environ:  # a fixed width: a dynamic one would replace it at every redraw
        given.add("dynamic_ncols")
    return {k: v for k, v in ours.items() if k not in given}


def _fmt_seconds(s: float) -> str:
    s = int(round(max(0.0, s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _fmt_rate(rate: float, unit: str) -> str:
    if rate >= 1 or rate == 0:
        return f"{rate:.3g} {unit}/s" if rate < 100 else f"{rate:.0f} {unit}/s"
    return f"{1 / rate:.3g} s/{unit}"


class Progress:
    """tqdm's interface (iterate, ``update``, ``set_postfix``, ``set_description``, ``close``, ``with``).

    Always writes plain progress lines to the ``alignlab.progress`` logger (the console shows them when
    stderr is not a terminal); on a terminal it also drives a tqdm bar.
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        total: int | float | None = None,
        desc: str | None = None,
        unit: str = "it",
        initial: int = 0,
        leave: bool = False,
        every_s: float | None = None,
        every_fraction: float | None = None,
        min_gap_s: float | None = None,
        **tqdm_kwargs: Any,
    ):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc or "progress"
        self.unit = unit
        self.n: float = initial  # update() also takes fractions
        self._start_n: float = initial
        self._last_n: float = initial
        self.every_s = LINE_EVERY_S if every_s is None else every_s
        self.every_fraction = LINE_EVERY_FRACTION if every_fraction is None else every_fraction
        self.min_gap_s = LINE_MIN_GAP_S if min_gap_s is None else min_gap_s
        self.postfix = ""
        self.lines = 0
        self._t0 = self._last_t = time.monotonic()
        self._last_step = self._step(initial)
        self._closed = False
        self._log = get_logger("progress")
        self.bar: Any = None
        # "disable": nothing of it reaches the console (quiet); lines still go to a run's log file.
        self.disable = is_quiet()
        if bars_on_console() and not self.disable:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                initial=initial,
                leave=leave,
                **{**_tqdm_defaults(), **tqdm_kwargs},
            )

    # --- tqdm's interface ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress has no iterable; call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total) if self.total is not None else len(self.iterable)  # type: ignore[arg-type]

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int | float = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        now = time.monotonic()
        since = now - self._last_t
        if since >= self.every_s or (since >= self.min_gap_s and self._step(self.n) > self._last_step):
            self._line(now)

    def set_postfix(
        self, ordered_dict: dict[str, Any] | None = None, refresh: bool = False, **kwargs: Any
    ) -> None:
        """Like tqdm's, but without forcing a redraw: the bar's ``mininterval`` decides when it is drawn."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())
        if self.bar is not None:
            self.bar.set_postfix(items, refresh=refresh)

    def set_description(self, desc: str | None = None, refresh: bool = False) -> None:
        self.desc = desc or "progress"
        if self.bar is not None:
            self.bar.set_description(desc, refresh=refresh)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
        elapsed = time.monotonic() - self._t0
        # A closing line when lines were shown and work happened since, or when the job took a while.
        if (self.lines and self.n != self._last_n) or (
            not self.lines and elapsed >= self.min_gap_s and self.n > self._start_n
        ):
            self._emit(self._done_line(elapsed))

    # --- lines ------------------------------------------------------------------------------------------
    def _step(self, n: float) -> int:
        if not self.total or self.every_fraction <= 0:
            return 0
        return int(min(n, self.total) / self.total / self.every_fraction + 1e-9)

    def _rate(self, elapsed: float) -> float:
        return (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0

    def _line(self, now: float) -> None:
        elapsed = now - self._t0
        rate = self._rate(elapsed)
        parts = [f"{self.desc}: {self._count()}"]
        stats = [_fmt_rate(rate, self.unit), f"elapsed {_fmt_seconds(elapsed)}"]
        if self.total and rate > 0:
            stats.append(f"ETA {_fmt_seconds((self.total - self.n) / rate)}")
        parts.append(", ".join(stats))
        if self.postfix:
            parts.append(self.postfix)
        self._emit(" | ".join(parts))
        self._last_t, self._last_n, self._last_step = now, self.n, self._step(self.n)

    def _done_line(self, elapsed: float) -> str:
        rate = _fmt_rate(self._rate(elapsed), self.unit)
        line = f"{self.desc}: {self._count()} in {_fmt_seconds(elapsed)} ({rate})"
        return line + (f" | {self.postfix}" if self.postfix else "")

    def _count(self) -> str:
        n = int(self.n) if float(self.n).is_integer() else round(self.n, 2)
        if not self.total:
            return f"{n} {self.unit}"
        return f"{n}/{int(self.total)} {self.unit} ({100 * self.n / self.total:.0f}%)"

    def _emit(self, text: str) -> None:
        self.lines += 1
        self._log.info(text, extra={"progress": True})


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    leave: bool = False,
    **kwargs: Any,
) -> Any:
    """Progress over ``iterable`` (or driven by ``update``): a bar on a terminal, plain lines otherwise."""
    return Progress(iterable, total=total, desc=desc, unit=unit, leave=leave, **kwargs)


def info(message: str) -> None:
    """A status line (INFO on the ``alignlab`` logger): on stderr unless quiet, and in a run's ``log.txt``."""
    get_logger().info(message)


def debug(message: str) -> None:
    """A detail shown with ``--verbose`` / ``--log-level DEBUG`` and always written to a run's ``log.txt``."""
    get_logger().debug(message)


@contextlib.contextmanager
def library_bars_off(always: bool = False) -> Iterator[None]:
    """Hide the progress bars that Hugging Face libraries draw themselves, restoring them afterwards.

    transformers shows a "Loading weights" bar for every model it loads (sentence-transformers too) and a
    bar per saved shard; they ignore tqdm's ``disable`` and would leak through ``--quiet``. Off while
    quiet, or with ``always=True`` for loads where a bar is only noise (a small local model). Off, too,
    when stderr is not a terminal: their bars would write a carriage-return update into the log.
    """
    if not (always or is_quiet() or not bars_on_console()):
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
