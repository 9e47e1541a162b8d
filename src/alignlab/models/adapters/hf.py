"""Hugging Face transformers models behind the scorer contract: CLIP, SigLIP and BLIP image–text matching.

``load_hf("<hub id or folder>[#mode]", ...)`` (reached as ``load_model("hf:...")``) reads the folder's
``config.json``, builds the matching adapter and loads the processor (image processor + tokenizer)
saved with the model, so preprocessing is the model's own.

* ``CLIPModel`` (model_type ``clip``) — dual encoder. ``score = exp(logit_scale) · cos``, exactly CLIP's
  ``logits_per_image``; semantics ``cosine``, ``score_scale = exp(logit_scale)``.
* ``SiglipModel`` (``siglip``) — dual encoder. ``score = exp(logit_scale) · cos + logit_bias``, exactly
  SigLIP's ``logits_per_image``: a *logit*, ``sigmoid(score)`` is SigLIP's probability that the pair
  matches; semantics ``logit``, ``score_scale = exp(logit_scale)``, ``score_bias = logit_bias``. Rankings
  are those of the cosine (the bias is a constant, the scale positive).
* ``BlipForImageTextRetrieval`` (``blip``) — three modes:

  - ``itm`` (default): cross encoder, ``score = softmax(itm_head)[:, 1]``, the probability of "match"
    in [0, 1]; semantics ``itm_probability``;
  - ``itm-logit``: the same head as log-odds ``l_match - l_no_match = log p / (1 - p)``; semantics
    ``logit`` (use it where scores are fed to a softmax, e.g. as a distillation teacher);
  - ``itc``: dual encoder, the cosine of the ``vision_proj`` / ``text_proj`` [CLS] features (what
    transformers' forward returns with ``use_itm_head=False``); semantics ``cosine``, scale 1.

The mode is chosen with a spec suffix (``hf:Salesforce/blip-itm-base-coco#itc``) or ``mode="itc"``.

Where the files come from:

* a **local folder** (anything written by ``save_pretrained``) always loads, with no network access;
* a **hub id** (``openai/clip-vit-base-patch32``, optionally ``@revision``) loads from the local
  Hugging Face cache; only when downloads are allowed (``allow_download=True``, ``--allow-download`` or
  ``ALIGNLAB_ALLOW_DOWNLOAD=1``) is it fetched. Without the opt-in a model that is not cached fails
  with a :class:`DependencyError` that says how to get it, before anything touches the network.

Adapters are torch modules, loaded in eval mode. Besides the contract (``encode_images`` / ``encode_texts``
/ ``score`` / ``score_pairs``, all batched and under ``torch.no_grad``) dual encoders expose the
differentiable pieces for training a real model as a student: ``preprocess_images(images)`` ->
``pixel_values``, ``tokenize(texts)`` -> a dict of tensors, ``embed_images(pixel_values)`` and
``embed_texts(tokens)`` -> L2-normalised float32 embeddings with gradients.

Fidelity notes: SigLIP texts are padded to the model's maximum length and passed *without* an
attention mask, as SigLIP was trained; BLIP scores equal transformers' ``BlipForImageTextRetrieval``
forward (which feeds the tokenizer's ``[CLS]`` to the ITM head; the original BLIP code swaps in an
``[ENC]`` token).
"""

from __future__ import annotations

import contextlib
import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import ConfigError, DependencyError, ModelError
from alignlab.core.progress import is_quiet, library_bars_off, progress
from alignlab.models.adapters.common import (
    autocast,
    check_batch_size,
    check_fp16,
    check_texts,
    chunks,
    download_allowed,
    files_fingerprint,
    fingerprint,
    how_to_get,
    no_downloads,
    to_pil_list,
)
from alignlab.models.base import (
    CrossEncoder,
    DualEncoder,
    ImageInput,
    TokenStates,
    check_score_shape,
    num_images,
    resolve_device,
)

# model_type -> (class name, modes (first = default), what it is)
SUPPORTED: dict[str, tuple[str, tuple[str, ...], str]] = {
    "clip": ("CLIPModel", ("dual",), "dual encoder, score = exp(logit_scale)*cos"),
    "siglip": ("SiglipModel", ("dual",), "dual encoder, score = exp(logit_scale)*cos + logit_bias (a logit)"),
    "blip": (
        "BlipForImageTextRetrieval",
        ("itm", "itm-logit", "itc"),
        "ITM cross encoder (P(match) or its log-odds) or ITC dual encoder",
    ),
}
HF_OPTIONS = (
    "mode",
    "allow_download",
    "fp16",
    "batch_size",
    "pair_batch_size",
    "max_text_length",
    "cache_dir",
    "revision",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def supported_text() -> str:
    return "; ".join(
        f"{cls} (model_type {t!r}, modes: {', '.join(modes)})" for t, (cls, modes, _) in SUPPORTED.items()
    )


# --- spec parsing and file resolution ----------------------------------------------------------------


def parse_spec(rest: str) -> tuple[str, str | None, str | None]:
    """``"<folder or hub id>[@revision][#mode]"`` -> (target, revision, mode).

    An existing folder is taken whole (its name may contain ``@`` or ``#``); otherwise a ``#mode``
    suffix and, for hub ids, an ``@revision`` suffix are split off.
    """
    rest = rest.strip()
    if not rest:
        raise ConfigError(
            "empty hf: model spec",
            fix="give hf:<hub id or local folder>, e.g. hf:openai/clip-vit-base-patch32",
        )
    if Path(rest).expanduser().is_dir():
        return rest, None, None
    target, mode = rest, None
    if "#" in rest:
        target, _, mode = rest.rpartition("#")
        mode = mode.strip().lower() or None
    revision = None
    if not Path(target).expanduser().is_dir() and "@" in target:
        target, _, revision = target.rpartition("@")
        revision = revision or None
    return target, revision, mode


def _looks_like_path(target: str) -> bool:
    return target.startswith(("/", ".", "~")) or target.count("/") > 1 or "\\" in target


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise DependencyError(
            f"Hugging Face models need transformers ({e})", fix="pip install 'alignlab[hf]'"
        ) from None
    return transformers


def _cached_snapshot(hub_id: str, revision: str | None, cache_dir: str | None) -> Path | None:
    """The cached snapshot folder of ``hub_id`` if its config.json is in the local cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(hub_id, "config.json", cache_dir=cache_dir, revision=revision)
    return Path(found).parent if isinstance(found, str) else None


def _hub_cache_dir(cache_dir: str | None) -> str:
    if cache_dir:
        return str(cache_dir)
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return "the Hugging Face cache"


def _hub_fix(hub_id: str, load_kwargs: dict[str, Any]) -> str:
    if load_kwargs:  # a download was allowed and attempted
        return (
            "the download failed: check the hub id, the network and that HF_HUB_OFFLINE is not set; "
            f"or fetch it with `hf download {hub_id}` and retry, or pass a local folder"
        )
    return how_to_get(hub_id)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# --- the adapters ------------------------------------------------------------------------------------


def _pooled(out: Any) -> torch.Tensor:
    """transformers 4.x returns the projected features as a tensor, 5.x as ``pooler_output``."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HFAdapter(nn.Module):
    """What the CLIP, SigLIP and BLIP adapters share: the model, its processor, batching and identity."""

    family = "hf"
    native_images = True  # takes PIL images at their own size (see base.load_images_for)
    text_keys: tuple[str, ...] = ("input_ids", "attention_mask")
    text_padding: str | bool = "longest"
    # A transformers model of one family (CLIP, SigLIP, BLIP): its heads and config fields differ by family.
    model: Any

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        *,
        source: dict[str, Any],
        mode: str,
        fp16: bool = False,
        batch_size: int = 64,
        max_text_length: int | None = None,
        name: str | None = None,
    ):
        super().__init__()
        self.model = model.eval()
        self.processor = processor
        self.image_processor: Any = getattr(processor, "image_processor", None)
        self.tokenizer: Any = getattr(processor, "tokenizer", None)
        if self.image_processor is None or self.tokenizer is None:
            raise ModelError(
                "the processor has no image processor or no tokenizer",
                where=str(source.get("dir") or source.get("hub_id")),
                fix="save both with processor.save_pretrained(folder)",
            )
        self.source = dict(source)
        self.mode = mode
        self.fp16 = bool(fp16)
        self.batch_size = check_batch_size(batch_size)
        self.max_text_length = int(max_text_length or self._default_max_text_length())
        limit = int(getattr(self._text_config(), "max_position_embeddings", self.max_text_length))
        if not 2 <= self.max_text_length <= limit:
            raise ConfigError(
                f"max_text_length {self.max_text_length} is outside what the model can read",
                fix=f"give a value from 2 to {limit} (its max_position_embeddings)",
            )
        self.name = name or f"hf:{source.get('hub_id') or source.get('dir')}"

    def _text_config(self) -> Any:
        return getattr(self.model.config, "text_config", self.model.config)

    def _default_max_text_length(self) -> int:
        limit = int(getattr(self._text_config(), "max_position_embeddings", 512))
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            limit = min(limit, tok_max)
        return limit

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def identity(self) -> str:
        """A hash of what determines the outputs: weights (files or hub commit), class, mode and settings."""
        desc = {
            "adapter": type(self).__name__,
            "source": self.source,
            "mode": self.mode,
            "max_text_length": self.max_text_length,
            "padding": str(self.text_padding),
            "text_keys": list(self.text_keys),
            "fp16": self.fp16,
        }
        return fingerprint(desc)

    def describe(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "score_semantics": self.score_semantics,
            "dual": self.is_dual,
            "model_class": type(self.model).__name__,
            "mode": self.mode,
            "source": self.source,
            "device": str(self.device),
            "fp16": self.fp16,
            "max_text_length": self.max_text_length,
            "image_processor": type(self.image_processor).__name__,
            "identity": self.identity,
        }
        if self.is_dual:
            d["score_scale"] = self.score_scale
            d["score_bias"] = self.score_bias
        return d

    # Preprocessing: the model's own processor.
    def preprocess_images(self, images: ImageInput) -> torch.Tensor:
        """Images -> ``pixel_values`` on the model's device and dtype (the model's own resize/normalise)."""
        pil = to_pil_list(images)
        pixels = self.image_processor(images=pil, return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, dtype=self.dtype)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts -> the model's token tensors (truncated to ``max_text_length``) on its device."""
        texts = check_texts(texts)
        enc = self.tokenizer(
            texts,
            padding=self.text_padding,
            truncation=True,
            max_length=self.max_text_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in enc.items() if k in self.text_keys}

    def _autocast(self) -> Any:
        # Weights are loaded in float16 when fp16 is on; autocast keeps the few float32 ops consistent.
        return autocast(self.fp16, self.device)

    def _bar(self, n: int, what: str) -> Any:
        return progress(total=n, desc=f"{self.name} {what}", unit=what) if n > self.batch_size else None


class HFDualEncoder(HFAdapter, DualEncoder):
    """A dual encoder: ``encode_images`` / ``encode_texts`` give L2-normalised float32 embeddings."""

    score_semantics = "cosine"

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed_texts(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def embed_dim(self) -> int:
        raise NotImplementedError

    def logit_params(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The model's own learned ``(scale, bias)`` as differentiable tensors
        (``score = scale · cos + bias``), for training; ``None`` where the model has none (BLIP ITC: a
        fixed scale of 1)."""
        return None, None

    # The towers (training contract, models/base.py): CLIP and SigLIP name them vision_model/text_model.
    def image_encoder(self) -> nn.Module:
        return self.model.vision_model

    def text_encoder(self) -> nn.Module:
        return self.model.text_model

    @torch.no_grad()
    def encode_images(self, images: ImageInput) -> torch.Tensor:
        n = num_images(images)
        out, bar = [], self._bar(n, "images")
        for a, b in chunks(n, self.batch_size):
            with self._autocast():
                out.append(self.embed_images(self.preprocess_images(images[a:b])))
            if bar is not None:
                bar.update(b - a)
        if bar is not None:
            bar.close()
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim, device=self.device)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = check_texts(texts)
        out, bar = [], self._bar(len(texts), "texts")
        for a, b in chunks(len(texts), self.batch_size):
            with self._autocast():
                out.append(self.embed_texts(self.tokenize(texts[a:b])))
            if bar is not None:
                bar.update(b - a)
        if bar is not None:
            bar.close()
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim, device=self.device)


class HFClip(HFDualEncoder):
    """transformers' ``CLIPModel``: ``score = exp(logit_scale) · cos`` (its ``logits_per_image``)."""

    family = "clip"

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(_pooled(self.model.get_image_features(pixel_values=pixel_values)).float(), dim=-1)

    def embed_texts(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(_pooled(self.model.get_text_features(**tokens)).float(), dim=-1)

    @property
    def score_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp())

    def logit_params(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.model.logit_scale.float().exp().reshape(()), None


class HFSiglip(HFClip):
    """transformers' ``SiglipModel``: ``score = exp(logit_scale) · cos + logit_bias``, a sigmoid logit."""

    family = "siglip"
    score_semantics = "logit"
    text_keys = ("input_ids",)  # SigLIP was trained on max-length padding without an attention mask
    text_padding = "max_length"

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    def _default_max_text_length(self) -> int:
        # Always the model's full text length: the pooled token is the last position.
        return int(self._text_config().max_position_embeddings)

    @property
    def score_bias(self) -> float:
        return float(self.model.logit_bias.detach().float().reshape(-1)[0])

    def logit_params(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.model.logit_scale.float().exp().reshape(()), self.model.logit_bias.float().reshape(())


class HFBlipITC(HFDualEncoder):
    """BLIP's image–text contrastive (ITC) heads: cosine of the projected [CLS] features, scale 1."""

    family = "blip"

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.image_text_hidden_size)

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        cls = self.model.vision_model(pixel_values=pixel_values).last_hidden_state[:, 0]
        return F.normalize(self.model.vision_proj(cls).float(), dim=-1)

    def embed_texts(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        cls = self.model.text_encoder(**tokens).last_hidden_state[:, 0]
        return F.normalize(self.model.text_proj(cls).float(), dim=-1)

    def text_encoder(self) -> nn.Module:
        return self.model.text_encoder


class HFBlipITM(HFAdapter, CrossEncoder):
    """BLIP's image–text matching (ITM) head as a cross encoder.

    Each image is encoded once; every (image, text) pair then runs the text encoder with cross-attention
    to the image tokens, in batches of ``pair_batch_size`` pairs, so ``score`` over N images and M texts
    costs N vision passes and N·M text passes. The ITM head gives logits ``(l_no, l_yes)``; the score is
    ``softmax(l)[yes]`` (mode ``itm``, semantics ``itm_probability``) or ``l_yes - l_no`` (mode
    ``itm-logit``, semantics ``logit``; ``sigmoid`` of it is the same probability).
    """

    family = "blip"

    def __init__(self, *args: Any, pair_batch_size: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pair_batch_size = check_batch_size(pair_batch_size or self.batch_size)
        self.score_semantics = "logit" if self.mode == "itm-logit" else "itm_probability"

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.vision_model(pixel_values=pixel_values).last_hidden_state

    # The training contract (models/base.py). BLIP's text encoder attends to the image in every layer, so
    # a text's states are its tokens (the fusion runs the whole text encoder) and its own tower is only
    # the word embeddings; training reads ``l_yes - l_no``, the unbounded match logit, whatever the mode.
    def image_encoder(self) -> nn.Module:
        return self.model.vision_model

    def text_encoder(self) -> nn.Module:
        return self.model.text_encoder.embeddings

    def image_states(self, pixels: torch.Tensor) -> TokenStates:
        tokens = self.image_tokens(pixels)
        return TokenStates({"tokens": tokens}, pooled=tokens[:, 0])

    def text_states(self, tokens: Any) -> TokenStates:
        mask = "attention_mask" if "attention_mask" in tokens else None
        return TokenStates(dict(tokens), mask=mask)

    def fuse_pairs(self, image: TokenStates, text: TokenStates) -> torch.Tensor:
        logits = self.match_logits(image["tokens"], dict(text.tensors))
        return logits[:, 1] - logits[:, 0]

    @property
    def pair_chunk(self) -> int:  # type: ignore[override]
        return int(self.pair_batch_size)

    def match_logits(self, image_tokens: torch.Tensor, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """ITM logits ``[P, 2]`` of ``P`` aligned (image tokens, text) pairs (differentiable)."""
        image_mask = torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=image_tokens.device)
        hidden = self.model.text_encoder(
            **tokens, encoder_hidden_states=image_tokens, encoder_attention_mask=image_mask
        ).last_hidden_state
        return self.model.itm_head(hidden[:, 0]).float()

    def logits_to_score(self, logits: torch.Tensor) -> torch.Tensor:
        if self.mode == "itm-logit":
            return logits[:, 1] - logits[:, 0]
        return logits.softmax(-1)[:, 1]

    @torch.no_grad()
    def score(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        texts = check_texts(texts)
        n, m = num_images(images), len(texts)
        out = torch.zeros(n, m, device=self.device)
        if n == 0 or m == 0:
            return out
        tokens = self.tokenize(texts)
        flat = out.view(-1)
        bar = (
            progress(total=n * m, desc=f"{self.name} pairs", unit="pair")
            if n * m > self.pair_batch_size
            else None
        )
        for a, b in chunks(n, self.batch_size):
            with self._autocast():
                img = self.image_tokens(self.preprocess_images(images[a:b]))
            for p, q in chunks((b - a) * m, self.pair_batch_size):
                idx = torch.arange(p, q, device=self.device)
                ii, jj = idx // m, idx % m
                with self._autocast():
                    logits = self.match_logits(img[ii], {k: v[jj] for k, v in tokens.items()})
                flat[a * m + p : a * m + q] = self.logits_to_score(logits)
                if bar is not None:
                    bar.update(q - p)
        if bar is not None:
            bar.close()
        return check_score_shape(out, n, m, self.name)

    @torch.no_grad()
    def score_pairs(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        texts = check_texts(texts)
        if num_images(images) != len(texts):
            raise ModelError(
                f"score_pairs got {num_images(images)} images and {len(texts)} texts",
                fix="give one text per image",
            )
        out = []
        for a, b in chunks(len(texts), min(self.batch_size, self.pair_batch_size)):
            with self._autocast():
                img = self.image_tokens(self.preprocess_images(images[a:b]))
                out.append(self.logits_to_score(self.match_logits(img, self.tokenize(texts[a:b]))))
        return torch.cat(out) if out else torch.zeros(0, device=self.device)


# --- loading -------------------------------------------------------------------------------------------


def _dtype_kwarg(transformers: Any, dtype: torch.dtype) -> dict[str, Any]:
    major_minor = tuple(int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    # transformers >= 4.56 calls it ``dtype`` (5.x loads in the checkpoint's dtype unless told).
    return {"dtype": dtype} if major_minor >= (4, 56) else {"torch_dtype": dtype}


def _load_parts(
    transformers: Any,
    name_or_path: str,
    cls_name: str,
    load_kwargs: dict[str, Any],
    dtype: torch.dtype,
    where: str,
    hub_id: str | None,
) -> tuple[nn.Module, Any]:
    cls = getattr(transformers, cls_name)
    missing_is = DependencyError if hub_id else ModelError
    fix = (
        _hub_fix(hub_id, load_kwargs)
        if hub_id
        else "check that the folder holds a complete save_pretrained() output"
    )
    try:
        with library_bars_off(), warnings.catch_warnings():
            # torch warns about a pickle's protocol before refusing it (handled below): one line is enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            model, info = cls.from_pretrained(
                name_or_path, output_loading_info=True, **_dtype_kwarg(transformers, dtype), **load_kwargs
            )
    except pickle.UnpicklingError:  # torch.load(weights_only=True) refused a pickle: never unpickle it
        raise ModelError(
            f"the {cls_name} weights are a pickle (pytorch_model.bin), which alignlab does not "
            "unpickle: it could run code",
            where=where,
            fix="convert the weights to safetensors (model.save_pretrained(folder, "
            "safe_serialization=True) where you trust the file)",
        ) from None
    except (OSError, ValueError, RuntimeError) as e:
        raise missing_is(
            f"cannot load the {cls_name} weights: {_first_line(e)}", where=where, fix=fix
        ) from None
    missing = [k for k in (info or {}).get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise ModelError(
            f"the checkpoint has no weights for {len(missing)} {cls_name} parameter(s), e.g. "
            f"{sorted(missing)[0]!r}",
            where=where,
            fix=f"use a checkpoint trained as {cls_name} (supported: {supported_text()})",
        )
    try:
        processor = transformers.AutoProcessor.from_pretrained(name_or_path, **load_kwargs)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first_error = _first_line(e)
        processor = None
    else:
        first_error = ""
    if processor is None or not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        # Some folders have the two parts saved separately (no processor_config.json).
        try:
            image_processor = transformers.AutoImageProcessor.from_pretrained(name_or_path, **load_kwargs)
            tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, **load_kwargs)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise missing_is(
                f"no usable processor/tokenizer: {first_error or _first_line(e)}",
                where=where,
                fix=fix
                if hub_id
                else "save the model's processor into the folder with processor.save_pretrained(folder)",
            ) from None
        processor = _Parts(image_processor, tokenizer)
    return model, processor


class _Parts:
    """An image processor and a tokenizer, when no joint processor was saved."""

    def __init__(self, image_processor: Any, tokenizer: Any):
        self.image_processor = image_processor
        self.tokenizer = tokenizer


def load_hf(
    rest: str,
    *,
    device: str | torch.device = "cpu",
    mode: str | None = None,
    allow_download: bool | None = None,
    fp16: bool = False,
    batch_size: int = 64,
    pair_batch_size: int | None = None,
    max_text_length: int | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
    **unknown: Any,
) -> HFAdapter:
    """Load ``hf:<hub id or local folder>[@revision][#mode]`` as a scorer (see the module docstring).

    Args:
        rest: the spec after ``hf:``.
        device: ``"cpu" | "cuda[:i]" | "mps" | "auto"``.
        mode: BLIP only: ``"itm"`` (default), ``"itm-logit"`` or ``"itc"``; same as a ``#mode`` suffix.
        allow_download: fetch a hub model that is not cached (default: ``ALIGNLAB_ALLOW_DOWNLOAD``).
        fp16: half-precision weights and autocast (CUDA only); outputs stay float32.
        batch_size: images or texts per forward pass; ``pair_batch_size``: (image, text) pairs per ITM pass.
        max_text_length: token limit (default: the model's own; longer texts are truncated).
        cache_dir, revision: Hugging Face cache folder and hub revision (branch, tag or commit).
    """
    if unknown:
        raise ConfigError(
            f"unknown option(s) for hf: models: {', '.join(sorted(unknown))}",
            fix=f"valid options: device, {', '.join(HF_OPTIONS)}",
        )
    dev = resolve_device(device)
    check_fp16(fp16, dev)
    check_batch_size(batch_size)
    target, spec_revision, spec_mode = parse_spec(rest)
    if mode is not None and spec_mode is not None and mode.lower() != spec_mode:
        raise ConfigError(f"mode {mode!r} contradicts the spec's #{spec_mode}", fix="give the mode once")
    mode = (mode or spec_mode or "").lower() or None
    if revision is not None and spec_revision is not None and revision != spec_revision:
        raise ConfigError(
            f"revision {revision!r} contradicts the spec's @{spec_revision}", fix="give the revision once"
        )
    revision = revision or spec_revision
    transformers = _import_transformers()
    if is_quiet():  # transformers shows a bar while loading weights
        transformers.utils.logging.disable_progress_bar()

    folder = Path(target).expanduser()
    hub_id: str | None = None
    load_kwargs: dict[str, Any] = {}
    if folder.is_dir():
        if revision is not None:
            raise ConfigError("a revision only applies to hub ids, not to a local folder", where=target)
        source: dict[str, Any] = {"dir": str(folder.resolve())}
        name_or_path = str(folder)
    else:
        if _looks_like_path(target) or not _HUB_ID.match(target):
            raise ModelError(
                "model folder not found",
                where=target,
                fix="give an existing folder written by save_pretrained, or a hub id like "
                "openai/clip-vit-base-patch32",
            )
        hub_id = target
        snapshot = _cached_snapshot(hub_id, revision, cache_dir)
        if snapshot is not None:
            name_or_path = str(snapshot)
            source = {"hub_id": hub_id, "revision": revision, "snapshot": snapshot.name}
        elif download_allowed(allow_download):
            name_or_path = hub_id
            load_kwargs = {"revision": revision, "cache_dir": cache_dir}
            source = {"hub_id": hub_id, "revision": revision}
        else:
            raise DependencyError(
                f"model {hub_id!r} is not in the local Hugging Face cache "
                f"({_hub_cache_dir(cache_dir)}) and downloads are off",
                where=f"hf:{rest}",
                fix=how_to_get(hub_id),
            )
    where = f"hf:{rest}"
    # Unless a download was asked for, everything is read from disk; the guard makes sure of it.
    with contextlib.nullcontext() if load_kwargs else no_downloads():
        return _build(
            transformers,
            name_or_path,
            load_kwargs,
            where,
            hub_id,
            target,
            folder,
            source,
            mode,
            dev,
            fp16,
            batch_size,
            pair_batch_size,
            max_text_length,
        )


def _build(
    transformers: Any,
    name_or_path: str,
    load_kwargs: dict[str, Any],
    where: str,
    hub_id: str | None,
    target: str,
    folder: Path,
    source: dict[str, Any],
    mode: str | None,
    dev: torch.device,
    fp16: bool,
    batch_size: int,
    pair_batch_size: int | None,
    max_text_length: int | None,
) -> HFAdapter:
    try:
        config = transformers.AutoConfig.from_pretrained(name_or_path, **load_kwargs)
    except (OSError, ValueError, KeyError) as e:
        err = DependencyError if hub_id else ModelError
        raise err(
            f"cannot read the model config: {_first_line(e)}",
            where=where,
            fix=_hub_fix(hub_id, load_kwargs)
            if hub_id
            else "the folder needs a config.json from save_pretrained",
        ) from None
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED:
        arch_text = ", ".join(getattr(config, "architectures", None) or []) or "?"
        raise ModelError(
            f"unsupported model type {model_type!r} ({arch_text})",
            where=where,
            fix=f"supported: {supported_text()}",
        )
    cls_name, modes, _ = SUPPORTED[model_type]
    archs = getattr(config, "architectures", None) or []
    if model_type == "blip" and archs and cls_name not in archs:
        raise ModelError(
            f"this BLIP checkpoint is a {', '.join(archs)}, which has no image–text matching head",
            where=where,
            fix="use a BlipForImageTextRetrieval checkpoint, e.g. Salesforce/blip-itm-base-coco",
        )
    mode = mode or modes[0]
    if mode not in modes:
        raise ConfigError(
            f"mode {mode!r} does not apply to {cls_name}",
            where=where,
            fix=f"{cls_name} modes: {', '.join(modes)}",
        )
    dtype = torch.float16 if fp16 else torch.float32
    model, processor = _load_parts(transformers, name_or_path, cls_name, load_kwargs, dtype, where, hub_id)
    if hub_id is not None:
        commit = getattr(config, "_commit_hash", None)
        if commit:
            source["commit"] = commit
        snap = Path(name_or_path)
        if snap.is_dir():
            source["files"] = files_fingerprint(snap)
    else:
        source["files"] = files_fingerprint(folder)
    model = model.to(dev).eval()
    common: dict[str, Any] = {
        "source": source,
        "mode": mode,
        "fp16": fp16,
        "batch_size": batch_size,
        "max_text_length": max_text_length,
        "name": f"hf:{hub_id or target}" + ("" if mode == modes[0] else f"#{mode}"),
    }
    if model_type == "clip":
        return HFClip(model, processor, **common)
    if model_type == "siglip":
        return HFSiglip(model, processor, **common)
    if mode == "itc":
        return HFBlipITC(model, processor, **common)
    return HFBlipITM(model, processor, pair_batch_size=pair_batch_size, **common)
