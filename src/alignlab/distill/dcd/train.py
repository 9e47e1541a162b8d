"""Training with DCD: the teacher, the students, and the run folders that ``repro compare`` reads.

* :func:`train_teacher` — a tiny cross encoder on near-duplicate ShapesWorld: batches of whole groups
  (so siblings are each other's negatives), symmetric cross-entropy over the batch's score grid. The
  teacher is trained once and reused by every student, arm and seed.
* :class:`DCDTask` — a task for :func:`alignlab.train.fit`. Per batch: draw one positive caption per
  image and a pool of ``M`` candidates (:func:`~alignlab.distill.dcd.miner.draw_pools`), score
  ``[positive, pool]`` with the frozen teacher, keep ``k`` negatives (hardest by the teacher, or random),
  score ``[positive, kept]`` with the student and apply the loss: DCD
  (:class:`~alignlab.distill.dcd.loss.DCDLoss`) or a baseline (:mod:`~alignlab.distill.dcd.baselines`).
  ``batch(epoch, index)`` depends only on ``(seed, epoch, index)`` — the pool, the positives and the
  teacher's scores are the same in every arm of an experiment, so arms differ only in what they do
  with them, and an interrupted run resumes exactly.
* :func:`run_dcd` — one whole run: data, teacher, student, ``fit``, best-checkpoint test evaluation,
  ``config.yaml``, ``results.json`` and ``per_query.json`` (the layout of
  :func:`alignlab.retrieval.repro.compare`).

The student's per-sample ground-truth loss is ``CE`` over ``[positive, kept negatives]`` (image →
text, as in DCD); a dual student adds ``t2i_weight ·`` caption → image cross-entropy over the batch's
images (free for a dual encoder, and it trains the direction the candidate lists do not).

Under DDP (torchrun; :mod:`alignlab.train.distributed`) ``train.batch_size`` is per process, as in
retrieval: the global batch is ``batch_size × world_size`` images. Every rank builds the *global*
batch (positives, pools, teacher scores and mining are pure functions of ``(seed, epoch, index)``, so
every rank mines exactly what one process would) and trains its contiguous shard
(:meth:`DCDTask.local_batch`). The loss is the rank's share of the global one: the per-sample weights
``w``, ``r`` (and the shuffled control's permutation) are normalised over the global batch, the
caption → image term ranks the images of every rank (gathered with gradients), relation KD uses the
global grid, and each share is scaled so that DDP's gradient average is the one-process gradient.
Cost: each rank scores the global batch's candidates with the teacher (``W×`` the teacher's fusion
work); scoring only the shard would give the same scores up to float rounding, which could flip
near-ties in the mining. A Hugging Face student is refused under DDP (not verified there).

A dual student is either alignlab's tiny dual encoder (built for the teacher, or ``student_init=ckpt:<dir>``)
or a real one, ``student_init="hf:<folder or hub id>"`` (CLIP, SigLIP, BLIP ITC with ``#itc``): all its
parameters train, its scores are ``scale · cos + bias`` with the model's own learned scale (and SigLIP's
bias), its images go through its own processor batch by batch, and the best checkpoint is written with
``save_pretrained`` to ``<run>/student`` (load it with ``hf:<run>/student``).
"""

from __future__ import annotations

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

from alignlab.core.config import from_dict
from alignlab.core.errors import ConfigError, DataError, ResumeError
from alignlab.core.io import read_json, write_json
from alignlab.core.manifest import cache_key, make_result
from alignlab.core.progress import info
from alignlab.core.seed import derive_seed, set_seed
from alignlab.core.threads import torch_threads  # noqa: F401  (re-exported for dcd callers)
from alignlab.data.pairs import ImageTextPairs, from_shapes
from alignlab.data.shapes import ShapesConfig, ShapesWorld
from alignlab.data.text import WordTokenizer
from alignlab.distill.dcd.baselines import FeatureMSE, relation_kd_rows, relation_kd_terms
from alignlab.distill.dcd.data import GroupBatches, NearDupConfig, groups_of, near_duplicate_pairs
from alignlab.distill.dcd.loss import MODES, DCDLoss, DCDLossConfig, Shard
from alignlab.distill.dcd.miner import (
    POOL_EXCLUSIONS,
    TeacherScores,
    check_pool,
    cross_states,
    draw_pools,
    has_states,
    select_hard,
    select_random,
)
from alignlab.distill.dcd.students import (
    STUDENTS,
    build_dual_student,
    build_shallow_cross,
    check_compatible,
    count_parameters,
    hf_student_spec,
    load_teacher,
    load_trainable_dual,
    save_trainable_dual,
)
from alignlab.models.base import CrossEncoder, TokenStates, load_images_for
from alignlab.models.factory import build_model, load_model
from alignlab.models.tiny import TinyCrossConfig
from alignlab.retrieval.evaluate import evaluate_model
from alignlab.retrieval.training import dev_evaluator, evaluate_cross, evaluate_dual, load_path_splits
from alignlab.train import distributed as ddp_
from alignlab.train.loop import FitResult, TrainConfig, fit, load_best
from alignlab.train.runs import finish_run, fit_best, start_run
from alignlab.train.tasks import dual_outputs

NEGATIVES = ("teacher", "random")
KD_KINDS = ("none", "score", "relation", "feature")

# The teacher (issue 15): a tiny cross encoder whose towers, projections and scale come from a dual
# encoder trained first (stage 1, TEACHER_DUAL_EPOCHS), with a fusion layer whose logit is added to the
# dual's score, trained on the dual's hard negatives with the towers frozen (stage 2,
# TEACHER_FUSION_EPOCHS). An 8 x 8 grid of image tokens. Measured against the dual trained with the same
# CPU budget by benchmarks/compare_teacher_dual.py (docs/dcd.md, "The teacher").
TEACHER_MODEL: dict[str, Any] = {
    "width": 64,
    "embed_dim": 64,
    "image_channels": [32, 64],
    "text_layers": 1,
    "heads": 4,
    "fusion_layers": 1,
    "dual_score": True,
    "head_pool": "mean",
}
TEACHER_DUAL_EPOCHS = 30
TEACHER_FUSION_EPOCHS = 4
TEACHER_FUSIONS = ("hard", "grid")
# The earlier default teacher, kept for comparison: a 4 x 4 grid of image tokens, two fusion layers, the
# whole model trained on each batch's score grid (fusion="grid").
GRID_TEACHER_MODEL: dict[str, Any] = {
    "width": 48,
    "image_channels": [16, 32, 48],
    "text_layers": 1,
    "fusion_layers": 2,
    "heads": 4,
}
# A real dual student without a learned logit scale (BLIP ITC) is trained with CLIP's initial scale,
# 1 / 0.07: a softmax over cosines in [-1, 1] at scale 1 is nearly flat. A constant scale does not change
# rankings, so the saved model still scores with its own (scale 1).
FIXED_STUDENT_SCALE = 1.0 / 0.07
# The dual student: about 40% of the teacher's parameters.
STUDENT_MODEL: dict[str, Any] = {
    "width": 32,
    "embed_dim": 32,
    "image_channels": [8, 16, 32],
    "text_layers": 1,
    "heads": 2,
}


# Named settings of the DCD trainer: the experiment's arms and the baselines
# (``alignlab distill dcd train --arm``).
ARMS: dict[str, dict[str, Any]] = {
    "no-kd": {"negatives": "random", "kd": "none", "weighting": False},  # no teacher: k random of M
    "hard-negatives": {"negatives": "teacher", "kd": "none", "weighting": False},  # teacher only mines
    "static-kd": {"negatives": "teacher", "kd": "score", "weighting": False},  # + score KD, plain means
    "dcd": {"negatives": "teacher", "kd": "score", "weighting": True},  # + dynamic weights
    "dcd-released": {"negatives": "teacher", "kd": "score", "weighting": True, "mode": "released"},
    "dcd-shuffled": {"negatives": "teacher", "kd": "score", "weighting": True, "shuffle_weights": True},
    "dcd-raw-mse": {
        "negatives": "teacher",
        "kd": "score",
        "weighting": True,
        "kd_center": False,
    },  # uncentred
    # ablation: the pools before truth relevance, which leave captions true of the image in as "negatives"
    "dcd-source-pools": {"negatives": "teacher", "kd": "score", "weighting": True, "pools": "source"},
    "relation-kd": {"negatives": "random", "kd": "relation", "weighting": False},  # in-batch KL
    "feature-mse": {"negatives": "random", "kd": "feature", "weighting": False},  # FitNets-style hints
}


# --- data ---------------------------------------------------------------------------------------------


@dataclass
class DCDDataConfig:
    source: str = "neardup"  # neardup (groups of near-duplicate scenes) | shapes (plain) | path
    train: int = 1500  # images per split (neardup: rounded down to whole groups)
    val: int = 150
    test: int = 300
    seed: int = 0  # fixed across training seeds: runs differ only in training
    group_size: int = 3
    image_size: int = 64
    polysemous_rate: float = 0.2
    path: str | None = None
    image_root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    # DataLoader processes decoding the training images of file-backed data (source "path") ahead of use
    # (the student; the teacher's group-batch and grid stages). Speed only: the batches and the numbers
    # are the same for any count, and a run's resume hash leaves it out.
    num_workers: int = 0

    def __post_init__(self) -> None:
        from alignlab.core.config import check_number

        check_number("num_workers", self.num_workers, lo=0)


def _hashed(cfg: Any) -> dict[str, Any]:
    """``asdict(cfg)`` without settings that change speed only (``data.num_workers``): what a resume and
    a finished run are matched on."""
    out = asdict(cfg)
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k != "num_workers"}
    return out


@lru_cache(maxsize=4)
def _neardup(seed: int, train: int, val: int, test: int, group: int, size: int, rate: float):
    cfg = NearDupConfig(group_size=group, image_size=size, polysemous_rate=rate)
    return {
        s: near_duplicate_pairs(n, seed, s, cfg)
        for s, n in (("train", train), ("val", val), ("test", test))
        if n > 0
    }


@lru_cache(maxsize=4)
def _plain(seed: int, train: int, val: int, test: int, size: int, rate: float):
    world = ShapesWorld(ShapesConfig(image_size=size, polysemous_rate=rate))
    return {
        s: from_shapes(world.generate(n, seed, s), name=f"shapes-{s}")
        for s, n in (("train", train), ("val", val), ("test", test))
        if n > 0
    }


def load_dcd_data(cfg: DCDDataConfig) -> dict[str, ImageTextPairs]:
    """Train/val/test pairs (generated sets are cached per process)."""
    if cfg.source == "neardup":
        return _neardup(
            cfg.seed, cfg.train, cfg.val, cfg.test, cfg.group_size, cfg.image_size, cfg.polysemous_rate
        )
    if cfg.source == "shapes":
        return _plain(cfg.seed, cfg.train, cfg.val, cfg.test, cfg.image_size, cfg.polysemous_rate)
    if cfg.source == "path":
        return load_path_splits(cfg)
    raise ConfigError(f"unknown data source {cfg.source!r}", fix="use neardup, shapes or path")


def _images_tensor(pairs: ImageTextPairs, size: int) -> tuple[ImageTextPairs, torch.Tensor]:
    if pairs.image_array is None or pairs.image_array.shape[1] != size:
        pairs = pairs.materialize(size)
    assert pairs.image_array is not None
    return pairs, torch.from_numpy(pairs.image_array).permute(0, 3, 1, 2)


class SplitImages:
    """A split's images at ``size`` × ``size``, read per batch (``uint8 [B, 3, size, size]`` each).

    Pairs held in memory (ShapesWorld) are sliced (a view of their array; resized once if held at another
    size); file-backed pairs are decoded batch by batch (``pairs.load_images(idx, size)``, the same bits as
    materialising them), so memory is bounded by the batch and a batch depends only on its indices (exact
    resume needs no loader state).
    """

    def __init__(self, pairs: ImageTextPairs, size: int):
        self.size = size
        self.tensor: torch.Tensor | None = None
        self.pairs = pairs
        if pairs.image_array is not None:
            self.pairs, self.tensor = _images_tensor(pairs, size)

    def __len__(self) -> int:
        return self.pairs.n_images

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor[idx]
        if isinstance(idx, slice):
            rows: Any = range(*idx.indices(len(self)))
        else:
            rows = np.atleast_1d(np.asarray(idx, dtype=np.int64)).tolist()
        return self.pairs.load_images(rows, self.size)


def _split_images(pairs: ImageTextPairs, size: int) -> tuple[ImageTextPairs, SplitImages]:
    images = SplitImages(pairs, size)
    return images.pairs, images


def _task_image_size(model: Any, pairs: ImageTextPairs) -> int:
    """The size a teacher task holds the training images at: the tiny model's input size; for a model
    that resizes images itself (``native_images``), the size the pairs are held at in memory."""
    cfg = getattr(model, "config", None)
    if not getattr(model, "native_images", False) and isinstance(getattr(cfg, "image_size", None), int):
        return int(cfg.image_size)  # type: ignore[union-attr]
    if pairs.image_array is not None:
        return int(pairs.image_array.shape[1])
    raise ConfigError(
        f"{getattr(model, 'name', type(model).__name__)} has no input size to hold the training images at",
        fix="use pairs held in memory (ShapesWorld data) for this teacher",
    )


def _evaluate_cross(model: Any, pairs: ImageTextPairs | None) -> dict[str, float]:
    """Dev metrics of a cross encoder (none without a dev split): the one retrieval evaluation path."""
    return evaluate_cross(model, pairs).metrics if pairs is not None else {}


def _write_run(run_dir: Path, report: Any, **result_kw: Any) -> dict[str, Any]:
    """The run's result; rank 0 writes per_query.json, then results.json (alignlab.train.runs)."""
    result = make_result(metrics=report.metrics, definitions=report.definitions, **result_kw)
    per_query = {"i2t_rank": report.i2t_ranks, "t2i_rank": report.t2i_ranks}
    return finish_run(run_dir, result, per_query=per_query)


def _finished(run_dir: Path, cfg: Any) -> dict[str, Any] | None:
    """A finished run's results when ``run_dir`` holds one made with exactly ``cfg``."""
    path = run_dir / "results.json"
    if path.is_file() and (run_dir / "per_query.json").is_file():
        res = read_json(path)
        # same config *and* same code: results of older code are never reused silently
        if res.get("manifest", {}).get("cache_key") == cache_key(asdict(cfg)):
            return res
    return None


# --- the teacher --------------------------------------------------------------------------------------


@dataclass
class TeacherRunConfig:
    """How the cross-encoder teacher is trained: a dual encoder first, then the fusion on its hard negatives.

    * **Stage 1 (towers):** a tiny dual encoder with the teacher's tower shapes (``pool="mean"``) trained
      with masked InfoNCE for ``pretrain_epochs`` on the training images (plus ``pretrain_images`` extra
      near-duplicate images from data seed + 1000), in batches of whole near-duplicate groups
      (``pretrain_groups``); its best checkpoint (dev RSUM) gives the teacher its towers and, with the
      model's ``dual_score``, its projections and scale
      (:meth:`~alignlab.models.tiny.TinyCrossEncoder.load_dual`).
    * **Stage 2 (fusion), ``fusion="hard"``:** the towers stay frozen (``tune_towers=False``: their outputs
      are computed once); the fusion learns on the dual's hard negatives: per image, a positive caption
      (``positives="truth"``: any caption true of it, generic ones included; ``"own"``: one of its own),
      ``hard_negatives`` of the ``hard_pool`` captions the dual scores highest among those *false* of
      the image (truth evaluator) and ``random_negatives`` random ones; per positive caption the same
      over images (weight ``t2i_weight``). Listwise CE over ``[positive, negatives]``. (With own
      captions only as positives the fusion cut image → text R@1 far below the dual's; see
      docs/dcd.md, "The teacher".)
    * ``fusion="grid"`` is the earlier recipe: every parameter trains on the symmetric CE of each batch's
      score grid (:class:`TeacherGridTask`).
    """

    model_config: dict[str, Any] = field(default_factory=lambda: dict(TEACHER_MODEL))
    data: DCDDataConfig = field(default_factory=DCDDataConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=TEACHER_FUSION_EPOCHS, batch_size=32, lr=1e-3, warmup_steps=20, select_metric="rsum"
        )
    )
    fusion: str = (
        "hard"  # hard (dual-mined negatives, frozen towers) | grid (the batch's score grid, all trains)
    )
    hard_pool: int = 24  # per image (caption): the dual's top captions (images) among the false ones
    hard_negatives: int = 12  # drawn from that pool per positive and step
    random_negatives: int = 16  # drawn from the whole training set per positive and step
    positives: str = (
        "truth"  # fusion="hard": an image's positive is any caption true of it (truth) or its own
    )
    t2i_weight: float = 1.0  # weight of the caption -> images term
    tune_towers: bool = False  # fusion="hard": also train the towers (slower: they run every step)
    dev_images: int = 60  # dev images scored all-pairs after each epoch (a cross encoder is slow)
    test_images: int | None = None  # evaluate on the first N test images (None: all)
    # Stage 1: the dual encoder whose towers the teacher starts from (0 epochs: towers from scratch,
    # only with fusion="grid"). As for real teachers, the towers are pretrained before the fusion.
    pretrain_epochs: int = TEACHER_DUAL_EPOCHS
    pretrain_images: int = 0  # extra near-duplicate images (data seed + 1000) for stage 1
    pretrain_batch_size: int = 48
    pretrain_lr: float = 1e-3  # at 2e-3 the dual's dev RSUM fell by half or more for epochs at a time
    pretrain_groups: bool = True  # stage-1 batches of whole near-duplicate groups (False: random images)
    threads: int | None = None  # torch threads (1 avoids oversubscription on a shared machine)
    seed: int = 0

    def __post_init__(self) -> None:
        _check_select_metric(self.train)
        from alignlab.core.config import check_number

        check_number("pretrain_lr", self.pretrain_lr, lo=0, lo_open=True, hi=10)
        if self.fusion not in TEACHER_FUSIONS:
            raise ConfigError(
                f"fusion must be one of {', '.join(TEACHER_FUSIONS)}, got {self.fusion!r}",
                key="fusion",
                fix="hard (the dual's hard negatives; default) or grid (the earlier recipe)",
            )
        if self.positives not in ("truth", "own"):
            raise ConfigError(
                f"positives must be truth or own, got {self.positives!r}",
                key="positives",
                fix="truth (any caption true of the image; default) or own (its own captions)",
            )
        for key in ("hard_pool", "hard_negatives"):
            check_number(key, getattr(self, key), lo=1)
        for key in ("random_negatives", "t2i_weight"):
            check_number(key, getattr(self, key), lo=0)
        if self.hard_negatives > self.hard_pool:
            raise ConfigError(
                f"hard_negatives {self.hard_negatives} exceeds hard_pool {self.hard_pool}",
                key="hard_negatives",
                fix="draw at most hard_pool negatives",
            )
        if self.fusion == "hard" and self.pretrain_epochs < 1:
            raise ConfigError(
                "fusion='hard' mines with the stage-1 dual encoder: pretrain_epochs must be >= 1",
                key="pretrain_epochs",
                fix=f"set pretrain_epochs (default {TEACHER_DUAL_EPOCHS}) or use fusion='grid'",
            )
        spec = self.model_config.get("spec")
        if spec is not None:
            if set(self.model_config) != {"spec"} or not isinstance(spec, str) or not spec:
                raise ConfigError(
                    "model_config with a spec names another cross encoder and takes no other keys",
                    key="model_config",
                    fix='e.g. model_config: {spec: "hf:<BLIP ITM folder>#itm-logit"}; '
                    "or tiny-cross keys only",
                )
            if self.pretrain_epochs > 0:
                raise ConfigError(
                    "stage 1 (dual pretraining of the towers) exists only for the tiny cross teacher",
                    key="pretrain_epochs",
                    fix="set pretrain_epochs=0 and fusion='grid' for a pretrained cross encoder",
                )


def _check_select_metric(train: TrainConfig) -> None:
    """train.select_metric must be a metric the dev evaluation reports (checked before any training)."""
    from alignlab.retrieval.training import DEV_METRICS

    if train.select_metric is not None and train.select_metric not in DEV_METRICS:
        raise ConfigError(
            f"unknown dev metric {train.select_metric!r} for train.select_metric",
            key="train.select_metric",
            fix=f"choose one of: {', '.join(DEV_METRICS)} (or null for the last epoch)",
        )


def tower_dual_config(model_config: dict[str, Any], image_size: int) -> dict[str, Any]:
    """The tiny-dual config with the towers (and dual-score projection) of a tiny-cross ``model_config``."""
    mc = from_dict(TinyCrossConfig, {**model_config, "image_size": image_size})
    return {
        "image_size": mc.image_size,
        "width": mc.width,
        "embed_dim": mc.embed_dim or mc.width,
        "image_channels": list(mc.image_channels),
        "image_layers": mc.image_layers,
        "text_layers": mc.text_layers,
        "heads": mc.heads,
        "max_text_len": mc.max_text_len,
        "init_temperature": mc.init_temperature,
        "image_stem": mc.image_stem,
        "image_stage_depth": mc.image_stage_depth,
        "image_norm": mc.image_norm,
        "pool": "mean",
    }


class _GroupGridTask:
    """Batches of whole near-duplicate groups (siblings meet), one of each image's own captions drawn per
    batch, with the ``[images, captions]`` grid of pairs known to be true (truth evaluator, or equal text)."""

    stream = "group-captions"  # the name of the caption draw's random stream (kept per task: same batches)

    def __init__(
        self,
        model: nn.Module,
        train: ImageTextPairs,
        batch_size: int,
        seed: int,
        dev: ImageTextPairs | None = None,
        num_workers: int = 0,
    ):
        self.train, self.images = _split_images(train, _task_image_size(model, train))
        self.batches = GroupBatches(groups_of(train), batch_size, seed)
        self.seed = seed
        self.dev = dev
        # File-backed images with workers: a DataLoader decodes each batch ahead of use. A batch's images
        # are found by its indices (``_drawn``: index tuple -> (epoch, index)); anything else (a rank's
        # shard under DDP) is decoded in-process, the same bits either way.
        self.num_workers = num_workers if self.images.tensor is None else 0
        self.loader: Any = None
        self._drawn: dict[tuple[int, ...], tuple[int, int]] = {}

    def num_batches(self, epoch: int) -> int:
        return len(self.batches.batches(epoch))

    def batch_size(self, batch: Any) -> int:
        return len(batch[0])

    def _batch_images(self, idx: Any) -> torch.Tensor:
        """``uint8 [B, 3, S, S]`` of training images ``idx`` (from the DataLoader when it has them)."""
        where = self._drawn.pop(tuple(int(i) for i in idx), None) if self.num_workers else None
        if where is None:
            return self.images[idx]
        if self.loader is None:
            from alignlab.data.loading import ImageBatchLoader, streaming

            self.loader = ImageBatchLoader(
                streaming(self.train).images,
                self.images.size,
                lambda e, i: [int(j) for j in self.batches.batches(e)[i]],
                self.num_batches,
                self.num_workers,
            )
        return self.loader.get(*where)

    def _draw(self, epoch: int, index: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        idx = self.batches.batches(epoch)[index]
        if self.num_workers:
            self._drawn = {tuple(int(i) for i in idx): (epoch, index)}  # the batch about to be trained
        rng = np.random.default_rng(derive_seed(self.seed, self.stream, epoch, index))
        caps = [self.train.sources[i][rng.integers(len(self.train.sources[i]))] for i in idx]
        texts = [self.train.captions[c] for c in caps]
        true = self.train.known_true(idx, caps) | np.array(
            [[a == b for b in texts] for a in texts], dtype=bool
        )
        return idx, texts, true


class GroupDualTask(_GroupGridTask):
    """Masked InfoNCE for a dual encoder on batches of whole near-duplicate groups (siblings meet).

    One caption per image is drawn per batch; a caption true of another image of the batch is left out
    of that row's and column's softmax (truth evaluator), as in the retrieval tasks.
    """

    stream = "teacher-dual-captions"

    def __init__(
        self,
        model: nn.Module,
        train: ImageTextPairs,
        batch_size: int,
        seed: int,
        dev: ImageTextPairs | None = None,
        num_workers: int = 0,
    ):
        from alignlab.train.losses import InfoNCELoss

        super().__init__(model, train, batch_size, seed, dev, num_workers)
        self.loss_fn = InfoNCELoss()

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, list[str], torch.Tensor]:
        idx, texts, true = self._draw(epoch, index)
        np.fill_diagonal(true, True)  # InfoNCELoss's positives: the diagonal and every true pair
        return idx, texts, torch.from_numpy(true)

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        idx, texts, positives = batch
        out = dual_outputs(model, model.preprocess_images(self._batch_images(idx)), model.tokenize(texts))
        return self.loss_fn(out["image_emb"], out["text_emb"], out["logit_scale"], positives=positives)

    def parameters(self):
        return self.loss_fn.parameters()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate_dual(model, self.dev).metrics if self.dev is not None else {}


def train_tower_dual(
    cfg: TeacherRunConfig,
    tokenizer: WordTokenizer,
    train: ImageTextPairs,
    dev: ImageTextPairs | None,
    run_dir: Path,
    *,
    epochs: int | None = None,
    extra: ImageTextPairs | None = None,
    resume: bool = True,
    device: str = "cpu",
    desc: str = "dcd teacher stage 1 (dual)",
    callbacks=(),
) -> tuple[nn.Module, FitResult]:
    """Stage 1: the dual encoder with the teacher's tower shapes, best checkpoint (dev RSUM) loaded.

    Also the teacher's baseline: the same recipe given the teacher's whole CPU budget
    (``epochs``; ``benchmarks/compare_teacher_dual.py``).
    """
    from alignlab.distill.dcd.data import concat_pairs
    from alignlab.train.losses import InfoNCELoss
    from alignlab.train.tasks import DualContrastiveTask

    epochs = epochs or cfg.pretrain_epochs
    dual = build_model("tiny-dual", tower_dual_config(cfg.model_config, cfg.data.image_size), tokenizer)
    pairs = concat_pairs(train, extra, name="teacher-pretrain") if extra is not None else train
    tcfg = TrainConfig(
        epochs=epochs,
        batch_size=cfg.pretrain_batch_size,
        lr=cfg.pretrain_lr,
        warmup_steps=20,
        select_metric="rsum",
        log_every=20,
        seed=cfg.seed,
    )
    if cfg.pretrain_groups:
        task: Any = GroupDualTask(
            dual, pairs, tcfg.batch_size, cfg.seed, dev=dev, num_workers=cfg.data.num_workers
        )
    else:
        task = DualContrastiveTask(
            dual,
            pairs,
            InfoNCELoss(),
            tcfg.batch_size,
            cfg.seed,
            evaluate=dev_evaluator(dev, dual=True),
        )
    res = fit(
        dual,
        task,
        tcfg,
        run_dir,
        resume=resume,
        config_for_hash={"teacher": _hashed(cfg), "train": asdict(tcfg)},
        device=device,
        desc=desc,
        callbacks=callbacks,
    )
    load_best(dual, run_dir)
    dual.eval()
    return dual, res


class TeacherGridTask(_GroupGridTask):
    """A cross encoder on batches of whole groups: CE over the rows and columns of the batch's score grid.

    A caption true of another image of the batch (a near-duplicate scene) is not a negative there: its
    logit is left out of that row's and column's softmax, as in the retrieval tasks' masked InfoNCE.
    """

    stream = "teacher-captions"

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, list[str], torch.Tensor]:
        idx, texts, true = self._draw(epoch, index)
        np.fill_diagonal(true, False)  # the diagonal is the positive, never masked
        return idx, texts, torch.from_numpy(true)

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        idx, texts, true_negatives = batch
        logits = ddp_.forward_through(
            model, lambda m: m.match_grid(m.preprocess_images(self._batch_images(idx)), m.tokenize(texts))
        )
        logits = logits.masked_fill(true_negatives.to(logits.device), torch.finfo(logits.dtype).min)
        target = torch.arange(len(logits), device=logits.device)
        return {"match_loss": 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return _evaluate_cross(model, self.dev)


@dataclass
class HardBatch:
    images: np.ndarray  # [B] training images
    positives: np.ndarray  # [B] one own caption each
    captions: np.ndarray  # [B, 1 + n]: the positive, then negatives for the image
    caption_false: torch.Tensor  # [B, 1 + n] bool: which of them may be a negative (False: true of the image)
    rivals: np.ndarray  # [B, 1 + n]: the image, then negative images for its positive caption
    rival_false: torch.Tensor  # [B, 1 + n] bool


class TeacherHardTask:
    """Stage 2 of the teacher: the fusion on hard negatives mined by the stage-1 dual encoder.

    The dual scores every training image against every training caption once. Per image, the
    ``hard_pool`` captions it scores highest *among those false of the image* (truth evaluator; also
    never one of the image's own captions) form its hard pool; per caption the same over images. A
    batch (whole groups, seeded by ``(seed, epoch, index)``) draws for each image one positive caption
    (any caption true of it, or one of its own: ``cfg.positives``),
    ``hard_negatives`` from its pool and ``random_negatives`` from all captions (a random one that is
    true of the image is masked out), and the same over images for that caption. The loss is CE with the
    positive first, image → captions plus ``t2i_weight`` × caption → images.

    With frozen towers (``tune_towers=False``) the tower outputs of every training image and caption
    are computed once and a step costs only the fusion of its pairs.
    """

    def __init__(
        self,
        model: nn.Module,
        dual: nn.Module,
        train: ImageTextPairs,
        cfg: TeacherRunConfig,
        batch_size: int,
        dev: ImageTextPairs | None = None,
    ):
        self.cfg = cfg
        self.train, self.images = _split_images(train, _task_image_size(model, train))
        self.batches = GroupBatches(groups_of(train), batch_size, cfg.seed)
        self.dev = dev
        n, c = train.n_images, train.n_captions
        with torch.no_grad():
            img = torch.cat([dual.encode_images(self.images[s : s + 256]) for s in range(0, n, 256)]).float()
            txt = torch.cat(
                [dual.encode_texts(train.captions[s : s + 512]) for s in range(0, c, 512)]
            ).float()
            sims = img.cpu() @ txt.cpu().T
        true = np.zeros((n, c), dtype=bool)
        for s in range(0, n, 256):  # the truth table in blocks of images (bounded memory)
            true[s : s + 256] = train.known_true(np.arange(s, min(s + 256, n)), np.arange(c))
        for i, own in enumerate(train.relevance):
            true[i, own] = True
        self.true_np = true
        self.true = torch.from_numpy(true)
        sims = sims.masked_fill(self.true, float("-inf"))
        k_c, k_i = min(cfg.hard_pool, c - 1), min(cfg.hard_pool, n - 1)
        self.hard_captions = sims.topk(k_c, dim=1).indices.numpy()  # [N, K]
        self.hard_images = sims.T.topk(k_i, dim=1).indices.numpy()  # [C, K]
        # a pool slot whose score is -inf holds a true caption (fewer than K false ones): never drawn
        self.caption_ok = torch.isfinite(sims.topk(k_c, dim=1).values).numpy()
        self.image_ok = torch.isfinite(sims.T.topk(k_i, dim=1).values).numpy()
        self.n_hard = min(cfg.hard_negatives, k_c, k_i)
        self.tokens: tuple[TokenStates, TokenStates] | None = None
        if not cfg.tune_towers:
            self.tokens = self._tower_outputs(model)

    @torch.no_grad()
    def _tower_outputs(self, model: Any) -> tuple[TokenStates, TokenStates]:
        was = model.training
        model.eval()
        out = cross_states(
            model, lambda lo, hi: self.images[lo:hi], len(self.images), list(self.train.captions)
        )
        model.train(was)
        return out

    def num_batches(self, epoch: int) -> int:
        return len(self.batches.batches(epoch))

    def batch_size(self, batch: HardBatch) -> int:
        return len(batch.images)

    def _draw(self, pool: np.ndarray, ok: np.ndarray, n_all: int, rng: np.random.Generator) -> np.ndarray:
        p = ok / ok.sum() if ok.sum() else None
        hard = rng.choice(pool, size=min(self.n_hard, int(ok.sum()) or len(pool)), replace=False, p=p)
        hard = (
            np.concatenate([hard, rng.choice(pool, size=self.n_hard - len(hard))])
            if len(hard) < self.n_hard
            else hard
        )
        return np.concatenate([hard, rng.integers(0, n_all, self.cfg.random_negatives)])

    def batch(self, epoch: int, index: int) -> HardBatch:
        idx = np.asarray(self.batches.batches(epoch)[index], dtype=np.int64)
        rng = np.random.default_rng(derive_seed(self.cfg.seed, "teacher-hard", epoch, index))
        tr = self.train
        if self.cfg.positives == "truth":  # any caption true of the image, generic ones included
            pos = np.array([rng.choice(np.flatnonzero(self.true_np[i])) for i in idx], dtype=np.int64)
        else:
            pos = np.array([tr.sources[i][rng.integers(len(tr.sources[i]))] for i in idx], dtype=np.int64)
        caps = np.stack(
            [
                np.concatenate(
                    [[p], self._draw(self.hard_captions[i], self.caption_ok[i], tr.n_captions, rng)]
                )
                for i, p in zip(idx, pos, strict=True)
            ]
        )
        rivals = np.stack(
            [
                np.concatenate([[i], self._draw(self.hard_images[p], self.image_ok[p], tr.n_images, rng)])
                for i, p in zip(idx, pos, strict=True)
            ]
        )
        cap_false = ~self.true[
            torch.from_numpy(np.repeat(idx, caps.shape[1])), torch.from_numpy(caps.reshape(-1))
        ]
        riv_false = ~self.true[
            torch.from_numpy(rivals.reshape(-1)), torch.from_numpy(np.repeat(pos, rivals.shape[1]))
        ]
        cap_false, riv_false = cap_false.view(caps.shape).clone(), riv_false.view(rivals.shape).clone()
        cap_false[:, 0] = True  # the positive is column 0 (its "false" flag means: keep in the softmax)
        riv_false[:, 0] = True
        return HardBatch(idx, pos, caps, cap_false, rivals, riv_false)

    def _pair_logits(self, model: nn.Module, images: np.ndarray, captions: np.ndarray) -> torch.Tensor:
        if self.tokens is not None:  # frozen towers: their states once, the fusion per pair
            img, txt = self.tokens
            ii, cc = torch.from_numpy(images), torch.from_numpy(captions)
            return model.fuse_pairs(img.select(ii), txt.select(cc, trim=True))
        texts = [self.train.captions[c] for c in captions]
        return ddp_.forward_through(
            model, lambda m: m.match_pairs(m.preprocess_images(self.images[images]), m.tokenize(texts))
        )

    def loss(self, model: nn.Module, b: HardBatch) -> dict[str, torch.Tensor]:
        bsz, n = b.captions.shape
        logits = self._pair_logits(model, np.repeat(b.images, n), b.captions.reshape(-1)).view(bsz, n)
        target = torch.zeros(bsz, dtype=torch.long, device=logits.device)
        neg_inf = torch.finfo(logits.dtype).min
        out = {
            "i2t_loss": F.cross_entropy(
                logits.masked_fill(~b.caption_false.to(logits.device), neg_inf), target
            )
        }
        if self.cfg.t2i_weight > 0:
            m = b.rivals.shape[1]
            rl = self._pair_logits(model, b.rivals.reshape(-1), np.repeat(b.positives, m)).view(bsz, m)
            out["t2i_loss"] = self.cfg.t2i_weight * F.cross_entropy(
                rl.masked_fill(~b.rival_false.to(rl.device), neg_inf), target
            )
        return out

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return _evaluate_cross(model, self.dev)


def train_teacher(
    cfg: TeacherRunConfig,
    run_dir: str | os.PathLike,
    *,
    data: dict[str, ImageTextPairs] | None = None,
    resume: bool = True,
    device: str = "cpu",
    callbacks=(),
) -> dict[str, Any]:
    """Train the tiny cross-encoder teacher; evaluate its best checkpoint on the test split (all pairs)."""
    run_dir = Path(run_dir)
    if resume and (done := _finished(run_dir, cfg)) is not None:
        return done
    with torch_threads(cfg.threads):
        return _train_teacher(cfg, run_dir, data, resume, device, callbacks)


def _build_teacher(cfg: TeacherRunConfig, tokenizer: WordTokenizer, device: str) -> Any:
    """The teacher to train: a fresh tiny cross encoder, or (``model_config: {spec: ...}``) any cross encoder
    with the training contract (e.g. Hugging Face BLIP ITM), every parameter trainable."""
    spec = cfg.model_config.get("spec")
    if spec is None:
        return build_model("tiny-cross", {**cfg.model_config, "image_size": cfg.data.image_size}, tokenizer)
    model = load_model(spec, device=device)
    if not isinstance(model, CrossEncoder) or not has_states(model) or not isinstance(model, nn.Module):
        raise ConfigError(
            f"teacher model {spec!r} is a {type(model).__name__}, not a cross encoder that can be trained",
            key="model_config.spec",
            fix="give a BLIP ITM folder (hf:<folder>#itm-logit), or tiny-cross keys in model_config",
        )
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    return model


def _train_teacher(
    cfg: TeacherRunConfig,
    run_dir: Path,
    data: dict[str, ImageTextPairs] | None,
    resume: bool,
    device: str,
    callbacks,
) -> dict[str, Any]:
    started = time.time()
    cpu0 = time.process_time()
    main = ddp_.is_main()  # under torchrun rank 0 alone writes the run folder (fit() does the same)
    data = data if data is not None else load_dcd_data(cfg.data)
    extra = None
    if cfg.pretrain_epochs > 0 and cfg.pretrain_images > 0:
        d = cfg.data
        extra = near_duplicate_pairs(
            cfg.pretrain_images,
            d.seed + 1000,
            "train",
            NearDupConfig(
                group_size=d.group_size, image_size=d.image_size, polysemous_rate=d.polysemous_rate
            ),
            name="teacher-extra",
        )
    tokenizer = WordTokenizer.build(data["train"].captions + (extra.captions if extra is not None else []))
    set_seed(cfg.seed)
    model = _build_teacher(cfg, tokenizer, device)
    # The run folder is written only once the data and the model exist (a bad setting leaves nothing behind).
    start_run(run_dir, asdict(cfg))  # config -> fit -> best -> test -> results (alignlab.train.runs)
    pretrain = dual = None
    cpu = {"data_s": round(time.process_time() - cpu0, 1)}
    if cfg.pretrain_epochs > 0:
        t0 = time.process_time()
        dual, res = train_tower_dual(
            cfg,
            tokenizer,
            data["train"],
            data.get("val"),
            run_dir / "pretrain",
            extra=extra,
            resume=resume,
            device=device,
        )
        model.load_dual(dual)
        cpu["stage1_s"] = round(time.process_time() - t0, 1)
        pretrain = {
            "images": data["train"].n_images + (extra.n_images if extra is not None else 0),
            "best": res.best,
            "dev_curve": res.dev_curve,
            "groups": cfg.pretrain_groups,
        }
    dev = data.get("val")
    dev = dev.subset(range(min(cfg.dev_images, dev.n_images))) if dev is not None else None
    train_cfg = TrainConfig(**{**asdict(cfg.train), "seed": cfg.seed})
    t0 = time.process_time()
    task: Any
    if cfg.fusion == "hard":
        assert dual is not None
        # the towers (and, with dual_score, the dual's score: kept as it was trained) stay as they are
        model.set_encoders_trainable(cfg.tune_towers)
        task = TeacherHardTask(model, dual, data["train"], cfg, train_cfg.batch_size, dev=dev)
    else:
        task = TeacherGridTask(
            model, data["train"], train_cfg.batch_size, cfg.seed, dev=dev, num_workers=cfg.data.num_workers
        )
    fit_result, best = fit_best(
        model,
        task,
        train_cfg,
        run_dir,
        resume=resume,
        config_for_hash=_hashed(cfg),
        device=device,
        desc="dcd teacher",
        callbacks=callbacks,
    )
    for p in model.parameters():
        p.requires_grad_(True)
    cpu["stage2_s"] = round(time.process_time() - t0, 1)
    cpu["total_s"] = round(time.process_time() - cpu0, 1)
    model.eval()
    test = _test_split(data, cfg.test_images)
    t0 = time.time()
    report = evaluate_model(model, test)
    score_s = time.time() - t0
    # train_cpu_s: CPU seconds of this process from data to the best checkpoint (a resumed run counts
    # only what this call did); the dev evaluations that pick checkpoints are part of it.
    spec = cfg.model_config.get("spec")
    saved: dict[str, Any] = {}
    if spec is not None:  # a Hugging Face teacher: saved as a folder that load_model (and --teacher) reads
        from alignlab.distill.dcd.students import save_trainable_dual

        if main:
            save_trainable_dual(model, run_dir / "teacher")
        frag = spec.split("#", 1)[1] if "#" in spec else ""
        saved["teacher_model"] = f"hf:{run_dir / 'teacher'}" + (f"#{frag}" if frag else "")
    result = _write_run(
        run_dir,
        report,
        task="retrieval",
        model="dcd-teacher-tiny-cross" if spec is None else f"dcd-teacher-{getattr(model, 'name', 'cross')}",
        **saved,
        data=f"{test.name}:{test.n_images}",
        seed=cfg.seed,
        config=asdict(cfg),
        started=started,
        device=device,
        dev_curve=fit_result.dev_curve,
        best=best,
        steps=fit_result.steps,
        parameters=count_parameters(model),
        test_scoring_s=round(score_s, 3),
        pairs_scored=test.n_images * test.n_captions,
        pretrain=pretrain,
        train_cpu_s=cpu,
        threads=torch.get_num_threads(),
    )
    info(
        f"dcd teacher: test RSUM {report.metrics['rsum']:.1f} "
        f"({test.n_images} images, {score_s:.0f} s to score)"
    )
    return result


def _test_split(data: dict[str, ImageTextPairs], n: int | None) -> ImageTextPairs:
    if "test" not in data:
        raise DataError("no test split", fix="give data with a test split")
    test = data["test"]
    return test.subset(range(min(n, test.n_images))) if n is not None else test


# --- the students -------------------------------------------------------------------------------------


@dataclass
class DCDRunConfig:
    teacher: str = ""  # the teacher's spec, e.g. ckpt:runs/dcd-teacher (recorded even when a model is passed)
    student: str = "dual"  # dual | shallow-cross
    student_config: dict[str, Any] = field(
        default_factory=lambda: dict(STUDENT_MODEL)
    )  # dual: TinyDualConfig keys
    cross_fusion_layers: int = 1  # shallow-cross: fusion layers of the student (its towers are the teacher's)
    student_init: str | None = (
        None  # dual only: start from ckpt:<tiny dual dir> or a real model hf:<dir or hub id>
    )
    negatives: str = "teacher"  # teacher (the k hardest of M by the teacher) | random (k of M uniformly)
    kd: str = "score"  # none | score (DCD's score MSE) | relation (in-batch KL) | feature (feature MSE)
    pool_size: int = 15  # M: candidates scored per image
    keep: int = 7  # k: negatives kept per image (k < M)
    random_mix: float = 0.0  # share of the k kept negatives drawn at random from the pool
    alpha: float = 0.2  # weight of the distillation term (ignored when kd is none)
    temperature: float = 1.0
    kd_center: bool = True  # score MSE on row-centred scores (score gaps; False: raw scores, as published)
    weighting: bool = True  # DCD's dynamic per-sample weights (False: plain means)
    mode: str = "correct"  # correct | released (the released code's two defects, for ablation)
    shuffle_weights: bool = False  # control: permute the weights across the batch
    pools: str = "truth"  # truth: pools leave out every caption true of the image | source: only its own
    t2i_weight: float = 1.0  # dual students: caption -> image CE over the batch, added per sample
    # caption -> image term: another image of the batch the caption is true of is not a negative (masked out);
    # False keeps the old behaviour (every other image counts as wrong), for ablation
    t2i_mask_true: bool = True
    data: DCDDataConfig = field(default_factory=DCDDataConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=8, batch_size=48, lr=2e-3, warmup_steps=20, select_metric="rsum"
        )
    )
    dev_images: int = 150  # shallow-cross students: dev images scored all-pairs after each epoch
    test_images: int | None = None  # evaluate on the first N test images (None: all)
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_select_metric(self.train)
        if self.student not in STUDENTS:
            raise ValueError(f"student must be one of {', '.join(STUDENTS)}, got {self.student!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        if self.kd not in KD_KINDS:
            raise ValueError(f"kd must be one of {', '.join(KD_KINDS)}, got {self.kd!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_pool(self.pool_size, self.keep, self.random_mix)
        if self.pools not in POOL_EXCLUSIONS:
            raise ConfigError(
                f"pools must be one of {', '.join(POOL_EXCLUSIONS)}, got {self.pools!r}",
                fix="truth (default) or source (the ablation arm dcd-source-pools)",
            )
        if self.student_init and self.student != "dual":
            raise ValueError("student_init is for dual students")
        if self.kd in ("relation", "feature") and self.student != "dual":
            raise ValueError(f"{self.kd} KD is a baseline for dual students")
        if self.kd == "feature" and self.hf_student:
            raise ValueError(
                "feature KD needs a tiny dual student (its hint layer is sized from the tiny model)"
            )

    @property
    def hf_student(self) -> bool:
        """The student is a real (Hugging Face) dual encoder loaded from ``student_init``."""
        return bool(self.student_init) and str(self.student_init).startswith("hf:")

    @property
    def needs_teacher(self) -> bool:
        return (
            self.negatives == "teacher"
            or self.kd != "none"
            or self.weighting
            or self.student == "shallow-cross"
        )

    def loss_config(self) -> DCDLossConfig:
        alpha = self.alpha if self.kd == "score" else 0.0
        return DCDLossConfig(
            alpha=alpha,
            temperature=self.temperature,
            weighting=self.weighting,
            mode=self.mode,
            shuffle_weights=self.shuffle_weights,
            center=self.kd_center,
        )


@dataclass
class DCDBatch:
    images: np.ndarray  # [B] image ids
    candidates: np.ndarray  # [B, 1 + k] caption ids, positive first
    teacher: torch.Tensor | None  # [B, 1 + k] teacher scores, aligned with candidates
    relation: torch.Tensor | None  # [B, B] teacher grid (relation KD only; a shard holds the global [N, N])
    epoch: int
    index: int
    shard: Shard | None = None  # DDP: these are rows [lo, hi) of the global batch (with its teacher scores)
    # [rows, global batch] bool: the row's positive caption is true of that other image
    # (masked in caption -> image)
    t2i_true: torch.Tensor | None = None


def pool_candidates(
    cfg: DCDRunConfig, batches: GroupBatches, train: ImageTextPairs, epoch: int, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images ``[B]``, positives ``[B]``, candidate pools ``[B, M]``) of batch ``(epoch, index)``: pure
    functions of the seed, shared by training and ``distill dcd mine``."""
    idx = batches.batches(epoch)[index]
    # The draw of positives and pools uses its own stream, so every arm sees the same candidates.
    rng = np.random.default_rng(derive_seed(cfg.seed, "dcd-pool", epoch, index))
    # positives are the image's own captions (a truth-labelled split would offer every true caption)
    pos = np.array([train.sources[i][rng.integers(len(train.sources[i]))] for i in idx])
    return idx, pos, draw_pools(idx, train, cfg.pool_size, rng, exclude=cfg.pools)


class DCDTask:
    """Distil a frozen teacher into a student (see the module docstring). ``memo`` may be shared by runs with
    the same seed and batching: it holds the teacher's scores per batch, which are identical across arms."""

    def __init__(
        self,
        cfg: DCDRunConfig,
        student: nn.Module,
        train: ImageTextPairs,
        teacher_scores: TeacherScores | None,
        dev: ImageTextPairs | None = None,
        memo: dict[Any, torch.Tensor] | None = None,
    ):
        self.cfg = cfg
        self.student = student
        self.train, self.images = train, None
        if not getattr(student, "native_images", False):  # tiny students: the split at their image size
            self.train, self.images = _split_images(train, student.config.image_size)
        # train.batch_size is per process (as in retrieval): the global batch spans every rank.
        self.global_batch = cfg.train.batch_size * ddp_.world_size()
        self.batches = GroupBatches(groups_of(train), self.global_batch, cfg.seed)
        self.ts = teacher_scores
        self.dev = dev
        self.memo = memo if memo is not None else {}
        self.loss_fn = DCDLoss(cfg.loss_config())
        self.feature: FeatureMSE | None = None
        if cfg.kd == "feature":
            assert teacher_scores is not None
            t_img, _ = teacher_scores.features()
            self.feature = FeatureMSE(student.config.width, t_img.shape[1])
        self.stats: dict[str, float] = {}
        self._n_stats = 0
        # File-backed images with workers: a DataLoader decodes each batch's images ahead of use.
        self.num_workers = cfg.data.num_workers
        self.loader: Any = None

    # -- batches --
    def num_batches(self, epoch: int) -> int:
        return len(self.batches.batches(epoch))

    def batch_size(self, batch: DCDBatch) -> int:
        return len(batch.images)

    def _memo_key(self, what: str, epoch: int, index: int) -> tuple:
        c = self.cfg
        return (what, id(self.ts), c.seed, self.global_batch, c.pool_size, c.pools, epoch, index)

    def _teacher(self, what: str, epoch: int, index: int, compute) -> torch.Tensor:
        key = self._memo_key(what, epoch, index)
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def batch(self, epoch: int, index: int) -> DCDBatch:
        cfg = self.cfg
        idx, pos, pool = pool_candidates(cfg, self.batches, self.train, epoch, index)
        mine_rng = np.random.default_rng(derive_seed(cfg.seed, "dcd-mine", epoch, index))
        t_all = None
        if cfg.needs_teacher and self.ts is not None:
            cand = np.concatenate([pos[:, None], pool], axis=1)
            t_all = self._teacher(
                "pool",
                epoch,
                index,
                lambda: self.ts.pair_scores(np.repeat(idx, cand.shape[1]), cand.reshape(-1)).view(cand.shape),
            )
        if cfg.negatives == "teacher":
            assert t_all is not None
            cols, teacher = select_hard(t_all[:, 0], t_all[:, 1:], cfg.keep, mine_rng, cfg.random_mix)
        else:
            cols = select_random(len(idx), cfg.pool_size, cfg.keep, mine_rng)
            teacher = None
            if t_all is not None:
                teacher = torch.cat(
                    [t_all[:, :1], torch.gather(t_all[:, 1:], 1, torch.from_numpy(cols))], dim=1
                )
        kept = np.take_along_axis(pool, cols, axis=1)
        relation = None
        if cfg.kd == "relation":
            assert self.ts is not None
            relation = self._teacher("grid", epoch, index, lambda: self.ts.grid(idx, pos))
        t2i_true = None
        if cfg.student == "dual" and cfg.t2i_weight > 0 and cfg.t2i_mask_true:
            true = self.train.known_true(idx, pos).T  # [caption of row i, image j]
            np.fill_diagonal(true, False)  # the row's own image is the target, never masked
            t2i_true = torch.from_numpy(true)
        return DCDBatch(
            idx,
            np.concatenate([pos[:, None], kept], axis=1),
            teacher,
            relation,
            epoch,
            index,
            t2i_true=t2i_true,
        )

    def local_batch(self, epoch: int, index: int, rank: int, world: int) -> DCDBatch:
        """Rank ``rank``'s contiguous shard of the global batch ``batch(epoch, index)`` (DDP).

        Every rank mines the whole global batch (the same candidates and teacher scores as one process)
        and keeps its rows; the shard carries the global teacher scores, over which the loss normalises
        the per-sample weights, and (relation KD) the global teacher grid.
        """
        g = self.batch(epoch, index)
        n = len(g.images)
        if n < world:
            raise ConfigError(
                f"a global batch of {n} image(s) cannot be split over {world} ranks",
                fix="raise train.batch_size, or use fewer processes",
            )
        lo, hi = ddp_.shard_range(n, world, rank)
        # Rows are cut together, so each kept list still starts with its positive, and the teacher's row
        # with the positive's score (select_hard asserted that for the global batch).
        assert all(
            int(c) in self.train.sources[int(i)] for i, c in zip(g.images[lo:hi], g.candidates[lo:hi, 0])
        )
        teacher = g.teacher[lo:hi] if g.teacher is not None else None
        return DCDBatch(
            g.images[lo:hi],
            g.candidates[lo:hi],
            teacher,
            g.relation,
            epoch,
            index,
            shard=Shard(lo, hi, n, world, g.teacher),
            t2i_true=g.t2i_true[lo:hi] if g.t2i_true is not None else None,
        )

    # -- the loss --
    def student_scores(self, model: nn.Module, b: DCDBatch) -> dict[str, torch.Tensor]:
        """A dual student's scores of the batch's candidates and the pieces the loss terms need:
        ``scores [B, 1 + k]``, ``img [B, D]`` and ``pos_txt [B, D]`` (unit vectors), ``scale``, and the
        features feature KD reads (``img_feat``, ``pos_feat``)."""
        return self._dual_scores(model, b)

    def _pixels(self, model: Any, images: np.ndarray) -> torch.Tensor:
        """The student's preprocessed pixels of training images ``images`` (with gradients downstream)."""
        if self.images is not None:
            return model.preprocess_images(self.images[images])
        # a model that does its own resizing reads the images at their stored size
        return model.preprocess_images(load_images_for(model, self.train, images))

    def _batch_pixels(self, model: Any, b: DCDBatch) -> torch.Tensor:
        """The pixels of the batch's images: from the DataLoader when file-backed data has workers."""
        held = self.images is not None and self.images.tensor is not None
        if self.images is None or held or self.num_workers == 0:
            return self._pixels(model, b.images)
        if self.loader is None:  # built at first use, in the training process (its rank is known)
            from alignlab.data.loading import ImageBatchLoader, streaming

            self.loader = ImageBatchLoader(
                streaming(self.train).images,
                self.images.size,
                self._rank_rows,
                self.num_batches,
                self.num_workers,
            )
        return model.preprocess_images(self.loader.get(b.epoch, b.index))

    def _rank_rows(self, epoch: int, index: int) -> list[int]:
        """This process's images of global batch ``(epoch, index)`` (all of them in one process)."""
        idx = np.asarray(self.batches.batches(epoch)[index])
        lo, hi = ddp_.shard_range(len(idx), ddp_.world_size(), ddp_.rank())
        return [int(i) for i in idx[lo:hi]]

    def _dual_scores(self, model: Any, b: DCDBatch) -> dict[str, torch.Tensor]:
        # One path for every dual student, through the training contract (models/base.py).
        img_feat = model.image_features(self._batch_pixels(model, b))
        img = model.project_images(img_feat)
        uniq, inverse = np.unique(b.candidates, return_inverse=True)
        txt_feat = model.text_features(model.tokenize([self.train.captions[c] for c in uniq]))
        txt = model.project_texts(txt_feat)
        scale, bias = model.logit_params()
        # CLIP clamps its learned scale at 100 during training; the same cap keeps the softmax sane.
        scale = (
            scale.clamp(max=100.0)
            if scale is not None
            else torch.tensor(FIXED_STUDENT_SCALE, device=img.device)
        )
        inv = torch.from_numpy(inverse.reshape(b.candidates.shape)).to(img.device)
        scores = scale * (img[:, None, :] * txt[inv]).sum(-1)  # [B, 1 + k]
        if bias is not None:  # SigLIP: its scores are logits (a constant shift, so softmax terms ignore it)
            scores = scores + bias
        pos_txt, pos_feat = txt[inv[:, 0]], txt_feat[inv[:, 0]]
        return {
            "scores": scores,
            "img": img,
            "pos_txt": pos_txt,
            "scale": scale,
            "img_feat": img_feat,
            "pos_feat": pos_feat,
        }

    def _cross_scores(self, model: Any, b: DCDBatch) -> torch.Tensor:
        assert self.ts is not None
        img, txt = self.ts.states()  # the student's frozen towers are the teacher's
        n = b.candidates.shape[1]
        ii = torch.from_numpy(np.repeat(b.images, n))
        cc = torch.from_numpy(b.candidates.reshape(-1))
        return model.fuse_pairs(img.select(ii), txt.select(cc, trim=True)).view(len(b.images), n)

    def _shard(self, b: DCDBatch) -> Shard | None:
        if b.shard is not None and b.shard.world != ddp_.world_size():
            raise ConfigError(
                f"a shard for {b.shard.world} processes in a run of {ddp_.world_size()}",
                fix="build batches with local_batch(epoch, index, rank(), world_size())",
            )
        return b.shard

    def loss(self, model: nn.Module, b: DCDBatch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        shard = self._shard(b)
        extra = None
        all_img = offset = None
        # The student runs as one DDP forward pass (in one process: a plain call, the same operations).
        if cfg.student == "dual":
            out = ddp_.forward_through(model, lambda m, batch: self.student_scores(m, batch), b)
            scores = out["scores"]
            if shard is not None:  # DDP: the images of every rank, gradients back to their owners
                all_img, offset = ddp_.all_gather_with_grad(out["img"])
            if cfg.t2i_weight > 0:
                if shard is None:
                    logits = (
                        out["scale"] * out["pos_txt"] @ out["img"].T
                    )  # caption i ranks the batch's images
                    target = torch.arange(len(logits), device=logits.device)
                else:  # caption i ranks the global batch's images; its own sits at the rank's offset
                    logits = out["scale"] * out["pos_txt"] @ all_img.T
                    target = offset + torch.arange(len(logits), device=logits.device)
                if b.t2i_true is not None:  # images the caption is true of are not negatives
                    logits = logits.masked_fill(b.t2i_true.to(logits.device), torch.finfo(logits.dtype).min)
                extra = cfg.t2i_weight * F.cross_entropy(logits, target, reduction="none")
        else:
            out = {}
            scores = ddp_.forward_through(model, lambda m, batch: self._cross_scores(m, batch), b)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "dcd-shuffle", b.epoch, b.index))
        teacher = b.teacher.to(scores.device) if b.teacher is not None else None
        terms = self.loss_fn(scores, teacher, extra_self=extra, generator=gen, shard=shard)
        if cfg.kd in ("relation", "feature"):
            # Baselines: plain means, (1 - alpha) on the ground-truth term and alpha on theirs.
            terms["self_loss"] = (1.0 - cfg.alpha) * terms["self_loss"]
            if cfg.kd == "relation":
                assert b.relation is not None
                if shard is None:
                    s_grid = out["scale"] * out["img"] @ out["pos_txt"].T
                    per = relation_kd_terms(s_grid, b.relation.to(s_grid.device), cfg.temperature)
                else:  # this rank's rows and columns of the global grid, against the global teacher grid
                    all_txt, _ = ddp_.all_gather_with_grad(out["pos_txt"])
                    rel = b.relation.to(scores.device)
                    lo, hi = shard.lo, shard.hi
                    per = relation_kd_rows(
                        out["scale"] * out["img"] @ all_txt.T,
                        rel[lo:hi],
                        out["scale"] * out["pos_txt"] @ all_img.T,
                        rel[:, lo:hi].T,
                        cfg.temperature,
                    )
            else:
                assert self.feature is not None and self.ts is not None
                t_img, t_txt = self.ts.features()
                ii = torch.from_numpy(b.images)
                cc = torch.from_numpy(b.candidates[:, 0])
                per = self.feature(
                    out["img_feat"], out["pos_feat"], t_img[ii].to(scores.device), t_txt[cc].to(scores.device)
                )
            # DDP: this rank's share of the global mean (W/N times its sum; DDP averages over ranks).
            terms["kd_loss"] = cfg.alpha * (
                per.mean() if shard is None else per.sum() * (shard.world / shard.n)
            )
        self._n_stats += 1
        for k, v in self.loss_fn.last.items():
            self.stats[k] = self.stats.get(k, 0.0) + v
        return terms

    def parameters(self):
        return self.feature.parameters() if self.feature is not None else iter(())

    def diagnostics(self) -> dict[str, float]:
        """Means over the steps trained in this process of the loss's diagnostics."""
        return {k: v / self._n_stats for k, v in self.stats.items()} if self._n_stats else {}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.dev is None:
            return {}
        if self.cfg.student == "dual":
            return evaluate_dual(model, self.dev).metrics
        return _evaluate_cross(model, self.dev)


def build_student(cfg: DCDRunConfig, teacher: Any, train: ImageTextPairs, device: str = "cpu") -> nn.Module:
    """The student of ``cfg`` for ``teacher``, checked for compatibility (``device``: a real student's)."""
    if cfg.hf_student:
        assert cfg.student_init is not None
        student = load_trainable_dual(cfg.student_init, device=device)
        if teacher is not None:
            check_compatible(teacher, student, captions=train.captions)
        return student
    if cfg.student == "shallow-cross":
        student = build_shallow_cross(teacher, fusion_layers=cfg.cross_fusion_layers)
        check_compatible(teacher, student, shares_towers=True)
        return student
    if cfg.student_init:
        student = load_model(cfg.student_init)
        if getattr(student, "name", None) not in ("tiny-dual", "pretrained-lit"):
            raise ConfigError(
                f"student_init must be a tiny dual encoder or pretrained-lit, "
                f"got {getattr(student, 'name', student)!r}"
            )
        for p in student.parameters():
            p.requires_grad_(True)
        student.train()
    else:
        student = build_dual_student(teacher, cfg.student_config, captions=train.captions)
    if teacher is not None:
        check_compatible(teacher, student, captions=train.captions)
    if student.config.image_size != cfg.data.image_size:
        raise ConfigError(
            f"student image_size {student.config.image_size} differs from the data's {cfg.data.image_size}",
            fix="set both to the same value",
        )
    return student


def run_dcd(
    cfg: DCDRunConfig,
    run_dir: str | os.PathLike,
    *,
    teacher: Any = None,
    data: dict[str, ImageTextPairs] | None = None,
    teacher_scores: TeacherScores | None = None,
    memo: dict[Any, torch.Tensor] | None = None,
    resume: bool = True,
    device: str = "cpu",
    callbacks=(),
) -> dict[str, Any]:
    """Distil ``teacher`` (a model, or loaded from ``cfg.teacher``) into a student; write the run folder.

    A folder that already holds finished results of the same config is not trained again.
    """
    run_dir = Path(run_dir)
    if resume and (done := _finished(run_dir, cfg)) is not None:
        return done
    with torch_threads(cfg.threads):
        return _run_dcd(cfg, run_dir, teacher, data, teacher_scores, memo, resume, device, callbacks)


def _run_dcd(
    cfg: DCDRunConfig,
    run_dir: Path,
    teacher: Any,
    data: dict[str, ImageTextPairs] | None,
    teacher_scores: TeacherScores | None,
    memo: dict[Any, torch.Tensor] | None,
    resume: bool,
    device: str,
    callbacks,
) -> dict[str, Any]:
    started = time.time()
    data = data if data is not None else load_dcd_data(cfg.data)
    if teacher is None and cfg.needs_teacher:
        teacher = load_teacher(cfg.teacher, device=device)
    elif teacher is not None:
        teacher = load_teacher(teacher)
    set_seed(cfg.seed)
    student = build_student(cfg, teacher, data["train"], device=device)
    # The run folder is written only once the teacher and the student have loaded.
    start_run(run_dir, asdict(cfg))  # config -> fit -> best -> test -> results (alignlab.train.runs)
    if cfg.hf_student:
        _check_student_source(run_dir, student, resume)
    ts = None
    if cfg.needs_teacher:
        ts = teacher_scores if teacher_scores is not None else TeacherScores(teacher, data["train"])
        if ts.teacher is not teacher or ts.pairs is not data["train"]:
            raise ConfigError("teacher_scores were made for another teacher or training set")
    dev = data.get("val")
    if dev is not None and cfg.student != "dual":
        dev = dev.subset(range(min(cfg.dev_images, dev.n_images)))
    train_cfg = TrainConfig(**{**asdict(cfg.train), "seed": cfg.seed})
    task = DCDTask(cfg, student, data["train"], ts, dev=dev, memo=memo)
    scored_before = ts.pairs_scored if ts is not None else 0
    fit_result, best = fit_best(
        student,
        task,
        train_cfg,
        run_dir,
        resume=resume,
        config_for_hash=_hashed(cfg),
        device=device,
        desc=f"dcd {cfg.student} seed {cfg.seed}",
        callbacks=callbacks,
    )
    student.eval()
    extra: dict[str, Any] = {}
    if (
        cfg.hf_student
    ):  # the best checkpoint as a model folder: `alignlab eval retrieval --model hf:<run>/student`
        saved = save_trainable_dual(student, run_dir / "student")
        extra = {"student_model": hf_student_spec(student, saved), "student_init": cfg.student_init}
    if ddp_.is_distributed():
        extra.update(world_size=ddp_.world_size(), global_batch=task.global_batch * train_cfg.grad_accum)
    test = _test_split(data, cfg.test_images)
    t0 = time.time()
    report = evaluate_model(student, test)  # every rank holds the same weights: the same numbers
    score_s = time.time() - t0
    kw = dict(
        task="retrieval",
        model=f"dcd-{cfg.student}-student",
        data=f"{test.name}:{test.n_images}",
        seed=cfg.seed,
        config=asdict(cfg),
        started=started,
        device=device,
        dev_curve=fit_result.dev_curve,
        best=best,
        steps=fit_result.steps,
        parameters=count_parameters(student),
        trainable_parameters=count_parameters(student, True),
        test_scoring_s=round(score_s, 3),
        diagnostics=task.diagnostics(),
        teacher_pairs_scored=(ts.pairs_scored - scored_before) if ts is not None else 0,
        **extra,
    )
    result = _write_run(run_dir, report, **kw)  # results.json exists for every rank once run_dcd returns
    info(f"dcd {cfg.student} seed {cfg.seed}: test RSUM {report.metrics['rsum']:.1f}")
    return result


def _check_student_source(run_dir: Path, student: Any, resume: bool) -> None:
    """Refuse to resume a real-student run whose ``student_init`` now holds other weights or settings.

    Checkpoints hold the whole state dict, so a resumed run would silently continue from them with
    another model's processor and tokenizer; the adapter's identity (files, class, mode, text settings)
    is recorded at the start and must match.
    """
    path = run_dir / "student_source.json"
    now = {"identity": student.identity, "name": student.name}
    started = (run_dir / "ckpt" / "last.pt").is_file() or (run_dir / "train_state.json").is_file()
    if resume and path.is_file() and started:
        before = read_json(path)
        if before.get("identity") != now["identity"]:
            raise ResumeError(
                f"the run was started from student {before.get('name')!r} with other files or "
                f"settings than {now['name']!r} has now",
                where=str(run_dir),
                fix="restore that student folder, use a new run folder, or pass --no-resume",
            )
    write_json(path, now)


def load_run_config(data: dict[str, Any] | None, where: str | None = None) -> DCDRunConfig:
    return from_dict(DCDRunConfig, data or {}, where=where)


def load_teacher_config(data: dict[str, Any] | None, where: str | None = None) -> TeacherRunConfig:
    return from_dict(TeacherRunConfig, data or {}, where=where)
