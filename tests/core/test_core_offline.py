"""One download switch: every loader reads ALIGNLAB_ALLOW_DOWNLOAD the same way."""

from __future__ import annotations

import pytest

from alignlab.core.offline import ALLOW_DOWNLOAD_ENV, download_allowed, hub_offline_unless_allowed


@pytest.mark.parametrize(
    "value,expected",
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("", False),
    ],
)
def test_the_environment_switch_reads_true_and_false_words(value, expected, monkeypatch):
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, value)
    assert download_allowed() is expected


def test_an_explicit_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "1")
    assert download_allowed(False) is False
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "0")
    assert download_allowed(True) is True


@pytest.mark.parametrize("value", ["false", "0"])
def test_false_words_keep_the_hub_offline(value, monkeypatch):
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert hub_offline_unless_allowed() is False
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_every_loader_uses_the_one_switch():
    """No module parses the variable itself (the bug was three parsers that disagreed on =false and =0)."""
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "alignlab"
    readers = [
        p.relative_to(src).as_posix()
        for p in src.rglob("*.py")
        if 'environ.get("ALIGNLAB_ALLOW_DOWNLOAD"' in p.read_text()
        or "environ.get(ALLOW_DOWNLOAD_ENV" in p.read_text()
    ]
    assert readers == ["core/offline.py"]
