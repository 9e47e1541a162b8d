"""WSD: the disambiguate contract, the three methods, leave-one-out sense vectors and the WordNet
benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from alignlab.ambiguity.wsd import (
    Disambiguator,
    Query,
    WSDConfig,
    entropy_bits,
    evaluate_wsd,
    fit_calibration,
    load_encoder,
    sense_text,
    wordnet_examples,
)
from alignlab.core.errors import ConfigError, DependencyError

CAVE = "a bat flew out of the cave at dusk"
GAME = "he swung the bat and hit the ball over the fence"


@pytest.mark.parametrize("method", ["gloss", "lesk", "mfs"])
def test_probabilities_sum_to_one_most_probable_first(method, wn, fake_encoder):
    wsd = Disambiguator(WSDConfig(method=method, disk_cache=False), wn=wn, encoder=fake_encoder)
    res = wsd.disambiguate(CAVE, "bat")
    assert [n for n, _ in res] and sorted(n for n, _ in res) == sorted(
        s.name() for s in wn.synsets("bat", "n")
    )
    probs = [p for _, p in res]
    assert abs(sum(probs) - 1) < 1e-9 and probs == sorted(probs, reverse=True) and min(probs) > 0


def test_monosemous_and_unknown_words(wn, fake_encoder):
    wsd = Disambiguator(WSDConfig(disk_cache=False), wn=wn, encoder=fake_encoder)
    assert wsd.disambiguate("a skateboard on the road", "skateboard") == [("skateboard.n.01", 1.0)]
    assert wsd.disambiguate("a qwzxv on the road", "qwzxv") == []
    assert fake_encoder.calls == []  # nothing to disambiguate, nothing encoded


def test_gloss_method_reads_the_context(gloss_wsd):
    cave, game = gloss_wsd.disambiguate_batch([(CAVE, "bat"), (GAME, "bat")])
    assert cave[0][0] == "bat.n.01"  # the animal
    assert game[0][0] != "bat.n.01"  # a baseball sense (the club, or a turn at bat)
    assert dict(cave)["bat.n.01"] > 2 * dict(game)["bat.n.01"]


def test_batch_equals_one_by_one(gloss_wsd):
    qs = [(CAVE, "bat"), (GAME, "bats"), ("a computer mouse next to a keyboard", "mouse")]
    batched = gloss_wsd.disambiguate_batch(qs)
    for q, b in zip(qs, batched):
        single = gloss_wsd.disambiguate(*q)
        assert [n for n, _ in single] == [n for n, _ in b]
        assert np.allclose([p for _, p in single], [p for _, p in b], atol=1e-5)


def test_lesk_pick_is_nltks_and_mfs_pick_is_wordnet_first_sense(wn):
    from nltk.wsd import lesk

    from alignlab.ambiguity.wsd import context_words

    les = Disambiguator(WSDConfig(method="lesk"), wn=wn)
    mfs = Disambiguator(WSDConfig(method="mfs"), wn=wn)
    for sent, word in [
        (CAVE, "bat"),
        (GAME, "bat"),
        ("the seal swam in the cold sea", "seal"),
        ("a crane lifted steel beams at the building site", "crane"),
    ]:
        syns = wn.synsets(word, "n")
        assert les.disambiguate(sent, word)[0][0] == lesk(context_words(sent), word, "n", synsets=syns).name()
        assert mfs.disambiguate(sent, word)[0][0] == syns[0].name()


def test_held_out_example_leaves_its_sense_vector(wn, fake_encoder):
    wsd = Disambiguator(
        WSDConfig(use_examples=True, example_weight=1.0, disk_cache=False), wn=wn, encoder=fake_encoder
    )
    syn = next(s for s in wn.synsets("bat", "n") if len(s.examples()) >= 1)
    ex = syn.examples()[0]
    wsd.gloss_scores([Query(ex, "bat", held_out=ex)])  # fills the vector store
    enc = fake_encoder.encode
    g = enc([sense_text(syn)])[0].astype(np.float64)
    others = [e for e in syn.examples() if e != ex]
    expected = g + (np.mean(enc(others), axis=0) if others else 0.0)
    expected /= np.linalg.norm(expected)
    assert np.allclose(wsd._sense_vector(syn, held_out=ex), expected, atol=1e-3)
    with_ex = wsd._sense_vector(syn, held_out=None)
    assert not np.allclose(with_ex, wsd._sense_vector(syn, held_out=ex))


# Common polysemous nouns with WordNet example sentences (a fixed, fast subset of the benchmark).
NOUNS = [
    "bank",
    "plant",
    "spring",
    "bass",
    "star",
    "club",
    "court",
    "cell",
    "crane",
    "seal",
    "mouse",
    "kite",
    "bat",
    "wave",
]


def test_gloss_beats_lesk_and_mfs_on_wordnet_examples_of_common_nouns(wn, encoder):
    items = wordnet_examples(wn, lemmas=NOUNS)
    assert len(items) >= 30 and {it.lemma for it in items} <= set(NOUNS)
    acc = {
        m: evaluate_wsd(Disambiguator(WSDConfig(method=m, disk_cache=False), wn=wn, encoder=encoder), items)[
            "accuracy"
        ]
        for m in ("gloss", "lesk", "mfs")
    }
    assert acc["gloss"] > acc["lesk"] + 0.05 and acc["gloss"] > acc["mfs"] + 0.05, acc


@pytest.mark.slow
def test_wordnet_benchmark_gloss_beats_lesk_and_mfs(wn, encoder):
    items = wordnet_examples(wn, split="test", max_items=200, seed=0)
    assert len(items) == 200 and all(it.split == "test" for it in items)
    assert not {it.lemma for it in items} & {it.lemma for it in wordnet_examples(wn, split="dev")}
    acc = {
        m: evaluate_wsd(Disambiguator(WSDConfig(method=m, disk_cache=False), wn=wn, encoder=encoder), items)[
            "accuracy"
        ]
        for m in ("gloss", "lesk", "mfs")
    }
    assert acc["gloss"] > acc["lesk"] and acc["gloss"] > acc["mfs"], acc


def test_fit_calibration_picks_a_grid_point_with_lowest_nll(wn, fake_encoder):
    items = wordnet_examples(wn, lemmas=NOUNS[:6])[:20]
    wsd = Disambiguator(WSDConfig(disk_cache=False), wn=wn, encoder=fake_encoder)
    best = fit_calibration(wsd, items, temperatures=(0.05, 1.0), prior_weights=(0.0, 1.0))
    assert best["temperature"] in (0.05, 1.0) and best["prior_weight"] in (0.0, 1.0)
    each = [
        fit_calibration(wsd, items, temperatures=(t,), prior_weights=(b,))
        for t in (0.05, 1.0)
        for b in (0.0, 1.0)
    ]
    assert best["nll"] == pytest.approx(min(e["nll"] for e in each))


def test_entropy_in_bits():
    assert entropy_bits([0.5, 0.5]) == pytest.approx(1.0)
    assert entropy_bits([1.0]) == 0.0 and entropy_bits([]) == 0.0


def test_bad_config_and_missing_encoder_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown WSD method"):
        WSDConfig(method="bert")
    with pytest.raises(DependencyError, match="not found"):
        load_encoder(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DependencyError, match="not a sentence-transformers model folder"):
        load_encoder(str(tmp_path / "empty"))


def test_disk_cache_round_trip(wn, fake_encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    a = Disambiguator(WSDConfig(disk_cache=True), wn=wn, encoder=fake_encoder)
    first = a.disambiguate(CAVE, "bat")
    a.flush()
    assert list((tmp_path / "sense-embeddings").glob("*.npz"))
    fake2 = type(fake_encoder)()
    b = Disambiguator(WSDConfig(disk_cache=True), wn=wn, encoder=fake2)
    second = b.disambiguate(CAVE, "bat")
    assert first == second  # identical numbers from fresh and from cached sense vectors
    assert fake2.calls == [[CAVE]]  # sense texts came from disk; only the context was encoded
