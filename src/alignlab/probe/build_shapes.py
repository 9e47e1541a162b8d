"""SNARE's four probes generated from ShapesWorld scene graphs, every option labelled by the truth evaluator.

For each item a scene is sampled (2–4 objects), a gold caption and its distractors are written, and
*every* option is labelled against *every* image of the item with :func:`alignlab.data.shapes.evaluate`
(after :func:`~alignlab.data.shapes.parse_caption`). Nothing is assumed: an item is kept only when the
labels say exactly one option is true of each image (``accuracy`` items and Winoground pairs) or that
the preferred option is true (``preference`` items); otherwise a new scene is drawn.
A shuffled caption that the grammar cannot parse has no meaning in ShapesWorld and is labelled false
by construction (the evaluator cannot make it true); a shuffle that parses is evaluated like any caption
and rejected when it is coincidentally true, or equal to the gold caption or another option. Every
distractor of the word-order, ownership and relation-swap items uses exactly the gold caption's words
(draws whose "a"/"an" would have to change are redrawn), so any blind scorer that reads a bag of words
ties on them.

Tasks and categories (``items_per_category`` items each):

* ``semantic_structure`` — gold caption (family ``relation``, ``list``, ``respectively`` or ``property``)
  vs ``shuffle_content``, ``shuffle_function`` and ``shuffle_all`` (:mod:`alignlab.probe.perturb`): 4 options.
* ``negation`` — "the X is A and the Y is B" vs "the X is not A and the Y is not B", a balanced 2×2:
  in ``affirmative_true`` items the affirmative is true and the negated false, in ``negated_true`` items
  (A, B chosen to be wrong) the reverse, so "never pick *not*" scores exactly 50%.
* ``attribute_ownership`` — ``swap_colour`` / ``swap_size``: "a red circle and a blue square" vs the
  attributes swapped; ``respectively``: "the circle and the square are red and blue respectively" vs the
  values swapped; ``pair_colour_swap``: the scene and the scene with the two objects' colours swapped,
  each caption true in exactly one image (Winoground text/image/group scores).
* ``relationship_composition`` — ``swap``: "the X is left of the Y" vs subject and object swapped;
  ``relation_choice``: the four spatial relations, exactly one true; ``vs_conjunction`` (a *preference*
  item: both are true): the relation sentence vs "the X and the Y"; ``pair_mirror``: the scene and its
  mirror image, each caption true in exactly one.

>>> items, images, stats = build_shapes_items(ShapesProbeConfig(items_per_category=2, tasks=["negation"]))
>>> sorted({it.category for it in items}), len(items)
(['affirmative_true', 'negated_true'], 4)
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from alignlab.core.errors import ConfigError, DataError
from alignlab.core.progress import progress
from alignlab.data.shapes import (
    COLOURS,
    GENERATOR_VERSION,
    NP,
    REL_PHRASES,
    RELATIONS,
    SIZE_SYNONYMS,
    SIZES,
    And,
    Exists,
    GrammarError,
    Obj,
    Property,
    Relation,
    Respectively,
    Scene,
    ShapesConfig,
    english,
    english_np,
    evaluate,
    mirror,
    parse_caption,
    relation_holds,
    render_array,
    sample_scene,
    swap_colours,
)
from alignlab.probe.items import PROBE_VERSION, TASKS, ProbeItem, write_probe
from alignlab.probe.perturb import PERTURBATIONS, LexiconTagger, detokenize, fix_articles, perturb, tokenize

CATEGORIES: dict[str, tuple[str, ...]] = {
    "semantic_structure": ("relation", "list", "respectively", "property"),
    "negation": ("affirmative_true", "negated_true"),
    "attribute_ownership": ("swap_colour", "swap_size", "respectively", "pair_colour_swap"),
    "relationship_composition": ("swap", "relation_choice", "vs_conjunction", "pair_mirror"),
}
_INVERSE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
_SIZE_WORDS = {w for ws in SIZE_SYNONYMS.values() for w in ws}


@dataclass
class ShapesProbeConfig:
    """What to build: how many items per category, from which seed, at which image size."""

    items_per_category: int = 100
    seed: int = 0
    image_size: int = 64
    polysemous_rate: float = 0.2  # as in the default ShapesWorld training data
    max_objects: int = 4
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    max_attempts: int = 2000  # scenes tried for one item before the build gives up

    def __post_init__(self) -> None:
        if self.items_per_category < 1:
            raise ValueError("items_per_category must be >= 1")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")


@dataclass
class Draft:
    """An item before labelling: options, the intended answer, and the scene(s) it is about."""

    options: list[str]
    correct: Any
    kinds: list[str]
    scenes: list[Scene]
    format: str = "choice"
    scoring: str = "accuracy"
    meta: dict[str, Any] = field(default_factory=dict)


# --- helpers ----------------------------------------------------------------------------------------


def caption_truth(text: str, scene: Scene) -> bool:
    """Truth of ``text`` in ``scene``; a sentence outside the grammar is false (it asserts nothing)."""
    try:
        form = parse_caption(text)
    except GrammarError:
        return False
    return evaluate(form, scene)


def unique_np(
    o: Obj, scene: Scene, rng: np.random.Generator, drop: str | None = None, prefer_attribute: bool = False
) -> NP | None:
    """A definite NP that picks out ``o`` alone (without attribute ``drop``), or None if there is none."""
    cands = [NP(o.kind, None, None, True, o.sense)]
    if drop != "size":
        cands.append(NP(o.kind, None, o.size, True, o.sense))
    if drop != "colour":
        cands.append(NP(o.kind, o.colour, None, True, o.sense))
    if drop is None:
        cands.append(NP(o.kind, o.colour, o.size, True, o.sense))
    unique = [c for c in cands if sum(c.matches(x) for x in scene.objects) == 1]
    if prefer_attribute:
        unique = [c for c in unique if c.colour or c.size] or unique
    if not unique:
        return None
    return unique[0] if rng.random() < 0.7 else unique[int(rng.integers(len(unique)))]


def describe(o: Obj, rng: np.random.Generator, colour: bool | None = None, size: bool | None = None) -> NP:
    """An indefinite NP for ``o`` with its colour/size (random when None)."""
    c = rng.random() < 0.5 if colour is None else colour
    s = rng.random() < 0.5 if size is None else size
    return NP(o.kind, o.colour if c else None, o.size if s else None, False, o.sense)


def same_words(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are permutations of the same words (the same bag of words)."""
    return sorted(t.lower() for t in tokenize(a)) == sorted(t.lower() for t in tokenize(b))


def swap_words(text: str, vocab: set[str], keep_bag: bool = False) -> str | None:
    """``text`` with its two tokens from ``vocab`` exchanged (whole tokens only; articles made to agree);
    None unless exactly two differ — or, with ``keep_bag``, when the articles had to change."""
    toks = tokenize(text)
    pos = [i for i, t in enumerate(toks) if t.lower() in vocab]
    if len(pos) != 2 or toks[pos[0]].lower() == toks[pos[1]].lower():
        return None
    toks[pos[0]], toks[pos[1]] = toks[pos[1]], toks[pos[0]]
    out = detokenize(fix_articles(toks))
    return None if keep_bag and not same_words(out, text) else out


def _pair(scene: Scene, rng: np.random.Generator, ok: Callable[[Obj, Obj], bool]) -> tuple[int, int] | None:
    objs = scene.objects
    pairs = [(i, j) for i in range(len(objs)) for j in range(len(objs)) if i != j and ok(objs[i], objs[j])]
    if not pairs:
        return None
    return pairs[int(rng.integers(len(pairs)))]


def _rel_template(rng: np.random.Generator) -> str:
    return ("{a} {p} {b}", "{a} is {p} {b}")[int(rng.integers(2))]


def _phrase(rel: str, rng: np.random.Generator) -> str:
    ps = REL_PHRASES[rel]
    return ps[int(rng.integers(len(ps)))]


# --- drafts, one function per (task, category) ------------------------------------------------------


def _semantic(
    family: str, scene: Scene, rng: np.random.Generator, tagger: LexiconTagger, stats: Counter
) -> Draft | None:
    objs = scene.objects
    if family == "relation":
        ij = _pair(scene, rng, lambda a, b: any(relation_holds(r, a, b) for r in RELATIONS))
        if ij is None:
            return None
        a, b = objs[ij[0]], objs[ij[1]]
        rel = [r for r in RELATIONS if relation_holds(r, a, b)]
        gold = english(Relation(describe(a, rng), rel[int(rng.integers(len(rel)))], describe(b, rng)), rng)
    elif family == "list":
        k = int(rng.integers(2, len(objs) + 1))
        pick = rng.permutation(len(objs))[:k]
        gold = english(And(tuple(Exists(describe(objs[int(i)], rng)) for i in pick)), rng)
    elif family == "respectively":
        ij = _pair(scene, rng, lambda a, b: True)
        if ij is None:
            return None
        a, b = objs[ij[0]], objs[ij[1]]
        na, nb = unique_np(a, scene, rng, drop="colour"), unique_np(b, scene, rng, drop="colour")
        if na is None or nb is None:
            return None
        gold = english(Respectively(na, nb, a.colour, b.colour), rng)
    elif family == "property":
        o = objs[int(rng.integers(len(objs)))]
        attr = "colour" if rng.random() < 0.7 else "size"
        np_ = unique_np(o, scene, rng, drop=attr, prefer_attribute=True)
        if np_ is None:
            return None
        gold = english(Property(np_, o.colour if attr == "colour" else o.size), rng)
    else:
        raise ValueError(family)
    options, kinds = [gold], ["gold"]

    def reject(cand: str) -> bool:
        if not same_words(cand, gold):  # "a orange" -> "an orange": a word-frequency cue for blind scorers
            stats["shuffle_draws_article_change"] += 1
            return True
        if cand.lower() in {x.lower() for x in options}:
            stats["shuffle_draws_duplicate"] += 1
            return True
        if caption_truth(cand, scene):
            stats["shuffle_draws_coincidentally_true"] += 1
            return True
        return False

    for kind in PERTURBATIONS:
        alt = perturb(gold, kind, rng, tagger, tries=30, reject=reject)
        if alt is None:
            stats[f"no_{kind}"] += 1
            return None
        stats["shuffle_parses" if _parses(alt) else "shuffle_unparseable"] += 1
        options.append(alt)
        kinds.append(kind)
    return Draft(options, 0, kinds, [scene], meta={"family": family})


def _parses(text: str) -> bool:
    try:
        parse_caption(text)
        return True
    except GrammarError:
        return False


def _negation(category: str, scene: Scene, rng: np.random.Generator) -> Draft | None:
    objs = scene.objects
    ij = _pair(scene, rng, lambda a, b: True)
    if ij is None:
        return None
    a, b = objs[ij[0]], objs[ij[1]]
    attr = "colour" if rng.random() < 0.75 else "size"
    na, nb = unique_np(a, scene, rng, drop=attr), unique_np(b, scene, rng, drop=attr)
    if na is None or nb is None:
        return None

    def value(o: Obj) -> str:
        own = o.colour if attr == "colour" else o.size
        if category == "affirmative_true":
            return own
        others = [c for c in COLOURS if c != own] if attr == "colour" else [s for s in SIZES if s != own]
        return others[int(rng.integers(len(others)))]

    aff = english(And((Property(na, value(a)), Property(nb, value(b)))), rng)
    toks = tokenize(aff)
    neg_toks: list[str] = []
    for t in toks:
        neg_toks.append(t)
        if t == "is":
            neg_toks.append("not")
    if toks.count("is") != 2:
        return None
    neg = detokenize(neg_toks)
    correct = 0 if category == "affirmative_true" else 1
    return Draft([aff, neg], correct, ["affirmative", "negated"], [scene], meta={"attribute": attr})


def _ownership(category: str, scene: Scene, rng: np.random.Generator) -> Draft | None:
    objs = scene.objects
    if category in ("swap_colour", "pair_colour_swap"):
        ij = _pair(scene, rng, lambda a, b: a.colour != b.colour and a.kind != b.kind)
        if ij is None:
            return None
        a, b = objs[ij[0]], objs[ij[1]]
        size = rng.random() < 0.3
        gold = english(And((Exists(describe(a, rng, True, size)), Exists(describe(b, rng, True, size)))), rng)
        alt = swap_words(gold, set(COLOURS), keep_bag=True)
        if alt is None:
            return None
        if category == "swap_colour":
            return Draft([gold, alt], 0, ["gold", "swap"], [scene])
        other = swap_colours(scene, ij[0], ij[1])
        return Draft(
            [gold, alt],
            [0, 1],
            ["caption0", "caption1"],
            [scene, other],
            format="pair",
            meta={"counterfactual": "swap_colours", "objects": list(ij)},
        )
    if category == "swap_size":
        ij = _pair(scene, rng, lambda a, b: a.size != b.size and a.kind != b.kind)
        if ij is None:
            return None
        a, b = objs[ij[0]], objs[ij[1]]
        colour = rng.random() < 0.3
        gold = english(
            And((Exists(describe(a, rng, colour, True)), Exists(describe(b, rng, colour, True)))), rng
        )
        alt = swap_words(gold, _SIZE_WORDS, keep_bag=True)
        return None if alt is None else Draft([gold, alt], 0, ["gold", "swap"], [scene])
    if category == "respectively":
        ij = _pair(scene, rng, lambda a, b: a.colour != b.colour)
        if ij is None:
            return None
        a, b = objs[ij[0]], objs[ij[1]]
        na, nb = unique_np(a, scene, rng, drop="colour"), unique_np(b, scene, rng, drop="colour")
        if na is None or nb is None:
            return None
        gold = english(Respectively(na, nb, a.colour, b.colour), rng)
        alt = swap_words(gold, set(COLOURS), keep_bag=True)
        return None if alt is None else Draft([gold, alt], 0, ["gold", "swap"], [scene])
    raise ValueError(category)


def _composition(category: str, scene: Scene, rng: np.random.Generator) -> Draft | None:
    objs = scene.objects
    if category == "relation_choice":
        # Same row or same column: exactly one of the four relations holds.
        ij = _pair(scene, rng, lambda a, b: sum(relation_holds(r, a, b) for r in RELATIONS) == 1)
    elif category == "pair_mirror":
        ij = _pair(scene, rng, lambda a, b: a.col != b.col)
    else:
        ij = _pair(scene, rng, lambda a, b: any(relation_holds(r, a, b) for r in RELATIONS))
    if ij is None:
        return None
    a, b = objs[ij[0]], objs[ij[1]]
    na, nb = unique_np(a, scene, rng), unique_np(b, scene, rng)
    if na is None or nb is None:
        return None
    ta, tb = english_np(na, rng), english_np(nb, rng)
    template = _rel_template(rng)
    if category == "pair_mirror":
        rel = "left_of" if a.col < b.col else "right_of"
    else:
        holds = [r for r in RELATIONS if relation_holds(r, a, b)]
        rel = holds[int(rng.integers(len(holds)))]
    phrase = _phrase(rel, rng)
    gold = template.format(a=ta, p=phrase, b=tb)
    swapped = template.format(a=tb, p=phrase, b=ta)
    meta = {"relation": rel, "objects": list(ij)}
    if category == "swap":
        return Draft([gold, swapped], 0, ["gold", "swap"], [scene], meta=meta)
    if category == "relation_choice":
        options, kinds = [], []
        for r in RELATIONS:
            options.append(template.format(a=ta, p=_phrase(r, rng), b=tb))
            kinds.append("gold" if r == rel else "inverse" if r == _INVERSE[rel] else "orthogonal")
        return Draft(options, RELATIONS.index(rel), kinds, [scene], meta=meta)
    if category == "vs_conjunction":
        return Draft(
            [gold, f"{ta} and {tb}"], 0, ["relation", "conjunction"], [scene], scoring="preference", meta=meta
        )
    if category == "pair_mirror":
        return Draft(
            [gold, swapped],
            [0, 1],
            ["caption0", "caption1"],
            [scene, mirror(scene)],
            format="pair",
            meta={**meta, "counterfactual": "mirror"},
        )
    raise ValueError(category)


# --- labelling and the build ------------------------------------------------------------------------


def label(draft: Draft) -> list[list[bool]]:
    """``truth[k][j]``: option ``j`` in scene ``k``, by the truth evaluator."""
    return [[caption_truth(o, s) for o in draft.options] for s in draft.scenes]


def consistent(draft: Draft, truth: list[list[bool]]) -> bool:
    """Whether the labels agree with the draft's intended answer (else the draft is rejected)."""
    if draft.format == "pair":
        c = draft.correct
        return (
            all(truth[k][c[k]] and not truth[k][1 - c[k]] for k in range(2)) and len(set(draft.options)) == 2
        )
    row = truth[0]
    if not row[draft.correct] or len({o.lower() for o in draft.options}) != len(draft.options):
        return False
    if draft.scoring == "preference":
        return True
    return sum(row) == 1


def _true_distractors(draft: Draft, truth: list[list[bool]]) -> int:
    """How many options meant to be false of an image are true of it (preference items have none)."""
    if draft.format == "pair":
        return sum(truth[k][1 - draft.correct[k]] for k in range(len(truth)))
    if draft.scoring == "preference":
        return 0
    return sum(t for j, t in enumerate(truth[0]) if j != draft.correct)


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


_TASK_CODES = {t: k for k, t in enumerate(TASKS)}


def build_shapes_items(cfg: ShapesProbeConfig) -> tuple[list[ProbeItem], dict[str, bytes], dict[str, int]]:
    """Generate the items (with labels), their PNG images (``images/<sha16>.png`` -> bytes) and build
    stats."""
    world_cfg = ShapesConfig(
        image_size=cfg.image_size,
        min_objects=2,
        max_objects=cfg.max_objects,
        polysemous_rate=cfg.polysemous_rate,
    )
    tagger = LexiconTagger()
    stats: Counter = Counter()
    stats["true_negatives_dropped"] = 0  # distractors found true (their draft redrawn); shuffles: see below
    items: list[ProbeItem] = []
    images: dict[str, bytes] = {}
    rendered: dict[Scene, tuple[str, str]] = {}

    def image_ref(scene: Scene) -> tuple[str, str]:
        if scene not in rendered:
            data = png_bytes(render_array(scene, cfg.image_size))
            sha = hashlib.sha256(data).hexdigest()
            ref = f"images/{sha[:16]}.png"
            images[ref] = data
            rendered[scene] = (ref, sha)
        return rendered[scene]

    jobs = [(t, c, n) for t in cfg.tasks for c in CATEGORIES[t] for n in range(cfg.items_per_category)]
    for task, cat, n in progress(jobs, total=len(jobs), desc="building ShapesWorld probes", unit="item"):
        rng = np.random.default_rng([cfg.seed, _TASK_CODES[task], CATEGORIES[task].index(cat), n])
        for _attempt in range(cfg.max_attempts):
            scene = sample_scene(rng, world_cfg)
            if task == "semantic_structure":
                draft = _semantic(cat, scene, rng, tagger, stats)
            elif task == "negation":
                draft = _negation(cat, scene, rng)
            elif task == "attribute_ownership":
                draft = _ownership(cat, scene, rng)
            else:
                draft = _composition(cat, scene, rng)
            if draft is None:
                stats["scene_unsuitable"] += 1
                continue
            truth = label(draft)
            if not consistent(draft, truth):
                stats["labels_rejected"] += 1
                # Distractors the evaluator found true of their image: dropped with the draft, counted.
                stats["true_negatives_dropped"] += _true_distractors(draft, truth)
                continue
            break
        else:
            raise DataError(
                f"could not build a {task}/{cat} item in {cfg.max_attempts} scenes",
                fix="raise max_attempts or max_objects",
            )
        if draft.format == "choice":
            order = rng.permutation(len(draft.options))  # the right answer is not always first
            options = [draft.options[k] for k in order]
            kinds = [draft.kinds[k] for k in order]
            truth = [[truth[0][k] for k in order]]
            correct: Any = int(np.flatnonzero(order == draft.correct)[0])
        else:
            options, kinds, correct = draft.options, draft.kinds, list(draft.correct)
        refs = [image_ref(s) for s in draft.scenes]
        stats["items"] += 1
        items.append(
            ProbeItem(
                id=f"shapes-{task}-{cat}-{n:05d}",
                task=task,
                category=cat,
                images=[r for r, _ in refs],
                options=options,
                correct=correct,
                format=draft.format,
                scoring=draft.scoring,
                option_kinds=kinds,
                truth=truth,
                image_sha256=[s for _, s in refs],
                source="shapes",
                generator=f"{PROBE_VERSION}+{GENERATOR_VERSION}",
                seed=cfg.seed,
                meta={**draft.meta, "scenes": [s.to_dict() for s in draft.scenes]},
            )
        )
    return items, images, dict(stats)


def build_shapes_probe(cfg: ShapesProbeConfig, out_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """Build and write a ShapesWorld probe folder; returns (items file, manifest info)."""
    try:
        cfg.__post_init__()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    items, images, stats = build_shapes_items(cfg)
    info = {
        "source": "shapes",
        "seed": cfg.seed,
        "config": asdict(cfg),
        "build_stats": stats,
        "generator": f"{PROBE_VERSION}+{GENERATOR_VERSION}",
        "n_images": len(images),
        "labels": "every option labelled by alignlab.data.shapes.evaluate; unparseable shuffles are false",
    }
    return write_probe(out_dir, items, info, images), info
