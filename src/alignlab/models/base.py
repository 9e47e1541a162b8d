"""The scorer contract: how every image–text model is used.

Evaluation, probing and distillation only call these methods, so the tiny built-in models, Hugging Face
CLIP/SigLIP/BLIP and open_clip models are interchangeable.

* A :class:`DualEncoder` embeds each side separately:
  ``encode_images(images) -> [N, D]`` and ``encode_texts(texts) -> [M, D]``; the score of a pair is
  ``score_scale * <image_emb, text_emb> + score_bias`` (embeddings are L2-normalised unless the model says
  otherwise; ``score_bias`` is 0 except for sigmoid-trained models such as SigLIP).
* A :class:`CrossEncoder` looks at both together: ``score(images, texts) -> [N, M]`` for all pairs and
  ``score_pairs(images, texts) -> [N]`` for aligned pairs.

``images`` is a ``uint8`` tensor ``[B, 3, H, W]`` or a list of Pillow images; each model does its own
resizing and normalisation. ``texts`` is a list of strings.

Every scorer declares ``score_semantics``: ``"cosine"`` (cosine similarity, optionally times a scale),
``"itm_probability"`` (probability of a match, in [0, 1]) or ``"logit"`` (an unbounded match logit), so
that callers treat scores correctly (e.g. a probe does not softmax probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from PIL import Image

from alignlab.core.cliargs import DEVICES
from alignlab.core.errors import ConfigError, ModelError

ImageInput = torch.Tensor | Sequence[Image.Image]
ScoreSemantics = Literal["cosine", "itm_probability", "logit"]


DEVICE_CHOICES = DEVICES  # the names --device takes (alignlab.core.cliargs)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """A usable torch device from ``"auto" | "cpu" | "cuda[:i]" | "mps"`` (or a ``torch.device``).

    ``"auto"`` (or None) picks CUDA if available, then Apple's MPS, else the CPU. Asking for a device this
    machine does not have is a :class:`ConfigError` (not a crash deep inside the first forward pass).

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"unknown device {device!r}",
            key="device",
            fix=f"use one of: {', '.join(DEVICE_CHOICES)} (or cuda:<index>)",
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "CUDA was asked for but torch.cuda.is_available() is False on this machine",
                key="device",
                fix="use --device cpu (or auto), or install a CUDA build of torch",
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {dev} does not exist ({torch.cuda.device_count()} CUDA device(s))",
                key="device",
                fix="pick an index below the device count",
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(
                "MPS was asked for but is not available on this machine",
                key="device",
                fix="use --device cpu (or auto)",
            )
    elif dev.type != "cpu":
        raise ConfigError(
            f"unsupported device {device!r}", key="device", fix=f"use one of: {', '.join(DEVICE_CHOICES)}"
        )
    return dev


def num_images(images: ImageInput) -> int:
    return int(images.shape[0]) if isinstance(images, torch.Tensor) else len(images)


def as_text_list(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list; a bare string is an error (it would otherwise be split into characters)."""
    if isinstance(texts, str):
        raise ModelError("texts must be a list of strings, got a single string", fix="wrap it in a list")
    return list(texts)


def slice_images(images: ImageInput, start: int, stop: int) -> ImageInput:
    return images[start:stop]


def check_score_shape(scores: torch.Tensor, n: int, m: int, who: str) -> torch.Tensor:
    """Raise a ModelError when a scorer returns something other than an ``[n, m]`` finite tensor."""
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n, m):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ModelError(
            f"{who} returned scores of shape {shape}, expected ({n}, {m})",
            fix="score(images, texts) must return one score per (image, text) pair",
        )
    if not torch.isfinite(scores).all():
        raise ModelError(f"{who} returned NaN or infinite scores", fix="check the model weights and inputs")
    return scores


class Scorer:
    """Anything that scores image–text pairs. Subclasses set ``name`` and ``score_semantics``.

    ``native_images = True`` says the model preprocesses images of any size itself and wants them at their
    natural size (real-model adapters); see :func:`load_images_for`.
    """

    name: str = "scorer"
    native_images: bool = False
    score_semantics: ScoreSemantics = "logit"
    is_dual: bool = False

    def score(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def score_pairs(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        """Scores of aligned pairs (image k with text k), ``[N]``."""
        if num_images(images) != len(texts):
            raise ModelError(
                f"score_pairs got {num_images(images)} images and {len(texts)} texts",
                fix="give one text per image",
            )
        return torch.stack(
            [self.score(slice_images(images, k, k + 1), [t])[0, 0] for k, t in enumerate(texts)]
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "score_semantics": self.score_semantics, "dual": self.is_dual}


class DualEncoder(Scorer):
    """A scorer with separate image and text embeddings (retrieval with one matrix product)."""

    is_dual = True
    score_semantics: ScoreSemantics = "cosine"

    def encode_images(self, images: ImageInput) -> torch.Tensor:
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def score_scale(self) -> float:
        """The factor from cosine similarity to the model's logits (1.0 if it has none)."""
        return 1.0

    @property
    def score_bias(self) -> float:
        """A constant added after scaling (SigLIP's learned bias: ``score = scale * cos + bias``); 0.0 if none.

        A constant shift never changes a ranking, but it matters wherever scores are read as logits
        (SigLIP's ``sigmoid(score)`` is its match probability).
        """
        return 0.0

    @torch.no_grad()
    def score(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        img = self.encode_images(images)
        txt = self.encode_texts(list(texts))
        scores = self.score_scale * img @ txt.T
        return scores + self.score_bias if self.score_bias else scores

    @torch.no_grad()
    def score_pairs(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        if num_images(images) != len(texts):
            raise ModelError(
                f"score_pairs got {num_images(images)} images and {len(texts)} texts",
                fix="give one text per image",
            )
        img = self.encode_images(images)
        txt = self.encode_texts(list(texts))
        scores = self.score_scale * (img * txt).sum(-1)
        return scores + self.score_bias if self.score_bias else scores


class ProjectedDualEncoder(DualEncoder):
    """A dual encoder built as two towers, a linear projection each and a learned logit scale (CLIP-style).

    The tiny dual encoder and the pretrained LiT encoder share these mechanics; a subclass provides
    ``image_tower`` (``preprocess(images, device)``; called, it returns ``(tokens, pooled)``),
    ``text_tower`` (called with ``(ids, mask)`` likewise), ``image_proj``, ``text_proj``, ``logit_scale``
    (a log-scale parameter), ``tokenize(texts) -> (ids, mask)``, ``encode_batch``, ``config.embed_dim`` and
    ``device``. Embeddings are L2-normalised; the scale is capped at 100 as in CLIP.
    """

    if TYPE_CHECKING:  # what a subclass provides (declared for type checkers only: at run time the
        # subclass's own definitions must win, and this class comes first in its bases for forward())
        image_tower: Any
        text_tower: Any
        image_proj: Any
        text_proj: Any
        logit_scale: Any
        encode_batch: int
        config: Any

        @property
        def device(self) -> torch.device: ...

        def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...

    # Differentiable embeddings, for training.
    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.image_proj(self.image_tower(x)[1]), dim=-1)

    def embed_texts(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.nn.functional.normalize(self.text_proj(self.text_tower(ids, mask)[1]), dim=-1)

    def forward(
        self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {
            "image_emb": self.embed_images(images),
            "text_emb": self.embed_texts(ids, mask),
            "logit_scale": self.logit_scale.exp().clamp(max=100.0),
        }

    # The scorer contract (no gradients, batched).
    @torch.no_grad()
    def encode_images(self, images: ImageInput) -> torch.Tensor:
        n = num_images(images)
        out = [
            self.embed_images(self.image_tower.preprocess(images[i : i + self.encode_batch], self.device))
            for i in range(0, n, self.encode_batch)
        ]
        return torch.cat(out) if out else torch.zeros(0, self.config.embed_dim, device=self.device)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = as_text_list(texts)
        out = [
            self.embed_texts(*self.tokenize(texts[i : i + self.encode_batch]))
            for i in range(0, len(texts), self.encode_batch)
        ]
        return torch.cat(out) if out else torch.zeros(0, self.config.embed_dim, device=self.device)

    @property
    def score_scale(self) -> float:
        return float(self.logit_scale.detach().exp().clamp(max=100.0))


class CrossEncoder(Scorer):
    """A scorer that reads image and text together; ``score`` is over all pairs, so it costs N × M passes."""

    score_semantics: ScoreSemantics = "logit"


def load_images_for(model: Any, pairs: Any, indices: Sequence[int]) -> Any:
    """Images ``indices`` of an :class:`~alignlab.data.pairs.ImageTextPairs` in the form ``model`` wants.

    Real-model adapters (``model.native_images`` is True) do their own resizing and cropping, so they get
    the decoded files at their natural size as Pillow images (photos differ in size, and squashing them to
    one square first would change what the model's own preprocessing sees). Other models, and pairs held
    in memory as an array, get ``pairs.load_images(indices)`` (``uint8 [B, 3, H, W]``).
    """
    idx = [int(i) for i in indices]
    paths = getattr(pairs, "image_paths", None)
    if (
        getattr(model, "native_images", False)
        and getattr(pairs, "image_array", None) is None
        and paths is not None
    ):
        from alignlab.data.images import open_image

        return [open_image(paths[i]) for i in idx]
    return pairs.load_images(idx)
