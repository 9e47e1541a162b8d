"""Content words, ambiguity measures, caption scores, selection with diversity, corpus statistics."""

from __future__ import annotations

import pytest

from alignlab.ambiguity.select import (
    CaptionScore,
    ContentWordFinder,
    Mention,
    SelectConfig,
    WordScore,
    caption_score,
    compare_corpora,
    corpus_stats,
    rescore,
    score_captions,
    select_indices,
    word_score,
)
from alignlab.ambiguity.wsd import Disambiguator, WSDConfig
from alignlab.core.errors import ConfigError


@pytest.fixture(scope="module")
def finder(wn):
    return ContentWordFinder(Disambiguator(WSDConfig(method="mfs"), wn=wn))


def _words(finder, text, pos=("n",)):
    finder.pos = pos
    return [(m.word, m.pos) for m in finder.find(text)]


def test_content_nouns_skip_function_words_adjectives_and_verbs(finder):
    assert _words(finder, "A man riding a red bike next to the river.") == [
        ("man", "n"),
        ("bike", "n"),
        ("river", "n"),
    ]
    assert _words(finder, "Two dogs are running in the park") == [("dogs", "n"), ("park", "n")]


def test_wordnet_compounds_are_one_noun(finder):
    words = _words(finder, "a boy holding a baseball bat near a hot dog stand")
    assert ("baseball bat", "n") in words and ("bat", "n") not in words
    comp = next(m for m in finder.find("a baseball bat") if m.word == "baseball bat")
    assert comp.lemma == "baseball_bat" and comp.n_senses == 1


def test_verbs_are_found_only_when_asked(finder):
    assert ("riding", "v") in _words(finder, "a man is riding a horse", pos=("n", "v"))
    assert ("riding", "v") not in _words(finder, "a man is riding a horse")


def test_word_measures_from_a_distribution(wn):
    wsd = Disambiguator(WSDConfig(method="mfs"), wn=wn)
    m = Mention("bat", "bat", "n", 1, 5)
    senses = [
        ("bat.n.01", 0.4),
        ("bat.n.05", 0.35),
        ("cricket_bat.n.01", 0.15),
        ("bat.n.02", 0.06),
        ("squash_racket.n.01", 0.04),
    ]
    ws = word_score(wsd, m, senses, SelectConfig(top_senses=2))
    assert ws.entropy == pytest.approx(-sum(p * __import__("math").log2(p) for _, p in senses))
    assert ws.margin == pytest.approx(0.05) and ws.plausible == 2  # p >= 0.2: two senses
    # coarse: animal 0.4 vs artifact 0.35 + 0.15 + 0.04 = 0.54 vs act 0.06
    assert ws.margin_coarse == pytest.approx(0.14) and ws.plausible_coarse == 2
    assert ws.senses == senses[:2] and ws.ambiguous("fine")
    mono = word_score(wsd, Mention("skateboard", "skateboard", "n", 0, 1), [], SelectConfig())
    assert mono.entropy == 0.0 and not mono.ambiguous("fine")


def _ws(lemma, entropy, plausible=2, margin=0.1):
    return WordScore(lemma, lemma, "n", 4, entropy=entropy, margin=margin, plausible=plausible)


def test_caption_score_aggregates_polysemous_words():
    words = [_ws("a", 1.0), _ws("b", 2.0, plausible=1), WordScore("c", "c", "n", 1)]
    assert caption_score(words, SelectConfig(aggregate="max")) == (2.0, True)
    assert caption_score(words, SelectConfig(aggregate="sum"))[0] == pytest.approx(3.0)
    assert caption_score(words, SelectConfig(aggregate="mean"))[0] == pytest.approx(1.5)
    assert caption_score(words, SelectConfig(metric="margin"))[0] == pytest.approx(0.9)
    assert caption_score([WordScore("c", "c", "n", 1)], SelectConfig()) == (0.0, False)


def _corpus():
    caps = []
    for i in range(6):  # "man" is very ambiguous everywhere; "bat" and "kite" less
        caps.append(CaptionScore(len(caps), f"man {i}", 2.0 - i * 0.01, True, [_ws("man", 2.0 - i * 0.01)]))
    for i in range(3):
        caps.append(CaptionScore(len(caps), f"bat {i}", 1.0 - i * 0.01, True, [_ws("bat", 1.0 - i * 0.01)]))
    caps.append(CaptionScore(len(caps), "kite", 0.5, True, [_ws("kite", 0.5)]))
    caps.append(CaptionScore(len(caps), "plain", 0.3, False, [_ws("dog", 0.3, plausible=1)]))
    return caps


def test_balanced_selection_covers_words_before_repeating_one():
    caps = _corpus()
    chosen = select_indices(caps, 5, SelectConfig())
    texts = [caps[i].text for i in chosen]
    assert texts == ["man 0", "bat 0", "kite", "man 1", "bat 1"]
    by_score = [caps[i].text for i in select_indices(caps, 5, SelectConfig(strategy="score"))]
    assert by_score == ["man 0", "man 1", "man 2", "man 3", "man 4"]
    capped = [caps[i].text for i in select_indices(caps, 5, SelectConfig(strategy="score", per_word_cap=2))]
    assert capped == ["man 0", "man 1", "bat 0", "bat 1", "kite"]


def test_selection_takes_only_ambiguous_captions_once():
    caps = _corpus()
    chosen = select_indices(caps, 100, SelectConfig())
    assert len(chosen) == len(set(chosen)) == 10 and caps[-1].index not in chosen
    assert select_indices(caps, 0, SelectConfig()) == []
    with pytest.raises(ConfigError):
        select_indices(caps, -1, SelectConfig())


def test_corpus_stats_definitions():
    caps = _corpus()
    st = corpus_stats(caps)
    assert st["captions"] == 11 and st["share_with_ambiguous_word"] == pytest.approx(10 / 11)
    assert st["mean_senses_per_noun"] == 4 and st["distinct_ambiguous_words"] == 3
    cmp = compare_corpora({"a": caps, "b": caps[:6]})
    assert cmp["equal_size"] == 6 and cmp["tests"]["ambiguous"]["delta"] == pytest.approx(1 - 10 / 11)


def test_config_validation():
    with pytest.raises(ConfigError, match="metric"):
        SelectConfig(metric="variance")
    with pytest.raises(ConfigError, match="pos"):
        SelectConfig(pos=("x",))


def test_scoring_real_captions_and_records_round_trip(wn, gloss_wsd):
    caps = ["a bat flew out of the cave at dusk", "a man holding a baseball bat", "two dogs on a beach"]
    scores = score_captions(caps, gloss_wsd, SelectConfig())
    assert [s.index for s in scores] == [0, 1, 2]
    bat = next(w for w in scores[0].words if w.lemma == "bat")
    assert bat.senses[0][0] == "bat.n.01" and bat.n_senses == 5
    assert all(w.lemma != "bat" for w in scores[1].words)  # "baseball bat" is one unambiguous noun
    back = [CaptionScore.from_record(s.to_record()) for s in scores]
    # Records keep 6 decimals, so a score may come back 1e-6 away (never round both sides: 2.995255 flips).
    assert [(b.text, b.ambiguous) for b in back] == [(s.text, s.ambiguous) for s in scores]
    assert all(abs(b.score - s.score) <= 1e-6 for b, s in zip(back, scores))
    coarse = rescore(back, SelectConfig(granularity="coarse"))
    assert all(c.score <= s.score + 1e-9 for c, s in zip(coarse, back))  # merging senses lowers entropy
