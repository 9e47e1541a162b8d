"""Progress: plain lines every 10 % / 30 s off a terminal, tqdm bars that honour mininterval and TQDM_*,
quiet."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from alignlab.core import progress


@pytest.fixture
def loud(monkeypatch):
    """Not quiet (the test suite sets ALIGNLAB_QUIET=1), restored afterwards."""
    was_quiet = progress.is_quiet()
    progress.set_quiet(False)
    yield monkeypatch
    progress.set_quiet(was_quiet)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def lines_mode(loud):
    loud.setenv("ALIGNLAB_PROGRESS", "lines")
    clock = FakeClock()
    loud.setattr(progress.time, "monotonic", clock)
    return clock


def _run(total, steps, dt, clock, capsys, **kw):
    capsys.readouterr()
    with progress.progress(total=total, desc="work", unit="batch", **kw) as bar:
        for _ in range(steps):
            clock.t += dt
            bar.update(1)
            bar.set_postfix(loss="0.5")
    return capsys.readouterr().err


def test_piped_progress_is_one_plain_line_per_tenth_of_the_work(lines_mode, capsys):
    err = _run(total=1000, steps=1000, dt=0.02, clock=lines_mode, capsys=capsys)  # 20 s of work
    lines = err.splitlines()
    assert len(lines) == 10
    assert "\r" not in err and "\x1b" not in err
    assert lines[0].startswith("work: 100/1000 batch (10%)")
    assert "50 batch/s" in lines[0] and "ETA 0:18" in lines[0] and "loss=0.5" in lines[0]
    assert lines[-1].startswith("work: 1000/1000 batch (100%)")


def test_slow_work_gets_a_line_every_30_seconds_and_a_closing_line(lines_mode, capsys):
    err = _run(total=10_000, steps=10, dt=10.0, clock=lines_mode, capsys=capsys)  # 100 s, 0.1 % done
    lines = err.splitlines()
    assert [line.split(" | ")[1].split(", ")[1] for line in lines[:3]] == [
        "elapsed 0:30",
        "elapsed 1:00",
        "elapsed 1:30",
    ]
    assert len(lines) == 4 and lines[-1].startswith("work: 10/10000 batch (0%) in 1:40")


def test_a_fast_loop_prints_no_progress_lines(lines_mode, capsys):
    assert _run(total=1000, steps=1000, dt=0.0005, clock=lines_mode, capsys=capsys) == ""


def test_quiet_hides_progress_lines(lines_mode, capsys):
    progress.set_quiet(True)
    assert _run(total=100, steps=100, dt=1.0, clock=lines_mode, capsys=capsys) == ""


def test_tqdm_disable_also_silences_progress_lines(lines_mode, capsys):
    lines_mode_env = pytest.MonkeyPatch()
    lines_mode_env.setenv("TQDM_DISABLE", "1")
    try:
        assert _run(total=100, steps=100, dt=1.0, clock=lines_mode, capsys=capsys) == ""
    finally:
        lines_mode_env.undo()


def test_iterating_counts_every_item(lines_mode, capsys):
    capsys.readouterr()
    seen = []
    for x in progress.progress(range(7), desc="items"):
        lines_mode.t += 2.0
        seen.append(x)
    lines = capsys.readouterr().err.splitlines()
    assert seen == list(range(7))
    assert len(lines) == 7 and lines[-1].startswith("items: 7/7 it (100%)")


def test_bar_postfix_does_not_redraw_more_often_than_mininterval(loud):
    loud.setenv("ALIGNLAB_PROGRESS", "bars")
    buf = io.StringIO()
    with progress.progress(total=2000, desc="train", file=buf, mininterval=60, maxinterval=120) as bar:
        for _ in range(2000):
            bar.update(1)
            bar.set_postfix(loss="1.0", samples_s="10")
    # tqdm draws at start and at close; set_postfix must not add one write per step.
    assert buf.getvalue().count("\r") <= 4


def test_tqdm_environment_variables_win_over_our_defaults():
    code = (
        "import sys; from alignlab.core.progress import progress; "
        "p = progress(total=3); print(p.bar.mininterval, p.bar.ncols)"
    )
    env = {
        **os.environ,
        "ALIGNLAB_PROGRESS": "bars",
        "TQDM_MININTERVAL": "7",
        "TQDM_NCOLS": "50",
        "ALIGNLAB_QUIET": "0",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["7.0", "50"]
    assert "TQDM_MININTERVAL" not in os.environ
    assert progress._tqdm_defaults()["mininterval"] == progress.BAR_MININTERVAL_S


# --- Hugging Face's own bars ---------------------------------------------------------------------------


@pytest.fixture
def restore(loud):
    hf_logging = pytest.importorskip("transformers.utils.logging")
    loud.setenv("ALIGNLAB_PROGRESS", "bars")  # as on a terminal
    yield hf_logging
    hf_logging.enable_progress_bar()


def test_quiet_turns_off_transformers_bars(restore):
    hf_logging = restore
    hf_logging.enable_progress_bar()
    progress.set_quiet(False)
    with progress.library_bars_off():
        assert hf_logging.is_progress_bar_enabled()  # not quiet, on a terminal: left alone
    progress.set_quiet(True)
    with progress.library_bars_off():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()  # restored afterwards
    assert progress.progress(range(3)).disable  # our own bars are off too


def test_transformers_bars_are_off_when_stderr_is_not_a_terminal(restore, monkeypatch):
    hf_logging = restore
    monkeypatch.setenv("ALIGNLAB_PROGRESS", "lines")
    hf_logging.enable_progress_bar()
    with progress.library_bars_off():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()


def test_always_hides_bars_even_when_not_quiet_and_restores_them(restore):
    hf_logging = restore
    hf_logging.enable_progress_bar()
    progress.set_quiet(False)
    with pytest.raises(RuntimeError), progress.library_bars_off(always=True):
        assert not hf_logging.is_progress_bar_enabled()
        raise RuntimeError("a failed load")
    assert hf_logging.is_progress_bar_enabled()
