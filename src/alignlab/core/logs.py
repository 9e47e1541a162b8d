"""Status lines through :mod:`logging`: one console handler, a text log per run folder, warnings included.

Library code logs to ``alignlab.*`` loggers (``logging.getLogger("alignlab.<area>")``, or
:func:`alignlab.core.progress.info` for a plain status line). The first use installs one handler on the
``alignlab`` logger that writes to stderr, so status lines show without any setup, as they did before
logging. What reaches the console:

* ``--log-level LEVEL`` / ``--verbose`` (DEBUG) set the level explicitly (:func:`configure`);
* otherwise INFO, or WARNING while quiet (``--quiet``, ``ALIGNLAB_QUIET=1``, ranks other than 0).

:func:`run_log` adds a ``log.txt`` file handler for the length of a run (the training loop uses it), which
records DEBUG and up, whatever the console shows. Warnings of the :mod:`warnings` module are routed
through :func:`logging.captureWarnings` (logger ``py.warnings``) to the same handlers, one line each.

Progress lines (see :mod:`alignlab.core.progress`) are INFO records marked ``progress=True``: the console
drops them while a live tqdm bar already shows the same thing on a terminal; log files keep them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOGGER_NAME = "alignlab"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_quiet = os.environ.get("ALIGNLAB_QUIET", "") not in ("", "0")
_console_level: int | None = None  # set by configure(); None: INFO, or WARNING while quiet
_console: _ConsoleHandler | None = None


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = bool(quiet)


def is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


def is_quiet() -> bool:
    return _quiet or not is_rank_zero()


def bars_on_console() -> bool:
    """True when progress is drawn as live tqdm bars (stderr is a terminal), False for plain lines.

    ``ALIGNLAB_PROGRESS=bars`` or ``=lines`` overrides the terminal test (e.g. ``lines`` inside a terminal
    multiplexer that records its output).
    """
    mode = os.environ.get("ALIGNLAB_PROGRESS", "auto").strip().lower()
    if mode in ("bars", "bar", "tqdm"):
        return True
    if mode in ("lines", "line", "plain"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class _OneLineFormatter(logging.Formatter):
    """INFO as the bare message (as status lines always looked); other levels prefixed by the level.

    A captured warning (``py.warnings``) arrives as ``file:line: Category: message`` plus the source line;
    only the first line is kept, so a warning is one line on the console and in the log.
    """

    def __init__(self, fmt: str | None = None, with_level: bool = True):
        super().__init__(fmt)
        self.with_level = with_level

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "py.warnings":
            first = str(record.getMessage()).strip().splitlines()
            record = logging.makeLogRecord(
                {**record.__dict__, "msg": first[0] if first else "", "args": None}
            )
        if self._fmt and self._fmt != "%(message)s":
            return super().format(record)
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        if not self.with_level or record.levelno == logging.INFO:
            return msg
        return f"{record.levelname.lower()}: {msg}"


class _ConsoleHandler(logging.StreamHandler):
    """stderr as it is at each record (pytest and callers replace ``sys.stderr``), filtered by quiet/level."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(_OneLineFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)

    def filter(self, record: logging.LogRecord) -> bool:
        threshold = (
            _console_level
            if _console_level is not None
            else (logging.WARNING if is_quiet() else logging.INFO)
        )
        if not is_rank_zero():  # under torchrun only rank 0 talks, whatever the level
            threshold = max(threshold, logging.WARNING)
        if record.levelno < threshold:
            return False
        if getattr(record, "progress", False) and (bars_on_console() or _tqdm_disabled()):
            return False  # a live bar shows it already, or the user turned progress off (TQDM_DISABLE)
        return super().filter(record)


def _tqdm_disabled() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def _ensure_console() -> _ConsoleHandler:
    global _console
    if _console is None:
        _console = _ConsoleHandler()
        for name in (LOGGER_NAME, "py.warnings"):
            lg = logging.getLogger(name)
            lg.addHandler(_console)
            lg.setLevel(logging.DEBUG)  # handlers decide what they show
            lg.propagate = False  # a user's root handler would print every line twice
    return _console


def get_logger(name: str | None = None) -> logging.Logger:
    """``alignlab`` (or ``alignlab.<name>``), with the console handler installed on first use."""
    _ensure_console()
    if not name or name == LOGGER_NAME:
        return logging.getLogger(LOGGER_NAME)
    return logging.getLogger(name if name.startswith(LOGGER_NAME + ".") else f"{LOGGER_NAME}.{name}")


def parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = str(level).strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        from alignlab.core.errors import ConfigError

        raise ConfigError(f"unknown log level {level!r}", fix=f"use one of: {', '.join(LEVELS)}")
    return getattr(logging, name)


def configure(level: str | int | None = None, verbose: bool = False, capture_warnings: bool = True) -> None:
    """Console level (``level`` wins over ``verbose``; neither: INFO, WARNING while quiet) and warnings
    routing."""
    global _console_level
    _ensure_console()
    _console_level = parse_level(level) if level is not None else (logging.DEBUG if verbose else None)
    if capture_warnings:
        logging.captureWarnings(True)


@contextlib.contextmanager
def run_log(
    run_dir: str | os.PathLike, filename: str = "log.txt", enabled: bool = True
) -> Iterator[Path | None]:
    """Append every ``alignlab`` record (DEBUG and up) and every warning to ``run_dir/filename`` meanwhile.

    The file is appended to, so a resumed run continues its log; each opening writes a header line with
    the command line. Warnings are captured for the duration (and left as they were afterwards).
    """
    if not enabled:
        yield None
        return
    _ensure_console()
    path = Path(run_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(_OneLineFormatter(_FILE_FORMAT))
    targets = [logging.getLogger(LOGGER_NAME), logging.getLogger("py.warnings")]
    for lg in targets:
        lg.addHandler(handler)
    was_capturing = _capturing()
    logging.captureWarnings(True)
    try:
        get_logger("run").debug(
            "log opened: %s (pid %d, %s)",
            " ".join(sys.argv) or "python",
            os.getpid(),
            time.strftime("%Y-%m-%d %H:%M:%S"),
        )
        yield path
    finally:
        for lg in targets:
            lg.removeHandler(handler)
        handler.close()
        if not was_capturing:
            logging.captureWarnings(False)


def _capturing() -> bool:
    import warnings

    return getattr(warnings.showwarning, "__module__", "") == "logging"


def open_tensorboard(log_dir: str | os.PathLike, purge_step: int | None = None) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir``, or None (one DEBUG line) without
    tensorboard.

    ``purge_step``: a resumed run hides the events its crashed predecessor wrote from that step on.
    ``ALIGNLAB_TENSORBOARD=0`` turns event files off.
    """
    if os.environ.get("ALIGNLAB_TENSORBOARD", "1").strip().lower() in ("0", "false", "no", "off"):
        get_logger("train").debug("TensorBoard event files off (ALIGNLAB_TENSORBOARD=0)")
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's module raises ImportError when the tensorboard package is missing
        get_logger("train").debug(
            "tensorboard is not installed: no event files "
            "(pip install 'alignlab[tensorboard]'); log.jsonl has every number"
        )
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def tensorboard_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of one ``log.jsonl`` record: ``train/<key>`` or ``dev/<metric>``."""
    if isinstance(record.get("dev"), dict):
        items, prefix = record["dev"].items(), "dev/"
    else:
        items, prefix = ((k, v) for k, v in record.items() if k not in ("step", "epoch")), "train/"
    return {prefix + k: float(v) for k, v in items if isinstance(v, (int, float)) and not isinstance(v, bool)}
