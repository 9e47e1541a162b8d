"""Sense texts do not depend on NLTK's set order, and the sense-vector cache drops older text versions."""

from __future__ import annotations

from alignlab.ambiguity.wsd import SENSE_TEXT_VERSION, _VectorStore, sense_text


class _Syn:
    def __init__(self, name, lemma, hypers=(), instance=()):
        self._name, self._lemma, self._hypers, self._instance = name, lemma, list(hypers), list(instance)

    def name(self):
        return self._name

    def lemmas(self):
        outer = self

        class _L:
            def name(self):
                return outer._lemma

        return [_L()]

    def definition(self):
        return "a thing"

    def hypernyms(self):
        return self._hypers

    def instance_hypernyms(self):
        return self._instance


def test_hypernyms_are_listed_by_synset_name_whatever_order_nltk_gives():
    a, b, c = _Syn("animal.n.01", "animal"), _Syn("artifact.n.01", "artifact"), _Syn("city.n.01", "city")
    one = sense_text(_Syn("x.n.01", "x", hypers=[b, a], instance=[c]))
    two = sense_text(_Syn("x.n.01", "x", hypers=[a, b], instance=[c]))
    assert one == two == "x: a thing (a kind of animal, artifact, city)"


def test_opening_the_cache_deletes_older_versions_of_this_encoder_only(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    folder = tmp_path / "sense-embeddings"
    folder.mkdir()
    old = folder / "enc-1-sense-text-1.npz"
    other = folder / "other-enc-sense-text-1.npz"
    for p in (old, other):
        p.write_bytes(b"")

    class Enc:
        tag = "enc-1"

    store = _VectorStore(Enc(), disk=True)
    assert store.path == folder / f"enc-1-{SENSE_TEXT_VERSION}.npz"
    assert not old.exists() and other.exists()
