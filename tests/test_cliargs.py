"""The shared flags (alignlab.core.cliargs) are what every command uses: one type, one check, one wording."""

from __future__ import annotations

import argparse

import pytest

from alignlab.cli import build_parser, leaf_parsers
from alignlab.core import cliargs


def _options(flag: str) -> dict[str, argparse.Action]:
    found = {}
    for name, parser in leaf_parsers(build_parser()).items():
        for action in parser._actions:
            if flag in action.option_strings:
                found[name] = action
    return found


def test_every_seed_flag_is_the_shared_non_negative_seed():
    seeds = _options("--seed")
    assert len(seeds) >= 15
    assert {name for name, a in seeds.items() if a.type is not cliargs.seed_value} == set()


def test_every_device_flag_is_checked_when_parsed():
    devices = _options("--device")
    assert len(devices) >= 5
    assert {name for name, a in devices.items() if a.type is not cliargs.device_value} == set()


def test_every_out_flag_is_a_path():
    outs = _options("--out")
    assert len(outs) >= 19
    assert {
        name for name, a in outs.items() if a.type.__name__ not in ("Path", "PosixPath", "WindowsPath")
    } == set()


@pytest.mark.parametrize("text", ["-1", "1.5", "x", ""])
def test_bad_seeds_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="non-negative integer"):
        cliargs.seed_value(text)


@pytest.mark.parametrize(
    "text,ok",
    [
        ("cpu", True),
        ("CUDA:1", True),
        ("auto", True),
        ("mps", True),
        ("gpu", False),
        ("cuda:", False),
        ("cuda:x", False),
    ],
)
def test_device_names(text, ok):
    if ok:
        assert cliargs.device_value(text) == text.lower()
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="invalid device"):
            cliargs.device_value(text)
