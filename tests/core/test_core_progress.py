"""--quiet also silences the progress bars that Hugging Face libraries draw themselves."""

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
    progress.silence_library_bars()
    assert hf_logging.is_progress_bar_enabled()  # not quiet: left alone
    progress.set_quiet(True)
    progress.silence_library_bars()
    assert not hf_logging.is_progress_bar_enabled()
    assert progress.progress(range(3)).disable  # our own bars are off too
