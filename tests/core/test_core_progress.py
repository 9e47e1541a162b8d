"""--quiet also hides the progress bars that Hugging Face libraries draw themselves, and only while loading."""

from __future__ import annotations

import pytest

from alignlab.core import progress


@pytest.fixture
def restore():
    hf_logging = pytest.importorskip("transformers.utils.logging")
    was_quiet = progress.is_quiet()
    yield hf_logging
    progress.set_quiet(was_quiet)
    hf_logging.enable_progress_bar()


def test_quiet_turns_off_transformers_bars(restore):
    hf_logging = restore
    hf_logging.enable_progress_bar()
    progress.set_quiet(False)
    with progress.library_bars_off():
        assert hf_logging.is_progress_bar_enabled()  # not quiet: left alone
    progress.set_quiet(True)
    with progress.library_bars_off():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()  # restored afterwards
    assert progress.progress(range(3)).disable  # our own bars are off too


def test_always_hides_bars_even_when_not_quiet_and_restores_them(restore):
    hf_logging = restore
    hf_logging.enable_progress_bar()
    progress.set_quiet(False)
    with pytest.raises(RuntimeError), progress.library_bars_off(always=True):
        assert not hf_logging.is_progress_bar_enabled()
        raise RuntimeError("a failed load")
    assert hf_logging.is_progress_bar_enabled()
