"""Compositional hard negatives for training (NegCLIP-style) and the training tasks that use them.

For every training caption one *hard negative* is made from the caption itself, so that it shares its
words and differs in structure:

* ``swap_attribute`` — two colour words (or two size words of different value) exchanged
  ("a red circle and a blue square" -> "a blue circle and a red square");
* ``swap_relation`` — subject and object of a spatial relation exchanged
  ("the circle left of the square" -> "the square left of the circle");
* ``shuffle`` — all words shuffled.

The structural swaps come first (in random order when both apply, as in NegCLIP, whose negatives are
swaps); a shuffle is the fallback for captions with nothing to swap (most one-object captions). When the
image's scene graph is known each candidate is checked with the truth evaluator and dropped if it is
(coincidentally) true of the image, and the next kind is tried (``dropped_true`` counts the drops).
Replacements are whole tokens and articles are made to agree ("an orange circle").

True captions are no negatives: a batch also carries ``positives [B, B]`` (a caption of another image
true of this one, :meth:`~alignlab.train.tasks._ImageBatches.positives`) and, for the dual task,
which hard negatives are true of *other* images of the batch (the truth evaluator on their scenes);
both are masked out of the softmax, as in the retrieval tasks.

Losses (``hard_negatives=False`` gives the plain versions, so both arms of an experiment run the
same code):

* :class:`DualHardNegativeTask` — InfoNCE where the hard negatives are extra text columns:
  image→text ``CE(τ⁻¹ [I·Tᵀ, I·Hᵀ], diag)`` over the batch's captions *and* all hard negatives (as NegCLIP
  does), text→image ``CE(τ⁻¹ T·Iᵀ, diag)`` over the batch's images only.
* :class:`CrossHardNegativeTask` — a cross encoder trained listwise on *sampled* candidates: image ``k``
  against its caption, ``K`` other captions of the batch and (with hard negatives) its hard negative;
  caption ``k`` against its image and ``K`` other images. Scoring all B×B pairs of the batch (as
  :class:`~alignlab.train.tasks.CrossMatchTask` does) costs B² fusion passes, too slow on 2 CPU
  cores; K = 7 keeps it linear in B.

Under DDP (:mod:`alignlab.train.distributed`) each rank trains its slice of the global batch with its own
rows as in-batch negatives (``local_batch`` cuts the masks to them) and the model runs in one DDP forward
pass per loss (``forward_through``), so the gradients are averaged over the ranks.

Both tasks read a model only through the training contract (:mod:`alignlab.models.base`), so every model
kind trains: the tiny models, pretrained-lit, Hugging Face CLIP / SigLIP / BLIP and open_clip;
:func:`train_probe_model` takes a built-in architecture or a spec that loads one (``hf:<folder>``).

>>> rng = np.random.default_rng(0)
>>> make_hard_negative("a red circle and a blue square", None, rng, kinds=("swap_attribute",))
('a blue circle and a red square', 'swap_attribute')
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import ConfigError
from alignlab.core.seed import derive_seed, set_seed
from alignlab.data.pairs import ImageTextPairs
from alignlab.data.shapes import COLOURS, GENERIC_NOUNS, POLYSEMOUS, SHAPES, SIZE_SYNONYMS, Scene, kind_plural
from alignlab.data.text import WordTokenizer
from alignlab.models.factory import build_model
from alignlab.probe.build_shapes import caption_truth
from alignlab.probe.perturb import detokenize, fix_articles, shuffle_all, tokenize
from alignlab.train import distributed as ddp_
from alignlab.train.loop import TrainConfig
from alignlab.train.runs import fit_best, start_run
from alignlab.train.tasks import CrossMatchTask, DualContrastiveTask, check_trainable, dual_outputs

HARD_NEGATIVE_KINDS = ("swap_attribute", "swap_relation", "shuffle")
_SIZE_OF = {w: s for s, ws in SIZE_SYNONYMS.items() for w in ws}
_NOUNS = {
    *SHAPES,
    *POLYSEMOUS,
    *GENERIC_NOUNS,
    *GENERIC_NOUNS.values(),
    *(kind_plural(k) for k in (*SHAPES, *POLYSEMOUS)),
}
_REL_WORDS = {"left", "right", "above", "over", "below", "under", "beneath"}


def np_spans(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Token spans ``[start, end)`` of the noun phrases ``det [size] [colour] noun`` in ``tokens``."""
    spans, i, low = [], 0, [t.lower() for t in tokens]
    while i < len(low):
        if low[i] in ("a", "an", "the"):
            j = i + 1
            if j < len(low) and low[j] in _SIZE_OF:
                j += 1
            if j < len(low) and low[j] in COLOURS:
                j += 1
            if j < len(low) and low[j] in _NOUNS:
                spans.append((i, j + 1))
                i = j + 1
                continue
        i += 1
    return spans


def _swap_attribute(tokens: list[str], rng: np.random.Generator) -> list[str] | None:
    low = [t.lower() for t in tokens]
    pairs = []
    for vocab, value in ((set(COLOURS), lambda w: w), (set(_SIZE_OF), lambda w: _SIZE_OF[w])):
        pos = [i for i, w in enumerate(low) if w in vocab]
        pairs += [(a, b) for ai, a in enumerate(pos) for b in pos[ai + 1 :] if value(low[a]) != value(low[b])]
    if not pairs:
        return None
    a, b = pairs[int(rng.integers(len(pairs)))]
    out = list(tokens)
    out[a], out[b] = out[b], out[a]
    return fix_articles(out)


def _swap_relation(tokens: list[str], rng: np.random.Generator) -> list[str] | None:
    if not any(t.lower() in _REL_WORDS for t in tokens):
        return None
    spans = np_spans(tokens)
    if len(spans) < 2:
        return None
    (a0, a1), (b0, b1) = spans[0], spans[1]
    return [*tokens[:a0], *tokens[b0:b1], *tokens[a1:b0], *tokens[a0:a1], *tokens[b1:]]


def _shuffle(tokens: list[str], rng: np.random.Generator) -> list[str] | None:
    tags = ["punct" if not any(c.isalnum() for c in t) else "other" for t in tokens]
    for _ in range(10):
        out = shuffle_all(tokens, tags, rng)
        if [t.lower() for t in out] != [t.lower() for t in tokens]:
            return out
    return None


_MAKERS = {"swap_attribute": _swap_attribute, "swap_relation": _swap_relation, "shuffle": _shuffle}


def make_hard_negative(
    text: str,
    scene: Scene | None,
    rng: np.random.Generator,
    kinds: Sequence[str] = HARD_NEGATIVE_KINDS,
    stats: dict[str, int] | None = None,
) -> tuple[str, str] | None:
    """A hard negative of ``text`` and its kind, or None when no kind applies.

    ``scene`` (optional) is the image's scene graph: a candidate true of it is rejected (and counted in
    ``stats["dropped_true"]``).
    """
    tokens = tokenize(text)
    swaps = [k for k in kinds if k != "shuffle"]
    order = [swaps[int(k)] for k in rng.permutation(len(swaps))] + [k for k in kinds if k == "shuffle"]
    for kind in order:
        out = _MAKERS[kind](tokens, rng)
        if out is None:
            continue
        cand = detokenize(out)
        if cand.lower() == text.lower():
            continue
        if scene is not None and caption_truth(cand, scene):
            if stats is not None:
                stats["dropped_true"] = stats.get("dropped_true", 0) + 1
            continue
        return cand, kind
    return None


class _HardNegatives:
    """Per-batch hard negatives, a pure function of (seed, epoch, batch index) like the batches."""

    def _init_negatives(
        self, pairs: ImageTextPairs, seed: int, hard_negatives: bool, kinds: Sequence[str]
    ) -> None:
        self.hard_negatives = hard_negatives
        self.neg_seed = seed
        self.kinds = tuple(kinds)
        for k in self.kinds:
            if k not in HARD_NEGATIVE_KINDS:
                raise ConfigError(
                    f"unknown hard negative kind {k!r}", fix=f"use {', '.join(HARD_NEGATIVE_KINDS)}"
                )
        meta = pairs.image_meta or []
        self.scenes = [
            Scene.from_dict(m["scene"]) if isinstance(m, dict) and "scene" in m else None for m in meta
        ]
        self.neg_counts: dict[str, int] = {}
        self.neg_stats: dict[str, int] = {"dropped_true": 0}  # candidates true of their image, redrawn

    def negatives(self, texts: list[str], idx: np.ndarray, epoch: int, index: int) -> list[str | None]:
        if not self.hard_negatives:
            return [None] * len(texts)
        rng = np.random.default_rng(derive_seed(self.neg_seed, "hard-negatives", epoch, index))
        out: list[str | None] = []
        for t, i in zip(texts, idx, strict=True):
            scene = self.scenes[int(i)] if self.scenes else None
            made = make_hard_negative(t, scene, rng, self.kinds, stats=self.neg_stats)
            out.append(made[0] if made else None)
            kind = made[1] if made else "none"
            self.neg_counts[kind] = self.neg_counts.get(kind, 0) + 1
        return out

    @staticmethod
    def _local(batch: tuple[Any, ...], rank: int, world: int) -> tuple[tuple[Any, ...], slice, torch.Tensor]:
        """Rank ``rank``'s rows of a global batch ``(images, texts, idx, negs, positives, ...)``: the per-row
        fields cut, the local rows and columns of ``positives`` (``[b, b]``: under DDP each rank's loss
        takes its own batch as negatives), and which global hard-negative columns are this rank's."""
        images, texts, idx, negs, positives = batch[:5]
        rows = ddp_.shard_batch((images, texts, idx, negs), rank, world)
        lo, hi = ddp_.shard_range(len(texts), world, rank)
        with_neg = [r for r, n in enumerate(negs) if n is not None]
        cols = torch.as_tensor([j for j, r in enumerate(with_neg) if lo <= r < hi], dtype=torch.long)
        return (*rows, positives[lo:hi, lo:hi]), slice(lo, hi), cols

    def negatives_truth(self, negs: list[str | None], idx: np.ndarray) -> torch.Tensor:
        """``[B, H]`` bool: hard negative ``h`` (the non-None ones, in order) is true of batch image ``i``.

        False where a scene is unknown (nothing to check against).
        """
        hard = [n for n in negs if n is not None]
        out = np.zeros((len(idx), len(hard)), dtype=bool)
        if self.scenes and hard:
            for h, text in enumerate(hard):
                for r, i in enumerate(idx):
                    scene = self.scenes[int(i)]
                    out[r, h] = scene is not None and caption_truth(text, scene)
        return torch.from_numpy(out)


class DualHardNegativeTask(DualContrastiveTask, _HardNegatives):
    """InfoNCE for a dual encoder with each caption's hard negative as an extra text column (NegCLIP).

    Any trainable :class:`~alignlab.models.base.DualEncoder` (tiny, pretrained-lit, Hugging Face CLIP /
    SigLIP / BLIP ITC, open_clip): the loss reads only the training contract (``preprocess_images``,
    ``tokenize``, ``embed_images``, ``embed_texts``, ``logit_params``; the scale capped at 100).
    """

    def __init__(
        self,
        model: nn.Module,
        train: ImageTextPairs,
        batch_size: int,
        seed: int,
        *,
        hard_negatives: bool = True,
        kinds: Sequence[str] = HARD_NEGATIVE_KINDS,
        dev: ImageTextPairs | None = None,
    ):
        from alignlab.train.losses import InfoNCELoss

        evaluate = None
        if dev is not None:  # dev retrieval metrics after each epoch (the retrieval area's evaluation)
            from alignlab.retrieval.training import dev_evaluator

            evaluate = dev_evaluator(dev, dual=True)
        self.dev = dev
        super().__init__(model, train, InfoNCELoss(), batch_size, seed, evaluate=evaluate)
        self._init_negatives(self.pairs, seed, hard_negatives, kinds)

    def batch(self, epoch: int, index: int) -> tuple[Any, ...]:
        images, texts, idx, positives = super().batch(epoch, index)
        negs = self.negatives(texts, idx, epoch, index)
        return images, texts, idx, negs, positives, self.negatives_truth(negs, idx)

    def local_batch(self, epoch: int, index: int, rank: int, world: int) -> tuple[Any, ...]:
        """DDP: this rank's slice of global batch ``index``, its masks cut to its own rows and columns."""
        batch = self.batch(epoch, index)
        local, rows, cols = self._local(batch, rank, world)
        return (*local, batch[5][rows][:, cols])

    def loss(self, model: Any, batch: Any) -> dict[str, torch.Tensor]:
        images, texts, _, negs, positives, negs_true = batch
        hard = [n for n in negs if n is not None]
        # Both towers in one DDP forward pass when training is distributed (a plain call otherwise).
        out = dual_outputs(model, model.preprocess_images(images), model.tokenize(list(texts) + hard))
        logits = out["logit_scale"] * out["image_emb"] @ out["text_emb"].T  # [B, B + H]; scale capped at 100
        if out["logit_bias"] is not None:
            logits = logits + out["logit_bias"]
        b = len(texts)
        target = torch.arange(b, device=logits.device)
        # True pairs are no negatives: other images' true captions, and hard negatives true of an image.
        off = positives.to(logits.device).bool() & ~torch.eye(b, dtype=torch.bool, device=logits.device)
        i2t = F.cross_entropy(
            logits.masked_fill(torch.cat([off, negs_true.to(logits.device)], dim=1), float("-inf")), target
        )
        t2i = F.cross_entropy(logits[:, :b].T.masked_fill(off.T, float("-inf")), target)
        return {"contrastive_loss": 0.5 * (i2t + t2i)}


class CrossHardNegativeTask(CrossMatchTask, _HardNegatives):
    """Listwise matching for a cross encoder on K sampled in-batch candidates (+ the hard negative).

    Any trainable :class:`~alignlab.models.base.CrossEncoder` (tiny, Hugging Face BLIP ITM): each tower
    runs once per batch (``image_states``, ``text_states``) and the sampled pairs are fused from their
    rows (``TokenStates.select``, ``fuse_pairs``).
    """

    def __init__(
        self,
        model: nn.Module,
        train: ImageTextPairs,
        batch_size: int,
        seed: int,
        *,
        hard_negatives: bool = True,
        sampled_negatives: int = 7,
        kinds: Sequence[str] = HARD_NEGATIVE_KINDS,
    ):
        super().__init__(model, train, batch_size, seed)
        self._init_negatives(self.pairs, seed, hard_negatives, kinds)
        if sampled_negatives < 1:
            raise ConfigError("sampled_negatives must be >= 1")
        self.k = sampled_negatives

    def batch(self, epoch: int, index: int) -> tuple[Any, ...]:
        images, texts, idx, positives = super().batch(epoch, index)
        return images, texts, idx, self.negatives(texts, idx, epoch, index), positives

    def local_batch(self, epoch: int, index: int, rank: int, world: int) -> tuple[Any, ...]:
        """DDP: this rank's slice of global batch ``index``, its mask cut to its own rows and columns."""
        return self._local(self.batch(epoch, index), rank, world)[0]

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        # The towers and the fusion run in one DDP forward pass when training is distributed (a plain call
        # otherwise), so that their gradients are synchronised across ranks.
        return ddp_.forward_through(model, self._loss, batch)

    def _loss(self, model: Any, batch: Any) -> dict[str, torch.Tensor]:
        images, texts, _, negs, positives = batch
        b = len(texts)
        hard = [n for n in negs if n is not None]
        pixels = model.preprocess_images(images)
        img = model.image_states(pixels)
        txt = model.text_states(model.tokenize(list(texts) + hard))
        k = min(self.k, b - 1)
        dev = pixels.device
        rows = torch.arange(b, device=dev)
        shifts = torch.arange(k + 1, device=dev)
        others = (rows[:, None] + shifts[None, :]) % b  # column 0: the match; then K other batch members
        # Image -> text candidates: its caption, K other captions, and its hard negative when it has one.
        hard_col = torch.full((b,), -1, dtype=torch.long, device=dev)
        h = 0
        for r, n in enumerate(negs):
            if n is not None:
                hard_col[r] = b + h
                h += 1
        cand_t = torch.cat([others, hard_col[:, None]], dim=1) if h else others
        valid = cand_t >= 0
        ii = rows[:, None].expand_as(cand_t)[valid]
        tt = cand_t[valid]
        logits_t = torch.full(cand_t.shape, float("-inf"), device=dev)
        logits_t[valid] = model.fuse_pairs(img.select(ii), txt.select(tt))
        # A sampled caption true of the image (or image the caption is true of) is no negative.
        pos = positives.to(dev).bool()
        true_t = pos[rows[:, None], others]  # [B, K + 1]: caption others[r, j] true of image r
        true_t[:, 0] = False
        if h:  # the hard-negative column is false of its image by construction
            true_t = torch.cat([true_t, torch.zeros(b, 1, dtype=torch.bool, device=dev)], dim=1)
        logits_t = logits_t.masked_fill(true_t, float("-inf"))
        # Text -> image candidates: its image and K other images.
        ii2 = others.reshape(-1)
        tt2 = rows[:, None].expand_as(others).reshape(-1)
        logits_i = model.fuse_pairs(img.select(ii2), txt.select(tt2)).view(b, k + 1)
        true_i = pos[others, rows[:, None]]  # [B, K + 1]: caption r true of image others[r, j]
        true_i[:, 0] = False
        logits_i = logits_i.masked_fill(true_i, float("-inf"))
        target = torch.zeros(b, dtype=torch.long, device=dev)
        return {"match_loss": 0.5 * (F.cross_entropy(logits_t, target) + F.cross_entropy(logits_i, target))}


# --- one training run -------------------------------------------------------------------------------

# Model specs loaded (not built) for training: a saved model, or a real one through its adapter.
_LOADED_PREFIXES = ("ckpt", "hf", "open_clip")


def check_model_spec(arch: str, model_config: dict[str, Any] | None = None) -> None:
    """Refuse a model spec that :func:`train_probe_model` cannot train, before anything is built or written.

    ``arch`` is a built-in architecture (``tiny-dual``, ``tiny-cross``, ``pretrained-lit``: a new model,
    ``model_config`` its overrides) or a spec that loads one (``ckpt:<dir>``, ``hf:<id or dir>``,
    ``open_clip:<arch>@<tag>``: trained from its own weights, so ``model_config`` must be empty).
    """
    from alignlab.models.factory import ARCHS

    if not isinstance(arch, str) or not arch:
        raise ConfigError("no model given", key="arch", fix="give tiny-dual, tiny-cross or hf:<folder>")
    if arch in ARCHS:
        return
    prefix, sep, rest = arch.partition(":")
    if not sep or prefix not in _LOADED_PREFIXES or not rest:
        raise ConfigError(
            f"cannot train model {arch!r} here",
            key="arch",
            fix=f"use one of: {', '.join(ARCHS)}, " + ", ".join(f"{p}:<...>" for p in _LOADED_PREFIXES),
        )
    if model_config:
        raise ConfigError(
            f"model_config ({', '.join(sorted(model_config))}) only applies to a new built-in model, "
            f"not to {arch!r}",
            key="model_config",
            fix="leave model_config empty when the model is loaded from a spec",
        )


def trainable_kind(model: Any) -> str:
    """``"dual"`` or ``"cross"``: which hard-negative task trains ``model``; a :class:`ModelError` when it
    lacks the training contract of its kind (a locked feature extractor, a scorer without gradients)."""
    from alignlab.models.base import DualEncoder

    check_trainable(model)
    return "dual" if isinstance(ddp_.unwrap(model), DualEncoder) else "cross"


@dataclass
class ProbeTrainConfig:
    """One model trained on image–caption pairs, with or without compositional hard negatives."""

    # A built-in architecture (tiny-dual | tiny-cross | pretrained-lit, new from model_config) or a spec
    # that loads one to fine-tune (ckpt:<dir> | hf:<id or dir> | open_clip:<arch>@<tag>).
    arch: str = "tiny-dual"
    model_config: dict[str, Any] = field(default_factory=dict)
    hard_negatives: bool = False
    negative_kinds: list[str] = field(default_factory=lambda: list(HARD_NEGATIVE_KINDS))
    sampled_negatives: int = 7  # cross encoder: in-batch candidates per image and per caption
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=6, batch_size=64, lr=2e-3, warmup_steps=10, log_every=20)
    )
    seed: int = 0

    def __post_init__(self) -> None:
        check_model_spec(self.arch, self.model_config)


def build_probe_model(cfg: ProbeTrainConfig, train: ImageTextPairs, device: str = "cpu") -> Any:
    """The model a run starts from: a new built-in one (seeded, its tokenizer from the training captions)
    or the model ``cfg.arch`` loads; refused unless a hard-negative task can train it."""
    from alignlab.models.factory import ARCHS, load_model

    check_model_spec(cfg.arch, cfg.model_config)
    if cfg.arch in ARCHS:
        tokenizer = WordTokenizer.build(train.captions)
        set_seed(cfg.seed)  # the seed decides the new model's weights
        model = build_model(cfg.arch, cfg.model_config, tokenizer)
    else:
        set_seed(cfg.seed)
        model = load_model(cfg.arch, device=device)
    trainable_kind(model)
    return model


def train_probe_model(
    cfg: ProbeTrainConfig,
    train: ImageTextPairs,
    run_dir: str | os.PathLike,
    *,
    resume: bool = True,
    device: str = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model in ``run_dir`` (resumable; a finished run is loaded, not retrained).

    The model is built or loaded and checked before ``run_dir`` is written. Returns the model (final
    weights, eval mode) and ``{"steps", "wall_s", "negatives"}`` (how many hard negatives of each kind
    were made).
    """
    from alignlab.models.factory import ARCHS

    tcfg = TrainConfig(**{**asdict(cfg.train), "seed": cfg.seed, "select_metric": None})
    model = build_probe_model(cfg, train, device)
    run_dir = start_run(run_dir, asdict(cfg))  # the run-folder sequence: alignlab.train.runs
    if trainable_kind(model) == "dual":
        task: Any = DualHardNegativeTask(
            model,
            train,
            tcfg.batch_size,
            cfg.seed,
            hard_negatives=cfg.hard_negatives,
            kinds=cfg.negative_kinds,
        )
    else:
        task = CrossHardNegativeTask(
            model,
            train,
            tcfg.batch_size,
            cfg.seed,
            hard_negatives=cfg.hard_negatives,
            sampled_negatives=cfg.sampled_negatives,
            kinds=cfg.negative_kinds,
        )
    hashed: dict[str, Any] = asdict(cfg)
    if cfg.arch not in ARCHS and getattr(model, "identity", None):
        # A loaded model's spec names files: resume only onto the same weights and settings.
        hashed["model_identity"] = model.identity
    t0 = time.time()
    res, _ = fit_best(  # no dev metric: the last weights
        model,
        task,
        tcfg,
        run_dir,
        resume=resume,
        config_for_hash=hashed,
        device=device,
        desc=f"{cfg.arch}{' +hardneg' if cfg.hard_negatives else ''} seed {cfg.seed}",
    )
    model.eval()
    return model, {
        "steps": res.steps,
        "wall_s": round(time.time() - t0, 2),
        "negatives": dict(task.neg_counts),
        "negatives_dropped_true": task.neg_stats["dropped_true"],
    }
