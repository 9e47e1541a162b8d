"""Probe items from ARO's Visual Genome files (``visual_genome_relation.json``,
``visual_genome_attribution.json``).

ARO ("When and why vision-language models behave like bags-of-words", Yuksekgonul et al., 2023) ships
two JSON lists; SNARE's attribute and relation items come from them. Each entry has

* ``image_path`` (relative to the images folder), ``bbox_x``, ``bbox_y``, ``bbox_w``, ``bbox_h`` (the region
  the caption is about; the image is cropped to it before scoring, as ARO does),
* ``true_caption`` and ``false_caption`` (the false one swaps the two objects of a relation, or the two
  attributes of an attribution),
* ``relation_name`` (relation file) or ``attributes`` — the two adjectives — (attribution file).

Items made here (``truth`` is null: the labels are Visual Genome's annotations, not an evaluator's):

* ``relationship_composition`` / category = the relation name: true vs swapped caption; and, when the
  relation's words can be found as whole tokens in the caption, a *preference* item (category
  ``vs_conjunction``) between the relation sentence and "X and Y" with the relation removed;
* ``attribute_ownership`` / category = ``<attr1>_<attr2>`` (ARO's grouping): true vs swapped caption;
* ``negation`` (from attribution captions of the form "the A1 X and the A2 Y"), balanced as a 2×2: even
  entries give "the X is A1 and the Y is A2" (true) vs "the X is not A1 and the Y is not A2";
  odd entries give "the X is A2 and the Y is A1" vs "the X is not A2 and the Y is not A1", whose
  negated sentence is the answer. The second construction assumes that an object annotated with one of
  the two attributes does not also carry the other (VG does not say); ``probe.json`` records this.

Option order is shuffled per item with the build seed; the correct index is stored, never assumed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.errors import DataError
from alignlab.core.io import read_json, resolve_inside
from alignlab.probe.items import PROBE_VERSION, ProbeItem, write_probe
from alignlab.probe.perturb import detokenize, tokenize

ARO_VERSION = "aro-vg"
_COPULAS = {"is", "are"}


def _entries(path: Path, kind: str) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(
            f"expected a JSON list of {kind} entries",
            where=str(path),
            fix=f"give ARO's visual_genome_{kind}.json",
        )
    for i, e in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(e, dict):
            raise DataError("entry is not an object", where=where)
        for key in ("image_path", "true_caption", "false_caption"):
            if not isinstance(e.get(key), str) or not e[key].strip():
                raise DataError(f"entry lacks {key!r}", where=where, fix="use ARO's file unchanged")
        if kind == "attribution" and (not isinstance(e.get("attributes"), list) or len(e["attributes"]) != 2):
            raise DataError("entry lacks the two 'attributes'", where=where, fix="use ARO's file unchanged")
    return data


def _crop(e: dict[str, Any]) -> list[float] | None:
    keys = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")
    if all(k in e for k in keys):
        return [float(e[k]) for k in keys]
    return None


def _choice(
    rng: np.random.Generator, options: list[str], kinds: list[str], correct: int
) -> tuple[list, list, int]:
    order = rng.permutation(len(options))
    return [options[k] for k in order], [kinds[k] for k in order], int(np.flatnonzero(order == correct)[0])


def split_relation(caption: str, relation: str) -> tuple[str, str] | None:
    """(subject, object) around the relation's tokens in ``caption`` ("the horse is eating the grass",
    "eating" -> ("the horse", "the grass")); whole tokens only; None when not found exactly once."""
    toks = tokenize(caption)
    rel = tokenize(relation)
    if not rel:
        return None
    low, rlow = [t.lower() for t in toks], [t.lower() for t in rel]
    hits = [i for i in range(len(low) - len(rlow) + 1) if low[i : i + len(rlow)] == rlow]
    if len(hits) != 1:
        return None
    i = hits[0]
    left, right = toks[:i], toks[i + len(rel) :]
    while left and left[-1].lower() in _COPULAS:
        left = left[:-1]
    if not left or not right:
        return None
    return detokenize(left), detokenize(right)


def split_attribution(caption: str, attributes: list[str]) -> tuple[str, str] | None:
    """(X, Y) of "the A1 X and the A2 Y"; None when the caption has another form."""
    toks = [t.lower() for t in tokenize(caption)]
    if toks.count("and") != 1:
        return None
    k = toks.index("and")
    left, right = toks[:k], toks[k + 1 :]
    a1, a2 = (tokenize(a.lower()) for a in attributes)

    def noun(side: list[str], attr: list[str]) -> str | None:
        if side[:1] not in (["the"], ["a"], ["an"]):
            return None
        rest = side[1:]
        if rest[: len(attr)] != attr or len(rest) == len(attr):
            return None
        return detokenize(rest[len(attr) :])

    x, y = noun(left, a1), noun(right, a2)
    return (x, y) if x and y else None


def build_aro_items(
    out_dir: str | os.PathLike,
    *,
    relation_file: str | os.PathLike | None = None,
    attribution_file: str | os.PathLike | None = None,
    image_root: str | os.PathLike,
    seed: int = 0,
    negation: bool = True,
    check_images: bool = True,
    max_items: int | None = None,
    allow_outside_root: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Write ARO-format items to ``out_dir`` (see the module docstring); returns (items file, info)."""
    if relation_file is None and attribution_file is None:
        raise DataError("nothing to import", fix="give --aro-relation and/or --aro-attribution")
    root = Path(image_root)
    items: list[ProbeItem] = []
    skipped: dict[str, int] = {"conjunction": 0, "negation": 0}
    gen = f"{PROBE_VERSION}+{ARO_VERSION}"

    def image(e: dict[str, Any], where: str) -> str:
        ref = str(e["image_path"])
        # Refused here already (not only when the items are evaluated) if it leaves the image root.
        path = resolve_inside(root, ref, where=where, allow_outside=allow_outside_root)
        if check_images and not path.is_file():
            raise DataError(
                f"image {ref!r} not found under {root}",
                where=where,
                fix="give --image-root, the folder that holds ARO's images",
            )
        return ref

    for kind, path in (("relation", relation_file), ("attribution", attribution_file)):
        if path is None:
            continue
        path = Path(path)
        entries = _entries(path, kind)
        if max_items is not None:
            entries = entries[:max_items]
        for i, e in enumerate(entries):
            where = f"{path}[{i}]"
            ref, crop = image(e, where), _crop(e)
            rng = np.random.default_rng([seed, 0 if kind == "relation" else 1, i])
            true, false = e["true_caption"].strip(), e["false_caption"].strip()
            meta = {
                "aro_index": i,
                "aro_file": path.name,
                **({"image_id": e["image_id"]} if "image_id" in e else {}),
            }
            opts, kinds, c = _choice(rng, [true, false], ["gold", "swap"], 0)
            common = dict(images=[ref], crops=[crop], source="aro", generator=gen, seed=seed)
            if kind == "relation":
                rel = str(e.get("relation_name") or "relation")
                items.append(
                    ProbeItem(
                        id=f"aro-rel-{i:06d}",
                        task="relationship_composition",
                        category=rel,
                        options=opts,
                        correct=c,
                        option_kinds=kinds,
                        meta={**meta, "relation": rel},
                        **common,
                    )
                )
                parts = split_relation(true, rel)
                if parts is None:
                    skipped["conjunction"] += 1
                    continue
                conj = f"{parts[0]} and {parts[1]}"
                if conj.lower() == true.lower():
                    skipped["conjunction"] += 1
                    continue
                items.append(
                    ProbeItem(
                        id=f"aro-relconj-{i:06d}",
                        task="relationship_composition",
                        category="vs_conjunction",
                        options=[true, conj],
                        correct=0,
                        scoring="preference",
                        option_kinds=["relation", "conjunction"],
                        meta={**meta, "relation": rel},
                        **common,
                    )
                )
            else:
                a1, a2 = (str(a) for a in e["attributes"])
                items.append(
                    ProbeItem(
                        id=f"aro-attr-{i:06d}",
                        task="attribute_ownership",
                        category=f"{a1}_{a2}",
                        options=opts,
                        correct=c,
                        option_kinds=kinds,
                        meta={**meta, "attributes": [a1, a2]},
                        **common,
                    )
                )
                if not negation:
                    continue
                xy = split_attribution(true, [a1, a2])
                if xy is None:
                    skipped["negation"] += 1
                    continue
                x, y = xy
                if i % 2 == 0:
                    aff, neg, cat, right = (
                        f"the {x} is {a1} and the {y} is {a2}",
                        f"the {x} is not {a1} and the {y} is not {a2}",
                        "affirmative_true",
                        0,
                    )
                else:
                    aff, neg, cat, right = (
                        f"the {x} is {a2} and the {y} is {a1}",
                        f"the {x} is not {a2} and the {y} is not {a1}",
                        "negated_true",
                        1,
                    )
                o, k, c2 = _choice(rng, [aff, neg], ["affirmative", "negated"], right)
                items.append(
                    ProbeItem(
                        id=f"aro-neg-{i:06d}",
                        task="negation",
                        category=cat,
                        options=o,
                        correct=c2,
                        option_kinds=k,
                        meta={**meta, "attributes": [a1, a2]},
                        **common,
                    )
                )
    if not items:
        raise DataError("no items could be made from the ARO files")
    info = {
        "source": "aro",
        "seed": seed,
        "image_root": str(root.resolve()),
        "skipped": skipped,
        "relation_file": str(relation_file) if relation_file else None,
        "attribution_file": str(attribution_file) if attribution_file else None,
        "labels": "Visual Genome annotations (no truth evaluator); negated_true negation items assume an "
        "object annotated with one attribute does not also have the other",
    }
    return write_probe(out_dir, items, info), info
