"""Training image–text retrieval models: the whole-run driver and the retrieval evaluations it selects with.

* :func:`run_retrieval` — data, model, :func:`~alignlab.train.fit` on a shared task, best-checkpoint test
  evaluation, ``results.json`` — what ``alignlab train --config`` and ``alignlab repro run`` call. Every
  trainable model kind trains: the built-in ``tiny-dual``, ``tiny-cross`` and ``pretrained-lit`` (new,
  from ``model_config``) and real models loaded from a spec (``hf:<hub id or folder>``,
  ``open_clip:<arch>@<tag>``; ``model_config`` then holds adapter options). A dual encoder trains with
  :class:`~alignlab.train.tasks.DualContrastiveTask`, a cross encoder with
  :class:`~alignlab.train.tasks.CrossMatchTask` (``model.is_dual``).
* :func:`evaluate_dual` / :func:`evaluate_cross` — exact retrieval reports of a dual (embeddings) or
  cross (all-pairs scores) encoder; :func:`dev_evaluator` wraps them as a task's ``evaluate``.

The training tasks themselves live in :mod:`alignlab.train.tasks` (written against the model contract
only); ``DualContrastiveTask`` and ``CrossMatchTask`` here are those tasks with this module's older
signature (``dev`` pairs instead of an ``evaluate`` callable), for existing callers.

Under torchrun (DDP, :mod:`alignlab.train.distributed`) ``train.batch_size`` is the per-rank batch: a
task's ``batch(epoch, index)`` is the global micro-batch of ``batch_size × world_size`` images and each
rank trains its slice; with ``gather_negatives`` the contrastive losses see the whole global batch as
negatives, so a run on ``W`` ranks follows the run of one process with ``W`` times the batch. Dev and
test evaluation shard the encoding over the ranks and gather it once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

from alignlab.core.config import from_dict
from alignlab.core.errors import ConfigError, DataError
from alignlab.core.manifest import make_result
from alignlab.core.progress import info
from alignlab.core.seed import set_seed
from alignlab.data.pairs import ImageTextPairs, from_shapes, load_pairs
from alignlab.data.shapes import ShapesConfig, ShapesWorld
from alignlab.data.text import WordTokenizer
from alignlab.models.factory import ARCHS, build_model, load_model
from alignlab.retrieval.evaluate import evaluate_model
from alignlab.train import distributed as ddp_
from alignlab.train import tasks as _tasks
from alignlab.train.loop import TrainConfig
from alignlab.train.losses import build_loss
from alignlab.train.runs import finish_run, fit_best, start_run


class DualContrastiveTask(_tasks.DualContrastiveTask):
    """:class:`alignlab.train.tasks.DualContrastiveTask` with this module's older signature: ``dev`` pairs
    are scored after each epoch by :func:`evaluate_dual` (unless ``evaluate`` is given)."""

    def __init__(
        self,
        model: Any,
        train: ImageTextPairs,
        loss: nn.Module,
        batch_size: int,
        seed: int,
        dev: ImageTextPairs | None = None,
        num_workers: int = 0,
        warm_loss: nn.Module | None = None,
        warm_epochs: int = 0,
        *,
        evaluate: _tasks.Evaluate | None = None,
        image_size: int | None = None,
    ):
        self.dev = dev
        super().__init__(
            model,
            train,
            loss,
            batch_size,
            seed,
            evaluate=evaluate if evaluate is not None else dev_evaluator(dev, dual=True),
            num_workers=num_workers,
            warm_loss=warm_loss,
            warm_epochs=warm_epochs,
            image_size=image_size,
        )


class CrossMatchTask(_tasks.CrossMatchTask):
    """:class:`alignlab.train.tasks.CrossMatchTask` with this module's older signature: the first
    ``dev_images`` images of ``dev`` are scored all-pairs by :func:`evaluate_cross` after each epoch."""

    def __init__(
        self,
        model: Any,
        train: ImageTextPairs,
        batch_size: int,
        seed: int,
        dev: ImageTextPairs | None = None,
        dev_images: int = 100,
        gather: bool = False,
        num_workers: int = 0,
        *,
        evaluate: _tasks.Evaluate | None = None,
        image_size: int | None = None,
    ):
        # Scoring every dev pair with a cross encoder is N x M forward passes: use a fixed dev subset.
        self.dev = dev.subset(range(min(dev_images, dev.n_images))) if dev is not None else None
        super().__init__(
            model,
            train,
            batch_size,
            seed,
            evaluate=evaluate if evaluate is not None else dev_evaluator(self.dev, dual=False),
            gather=gather,
            num_workers=num_workers,
            image_size=image_size,
        )


def _dev_metrics(model: Any, pairs: ImageTextPairs, dual: bool) -> dict[str, float]:
    evaluate = evaluate_dual if dual else evaluate_cross
    return dict(evaluate(model, pairs, distributed=ddp_.is_distributed()).metrics)


def dev_evaluator(pairs: ImageTextPairs | None, dual: bool) -> _tasks.Evaluate | None:
    """The ``evaluate`` a training task takes: exact retrieval metrics of ``pairs`` (None: no dev set).

    ``dual``: :func:`evaluate_dual` (embeddings), else :func:`evaluate_cross` (all-pairs scores); under DDP
    the ranks share the work.
    """
    return None if pairs is None else functools.partial(_dev_metrics, pairs=pairs, dual=dual)


def evaluate_dual(model: Any, pairs: ImageTextPairs, distributed: bool = False, **kwargs: Any) -> Any:
    """Exact retrieval report of a dual encoder, as a dev evaluation: :func:`evaluate_model` with every
    image (and caption) in one encoding call, the model's train/eval mode restored afterwards.

    ``distributed=True`` (every rank of a process group must call it): each rank encodes a block of the
    images and captions, the blocks are gathered once and the padded duplicates dropped; the report is
    the single-process one, on every rank.
    """
    with _eval_mode(model):
        whole = max(pairs.n_images, pairs.n_captions, 1)
        return evaluate_model(model, pairs, distributed=distributed, batch_size=whole, **kwargs)


def evaluate_cross(model: Any, pairs: ImageTextPairs, distributed: bool = False, **kwargs: Any) -> Any:
    """Exact retrieval report of a cross encoder from all-pairs scores (rows sharded over ranks if asked):
    :func:`evaluate_model` with every image row in one scoring call, the train/eval mode restored."""
    with _eval_mode(model):
        return evaluate_model(
            model, pairs, distributed=distributed, batch_size=max(pairs.n_images, 1), **kwargs
        )


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """``model`` in eval mode for the block, back in train mode afterwards if it was training."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


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


# Model specs run_retrieval loads (and trains from their own weights) rather than builds:
# prefix -> what follows.
LOADED_SOURCES = {"hf": "hub id or folder", "open_clip": "arch>@<tag or file"}


def _is_loaded_spec(model: str) -> bool:
    """``prefix:rest`` of a built-in source or of one registered in ``models.factory.SOURCES``
    (docs/architecture.md "Adding a model"); whether it can train is checked once it has loaded."""
    from alignlab.models.factory import SOURCES

    prefix, sep, rest = model.partition(":")
    return bool(sep and rest) and (prefix in LOADED_SOURCES or prefix in SOURCES)


# What a dev evaluation reports (R@K at the default K), i.e. what train.select_metric can name.
DEV_METRICS = (
    "rsum",
    *(f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)),
    *(f"{d}_{m}" for d in ("i2t", "t2i") for m in ("medr", "meanr")),
)


@dataclass
class RetrievalRunConfig:
    # tiny-dual | tiny-cross | pretrained-lit (new models) | hf:<hub id or folder> | open_clip:<arch>@<tag>
    model: str = "tiny-dual"
    # Built-in models: overrides of the model's dataclass config; a spec: options of its adapter (load_model).
    model_config: dict[str, Any] = field(default_factory=dict)
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

        if self.model not in ARCHS and not _is_loaded_spec(self.model):
            raise ConfigError(
                f"cannot train model {self.model!r}",
                key="model",
                fix=f"choose one of: {', '.join(ARCHS)}, "
                + ", ".join(f"{p}:<{what}>" for p, what in LOADED_SOURCES.items()),
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
        if self.model not in ARCHS:  # a real model resizes images itself: any data.image_size will do
            return
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
    model = build_run_model(cfg, data["train"].captions, device)
    size = getattr(getattr(model, "config", None), "image_size", None)  # built-in models declare one
    if size is not None and size != cfg.data.image_size:
        raise ConfigError(
            f"model image_size {size} differs from data image_size {cfg.data.image_size}",
            fix="set both to the same value",
        )
    if cfg.init_image_tower:
        load_image_tower(model, cfg.init_image_tower)
    # The run folder is written only now that the data, the model and its pretrained tower have loaded.
    start_run(run_dir, asdict(cfg))  # config -> fit -> best -> test -> results (alignlab.train.runs)
    if cfg.freeze_image_tower:
        for p in model.image_encoder().parameters():
            p.requires_grad_(False)
    global_batch = train_cfg.batch_size * world  # batch_size is per rank; the task builds global batches
    dev = data.get("val")
    task: Any
    if model.is_dual:  # tiny-dual, pretrained-lit, hf CLIP/SigLIP/BLIP ITC, open_clip
        loss = build_loss(cfg.loss, cfg.margin, gather=cfg.gather_negatives)
        warm = build_loss(cfg.warm_loss, cfg.margin, gather=cfg.gather_negatives) if cfg.warm_epochs else None
        task = _tasks.DualContrastiveTask(
            model,
            data["train"],
            loss,
            global_batch,
            cfg.seed,
            evaluate=dev_evaluator(dev, dual=True),
            num_workers=cfg.data.num_workers,
            warm_loss=warm,
            warm_epochs=cfg.warm_epochs,
            image_size=cfg.data.image_size,
        )
    else:  # tiny-cross, hf BLIP ITM
        # Scoring every dev pair with a cross encoder is N x M forward passes: use a fixed dev subset.
        if dev is not None:
            dev = dev.subset(range(min(cfg.cross_dev_images, dev.n_images)))
        task = _tasks.CrossMatchTask(
            model,
            data["train"],
            global_batch,
            cfg.seed,
            evaluate=dev_evaluator(dev, dual=False),
            gather=cfg.gather_negatives,
            num_workers=cfg.data.num_workers,
            image_size=cfg.data.image_size,
        )
    # The number of loader workers changes speed, not results: a run may resume with another number.
    hashed = {**asdict(cfg), "data": {k: v for k, v in asdict(cfg.data).items() if k != "num_workers"}}
    if not cfg.warm_epochs:  # no warm start: the run's hash is the one it had before the option existed
        hashed.pop("warm_loss"), hashed.pop("warm_epochs")
    fit_result, best = fit_best(
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
    model.eval()
    test = data["test"]
    if cfg.test_images is not None:
        test = test.subset(range(min(cfg.test_images, test.n_images)))
    if model.is_dual:
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
    finish_run(run_dir, result, per_query={"i2t_rank": report.i2t_ranks, "t2i_rank": report.t2i_ranks})
    info(
        f"{cfg.model} seed {cfg.seed}: test "
        + ", ".join(f"{k}={v:.2f}" for k, v in report.metrics.items() if "R@" in k or k == "rsum")
    )
    return result


def build_run_model(cfg: RetrievalRunConfig, captions: list[str], device: str = "cpu") -> Any:
    """The model a run trains: a new built-in model (its word tokenizer from the training ``captions``,
    initialised from ``cfg.seed``) or a real one loaded from its spec; either way one that can be trained
    (:func:`alignlab.train.tasks.check_trainable`), checked before any run folder is written."""
    if cfg.model in ARCHS:
        tokenizer = WordTokenizer.build(captions)
        set_seed(cfg.seed)
        model = build_model(cfg.model, cfg.model_config, tokenizer)
    else:
        set_seed(cfg.seed)
        try:
            model = load_model(cfg.model, device=device, **cfg.model_config)
        except TypeError as e:  # an option the adapter does not take
            raise ConfigError(
                f"model_config does not fit {cfg.model!r}: {e}",
                key="model_config",
                fix="give only options of the model's adapter (see alignlab.models.adapters)",
            ) from None
    _tasks.check_trainable(model)
    return model


def load_image_tower(model: nn.Module, path: str | os.PathLike) -> None:
    """Load pretrained image-tower weights (a safetensors file of the model's ``image_encoder()`` state)."""
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
        model.image_encoder().load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(
            f"pretrained image tower does not fit the model: {str(e).splitlines()[0]}",
            where=str(p),
            fix="pretrain with the same width, channels and image size",
        ) from None
