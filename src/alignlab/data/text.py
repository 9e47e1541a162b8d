"""Word-level tokenizer for the tiny models, built from training captions.

Lower-cases, splits on non-alphanumeric characters (keeping CJK characters one per token), maps words
seen fewer than ``min_count`` times to ``[UNK]``. Ids: 0 ``[PAD]``, 1 ``[UNK]``, 2 ``[CLS]``,
3 ``[SEP]``, then words by descending frequency (ties alphabetical), so the vocabulary is deterministic.

>>> tok = WordTokenizer.build(["a red circle", "a blue square"])
>>> ids, mask = tok.encode(["a red square"], max_len=8)
>>> tok.decode(ids[0])
'a red square'
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from alignlab.core.errors import DataError
from alignlab.core.io import write_json

# ---- closed-class words (one copy for every area) ----------------------------------------------------
# Function words shared by every use: determiners, pronouns, prepositions, conjunctions, auxiliaries,
# numerals and a few adverbs.
FUNCTION_WORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "across",
        "after",
        "against",
        "all",
        "along",
        "also",
        "although",
        "am",
        "among",
        "an",
        "and",
        "another",
        "any",
        "are",
        "around",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "behind",
        "being",
        "below",
        "beneath",
        "beside",
        "besides",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "done",
        "down",
        "during",
        "each",
        "eight",
        "either",
        "every",
        "few",
        "five",
        "four",
        "from",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "inside",
        "into",
        "is",
        "it",
        "its",
        "just",
        "many",
        "may",
        "me",
        "might",
        "mine",
        "more",
        "most",
        "much",
        "must",
        "my",
        "near",
        "neither",
        "nine",
        "no",
        "nor",
        "not",
        "of",
        "off",
        "on",
        "one",
        "only",
        "onto",
        "or",
        "our",
        "ours",
        "out",
        "outside",
        "over",
        "seven",
        "several",
        "shall",
        "she",
        "should",
        "six",
        "so",
        "some",
        "such",
        "ten",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "though",
        "three",
        "through",
        "to",
        "too",
        "toward",
        "towards",
        "two",
        "under",
        "underneath",
        "until",
        "up",
        "upon",
        "us",
        "very",
        "via",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "whether",
        "which",
        "while",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "within",
        "without",
        "would",
        "yet",
        "you",
        "your",
        "yours",
    ]
)
# Probe perturbations (alignlab.probe.perturb) also count these as function words: the spatial words
# of ShapesWorld captions and indefinite pronouns.
CLOSED_CLASS = FUNCTION_WORDS | frozenset(
    [
        "anyone",
        "anything",
        "atop",
        "bottom",
        "everyone",
        "everything",
        "front",
        "left",
        "like",
        "lot",
        "lots",
        "middle",
        "n't",
        "next",
        "nobody",
        "nothing",
        "ones",
        "right",
        "side",
        "since",
        "someone",
        "something",
        "top",
        "whereas",
        "zero",
    ]
)
# The noun finder of ambiguity selection also skips contraction pieces, light verbs and ordinals.
STOPWORDS = FUNCTION_WORDS | frozenset(
    [
        "again",
        "aren",
        "cannot",
        "d",
        "didn",
        "doesn",
        "doing",
        "don",
        "dozen",
        "eleven",
        "even",
        "ever",
        "first",
        "for",
        "get",
        "gets",
        "getting",
        "go",
        "goes",
        "going",
        "gone",
        "got",
        "hadn",
        "hasn",
        "haven",
        "hundred",
        "isn",
        "ll",
        "m",
        "made",
        "make",
        "makes",
        "making",
        "none",
        "now",
        "o",
        "other",
        "own",
        "past",
        "per",
        "re",
        "s",
        "same",
        "second",
        "still",
        "t",
        "third",
        "thousand",
        "twelve",
        "unless",
        "ve",
        "wasn",
        "went",
        "weren",
        "whatever",
        "y",
    ]
)
# Words that mark the next token as a noun for the rule-based noun finder.
DETERMINERS = frozenset(
    [
        "a",
        "all",
        "an",
        "another",
        "any",
        "both",
        "each",
        "eight",
        "every",
        "few",
        "five",
        "four",
        "her",
        "his",
        "its",
        "many",
        "my",
        "nine",
        "no",
        "one",
        "other",
        "our",
        "seven",
        "several",
        "six",
        "some",
        "ten",
        "that",
        "the",
        "their",
        "these",
        "this",
        "those",
        "three",
        "two",
        "your",
    ]
)

_WORD = re.compile(r"[\u4e00-\u9fff]|[a-z0-9]+(?:'[a-z]+)?")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD, UNK, CLS, SEP = 0, 1, 2, 3


def split_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class WordTokenizer:
    def __init__(self, vocab: Sequence[str]):
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise DataError("tokenizer vocabulary must start with the special tokens " + ", ".join(SPECIALS))
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None) -> WordTokenizer:
        counts = Counter(w for t in texts for w in split_words(t))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.vocab)

    def ids(self, text: str) -> list[int]:
        return [self.index.get(w, UNK) for w in split_words(text)]

    def encode(
        self, texts: Sequence[str], max_len: int = 32, add_cls: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[B, L]`` (``[CLS] words…``, padded, truncated to ``max_len``) and a bool mask."""
        rows = [([CLS] if add_cls else []) + self.ids(t) for t in texts]
        rows = [r[:max_len] for r in rows]
        length = max((len(r) for r in rows), default=1) or 1
        ids = torch.full((len(rows), length), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids, ids != PAD

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return " ".join(self.vocab[i] for i in ids if i not in (PAD, CLS, SEP))

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, {"type": "word", "vocab": self.vocab})

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["vocab"])
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise DataError(
                f"cannot read tokenizer: {e}",
                where=str(path),
                fix="the file must be a tokenizer.json written by alignlab",
            ) from None
