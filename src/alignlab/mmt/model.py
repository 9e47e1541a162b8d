"""A small transformer translation model, text-only or looking at the image (visual prefix or gated fusion).

Source English is split into lower-cased words (:class:`~alignlab.data.text.WordTokenizer`); target
Chinese into characters or jieba words (:class:`TargetTokenizer`). The model is a standard encoder–decoder
transformer (pre-norm, GELU), with three ways to see the image — visual tokens ``V = [v_1 … v_K]``
(``K × d_v``) from an image encoder, projected to the model width by ``W_v``:

* ``none`` — text only: the decoder attends to the encoded source ``H = Enc(E(x))``.
* ``prefix`` — the projected visual tokens, plus a learned type embedding, are prepended to the source
  and encoded together: ``H = Enc([W_v V + t_v ; E(x) + t_x])``; the decoder attends to all of it.
* ``gated`` — text is encoded alone, then each source state gathers image evidence by cross-attention
  and mixes it in through a learned gate (gated fusion, as in Wu et al. 2021 / Yao & Wan 2020):
  ``A = Attn(H, W_v V, W_v V)``, ``λ = σ(W_g [H; A])``, ``H' = H + λ ⊙ A``.

The image encoder (:class:`VisualEncoder`) is the tiny CNN image tower of :mod:`alignlab.models.tiny`
(``ImageTower``), its 8×8 grid pooled to the 3×3 scene grid plus its ``[CLS]``: 10 visual tokens. It is
pretrained on ShapesWorld object/sense recognition (see :mod:`alignlab.mmt.train`) and then frozen, as
MMT systems use pretrained visual features.

>>> from alignlab.data.text import WordTokenizer
>>> src = WordTokenizer.build(["a red bat"]); tgt = TargetTokenizer.build(["一只红色的蝙蝠"])
>>> m = MMTModel(MMTConfig(width=32, heads=2, fusion="gated", visual_dim=16), src, tgt)
>>> ids, mask = m.encode_source(["a red bat"])
>>> out = m.greedy_decode(ids, mask, torch.zeros(1, 10, 16), max_len=5)
>>> len(out)
1
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import ConfigError, DataError
from alignlab.core.io import write_json
from alignlab.data.text import PAD as SRC_PAD
from alignlab.data.text import WordTokenizer
from alignlab.models.tiny import ImageTower, TinyImageConfig

FUSIONS = ("none", "prefix", "gated")


def _jieba_cut(text: str) -> list[str]:
    try:
        import jieba
    except ImportError:
        from alignlab.core.errors import DependencyError

        raise DependencyError(
            "jieba is not installed (word-level Chinese targets)",
            fix="pip install 'alignlab[mt]', or use unit='char'",
        ) from None
    jieba.setLogLevel(60)  # no "Building prefix dict" chatter
    return [w for w in jieba.lcut(text) if w.strip()]


class TargetTokenizer:
    """Chinese target tokenizer, by character (``unit="char"``) or by jieba word (``unit="word"``).

    Ids: ``0 [PAD]``, ``1 [UNK]``, ``2 [BOS]``, ``3 [EOS]``, then units by descending frequency (ties in
    code-point order), so the vocabulary is deterministic. Decoding joins units without spaces, so
    both units give the same detokenised text for BLEU. Words halve the target length and make a sense
    word (蝙蝠) one decision instead of two.

    >>> tok = TargetTokenizer.build(["一只蝙蝠", "一只鹤"])
    >>> tok.decode(tok.encode(["一只鹤"], 8)[0])
    '一只鹤'
    """

    SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
    PAD, UNK, BOS, EOS = 0, 1, 2, 3

    def __init__(self, vocab: Sequence[str], unit: str = "char"):
        if tuple(vocab[:4]) != self.SPECIALS:
            raise DataError("target vocabulary must start with " + ", ".join(self.SPECIALS))
        if unit not in ("char", "word"):
            raise ConfigError(f"unknown target unit {unit!r}", fix="use char or word")
        self.vocab = list(vocab)
        self.unit = unit
        self.index = {c: i for i, c in enumerate(self.vocab)}

    @staticmethod
    def split(text: str, unit: str) -> list[str]:
        return list(text) if unit == "char" else _jieba_cut(text)

    @classmethod
    def build(
        cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None, unit: str = "char"
    ) -> TargetTokenizer:
        counts = Counter(u for t in texts for u in cls.split(t, unit))
        units = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        if max_size is not None:
            units = units[: max(0, max_size - 4)]
        return cls([*cls.SPECIALS, *units], unit)

    def __len__(self) -> int:
        return len(self.vocab)

    def ids(self, text: str) -> list[int]:
        return [self.index.get(c, self.UNK) for c in self.split(text, self.unit)]

    def encode(self, texts: Sequence[str], max_len: int) -> torch.Tensor:
        """``[B, L]`` ids ``[BOS] units… [EOS]`` (truncated to ``max_len`` tokens, padded with 0)."""
        rows = [[self.BOS, *self.ids(t)[: max_len - 2], self.EOS] for t in texts]
        length = max(len(r) for r in rows)
        out = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Units up to the first ``[EOS]``, joined; unknown units come out as ``□``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i == self.EOS:
                break
            if i in (self.PAD, self.BOS):
                continue
            out.append("□" if i == self.UNK else self.vocab[i])
        return "".join(out)

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, {"type": "target", "unit": self.unit, "vocab": self.vocab})

    @classmethod
    def load(cls, path: str | os.PathLike) -> TargetTokenizer:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["vocab"], data.get("unit", "char"))
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise DataError(
                f"cannot read tokenizer: {e}",
                where=str(path),
                fix="the file must be a tgt_tokenizer.json written by alignlab mmt",
            ) from None


@dataclass
class MMTConfig:
    """Architecture of :class:`MMTModel`."""

    width: int = 128  # model width d
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    ff_mult: int = 2  # feed-forward width = ff_mult * width
    dropout: float = 0.1
    max_src_len: int = 40  # source words (longer sentences are truncated)
    max_tgt_len: int = 64  # target units (characters or words) including [BOS]/[EOS]
    fusion: str = "none"  # none | prefix | gated
    visual_dim: int = 64  # width of the visual tokens fed in (the image tower's width)
    visual_tokens: int = 10  # number of visual tokens (3×3 grid + [CLS])

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}", fix=f"choose one of {', '.join(FUSIONS)}")
        if self.width % self.heads:
            raise ConfigError("width must be divisible by heads")


def _enc_layer(cfg: MMTConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        cfg.width,
        cfg.heads,
        cfg.ff_mult * cfg.width,
        cfg.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


class Attention(nn.Module):
    """Multi-head attention with separate query and key/value projections, so that decoding can cache
    the keys and values of past positions (and of the encoder memory)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.o = nn.Linear(width, width)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def keys_values(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(ctx).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """``mask``: bool, True where a query may attend (broadcast to ``[B, heads, Lq, Lk]``)."""
        q = self._split(self.q(x))
        k, v = kv
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        b, h, n, dh = out.shape
        return self.o(out.transpose(1, 2).reshape(b, n, h * dh))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: causal self-attention, cross-attention to the memory, feed-forward."""

    def __init__(self, width: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = Attention(width, heads, dropout)
        self.cross_attn = Attention(width, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(width, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, width))
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        y: torch.Tensor,
        mem_kv: tuple[torch.Tensor, torch.Tensor],
        mem_mask: torch.Tensor,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Teacher-forced (``cache`` None: all positions, causal) or one decoding step
        (``y`` is ``[B, 1, d]``; ``cache`` holds the keys/values of earlier positions and is extended in
        place)."""
        h = self.n1(y)
        k, v = self.self_attn.keys_values(h)
        if cache is None:
            y = y + self.drop(self.self_attn(h, (k, v), causal=True))
        else:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            y = y + self.drop(self.self_attn(h, (k, v)))
        y = y + self.drop(self.cross_attn(self.n2(y), mem_kv, mask=mem_mask))
        return y + self.drop(self.ff(self.n3(y)))


class GatedFusion(nn.Module):
    """``H' = H + σ(W_g [H; A]) ⊙ A`` with ``A`` = cross-attention of the text states to the image tokens."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.gate = nn.Linear(2 * width, width)

    def forward(self, h: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, _ = self.attn(self.norm(h), v, v, need_weights=False)
        lam = torch.sigmoid(self.gate(torch.cat([h, a], dim=-1)))
        return h + lam * a, lam


class MMTModel(nn.Module):
    """Encoder–decoder translation model; see the module docstring for the fusion variants."""

    def __init__(self, cfg: MMTConfig, src_tok: WordTokenizer, tgt_tok: TargetTokenizer):
        super().__init__()
        self.config = cfg
        self.src_tok, self.tgt_tok = src_tok, tgt_tok
        d = cfg.width
        self.src_embed = nn.Embedding(len(src_tok), d, padding_idx=SRC_PAD)
        self.tgt_embed = nn.Embedding(len(tgt_tok), d, padding_idx=TargetTokenizer.PAD)
        self.src_pos = nn.Parameter(torch.randn(1, cfg.max_src_len + 1, d) * 0.02)
        self.tgt_pos = nn.Parameter(torch.randn(1, cfg.max_tgt_len, d) * 0.02)
        self.encoder = nn.ModuleList(_enc_layer(cfg) for _ in range(cfg.encoder_layers))
        self.enc_norm = nn.LayerNorm(d)
        self.decoder = nn.ModuleList(
            DecoderLayer(d, cfg.heads, cfg.ff_mult * d, cfg.dropout) for _ in range(cfg.decoder_layers)
        )
        self.dec_norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, len(tgt_tok), bias=False)
        self.out.weight = self.tgt_embed.weight  # tied input/output embeddings
        # Small embeddings (std 0.02, as GPT-2): with tied output weights, nn.Embedding's N(0, 1) would give
        # logits of standard deviation ~sqrt(d) at the start and a first-epoch loss far above log |V|.
        for emb, pad in ((self.src_embed, SRC_PAD), (self.tgt_embed, TargetTokenizer.PAD)):
            nn.init.normal_(emb.weight, std=0.02)
            with torch.no_grad():
                emb.weight[pad].zero_()
        if cfg.fusion != "none":
            self.visual_proj = nn.Sequential(nn.LayerNorm(cfg.visual_dim), nn.Linear(cfg.visual_dim, d))
            self.visual_pos = nn.Parameter(torch.randn(1, cfg.visual_tokens, d) * 0.02)
        if cfg.fusion == "prefix":
            self.type_embed = nn.Parameter(torch.randn(2, d) * 0.02)
        if cfg.fusion == "gated":
            self.fusion = GatedFusion(d, cfg.heads, cfg.dropout)

    @property
    def uses_image(self) -> bool:
        return self.config.fusion != "none"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_source(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[B, L]`` and mask for English sentences (``[CLS]`` first, as the word tokenizer
        does)."""
        ids, mask = self.src_tok.encode(list(texts), self.config.max_src_len + 1)
        return ids.to(self.device), mask.to(self.device)

    def _check_visual(self, visual: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if not self.uses_image:
            return None
        if visual is None:
            raise ConfigError(
                f"this model uses the image (fusion={self.config.fusion!r}) but no visual tokens were given",
                fix="pass the image features, or train with fusion none",
            )
        if visual.ndim != 3 or visual.shape[0] != batch or visual.shape[-1] != self.config.visual_dim:
            raise ConfigError(
                f"visual tokens must be [B={batch}, K, {self.config.visual_dim}], got {tuple(visual.shape)}"
            )
        return visual.to(self.device)

    def encode(
        self, src_ids: torch.Tensor, src_mask: torch.Tensor, visual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory ``[B, M, d]`` for the decoder and its padding mask (True = pad)."""
        cfg = self.config
        x = self.src_embed(src_ids) + self.src_pos[:, : src_ids.shape[1]]
        pad = ~src_mask
        visual = self._check_visual(visual, len(src_ids))
        if visual is not None:
            v = self.visual_proj(visual) + self.visual_pos[:, : visual.shape[1]]
        if cfg.fusion == "prefix":
            x = torch.cat([v + self.type_embed[0], x + self.type_embed[1]], dim=1)
            pad = torch.cat([torch.zeros(len(x), v.shape[1], dtype=torch.bool, device=x.device), pad], dim=1)
        for layer in self.encoder:
            x = layer(x, src_key_padding_mask=pad)
        x = self.enc_norm(x)
        if cfg.fusion == "gated":
            x, _ = self.fusion(x, v)
        return x, pad

    def _memory_kv(self, memory: torch.Tensor, memory_pad: torch.Tensor):
        mask = (~memory_pad)[:, None, None, :]  # [B, 1, 1, M]: True where attention may look
        return [layer.cross_attn.keys_values(memory) for layer in self.decoder], mask

    def decode_logits(
        self, memory: torch.Tensor, memory_pad: torch.Tensor, tgt_in: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits for every position of ``tgt_in`` (causal; pads only follow real tokens,
        so no target padding mask is needed)."""
        y = self.tgt_embed(tgt_in) + self.tgt_pos[:, : tgt_in.shape[1]]
        kvs, mask = self._memory_kv(memory, memory_pad)
        for layer, kv in zip(self.decoder, kvs):
            y = layer(y, kv, mask)
        return self.out(self.dec_norm(y))

    def forward(
        self,
        src_ids: torch.Tensor,
        src_mask: torch.Tensor,
        tgt: torch.Tensor,
        visual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits ``[B, T-1, V]`` predicting ``tgt[:, 1:]`` from ``tgt[:, :-1]``."""
        memory, mpad = self.encode(src_ids, src_mask, visual)
        return self.decode_logits(memory, mpad, tgt[:, :-1])

    def loss(
        self,
        src_ids: torch.Tensor,
        src_mask: torch.Tensor,
        tgt: torch.Tensor,
        visual: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Token-level cross-entropy (mean over non-pad target tokens) as ``{"ce_loss": …}``."""
        logits = self(src_ids, src_mask, tgt, visual)
        gold = tgt[:, 1:]
        return {
            "ce_loss": F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                gold.reshape(-1),
                ignore_index=TargetTokenizer.PAD,
                label_smoothing=label_smoothing,
            )
        }

    @torch.no_grad()
    def sequence_logprob(
        self,
        src_ids: torch.Tensor,
        src_mask: torch.Tensor,
        tgt: torch.Tensor,
        visual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``log p(y | x, image)`` summed over the target characters and ``[EOS]``, per sentence ``[B]``."""
        logits = self(src_ids, src_mask, tgt, visual)
        logp = logits.log_softmax(-1).gather(-1, tgt[:, 1:, None]).squeeze(-1)
        return (logp * (tgt[:, 1:] != TargetTokenizer.PAD)).sum(-1)

    @torch.no_grad()
    def greedy_decode(
        self,
        src_ids: torch.Tensor,
        src_mask: torch.Tensor,
        visual: torch.Tensor | None = None,
        max_len: int | None = None,
    ) -> list[str]:
        """Greedy decoding, batched; stops when every sentence has produced ``[EOS]``."""
        ys = self.greedy_ids(src_ids, src_mask, visual, max_len)
        return [self.tgt_tok.decode(row[1:]) for row in ys]

    @torch.no_grad()
    def greedy_ids(
        self,
        src_ids: torch.Tensor,
        src_mask: torch.Tensor,
        visual: torch.Tensor | None = None,
        max_len: int | None = None,
    ) -> torch.Tensor:
        """Token ids ``[B, T]`` of greedy decoding (``[BOS]`` first; ``[PAD]`` after ``[EOS]``), with cached
        keys/values: each step runs the decoder on the newest position only."""
        max_len = min(max_len or self.config.max_tgt_len, self.config.max_tgt_len)
        memory, mpad = self.encode(src_ids, src_mask, visual)
        kvs, mask = self._memory_kv(memory, mpad)
        caches: list[dict[str, torch.Tensor]] = [{} for _ in self.decoder]
        ys = torch.full((len(src_ids), 1), TargetTokenizer.BOS, dtype=torch.long, device=memory.device)
        done = torch.zeros(len(src_ids), dtype=torch.bool, device=memory.device)
        for t in range(max_len - 1):
            y = self.tgt_embed(ys[:, -1:]) + self.tgt_pos[:, t : t + 1]
            for layer, kv, cache in zip(self.decoder, kvs, caches):
                y = layer(y, kv, mask, cache)
            logits = self.out(self.dec_norm(y))[:, -1]
            logits[:, [TargetTokenizer.PAD, TargetTokenizer.BOS]] = float("-inf")  # never valid outputs
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, TargetTokenizer.PAD), nxt)
            ys = torch.cat([ys, nxt[:, None]], dim=1)
            done |= nxt == TargetTokenizer.EOS
            if bool(done.all()):
                break
        return ys


# --- the image encoder -----------------------------------------------------------------------------------


def default_image_config() -> TinyImageConfig:
    """A small image tower for 64×64 ShapesWorld images (about 60K parameters)."""
    return TinyImageConfig(image_size=64, channels=(16, 32), width=64, layers=1, heads=4)


class VisualEncoder(nn.Module):
    """The tiny ImageTower with its token grid average-pooled to ``pool × pool`` cells, plus ``[CLS]``.

    ``forward(images) -> [B, 1 + pool², width]`` visual tokens. Also carries the heads of its
    pretraining task (per-cell object/sense class), unused by the translation model.
    """

    def __init__(self, cfg: TinyImageConfig | None = None, pool: int = 3, n_classes: int = 16):
        super().__init__()
        self.image_config = cfg or default_image_config()
        self.tower = ImageTower(self.image_config)
        self.pool = pool
        self.cell_head = nn.Linear(self.image_config.width, n_classes)

    @property
    def width(self) -> int:
        return self.image_config.width

    @property
    def n_tokens(self) -> int:
        return 1 + self.pool * self.pool

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self.tower.preprocess(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.tower(x)
        g = self.image_config.grid
        grid = tokens[:, 1:].transpose(1, 2).reshape(len(x), -1, g, g)
        cells = F.adaptive_avg_pool2d(grid, self.pool).flatten(2).transpose(1, 2)  # [B, pool², W]
        return torch.cat([tokens[:, :1], cells], dim=1)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Visual tokens of uint8 images ``[N, 3, H, W]`` (or ``[N, H, W, 3]`` arrays), in eval mode."""
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(images), batch_size):
            out.append(self(self.preprocess(images[i : i + batch_size])))
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.n_tokens, self.width)
