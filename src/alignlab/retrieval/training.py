"""Training image–text retrieval models: tasks for :func:`alignlab.train.fit` and a whole-run driver.

* :class:`DualContrastiveTask` — a dual encoder on in-batch negatives (InfoNCE or VSE++). An epoch is
  one pass over the *images*; each image comes with one of its own captions (``pairs.sources``), drawn
  per epoch, so that no image appears twice in a batch. A caption of another image can still be true
  of an image ("there is a circle"): every batch carries ``positives [B, B]``
  (:meth:`ImageTextPairs.known_true`: the truth evaluator on ShapesWorld, the relevance map and equal
  texts elsewhere), and the losses take such pairs out of the negatives (masked InfoNCE, see
  :mod:`alignlab.train.losses`).
  A *warm start* (``warm_loss`` for the first ``warm_epochs`` epochs, then ``loss``; e.g. VSE++
  max-violation after epochs of the sum of hinges, as hardest-negative training from random
  initialisation tends to collapse) is a run option; by default the run's loss is used throughout.
* :class:`CrossMatchTask` — a cross encoder scoring every (image, caption) pair of the batch; the
  loss is the symmetric cross-entropy over the batch grid (listwise image–text matching), with true
  pairs masked out of the negatives as above.
* :func:`run_retrieval` — data, tokenizer, model, :func:`~alignlab.train.fit`, best-checkpoint test
  evaluation, ``results.json`` — what ``alignlab train --config`` and ``alignlab repro run`` call.

Under torchrun (DDP, :mod:`alignlab.train.distributed`) ``train.batch_size`` is the per-rank batch: a
task's ``batch(epoch, index)`` is the global micro-batch of ``batch_size × world_size`` images and each
rank trains its slice (``local_batch``); with ``gather_negatives`` the contrastive losses see the whole
global batch as negatives, so a run on ``W`` ranks follows the run of one process with ``W`` times the
batch. Dev and test evaluation shard the encoding over the ranks and gather it once.

A batch is ``(images, texts, image ids, positives)``; ``positives[i, j]`` = caption ``j`` of the batch
is true of image ``i`` (bool, over the *global* batch, the same on every rank, so every rank masks its
gathered negatives alike).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.config import dump_yaml, from_dict
from alignlab.core.errors import ConfigError, DataError
from alignlab.core.io import write_json
from alignlab.core.manifest import make_result
from alignlab.core.progress import info
from alignlab.core.seed import derive_seed, set_seed
from alignlab.data.pairs import ImageTextPairs, from_shapes, load_pairs
from alignlab.data.shapes import ShapesConfig, ShapesWorld
from alignlab.data.text import WordTokenizer
from alignlab.models.factory import build_model
from alignlab.retrieval.metrics import evaluate_embeddings, evaluate_scores
from alignlab.train import distributed as ddp_
from alignlab.train.loop import FitResult, TrainConfig, epoch_permutation, fit, load_best
from alignlab.train.losses import build_loss, exclude_true


class _ImageBatches:
    """Shared batching: an epoch is a permutation of the images, each with one caption drawn per epoch."""

    def __init__(
        self, pairs: ImageTextPairs, batch_size: int, seed: int, image_size: int, num_workers: int = 0
    ):
        if pairs.n_images < 2:
            raise DataError("training needs at least 2 images", where=pairs.name)
        # In memory already (ShapesWorld): index the array. Files, a HF dataset or tar shards: a DataLoader
        # decodes each batch on demand (alignlab.data.loading), so memory is bounded by batch and prefetch.
        self.images: torch.Tensor | None = None
        self.loader: Any = None
        self._loader_state: dict[str, Any] | None = None
        self._loader_for: tuple[int, int] | None = None  # (rank, world size) the loader's batches are cut for
        if getattr(pairs, "image_array", None) is not None:
            if pairs.image_array.shape[1] != image_size:
                pairs = pairs.materialize(image_size)
            self.images = torch.from_numpy(pairs.image_array).permute(0, 3, 1, 2)  # uint8 [N, 3, S, S] view
        self.pairs = pairs
        self.image_size, self.num_workers = image_size, num_workers
        self.bs = batch_size
        self.seed = seed
        self.current_epoch = 0

    def num_batches(self, epoch: int) -> int:
        n = self.pairs.n_images
        full, rest = divmod(n, self.bs)
        # A last batch of one image has no negatives, and under DDP one smaller than the number of ranks
        # would leave a rank without data: either is dropped.
        return full + (1 if rest >= max(2, ddp_.world_size()) else 0)

    def _indices(self, epoch: int, index: int) -> tuple[np.ndarray, list[int]]:
        perm = epoch_permutation(self.pairs.n_images, self.seed, epoch)
        idx = perm[index * self.bs : (index + 1) * self.bs]
        rng = np.random.default_rng(derive_seed(self.seed, "captions", epoch, index))
        # An image's own captions: under truth relevance, `relevance` lists every caption true of it.
        own = getattr(self.pairs, "sources", self.pairs.relevance)
        caps = [own[i][rng.integers(len(own[i]))] for i in idx]
        return idx, caps

    def positives(self, idx: np.ndarray, caps: list[int]) -> torch.Tensor:
        """``[B, B]`` bool: caption ``caps[j]`` is true of image ``idx[i]`` (the diagonal always is).

        :meth:`ImageTextPairs.known_true` (the truth evaluator on ShapesWorld, else the relevance map), or
        an identical text.
        """
        texts = [self.pairs.captions[c] for c in caps]
        mask = np.array([[a == b for b in texts] for a in texts], dtype=bool).reshape(len(texts), len(texts))
        mask |= np.eye(len(caps), dtype=bool)
        if hasattr(self.pairs, "known_true"):
            mask |= self.pairs.known_true(idx, caps)
        return torch.from_numpy(mask)

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, list[str], np.ndarray, torch.Tensor]:
        self.current_epoch = epoch  # the epoch of the batch about to be trained (a warm start reads it)
        idx, caps = self._indices(epoch, index)
        return (
            self._images(epoch, index, idx),
            [self.pairs.captions[c] for c in caps],
            idx,
            self.positives(idx, caps),
        )

    def _images(self, epoch: int, index: int, idx: np.ndarray, rank: int = 0, world: int = 1) -> torch.Tensor:
        if self.images is not None:
            return self.images[idx]
        if self.loader is None or self._loader_for != (rank, world):  # built at first use: the rank is known
            from alignlab.data.loading import ImageBatchLoader, streaming

            self._loader_for = (rank, world)
            self.loader = ImageBatchLoader(
                streaming(self.pairs).images,
                self.image_size,
                functools.partial(self._rank_indices, rank=rank, world=world),
                self.num_batches,
                self.num_workers,
            )
            if self._loader_state:
                self.loader.load_state_dict(self._loader_state)
        return self.loader.get(epoch, index)

    def _rank_indices(self, epoch: int, index: int, rank: int, world: int) -> np.ndarray:
        idx = self._indices(epoch, index)[0]
        lo, hi = ddp_.shard_range(len(idx), world, rank)
        return idx[lo:hi]

    def state_dict(self) -> dict[str, Any]:
        """The image loader's position (epoch, next batch): saved in the training checkpoint."""
        state = self.loader.state_dict() if self.loader is not None else self._loader_state
        return {"loader": state} if state else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loader_state = state.get("loader")
        if self.loader is not None and self._loader_state:
            self.loader.load_state_dict(self._loader_state)

    def local_batch(self, epoch: int, index: int, rank: int, world: int) -> Any:
        """Rank ``rank``'s contiguous slice of global batch ``index`` (DDP; only its images are loaded).

        The ``positives`` mask stays the global batch's: every rank masks its gathered negatives alike.
        """
        if type(self).batch is not _ImageBatches.batch:  # a subclass changed what a batch holds: cut it whole
            return ddp_.shard_batch(self.batch(epoch, index), rank, world)
        self.current_epoch = epoch
        idx, caps = self._indices(epoch, index)  # captions are drawn for the whole global batch, then cut
        lo, hi = ddp_.shard_range(len(idx), world, rank)
        return (
            self._images(epoch, index, idx[lo:hi], rank, world),
            [self.pairs.captions[c] for c in caps[lo:hi]],
            idx[lo:hi],
            self.positives(idx, caps),
        )

    def batch_size(self, batch: Any) -> int:
        return len(batch[1])


class DualContrastiveTask(_ImageBatches):
    """In-batch contrastive training of a dual encoder; dev metric from exact retrieval evaluation."""

    def __init__(
        self,
        model: nn.Module,
        train: ImageTextPairs,
        loss: nn.Module,
        batch_size: int,
        seed: int,
        dev: ImageTextPairs | None = None,
        num_workers: int = 0,
        warm_loss: nn.Module | None = None,
        warm_epochs: int = 0,
    ):
        super().__init__(train, batch_size, seed, model.config.image_size, num_workers)
        self.loss_fn = loss
        # Warm start: batches of epochs < warm_epochs train with warm_loss (None or 0: loss throughout).
        self.warm_loss = warm_loss if warm_epochs > 0 else None
        self.warm_epochs = warm_epochs if warm_loss is not None else 0
        self.dev = dev
        # DDP has to be told when a model parameter (the temperature, for VSE losses) gets no gradient.
        self.find_unused_parameters = any(
            not getattr(f, "uses_logit_scale", True) for f in (loss, self.warm_loss) if f is not None
        )

    def loss_for(self, epoch: int) -> nn.Module:
        """The loss that trains the batches of ``epoch`` (the warm-start loss before ``warm_epochs``)."""
        return self.warm_loss if self.warm_loss is not None and epoch < self.warm_epochs else self.loss_fn

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, texts, _, positives = batch
        x = model.image_tower.preprocess(images, model.device)
        out = model(x, *model.tokenize(texts))
        return self.loss_for(self.current_epoch)(
            out["image_emb"], out["text_emb"], out["logit_scale"], positives=positives
        )

    def parameters(self):
        if self.warm_loss is None:
            return self.loss_fn.parameters()
        return [*self.loss_fn.parameters(), *self.warm_loss.parameters()]

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.dev is None:
            return {}
        return evaluate_dual(model, self.dev, distributed=ddp_.is_distributed()).metrics


class CrossMatchTask(_ImageBatches):
    """Listwise matching for a cross encoder: CE over the rows and columns of the batch's score grid."""

    def __init__(
        self,
        model: nn.Module,
        train: ImageTextPairs,
        batch_size: int,
        seed: int,
        dev: ImageTextPairs | None = None,
        dev_images: int = 100,
        gather: bool = False,
        num_workers: int = 0,
    ):
        super().__init__(train, batch_size, seed, model.config.image_size, num_workers)
        # Scoring every dev pair with a cross encoder is N x M forward passes: use a fixed dev subset.
        self.dev = dev.subset(range(min(dev_images, dev.n_images))) if dev is not None else None
        self.gather = gather  # under DDP: every rank's captions and images are negatives (the global grid)

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, texts, _, positives = batch
        x = model.image_tower.preprocess(images, model.device)
        if self.gather and ddp_.is_distributed():
            return {"match_loss": self._gathered_loss(model, x, *model.tokenize(texts), positives=positives)}
        logits = model.forward_grid(x, *model.tokenize(texts))
        target = torch.arange(len(logits), device=logits.device)
        true_neg = _true_negatives(positives, logits.device)
        return {
            "match_loss": 0.5
            * (
                F.cross_entropy(exclude_true(logits, true_neg), target)
                + F.cross_entropy(exclude_true(logits.T, None if true_neg is None else true_neg.T), target)
            )
        }

    @staticmethod
    def _gathered_loss(
        model: Any,
        x: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """This rank's share of the global grid loss: its rows (images) and columns (captions) of ``N × N``.

        The towers and the fusion all run inside one DDP forward pass (:func:`forward_through`); tokens
        are gathered with gradients, text tokens padded to the longest caption of any rank (padding is
        masked, so it changes nothing). The share is scaled by ``W/N`` like the gathered InfoNCE.
        """

        def grids(m: Any, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
            img_tok, _ = m.image_tower(x)
            txt_tok, _ = m.text_tower(ids, mask)
            length = max(ddp_.gather_sizes(txt_tok.shape[1]))
            pad = length - txt_tok.shape[1]
            if pad:
                txt_tok = torch.cat([txt_tok, txt_tok.new_zeros(len(txt_tok), pad, txt_tok.shape[2])], dim=1)
                mask = torch.cat([mask, mask.new_zeros(len(mask), pad)], dim=1)
            all_img, offset = ddp_.all_gather_with_grad(img_tok)
            all_txt, _ = ddp_.all_gather_with_grad(txt_tok)
            all_mask = ddp_.all_gather_nograd(mask)
            # _grid is the model's all-pairs fusion (what forward_grid runs after the towers).
            return m._grid(img_tok, all_txt, all_mask), m._grid(all_img, txt_tok, mask), offset, len(all_img)

        rows, cols, offset, n = ddp_.forward_through(model, grids, x, ids, mask)
        b = len(rows)
        target = torch.arange(b, device=rows.device) + offset
        true_neg = _true_negatives(positives, rows.device)  # the global batch's mask: this rank's part of it
        per = 0.5 * (
            F.cross_entropy(
                exclude_true(rows, None if true_neg is None else true_neg[offset : offset + b]),
                target,
                reduction="none",
            )
            + F.cross_entropy(
                exclude_true(cols.T, None if true_neg is None else true_neg[:, offset : offset + b].T),
                target,
                reduction="none",
            )
        )
        return per.sum() * (ddp_.world_size() / n)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.dev is None:
            return {}
        return evaluate_cross(model, self.dev, distributed=ddp_.is_distributed()).metrics


def _true_negatives(positives: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """The off-diagonal true pairs of a batch mask (None when there are none)."""
    if positives is None:
        return None
    off = positives.to(device).bool() & ~torch.eye(len(positives), dtype=torch.bool, device=device)
    return off if bool(off.any()) else None


def evaluate_dual(model: Any, pairs: ImageTextPairs, distributed: bool = False, **kwargs: Any) -> Any:
    """Exact retrieval report of a dual encoder (any scorer with ``encode_images``/``encode_texts``).

    ``distributed=True`` (every rank of a process group must call it): each rank encodes a block of the
    images and captions, the blocks are gathered once and the padded duplicates dropped; the report is
    the single-process one, on every rank.
    """
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    if distributed:
        ii, ci = ddp_.eval_shard(pairs.n_images), ddp_.eval_shard(pairs.n_captions)
        img = ddp_.gather_eval(model.encode_images(pairs.load_images(ii.tolist())), pairs.n_images)
        txt = ddp_.gather_eval(model.encode_texts([pairs.captions[c] for c in ci]), pairs.n_captions)
    else:
        img = model.encode_images(pairs.load_images())
        txt = model.encode_texts(pairs.captions)
    if was_training:
        model.train()
    return evaluate_embeddings(img, txt, pairs.relevance, **kwargs)


def evaluate_cross(model: Any, pairs: ImageTextPairs, distributed: bool = False, **kwargs: Any) -> Any:
    """Exact retrieval report of a cross encoder from all-pairs scores (rows sharded over ranks if asked)."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    if distributed:
        rows = ddp_.eval_shard(pairs.n_images)
        scores = ddp_.gather_eval(
            model.score(pairs.load_images(rows.tolist()), pairs.captions), pairs.n_images
        )
    else:
        scores = model.score(pairs.load_images(), pairs.captions)
    if was_training:
        model.train()
    return evaluate_scores(scores, pairs.relevance, **kwargs)


# --- whole runs -------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    source: str = "shapes"  # shapes (generated) | path (a data folder or file, see alignlab.data.pairs)
    train: int = 4000  # ShapesWorld images per split
    val: int = 500
    test: int = 1000
    seed: int = 0  # the data seed stays fixed across training seeds, so runs differ only in training
    polysemous_rate: float = 0.2
    image_size: int = 64
    path: str | None = None
    image_root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    num_workers: int = 0  # DataLoader processes decoding training images read from files, HF datasets or tar

    def __post_init__(self) -> None:
        from alignlab.core.config import check_number

        if self.source not in ("shapes", "path"):
            raise ConfigError(
                f"unknown data source {self.source!r}", key="source", fix="use 'shapes' or 'path'"
            )
        if self.source == "path" and not self.path:
            raise ConfigError(
                "data.source is 'path' but data.path is not set",
                key="path",
                fix="set data.path to a data folder or file",
            )
        if self.source == "path" and not Path(self.path).exists():
            raise DataError("data not found", where=self.path, fix="check data.path")
        for key in ("train", "val", "test"):
            check_number(key, getattr(self, key), lo=0)
        check_number("polysemous_rate", self.polysemous_rate, lo=0, hi=1)
        check_number("image_size", self.image_size, lo=16)


# What a dev evaluation reports (R@K at the default K), i.e. what train.select_metric can name.
DEV_METRICS = (
    "rsum",
    *(f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)),
    *(f"{d}_{m}" for d in ("i2t", "t2i") for m in ("medr", "meanr")),
)


@dataclass
class RetrievalRunConfig:
    model: str = "tiny-dual"  # tiny-dual | tiny-cross | pretrained-lit
    model_config: dict[str, Any] = field(default_factory=dict)  # overrides of the model's dataclass config
    init_image_tower: str | None = None  # file with pretrained image-tower weights (see pretrain.py)
    freeze_image_tower: bool = False
    loss: str = "infonce"  # infonce | vse-sum | vse-max (dual encoders)
    margin: float = 0.2
    # Warm start (dual encoders): the first warm_epochs epochs train with warm_loss, then `loss` (0: none).
    warm_loss: str = "vse-sum"
    warm_epochs: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=8, batch_size=128, lr=2e-3, warmup_steps=20, select_metric="rsum"
        )
    )
    cross_dev_images: int = 100  # dev images scored all-pairs by a cross encoder after each epoch
    gather_negatives: bool = True  # under torchrun/DDP: negatives from every rank (the global batch)
    test_images: int | None = None  # evaluate on the first N test images (None: all of the split)
    seed: int = 0  # model initialisation and batch order

    def __post_init__(self) -> None:
        # Every name and value is checked here, before a run folder is touched, not when training reaches it.
        import dataclasses as dc

        from alignlab.core.config import check_number
        from alignlab.models.factory import ARCHS
        from alignlab.train.losses import LOSSES

        if self.model not in ARCHS:
            raise ConfigError(
                f"cannot train model {self.model!r}", key="model", fix=f"choose one of: {', '.join(ARCHS)}"
            )
        for key in ("loss", "warm_loss"):
            try:
                LOSSES.get(getattr(self, key))
            except ConfigError as e:
                raise ConfigError(e.what, key=key, fix=e.fix) from None
        check_number("margin", self.margin, lo=0)
        check_number("warm_epochs", self.warm_epochs, lo=0)
        if self.warm_epochs and self.warm_epochs >= self.train.epochs:
            raise ConfigError(
                f"warm_epochs {self.warm_epochs} leaves no epoch for the loss {self.loss!r} "
                f"(train.epochs {self.train.epochs})",
                key="warm_epochs",
                fix="use fewer warm-start epochs than train.epochs, or 0 for no warm start",
            )
        metric = self.train.select_metric
        if metric is not None and metric not in DEV_METRICS:
            raise ConfigError(
                f"unknown dev metric {metric!r} for train.select_metric",
                key="train.select_metric",
                fix=f"choose one of: {', '.join(DEV_METRICS)} (or null for the last epoch)",
            )
        defaults = {f.name: f.default for f in dc.fields(ARCHS[self.model][1])}
        size = self.model_config.get("image_size", defaults.get("image_size"))
        if isinstance(size, int) and size != self.data.image_size:
            raise ConfigError(
                f"model image_size {size} differs from data.image_size {self.data.image_size}",
                key="data.image_size",
                fix="set model_config.image_size and data.image_size to the same value",
            )


def load_run_config(data: dict[str, Any] | None, where: str | None = None) -> RetrievalRunConfig:
    """A run config from a (partial) dict: given keys override the defaults, nested ones key by key.

    Merging onto the defaults first matters for nested sections: ``{"train": {"epochs": 3}}`` keeps the
    run's default batch size, learning rate and ``select_metric`` instead of the bare TrainConfig ones.
    """
    from alignlab.core.config import merge

    # Validate keys against the dataclasses first, so that a typo is reported, then merge onto the defaults.
    from_dict(RetrievalRunConfig, data or {}, where=where)
    return from_dict(RetrievalRunConfig, merge(asdict(RetrievalRunConfig()), data or {}), where=where)


@lru_cache(maxsize=4)
def _shapes_splits(
    seed: int, train: int, val: int, test: int, rate: float, size: int
) -> dict[str, ImageTextPairs]:
    world = ShapesWorld(ShapesConfig(image_size=size, polysemous_rate=rate))
    # Dev and test are scored under truth relevance. Training draws each image's own captions and masks
    # true pairs per batch with the truth evaluator, so it needs no whole-set truth map (O(n²) pairs).
    return {
        split: from_shapes(
            world.generate(n, seed, split),
            name=f"shapes-{split}",
            relevance="source" if split == "train" else "truth",
        )
        for split, n in (("train", train), ("val", val), ("test", test))
        if n > 0
    }


def load_run_data(cfg: DataConfig) -> dict[str, ImageTextPairs]:
    """Train/val/test pairs for a run (ShapesWorld is generated once per process and cached)."""
    if cfg.source == "shapes":
        return _shapes_splits(cfg.seed, cfg.train, cfg.val, cfg.test, cfg.polysemous_rate, cfg.image_size)
    if cfg.source == "path":
        return load_path_splits(cfg)
    raise ConfigError(f"unknown data source {cfg.source!r}", fix="use 'shapes' or 'path'")


def load_path_splits(cfg: Any) -> dict[str, ImageTextPairs]:
    """Train/val/test pairs from ``cfg.path`` (``*_split``, ``image_root``, ``image_size`` fields).

    ``cfg.path`` is a data file or folder (:func:`load_pairs`), a saved Hugging Face dataset or tar shards
    (:func:`alignlab.data.loading.open_image_text`). The training split's images stay on disk (a DataLoader
    decodes them batch by batch); the val and test splits are decoded into memory once, for evaluation.
    """
    from alignlab.data.loading import is_hf_folder, is_tar_source, open_image_text

    if not cfg.path:
        raise ConfigError("data.source is 'path' but data.path is not set", fix="set data.path")
    other = is_tar_source(cfg.path) or is_hf_folder(Path(cfg.path))
    splits: dict[str, Any] = {}
    for name, split in (("train", cfg.train_split), ("val", cfg.val_split), ("test", cfg.test_split)):
        pairs = (
            open_image_text(cfg.path, split, cfg.image_root)
            if other
            else load_pairs(cfg.path, split, cfg.image_root)
        )
        splits[name] = pairs if name == "train" else pairs.materialize(cfg.image_size)
    return splits


def run_retrieval(
    cfg: RetrievalRunConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = True,
    device: str = "cpu",
    callbacks=(),
    data: dict[str, ImageTextPairs] | None = None,
) -> dict[str, Any]:
    """Train one model with ``cfg`` in ``run_dir`` and evaluate its best checkpoint on the test split.

    Writes ``config.yaml``, ``results.json`` (metrics, dev curve, best epoch, manifest) and
    ``per_query.json`` (the rank of every test query, for paired significance tests). ``data`` (train,
    val, test pairs) replaces loading ``cfg.data`` when the caller already has it in memory.
    """
    run_dir = Path(run_dir)
    started = time.time()
    distributed, world = ddp_.is_distributed(), ddp_.world_size()  # DDP under torchrun; see the module doc
    data = data if data is not None else load_run_data(cfg.data)
    train_cfg = TrainConfig(**{**asdict(cfg.train), "seed": cfg.seed})
    tokenizer = WordTokenizer.build(data["train"].captions)
    set_seed(cfg.seed)
    model = build_model(cfg.model, cfg.model_config, tokenizer)
    if model.config.image_size != cfg.data.image_size:
        raise ConfigError(
            f"model image_size {model.config.image_size} differs from data image_size {cfg.data.image_size}",
            fix="set both to the same value",
        )
    if cfg.init_image_tower:
        load_image_tower(model, cfg.init_image_tower)
    # The run folder is written only now that the data, the model and its pretrained tower have loaded.
    run_dir.mkdir(parents=True, exist_ok=True)
    if ddp_.is_main():
        dump_yaml(run_dir / "config.yaml", asdict(cfg))
    if cfg.freeze_image_tower:
        for p in model.image_tower.parameters():
            p.requires_grad_(False)
    global_batch = train_cfg.batch_size * world  # batch_size is per rank; the task builds global batches
    if getattr(model, "is_dual", False):  # tiny-dual, pretrained-lit
        loss = build_loss(cfg.loss, cfg.margin, gather=cfg.gather_negatives)
        warm = build_loss(cfg.warm_loss, cfg.margin, gather=cfg.gather_negatives) if cfg.warm_epochs else None
        task: Any = DualContrastiveTask(
            model,
            data["train"],
            loss,
            global_batch,
            cfg.seed,
            dev=data.get("val"),
            num_workers=cfg.data.num_workers,
            warm_loss=warm,
            warm_epochs=cfg.warm_epochs,
        )
    elif cfg.model == "tiny-cross":
        task = CrossMatchTask(
            model,
            data["train"],
            global_batch,
            cfg.seed,
            dev=data.get("val"),
            dev_images=cfg.cross_dev_images,
            gather=cfg.gather_negatives,
            num_workers=cfg.data.num_workers,
        )
    else:
        raise ConfigError(
            f"cannot train model {cfg.model!r} here", fix="use tiny-dual, tiny-cross or pretrained-lit"
        )
    # The number of loader workers changes speed, not results: a run may resume with another number.
    hashed = {**asdict(cfg), "data": {k: v for k, v in asdict(cfg.data).items() if k != "num_workers"}}
    if not cfg.warm_epochs:  # no warm start: the run's hash is the one it had before the option existed
        hashed.pop("warm_loss"), hashed.pop("warm_epochs")
    fit_result: FitResult = fit(
        model,
        task,
        train_cfg,
        run_dir,
        resume=resume,
        config_for_hash=hashed,
        device=device,
        desc=f"{cfg.model} seed {cfg.seed}",
        callbacks=callbacks,
    )
    best = load_best(model, run_dir) if train_cfg.select_metric else fit_result.best
    model.eval()
    test = data["test"]
    if cfg.test_images is not None:
        test = test.subset(range(min(cfg.test_images, test.n_images)))
    if getattr(model, "is_dual", False):
        report = evaluate_dual(model, test, distributed=distributed)
    else:
        report = evaluate_cross(model, test, distributed=distributed)
    extra = {"world_size": world, "global_batch": global_batch * train_cfg.grad_accum} if distributed else {}
    if isinstance(test, ImageTextPairs):  # the labelling and its perfect-ranker ceiling, beside the metrics
        from alignlab.retrieval.protocols import perfect_ranker

        extra.update(relevance=test.relevance_kind, perfect_ranker=perfect_ranker(test, report.ks))
    result = make_result(
        task="retrieval",
        model=cfg.model,
        data=f"{test.name}:{test.n_images}",
        seed=cfg.seed,
        metrics=report.metrics,
        definitions=report.definitions,
        config=asdict(cfg),
        started=started,
        device=device,
        dev_curve=fit_result.dev_curve,
        best=best,
        steps=fit_result.steps,
        **extra,
    )
    if ddp_.is_main():
        write_json(run_dir / "per_query.json", {"i2t_rank": report.i2t_ranks, "t2i_rank": report.t2i_ranks})
        write_json(run_dir / "results.json", result)
    ddp_.barrier()
    info(
        f"{cfg.model} seed {cfg.seed}: test "
        + ", ".join(f"{k}={v:.2f}" for k, v in report.metrics.items() if "R@" in k or k == "rsum")
    )
    return result


def load_image_tower(model: nn.Module, path: str | os.PathLike) -> None:
    """Load pretrained image-tower weights (a safetensors file of ``ImageTower.state_dict()``)."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise DataError(
            "pretrained image tower not found",
            where=str(p),
            fix="run the pretraining first (alignlab.retrieval.pretrain) or fix the path",
        )
    try:
        state = load_file(str(p))
    except Exception as e:  # safetensors raises its own error types for a corrupt file
        raise DataError(
            f"cannot read the pretrained image tower: {str(e).splitlines()[0] if str(e) else e!r}",
            where=str(p),
            fix="give a safetensors file written by the pretraining",
        ) from None
    try:
        model.image_tower.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(
            f"pretrained image tower does not fit the model: {str(e).splitlines()[0]}",
            where=str(p),
            fix="pretrain with the same width, channels and image size",
        ) from None
