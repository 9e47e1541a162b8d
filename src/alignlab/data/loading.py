"""Data at real size: images decoded on demand by a ``torch.utils.data.DataLoader``, from files, a Hugging
Face ``datasets`` dataset or webdataset-style tar shards.

Training never holds a split's images in memory: :class:`ImageBatchLoader` serves batch ``index`` of
``epoch`` (the indices come from the task's pure ``(seed, epoch, index)`` batching) through a DataLoader
whose workers open, decode and resize the images of the next batches. Memory is bounded by
``batch × (1 + num_workers × prefetch_factor)`` images, not by the split. The position (epoch, next
batch) is the sampler's state: it goes into the training checkpoint, and a restarted loader begins on
exactly that batch, so a resumed run sees the batches an uninterrupted one would (decoding is
deterministic; 0, 1 or 2 workers give identical batches).

Where images and captions come from (:func:`open_image_text` picks by the path):

* files listed by a Karpathy JSON, COCO captions, CSV or JSONL (:func:`alignlab.data.pairs.load_pairs`);
* a Hugging Face dataset (:func:`load_hf`): a ``datasets.Dataset`` / ``DatasetDict`` object or a folder
  written by ``save_to_disk``, with an image column and a caption column (a string or a list of strings
  per row); rows that share an image id column are one image with several captions;
* tar shards in the webdataset layout (:func:`load_tar_shards`): members ``<key>.jpg|png|webp`` plus
  ``<key>.txt`` (one caption) or ``<key>.json`` (``caption`` or ``captions``). Read with the standard
  :mod:`tarfile` module into an index of (shard, offset, size), so any image can be read at random: the
  same exact-resume batching works, with workers, without webdataset's streaming-only order.

Each returns :class:`StreamingPairs` (image ids, captions, the explicit relevance map, an image source).
:meth:`StreamingPairs.to_pairs` decodes one split into an in-memory :class:`ImageTextPairs` at a size,
for evaluation (bounded by the evaluation split, e.g. 1,000 test images).
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from alignlab.core.errors import AlignlabError, DataError, DependencyError
from alignlab.data.images import open_image, pil_to_uint8
from alignlab.data.pairs import ImageTextPairs, check_relevance, load_pairs

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
ID_COLUMNS = ("image_id", "img_id", "imgid", "cocoid", "filename", "file_name")

# --- image sources: open image i on demand ---------------------------------------------------------------


class FileImages:
    """Images in files (paths as an :class:`ImageTextPairs` lists them)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def open(self, i: int) -> Image.Image:
        return open_image(self.paths[i])


class ArrayImages:
    """Images already in memory as ``uint8 [N, H, W, 3]`` (e.g. ShapesWorld)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def open(self, i: int) -> Image.Image:
        return Image.fromarray(self.array[i])


def _decode(data: bytes, where: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read image: {e}", where=where, fix="replace or remove the sample") from None


class HFImages:
    """The image column of a Hugging Face dataset (decoded PIL images, ``{"bytes", "path"}`` dicts or
    paths)."""

    def __init__(self, dataset: Any, column: str, rows: Sequence[int], name: str = "dataset"):
        self.dataset = dataset.select_columns([column]) if hasattr(dataset, "select_columns") else dataset
        self.column = column
        self.rows = [int(r) for r in rows]
        self.name = name

    def __len__(self) -> int:
        return len(self.rows)

    def open(self, i: int) -> Image.Image:
        row = self.rows[i]
        value = self.dataset[row][self.column]
        where = f"{self.name}[{row}].{self.column}"
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, dict) and value.get("bytes"):
            return _decode(value["bytes"], where)
        if isinstance(value, dict) and value.get("path"):
            return open_image(value["path"])
        if isinstance(value, (bytes, bytearray)):
            return _decode(bytes(value), where)
        if isinstance(value, str):
            return open_image(value)
        raise DataError(
            f"image column holds {type(value).__name__}, not an image",
            where=where,
            fix="give an Image feature, image bytes or a path",
        )


class TarImages:
    """Images inside uncompressed tar shards, read at random by (shard, offset, size)."""

    def __init__(self, entries: Sequence[tuple[str, int, int, str]]):
        self.entries = list(entries)  # (shard path, data offset, size, member name)

    def __len__(self) -> int:
        return len(self.entries)

    def open(self, i: int) -> Image.Image:
        shard, offset, size, member = self.entries[i]
        with open(shard, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        return _decode(data, f"{shard}:{member}")


# --- pairs whose images stay on disk ---------------------------------------------------------------------


@dataclass
class StreamingPairs:
    """Captions and the explicit relevance map in memory; images opened one at a time from ``images``."""

    image_ids: list[str]
    captions: list[str]
    relevance: list[list[int]]
    images: Any  # FileImages | ArrayImages | HFImages | TarImages: len() and open(i)
    name: str = "pairs"

    def __post_init__(self) -> None:
        if len(self.images) != len(self.image_ids):
            raise ValueError("images and image_ids differ in length")
        check_relevance(
            self.relevance, len(self.captions), len(self.image_ids), what=f"{self.name} relevance"
        )

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    def load_images(self, indices: Sequence[int] | None = None, size: int | None = None) -> torch.Tensor:
        """Images ``indices`` decoded at ``size`` as ``uint8 [B, 3, size, size]`` (files differ in size)."""
        if size is None:
            raise DataError(
                "images read from files, a dataset or shards need a size to be stacked",
                fix="pass size=..., or use to_pairs(size) for a whole split",
            )
        idx = list(range(self.n_images)) if indices is None else [int(i) for i in indices]
        if not idx:
            return torch.zeros(0, 3, size, size, dtype=torch.uint8)
        return torch.stack([pil_to_uint8(self.images.open(i), size) for i in idx])

    def to_pairs(self, size: int, num_workers: int = 0) -> ImageTextPairs:
        """Every image decoded at ``size`` into an in-memory :class:`ImageTextPairs`
        (for evaluation splits)."""
        from alignlab.core.progress import progress

        dataset = DecodedImages(self.images, size)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=256, num_workers=num_workers, collate_fn=_stack, worker_init_fn=_worker_init
        )
        array = np.zeros((self.n_images, size, size, 3), np.uint8)
        start = 0
        for batch in progress(loader, desc=f"loading {self.name} images", unit="batch"):
            if isinstance(batch, _Failed):
                batch.reraise()
            array[start : start + len(batch)] = batch.permute(0, 2, 3, 1).numpy()
            start += len(batch)
        return ImageTextPairs(
            list(self.image_ids),
            list(self.captions),
            [list(r) for r in self.relevance],
            image_array=array,
            name=self.name,
        )

    def materialize(self, size: int) -> ImageTextPairs:
        """:meth:`to_pairs`, under the name :class:`ImageTextPairs` uses for the same thing."""
        return self.to_pairs(size)

    # Like path-backed ImageTextPairs: nothing is in memory, so code that checks these materializes first.
    image_array = None
    image_paths = None

    def subset(self, image_indices: Sequence[int], name: str | None = None) -> StreamingPairs:
        idx = [int(i) for i in image_indices]
        new_id: dict[int, int] = {}
        caps: list[str] = []
        relevance = []
        for i in idx:
            row = []
            for c in self.relevance[i]:
                if c not in new_id:
                    new_id[c] = len(caps)
                    caps.append(self.captions[c])
                row.append(new_id[c])
            relevance.append(row)
        return StreamingPairs(
            [self.image_ids[i] for i in idx], caps, relevance, _Subset(self.images, idx), name or self.name
        )


class _Subset:
    def __init__(self, images: Any, idx: list[int]):
        self.images, self.idx = images, idx

    def __len__(self) -> int:
        return len(self.idx)

    def open(self, i: int) -> Image.Image:
        return self.images.open(self.idx[i])


def streaming(pairs: ImageTextPairs | StreamingPairs) -> StreamingPairs:
    """The same pairs with images opened on demand (files stay files; an in-memory array is indexed)."""
    if isinstance(pairs, StreamingPairs):
        return pairs
    images: Any = (
        FileImages(pairs.image_paths) if pairs.image_paths is not None else ArrayImages(pairs.image_array)
    )
    return StreamingPairs(pairs.image_ids, pairs.captions, pairs.relevance, images, pairs.name)


# --- Hugging Face datasets --------------------------------------------------------------------------------


def _split_aliases(split: str) -> list[str]:
    aliases = {
        "val": ["val", "validation", "dev"],
        "validation": ["validation", "val", "dev"],
        "dev": ["dev", "validation", "val"],
    }
    return aliases.get(split, [split])


def load_hf(
    source: Any,
    split: str | None = None,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    id_column: str | None = None,
    name: str | None = None,
) -> StreamingPairs:
    """Pairs from a Hugging Face dataset: an object or a ``save_to_disk`` folder.

    ``split`` picks a split of a ``DatasetDict`` (``val`` also finds ``validation``), or the rows whose
    ``split`` column has that value (Karpathy-style single tables); None takes every row. A caption cell
    is a string or a list of strings. Rows with the same ``id_column`` value (default: the first of
    ``image_id, img_id, imgid, cocoid, filename, file_name`` the table has) are one image.
    """
    try:
        import datasets
    except ImportError:
        raise DependencyError(
            "reading a Hugging Face dataset needs the datasets package", fix="pip install 'alignlab[hf]'"
        ) from None
    where = str(source) if isinstance(source, (str, os.PathLike)) else (name or "dataset")
    ds = source
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_dir():
            raise DataError(
                "dataset folder not found", where=where, fix="give a folder written by save_to_disk"
            )
        try:
            ds = datasets.load_from_disk(str(source))
        except (FileNotFoundError, ValueError) as e:
            raise DataError(
                f"not a saved Hugging Face dataset: {e}",
                where=where,
                fix="give a folder written by Dataset.save_to_disk",
            ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            raise DataError(
                f"the dataset has splits {sorted(ds)}; choose one", where=where, fix="give a split"
            )
        found = next((s for s in _split_aliases(split) if s in ds), None)
        if found is None:
            raise DataError(
                f"no split {split!r} (splits: {', '.join(sorted(ds))})",
                where=where,
                fix="give one of the dataset's splits",
            )
        ds, where = ds[found], f"{where}[{found}]"
        split = None
    for col in (image_column, caption_column):
        if col not in ds.column_names:
            raise DataError(
                f"no column {col!r} (columns: {', '.join(ds.column_names)})",
                where=where,
                fix="name the image and caption columns",
            )
    rows = list(range(len(ds)))
    if split is not None and split != "all":
        if "split" not in ds.column_names:
            raise DataError(
                f"cannot select split {split!r}: the dataset has no splits and no 'split' column",
                where=where,
                fix="leave the split out (every row) or save one dataset per split",
            )
        values = ds["split"]
        rows = [r for r in rows if values[r] in _split_aliases(split)]
    if id_column is None:
        id_column = next((c for c in ID_COLUMNS if c in ds.column_names), None)
    elif id_column not in ds.column_names:
        raise DataError(
            f"no id column {id_column!r}", where=where, fix="name an existing column or leave it out"
        )
    caption_cells = ds[caption_column]
    ids = ds[id_column] if id_column else None
    image_ids: list[str] = []
    image_rows: list[int] = []
    captions: list[str] = []
    relevance: list[list[int]] = []
    index: dict[str, int] = {}
    for r in rows:
        cell = caption_cells[r]
        texts = [cell] if isinstance(cell, str) else list(cell) if isinstance(cell, (list, tuple)) else None
        if texts is None or not all(isinstance(t, str) for t in texts):
            raise DataError(
                f"caption is {type(cell).__name__}, not text",
                where=f"{where}[{r}].{caption_column}",
                fix="give a string or a list of strings",
            )
        texts = [t.strip() for t in texts if t.strip()]
        if not texts:
            raise DataError("empty caption", where=f"{where}[{r}].{caption_column}", fix="remove the row")
        key = str(ids[r]) if ids is not None else str(r)
        if key not in index:
            index[key] = len(image_ids)
            image_ids.append(key)
            image_rows.append(r)
            relevance.append([])
        relevance[index[key]].extend(range(len(captions), len(captions) + len(texts)))
        captions.extend(texts)
    if not image_ids:
        raise DataError(f"no rows in split {split!r}", where=where, fix="check the split name")
    return StreamingPairs(
        image_ids,
        captions,
        relevance,
        HFImages(ds, image_column, image_rows, where),
        name or Path(str(where)).name,
    )


# --- tar shards (webdataset layout) -------------------------------------------------------------------------


def shard_paths(
    source: str | os.PathLike | Sequence[str | os.PathLike], split: str | None = None
) -> list[Path]:
    """Tar shards from a file, a list, a glob or brace pattern (``shard-{000..009}.tar``) or a folder.

    In a folder, ``split`` selects ``<folder>/<split>/*.tar`` or ``<folder>/<split>[-_]*.tar``.
    """
    if isinstance(source, (list, tuple)):
        return [p for s in source for p in shard_paths(s)]
    text = str(source)
    p = Path(text)
    if p.is_dir():
        if split and (p / split).is_dir():
            found = sorted((p / split).glob("*.tar"))
        elif split:
            found = sorted(
                set(p.glob(f"{split}-*.tar")) | set(p.glob(f"{split}_*.tar")) | set(p.glob(f"{split}.tar"))
            )
        else:
            found = sorted(p.glob("*.tar"))
        if not found:
            raise DataError(
                f"no tar shards{f' for split {split!r}' if split else ''}",
                where=text,
                fix="give <folder>/<split>/*.tar, <folder>/<split>-*.tar, or the shard files",
            )
        return found
    if "{" in text:
        try:
            from braceexpand import braceexpand
        except ImportError:
            raise DependencyError(
                "brace patterns need the braceexpand package (webdataset installs it)",
                fix="pip install braceexpand, or give a glob or a folder",
            ) from None
        return [q for pattern in braceexpand(text) for q in shard_paths(pattern)]
    if any(ch in text for ch in "*?["):
        found = sorted(Path(q) for q in glob.glob(text))
        if not found:
            raise DataError("no tar shards match the pattern", where=text, fix="check the pattern")
        return found
    if not p.is_file():
        raise DataError("tar shard not found", where=text, fix="check the path")
    return [p]


def _sample_key(member: str) -> tuple[str, str]:
    """webdataset's convention: the key is the path up to the first dot of the file name."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _tar_captions(raw: bytes, ext: str, where: str) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError("caption is not UTF-8 text", where=where, fix="write captions as UTF-8") from None
    if ext == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"bad JSON: {e.msg}", where=where, fix="fix the sample's JSON") from None
        cell = doc.get("captions", doc.get("caption", doc.get("text"))) if isinstance(doc, dict) else None
        texts = [cell] if isinstance(cell, str) else cell if isinstance(cell, list) else None
        if texts is None or not all(isinstance(t, str) for t in texts):
            raise DataError(
                "JSON has no 'caption' / 'captions' text",
                where=where,
                fix="give {'caption': '...'} or {'captions': ['...']}",
            )
    else:
        texts = [text]
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise DataError("empty caption", where=where, fix="remove the sample or give its caption")
    return texts


def load_tar_shards(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    split: str | None = None,
    *,
    name: str | None = None,
) -> StreamingPairs:
    """Pairs from uncompressed tar shards in the webdataset layout (one sample = one image + its captions).

    Only the member headers are read here (and the small caption members); images are read later, at
    random, by offset. A sample with no image, no caption or two images is a :class:`DataError` naming
    the shard and the sample.
    """
    shards = shard_paths(source, split)
    image_ids: list[str] = []
    entries: list[tuple[str, int, int, str]] = []
    captions: list[str] = []
    relevance: list[list[int]] = []
    for shard in shards:
        try:
            tar = tarfile.open(shard, mode="r:")  # noqa: SIM115 (closed by the with below); uncompressed only
        except tarfile.ReadError as e:
            raise DataError(
                f"not an uncompressed tar file: {e}",
                where=str(shard),
                fix="write shards as plain .tar (webdataset's default), not .tar.gz",
            ) from None
        samples: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        with tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, ext = _sample_key(m.name)
                if key not in samples:
                    samples[key] = {}
                    order.append(key)
                s = samples[key]
                where = f"{shard}:{m.name}"
                if ext in IMAGE_EXTENSIONS:
                    if "image" in s:
                        raise DataError("sample has two images", where=where, fix="one image per sample key")
                    s["image"] = (str(shard), m.offset_data, m.size, m.name)
                elif ext in ("txt", "json") and "captions" not in s:
                    f = tar.extractfile(m)
                    s["captions"] = _tar_captions(f.read() if f else b"", ext, where)
        for key in order:
            s = samples[key]
            where = f"{shard}:{key}"
            if "image" not in s:
                raise DataError("sample has no image", where=where, fix=f"add {key}.jpg (or .png, .webp)")
            if "captions" not in s:
                raise DataError("sample has no caption", where=where, fix=f"add {key}.txt or {key}.json")
            image_ids.append(key)
            entries.append(s["image"])
            relevance.append(list(range(len(captions), len(captions) + len(s["captions"]))))
            captions.extend(s["captions"])
    if not image_ids:
        raise DataError("the shards hold no samples", where=str(source), fix="check the shard files")
    return StreamingPairs(
        image_ids,
        captions,
        relevance,
        TarImages(entries),
        name or (f"{Path(str(shards[0])).parent.name}:{split}" if split else Path(str(shards[0])).stem),
    )


# --- one entry point -----------------------------------------------------------------------------------


def is_hf_folder(p: Path) -> bool:
    return p.is_dir() and any(
        (p / f).is_file() for f in ("dataset_dict.json", "dataset_info.json", "state.json")
    )


def is_tar_source(source: Any) -> bool:
    text = str(source)
    if isinstance(source, (list, tuple)):
        return all(is_tar_source(s) for s in source)
    p = Path(text)
    if text.endswith(".tar") or (".tar" in text and any(ch in text for ch in "*?[{")):
        return True
    return (
        p.is_dir()
        and not (p / "dataset.json").is_file()
        and not is_hf_folder(p)
        and (any(p.glob("*.tar")) or any(p.glob("*/*.tar")))
    )


def open_image_text(
    source: Any, split: str | None = "test", image_root: str | os.PathLike | None = None, **kwargs: Any
) -> StreamingPairs:
    """Streaming pairs from any supported input (see the module doc); images are not read yet."""
    if not isinstance(source, (str, os.PathLike, list, tuple)):
        return load_hf(source, split, **kwargs)  # a datasets.Dataset / DatasetDict object
    if isinstance(source, (list, tuple)) or is_tar_source(source):
        return load_tar_shards(source, split, **kwargs)
    if is_hf_folder(Path(source)):
        return load_hf(source, split, **kwargs)
    return streaming(load_pairs(source, split, image_root, **kwargs))


# --- the DataLoader -----------------------------------------------------------------------------------


class DecodedImages(torch.utils.data.Dataset):
    """Image ``i`` opened, decoded and resized to ``size`` × ``size``: ``uint8 [3, size, size]``."""

    def __init__(self, images: Any, size: int):
        self.images = images
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor | _Failed:
        try:
            return pil_to_uint8(self.images.open(int(i)), self.size)
        except AlignlabError as e:  # carried to the main process as data, re-raised there in one line
            return _Failed(type(e).__name__, e.what, e.where, e.fix)


@dataclass(frozen=True)
class _Failed:
    """A user error met in a worker: a DataLoader would re-raise it wrapped in a multi-line traceback."""

    kind: str
    what: str
    where: str | None
    fix: str | None

    def reraise(self) -> None:
        import alignlab.core.errors as errors

        cls = getattr(errors, self.kind, DataError)
        raise cls(self.what, where=self.where, fix=self.fix)


def _stack(items: list[torch.Tensor | _Failed]) -> torch.Tensor | _Failed:
    failed = next((x for x in items if isinstance(x, _Failed)), None)
    return failed if failed is not None else torch.stack(items)  # type: ignore[arg-type]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode with Pillow; torch threads would only compete for cores


class EpochBatchSampler(torch.utils.data.Sampler):
    """The index lists of batches ``start, start+1, ...`` of one epoch, from a pure ``(epoch, index)``
    function.

    A seedable batch sampler in the project's sense: the batches are whatever ``batch_indices(epoch, index)``
    says (the training task's permutation), ``set_epoch`` chooses the epoch, ``__len__`` is exact, and
    ``state_dict`` / ``load_state_dict`` hold the position (epoch, first batch) a new iteration starts at.
    """

    def __init__(self, batch_indices: Callable[[int, int], Sequence[int]], num_batches: Callable[[int], int]):
        self.batch_indices = batch_indices
        self.num_batches = num_batches
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return max(0, self.num_batches(self.epoch) - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        for b in range(self.start, self.num_batches(epoch)):
            yield [int(i) for i in self.batch_indices(epoch, b)]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.set_epoch(int(state["epoch"]), int(state["batch"]))


class ImageBatchLoader:
    """Batch ``index`` of ``epoch`` as ``uint8 [B, 3, size, size]``, decoded by DataLoader workers ahead of
    use.

    Calls in order are served from the running loader (workers stay up across epochs); a call out of
    order (a resumed run, a skipped batch) restarts it on that batch. :meth:`state_dict` is the position
    of the next batch to be used (not the prefetched ones), for the training checkpoint.
    """

    def __init__(
        self,
        images: Any,
        size: int,
        batch_indices: Callable[[int, int], Sequence[int]],
        num_batches: Callable[[int], int],
        num_workers: int = 0,
        prefetch_factor: int = 2,
    ):
        if num_workers < 0:
            from alignlab.core.errors import ConfigError

            raise ConfigError(
                f"num_workers must be >= 0, got {num_workers}",
                fix="use 0 (decode in the main process) or more",
            )
        self.sampler = EpochBatchSampler(batch_indices, num_batches)
        self.num_workers = num_workers
        self.loader = torch.utils.data.DataLoader(
            DecodedImages(images, size),
            batch_sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=_stack,
            worker_init_fn=_worker_init if num_workers else None,
            prefetch_factor=prefetch_factor if num_workers else None,
            persistent_workers=num_workers > 0,
        )
        self._it: Iterator[torch.Tensor] | None = None
        self._next: tuple[int, int] | None = None

    def get(self, epoch: int, index: int) -> torch.Tensor:
        if self._it is None or self._next != (epoch, index):
            self.sampler.set_epoch(epoch, index)
            self._it = iter(self.loader)
        try:
            batch = next(self._it)
        except StopIteration:
            raise IndexError(f"epoch {epoch} has no batch {index}") from None
        if isinstance(batch, _Failed):
            self._it = None  # the next call starts again from a known position
            batch.reraise()
        self._next = (epoch, index + 1)
        return batch

    def state_dict(self) -> dict[str, int]:
        epoch, batch = self._next if self._next is not None else (self.sampler.epoch, self.sampler.start)
        return {"epoch": epoch, "batch": batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self._it, self._next = None, None  # the next get() starts a loader at that position

    def close(self) -> None:
        """End of use: dropping the DataLoader (it holds the persistent iterator) ends its worker
        processes."""
        self._it = None
        self.loader = None  # type: ignore[assignment]
