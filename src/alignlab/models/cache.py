"""Encoding cache: every unique caption (and image) is encoded once, optionally remembered on disk.

Retrieval sets repeat captions (COCO has identical captions for different images), probes score the same
options and images many times, and an evaluation run is often repeated with another metric or seed. A
:class:`CachedEncoder` wraps a dual encoder and keeps the contract (it *is* a
:class:`~alignlab.models.base.DualEncoder`, with the wrapped model's name, semantics, scale and bias):

* ``encode_texts(texts)`` encodes each distinct string once, in one call to the model, and returns the
  rows in the order asked (duplicates share a row);
* ``encode_images(images)`` does the same keyed by the pixels' content (sha256 of the uint8 bytes and
  shape), so the same picture is encoded once whichever index it comes under;
* with ``cache_dir`` the embeddings are also stored on disk, keyed by the **model identity** and the
  sha256 of each text (or image), in ``<cache_dir>/<identity[:24]>/``: ``identity.json`` (what model)
  and ``text-*.safetensors`` / ``image-*.safetensors`` shards (an ``emb`` matrix plus the keys of its
  rows in the metadata). A later run with the same model reads them instead of encoding again.

The model identity is ``model.identity`` when the model defines it (the real-model adapters hash their
weight files, hub commit, mode and text settings), else a sha256 of the model's class, name and every
weight tensor. Wrap a *frozen* model: the identity is taken once, so after changing the weights make a
new :class:`CachedEncoder` (or call :meth:`clear`). Cross encoders score pairs, which cannot be reused
across different pair sets; :func:`cached` returns them unchanged.

>>> from alignlab.models.factory import load_model
>>> enc = CachedEncoder(load_model("tiny-dual", config={"width": 32, "embed_dim": 16}))
>>> enc.encode_texts(["a red circle", "a red circle", "a blue square"]).shape
torch.Size([3, 16])
>>> enc.stats["text_encoded"]
2
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image

from alignlab.core.errors import ConfigError, DataError, ModelError
from alignlab.core.io import atomic_path, write_json
from alignlab.models.base import CrossEncoder, DualEncoder, ImageInput, Scorer, num_images

_ID_LEN = 24


def text_key(text: str) -> str:
    """sha256 of the UTF-8 text (the on-disk key of a caption)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def image_keys(images: ImageInput) -> list[str]:
    """sha256 of each image's pixels and shape.

    Images are a uint8 tensor ``[B, 3, H, W]``, an array ``[B, H, W, 3]`` or Pillow images."""
    keys = []
    if isinstance(images, torch.Tensor):
        arr = images.detach().to("cpu").contiguous().numpy()
        for a in arr:
            keys.append(_hash_array(a, "chw"))
    elif isinstance(images, np.ndarray):
        for a in images:
            keys.append(_hash_array(np.ascontiguousarray(a), "hwc"))
    else:
        for im in images:
            if not isinstance(im, Image.Image):
                raise DataError(
                    f"expected Pillow images, got a {type(im).__name__}",
                    fix="pass a uint8 tensor [B, 3, H, W] or a list of Pillow images",
                )
            h = hashlib.sha256(f"pil:{im.mode}:{im.size}".encode())
            h.update(im.tobytes())
            keys.append(h.hexdigest())
    return keys


def _hash_array(a: np.ndarray, layout: str) -> str:
    h = hashlib.sha256(f"{layout}:{a.dtype}:{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def model_identity(model: Any) -> str:
    """A sha256 that changes whenever the model's outputs could: ``model.identity`` or a weights hash."""
    ident = getattr(model, "identity", None)
    if isinstance(ident, str) and ident:
        return ident
    h = hashlib.sha256(
        f"{type(model).__module__}.{type(model).__qualname__}:{getattr(model, 'name', '')}".encode()
    )
    config = getattr(model, "config", None)
    if config is not None:
        h.update(repr(config).encode())
    tokenizer = getattr(model, "tokenizer", None)
    vocab = getattr(tokenizer, "vocab", None) or getattr(tokenizer, "itos", None)
    if vocab is not None:
        h.update(json.dumps(vocab, sort_keys=True, default=str).encode())
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    if not state:
        raise ConfigError(
            f"cannot tell the identity of {type(model).__name__} for the encoding cache",
            fix="give the model an `identity` string attribute (a hash of its weights and settings)",
        )
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def dedupe(keys: Sequence[str]) -> tuple[list[int], list[int]]:
    """(index of each distinct key's first occurrence, position of every key in that list).

    >>> dedupe(["a", "b", "a"])
    ([0, 1], [0, 1, 0])
    """
    first: dict[str, int] = {}
    order: list[int] = []
    inverse: list[int] = []
    for i, k in enumerate(keys):
        if k not in first:
            first[k] = len(order)
            order.append(i)
        inverse.append(first[k])
    return order, inverse


class CachedEncoder(DualEncoder):
    """A dual encoder that encodes each distinct text and image once (see the module docstring).

    ``stats`` counts ``{text,image}_requests`` (rows asked for), ``_unique`` (distinct among them),
    ``_encoded`` (passed to the model) and ``_disk_hits`` (read from ``cache_dir``).
    """

    def __init__(
        self, model: DualEncoder, cache_dir: str | os.PathLike | None = None, *, images: bool = True
    ):
        if not getattr(model, "is_dual", False):
            raise ConfigError(
                f"{getattr(model, 'name', type(model).__name__)} is not a dual encoder",
                fix="the encoding cache applies to dual encoders; use the model directly",
            )
        self.model = model
        self.native_images = bool(getattr(model, "native_images", False))  # a class constant of the model
        self.cache_images = bool(images)
        self.identity = model_identity(model)
        self.folder = Path(cache_dir) / self.identity[:_ID_LEN] if cache_dir is not None else None
        self._mem: dict[str, dict[str, torch.Tensor]] = {"text": {}, "image": {}}
        self._disk_loaded: set[str] = set()
        self._disk_keys: set[str] = set()  # keys whose embeddings were read from cache_dir
        self.stats = {
            f"{kind}_{what}": 0
            for kind in ("text", "image")
            for what in ("requests", "unique", "encoded", "disk_hits")
        }

    # Pass the model's declarations through.
    @property
    def name(self) -> str:  # type: ignore[override]
        return getattr(self.model, "name", type(self.model).__name__)

    @property
    def score_semantics(self) -> str:  # type: ignore[override]
        return self.model.score_semantics

    @property
    def score_scale(self) -> float:
        return self.model.score_scale

    @property
    def score_bias(self) -> float:
        return getattr(self.model, "score_bias", 0.0)

    @property
    def device(self) -> torch.device:
        dev = getattr(self.model, "device", None)
        return dev if isinstance(dev, torch.device) else torch.device("cpu")

    def describe(self) -> dict[str, Any]:
        d = dict(self.model.describe()) if hasattr(self.model, "describe") else {}
        d["encoding_cache"] = {"dir": str(self.folder) if self.folder else None, **self.stats}
        return d

    def clear(self) -> None:
        """Forget the in-memory embeddings (files on disk stay)."""
        self._mem = {"text": {}, "image": {}}
        self._disk_loaded.clear()
        self._disk_keys.clear()

    # The contract.
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise ModelError("texts must be a list of strings, got a single string", fix="wrap it in a list")
        texts = list(texts)
        if not texts:
            return self.model.encode_texts([])
        keys = [text_key(t) for t in texts]
        return self._lookup("text", keys, lambda idx: self.model.encode_texts([texts[i] for i in idx]))

    def encode_images(self, images: ImageInput) -> torch.Tensor:
        if not self.cache_images or num_images(images) == 0:
            return self.model.encode_images(images)
        keys = image_keys(images)
        return self._lookup("image", keys, lambda idx: self.model.encode_images(_take(images, idx)))

    # Internals.
    def _lookup(
        self, kind: str, keys: list[str], encode: Callable[[list[int]], torch.Tensor]
    ) -> torch.Tensor:
        self.stats[f"{kind}_requests"] += len(keys)
        order, inverse = dedupe(keys)
        self.stats[f"{kind}_unique"] += len(order)
        mem = self._mem[kind]
        if self.folder is not None and kind not in self._disk_loaded:
            self._load_disk(kind)
        missing = [i for i in order if keys[i] not in mem]
        self.stats[f"{kind}_disk_hits"] += sum(1 for i in order if keys[i] in self._disk_keys)
        out_device = self.device
        if missing:
            emb = encode(missing)
            if emb.shape[0] != len(missing):
                raise DataError(
                    f"{self.name} returned {emb.shape[0]} {kind} embeddings for {len(missing)} inputs"
                )
            out_device = emb.device
            emb_cpu = emb.detach().to("cpu", torch.float32)
            for row, i in enumerate(missing):
                mem[keys[i]] = emb_cpu[row]
            self.stats[f"{kind}_encoded"] += len(missing)
            if self.folder is not None:
                self._write_shard(kind, [keys[i] for i in missing], emb_cpu)
        unique = torch.stack([mem[keys[i]] for i in order])
        return unique[torch.tensor(inverse)].to(out_device)

    def _load_disk(self, kind: str) -> None:
        from safetensors import safe_open

        self._disk_loaded.add(kind)
        if self.folder is None or not self.folder.is_dir():
            return
        self._check_identity_file()
        for shard in sorted(self.folder.glob(f"{kind}-*.safetensors")):
            try:
                with safe_open(str(shard), framework="pt") as f:
                    meta = f.metadata() or {}
                    emb = f.get_tensor("emb")
                keys = json.loads(meta.get("keys", "[]"))
            except Exception as e:  # a torn or foreign file: say which and carry on without it
                raise DataError(
                    f"unreadable encoding-cache shard: {e}",
                    where=str(shard),
                    fix="delete the file (it is only a cache)",
                ) from None
            if len(keys) != emb.shape[0]:
                raise DataError(
                    "encoding-cache shard has mismatched keys and rows",
                    where=str(shard),
                    fix="delete the file (it is only a cache)",
                )
            if meta.get("identity", self.identity) != self.identity:
                raise DataError(
                    "encoding-cache shard was written by another model or model version",
                    where=str(shard),
                    fix="delete the file (it is only a cache)",
                )
            for k, row in zip(keys, emb):
                self._mem[kind].setdefault(k, row)
                self._disk_keys.add(k)

    def _check_identity_file(self) -> None:
        assert self.folder is not None
        ident_file = self.folder / "identity.json"
        if ident_file.is_file():
            try:
                stored = json.loads(ident_file.read_text(encoding="utf-8")).get("identity")
            except (json.JSONDecodeError, OSError):
                stored = None
            if stored != self.identity:
                raise DataError(
                    "encoding-cache folder belongs to another model (identity prefix collision or a "
                    "hand-edited folder)",
                    where=str(self.folder),
                    fix="delete the folder",
                )

    def _write_shard(self, kind: str, keys: list[str], emb: torch.Tensor) -> None:
        from safetensors.torch import save_file

        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        ident_file = self.folder / "identity.json"
        if not ident_file.is_file():
            desc = self.model.describe() if hasattr(self.model, "describe") else {"name": self.name}
            write_json(ident_file, {"identity": self.identity, "model": desc})
        with atomic_path(self.folder / f"{kind}-{uuid.uuid4().hex}.safetensors") as tmp:
            save_file(
                {"emb": emb.contiguous()},
                str(tmp),
                metadata={"keys": json.dumps(keys), "identity": self.identity},
            )


def _take(images: ImageInput, idx: list[int]) -> ImageInput:
    if isinstance(images, (torch.Tensor, np.ndarray)):
        return images[idx]
    return [images[i] for i in idx]


def cached(model: Scorer, cache_dir: str | os.PathLike | None = None, *, images: bool = True) -> Scorer:
    """``model`` with an encoding cache if it is a dual encoder; cross encoders are returned unchanged."""
    if isinstance(model, (CachedEncoder, CrossEncoder)) or not getattr(model, "is_dual", False):
        return model
    return CachedEncoder(cast(DualEncoder, model), cache_dir, images=images)  # is_dual: the dual contract


def encode_unique_texts(model: DualEncoder, texts: Sequence[str]) -> torch.Tensor:
    """``model.encode_texts(texts)`` with each distinct text encoded once (no cache kept)."""
    texts = list(texts)
    order, inverse = dedupe(texts)
    emb = model.encode_texts([texts[i] for i in order])
    if not texts:
        return emb
    return emb[torch.tensor(inverse, device=emb.device)]
