"""Training: the visual encoder's pretraining on ShapesWorld, and the translation model.

**Visual pretraining.** The image tower learns to recognise, in each of the 9 cells of the ShapesWorld
grid, which object is there — empty, one of the 5 shapes, or one of the 10 senses of the polysemous
kinds (bat the animal vs bat the club, …): 16-way cross-entropy per cell on the pooled cell tokens,
averaged over cells. Afterwards it is frozen and its visual tokens are computed once per image.

**Translation.** Teacher-forced cross-entropy with label smoothing ``ε``,

    L = -(1/|y|) Σ_t [(1-ε) log p(y_t | y_<t, x, V) + (ε/|Vocab|) Σ_c log p(c | y_<t, x, V)],

It runs in the shared training loop (:func:`alignlab.train.loop.fit`): AdamW (no weight decay on 1-D
parameters) with linear warm-up then cosine decay, gradient clipping, checkpoints and exact resume;
batches are a pure function of (seed, epoch, index), so the same seed gives the same model.

A run folder holds ``config.yaml``, ``model.pt`` (state dict), ``src_tokenizer.json``,
``tgt_tokenizer.json``, ``visual.pt`` (the visual encoder, for image models), ``train/`` (the loop's
checkpoints and ``log.jsonl``; the same command resumes an interrupted run) and, after
evaluation, ``results.json``.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from alignlab.core.config import dump_yaml, from_dict, load_yaml
from alignlab.core.errors import ConfigError, ModelError, ResumeError
from alignlab.core.io import atomic_path
from alignlab.core.manifest import config_hash
from alignlab.core.progress import info, progress
from alignlab.core.seed import derive_seed, set_seed
from alignlab.data.shapes import SENSES, SHAPES, Scene, ShapesConfig, ShapesExample, ShapesWorld
from alignlab.data.text import WordTokenizer
from alignlab.mmt.model import MMTConfig, MMTModel, TargetTokenizer, VisualEncoder, default_image_config
from alignlab.models.tiny import TinyImageConfig
from alignlab.train.distributed import forward_through
from alignlab.train.loop import StopTraining, epoch_permutation, fit
from alignlab.train.loop import TrainConfig as LoopConfig

# Per-cell classes of the visual pretraining task.
CELL_CLASSES: tuple[str, ...] = ("empty", *SHAPES, *SENSES)


def cell_labels(scene: Scene, grid: int = 3) -> list[int]:
    """Class index of each grid cell (row-major): 0 empty, then shapes, then polysemous senses."""
    labels = [0] * (grid * grid)
    for o in scene.objects:
        labels[o.row * grid + o.col] = CELL_CLASSES.index(o.sense or o.kind)
    return labels


@dataclass
class VisualPretrainConfig:
    """Pretraining of the image tower on ShapesWorld object/sense recognition."""

    images: int = 8000  # training images (generated; cheap)
    val_images: int = 300
    polysemous_rate: float = 0.5  # so every sense is seen often
    epochs: int = 4
    batch_size: int = 32
    lr: float = 2e-3
    image: TinyImageConfig = field(default_factory=default_image_config)


@dataclass
class TrainConfig:
    """Optimisation of the translation model."""

    epochs: int = 12
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    max_minutes: float | None = None  # stop early after this much wall time (None: no limit)

    def __post_init__(self) -> None:
        from alignlab.core.config import check_number

        check_number("epochs", self.epochs, lo=1)
        check_number("batch_size", self.batch_size, lo=1)
        check_number(
            "lr", self.lr, lo=0, lo_open=True, hi=10, fix="give a learning rate such as train.lr=0.001"
        )
        for key in ("warmup_steps", "weight_decay", "grad_clip"):
            check_number(key, getattr(self, key), lo=0)
        check_number("label_smoothing", self.label_smoothing, lo=0, hi=1, hi_open=True)
        if self.max_minutes is not None:
            check_number("max_minutes", self.max_minutes, lo=0, lo_open=True)


@dataclass
class MMTRunConfig:
    """What `alignlab mmt train` configures: the model, its training and the visual pretraining
    (``--set model.<key>=...``, ``train.<key>``, ``visual.<key>``)."""

    model: MMTConfig = field(default_factory=MMTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    visual: VisualPretrainConfig = field(default_factory=VisualPretrainConfig)


@dataclass
class MMTPair:
    """One training/test sentence pair; ``image`` indexes the visual-feature table (-1: no image)."""

    en: str
    zh: str
    image: int = -1
    senses: tuple[tuple[str, str, str], ...] = ()  # (English noun, synset, Chinese word) of polysemous nouns
    meta: dict[str, Any] = field(default_factory=dict)


def pairs_from_shapes(examples: Sequence[ShapesExample], image_offset: int = 0) -> list[MMTPair]:
    """Every caption of every example as a pair; ``image`` = position of its example (+ offset)."""
    out = []
    for k, ex in enumerate(examples):
        for j, c in enumerate(ex.captions):
            out.append(
                MMTPair(
                    c.en,
                    c.zh,
                    image_offset + k,
                    tuple(c.sense_words()),
                    {"image_id": ex.image_id, "caption": j, "family": c.family},
                )
            )
    return out


def shapes_images(examples: Sequence[ShapesExample]) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` images of ShapesWorld examples."""
    if not examples:
        return torch.zeros(0, 3, 64, 64, dtype=torch.uint8)
    return torch.from_numpy(np.stack([ex.image for ex in examples])).permute(0, 3, 1, 2).contiguous()


# --- visual pretraining ------------------------------------------------------------------------------------


def pretrain_visual_encoder(
    cfg: VisualPretrainConfig | None = None, seed: int = 0, desc: str = "visual pretraining"
) -> tuple[VisualEncoder, dict[str, float]]:
    """Train a :class:`VisualEncoder` on per-cell object/sense recognition; returns it (eval mode, frozen)
    and held-out metrics: ``cell_acc`` over all cells and ``sense_acc`` over cells holding a polysemous
    object (chance 0.5 between its two senses if the kind alone were recognised)."""
    cfg = cfg or VisualPretrainConfig()
    set_seed(seed)
    world = ShapesWorld(
        ShapesConfig(
            polysemous_rate=cfg.polysemous_rate, captions_per_image=1, image_size=cfg.image.image_size
        )
    )
    data_seed = derive_seed("mmt-visual-pretrain", seed) % (2**31)
    train = world.generate(cfg.images, data_seed, "train", desc="tower data")
    val = world.generate(cfg.val_images, data_seed, "val", desc="tower val")
    enc = VisualEncoder(cfg.image, pool=3, n_classes=len(CELL_CLASSES))
    x_train = shapes_images(train)  # uint8; normalised batch by batch
    y_train = torch.tensor([cell_labels(ex.scene) for ex in train])
    opt = torch.optim.AdamW(enc.parameters(), lr=cfg.lr, weight_decay=0.01)
    steps = cfg.epochs * math.ceil(len(train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.15)
    gen = torch.Generator().manual_seed(derive_seed("mmt-visual-order", seed) % (2**63))
    enc.train()
    bar = progress(total=steps, desc=desc, unit="step")
    for _ in range(cfg.epochs):
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            logits = enc.cell_head(enc(enc.preprocess(x_train[idx]))[:, 1:])  # [B, 9, C]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_train[idx].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        y_val = torch.tensor([cell_labels(ex.scene) for ex in val])
        pred = enc.cell_head(enc.features(shapes_images(val))[:, 1:]).argmax(-1)
    poly = y_val > len(SHAPES)
    metrics = {
        "cell_acc": float((pred == y_val).float().mean()),
        "sense_acc": float((pred[poly] == y_val[poly]).float().mean()) if poly.any() else float("nan"),
        "val_images": len(val),
    }
    return enc, metrics


def visual_config_hash(cfg: VisualPretrainConfig, seed: int) -> str:
    """What a pretrained tower depends on: its settings and seed (stored in visual.pt to resume from it)."""
    return config_hash({"visual": asdict(cfg), "seed": seed})


def save_visual_encoder(
    path: Path, enc: VisualEncoder, metrics: dict[str, float] | None = None, config_sha256: str | None = None
) -> None:
    with atomic_path(path) as tmp:
        torch.save(
            {
                "image_config": asdict(enc.image_config),
                "pool": enc.pool,
                "n_classes": enc.cell_head.out_features,
                "state": enc.state_dict(),
                "metrics": metrics or {},
                "config_sha256": config_sha256 or "",
            },
            tmp,
        )


def pretrain_or_resume_visual(
    cfg: VisualPretrainConfig, seed: int, checkpoint: Path, desc: str = "visual pretraining"
) -> tuple[VisualEncoder, dict[str, float]]:
    """:func:`pretrain_visual_encoder`, checkpointed to ``checkpoint``: a re-run (after an interruption in the
    translation training) loads the tower pretrained with the same settings and seed instead of redoing it.

    A checkpoint from other settings is a :class:`ResumeError`: the run folder belongs to another run.
    """
    want = visual_config_hash(cfg, seed)
    if Path(checkpoint).is_file():
        blob = _read_visual_blob(Path(checkpoint))
        if blob.get("config_sha256") != want:
            raise ResumeError(
                "the run folder holds an image tower pretrained with other settings",
                where=str(checkpoint),
                fix="use a new run folder, or the same --seed and visual.* settings to resume",
            )
        info(f"{desc}: reusing the tower pretrained earlier in {checkpoint}")
        return load_visual_encoder(checkpoint), dict(blob.get("metrics") or {})
    info("pretraining the image tower on ShapesWorld object/sense recognition")
    enc, metrics = pretrain_visual_encoder(cfg, seed=seed, desc=desc)
    save_visual_encoder(checkpoint, enc, metrics, config_sha256=want)
    return enc, metrics


def _read_visual_blob(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise ModelError(
            f"cannot load the visual encoder: {type(e).__name__}: {e}",
            where=str(path),
            fix="delete the file to pretrain the tower again",
        ) from None


def load_visual_encoder(path: Path) -> VisualEncoder:
    if not Path(path).is_file():
        raise ModelError(
            "visual encoder file not found",
            where=str(path),
            fix="train an image model with `alignlab mmt train --fusion prefix|gated`",
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        enc = VisualEncoder(from_dict(TinyImageConfig, blob["image_config"]), blob["pool"], blob["n_classes"])
        enc.load_state_dict(blob["state"])
    except pickle.UnpicklingError:  # not a torch file, or one that needs unpickling code (refused)
        raise ModelError(
            "cannot load the visual encoder: not a weights file written by alignlab",
            where=str(path),
            fix="give the visual.pt of an `alignlab mmt train --fusion prefix|gated` run",
        ) from None
    except (OSError, RuntimeError, KeyError, TypeError, EOFError) as e:
        raise ModelError(
            f"cannot load the visual encoder: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
            where=str(path),
            fix="re-train the run; the file is damaged or from another version",
        ) from None
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc


# --- translation training ----------------------------------------------------------------------------------


def build_tokenizers(
    pairs: Sequence[MMTPair],
    src_max: int | None = 8000,
    tgt_max: int | None = 8000,
    min_count: int = 1,
    unit: str = "word",
) -> tuple[WordTokenizer, TargetTokenizer]:
    """English word and Chinese target (``unit``: jieba words by default, or characters) vocabularies."""
    src = WordTokenizer.build((p.en for p in pairs), min_count=min_count, max_size=src_max)
    tgt = TargetTokenizer.build((p.zh for p in pairs), min_count=min_count, max_size=tgt_max, unit=unit)
    return src, tgt


class TranslationTask:
    """Teacher-forced translation batches for the shared training loop (:func:`alignlab.train.loop.fit`).

    A batch is a tensor of pair indices; epoch ``e`` visits the pairs in the order
    ``epoch_permutation(n, seed, e)``, so batches are a pure function of (seed, epoch, index) and a
    resumed run continues on exactly the next batch. Sources and targets are encoded once; each batch is
    trimmed to its longest source and target.
    """

    def __init__(
        self,
        model: MMTModel,
        pairs: Sequence[MMTPair],
        batch_size: int,
        seed: int,
        visual: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ):
        self.n, self.bs, self.seed = len(pairs), batch_size, seed
        self.label_smoothing = label_smoothing
        self.src_ids, self.src_mask = model.src_tok.encode(
            [p.en for p in pairs], model.config.max_src_len + 1
        )
        self.tgt = model.tgt_tok.encode([p.zh for p in pairs], model.config.max_tgt_len)
        self.img = torch.tensor([p.image for p in pairs])
        self.visual = visual if model.uses_image else None

    def num_batches(self, epoch: int) -> int:
        return math.ceil(self.n / self.bs)

    def batch(self, epoch: int, index: int) -> torch.Tensor:
        order = epoch_permutation(self.n, self.seed, epoch)
        return torch.from_numpy(order[index * self.bs : (index + 1) * self.bs].copy())

    def batch_size(self, idx: torch.Tensor) -> int:
        return len(idx)

    def loss(self, model: Any, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        s_mask = self.src_mask[idx]
        s_len = int(s_mask.sum(1).max())
        t = self.tgt[idx]
        t_len = int((t != TargetTokenizer.PAD).sum(1).max())
        v = self.visual[self.img[idx]] if self.visual is not None else None
        return forward_through(
            model,
            lambda m: m.loss(
                self.src_ids[idx, :s_len], s_mask[:, :s_len], t[:, :t_len], v, self.label_smoothing
            ),
        )


class _EpochLoss:
    """Per-epoch mean training loss and the early stop of ``max_minutes`` (a fit() callback)."""

    def __init__(self, max_minutes: float | None):
        self.max_s = None if max_minutes is None else 60.0 * max_minutes
        self.t0 = time.time()
        self.sums: dict[int, list[float]] = {}
        self.last_step: dict[int, int] = {}

    def __call__(self, state: dict[str, Any]) -> None:
        self.sums.setdefault(state["epoch"], []).append(sum(state["losses"].values()))
        self.last_step[state["epoch"]] = state["step"]
        if self.max_s is not None and time.time() - self.t0 > self.max_s:
            raise StopTraining


def train_model(
    model: MMTModel,
    pairs: Sequence[MMTPair],
    cfg: TrainConfig,
    *,
    seed: int = 0,
    visual: torch.Tensor | None = None,
    desc: str = "mmt train",
    run_dir: Path | None = None,
    resume: bool = True,
) -> list[dict[str, Any]]:
    """Train ``model`` on ``pairs`` in place with the shared loop; returns the per-epoch log.

    ``visual`` is the ``[N_images, K, d_v]`` table of frozen visual tokens that ``pair.image`` indexes.
    ``run_dir`` keeps the loop's checkpoints and ``log.jsonl`` (re-running resumes exactly); without it
    they go to a temporary folder.
    """
    if not pairs:
        raise ConfigError("no training pairs")
    if model.uses_image:
        if visual is None:
            raise ConfigError("an image model needs visual features", fix="pass visual=… or use fusion none")
        bad = [i for i, p in enumerate(pairs) if not 0 <= p.image < len(visual)]
        if bad:
            raise ConfigError(
                f"training pair {bad[0]} has no image (index {pairs[bad[0]].image})",
                fix="every pair of an image model needs an image",
            )
    set_seed(seed)
    task = TranslationTask(model, pairs, cfg.batch_size, seed, visual, cfg.label_smoothing)
    loop_cfg = LoopConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        schedule="cosine",
        warmup_steps=cfg.warmup_steps,
        grad_clip=cfg.grad_clip,
        log_every=20,
        seed=seed,
    )
    tracker = _EpochLoss(cfg.max_minutes)
    with contextlib.ExitStack() as stack:
        folder = run_dir if run_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            steps = fit(
                model,
                task,
                loop_cfg,
                folder,
                resume=resume,
                callbacks=[tracker],
                desc=desc,
                config_for_hash={
                    "train": asdict(cfg),
                    "seed": seed,
                    "model": asdict(model.config),
                    "pairs": len(pairs),
                },
            ).steps
        except StopTraining:  # max_minutes: keep the weights reached; re-running resumes from the last epoch
            steps = max(tracker.last_step.values(), default=0)
    model.eval()
    # Epochs trained in this process (a resumed run logs from where it resumed).
    return [
        {"epoch": e + 1, "step": tracker.last_step[e], "train_loss": float(np.mean(v))}
        for e, v in sorted(tracker.sums.items())
    ] or [{"epoch": 0, "step": steps, "train_loss": float("nan")}]


# --- run folders --------------------------------------------------------------------------------------------


def save_run(
    out: Path,
    model: MMTModel,
    *,
    train_cfg: TrainConfig,
    data: dict[str, Any],
    visual_encoder: VisualEncoder | None = None,
    seed: int = 0,
    visual_metrics: dict[str, float] | None = None,
    visual_config_sha256: str | None = None,
) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(
        out / "config.yaml",
        {"model": asdict(model.config), "train": asdict(train_cfg), "data": data, "seed": seed},
    )
    model.src_tok.save(out / "src_tokenizer.json")
    model.tgt_tok.save(out / "tgt_tokenizer.json")
    with atomic_path(out / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    if visual_encoder is not None:
        save_visual_encoder(out / "visual.pt", visual_encoder, visual_metrics, visual_config_sha256)


def load_run(run: Path) -> tuple[MMTModel, VisualEncoder | None, dict[str, Any]]:
    """(model in eval mode, visual encoder or None, the run's config dict) of a run folder."""
    run = Path(run)
    for name in ("config.yaml", "model.pt", "src_tokenizer.json", "tgt_tokenizer.json"):
        if not (run / name).is_file():
            raise ModelError(
                f"not an MMT run folder: {name} is missing",
                where=str(run),
                fix="give the --out folder of `alignlab mmt train`",
            )
    conf = load_yaml(run / "config.yaml")
    cfg = from_dict(MMTConfig, conf.get("model", {}), where=str(run / "config.yaml"))
    model = MMTModel(
        cfg, WordTokenizer.load(run / "src_tokenizer.json"), TargetTokenizer.load(run / "tgt_tokenizer.json")
    )
    try:
        model.load_state_dict(torch.load(run / "model.pt", map_location="cpu", weights_only=True))
    except pickle.UnpicklingError:  # not a torch file, or one that needs unpickling code (refused)
        raise ModelError(
            "cannot load the model weights: model.pt is not a weights file written by alignlab",
            where=str(run / "model.pt"),
            fix="re-train the run, or restore its model.pt",
        ) from None
    except (RuntimeError, OSError, EOFError) as e:
        raise ModelError(
            f"cannot load the model weights: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
            where=str(run / "model.pt"),
            fix="re-train the run; the weights do not match its config",
        ) from None
    model.eval()
    enc = load_visual_encoder(run / "visual.pt") if cfg.fusion != "none" else None
    return model, enc, conf
