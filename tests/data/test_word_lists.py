"""One copy of the closed-class word lists (data/text.py), shared by probing and ambiguity selection."""

from __future__ import annotations

from alignlab.ambiguity import select
from alignlab.data import text
from alignlab.probe import perturb


def test_areas_use_the_shared_lists_not_copies():
    assert perturb.CLOSED_CLASS is text.CLOSED_CLASS
    assert select.STOPWORDS is text.STOPWORDS and select.DETERMINERS is text.DETERMINERS


def test_both_lists_extend_the_same_function_words():
    assert text.FUNCTION_WORDS <= text.CLOSED_CLASS and text.FUNCTION_WORDS <= text.STOPWORDS
    assert {"the", "a", "of", "and", "is", "not"} <= text.FUNCTION_WORDS
    assert {
        "left",
        "right",
        "top",
        "bottom",
    } <= text.CLOSED_CLASS - text.STOPWORDS  # spatial words of captions
    assert text.DETERMINERS <= text.STOPWORDS  # a determiner is never a content word either


def test_the_lists_kept_their_size_through_the_merge():
    # sizes of the two lists before they moved here (perturb.py 183 words, select.py 214 and 36)
    assert (len(text.CLOSED_CLASS), len(text.STOPWORDS), len(text.DETERMINERS)) == (183, 214, 36)
