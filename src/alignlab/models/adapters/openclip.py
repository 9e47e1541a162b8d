"""open_clip models behind the scorer contract: ``load_model("open_clip:<arch>@<pretrained tag or file>")``.

Optional: needs the ``openclip`` extra (``pip install 'alignlab[openclip]'``). open_clip depends on
torchvision, which must match the installed torch exactly (on x86_64 CUDA machines that is e.g.
``torch==2.14.1 torchvision==0.29.1``), so it is kept out of the core install.

Specs:

* ``open_clip:ViT-B-32@laion2b_s34b_b79k`` — an architecture from ``open_clip.list_models()`` and one of
  its pretrained tags (``open_clip.list_pretrained_tags_by_model(arch)``);
* ``open_clip:ViT-B-32@/path/to/weights.safetensors`` — the architecture with a local weights file
  (``.safetensors``, ``.pt``/``.bin`` state dicts; read by open_clip with ``weights_only=True``);
* ``open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K`` — a model published on the hub in open_clip
  format (config and weights together; nothing after ``@``).

Scores: ``exp(logit_scale) · cos``, semantics ``cosine``; models trained with a sigmoid loss (open_clip's
SigLIP ports) also have ``logit_bias`` and then score ``exp(logit_scale) · cos + logit_bias`` with
semantics ``logit``, as in :mod:`alignlab.models.adapters.hf`. Preprocessing is open_clip's own
evaluation transform for the checkpoint; the tokenizer is ``open_clip.get_tokenizer(arch)``.

Downloads are off unless allowed (``allow_download=True``, ``--allow-download``,
``ALIGNLAB_ALLOW_DOWNLOAD=1``). Without the opt-in open_clip runs with the hub in offline mode and
URL downloads refused, so a tag whose weights are cached loads, and one that is not fails with a
:class:`DependencyError` that says how to get it. fp16 (CUDA only) runs the forward passes under
autocast; embeddings are float32.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import ConfigError, DependencyError, ModelError
from alignlab.models.adapters.common import (
    ALLOW_DOWNLOAD_ENV,
    autocast,
    check_batch_size,
    check_fp16,
    check_texts,
    chunks,
    download_allowed,
    files_fingerprint,
    fingerprint,
    no_downloads,
    to_pil_list,
)
from alignlab.models.base import DualEncoder, ImageInput, num_images, resolve_device

HF_HUB_PREFIX = "hf-hub:"
OPEN_CLIP_OPTIONS = ("allow_download", "fp16", "batch_size", "cache_dir")
INSTALL_HINT = (
    "pip install 'alignlab[openclip]' (open_clip needs a torchvision built for the installed torch, "
    "e.g. torch==2.14.1 with torchvision==0.29.1)"
)


def import_open_clip() -> Any:
    """The ``open_clip`` module, or a :class:`DependencyError` saying how to install it."""
    try:
        import open_clip
    except ImportError as e:  # also torchvision failing to import beside this torch
        raise DependencyError(
            f"open_clip models need the open_clip package, which does not import here ({e})", fix=INSTALL_HINT
        ) from None
    return open_clip


def parse_spec(rest: str) -> tuple[str, str | None]:
    """``"<arch>@<tag or file>"`` or ``"hf-hub:<repo>"`` -> (arch, pretrained)."""
    rest = rest.strip()
    if rest.startswith(HF_HUB_PREFIX):
        arch, _, pretrained = rest.partition("@")
        if pretrained:
            raise ConfigError(
                "an hf-hub: open_clip model carries its own weights; drop the @ part",
                where=f"open_clip:{rest}",
            )
        return arch, None
    arch, sep, pretrained = rest.partition("@")
    if not arch or not sep or not pretrained:
        raise ConfigError(
            f"open_clip spec {rest!r} needs an architecture and pretrained weights",
            fix="write open_clip:<arch>@<pretrained tag or weights file>, "
            "e.g. open_clip:ViT-B-32@laion2b_s34b_b79k",
        )
    return arch, pretrained


class OpenClipDual(nn.Module, DualEncoder):
    """An open_clip CLIP (or SigLIP) model as a dual encoder; differentiable pieces as in the HF adapters."""

    native_images = True  # takes PIL images at their own size (see base.load_images_for)
    model: Any  # an open_clip CLIP model: encode_image, encode_text, logit_scale (open_clip is untyped)

    def __init__(
        self,
        model: nn.Module,
        preprocess: Any,
        tokenizer: Any,
        *,
        source: dict[str, Any],
        fp16: bool = False,
        batch_size: int = 64,
        name: str,
    ):
        super().__init__()
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.source = dict(source)
        self.fp16 = bool(fp16)
        self.batch_size = check_batch_size(batch_size)
        self.name = name
        self.score_semantics = "logit" if getattr(model, "logit_bias", None) is not None else "cosine"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def identity(self) -> str:
        return fingerprint({"adapter": type(self).__name__, "source": self.source, "fp16": self.fp16})

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score_semantics": self.score_semantics,
            "dual": True,
            "source": self.source,
            "device": str(self.device),
            "fp16": self.fp16,
            "score_scale": self.score_scale,
            "score_bias": self.score_bias,
            "identity": self.identity,
        }

    def preprocess_images(self, images: ImageInput) -> torch.Tensor:
        pil = to_pil_list(images)
        if not pil:
            raise ModelError("no images to preprocess")
        return torch.stack([self.preprocess(im) for im in pil]).to(self.device)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(check_texts(texts)).to(self.device)

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixel_values).float(), dim=-1)

    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    # The training contract (models/base.py).
    def logit_params(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        scale = getattr(self.model, "logit_scale", None)
        bias = getattr(self.model, "logit_bias", None)
        return (
            scale.float().exp().reshape(()) if scale is not None else None,
            bias.float().reshape(()) if bias is not None else None,
        )

    def image_encoder(self) -> nn.Module:
        return self.model.visual

    def text_encoder(self) -> nn.Module:
        # CustomTextCLIP keeps its text tower in `text`; the original CLIP class spreads it over the model.
        text = getattr(self.model, "text", None)
        return text if isinstance(text, nn.Module) else self.model.transformer

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        # Everything but the learned logit scale and bias (the original CLIP's text tower is not one module).
        skip = {
            id(p) for p in (getattr(self.model, "logit_scale", None), getattr(self.model, "logit_bias", None))
        }
        yield from (p for p in self.model.parameters() if id(p) not in skip)

    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[-1])
        return int(getattr(self.model, "embed_dim", 0) or 0)

    @torch.no_grad()
    def encode_images(self, images: ImageInput) -> torch.Tensor:
        n = num_images(images)
        out = []
        for a, b in chunks(n, self.batch_size):
            with autocast(self.fp16, self.device):
                out.append(self.embed_images(self.preprocess_images(images[a:b])))
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim, device=self.device)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        texts = check_texts(texts)
        out = []
        for a, b in chunks(len(texts), self.batch_size):
            with autocast(self.fp16, self.device):
                out.append(self.embed_texts(self.tokenize(texts[a:b])))
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim, device=self.device)

    @property
    def score_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp().reshape(-1)[0])

    @property
    def score_bias(self) -> float:
        bias = getattr(self.model, "logit_bias", None)
        return 0.0 if bias is None else float(bias.detach().float().reshape(-1)[0])


def load_open_clip(
    rest: str,
    *,
    device: str | torch.device = "cpu",
    allow_download: bool | None = None,
    fp16: bool = False,
    batch_size: int = 64,
    cache_dir: str | None = None,
    **unknown: Any,
) -> OpenClipDual:
    """Load ``open_clip:<arch>@<tag or file>`` (or ``open_clip:hf-hub:<repo>``) as a dual encoder."""
    if unknown:
        raise ConfigError(
            f"unknown option(s) for open_clip: models: {', '.join(sorted(unknown))}",
            fix=f"valid options: device, {', '.join(OPEN_CLIP_OPTIONS)}",
        )
    dev = resolve_device(device)
    check_fp16(fp16, dev)
    check_batch_size(batch_size)
    arch, pretrained = parse_spec(rest)
    where = f"open_clip:{rest}"
    open_clip = import_open_clip()
    source: dict[str, Any] = {"arch": arch, "open_clip": getattr(open_clip, "__version__", "?")}
    if not arch.startswith(HF_HUB_PREFIX):
        assert pretrained is not None  # parse_spec gives weights for every spec that is not hf-hub:
        models = list(open_clip.list_models())
        if arch not in models:
            close = difflib.get_close_matches(arch, models, n=3)
            raise ConfigError(
                f"unknown open_clip architecture {arch!r}",
                where=where,
                fix=f"did you mean {', '.join(close)}?"
                if close
                else "see open_clip.list_models() for the architectures",
            )
        weights = Path(pretrained).expanduser()
        if weights.is_file():
            pretrained = str(weights.resolve())
            st = weights.stat()
            source["weights"] = [weights.name, st.st_size, st.st_mtime_ns]
        else:
            tags = list(open_clip.list_pretrained_tags_by_model(arch))
            if pretrained not in tags:
                looks_like_file = any(c in pretrained for c in "/\\") or Path(pretrained).suffix
                raise (ModelError if looks_like_file else ConfigError)(
                    f"{pretrained!r} is neither a weights file nor a pretrained tag of {arch}",
                    where=where,
                    fix=f"tags of {arch}: {', '.join(tags) or 'none'}; or give the path of a weights file",
                )
            source["pretrained"] = pretrained
    else:
        source["hub"] = arch[len(HF_HUB_PREFIX) :]
    allowed = download_allowed(allow_download)
    try:
        with contextlib.nullcontext() if allowed else no_downloads():
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, device=dev, cache_dir=cache_dir
            )
            tokenizer = open_clip.get_tokenizer(arch)
    except Exception as e:  # open_clip raises RuntimeError/OSError/HF errors/our DownloadBlocked alike
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not allowed and "weights" not in source:
            label = arch + (f"@{pretrained}" if pretrained else "")
            raise DependencyError(
                f"cannot load {label} from local files only: {msg}",
                where=where,
                fix=f"run once with --allow-download (or {ALLOW_DOWNLOAD_ENV}=1) to fetch it "
                "into the cache, or give a weights file: open_clip:<arch>@/path/to/weights",
            ) from None
        raise ModelError(f"open_clip could not build {arch}: {msg}", where=where) from None
    if "hub" in source:
        snap = _hub_snapshot(source["hub"], cache_dir)
        if snap is not None:
            source["files"] = files_fingerprint(snap)
    return OpenClipDual(
        model.to(dev).eval(),
        preprocess,
        tokenizer,
        source=source,
        fp16=fp16,
        batch_size=batch_size,
        name=where,
    )


def _hub_snapshot(repo: str, cache_dir: str | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for name in ("open_clip_config.json", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found).parent
    return None
