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

**Training contract.** Trainers (``alignlab.train.tasks``, DCD, the probe's hard-negative fine-tuning) use
only the differentiable methods below, never a model's towers, so every model kind trains the same way:

* both kinds: ``preprocess_images(images) -> pixels`` (float, on the model's device),
  ``tokenize(texts) -> tokens`` (an opaque object that only the same model reads), ``image_encoder()`` and
  ``text_encoder()`` (the towers as modules: to load or copy weights) and ``set_encoders_trainable(flag)``
  (freeze or unfreeze the towers and whatever is computed from one tower alone);
* :class:`DualEncoder`: ``image_features(pixels)`` / ``text_features(tokens)`` (pooled tower outputs
  ``[B, F]``, what feature distillation reads), ``project_images(f)`` / ``project_texts(f)`` (unit vectors
  ``[B, D]``), ``embed_images = project_images ∘ image_features`` (likewise for texts) and
  ``logit_params() -> (scale, bias)``: differentiable tensors, ``score = scale · cos + bias`` (``None``
  where the model has none; callers cap the scale at 100 as CLIP does);
* :class:`CrossEncoder`: ``image_states(pixels)`` / ``text_states(tokens)`` -> :class:`TokenStates` (what
  the fusion reads, computed once per image and per text), ``fuse_pairs(img, txt) -> [P]`` (match logits
  of aligned pairs) and ``fuse_grid(img, txt) -> [N, M]`` (every image with every text).

A model that cannot be trained (a locked feature extractor) raises :class:`~alignlab.core.errors.ModelError`
from these methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
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


@dataclass
class TokenStates:
    """One side of a batch as a cross encoder's fusion reads it: what ``image_states``/``text_states`` return.

    ``tensors`` are the model's own (callers do not read them); every one has the batch as dimension 0.
    When ``mask`` names one of them (a ``[B, L]`` padding mask, nonzero = real token), every tensor also
    has the token length as dimension 1, so rows can be trimmed to their longest real length or padded
    (to gather several processes' batches). ``pooled`` is the side's pooled feature ``[B, F]`` where the
    model has one (feature distillation reads it). Selecting rows copies their values; a fusion of other
    batch shapes may still round differently in the last bits (batched kernels).
    """

    tensors: dict[str, torch.Tensor]
    mask: str | None = None
    pooled: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific settings that travel with the rows

    def __len__(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0])

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    @property
    def length(self) -> int:
        """The token length (dimension 1); 0 without a padding mask."""
        return int(self.tensors[self.mask].shape[1]) if self.mask is not None else 0

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], pooled: bool = True) -> TokenStates:
        """The same states with ``fn`` applied to every tensor (and to ``pooled`` unless told not to)."""
        p = fn(self.pooled) if pooled and self.pooled is not None else (self.pooled if pooled else None)
        return replace(self, tensors={k: fn(v) for k, v in self.tensors.items()}, pooled=p)

    def select(self, index: torch.Tensor | Sequence[int], trim: bool = False) -> TokenStates:
        """Rows ``index`` (repeats allowed); ``trim`` also drops the padding every selected row has."""
        idx = torch.as_tensor(index, dtype=torch.long)
        out = self.map(lambda t: t[idx.to(t.device)])
        if trim and self.mask is not None and len(idx):
            keep = int((out.tensors[self.mask] != 0).sum(1).max())
            out = replace(out, tensors={k: v[:, :keep] for k, v in out.tensors.items()})
        return out

    def pad_to(self, length: int) -> TokenStates:
        """Padded with masked zeros to ``length`` tokens (a no-op without a mask or when long enough)."""
        pad = length - self.length
        if self.mask is None or pad <= 0:
            return self

        def grow(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, t.new_zeros(t.shape[0], pad, *t.shape[2:])], dim=1)

        return replace(self, tensors={k: grow(v) for k, v in self.tensors.items()})

    def to(self, device: torch.device | str) -> TokenStates:
        return self.map(lambda t: t.to(device))

    @staticmethod
    def cat(parts: Sequence[TokenStates]) -> TokenStates:
        """Batches of the same model's states, concatenated row-wise (masked ones padded to one length)."""
        if not parts:
            raise ModelError("no token states to concatenate")
        length = max(p.length for p in parts)
        parts = [p.pad_to(length) for p in parts]
        first = parts[0]
        pooled = None if first.pooled is None else torch.cat([p.pooled for p in parts])  # type: ignore[misc]
        return replace(
            first, tensors={k: torch.cat([p.tensors[k] for p in parts]) for k in first.tensors}, pooled=pooled
        )


def _not_trainable(model: Any, what: str) -> ModelError:
    return ModelError(
        f"{getattr(model, 'name', type(model).__name__)} cannot be trained: it has no {what}",
        fix="train a tiny, pretrained-lit, Hugging Face or open_clip model (models/base.py)",
    )


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

    # --- the training contract shared by both kinds (module doc) ---
    def preprocess_images(self, images: ImageInput) -> torch.Tensor:
        raise _not_trainable(self, "differentiable image preprocessing")

    if TYPE_CHECKING:  # every trainable model has one (no run-time default: in the tiny dual encoder's
        # bases this class comes before the class that defines it)

        def tokenize(self, texts: Sequence[str]) -> Any: ...

    def image_encoder(self) -> torch.nn.Module:
        raise _not_trainable(self, "image tower")

    def text_encoder(self) -> torch.nn.Module:
        raise _not_trainable(self, "text tower")

    def encoder_parameters(self) -> Iterator[torch.nn.Parameter]:
        """The towers' parameters and those of anything computed from one tower alone."""
        yield from self.image_encoder().parameters()
        yield from self.text_encoder().parameters()

    def set_encoders_trainable(self, trainable: bool) -> None:
        """Freeze (False) or unfreeze the towers; the fusion or projection heads stay as they are."""
        for p in self.encoder_parameters():
            p.requires_grad_(trainable)


class DualEncoder(Scorer):
    """A scorer with separate image and text embeddings (retrieval with one matrix product)."""

    is_dual = True
    score_semantics: ScoreSemantics = "cosine"

    def encode_images(self, images: ImageInput) -> torch.Tensor:
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    # --- the dual training contract (module doc); a model overrides either embed_* or the pieces ---
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled image features ``[B, F]`` with gradients (default: the embeddings themselves)."""
        return self.embed_images(pixels)

    def text_features(self, tokens: Any) -> torch.Tensor:
        return self.embed_texts(tokens)

    def project_images(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> unit-length embeddings ``[B, D]`` (default: the features are the embeddings)."""
        return features

    def project_texts(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        raise _not_trainable(self, "differentiable image embedding")

    def embed_texts(self, tokens: Any) -> torch.Tensor:
        raise _not_trainable(self, "differentiable text embedding")

    def logit_params(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The learned ``(scale, bias)`` as differentiable tensors (``score = scale · cos + bias``), ``None``
        where the model has none. The scale is not capped here: trainers cap it at 100, as CLIP does."""
        return None, None

    @property
    def score_scale(self) -> float:
        """The factor from cosine similarity to the model's logits (1.0 if it has none)."""
        return 1.0

    @property
    def score_bias(self) -> float:
        """A constant added after scaling (SigLIP's learned bias: ``score = scale * cos + bias``); else 0.

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

    # The training contract (module doc).
    def preprocess_images(self, images: ImageInput) -> torch.Tensor:
        return self.image_tower.preprocess(images, self.device)

    def image_encoder(self) -> torch.nn.Module:
        return self.image_tower

    def text_encoder(self) -> torch.nn.Module:
        return self.text_tower

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_tower(pixels)[1]

    def text_features(self, tokens: Any) -> torch.Tensor:
        ids, mask = tokens
        return self.text_tower(ids, mask)[1]

    def project_images(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.image_proj(features), dim=-1)

    def project_texts(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.text_proj(features), dim=-1)

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.project_images(self.image_features(pixels))

    def embed_texts(self, tokens: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit text embeddings of ``tokenize``'s ``(ids, mask)`` (or, older form, of ``ids, mask``)."""
        return self.project_texts(self.text_features(tokens if mask is None else (tokens, mask)))

    def logit_params(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.logit_scale.exp(), None

    def forward(
        self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {
            "image_emb": self.embed_images(images),
            "text_emb": self.embed_texts((ids, mask)),
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
            self.embed_texts(self.tokenize(texts[i : i + self.encode_batch]))
            for i in range(0, len(texts), self.encode_batch)
        ]
        return torch.cat(out) if out else torch.zeros(0, self.config.embed_dim, device=self.device)

    @property
    def score_scale(self) -> float:
        return float(self.logit_scale.detach().exp().clamp(max=100.0))


class CrossEncoder(Scorer):
    """A scorer that reads image and text together; ``score`` is over all pairs, so it costs N × M passes."""

    score_semantics: ScoreSemantics = "logit"
    pair_chunk: int = 4096  # (image, text) pairs per fusion pass in fuse_grid

    # --- the cross training contract (module doc) ---
    def image_states(self, pixels: torch.Tensor) -> TokenStates:
        raise _not_trainable(self, "image token states")

    def text_states(self, tokens: Any) -> TokenStates:
        raise _not_trainable(self, "text token states")

    def fuse_pairs(self, image: TokenStates, text: TokenStates) -> torch.Tensor:
        """Match logits ``[P]`` of ``P`` aligned pairs (row ``p`` of ``image`` with row ``p`` of ``text``)."""
        raise _not_trainable(self, "fusion")

    def fuse_grid(self, image: TokenStates, text: TokenStates) -> torch.Tensor:
        """Match logits ``[N, M]`` of every image with every text, ``~pair_chunk`` pairs per fusion pass."""
        n, m = len(image), len(text)
        if n == 0 or m == 0:
            return torch.zeros(n, m, device=next(iter(image.tensors.values())).device)
        step = max(1, self.pair_chunk // m)
        rows = []
        for i in range(0, n, step):
            k = min(step, n - i)
            img = image.select(torch.arange(i, i + k).repeat_interleave(m))
            txt = text.select(torch.arange(m).repeat(k))
            rows.append(self.fuse_pairs(img, txt).view(k, m))
        return torch.cat(rows)

    def match_pairs(self, pixels: torch.Tensor, tokens: Any) -> torch.Tensor:
        """``fuse_pairs`` of preprocessed images and tokens (differentiable)."""
        return self.fuse_pairs(self.image_states(pixels), self.text_states(tokens))

    def match_grid(self, pixels: torch.Tensor, tokens: Any) -> torch.Tensor:
        """``fuse_grid`` of preprocessed images and tokens: each tower runs once per side (differentiable)."""
        return self.fuse_grid(self.image_states(pixels), self.text_states(tokens))


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
