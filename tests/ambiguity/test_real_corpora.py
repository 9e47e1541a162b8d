"""The real 3AM and Multi30K caption files (../shared/data): readable, aligned, and scorable."""

from __future__ import annotations

import pytest

from alignlab.core.errors import DataError
from alignlab.data.corpus import read_captions, read_parallel


def test_3am_parallel_files_are_aligned_and_multi30k_is_readable(shared_data):
    en, zh = read_parallel(shared_data / "3am/val.en", shared_data / "3am/val.zh")
    assert len(en) == len(zh) == 1000
    assert len(read_captions(shared_data / "multi30k/val.en")) == 1014
    with pytest.raises(DataError, match="misaligned"):  # a wrong pairing of real files is caught
        read_parallel(shared_data / "3am/val.en", shared_data / "multi30k/val.en")


def test_scoring_real_captions_with_the_mfs_baseline(shared_data, wn):
    from alignlab.ambiguity.select import SelectConfig, compare_corpora, score_captions
    from alignlab.ambiguity.wsd import Disambiguator, WSDConfig

    wsd = Disambiguator(WSDConfig(method="mfs"), wn=wn)
    named = {
        name: score_captions(read_captions(shared_data / rel, limit=60), wsd, SelectConfig())
        for name, rel in (("3am", "3am/val.en"), ("multi30k", "multi30k/val.en"))
    }
    res = compare_corpora(named)
    for st in res["corpora"].values():
        assert st["captions"] == 60 and 1.0 < st["content_nouns_per_caption"] < 6.0
        assert 0.5 < st["share_with_polysemous_noun"] <= 1.0 and st["mean_senses_per_noun"] > 1.5
