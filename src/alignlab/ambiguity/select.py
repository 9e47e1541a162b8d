"""Ambiguity scoring of captions, ambiguity-aware selection, and corpus statistics (3AM, Ma et al. 2024).

**Content words.** A caption is split into words; WordNet two-word nouns are joined first ("baseball
bat" is one, unambiguous noun). Without a trained tagger on the machine (NLTK's tagger data is a
download), nouns are found by a transparent rule: the word has WordNet noun senses, it is not a
function word, and either it follows a determiner/number/possessive or its noun senses are at least as
frequent in SemCor (``cntlist.rev``) as its verb or adjective senses; a word that has adjective senses
and stands right before a noun is a modifier ("a red circle", "orange vests", "a stone bridge"), and an
``-ing``/``-ed`` form after a form of *be* is a verb. When NLTK's perceptron tagger data is installed,
``tagger="nltk"`` uses it instead. Verbs are included with ``pos=("n", "v")``.

**Word ambiguity.** For every content word with two or more senses, WSD gives ``p(s | caption)``
(:mod:`alignlab.ambiguity.wsd`). From it, at the ``fine`` (synset) or ``coarse`` (WordNet lexicographer
file, i.e. supersense: noun.animal vs noun.artifact) granularity:

* entropy ``H = -Σ p log2 p`` (bits); margin ``m = p(1) - p(2)`` between the two most probable senses;
* plausible senses ``k = #{s : p(s) ≥ τ}`` (τ = ``plausible_threshold``); the word is *ambiguous*
  in this caption when ``k ≥ 2``.

**Caption score** = the aggregate (``max`` by default, or ``sum``/``mean``) over its polysemous words
of the chosen ``metric``: ``entropy`` → H, ``margin`` → 1 − m, ``plausible`` → k.

**Selection** (:func:`select_indices`) of N captions among those with an ambiguous word, with
diversity: ``balanced`` visits the ambiguous words round-robin (words ordered by their best caption)
and takes each word's next most ambiguous caption, so many words are covered and none dominates;
``score`` takes captions by score, at most ``per_word_cap`` per key word (the caption's most ambiguous
word). A caption is taken at most once.

**Statistics** (:func:`corpus_stats`) compare corpora: share of captions with a polysemous noun and
with an ambiguous word, mean senses per content noun, mean WSD entropy, distinct ambiguous words.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from alignlab.ambiguity.wordnet import lemma_of
from alignlab.ambiguity.wsd import Disambiguator, Query, context_words, entropy_bits
from alignlab.core.errors import ConfigError
from alignlab.core.progress import progress
from alignlab.data.text import DETERMINERS, STOPWORDS  # noqa: F401  (one shared copy)

# STOPWORDS (closed-class words and a few light verbs, alignlab.data.text) are never scored as content
# words, although WordNet lists noun senses for some of them ("a" = vitamin A, "in" = inch).
BE_FORMS = frozenset(["is", "are", "was", "were", "be", "been", "being", "am"])
POS_NAMES = {"n": "noun", "v": "verb"}


@dataclass
class SelectConfig:
    """Scoring and selection settings (see the module docstring for the definitions)."""

    pos: tuple[str, ...] = ("n",)  # parts of speech to score: ("n",) or ("n", "v")
    metric: str = "entropy"  # entropy | margin | plausible
    granularity: str = "fine"  # fine (synsets) | coarse (lexicographer files)
    aggregate: str = "max"  # max | sum | mean over a caption's polysemous words
    plausible_threshold: float = 0.2  # τ: a sense with p >= τ is plausible
    strategy: str = "balanced"  # balanced | score
    per_word_cap: int | None = None  # at most this many selected captions per key word (None: no cap)
    tagger: str = "heuristic"  # heuristic | nltk (needs NLTK's averaged_perceptron_tagger_eng data)
    chunk: int = 256  # captions per WSD batch (progress granularity)
    top_senses: int = 3  # senses kept per word in the score records

    def __post_init__(self) -> None:
        checks = {
            "metric": ("entropy", "margin", "plausible"),
            "granularity": ("fine", "coarse"),
            "aggregate": ("max", "sum", "mean"),
            "strategy": ("balanced", "score"),
            "tagger": ("heuristic", "nltk"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        self.pos = tuple(self.pos)
        bad = [p for p in self.pos if p not in POS_NAMES]
        if bad or not self.pos:
            raise ConfigError(f"pos must be a non-empty subset of n, v; got {self.pos!r}")
        if not 0 < self.plausible_threshold <= 0.5:
            raise ConfigError("plausible_threshold must be in (0, 0.5]")
        if self.per_word_cap is not None and self.per_word_cap < 1:
            raise ConfigError("per_word_cap must be >= 1 (or None)")


@dataclass
class Mention:
    """A content word of a caption: surface form, WordNet lemma, part of speech, token position."""

    word: str
    lemma: str
    pos: str
    index: int
    n_senses: int


@dataclass
class WordScore:
    word: str
    lemma: str
    pos: str
    n_senses: int
    entropy: float = 0.0
    margin: float = 1.0
    plausible: int = 1
    entropy_coarse: float = 0.0
    margin_coarse: float = 1.0
    plausible_coarse: int = 1
    senses: list[tuple[str, float]] = field(default_factory=list)  # top senses with probabilities

    def value(self, metric: str, granularity: str) -> float:
        suffix = "_coarse" if granularity == "coarse" else ""
        if metric == "entropy":
            return getattr(self, "entropy" + suffix)
        if metric == "margin":
            return 1.0 - getattr(self, "margin" + suffix)
        return float(getattr(self, "plausible" + suffix))

    def ambiguous(self, granularity: str) -> bool:
        return (self.plausible_coarse if granularity == "coarse" else self.plausible) >= 2


@dataclass
class CaptionScore:
    index: int
    text: str
    score: float
    ambiguous: bool
    words: list[WordScore]

    def to_record(self) -> dict[str, Any]:
        rec = {
            "line": self.index + 1,
            "text": self.text,
            "score": round(self.score, 6),
            "ambiguous": self.ambiguous,
            "words": [asdict(w) for w in self.words],
        }
        for w in rec["words"]:
            w["senses"] = [[s, round(p, 6)] for s, p in w["senses"]]
            for k in ("entropy", "margin", "entropy_coarse", "margin_coarse"):
                w[k] = round(w[k], 6)
        return rec

    @staticmethod
    def from_record(rec: dict[str, Any]) -> CaptionScore:
        words = []
        for w in rec.get("words", []):
            w = dict(w)
            w["senses"] = [tuple(x) for x in w.get("senses", [])]
            words.append(WordScore(**w))
        return CaptionScore(
            int(rec["line"]) - 1, rec["text"], float(rec["score"]), bool(rec["ambiguous"]), words
        )

    def key_word(self, metric: str = "entropy", granularity: str = "fine") -> str | None:
        poly = [w for w in self.words if w.n_senses > 1]
        if not poly:
            return None
        return max(poly, key=lambda w: w.value(metric, granularity)).lemma


# --- content words -------------------------------------------------------------------------------------


class ContentWordFinder:
    """Finds the content nouns (and optionally verbs) of a sentence with WordNet (see module docstring)."""

    def __init__(self, wsd: Disambiguator, pos: Sequence[str] = ("n",), tagger: str = "heuristic"):
        self.wsd = wsd
        self.wn = wsd.wn
        self.pos = tuple(pos)
        self.tagger = tagger
        self._counts: dict[tuple[str, str], int] = {}
        self._compound: dict[str, str | None] = {}
        if tagger == "nltk":
            import nltk

            try:
                nltk.data.find("taggers/averaged_perceptron_tagger_eng")
            except LookupError:
                from alignlab.core.errors import DependencyError

                raise DependencyError(
                    "NLTK's POS tagger data is not installed",
                    fix="nltk.download('averaged_perceptron_tagger_eng') or use tagger='heuristic'",
                ) from None

    def pos_count(self, word: str, pos: str) -> int:
        """SemCor frequency of ``word``'s base form over all its senses in ``pos`` (0 if none)."""
        key = (word, pos)
        if key not in self._counts:
            lemma = lemma_of(self.wn, word, pos)
            total = 0
            if lemma is not None:
                for s in self.wn.synsets(lemma, pos):
                    total += self.wsd.sense_count(s, lemma)
                    if pos == "a":  # satellites count as adjectives too
                        pass
            self._counts[key] = total
        return self._counts[key]

    def has(self, word: str, pos: str) -> bool:
        lemma = lemma_of(self.wn, word, pos)
        return lemma is not None and bool(self.wn.synsets(lemma, pos))

    def _compound_lemma(self, a: str, b: str) -> str | None:
        key = f"{a}_{b}"
        if key not in self._compound:
            lemma = lemma_of(self.wn, key, "n")
            self._compound[key] = lemma if lemma is not None and "_" in lemma else None
        return self._compound[key]

    def find(self, sentence: str) -> list[Mention]:
        toks = context_words(sentence)
        if self.tagger == "nltk":
            return self._find_tagged(toks)
        out: list[Mention] = []
        i = 0
        after_modifier = False
        while i < len(toks):
            t = toks[i]
            if t in STOPWORDS or len(t) < 2:
                after_modifier = False
                i += 1
                continue
            if "n" in self.pos and i + 1 < len(toks) and toks[i + 1] not in STOPWORDS:
                comp = self._compound_lemma(t, toks[i + 1])
                if comp is not None:
                    out.append(Mention(f"{t} {toks[i + 1]}", comp, "n", i, self.wsd.n_senses(comp, "n")))
                    after_modifier = False
                    i += 2
                    continue
            tag = self._tag(toks, i)
            if after_modifier and tag != "mod" and self.has(t, "n"):
                tag = "n"  # the head of a modifier ("a warning sign", "orange vests")
            after_modifier = tag == "mod"
            if tag in self.pos:
                lemma = lemma_of(self.wn, t, tag)
                if lemma is not None:
                    out.append(Mention(t, lemma, tag, i, self.wsd.n_senses(t, tag)))
            i += 1
        return out

    def _tag(self, toks: list[str], i: int) -> str | None:
        """'n', 'v', 'mod' (modifies the next noun) or None (adjective, adverb, unknown) for token ``i``."""
        t = toks[i]
        prev = toks[i - 1] if i > 0 else ""
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        is_noun, is_verb = self.has(t, "n"), self.has(t, "v")
        if not is_noun and not is_verb:
            return None
        n_count = self.pos_count(t, "n")
        v_count = self.pos_count(t, "v") if is_verb else -1
        a_count = self.pos_count(t, "a") if self.has(t, "a") else -1
        if prev in BE_FORMS and (t.endswith("ing") or t.endswith("ed")) and is_verb:
            return "v"
        noun_next = bool(nxt) and nxt not in STOPWORDS and self.has(nxt, "n")
        if noun_next and a_count >= 0:
            return "mod"  # a modifier of the next noun ("a red circle", "orange vests", "a stone bridge")
        if prev in DETERMINERS or prev.endswith("'s"):
            return "n" if is_noun else None
        if is_noun and n_count >= max(v_count, a_count):
            return "n"
        if is_verb and v_count > n_count and v_count >= a_count:
            return "v"
        return None

    def _find_tagged(self, toks: list[str]) -> list[Mention]:
        import nltk

        out = []
        for i, (t, tag) in enumerate(nltk.pos_tag(toks)):
            pos = "n" if tag.startswith("NN") else "v" if tag.startswith("VB") else None
            if pos in self.pos and t not in STOPWORDS:
                lemma = lemma_of(self.wn, t, pos)
                if lemma is not None:
                    out.append(Mention(t, lemma, pos, i, self.wsd.n_senses(t, pos)))
        return out


# --- scoring ---------------------------------------------------------------------------------------------


def _dist_stats(probs: Sequence[float], tau: float) -> tuple[float, float, int]:
    p = sorted(probs, reverse=True)
    margin = p[0] - (p[1] if len(p) > 1 else 0.0)
    return entropy_bits(p), margin, sum(x >= tau for x in p)


def word_score(
    wsd: Disambiguator, m: Mention, senses: list[tuple[str, float]], cfg: SelectConfig
) -> WordScore:
    """The ambiguity measures of one mention from its WSD distribution, at both granularities."""
    ws = WordScore(m.word, m.lemma, m.pos, m.n_senses, senses=[(s, p) for s, p in senses[: cfg.top_senses]])
    if m.n_senses <= 1 or not senses:
        return ws
    ws.entropy, ws.margin, ws.plausible = _dist_stats([p for _, p in senses], cfg.plausible_threshold)
    coarse: dict[str, float] = defaultdict(float)
    for s, p in senses:
        coarse[wsd.wn.synset(s).lexname()] += p
    ws.entropy_coarse, ws.margin_coarse, ws.plausible_coarse = _dist_stats(
        list(coarse.values()), cfg.plausible_threshold
    )
    return ws


def caption_score(words: Sequence[WordScore], cfg: SelectConfig) -> tuple[float, bool]:
    poly = [w for w in words if w.n_senses > 1]
    if not poly:
        return 0.0, False
    vals = [w.value(cfg.metric, cfg.granularity) for w in poly]
    agg = (
        max(vals)
        if cfg.aggregate == "max"
        else sum(vals)
        if cfg.aggregate == "sum"
        else sum(vals) / len(vals)
    )
    return float(agg), any(w.ambiguous(cfg.granularity) for w in poly)


def score_captions(
    captions: Sequence[str], wsd: Disambiguator, cfg: SelectConfig | None = None, *, desc: str = "ambiguity"
) -> list[CaptionScore]:
    """Score every caption (WSD batched ``cfg.chunk`` captions at a time, with a progress bar)."""
    cfg = cfg or SelectConfig()
    finder = ContentWordFinder(wsd, cfg.pos, cfg.tagger)
    out: list[CaptionScore] = []
    bar = progress(total=len(captions), desc=desc, unit="cap")
    try:
        for start in range(0, len(captions), cfg.chunk):
            block = captions[start : start + cfg.chunk]
            mentions = [finder.find(c) for c in block]
            queries = [
                Query(c, m.word.replace(" ", "_"), m.pos)
                for c, ms in zip(block, mentions)
                for m in ms
                if m.n_senses > 1
            ]
            results = iter(wsd.disambiguate_batch(queries))
            for k, (c, ms) in enumerate(zip(block, mentions)):
                words = [word_score(wsd, m, next(results) if m.n_senses > 1 else [], cfg) for m in ms]
                score, amb = caption_score(words, cfg)
                out.append(CaptionScore(start + k, c, score, amb, words))
            bar.update(len(block))
    finally:
        bar.close()
        wsd.flush()
    return out


def rescore(scores: Sequence[CaptionScore], cfg: SelectConfig) -> list[CaptionScore]:
    """Recompute caption scores and flags under another metric/granularity/aggregate (no new WSD)."""
    out = []
    for s in scores:
        score, amb = caption_score(s.words, cfg)
        out.append(CaptionScore(s.index, s.text, score, amb, s.words))
    return out


# --- selection -------------------------------------------------------------------------------------------


def select_indices(scores: Sequence[CaptionScore], n: int, cfg: SelectConfig | None = None) -> list[int]:
    """Indices (into ``scores``) of up to ``n`` captions chosen for ambiguity with diversity.

    Only captions with at least one ambiguous word are candidates; fewer than ``n`` candidates give a
    shorter selection. Deterministic: ties are broken by position.
    """
    cfg = cfg or SelectConfig()
    if n < 0:
        raise ConfigError("n must be >= 0")
    cand = [i for i, s in enumerate(scores) if s.ambiguous]
    cap = cfg.per_word_cap if cfg.per_word_cap is not None else math.inf
    taken: set[int] = set()
    per_word: Counter[str] = Counter()
    out: list[int] = []
    if cfg.strategy == "score":
        for i in sorted(cand, key=lambda i: (-scores[i].score, i)):
            if len(out) >= n:
                break
            key = scores[i].key_word(cfg.metric, cfg.granularity) or ""
            if per_word[key] < cap:
                out.append(i)
                per_word[key] += 1
        return out
    # balanced: each ambiguous word has a queue of the captions in which it is ambiguous, most ambiguous
    # first; words take turns (ordered by their best caption), skipping captions already taken.
    queues: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for i in cand:
        for w in scores[i].words:
            if w.n_senses > 1 and w.ambiguous(cfg.granularity):
                queues[w.lemma].append((-w.value(cfg.metric, cfg.granularity), -scores[i].score, i))
    for q in queues.values():
        q.sort()
    order = sorted(queues, key=lambda w: (queues[w][0], w))
    pos = dict.fromkeys(order, 0)
    active = list(order)
    while len(out) < n and active:
        still = []
        for w in active:
            if len(out) >= n:
                break
            q = queues[w]
            while pos[w] < len(q) and q[pos[w]][2] in taken:
                pos[w] += 1
            if pos[w] < len(q) and per_word[w] < cap:
                i = q[pos[w]][2]
                taken.add(i)
                out.append(i)
                per_word[w] += 1
                pos[w] += 1
                still.append(w)
        active = still
    return out


# --- statistics --------------------------------------------------------------------------------------------


def corpus_stats(scores: Sequence[CaptionScore], granularity: str = "fine") -> dict[str, Any]:
    """Ambiguity statistics of a scored corpus (definitions in the module docstring)."""
    n = len(scores)
    if n == 0:
        raise ConfigError("no captions to summarise")
    nouns = [w for s in scores for w in s.words if w.pos == "n"]
    poly = [w for w in nouns if w.n_senses > 1]
    amb_types = {w.lemma for s in scores for w in s.words if w.n_senses > 1 and w.ambiguous(granularity)}
    ent = [w.entropy_coarse if granularity == "coarse" else w.entropy for w in poly]
    return {
        "captions": n,
        "content_nouns_per_caption": len(nouns) / n,
        "share_with_polysemous_noun": sum(
            any(w.pos == "n" and w.n_senses > 1 for w in s.words) for s in scores
        )
        / n,
        "share_with_ambiguous_word": sum(s.ambiguous for s in scores) / n,
        "mean_senses_per_noun": float(np.mean([w.n_senses for w in nouns])) if nouns else 0.0,
        "mean_entropy_bits": float(np.mean(ent)) if ent else 0.0,
        "mean_caption_score": float(np.mean([s.score for s in scores])),
        "distinct_ambiguous_words": len(amb_types),
        "distinct_ambiguous_words_per_1k_captions": 1000.0 * len(amb_types) / n,
        "granularity": granularity,
    }


def distinct_ambiguous_at(
    scores: Sequence[CaptionScore], size: int, seed: int = 0, granularity: str = "fine"
) -> int:
    """Distinct ambiguous words in a random sample of ``size`` captions (type counts grow with corpus size,
    so corpora are compared at equal size)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(scores), size=min(size, len(scores)), replace=False)
    return len(
        {w.lemma for i in idx for w in scores[int(i)].words if w.n_senses > 1 and w.ambiguous(granularity)}
    )


def compare_corpora(
    named: dict[str, Sequence[CaptionScore]], granularity: str = "fine", seed: int = 0
) -> dict[str, Any]:
    """Statistics per corpus and, for two corpora, the differences with Welch t-tests on per-caption
    values."""
    from alignlab.core.stats import welch_t_test

    t0 = time.time()
    out: dict[str, Any] = {"corpora": {k: corpus_stats(v, granularity) for k, v in named.items()}}
    size = min(len(v) for v in named.values())
    for k, v in named.items():
        out["corpora"][k]["distinct_ambiguous_words_at_equal_size"] = distinct_ambiguous_at(
            v, size, seed, granularity
        )
    out["equal_size"] = size
    names = list(named)
    if len(names) == 2:
        a, b = (named[k] for k in names)

        def per_caption(scores: Sequence[CaptionScore]) -> dict[str, list[float]]:
            return {
                "ambiguous": [float(s.ambiguous) for s in scores],
                "caption_score": [s.score for s in scores],
                "polysemous": [float(any(w.n_senses > 1 and w.pos == "n" for w in s.words)) for s in scores],
            }

        pa, pb = per_caption(a), per_caption(b)
        with warnings.catch_warnings():  # identical samples make scipy warn about precision; p is still fine
            warnings.simplefilter("ignore", RuntimeWarning)
            out["tests"] = {
                key: {"a": names[0], "b": names[1], **welch_t_test(pa[key], pb[key])} for key in pa
            }
    out["wall_s"] = round(time.time() - t0, 3)
    return out
