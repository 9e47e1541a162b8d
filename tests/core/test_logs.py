"""Logging: console levels, warnings as one log line, a run's log.txt, and clean output through a pipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from alignlab.core import logs, progress
from alignlab.core.errors import ConfigError

ALIGNLAB = Path(sys.executable).parent / "alignlab"


@pytest.fixture
def console(monkeypatch):
    was_quiet = logs.is_quiet()
    logs.set_quiet(False)
    yield
    logs.set_quiet(was_quiet)
    logs.configure(None, capture_warnings=False)
    logging_capture_off()


def logging_capture_off():
    import logging

    logging.captureWarnings(False)


def test_log_level_and_verbose_choose_what_the_console_shows(console, capsys):
    log = logs.get_logger("test")
    logs.configure()
    log.debug("detail")
    progress.info("status")
    assert capsys.readouterr().err.splitlines() == ["status"]
    logs.configure(verbose=True)
    log.debug("detail")
    assert capsys.readouterr().err.splitlines() == ["debug: detail"]
    logs.configure("warning", verbose=True)  # an explicit level wins over --verbose
    progress.info("status")
    log.warning("careful")
    assert capsys.readouterr().err.splitlines() == ["warning: careful"]
    with pytest.raises(ConfigError, match="unknown log level 'loud'"):
        logs.configure("loud")


def test_quiet_keeps_warnings_but_drops_status_lines(console, capsys):
    logs.configure()
    logs.set_quiet(True)
    progress.info("status")
    logs.get_logger().warning("careful")
    assert capsys.readouterr().err.splitlines() == ["warning: careful"]


def test_run_log_records_status_lines_and_library_warnings_in_one_line_each(console, tmp_path, capsys):
    logs.set_quiet(True)  # the file records everything, whatever the console shows
    with logs.run_log(tmp_path) as path:
        progress.info("epoch 1 dev rsum=12.00")
        logs.get_logger("x").debug("a detail")
        warnings.warn("a library complains", UserWarning, stacklevel=1)
    progress.info("after the run")  # not in the file any more
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert path == tmp_path / "log.txt"
    assert any(line.endswith("INFO alignlab: epoch 1 dev rsum=12.00") for line in lines)
    assert any(line.endswith("DEBUG alignlab.x: a detail") for line in lines)
    warn = [line for line in lines if "py.warnings" in line]
    assert len(warn) == 1 and re.search(
        r"WARNING py\.warnings: .*test_logs\.py:\d+: UserWarning: a library complains$", warn[0]
    )
    assert "after the run" not in text
    assert capsys.readouterr().err.splitlines() == ["warning: " + warn[0].split("py.warnings: ")[1]]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TQDM_", "ALIGNLAB_"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="default")
    return env


def _check_piped(stderr: bytes, max_lines: int) -> list[str]:
    text = stderr.decode("utf-8")
    assert "\r" not in text, "carriage return in piped output"
    assert "\x1b" not in text, "terminal escape code in piped output"
    lines = text.splitlines()
    assert len(lines) <= max_lines, lines
    return lines


def test_a_piped_training_run_writes_plain_bounded_lines_and_a_text_log(tmp_path):
    run = tmp_path / "run"
    cmd = [
        str(ALIGNLAB),
        "train",
        "--out",
        str(run),
        "--set",
        "data.train=96",
        "--set",
        "data.val=16",
        "--set",
        "data.test=16",
        "--set",
        "train.epochs=2",
        "--set",
        "train.batch_size=16",
        "--set",
        "train.log_every=2",
        "--set",
        "model_config.width=32",
    ]
    out = subprocess.run(cmd, env=_clean_env(), capture_output=True, timeout=240)
    assert out.returncode == 0, out.stderr.decode()
    lines = _check_piped(out.stderr, max_lines=40)
    assert sum("epoch" in line and "dev" in line for line in lines) == 2
    log_txt = (run / "log.txt").read_text(encoding="utf-8")
    assert "epoch 2 dev" in log_txt and "\r" not in log_txt
    records = [json.loads(s) for s in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 8, 10, 12]


def test_piped_data_generation_shows_progress_as_plain_lines(tmp_path):
    env = {**_clean_env(), "ALIGNLAB_PROGRESS": "lines"}
    cmd = [
        str(ALIGNLAB),
        "data",
        "shapes",
        "--out",
        str(tmp_path / "d"),
        "--train",
        "120",
        "--val",
        "10",
        "--test",
        "10",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, timeout=240)
    assert out.returncode == 0, out.stderr.decode()
    # At most one line per 10 % step and a closing line for each of the few bars, plus status lines.
    _check_piped(out.stderr, max_lines=6 * 11 + 5)


def test_log_level_flag_of_a_command_leaves_only_warnings_on_stderr(console, tmp_path, capsys, monkeypatch):
    from alignlab.cli import main

    monkeypatch.setenv("ALIGNLAB_PROGRESS", "lines")
    monkeypatch.setattr(progress, "LINE_MIN_GAP_S", 0.0)  # a line at every 10 %, however fast
    args = ["data", "shapes", "--out", str(tmp_path / "e"), "--train", "20", "--val", "2", "--test", "2"]
    assert main(args) == 0
    assert "(100%)" in capsys.readouterr().err  # progress lines shown at the default level ...
    assert main([*args[:3], str(tmp_path / "f"), *args[4:], "--log-level", "WARNING"]) == 0
    assert capsys.readouterr().err == ""  # ... and not at WARNING
    assert (tmp_path / "f" / "dataset.json").is_file()
