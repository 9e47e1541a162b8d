"""What every real-model adapter shares: the download switch, image conversion, batching, identities.

* :func:`download_allowed` — downloads are off unless the caller opts in (``allow_download=True``,
  the CLI's ``--allow-download`` or ``ALIGNLAB_ALLOW_DOWNLOAD=1``).
* :func:`to_pil_list` — the contract's image inputs (``uint8 [B, 3, H, W]`` tensors, ``uint8 [B, H, W, 3]``
  arrays, lists of Pillow images) -> a list of RGB Pillow images, which every model's own processor
  accepts; the processor then does the model's own resizing, cropping and normalisation.
* :func:`autocast` — fp16 autocast on CUDA, a no-op elsewhere.
* :func:`fingerprint` — a stable hash of a model's identity (what weights, which mode, which settings),
  used to key the on-disk encoding cache (:mod:`alignlab.models.cache`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from alignlab.core.errors import ConfigError, DataError, ModelError
from alignlab.core.offline import ALLOW_DOWNLOAD_ENV, download_allowed  # noqa: F401  (re-exported)


def how_to_get(hub_id: str) -> str:
    """The fix text for a hub model that is not on this machine."""
    return (
        f"download it once with `hf download {hub_id}` (older huggingface_hub: `huggingface-cli download "
        f"{hub_id}`), or pass a local folder (hf:/path/to/folder), or allow downloads with --allow-download, "
        f"{ALLOW_DOWNLOAD_ENV}=1 or allow_download=True"
    )


def to_pil_list(images: Any) -> list[Image.Image]:
    """Images in any form the scorer contract allows -> a list of RGB Pillow images.

    Accepted: a ``uint8`` tensor ``[B, 3, H, W]`` (any device), a ``uint8`` array ``[B, H, W, 3]``, or a
    sequence of Pillow images. Float tensors are refused: whether they hold ``[0, 1]``, ``[0, 255]`` or
    already-normalised pixels cannot be told apart, and a real model must see its own preprocessing.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(
                f"expected an image tensor [B, 3, H, W], got shape {tuple(images.shape)}",
                fix="pass images as uint8 [B, 3, H, W] or a list of Pillow images",
            )
        if images.dtype != torch.uint8:
            raise DataError(
                f"real-model adapters take uint8 image tensors, got {images.dtype}",
                fix="pass raw uint8 pixels (the model does its own normalisation), e.g. "
                "ImageTextPairs.load_images(...)",
            )
        arr = images.detach().to("cpu").permute(0, 2, 3, 1).contiguous().numpy()
        return [Image.fromarray(a) for a in arr]
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DataError(
                f"expected a uint8 image array [B, H, W, 3], got {images.dtype} {images.shape}",
                fix="pass images as uint8 [B, H, W, 3]",
            )
        return [Image.fromarray(np.ascontiguousarray(a)) for a in images]
    out = []
    for k, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise DataError(
                f"image {k} is a {type(im).__name__}, not a Pillow image",
                fix="pass a uint8 tensor [B, 3, H, W] or a list of Pillow images",
            )
        out.append(im if im.mode == "RGB" else im.convert("RGB"))
    return out


def check_texts(texts: Any) -> list[str]:
    """A list of strings, or a clear error (a bare string is a common slip: it would become letters)."""
    if isinstance(texts, str):
        raise ModelError("texts must be a list of strings, got a single string", fix="wrap it in a list")
    texts = list(texts)
    for k, t in enumerate(texts):
        if not isinstance(t, str):
            raise ModelError(f"text {k} is a {type(t).__name__}, not a string", fix="pass a list of strings")
    return texts


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``range(n)``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def check_fp16(fp16: bool, device: torch.device) -> bool:
    """fp16 is only offered on CUDA (CPU half-precision kernels are slow and partly missing)."""
    if fp16 and device.type != "cuda":
        raise ConfigError(
            f"fp16 needs a CUDA device, but the model is on {device}", fix="drop --fp16 or use --device cuda"
        )
    return bool(fp16)


def autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA when ``enabled`` (matmuls in half precision, reductions in float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def files_fingerprint(
    folder: str | os.PathLike,
    patterns: Sequence[str] = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "*.pt"),
) -> list:
    """(name, size, mtime or blob name) of the files that define a model folder.

    Hugging Face cache snapshots are symlinks to content-addressed blobs, so the blob's name (its hash)
    identifies the content exactly; for ordinary folders size + modification time stand in for a
    content hash (hashing gigabytes of weights on every load would cost seconds).
    """
    folder = Path(folder)
    rows = []
    for pattern in patterns:
        for f in sorted(folder.glob(pattern)):
            if not f.is_file():
                continue
            st = f.stat()
            rows.append([f.name, st.st_size, f.resolve().name if f.is_symlink() else st.st_mtime_ns])
    return sorted(rows)


def fingerprint(obj: Any) -> str:
    """sha256 of a JSON-able description."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class DownloadBlocked(RuntimeError):
    """Raised inside :func:`no_downloads` when a library tries to fetch a file."""


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Make Hugging Face hub calls cache-only and refuse plain URL downloads while loading a model.

    Libraries that resolve pretrained names themselves (open_clip) may reach for the network even when
    the file is cached (to check for a newer revision). Inside this block ``huggingface_hub`` is in
    offline mode (cached files are used, missing ones raise) and ``urllib.request.urlopen`` raises
    :class:`DownloadBlocked`, so "downloads are off" holds whatever the library does.
    """
    import urllib.request

    def refuse(*args: Any, **kwargs: Any) -> Any:
        url = args[0] if args else kwargs.get("url")
        raise DownloadBlocked(f"download of {getattr(url, 'full_url', url)} refused (downloads are off)")

    hub_constants: Any  # the huggingface_hub.constants module, or None without huggingface_hub
    try:
        from huggingface_hub import constants as hub_constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers and open_clip
        hub_constants = None
    old_offline = getattr(hub_constants, "HF_HUB_OFFLINE", None)
    old_urlopen = urllib.request.urlopen
    try:
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = True
        urllib.request.urlopen = refuse
        yield
    finally:
        urllib.request.urlopen = old_urlopen
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = old_offline
