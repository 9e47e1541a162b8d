"""Image–text pairs with an explicit relevance map, and loaders for the common formats.

An :class:`ImageTextPairs` holds images (file paths or an in-memory ``uint8`` array), captions, and
``relevance[i]``: the caption ids that describe image ``i`` — any number per image, never derived
from ``caption // 5``.

Loaders (each reports the file and the line or record of a bad entry):

* :func:`load_karpathy` — Karpathy split JSON (``images[].filename/filepath/split/sentences[].raw``),
  as used for Flickr30k and COCO, and as written by :func:`save_karpathy` (ShapesWorld exports);
* :func:`load_coco_captions` — a COCO captions annotation file (``images`` + ``annotations``);
* :func:`load_table` — CSV or JSONL with one (image path, caption) per row;
* :func:`from_shapes` — ShapesWorld examples in memory.

**Relevance on ShapesWorld is truth.** A ShapesWorld caption is true of many images ("there is a
circle"), so counting only an image's own captions as relevant scores right answers as wrong. ShapesWorld
pairs (:func:`from_shapes`, and exports loaded back with their scenes and logical forms) therefore take
``relevance`` from the truth evaluator by default: caption ``c`` is relevant to every image it is true of
(``relevance_kind == "truth"``). The captions written for each image, the labels Karpathy-style real data
has, stay available as :attr:`ImageTextPairs.sources` and by name: ``relevance="source"`` in the
loaders, :meth:`ImageTextPairs.with_relevance`.

:func:`load_pairs` picks the loader from a path. :func:`check_data` runs a loader in collecting mode
and returns every problem instead of stopping at the first (``alignlab data check``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignlab.core.errors import DataError
from alignlab.core.io import atomic_path, read_csv, read_json, read_jsonl, resolve_inside, write_json
from alignlab.data.images import check_image, open_image, stack_images

# How relevance is labelled: "source" (the captions written for an image), "truth" (ShapesWorld: every
# caption the truth evaluator finds true of it).
RELEVANCE_KINDS = ("truth", "source")


@dataclass(frozen=True)
class Problem:
    what: str
    where: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" + (f"; {self.fix}" if self.fix else "")


class Problems:
    """Raise on the first problem (loading) or collect them all (checking)."""

    def __init__(self, collect: bool = False):
        self.collect = collect
        self.items: list[Problem] = []

    def add(self, what: str, where: str, fix: str = "") -> None:
        if not self.collect:
            raise DataError(what, where=where, fix=fix or None)
        self.items.append(Problem(what, where, fix))


def check_relevance(
    relevance: Sequence[Sequence[int]], n_captions: int, n_images: int | None = None, what: str = "relevance"
) -> None:
    """Validate an image -> caption-ids map: every image has >= 1 caption, ids in range, none repeated.

    Also every caption must belong to at least one image (otherwise text-to-image retrieval of it has
    no answer).
    """
    if n_images is not None and len(relevance) != n_images:
        raise DataError(
            f"{what} has {len(relevance)} entries for {n_images} images",
            fix="give one list of caption ids per image",
        )
    if _relevance_valid(relevance, n_captions):
        return  # the checks below, vectorised (truth relevance of 5K images lists ~9M pairs)
    covered = np.zeros(n_captions, dtype=bool)
    for i, ids in enumerate(relevance):
        if len(ids) == 0:
            raise DataError(
                f"image {i} has no relevant caption",
                where=f"{what}[{i}]",
                fix="every image needs at least one caption id",
            )
        for c in ids:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                raise DataError(f"caption id {c!r} is not an integer", where=f"{what}[{i}]")
            if not 0 <= c < n_captions:
                raise DataError(
                    f"caption id {c} is out of range for {n_captions} captions",
                    where=f"{what}[{i}]",
                    fix="caption ids index the caption list, from 0",
                )
        if len(set(ids)) != len(ids):
            raise DataError(f"image {i} lists a caption id twice", where=f"{what}[{i}]")
        covered[list(ids)] = True
    if n_captions and not covered.all():
        j = int(np.flatnonzero(~covered)[0])
        raise DataError(
            f"caption {j} is relevant to no image ({int((~covered).sum())} such captions)",
            where=what,
            fix="every caption must belong to at least one image",
        )


def _relevance_valid(relevance: Sequence[Sequence[int]], n_captions: int) -> bool:
    """True if :func:`check_relevance` would pass (False: let its loop find and word the problem)."""
    try:
        rows = [np.asarray(ids) for ids in relevance]
    except (TypeError, ValueError):
        return False
    if any(r.ndim != 1 or len(r) == 0 or r.dtype.kind not in "iu" for r in rows):
        return False  # empty rows, bools, floats, strings, nested lists: the slow path reports them
    if not rows:
        return n_captions == 0
    flat = np.concatenate(rows).astype(np.int64, copy=False)
    if flat.min() < 0 or flat.max() >= n_captions:
        return False
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), [len(r) for r in rows])
    keys = np.sort(owner * n_captions + flat)
    if (keys[1:] == keys[:-1]).any():
        return False  # a caption listed twice by one image
    return bool(np.bincount(flat, minlength=n_captions).all())


@dataclass
class ImageTextPairs:
    """Images, captions and the explicit relevance map between them."""

    image_ids: list[str]
    captions: list[str]
    relevance: list[list[int]]
    image_paths: list[Path] | None = None
    image_array: np.ndarray | None = None  # uint8 [N, H, W, 3], for in-memory data
    name: str = "pairs"
    caption_meta: list[dict[str, Any]] | None = None  # per caption: e.g. zh translation, logical form
    image_meta: list[dict[str, Any]] | None = None  # per image: e.g. split, ShapesWorld scene
    # "source": relevance[i] = the captions written for image i; "truth": every caption true of image i
    # (ShapesWorld), with the written ones kept in source_relevance.
    relevance_kind: str = "source"
    source_relevance: list[list[int]] | None = None  # image -> the captions written for it (None: relevance)
    _caption_images: list[list[int]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        if (self.image_paths is None) == (self.image_array is None):
            raise ValueError("give exactly one of image_paths and image_array")
        if self.image_paths is not None and len(self.image_paths) != n:
            raise ValueError("image_paths and image_ids differ in length")
        if self.image_array is not None and len(self.image_array) != n:
            raise ValueError("image_array and image_ids differ in length")
        check_relevance(self.relevance, len(self.captions), n, what=f"{self.name} relevance")
        if self.caption_meta is not None and len(self.caption_meta) != len(self.captions):
            raise ValueError("caption_meta and captions differ in length")
        if self.image_meta is not None and len(self.image_meta) != n:
            raise ValueError("image_meta and image_ids differ in length")
        if self.relevance_kind not in RELEVANCE_KINDS:
            raise ValueError(
                f"relevance_kind must be one of {', '.join(RELEVANCE_KINDS)}, got {self.relevance_kind!r}"
            )
        if self.source_relevance is not None:
            check_relevance(
                self.source_relevance, len(self.captions), n, what=f"{self.name} source relevance"
            )
        self._truth_inputs: tuple[Any, Any] | None = None  # parsed scenes and forms, made on first use

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def sources(self) -> list[list[int]]:
        """Image -> the captions written for it (what training draws positives from; source labels)."""
        return self.source_relevance if self.source_relevance is not None else self.relevance

    @property
    def has_truth(self) -> bool:
        """Whether the truth evaluator can label these pairs (every image has a scene, every caption a
        form)."""
        return (
            self.image_meta is not None
            and self.caption_meta is not None
            and all(isinstance(m, dict) and "scene" in m for m in self.image_meta)
            and all(isinstance(m, dict) and "form" in m for m in self.caption_meta)
        )

    def _truth(self) -> tuple[Any, Any]:
        if self._truth_inputs is None:
            from alignlab.data.shapes import Scene, SceneTable, form_from_dict

            if not self.has_truth:
                raise DataError(
                    "these pairs carry no ShapesWorld scenes and logical forms",
                    where=self.name,
                    fix="truth relevance needs ShapesWorld data; use relevance='source'",
                )
            assert self.image_meta is not None and self.caption_meta is not None
            try:
                forms = [form_from_dict(m["form"]) for m in self.caption_meta]
                table = SceneTable([Scene.from_dict(m["scene"]) for m in self.image_meta])
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(
                    f"bad ShapesWorld scene or logical form: {e}",
                    where=self.name,
                    fix="re-export the data with `alignlab data shapes`",
                ) from None
            self._truth_inputs = (table, forms)
        return self._truth_inputs

    def with_relevance(self, kind: str) -> ImageTextPairs:
        """A copy whose ``relevance`` is ``"truth"`` (every caption true of the image) or ``"source"``."""
        if kind not in RELEVANCE_KINDS:
            raise DataError(f"unknown relevance {kind!r}", fix=f"use one of {', '.join(RELEVANCE_KINDS)}")
        if kind == self.relevance_kind:
            return self
        sources = self.sources
        if kind == "source":
            relevance, source_relevance = sources, None
        else:
            from alignlab.data.shapes import truth_relevance

            table, forms = self._truth()
            relevance, source_relevance = truth_relevance(forms, table, own=sources), sources
        return replace(
            self,
            relevance=relevance,
            relevance_kind=kind,
            source_relevance=source_relevance,
            _caption_images=None,
        )

    def known_true(self, images: Sequence[int], captions: Sequence[int]) -> np.ndarray:
        """``[len(images), len(captions)]`` bool: caption known to describe image.

        By the truth evaluator when the pairs carry ShapesWorld scenes and forms (whatever the labelling),
        else by the relevance map. Training uses it so that a true caption is never a negative.
        """
        images = np.asarray(images, dtype=np.int64).reshape(-1)
        captions = np.asarray(captions, dtype=np.int64).reshape(-1)
        if self.has_truth:
            from alignlab.data.shapes import truth_matrix

            table, forms = self._truth()
            return truth_matrix([forms[c] for c in captions], table.take(images)).T
        rows = [set(self.relevance[int(i)]) for i in images]
        return np.array([[int(c) in r for c in captions] for r in rows], dtype=bool).reshape(
            len(images), len(captions)
        )

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    def caption_images(self) -> list[list[int]]:
        """The inverse map: caption id -> image ids it is relevant to."""
        if self._caption_images is None:
            inv: list[list[int]] = [[] for _ in self.captions]
            for i, ids in enumerate(self.relevance):
                for c in ids:
                    inv[c].append(i)
            self._caption_images = inv
        return self._caption_images

    def pairs(self) -> list[tuple[int, int]]:
        """Every (image id, caption id) relevant pair, image-major."""
        return [(i, c) for i, ids in enumerate(self.relevance) for c in ids]

    def load_images(self, indices: Sequence[int] | None = None, size: int | None = None) -> torch.Tensor:
        """Images ``indices`` (default all) as ``uint8`` ``[B, 3, H, W]``, resized to ``size`` if given."""
        idx = list(range(self.n_images)) if indices is None else [int(i) for i in indices]
        if self.image_array is not None:
            return stack_images(self.image_array[idx], size)
        assert self.image_paths is not None
        return stack_images([open_image(self.image_paths[i]) for i in idx], size)

    def materialize(self, size: int) -> ImageTextPairs:
        """A copy with every image decoded and resized to ``size`` × ``size`` in memory."""
        from alignlab.core.progress import progress

        if self.image_array is not None and self.image_array.shape[1:3] == (size, size):
            return self
        chunks = []
        for start in progress(range(0, self.n_images, 256), desc=f"loading {self.name} images", unit="batch"):
            batch = self.load_images(range(start, min(start + 256, self.n_images)), size)
            chunks.append(batch.permute(0, 2, 3, 1).numpy())
        array = np.concatenate(chunks) if chunks else np.zeros((0, size, size, 3), np.uint8)
        return ImageTextPairs(
            self.image_ids,
            self.captions,
            self.relevance,
            image_array=array,
            name=self.name,
            caption_meta=self.caption_meta,
            image_meta=self.image_meta,
            relevance_kind=self.relevance_kind,
            source_relevance=self.source_relevance,
        )

    def subset(self, image_indices: Sequence[int], name: str | None = None) -> ImageTextPairs:
        """The images ``image_indices`` with their captions, caption ids renumbered from 0.

        The subset's captions are those written for its images (:attr:`sources`, in first-seen order);
        under truth relevance each image keeps the ones of them true of it.
        """
        idx = [int(i) for i in image_indices]
        cap_ids: list[int] = []
        new_id: dict[int, int] = {}
        sources = []
        for i in idx:
            row = []
            for c in self.sources[i]:
                if c not in new_id:
                    new_id[c] = len(cap_ids)
                    cap_ids.append(c)
                row.append(new_id[c])
            sources.append(row)
        if self.source_relevance is None:
            relevance, source_relevance = sources, None
        else:
            # Own captions first, then the others true of the image, in the subset's id order
            # (as from_shapes).
            relevance = [
                own + sorted({new_id[c] for c in self.relevance[i] if c in new_id} - set(own))
                for i, own in zip(idx, sources, strict=True)
            ]
            source_relevance = sources
        return ImageTextPairs(
            [self.image_ids[i] for i in idx],
            [self.captions[c] for c in cap_ids],
            relevance,
            relevance_kind=self.relevance_kind,
            source_relevance=source_relevance,
            image_paths=[self.image_paths[i] for i in idx] if self.image_paths is not None else None,
            image_array=self.image_array[idx] if self.image_array is not None else None,
            name=name or self.name,
            caption_meta=[self.caption_meta[c] for c in cap_ids] if self.caption_meta is not None else None,
            image_meta=[self.image_meta[i] for i in idx] if self.image_meta is not None else None,
        )

    def summary(self) -> dict[str, Any]:
        per = [len(r) for r in self.relevance]
        return {
            "name": self.name,
            "images": self.n_images,
            "captions": self.n_captions,
            "relevance": self.relevance_kind,
            "captions_per_image_min": min(per, default=0),
            "captions_per_image_max": max(per, default=0),
            "captions_per_image_mean": round(float(np.mean(per)), 3) if per else 0.0,
        }


# --- loaders ----------------------------------------------------------------------------------------


def _check_paths(
    paths: Sequence[Path], wheres: Sequence[str], problems: Problems, check_images: bool
) -> None:
    for p, where in zip(paths, wheres):
        if check_images:
            msg = check_image(p)
            if msg:
                problems.add(msg, f"{where} ({p})", "fix the image root or remove the entry")
        elif not p.is_file():
            problems.add("image not found", f"{where} ({p})", "fix the image root or remove the entry")


def _inside(root: Path, ref: str | Path, where: str, problems: Problems, allow_outside: bool) -> Path | None:
    """``root / ref`` if it stays inside ``root`` (or ``allow_outside``); else a problem, and None
    (skip it)."""
    try:
        return resolve_inside(root, ref, where=where, allow_outside=allow_outside)
    except DataError as e:
        problems.add(e.what, where, e.fix or "")
        return None


def load_karpathy(
    path: str | os.PathLike,
    split: str | Sequence[str] | None = "test",
    image_root: str | os.PathLike | None = None,
    *,
    problems: Problems | None = None,
    check_images: bool = False,
    check_files: bool = True,
    relevance: str = "auto",
    allow_outside_root: bool = False,
) -> ImageTextPairs:
    """Load a Karpathy split JSON file.

    ``split`` selects ``images[].split`` (a name, a list such as ``["train", "restval"]``, or None for
    all). An image's file is ``image_root / filepath / filename`` (``filepath`` is optional, as in
    Flickr30k's file); ``image_root`` defaults to the JSON file's folder. Extra keys of ShapesWorld
    exports (``zh``, ``form`` per sentence; ``scene`` per image) are kept as metadata.

    ``relevance``: ``"auto"`` (truth relevance when every image has a ShapesWorld scene and every
    sentence a logical form, as in exports; the file's own labels otherwise), ``"truth"`` or ``"source"``.
    """
    path = Path(path)
    problems = problems or Problems()
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(
            "not a Karpathy split file: no 'images' list",
            where=str(path),
            fix="give dataset_coco.json / dataset_flickr30k.json or an alignlab export",
        )
    root = Path(image_root) if image_root is not None else path.parent
    wanted = None if split is None else ({split} if isinstance(split, str) else set(split))
    image_ids, paths, wheres, captions, relevance_ids, cmeta, imeta = [], [], [], [], [], [], []
    seen: dict[str, int] = {}
    for k, img in enumerate(data["images"]):
        where = f"{path}: images[{k}]"
        if not isinstance(img, dict) or "filename" not in img:
            problems.add("image entry has no 'filename'", where, "each image needs a filename")
            continue
        if wanted is not None and img.get("split") not in wanted:
            continue
        filename = str(img["filename"])
        rel_path = Path(str(img.get("filepath", ""))) / filename
        full_path = _inside(root, rel_path, where, problems, allow_outside_root)
        if full_path is None:
            continue
        key = str(rel_path)
        if key in seen:
            problems.add(f"duplicate image {key!r} (also images[{seen[key]}])", where, "remove the duplicate")
            continue
        seen[key] = k
        sents = img.get("sentences")
        if not isinstance(sents, list) or not sents:
            problems.add("image has no sentences", where, "give at least one caption per image")
            continue
        ids = []
        for j, s in enumerate(sents):
            raw = s.get("raw") if isinstance(s, dict) else None
            if raw is None and isinstance(s, dict) and isinstance(s.get("tokens"), list):
                raw = " ".join(s["tokens"])
            if not isinstance(raw, str) or not raw.strip():
                problems.add(
                    "empty caption", f"{where}.sentences[{j}]", "remove the sentence or give its text"
                )
                continue
            ids.append(len(captions))
            captions.append(raw.strip())
            cmeta.append({k2: v for k2, v in s.items() if k2 in ("zh", "form", "family", "sentid")})
        if not ids:
            continue
        image_ids.append(str(img["cocoid"]) if "cocoid" in img else Path(filename).stem)
        paths.append(full_path)
        wheres.append(where)
        relevance_ids.append(ids)
        imeta.append({k2: v for k2, v in img.items() if k2 in ("split", "scene", "cocoid", "imgid")})
    if not image_ids:
        problems.add(
            f"no images in split {split!r}",
            str(path),
            "check the split name (train, val, test, restval) or pass --split all",
        )
    if check_files:
        _check_paths(paths, wheres, problems, check_images)
    _check_unique(image_ids, wheres, problems)
    name = f"{path.stem}:{split if isinstance(split, str) or split is None else '+'.join(split)}"
    return _labelled(
        _build(image_ids, captions, relevance_ids, paths, name, cmeta, imeta, problems),
        relevance,
        where=str(path),
    )


def _labelled(pairs: ImageTextPairs, relevance: str, where: str) -> ImageTextPairs:
    """``pairs`` with the asked labelling (``auto``: truth where the truth evaluator can label them)."""
    if relevance not in (*RELEVANCE_KINDS, "auto"):
        raise DataError(
            f"unknown relevance {relevance!r}", where=where, fix=f"use auto, {', '.join(RELEVANCE_KINDS)}"
        )
    if relevance == "auto":
        relevance = "truth" if pairs.n_images and pairs.has_truth else "source"
    return pairs.with_relevance(relevance) if pairs.n_images else pairs


def _check_unique(image_ids: list[str], wheres: list[str], problems: Problems) -> None:
    first: dict[str, str] = {}
    for iid, where in zip(image_ids, wheres):
        if iid in first:
            problems.add(
                f"duplicate image id {iid!r} (first at {first[iid]})", where, "give each image a unique id"
            )
        else:
            first[iid] = where


def _build(image_ids, captions, relevance, paths, name, cmeta, imeta, problems) -> ImageTextPairs:
    if not image_ids:
        return ImageTextPairs([], [], [], image_paths=[], name=name)
    keep_meta = any(cmeta) if cmeta else False
    keep_imeta = any(imeta) if imeta else False
    return ImageTextPairs(
        image_ids,
        captions,
        relevance,
        image_paths=paths,
        name=name,
        caption_meta=cmeta if keep_meta else None,
        image_meta=imeta if keep_imeta else None,
    )


def load_coco_captions(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    problems: Problems | None = None,
    check_images: bool = False,
    check_files: bool = True,
    allow_outside_root: bool = False,
) -> ImageTextPairs:
    """Load a COCO captions annotation file (``{"images": [...], "annotations": [...]}``)."""
    path = Path(path)
    problems = problems or Problems()
    data = read_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataError(
            "not a COCO captions file: needs 'images' and 'annotations'",
            where=str(path),
            fix="give e.g. annotations/captions_val2017.json",
        )
    for key in ("images", "annotations"):
        if not isinstance(data[key], list):
            raise DataError(
                f"'{key}' is {type(data[key]).__name__}, not a list",
                where=f"{path}: {key}",
                fix=f"give '{key}' as a list of entries (a COCO captions file)",
            )
    root = Path(image_root) if image_root is not None else path.parent
    index: dict[Any, int] = {}
    image_ids, paths, wheres = [], [], []
    for k, img in enumerate(data["images"]):
        where = f"{path}: images[{k}]"
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            problems.add("image entry needs 'id' and 'file_name'", where)
            continue
        if isinstance(img["id"], bool) or not isinstance(img["id"], (int, str)):
            problems.add(
                f"image id {img['id']!r} is not a number or a string", where, "give each image a plain id"
            )
            continue
        if img["id"] in index:
            problems.add(f"duplicate image id {img['id']!r}", where, "give each image a unique id")
            continue
        full_path = _inside(root, str(img["file_name"]), where, problems, allow_outside_root)
        if full_path is None:
            continue
        index[img["id"]] = len(image_ids)
        image_ids.append(str(img["id"]))
        paths.append(full_path)
        wheres.append(where)
    caps: list[list[str]] = [[] for _ in image_ids]
    for k, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{k}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            problems.add("annotation needs 'image_id' and 'caption'", where)
            continue
        if isinstance(ann["image_id"], (list, dict)) or ann["image_id"] not in index:
            problems.add(f"annotation refers to unknown image id {ann['image_id']!r}", where)
            continue
        if not isinstance(ann["caption"], str):  # null or a number: str() would make it a caption
            problems.add(
                f"caption is {type(ann['caption']).__name__}, not text", where, "give the caption as a string"
            )
            continue
        text = ann["caption"].strip()
        if not text:
            problems.add("empty caption", where, "remove the annotation or give its text")
            continue
        caps[index[ann["image_id"]]].append(text)
    captions, relevance = [], []
    keep = []
    for i, cs in enumerate(caps):
        if not cs:
            problems.add("image has no captions", wheres[i], "remove the image or add a caption")
            continue
        relevance.append(list(range(len(captions), len(captions) + len(cs))))
        captions.extend(cs)
        keep.append(i)
    image_ids = [image_ids[i] for i in keep]
    paths = [paths[i] for i in keep]
    wheres = [wheres[i] for i in keep]
    if check_files:
        _check_paths(paths, wheres, problems, check_images)
    return _build(image_ids, captions, relevance, paths, path.stem, None, None, problems)


def load_table(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    image_field: str = "image",
    caption_field: str = "caption",
    problems: Problems | None = None,
    check_images: bool = False,
    check_files: bool = True,
    allow_outside_root: bool = False,
) -> ImageTextPairs:
    """Load (image path, caption) rows from CSV (with a header) or JSONL; rows of one image are grouped."""
    path = Path(path)
    problems = problems or Problems()

    def bad_line(e: DataError) -> None:  # raises when loading, collects when checking
        problems.add(e.what, e.where or str(path), e.fix or "")

    if path.suffix.lower() == ".csv":
        rows = read_csv(path, required=(image_field, caption_field), on_error=bad_line)
    else:
        rows = read_jsonl(path, on_error=bad_line)
    root = Path(image_root) if image_root is not None else path.parent
    index: dict[str, int] = {}
    image_ids: list[str] = []
    paths: list[Path] = []
    wheres: list[str] = []
    captions: list[str] = []
    relevance: list[list[int]] = []
    for rec in rows:
        where = f"{path}:{rec['_line']}"
        image = rec.get(image_field)
        text = rec.get(caption_field)
        if image is None or caption_field not in rec:
            missing = image_field if image is None else caption_field
            problems.add(
                f"record lacks field {missing!r}",
                where,
                f"every record needs {image_field!r} and {caption_field!r}",
            )
            continue
        if not isinstance(text, str) or not text.strip():
            problems.add("empty caption", where, "remove the line or give a caption")
            continue
        image = str(image).strip()
        if not image:
            problems.add("empty image path", where, "give the image's path")
            continue
        if image not in index:
            full_path = _inside(root, image, where, problems, allow_outside_root)
            if full_path is None:
                continue
            index[image] = len(image_ids)
            image_ids.append(image)
            paths.append(full_path)
            wheres.append(where)
            relevance.append([])
        relevance[index[image]].append(len(captions))
        captions.append(text.strip())
    if not image_ids:
        problems.add("no (image, caption) rows", str(path), "the file must have at least one row")
    if check_files:
        _check_paths(paths, wheres, problems, check_images)
    return _build(image_ids, captions, relevance, paths, path.stem, None, None, problems)


def from_shapes(examples: Sequence[Any], name: str = "shapes", relevance: str = "truth") -> ImageTextPairs:
    """ShapesWorld examples (:class:`alignlab.data.shapes.ShapesExample`) as in-memory pairs.

    ``relevance="truth"`` (default): ``relevance[i]`` is every caption true of image ``i`` (its own
    captions first), computed by the truth evaluator; ``"source"``: only the captions written for it.
    """
    from alignlab.data.shapes import form_to_dict, truth_relevance

    if relevance not in RELEVANCE_KINDS:
        raise DataError(f"unknown relevance {relevance!r}", fix=f"use one of {', '.join(RELEVANCE_KINDS)}")

    captions, relevance_ids, cmeta = [], [], []
    for ex in examples:
        ids = []
        for c in ex.captions:
            ids.append(len(captions))
            captions.append(c.en)
            cmeta.append({"zh": c.zh, "family": c.family, "form": form_to_dict(c.form)})
        relevance_ids.append(ids)
    array = np.stack([ex.image for ex in examples]) if examples else np.zeros((0, 64, 64, 3), np.uint8)
    sources = relevance_ids
    truth = None
    if relevance == "truth" and examples:
        truth = truth_relevance(
            [c.form for ex in examples for c in ex.captions], [ex.scene for ex in examples], own=sources
        )
    return ImageTextPairs(
        [ex.image_id for ex in examples],
        captions,
        truth if truth is not None else sources,
        image_array=array,
        name=name,
        caption_meta=cmeta,
        image_meta=[{"split": ex.split, "scene": ex.scene.to_dict()} for ex in examples],
        relevance_kind=relevance if examples else "source",
        source_relevance=sources if truth is not None else None,
    )


def load_pairs(
    path: str | os.PathLike,
    split: str | None = "test",
    image_root: str | os.PathLike | None = None,
    *,
    problems: Problems | None = None,
    check_images: bool = False,
    relevance: str = "auto",
    allow_outside_root: bool = False,
    **kwargs: Any,
) -> ImageTextPairs:
    """Load pairs from a path, choosing the loader by its content.

    * a folder: its ``dataset.json`` (an alignlab/Karpathy export; images relative to the folder);
    * ``*.json``: Karpathy split file (has ``images[].sentences``) or COCO captions (has ``annotations``);
    * ``*.csv`` / ``*.jsonl``: one (image, caption) row per line.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / "dataset.json").is_file():
            raise DataError(
                "folder has no dataset.json",
                where=str(p),
                fix="give the folder written by `alignlab data shapes` or a data file",
            )
        return load_karpathy(
            p / "dataset.json",
            split,
            image_root,
            problems=problems,
            check_images=check_images,
            relevance=relevance,
            allow_outside_root=allow_outside_root,
        )
    suffix = p.suffix.lower()
    if suffix == ".json":
        data = read_json(p)
        if isinstance(data, dict) and "annotations" in data:
            return load_coco_captions(
                p,
                image_root,
                problems=problems,
                check_images=check_images,
                allow_outside_root=allow_outside_root,
            )
        return load_karpathy(
            p,
            split,
            image_root,
            problems=problems,
            check_images=check_images,
            relevance=relevance,
            allow_outside_root=allow_outside_root,
        )
    if suffix in (".csv", ".jsonl"):
        return load_table(
            p,
            image_root,
            problems=problems,
            check_images=check_images,
            allow_outside_root=allow_outside_root,
            **kwargs,
        )
    if not p.exists():
        raise DataError("data not found", where=str(p), fix="check the path")
    raise DataError(
        f"unknown data format {suffix!r}",
        where=str(p),
        fix="give a folder with dataset.json, a .json (Karpathy or COCO), .csv or .jsonl file",
    )


def check_data(
    path: str | os.PathLike,
    split: str | None = None,
    image_root: str | os.PathLike | None = None,
    **kwargs: Any,
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Load ``path`` collecting every problem; returns (summary or None, problems).

    The summary describes the file's own labels (``relevance="source"`` unless asked otherwise).
    """
    problems = Problems(collect=True)
    pairs = None
    kwargs.setdefault("relevance", "source")
    try:
        pairs = load_pairs(path, split, image_root, problems=problems, check_images=True, **kwargs)
    except DataError as e:
        problems.items.append(Problem(e.what, e.where or str(path), e.fix or ""))
    return (pairs.summary() if pairs is not None else None), problems.items


# --- writing ----------------------------------------------------------------------------------------


def save_karpathy(
    out_dir: str | os.PathLike,
    splits: dict[str, ImageTextPairs],
    dataset: str = "alignlab",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write in-memory pairs as PNG files plus a Karpathy split ``dataset.json`` in ``out_dir``.

    Images go to ``out_dir/images/<split>_<n>.png``; ``dataset.json`` is written last and atomically,
    so a folder with a ``dataset.json`` is always complete. Caption and image metadata (ShapesWorld's
    Chinese translation, logical form and scene) are kept as extra keys.
    """
    from PIL import Image

    from alignlab.core.progress import progress

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images = []
    sentid = 0
    for split, pairs in splits.items():
        if pairs.image_array is None:
            raise DataError(f"split {split!r} is not in memory", fix="materialize() it first")
        for i in progress(range(pairs.n_images), desc=f"writing {split} images", unit="img"):
            filename = f"{pairs.image_ids[i]}.png"
            with atomic_path(out / "images" / filename) as tmp:
                Image.fromarray(pairs.image_array[i]).save(tmp, format="PNG")
            sentences = []
            for c in pairs.sources[i]:  # each caption once, with the image it was written for
                sent = {
                    "raw": pairs.captions[c],
                    "tokens": pairs.captions[c].split(),
                    "imgid": len(images),
                    "sentid": sentid,
                }
                if pairs.caption_meta is not None:
                    sent.update({k: v for k, v in pairs.caption_meta[c].items() if k != "sentid"})
                sentences.append(sent)
                sentid += 1
            entry = {
                "filepath": "images",
                "filename": filename,
                "split": split,
                "imgid": len(images),
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
            }
            if pairs.image_meta is not None and "scene" in pairs.image_meta[i]:
                entry["scene"] = pairs.image_meta[i]["scene"]
            images.append(entry)
    doc: dict[str, Any] = {"dataset": dataset, "images": images}
    if extra:
        doc.update(extra)
    write_json(out / "dataset.json", doc, indent=None)
    return out / "dataset.json"
