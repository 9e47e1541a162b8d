"""Leakage between splits: the same caption, image or (caption, image) pair in train and in val or test.

A test record that also occurs in training measures memory, not generalisation. :func:`find_leakage`
compares every later split with every earlier one (``train`` first, then ``val``/``dev``, then ``test``,
then any other split by name) and counts, for each kind of key, the records of the later split whose key
also occurs in the earlier one:

* ``caption`` — the caption text, compared case-insensitively with runs of white space collapsed;
* ``image`` — the image's name (its path relative to the data root, as the data file gives it);
* ``pair`` — both at once: the same caption of the same image.

Two sources are read: a loaded Karpathy-style file with a ``split`` per image
(:func:`records_from_pairs`), and plain parallel text as 3AM releases it (:func:`read_parallel_splits`):
``<split>.en`` (one sentence per line), an aligned ``<split>.zh`` and ``images-<split>.txt`` naming the
image of each line, all optional but ``.en``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.core.errors import DataError
from alignlab.core.io import read_lines

SPLIT_ORDER = ("train", "restval", "val", "dev", "valid", "test")
KINDS = ("caption", "image", "pair")


@dataclass
class SplitRecords:
    """The records of one split: a caption, the image's name (or None) and where each record is."""

    name: str
    captions: list[str] = field(default_factory=list)
    images: list[str | None] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)

    def add(self, caption: str, image: str | None, where: str) -> None:
        self.captions.append(caption)
        self.images.append(image)
        self.wheres.append(where)

    def keys(self, kind: str) -> list[Any]:
        caps = [normalize_caption(c) for c in self.captions]
        if kind == "caption":
            return caps
        if kind == "image":
            return list(self.images)
        return [(c, i) if i is not None else None for c, i in zip(caps, self.images)]


def normalize_caption(text: str) -> str:
    """Case-folded, with runs of white space collapsed: "A dog  runs." and "a dog runs." are one caption."""
    return " ".join(text.casefold().split())


def _rank(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


@dataclass
class Leak:
    """Records of split ``later`` whose ``kind`` key also occurs in split ``earlier``."""

    later: str
    earlier: str
    kind: str
    records: int  # records of ``later`` with a shared key
    distinct: int  # distinct shared keys
    later_records: int  # all records of ``later`` that have this kind of key
    example: str  # where the first shared record is, in both splits

    def __str__(self) -> str:
        what = {"caption": "captions", "image": "images", "pair": "(caption, image) pairs"}[self.kind]
        return (
            f"{self.records} of {self.later_records} {self.later} records repeat {self.earlier} {what} "
            f"({self.distinct} distinct; first: {self.example})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "later": self.later,
            "earlier": self.earlier,
            "kind": self.kind,
            "records": self.records,
            "distinct": self.distinct,
            "later_records": self.later_records,
            "example": self.example,
        }


def find_leakage(splits: Mapping[str, SplitRecords]) -> list[Leak]:
    """Every (later split, earlier split, kind) with at least one shared key, in split order."""
    names = sorted(splits, key=_rank)
    out: list[Leak] = []
    for j, later in enumerate(names):
        for earlier in names[:j]:
            a, b = splits[earlier], splits[later]
            for kind in KINDS:
                first_seen: dict[Any, int] = {}
                for k, key in enumerate(a.keys(kind)):
                    if key is not None:
                        first_seen.setdefault(key, k)
                hits = [
                    (k, key) for k, key in enumerate(b.keys(kind)) if key is not None and key in first_seen
                ]
                if not hits:
                    continue
                k0, key0 = hits[0]
                n_keys = sum(key is not None for key in b.keys(kind))
                out.append(
                    Leak(
                        later,
                        earlier,
                        kind,
                        len(hits),
                        len({key for _, key in hits}),
                        n_keys,
                        f"{b.wheres[k0]} = {a.wheres[first_seen[key0]]}",
                    )
                )
    return out


def records_from_pairs(pairs: Any) -> dict[str, SplitRecords]:
    """Split records of loaded pairs whose images carry a ``split`` (Karpathy files); {} when none do.

    Images are named by their path relative to the data root (or their id for in-memory data), and each
    image's own captions (``sources``) are its records.
    """
    if not pairs.image_meta or not all(isinstance(m, dict) and m.get("split") for m in pairs.image_meta):
        return {}
    root = _common_root(pairs.image_paths) if pairs.image_paths is not None else None
    out: dict[str, SplitRecords] = {}
    for i, caps in enumerate(pairs.sources):
        split = str(pairs.image_meta[i]["split"])
        name = pairs.image_ids[i]
        if pairs.image_paths is not None:
            name = (
                os.path.relpath(pairs.image_paths[i], root) if root is not None else str(pairs.image_paths[i])
            )
        rec = out.setdefault(split, SplitRecords(split))
        for c in caps:
            rec.add(pairs.captions[c], name, f"image {pairs.image_ids[i]!r}")
    return out


def _common_root(paths: Any) -> str | None:
    try:
        return os.path.commonpath([str(p) for p in paths]) if paths else None
    except ValueError:  # mixed absolute and relative paths
        return None


def parallel_folder(spec: Path) -> Path | None:
    """The folder of a parallel-text data set given as the folder or one of its ``.en``/``.zh`` files."""
    if spec.is_file() and spec.suffix.lower() in (".en", ".zh"):
        return spec.parent
    if spec.is_dir() and not (spec / "dataset.json").is_file() and any(spec.glob("*.en")):
        return spec
    return None


def read_parallel_splits(folder: Path, problems: Any) -> tuple[dict[str, SplitRecords], dict[str, Any]]:
    """Read every ``<split>.en`` of ``folder`` with its ``<split>.zh`` and ``images-<split>.txt``.

    Empty lines, bad UTF-8 and files of different lengths are added to ``problems`` (an object with
    ``add(what, where, fix)``); returns the split records and a summary.
    """
    splits: dict[str, SplitRecords] = {}
    summary: dict[str, Any] = {"format": "parallel text", "folder": str(folder), "splits": {}}
    for en_path in sorted(folder.glob("*.en"), key=lambda p: _rank(p.stem)):
        split = en_path.stem
        en = _lines(en_path, problems)
        if en is None:
            continue
        zh_path, img_path = folder / f"{split}.zh", folder / f"images-{split}.txt"
        zh = _lines(zh_path, problems) if zh_path.is_file() else None
        images = _lines(img_path, problems) if img_path.is_file() else None
        for other_path, other in ((zh_path, zh), (img_path, images)):
            if other is not None and len(other) != len(en):
                problems.add(
                    f"{other_path.name} has {len(other)} lines, {en_path.name} has {len(en)}",
                    f"{other_path}:{min(len(other), len(en)) + 1}",
                    "the files of a split must be aligned line by line",
                )
        rec = SplitRecords(split)
        for k, text in enumerate(en):
            image = (
                images[k].strip() if images is not None and k < len(images) and images[k].strip() else None
            )
            rec.add(text, image, f"{en_path.name}:{k + 1}")
        splits[split] = rec
        summary["splits"][split] = {
            "lines": len(en),
            "zh": zh is not None,
            "images": images is not None,
            "distinct_images": len({i for i in rec.images if i is not None}),
        }
    if not splits:
        problems.add(
            "no <split>.en file", str(folder), "a parallel data set has train.en (and val.en, test.en)"
        )
    return splits, summary


def _lines(path: Path, problems: Any) -> list[str] | None:
    try:
        lines = read_lines(path, allow_empty=True)
    except DataError as e:
        problems.add(e.what, e.where or str(path), e.fix or "")
        return None
    for k, line in enumerate(lines, 1):
        if not line.strip():
            problems.add(
                "empty line", f"{path}:{k}", "remove the line (and its partner lines) or give its text"
            )
    return lines
