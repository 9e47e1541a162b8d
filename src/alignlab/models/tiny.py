"""Tiny image–text models that train on ShapesWorld in minutes on 2 CPU cores.

* :class:`ImageTower` — a small CNN: a stride-1 stem at full resolution, then stages of one stride-2
  and ``stage_depth - 1`` stride-1 3×3 convolutions, each followed by BatchNorm (or GroupNorm) and ReLU.
  With the defaults (64×64 input, stem 16, stages 32/64/128) the last feature map is an 8×8 grid,
  about 8 pixels per cell: a ShapesWorld object (9–19 pixels wide) covers one or two cells, so a
  cell's token can say what it holds. The grid becomes tokens with learned position embeddings,
  followed by ``layers`` transformer layers and a ``[CLS]`` token. Keeping the grid (instead of global
  pooling) keeps *where* things are, which spatial relations need. (The earlier tower had one
  stride-2 convolution per stage from the first layer on and a 4×4 grid; it learned attribute presence
  to a held-out micro-F1 of only 0.63, see docs/retrieval.md "Built-in towers".)
* :class:`TextTower` — word embeddings + positions + ``text_layers`` transformer layers; ``[CLS]`` pools.
* :class:`TinyDualEncoder` — both towers, linear projections to ``embed_dim``, L2-normalised
  embeddings and a learnable logit scale (CLIP's temperature): ``score = exp(s) * cos(img, txt)``.
* :class:`TinyCrossEncoder` — the same towers plus ``fusion_layers`` cross-attention layers in which
  text tokens attend to image tokens, and a match head on the text ``[CLS]``: ``score = logit``.

Each model has one dataclass config and carries its :class:`~alignlab.data.text.WordTokenizer`.

>>> from alignlab.data.text import WordTokenizer
>>> tok = WordTokenizer.build(["a red circle", "a blue square"])
>>> model = TinyDualEncoder(TinyDualConfig(width=32, embed_dim=16), tok)
>>> imgs = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
>>> model.score(imgs, ["a red circle", "a blue square"]).shape
torch.Size([2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import ModelError
from alignlab.data.images import stack_images
from alignlab.data.text import PAD, WordTokenizer
from alignlab.models.base import (
    CrossEncoder,
    ImageInput,
    ProjectedDualEncoder,
    TokenStates,
    as_text_list,
    check_score_shape,
    num_images,
)


@dataclass
class TinyImageConfig:
    """The image tower alone (also used by other areas, e.g. as the MMT visual encoder)."""

    image_size: int = 64  # input resolution; images are resized to it
    channels: tuple[int, ...] = (32, 64)  # CNN channels of the stride-2 stages before the last one
    width: int = 128  # token width (the last CNN stage outputs this many channels)
    layers: int = 1  # transformer layers over the grid tokens
    heads: int = 4
    dropout: float = 0.0
    pool: str = "mean"  # "mean" of all tokens, or the "cls" token
    stem: int = 16  # channels of a stride-1 convolution at full resolution before the stages (0: none)
    stage_depth: int = 2  # 3x3 convolutions per stage: one with stride 2, then stride-1 ones
    norm: str = "batch"  # normalisation after each convolution: "batch" (BatchNorm) or "group" (GroupNorm)

    def __post_init__(self) -> None:
        if self.pool not in ("mean", "cls"):
            raise ValueError("pool must be 'mean' or 'cls'")
        if self.norm not in ("batch", "group"):
            raise ValueError("norm must be 'batch' or 'group'")
        if self.stage_depth < 1 or self.stem < 0:
            raise ValueError("stage_depth must be at least 1 and stem at least 0")
        if self.image_size % (2 ** (len(self.channels) + 1)) != 0:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**{len(self.channels) + 1}")
        if self.width % self.heads != 0:
            raise ValueError("width must be divisible by heads")

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (len(self.channels) + 1)


@dataclass
class TinyDualConfig:
    image_size: int = 64  # input resolution
    width: int = 128  # token width of both towers
    embed_dim: int = 128  # joint embedding size
    image_channels: tuple[int, ...] = (32, 64)  # with image_size 64: an 8 x 8 grid of image tokens
    image_layers: int = 1
    text_layers: int = 2
    heads: int = 4
    max_text_len: int = 32
    dropout: float = 0.0
    init_temperature: float = 0.05  # initial softmax temperature; its log-inverse is learned
    pool: str = "mean"  # how each tower pools its tokens: "mean" or "cls"
    image_stem: int = 16  # full-resolution stem convolution of the image tower (TinyImageConfig.stem)
    image_stage_depth: int = 2  # convolutions per image-tower stage (TinyImageConfig.stage_depth)
    image_norm: str = "batch"  # "batch" or "group" (TinyImageConfig.norm)

    def image_config(self) -> TinyImageConfig:
        return TinyImageConfig(
            self.image_size,
            tuple(self.image_channels),
            self.width,
            self.image_layers,
            self.heads,
            self.dropout,
            self.pool,
            self.image_stem,
            self.image_stage_depth,
            self.image_norm,
        )


@dataclass
class TinyCrossConfig:
    image_size: int = 64
    width: int = 128
    image_channels: tuple[int, ...] = (32, 64)
    image_layers: int = 1
    text_layers: int = 2
    fusion_layers: int = 2  # cross-attention layers: text tokens attend to image tokens
    heads: int = 4
    max_text_len: int = 32
    dropout: float = 0.0
    pair_chunk: int = 4096  # (image, text) pairs per forward pass when scoring all pairs
    image_stem: int = 16
    image_stage_depth: int = 2
    image_norm: str = "batch"
    # A dual-encoder score beside the fusion: ``score = exp(s) * cos(proj(pooled image), proj(pooled text))
    # + fusion logit``, with the projections and scale of a tiny dual encoder (pool "mean"). The towers
    # and these can be copied from a trained dual (:meth:`TinyCrossEncoder.load_dual`), and the fusion
    # head starts at zero, so the cross encoder starts as that dual and its fusion learns a correction.
    dual_score: bool = False
    embed_dim: int = 0  # projection size of the dual score (0: width)
    init_temperature: float = 0.05  # the dual score's initial temperature (as TinyDualConfig)
    head_pool: str = "first"  # what the match head reads: the "first" fused text token, or the "mean" of them

    def __post_init__(self) -> None:
        if self.head_pool not in ("first", "mean"):
            raise ValueError("head_pool must be 'first' or 'mean'")
        if self.embed_dim < 0:
            raise ValueError("embed_dim must be at least 0 (0: the width)")

    def image_config(self) -> TinyImageConfig:
        return TinyImageConfig(
            self.image_size,
            tuple(self.image_channels),
            self.width,
            self.image_layers,
            self.heads,
            self.dropout,
            "mean",
            self.image_stem,
            self.image_stage_depth,
            self.image_norm,
        )


def _encoder_layer(width: int, heads: int, dropout: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        width,
        heads,
        dim_feedforward=2 * width,
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


class ImageTower(nn.Module):
    """uint8/float images -> (grid tokens ``[B, 1 + G*G, W]`` with ``[CLS]`` first, pooled ``[B, W]``)."""

    def __init__(self, cfg: TinyImageConfig):
        super().__init__()
        self.config = cfg
        stages: list[nn.Module] = []
        c_in = 3

        def conv(c_out: int, stride: int) -> None:
            nonlocal c_in
            norm = nn.BatchNorm2d(c_out) if cfg.norm == "batch" else nn.GroupNorm(min(8, c_out), c_out)
            stages.extend(
                [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), norm, nn.ReLU(inplace=True)]
            )
            c_in = c_out

        # A stride-1 stem sees the full resolution: small ShapesWorld objects are ~10 pixels wide, and a
        # stride-2 first layer loses the outlines that tell a star from a circle or a bat from a kite.
        if cfg.stem:
            conv(cfg.stem, 1)
        for c in (*cfg.channels, cfg.width):
            conv(c, 2)
            for _ in range(cfg.stage_depth - 1):
                conv(c, 1)
        self.cnn = nn.Sequential(*stages)
        self.token_proj = nn.Linear(cfg.width, cfg.width)  # rectified CNN features -> signed token space
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos = nn.Parameter(torch.randn(1, 1 + cfg.grid * cfg.grid, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(
            _encoder_layer(cfg.width, cfg.heads, cfg.dropout) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.width)

    def preprocess(self, images: ImageInput, device: torch.device | None = None) -> torch.Tensor:
        """uint8 images (any size) -> normalised float ``[B, 3, S, S]`` on ``device``."""
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            x = images
            if x.shape[-1] != self.config.image_size:
                x = F.interpolate(x, size=(self.config.image_size,) * 2, mode="bilinear", antialias=True)
            return x.to(device) if device is not None else x
        x = stack_images(images, self.config.image_size)
        if device is not None:
            x = x.to(device, non_blocking=True)
        return (x.float() / 255.0 - 0.5) / 0.5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.cnn(x)  # [B, W, G, G]
        tokens = self.token_proj(f.flatten(2).transpose(1, 2))
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos
        for blk in self.blocks:
            tokens = blk(tokens)
        tokens = self.norm(tokens)
        pooled = tokens.mean(dim=1) if self.config.pool == "mean" else tokens[:, 0]
        return tokens, pooled


class TextTower(nn.Module):
    """token ids ``[B, L]`` + mask -> (tokens ``[B, L, W]``, pooled ``[CLS]`` ``[B, W]``)."""

    def __init__(
        self,
        vocab_size: int,
        width: int,
        layers: int,
        heads: int,
        max_len: int,
        dropout: float,
        pool: str = "mean",
    ):
        super().__init__()
        self.pool = pool
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(1, max_len, width) * 0.02)
        self.blocks = nn.ModuleList(_encoder_layer(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        pad = ~mask
        for blk in self.blocks:
            x = blk(x, src_key_padding_mask=pad)
        x = self.norm(x)
        if self.pool == "mean":  # mean over real tokens: a bag-of-words signal from the first step
            m = mask.unsqueeze(-1).to(x.dtype)
            return x, (x * m).sum(1) / m.sum(1).clamp(min=1.0)
        return x, x[:, 0]


class _TinyBase(nn.Module):
    tokenizer: WordTokenizer
    max_text_len: int
    encode_batch: int = 512

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _init_towers(
        self, cfg: TinyDualConfig | TinyCrossConfig, tokenizer: WordTokenizer, text_pool: str
    ) -> None:
        """The image and text towers both models share (built in this order, so seeds give equal weights)."""
        self.config = cfg
        self.tokenizer = tokenizer
        self.max_text_len = cfg.max_text_len
        self.image_tower = ImageTower(cfg.image_config())
        self.text_tower = TextTower(
            len(tokenizer), cfg.width, cfg.text_layers, cfg.heads, cfg.max_text_len, cfg.dropout, text_pool
        )

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer.encode(as_text_list(texts), self.max_text_len)
        return ids.to(self.device), mask.to(self.device)


class TinyDualEncoder(ProjectedDualEncoder, _TinyBase):
    """Two towers and a joint embedding space; ``score = exp(logit_scale) * cosine``."""

    name = "tiny-dual"
    config: TinyDualConfig

    def __init__(self, cfg: TinyDualConfig, tokenizer: WordTokenizer):
        super().__init__()
        self._init_towers(cfg, tokenizer, cfg.pool)
        self.image_proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    # embed_images/embed_texts/forward and the scorer contract: ProjectedDualEncoder (models/base.py)


class TinyCrossEncoder(_TinyBase, CrossEncoder):
    """Text tokens attend to image tokens through ``fusion_layers``; a head reads the match logit."""

    name = "tiny-cross"
    config: TinyCrossConfig
    score_semantics = "logit"

    def __init__(self, cfg: TinyCrossConfig, tokenizer: WordTokenizer):
        super().__init__()
        self._init_towers(cfg, tokenizer, "mean")
        self.fusion = nn.ModuleList(
            nn.TransformerDecoderLayer(
                cfg.width,
                cfg.heads,
                dim_feedforward=2 * cfg.width,
                dropout=cfg.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(cfg.fusion_layers)
        )
        score_layer = nn.Linear(cfg.width, 1)
        self.head = nn.Sequential(nn.LayerNorm(cfg.width), score_layer)
        if cfg.dual_score:
            dim = cfg.embed_dim or cfg.width
            self.image_proj = nn.Linear(cfg.width, dim, bias=False)
            self.text_proj = nn.Linear(cfg.width, dim, bias=False)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
            nn.init.zeros_(score_layer.weight)  # the fusion adds nothing until it has learned something
            nn.init.zeros_(score_layer.bias)

    def dual_logits(
        self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """The dual-encoder part of the score ``[P]`` (``dual_score``): scale · cosine of pooled towers."""
        m = text_mask.unsqueeze(-1).to(text_tokens.dtype)
        txt = (text_tokens * m).sum(1) / m.sum(1).clamp(min=1.0)  # the text tower's "mean" pool
        img = F.normalize(self.image_proj(image_tokens.mean(1)), dim=-1)  # the image tower's "mean" pool
        txt = F.normalize(self.text_proj(txt), dim=-1)
        return self.logit_scale.exp().clamp(max=100.0) * (img * txt).sum(-1)

    def fusion_logits(
        self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """The fusion part of the score ``[P]``: text tokens attend to image tokens; a head reads it."""
        x = text_tokens
        for layer in self.fusion:
            x = layer(x, image_tokens, tgt_key_padding_mask=~text_mask)
        if self.config.head_pool == "mean":
            m = text_mask.unsqueeze(-1).to(x.dtype)
            return self.head((x * m).sum(1) / m.sum(1).clamp(min=1.0)).squeeze(-1)
        return self.head(x[:, 0]).squeeze(-1)

    def fuse(
        self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """Match logits ``[P]`` of ``P`` aligned (image tokens, text tokens) pairs."""
        logits = self.fusion_logits(image_tokens, text_tokens, text_mask)
        if self.config.dual_score:
            logits = logits + self.dual_logits(image_tokens, text_tokens, text_mask)
        return logits

    def load_dual(self, dual: TinyDualEncoder) -> None:
        """Copy a tiny dual encoder's towers (with ``dual_score``, also its projections and scale) here.

        The dual must have this model's tower shapes and ``pool="mean"``; with ``dual_score`` and a zero
        fusion head the cross encoder then scores exactly as the dual does.
        """
        dc, cc = dual.config, self.config
        same = (
            dc.image_size,
            dc.width,
            tuple(dc.image_channels),
            dc.image_layers,
            dc.text_layers,
            dc.heads,
            dc.max_text_len,
            dc.image_stem,
            dc.image_stage_depth,
            dc.image_norm,
        ) == (
            cc.image_size,
            cc.width,
            tuple(cc.image_channels),
            cc.image_layers,
            cc.text_layers,
            cc.heads,
            cc.max_text_len,
            cc.image_stem,
            cc.image_stage_depth,
            cc.image_norm,
        )
        if not same or dc.pool != "mean":
            raise ModelError(
                "the dual encoder's towers do not have this cross encoder's shapes",
                fix="build the dual from the cross encoder's tower settings with pool='mean'",
            )
        if cc.dual_score and dc.embed_dim != (cc.embed_dim or cc.width):
            raise ModelError(
                f"dual embed_dim {dc.embed_dim} differs from the cross encoder's {cc.embed_dim or cc.width}",
                fix="set the same embed_dim on both",
            )
        self.image_tower.load_state_dict(dual.image_tower.state_dict())
        self.text_tower.load_state_dict(dual.text_tower.state_dict())
        if cc.dual_score:
            self.image_proj.load_state_dict(dual.image_proj.state_dict())
            self.text_proj.load_state_dict(dual.text_proj.state_dict())
            with torch.no_grad():
                self.logit_scale.copy_(dual.logit_scale)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits of aligned pairs: image ``k`` with text ``k`` (differentiable, for training)."""
        img_tokens, _ = self.image_tower(images)
        txt_tokens, _ = self.text_tower(ids, mask)
        return self.fuse(img_tokens, txt_tokens, mask)

    def forward_grid(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, M]`` of every image with every text (differentiable; towers run once per side)."""
        return self.match_grid(images, (ids, mask))

    # The training contract (models/base.py).
    @property
    def pair_chunk(self) -> int:  # type: ignore[override]
        return int(self.config.pair_chunk)

    def preprocess_images(self, images: ImageInput) -> torch.Tensor:
        return self.image_tower.preprocess(images, self.device)

    def image_encoder(self) -> nn.Module:
        return self.image_tower

    def text_encoder(self) -> nn.Module:
        return self.text_tower

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        yield from super().encoder_parameters()
        if self.config.dual_score:  # the dual score reads the towers alone: it goes with them
            yield from (self.image_proj.weight, self.text_proj.weight, self.logit_scale)  # type: ignore[misc]

    def image_states(self, pixels: torch.Tensor) -> TokenStates:
        tokens, pooled = self.image_tower(pixels)
        return TokenStates({"tokens": tokens}, pooled=pooled)

    def text_states(self, tokens: Any) -> TokenStates:
        ids, mask = tokens
        states, pooled = self.text_tower(ids, mask)
        return TokenStates({"tokens": states, "mask": mask}, mask="mask", pooled=pooled)

    def fuse_pairs(self, image: TokenStates, text: TokenStates) -> torch.Tensor:
        return self.fuse(image["tokens"], text["tokens"], text["mask"])

    @torch.no_grad()
    def score(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        texts = as_text_list(texts)
        n = num_images(images)
        if n == 0 or not texts:
            return torch.zeros(n, len(texts), device=self.device)
        image = TokenStates.cat(
            [
                self.image_states(self.preprocess_images(images[i : i + self.encode_batch]))
                for i in range(0, n, self.encode_batch)
            ]
        )
        scores = self.fuse_grid(image, self.text_states(self.tokenize(texts)))
        return check_score_shape(scores, n, len(texts), self.name)

    @torch.no_grad()
    def score_pairs(self, images: ImageInput, texts: Sequence[str]) -> torch.Tensor:
        texts = as_text_list(texts)
        if num_images(images) != len(texts):
            raise ModelError(
                f"score_pairs got {num_images(images)} images and {len(texts)} texts",
                fix="give one text per image",
            )
        out = []
        for i in range(0, len(texts), self.encode_batch):
            x = self.image_tower.preprocess(images[i : i + self.encode_batch], self.device)
            out.append(self.forward(x, *self.tokenize(texts[i : i + self.encode_batch])))
        return torch.cat(out) if out else torch.zeros(0, device=self.device)


ARCHS: dict[str, tuple[type[nn.Module], type]] = {
    "tiny-dual": (TinyDualEncoder, TinyDualConfig),
    "tiny-cross": (TinyCrossEncoder, TinyCrossConfig),
}
