"""Probe items: the frozen JSONL format that builders write and the evaluator reads.

A probe set is a folder::

    items.jsonl     one JSON object per item (the fields below)
    probe.json      what built it: generator version, seed, config, counts, and the content hash
    images/         PNG files the items refer to (ShapesWorld builds; ARO and caption files refer elsewhere)

An item is one multiple-choice question about an image (``format: "choice"``) or one Winoground-style
counterfactual pair (``format: "pair"``: two images, two captions, caption ``correct[k]`` is the one true
of image ``k``):

==================  ==========================================================================================
field               meaning
==================  ==========================================================================================
``id``              unique name of the item
``task``            one of :data:`TASKS`
``category``        the sub-category (perturbation or construction); categories under 25 items are reported
                    only inside their task's total
``format``          ``"choice"`` (default) or ``"pair"``
``scoring``         ``"accuracy"`` (default: exactly one option is right) or ``"preference"`` (every option
                    may be true; the share of items on which the model prefers option ``correct`` is
                    reported, not an accuracy — e.g. "X is left of Y" vs the also-true "X and Y")
``images``          image references: paths relative to the folder of ``items.jsonl`` (or absolute)
``options``         the candidate captions (at least 2)
``correct``         choice: index of the right option; pair: ``[c0, c1]``, the option true of each image
``option_kinds``    per option, what it is (``gold``, ``shuffle_content``, ``swap``…): says which
                    distractor won
``truth``           ``truth[k][j]``: whether option ``j`` is true of image ``k`` according to the ShapesWorld
                    truth evaluator (null when the source has no evaluator, e.g. ARO)
``crops``           per image, an optional ``[x, y, w, h]`` box to crop before scoring (ARO)
``image_sha256``    per image, the SHA-256 of the file (checked when present)
``source``          ``shapes`` | ``aro`` | ``captions``
``generator``       generator version (:data:`PROBE_VERSION` plus the source's version)
``seed``            the seed the item was generated with
``meta``            anything else (scene graphs of ShapesWorld items, relation names of ARO items…)
==================  ==========================================================================================

The *content hash* is the SHA-256 of the items in canonical JSON (sorted keys, one per line); it is
stored in ``probe.json`` at build time, checked at load time, and written into every result, so a
result names exactly the items it was computed on.

>>> item = ProbeItem(id="x", task="negation", category="affirmative_true", images=["a.png"],
...                  options=["the circle is red", "the circle is not red"], correct=0)
>>> validate_item(item, "items.jsonl:1")
>>> len(items_hash([item]))
64
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from alignlab.core.errors import DataError
from alignlab.core.io import read_json, read_jsonl, resolve_inside, write_json, write_jsonl

PROBE_VERSION = "alignlab-probe-1"
TASKS = ("semantic_structure", "negation", "attribute_ownership", "relationship_composition")
TASK_TITLES = {
    "semantic_structure": "Semantic structure (word order)",
    "negation": "Negation logic",
    "attribute_ownership": "Attribute ownership",
    "relationship_composition": "Relationship composition",
}
FORMATS = ("choice", "pair")
SCORINGS = ("accuracy", "preference")
MIN_CATEGORY_ITEMS = 25  # categories with fewer items are not broken out (as ARO's attribution table does)
ITEMS_FILE = "items.jsonl"
MANIFEST_FILE = "probe.json"


@dataclass
class ProbeItem:
    """One probe question (see the module docstring for every field)."""

    id: str
    task: str
    category: str
    images: list[str]
    options: list[str]
    correct: Any  # int (choice) or [int, int] (pair)
    format: str = "choice"
    scoring: str = "accuracy"
    option_kinds: list[str] | None = None
    truth: list[list[bool]] | None = None
    crops: list[list[float] | None] | None = None
    image_sha256: list[str] | None = None
    source: str = "shapes"
    generator: str = PROBE_VERSION
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    line: int | None = field(default=None, compare=False)  # line in the file it was read from (not written)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("line")
        return d

    def kind(self, j: int) -> str:
        """What option ``j`` is (``option_kinds[j]``; ``gold``/``distractor`` when the item does not say)."""
        if self.option_kinds is not None:
            return self.option_kinds[j]
        if self.format == "choice":
            return "gold" if j == self.correct else "distractor"
        return f"caption{j}"


_FIELDS = {f.name for f in fields(ProbeItem)} - {"line"}
REQUIRED = ("id", "task", "category", "images", "options", "correct")


def _fail(what: str, item_id: Any, where: str, fix: str | None = None) -> None:
    raise DataError(f"item {item_id!r}: {what}", where=where, fix=fix)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def validate_item(item: ProbeItem, where: str) -> None:
    """Check one item's structure; a problem is a :class:`DataError` naming the item and ``where``."""
    iid = item.id
    if not isinstance(iid, str) or not iid:
        _fail("id must be a non-empty string", iid, where)
    if item.task not in TASKS:
        _fail(f"unknown task {item.task!r}", iid, where, f"use one of: {', '.join(TASKS)}")
    if not isinstance(item.category, str) or not item.category:
        _fail("category must be a non-empty string", iid, where)
    if item.format not in FORMATS:
        _fail(f"unknown format {item.format!r}", iid, where, "use 'choice' or 'pair'")
    if item.scoring not in SCORINGS:
        _fail(f"unknown scoring {item.scoring!r}", iid, where, "use 'accuracy' or 'preference'")
    opts = item.options
    if not isinstance(opts, list) or len(opts) < 2:
        n = len(opts) if isinstance(opts, list) else type(opts).__name__
        _fail(
            f"needs at least 2 options, has {n}",
            iid,
            where,
            "give the true caption and at least one distractor",
        )
    for j, o in enumerate(opts):
        if not isinstance(o, str) or not o.strip():
            _fail(f"option {j} is empty or not a string", iid, where)
    imgs = item.images
    if not isinstance(imgs, list) or not imgs or not all(isinstance(p, str) and p for p in imgs):
        _fail("images must be a non-empty list of paths", iid, where)
    if item.format == "choice":
        if len(imgs) != 1:
            _fail(f"a choice item has exactly one image, found {len(imgs)}", iid, where)
        if not _is_int(item.correct) or not 0 <= item.correct < len(opts):
            _fail(
                f"correct index {item.correct!r} is out of range for {len(opts)} options",
                iid,
                where,
                f"give an integer from 0 to {len(opts) - 1}",
            )
    else:
        if len(imgs) != 2 or len(opts) != 2:
            _fail("a pair item has exactly two images and two options", iid, where)
        c = item.correct
        if not isinstance(c, list) or len(c) != 2 or not all(_is_int(x) for x in c) or sorted(c) != [0, 1]:
            _fail(
                f"correct {c!r} of a pair item must be [0, 1] or [1, 0]",
                iid,
                where,
                "correct[k] is the option true of image k",
            )
        if item.scoring != "accuracy":
            _fail("pair items are scored by accuracy (text/image/group)", iid, where)
    if item.option_kinds is not None and (
        not isinstance(item.option_kinds, list) or len(item.option_kinds) != len(opts)
    ):
        _fail("option_kinds must list one kind per option", iid, where)
    if item.truth is not None:
        t = item.truth
        if (
            not isinstance(t, list)
            or len(t) != len(imgs)
            or not all(isinstance(r, list) and len(r) == len(opts) for r in t)
        ):
            _fail("truth must be a [images][options] table of booleans", iid, where)
        correct = [item.correct] if item.format == "choice" else item.correct
        for k, c in enumerate(correct):
            if not t[k][c]:
                _fail(f"the correct option is labelled false for image {k}", iid, where)
            if item.scoring == "accuracy" and sum(bool(x) for x in t[k]) != 1:
                _fail(
                    f"an accuracy item needs exactly one true option per image, image {k} has "
                    f"{sum(bool(x) for x in t[k])}",
                    iid,
                    where,
                    "use scoring 'preference' or fix the options",
                )
    if item.crops is not None and (not isinstance(item.crops, list) or len(item.crops) != len(imgs)):
        _fail("crops must give one box (or null) per image", iid, where)
    if item.image_sha256 is not None and (
        not isinstance(item.image_sha256, list) or len(item.image_sha256) != len(imgs)
    ):
        _fail("image_sha256 must give one hash per image", iid, where)


def item_from_record(rec: dict[str, Any], where: str) -> ProbeItem:
    """A validated :class:`ProbeItem` from a JSON record (``_line`` is dropped)."""
    rec = {k: v for k, v in rec.items() if k != "_line"}
    iid = rec.get("id")
    unknown = sorted(set(rec) - _FIELDS)
    if unknown:
        _fail(
            f"unknown field(s) {', '.join(map(repr, unknown))}",
            iid,
            where,
            f"valid fields: {', '.join(sorted(_FIELDS))}",
        )
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        _fail(f"lacks field(s) {', '.join(map(repr, missing))}", iid, where)
    item = ProbeItem(**rec)
    validate_item(item, where)
    return item


def canonical_line(item: ProbeItem) -> str:
    return json.dumps(item.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def items_hash(items: Iterable[ProbeItem]) -> str:
    """SHA-256 of the items in canonical JSON (independent of key order and whitespace in the file)."""
    h = hashlib.sha256()
    for it in items:
        h.update(canonical_line(it).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def counts(items: Iterable[ProbeItem]) -> dict[str, dict[str, int]]:
    """``{task: {category: n}}``."""
    c: Counter[tuple[str, str]] = Counter((it.task, it.category) for it in items)
    out: dict[str, dict[str, int]] = {}
    for (t, cat), n in sorted(c.items()):
        out.setdefault(t, {})[cat] = n
    return out


def write_probe(
    out_dir: str | os.PathLike,
    items: Sequence[ProbeItem],
    info: dict[str, Any] | None = None,
    images: dict[str, bytes] | None = None,
) -> Path:
    """Write a probe folder: ``images/`` (from ``images``: relative path -> bytes), ``items.jsonl``,
    ``probe.json``.

    ``probe.json`` is written last, so a folder that has it is complete (the images are written plainly,
    without a sync each: thousands of small files; the items and their hash vouch for them). Returns the
    items file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = Counter(it.id for it in items)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise DataError(f"duplicate item id {dup[0]!r}", fix="give every item a unique id")
    for k, it in enumerate(items):
        validate_item(it, f"item {k}")
    for rel, data in (images or {}).items():
        p = out / rel
        if not p.exists() or p.read_bytes() != data:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    write_jsonl(out / ITEMS_FILE, (it.to_dict() for it in items))
    manifest = {
        "format": "alignlab-probe-items",
        "version": PROBE_VERSION,
        "n_items": len(items),
        "sha256": items_hash(items),
        "counts": counts(items),
        **(info or {}),
    }
    write_json(out / MANIFEST_FILE, manifest)
    return out / ITEMS_FILE


@dataclass
class ProbeSet:
    """Items read from a file, with the folder their image paths are relative to."""

    items: list[ProbeItem]
    path: Path  # the items file
    root: Path  # folder that relative image paths start from
    sha256: str
    manifest: dict[str, Any] = field(default_factory=dict)
    allow_outside_root: bool = False  # let image paths leave ``root`` (absolute, ``..``)

    def where(self, item: ProbeItem) -> str:
        return f"{self.path}:{item.line}" if item.line is not None else str(self.path)

    @property
    def name(self) -> str:
        return f"probe:{self.sha256[:12]}"


def load_probe(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    verify_hash: bool = True,
    check_images: bool = True,
    allow_outside_root: bool = False,
) -> ProbeSet:
    """Read and validate a probe set (a folder with ``items.jsonl`` or the file itself).

    Every problem is a :class:`DataError` naming the item and ``file:line``: a bad record, fewer than 2
    options, a correct index out of range, a missing image (when ``check_images``), a duplicate id,
    and — when ``verify_hash`` and ``probe.json`` is there — items that changed since they were built.
    """
    p = Path(path)
    items_file = p / ITEMS_FILE if p.is_dir() else p
    if not items_file.exists():
        raise DataError(
            "probe items not found",
            where=str(items_file),
            fix="build them first: alignlab probe build --source shapes --out <folder>",
        )
    records = read_jsonl(items_file)
    items: list[ProbeItem] = []
    seen: dict[str, int] = {}
    for rec in records:
        where = f"{items_file}:{rec['_line']}"
        it = item_from_record(rec, where)
        it.line = rec["_line"]
        if it.id in seen:
            _fail(f"duplicate id (first on line {seen[it.id]})", it.id, where, "give every item a unique id")
        seen[it.id] = it.line
        items.append(it)
    if not items:
        raise DataError("no probe items in the file", where=str(items_file))
    digest = items_hash(items)
    manifest: dict[str, Any] = {}
    mpath = items_file.parent / MANIFEST_FILE
    if mpath.exists():
        manifest = read_json(mpath)
        if verify_hash and manifest.get("sha256") not in (None, digest):
            raise DataError(
                f"the items changed since they were built (hash {digest[:12]}, probe.json says "
                f"{str(manifest.get('sha256'))[:12]})",
                where=str(items_file),
                fix="rebuild the probe set, or pass --no-verify-hash to evaluate the edited items",
            )
    if image_root is not None:
        root = Path(image_root)
    elif manifest.get("image_root"):  # ARO builds reference images in the user's ARO folder
        root = Path(manifest["image_root"])
        root = root if root.is_absolute() else items_file.parent / root
    else:
        root = items_file.parent
    ps = ProbeSet(items, items_file, root, digest, manifest, allow_outside_root)
    for it in items:
        for ref in it.images:
            # An item's image must stay inside the image root (refused otherwise, naming the line).
            image_path = resolve_image(ps, ref, ps.where(it))
            if check_images and not image_path.is_file():
                _fail(
                    f"image {ref!r} not found",
                    it.id,
                    ps.where(it),
                    "check the image root (--image-root) or rebuild the probe set",
                )
    return ps


def resolve_image(ps: ProbeSet, ref: str, where: str | None = None) -> Path:
    """The file of image ``ref`` of ``ps``; a :class:`DataError` if it leaves the image root (unless
    allowed)."""
    return resolve_inside(ps.root, ref, where=where or str(ps.path), allow_outside=ps.allow_outside_root)


def load_item_images(ps: ProbeSet, item: ProbeItem) -> list[Image.Image]:
    """The item's images as RGB Pillow images (cropped when the item gives a box; hashes checked)."""
    out = []
    for k, ref in enumerate(item.images):
        path = resolve_image(ps, ref, ps.where(item))
        if not path.is_file():
            _fail(
                f"image {ref!r} not found",
                item.id,
                ps.where(item),
                "check the image root (--image-root) or rebuild the probe set",
            )
        data = path.read_bytes()
        if item.image_sha256 is not None and hashlib.sha256(data).hexdigest() != item.image_sha256[k]:
            _fail(
                f"image {ref!r} differs from the one the item was built with (SHA-256 mismatch)",
                item.id,
                ps.where(item),
                "rebuild the probe set; frozen items must keep their images",
            )
        try:
            import io

            with Image.open(io.BytesIO(data)) as im:
                img = im.convert("RGB")
        except Exception as e:  # Pillow raises several types for unreadable files
            _fail(f"cannot read image {ref!r}: {e}", item.id, ps.where(item), "replace the file")
        box = item.crops[k] if item.crops is not None else None
        if box is not None:
            x, y, w, h = (float(v) for v in box)
            if w <= 0 or h <= 0:
                _fail(f"crop box {box} of image {k} is empty", item.id, ps.where(item))
            img = img.crop((round(x), round(y), round(x + w), round(y + h)))
        out.append(img)
    return out
