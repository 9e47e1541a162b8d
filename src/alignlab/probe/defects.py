"""The released SNARE code's three defects, reproducible by name, so that an experiment can measure them.

alignlab's probe harness fixes three defects of the released SNARE evaluation code. Each fix is the
default everywhere; this module brings the old behaviour back *by name* only, to measure how much it
changes a result (``alignlab experiment snare`` runs each as an arm). Nothing else uses it.

* ``ties_correct`` (scoring) — the released code counted an item right when the gold caption's score
  was *not below* the others (``>=``), so a scorer blind to word order, which gives a caption and its
  shuffles the same score, scored 100% on the word-order task. alignlab's fix
  (:func:`alignlab.probe.evaluate.judge`): only a strict win counts. :func:`judge_ties_correct` is the
  old rule.
* ``affirmative_key`` (scoring) — the released negation task's answer key always named the affirmative
  sentence, whatever the image showed, so "never pick *not*" was always right. alignlab's fix
  (:mod:`alignlab.probe.build_shapes`): a balanced 2×2 where in half the items the negated sentence is
  the true one, each label checked by the truth evaluator. :func:`affirmative_key` re-keys an item to
  its affirmative option: the score under that key is how often the affirmative is picked.
* ``substring_shuffles`` (building) — the released code wrote a shuffle back into the caption by plain
  string replacement, which also replaces a short word inside a longer one ("lemon" became "lembelow"
  when "on" was replaced by "below"), so many "shuffled" captions contained non-words that give them
  away without any sense of word order. alignlab's fix (:mod:`alignlab.probe.perturb`): permutations of
  whole tokens. :func:`substring_shuffle` draws the same token permutation and writes it back the old way:
  every word that changed is replaced wherever it occurs *as a substring* (``str.replace`` of every
  occurrence; all replacements in one pass, so that exchanging two words does not undo itself; a word
  that moves to several new words takes the first). :func:`substring_items` rebuilds the distractors of
  word-order items that way (same gold caption, same image, same option order).

>>> import numpy as np
>>> item = ProbeItem(id="x", task="semantic_structure", category="relation", images=["a.png"],
...                  options=["a red circle", "a circle red"], correct=0)
>>> judge_ties_correct(item, np.array([[1.0, 1.0]]))
1.0
>>> substring_write_back("the large circle and a square", ["the", "large", "circle", "a", "and", "square"])
'the landrge circle a and squandre'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from alignlab.probe.items import ProbeItem
from alignlab.probe.perturb import PERTURBATIONS, SHUFFLERS, LexiconTagger, tokenize

DEFECTS = ("ties_correct", "affirmative_key", "substring_shuffles")


def judge_ties_correct(item: ProbeItem, s: np.ndarray) -> float:
    """The released rule for a choice item: right when the correct option's score is the highest *or
    tied* with it."""
    row = np.asarray(s, dtype=float)[0]
    return float(row[item.correct] >= row.max())


def affirmative_key(item: ProbeItem) -> ProbeItem:
    """A negation item keyed to its affirmative option, whatever is true (the released answer key)."""
    if item.task != "negation" or item.option_kinds is None or "affirmative" not in item.option_kinds:
        return item
    return replace(item, correct=item.option_kinds.index("affirmative"), truth=None)


def substring_write_back(text: str, new_tokens: Sequence[str]) -> str:
    """``text`` rewritten towards ``new_tokens`` by substring replacement (the released way).

    Each word of ``text`` whose position holds another word in ``new_tokens`` is replaced by that word
    everywhere it occurs as a substring — inside other words too — in one simultaneous pass (longer
    words first where two overlap).
    """
    mapping: dict[str, str] = {}
    for old, new in zip(tokenize(text), new_tokens, strict=True):
        if old != new:
            mapping.setdefault(old, new)
    if not mapping:
        return text
    pattern = re.compile("|".join(re.escape(w) for w in sorted(mapping, key=lambda w: (-len(w), w))))
    return pattern.sub(lambda m: mapping[m.group(0)], text)


def substring_shuffle(
    text: str,
    kind: str,
    rng: np.random.Generator,
    tagger: Any | None = None,
    tries: int = 20,
    reject: Any = None,
) -> str | None:
    """A ``kind`` shuffle of ``text`` written back by substring replacement; None when none differs
    from it."""
    tokens = tokenize(text)
    tags = (tagger or LexiconTagger()).tag(tokens)
    for _ in range(tries):
        perm = SHUFFLERS[kind](tokens, tags, rng)
        if [t.lower() for t in perm] == [t.lower() for t in tokens]:
            continue
        out = substring_write_back(text, perm)
        if out.lower() == text.lower() or (reject is not None and reject(out)):
            continue
        return out
    return None


def has_non_word(text: str, vocabulary: set[str]) -> bool:
    """Whether ``text`` holds a word outside ``vocabulary`` (a substring-corrupted word such as "lundrge")."""
    return any(t.lower() not in vocabulary for t in tokenize(text) if any(c.isalnum() for c in t))


def substring_items(items: Sequence[ProbeItem], seed: int = 0) -> tuple[list[ProbeItem], dict[str, int]]:
    """The word-order items of ``items`` with every shuffle rebuilt by substring replacement.

    Same id, image, gold caption and option order; each distractor is redrawn as a ``substring_shuffle``
    of the same kind (a draw equal to another option is redrawn; a kind that cannot differ keeps the
    token-level shuffle, counted in ``kept_token_shuffle``). Returns the items and counts, among them how
    many distractors hold a non-word (``corrupted``: a word of no option of the original item).
    """
    from alignlab.data.shapes import Scene
    from alignlab.probe.build_shapes import caption_truth

    tagger = LexiconTagger()
    out: list[ProbeItem] = []
    stats = {"items": 0, "distractors": 0, "corrupted": 0, "kept_token_shuffle": 0, "true_of_image": 0}
    for it in items:
        if it.task != "semantic_structure" or it.format != "choice" or it.option_kinds is None:
            continue
        gold = it.options[it.correct]
        vocab = {t.lower() for o in it.options for t in tokenize(o)}
        rng = np.random.default_rng([seed, 31, int(stats["items"])])
        options = list(it.options)
        for j, kind in enumerate(it.option_kinds):
            if kind not in PERTURBATIONS:
                continue
            taken = {o.lower() for k, o in enumerate(options) if k != j}
            alt = substring_shuffle(gold, kind, rng, tagger, reject=lambda s, t=taken: s.lower() in t)
            if alt is None:
                stats["kept_token_shuffle"] += 1
                continue
            options[j] = alt
            stats["distractors"] += 1
            stats["corrupted"] += int(has_non_word(alt, vocab))
        truth = None
        scenes = it.meta.get("scenes")
        if scenes:
            scene = Scene.from_dict(scenes[0])
            truth = [[caption_truth(o, scene) for o in options]]
            stats["true_of_image"] += sum(t for k, t in enumerate(truth[0]) if k != it.correct)
        out.append(
            replace(
                it, options=options, truth=truth, line=None, generator=f"{it.generator}+substring-shuffles"
            )
        )
        stats["items"] += 1
    return out, stats
