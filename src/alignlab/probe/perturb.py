"""Word-order perturbations (SNARE's *semantic structure* probe) at the token level.

Three perturbations of a caption, each a permutation of its word tokens (punctuation stays where it is):

* ``shuffle_content`` — nouns are shuffled among the noun positions and adjectives among the adjective
  positions ("a red circle left of a blue square" -> "a blue square left of a red circle");
* ``shuffle_function`` — every other word (determiners, prepositions, verbs…) is shuffled among its
  positions, content words stay;
* ``shuffle_all`` — all words are shuffled.

A perturbation that reproduces the original token sequence is drawn again (up to ``tries`` times) and
dropped if it cannot differ; replacement is always of whole tokens, never of substrings (the released
SNARE code turned "lemon" into "lembelow" by replacing "on" inside words).

**Part of speech.** With spaCy and a trained pipeline installed (``tagger="spacy:en_core_web_sm"`` or
``"auto"``), spaCy's coarse tags are used (NOUN/PROPN -> noun, ADJ -> adjective). Otherwise — and on
this project's machines, where no pipeline is installed — :class:`LexiconTagger` is the documented
fallback:

1. closed-class words (a fixed list of determiners, pronouns, prepositions, conjunctions, auxiliaries,
   particles and numerals: :data:`CLOSED_CLASS`) are *function* words;
2. the ShapesWorld lexicon is exact: colours and sizes are adjectives, kinds are nouns;
3. a list of frequent caption adjectives (:data:`COMMON_ADJECTIVES`) and the suffixes ``-ous -ful -less
   -able -ible -ive -ish`` mark adjectives;
4. words ending in ``-ing``/``-ed`` (longer than 4 letters), or in a short list of caption verbs, are
   *other* (verbs are non-content in SNARE's split);
5. every remaining word is a noun.

On ShapesWorld captions the fallback is exact; on free captions it is an approximation (it cannot tell
"orange" the fruit from "orange" the colour), which the build records in ``probe.json``.

>>> tagger = LexiconTagger()
>>> tagger.tag(["a", "red", "circle", "left", "of", "a", "blue", "square"])
['other', 'adj', 'noun', 'other', 'other', 'other', 'adj', 'noun']
>>> rng = np.random.default_rng(0)
>>> caption = "a red circle left of a blue square"
>>> perturb(caption, "shuffle_content", rng, tagger) != caption
True
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.errors import ConfigError, DataError, DependencyError
from alignlab.data.text import CLOSED_CLASS  # noqa: F401  (one shared copy)

PERTURBATIONS = ("shuffle_content", "shuffle_function", "shuffle_all")

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*|[^\sA-Za-z0-9]")


COMMON_ADJECTIVES = frozenset(
    [
        "red",
        "green",
        "blue",
        "yellow",
        "purple",
        "orange",
        "white",
        "gray",
        "grey",
        "black",
        "brown",
        "pink",
        "silver",
        "golden",
        "gold",
        "tan",
        "beige",
        "dark",
        "light",
        "bright",
        "colorful",
        "colourful",
        "small",
        "little",
        "large",
        "big",
        "tiny",
        "huge",
        "giant",
        "tall",
        "short",
        "long",
        "wide",
        "narrow",
        "thick",
        "thin",
        "young",
        "old",
        "new",
        "open",
        "closed",
        "empty",
        "full",
        "wet",
        "dry",
        "clean",
        "dirty",
        "wooden",
        "metal",
        "plastic",
        "glass",
        "stone",
        "brick",
        "round",
        "square",
        "flat",
        "high",
        "low",
        "hot",
        "cold",
        "warm",
        "fresh",
        "ripe",
        "sliced",
        "cut",
        "busy",
        "crowded",
        "quiet",
        "happy",
        "sad",
        "smiling",
        "cute",
        "pretty",
        "beautiful",
        "nice",
        "good",
        "great",
        "fancy",
        "plain",
        "striped",
        "spotted",
        "checkered",
        "paved",
        "grassy",
        "sandy",
        "snowy",
        "sunny",
        "cloudy",
        "rainy",
        "cloudy",
        "electric",
        "parked",
        "standing",
        "sitting",
        "lying",
        "laying",
        "single",
        "double",
        "multiple",
        "various",
        "other",
        "same",
        "different",
        "several",
    ]
)

_ADJ_SUFFIXES = ("ous", "ful", "less", "able", "ible", "ive", "ish")
_CAPTION_VERBS = frozenset(
    [
        "sits",
        "sit",
        "stands",
        "stand",
        "holds",
        "hold",
        "lies",
        "lie",
        "rides",
        "ride",
        "eats",
        "eat",
        "plays",
        "play",
        "looks",
        "look",
        "walks",
        "walk",
        "runs",
        "run",
        "flies",
        "fly",
        "hangs",
        "hang",
        "waits",
        "wait",
        "carries",
        "carry",
        "shows",
        "show",
        "has",
        "have",
        "wears",
        "wear",
        "uses",
        "use",
        "watches",
        "watch",
    ]
)


def tokenize(text: str) -> list[str]:
    """Word and punctuation tokens (``"a dog, running."`` -> ``["a", "dog", ",", "running", "."]``)."""
    return _TOKEN.findall(text)


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens with spaces, with no space before punctuation."""
    out = ""
    for t in tokens:
        if out and not (len(t) == 1 and not t.isalnum() and t not in "([{\"'"):
            out += " "
        out += t
    return out


def is_word(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


class LexiconTagger:
    """The fallback part-of-speech tagger: ``tag(tokens) -> ["noun" | "adj" | "other" | "punct", ...]``.

    See the module docstring for the rules. ``extra_adjectives`` / ``extra_nouns`` extend the lexicon.
    """

    name = "lexicon"

    def __init__(self, extra_adjectives: Sequence[str] = (), extra_nouns: Sequence[str] = ()):
        from alignlab.data.shapes import (
            COLOURS,
            GENERIC_NOUNS,
            POLYSEMOUS,
            SHAPES,
            SIZE_SYNONYMS,
            kind_plural,
        )

        self.adjectives = (
            set(COMMON_ADJECTIVES) | set(COLOURS) | {w for ws in SIZE_SYNONYMS.values() for w in ws}
        )
        self.adjectives |= {w.lower() for w in extra_adjectives}
        kinds = [*SHAPES, *POLYSEMOUS]
        self.nouns = {*kinds, *(kind_plural(k) for k in kinds), *GENERIC_NOUNS, *GENERIC_NOUNS.values()}
        self.nouns |= {w.lower() for w in extra_nouns}
        self.adjectives -= self.nouns  # "square" is a ShapesWorld noun, even though it is also an adjective

    def tag_word(self, word: str) -> str:
        w = word.lower()
        if not is_word(w):
            return "punct"
        if w in self.nouns:
            return "noun"
        if w in self.adjectives:
            return "adj"
        if w in CLOSED_CLASS or w.isdigit() or "'" in w or "’" in w:
            return "other"
        if w in _CAPTION_VERBS or (len(w) > 4 and w.endswith(("ing", "ed"))) or w.endswith("ly"):
            return "other"
        if w.endswith(_ADJ_SUFFIXES) and len(w) > 5:
            return "adj"
        return "noun"

    def tag(self, tokens: Sequence[str]) -> list[str]:
        return [self.tag_word(t) for t in tokens]

    def describe(self) -> dict[str, Any]:
        return {
            "tagger": self.name,
            "note": "closed-class list + ShapesWorld lexicon + adjective list/suffixes; "
            "remaining open-class words are nouns (approximate on free text)",
        }


class SpacyTagger:
    """Coarse tags from a spaCy pipeline (NOUN/PROPN -> noun, ADJ -> adj, PUNCT -> punct, else other)."""

    def __init__(self, model: str = "en_core_web_sm"):
        try:
            import spacy
        except ImportError:
            raise DependencyError(
                "spaCy is not installed", fix="pip install spacy and a pipeline, or use --tagger lexicon"
            ) from None
        try:
            self.nlp = spacy.load(model, disable=["parser", "ner", "lemmatizer"])
        except OSError:
            raise DependencyError(
                f"spaCy pipeline {model!r} is not installed",
                fix=f"install it (python -m spacy download {model}) or use --tagger lexicon",
            ) from None
        self.name = f"spacy:{model}"
        self.model = model

    def tag(self, tokens: Sequence[str]) -> list[str]:
        from spacy.tokens import Doc

        doc = Doc(self.nlp.vocab, words=list(tokens))
        for _, proc in self.nlp.pipeline:
            doc = proc(doc)
        out = []
        for t in doc:
            if t.pos_ in ("NOUN", "PROPN"):
                out.append("noun")
            elif t.pos_ == "ADJ":
                out.append("adj")
            elif t.pos_ == "PUNCT" or not is_word(t.text):
                out.append("punct")
            else:
                out.append("other")
        return out

    def describe(self) -> dict[str, Any]:
        import spacy

        return {"tagger": self.name, "spacy": spacy.__version__}


def get_tagger(spec: str = "auto") -> LexiconTagger | SpacyTagger:
    """``"lexicon"`` (the fallback), ``"spacy[:<pipeline>]"`` (must be installed) or ``"auto"``.

    ``"auto"`` uses spaCy's ``en_core_web_sm`` when both spaCy and that pipeline are installed, else the
    lexicon tagger.
    """
    if spec == "lexicon":
        return LexiconTagger()
    if spec.startswith("spacy"):
        _, _, model = spec.partition(":")
        return SpacyTagger(model or "en_core_web_sm")
    if spec == "auto":
        if (
            importlib.util.find_spec("spacy") is not None
            and importlib.util.find_spec("en_core_web_sm") is not None
        ):
            try:
                return SpacyTagger("en_core_web_sm")
            except DependencyError:
                pass
        return LexiconTagger()
    raise ConfigError(f"unknown tagger {spec!r}", fix="use auto, lexicon or spacy:<pipeline>")


# --- the perturbations ------------------------------------------------------------------------------


def _permute_positions(tokens: list[str], positions: list[int], rng: np.random.Generator) -> list[str]:
    out = list(tokens)
    if len(positions) < 2:
        return out
    perm = rng.permutation(len(positions))
    for dst, src in zip(positions, (positions[int(k)] for k in perm), strict=True):
        out[dst] = tokens[src]
    return out


def fix_articles(tokens: list[str]) -> list[str]:
    """ "a"/"an" agreeing with the next word's first letter (so a swap leaves no "an purple" give-away)."""
    out = list(tokens)
    for i in range(len(out) - 1):
        low = out[i].lower()
        if low in ("a", "an") and is_word(out[i + 1]):
            want = "an" if out[i + 1][0].lower() in "aeiou" else "a"
            if want != low:
                out[i] = want if out[i].islower() else want.capitalize()
    return out


def shuffle_content(tokens: list[str], tags: list[str], rng: np.random.Generator) -> list[str]:
    """Nouns shuffled among noun positions and adjectives among adjective positions.

    Articles are then made to agree with the word after them ("a red circle … an orange square" ->
    "an orange circle … a red square"), so the result differs from the caption in content-word order only.
    """
    out = _permute_positions(tokens, [i for i, t in enumerate(tags) if t == "noun"], rng)
    return fix_articles(_permute_positions(out, [i for i, t in enumerate(tags) if t == "adj"], rng))


def shuffle_function(tokens: list[str], tags: list[str], rng: np.random.Generator) -> list[str]:
    """Every non-content word (not a noun or adjective) shuffled among those positions."""
    return _permute_positions(tokens, [i for i, t in enumerate(tags) if t == "other"], rng)


def shuffle_all(tokens: list[str], tags: list[str], rng: np.random.Generator) -> list[str]:
    """All words shuffled (punctuation stays in place)."""
    return _permute_positions(tokens, [i for i, t in enumerate(tags) if t != "punct"], rng)


SHUFFLERS: dict[str, Callable[[list[str], list[str], np.random.Generator], list[str]]] = {
    "shuffle_content": shuffle_content,
    "shuffle_function": shuffle_function,
    "shuffle_all": shuffle_all,
}


def perturb(
    text: str,
    kind: str,
    rng: np.random.Generator,
    tagger: Any | None = None,
    tries: int = 20,
    reject: Callable[[str], bool] | None = None,
) -> str | None:
    """A ``kind`` perturbation of ``text`` that differs from it token-wise, or None when none can.

    ``reject(candidate)`` may veto a candidate (e.g. one that is coincidentally true of the image, or
    equal to another option); vetoed and unchanged draws are retried up to ``tries`` times.
    """
    if kind not in SHUFFLERS:
        raise ConfigError(f"unknown perturbation {kind!r}", fix=f"use one of: {', '.join(PERTURBATIONS)}")
    tokens = tokenize(text)
    tags = (tagger or LexiconTagger()).tag(tokens)
    gold = [t.lower() for t in tokens]
    for _ in range(tries):
        cand = SHUFFLERS[kind](tokens, tags, rng)
        if [t.lower() for t in cand] == gold:
            continue
        out = detokenize(cand)
        if reject is not None and reject(out):
            continue
        return out
    return None


# --- semantic-structure items from any caption file -------------------------------------------------


def build_caption_items(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str | None = "test",
    image_root: str | os.PathLike | None = None,
    seed: int = 0,
    tagger: str = "auto",
    max_items: int | None = None,
    check_images: bool = True,
    allow_outside_root: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Write semantic-structure items (gold + the three perturbations) for the captions of a data file.

    ``path`` is anything :func:`alignlab.data.pairs.load_pairs` reads (Karpathy/COCO JSON, CSV, JSONL, a
    folder with ``dataset.json``). Each caption becomes one item; perturbations that cannot differ from
    the caption (or from each other) are left out, and a caption left with fewer than 2 options is
    skipped and counted. Images are referenced relative to the data's image root, which ``probe.json``
    records as ``image_root`` (nothing is copied). Whether a shuffled
    free caption happens to be a true sentence cannot be checked without a truth evaluator: it is
    labelled a distractor (``truth`` is null) and ``probe.json`` says so. ShapesWorld exports carry their
    scenes: there every perturbation is checked with the truth evaluator, one that is true of the image
    is dropped and redrawn (``dropped_true_negatives`` counts them), and every option is labelled.
    """
    from alignlab.data.pairs import load_pairs
    from alignlab.probe.items import PROBE_VERSION, ProbeItem, write_probe

    pairs = load_pairs(
        path, split, image_root, check_files=check_images, allow_outside_root=allow_outside_root
    )
    src = Path(path)
    # The folder the data's image paths start from (load_pairs' default), recorded for `probe eval`.
    data_root = Path(
        image_root if image_root is not None else (src if src.is_dir() else src.parent)
    ).resolve()
    if pairs.image_paths is None:
        raise DataError(
            "caption file has no image paths", where=str(path), fix="give a file with image paths"
        )
    tag = get_tagger(tagger)
    items: list[ProbeItem] = []
    skipped = 0
    dropped_true = 0
    scenes = None
    if pairs.has_truth:  # a ShapesWorld export: the truth evaluator can check every distractor
        from alignlab.data.shapes import Scene

        assert pairs.image_meta is not None
        scenes = [Scene.from_dict(m["scene"]) for m in pairs.image_meta]

    def true_of(text: str, i: int) -> bool:
        nonlocal dropped_true
        if scenes is None or not _true_sentence(text, scenes[i]):
            return False
        dropped_true += 1
        return True

    for i, caps in enumerate(pairs.sources):  # each caption once, with the image it was written for
        img = pairs.image_paths[i]
        if check_images and not Path(img).is_file():
            raise DataError(
                "image not found", where=f"{path} (image {pairs.image_ids[i]!r})", fix="check --image-root"
            )
        for c in caps:
            if max_items is not None and len(items) >= max_items:
                break
            gold = pairs.captions[c].strip()
            rng = np.random.default_rng([seed, 7, c])
            options, kinds = [gold], ["gold"]
            for kind in PERTURBATIONS:
                alt = perturb(
                    gold,
                    kind,
                    rng,
                    tag,
                    reject=lambda s, o=options, i=i: s.lower() in {x.lower() for x in o} or true_of(s, i),
                )
                if alt is not None:
                    options.append(alt)
                    kinds.append(kind)
            if len(options) < 2:
                skipped += 1
                continue
            order = rng.permutation(len(options))
            truth = None if scenes is None else [[_true_sentence(options[k], scenes[i]) for k in order]]
            items.append(
                ProbeItem(
                    id=f"captions-{c:07d}",
                    task="semantic_structure",
                    category="captions",
                    images=[os.path.relpath(Path(img).resolve(), data_root)],
                    options=[options[k] for k in order],
                    correct=int(np.flatnonzero(order == 0)[0]),
                    option_kinds=[kinds[k] for k in order],
                    truth=truth,
                    source="captions",
                    generator=f"{PROBE_VERSION}+perturb",
                    seed=seed,
                    meta={"image_id": pairs.image_ids[i], "caption_id": c},
                )
            )
    if not items:
        raise DataError(
            "no caption could be perturbed",
            where=str(path),
            fix="captions need at least two words that can be reordered",
        )
    info = {
        "source": "captions",
        "input": str(path),
        "image_root": str(data_root),
        "split": split,
        "seed": seed,
        "skipped_captions": skipped,
        "dropped_true_negatives": dropped_true,
        "tagger": tag.describe(),
        "labels": (
            "every option labelled by the ShapesWorld truth evaluator; distractors true of the image "
            "were dropped and redrawn"
            if scenes is not None
            else "distractors are perturbations, not checked for truth (no evaluator for free text)"
        ),
    }
    return write_probe(out_dir, items, info), info


def _true_sentence(text: str, scene: Any) -> bool:
    """Truth of ``text`` in a ShapesWorld scene; a sentence outside the grammar is false (it asserts
    nothing)."""
    from alignlab.data.shapes import GrammarError, evaluate, parse_caption

    try:
        return evaluate(parse_caption(text), scene)
    except GrammarError:
        return False
