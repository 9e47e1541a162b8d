"""``fit()``: a small training loop with exact resume, dev-metric model selection and honest logs.

A *task* says what to train on and how to score it; the loop does the rest:

.. code-block:: python

    class MyTask:
        def num_batches(self, epoch: int) -> int: ...
        def batch(self, epoch: int, index: int): ...       # deterministic in (seed, epoch, index)
        def loss(self, model, batch) -> dict[str, Tensor]: ...   # named *_loss terms; their sum is trained
        def evaluate(self, model) -> dict[str, float]: ...       # optional: dev metrics after each epoch
        def batch_size(self, batch) -> int: ...                  # optional: samples in a batch (for samples/s)
        def parameters(self): ...                                # optional: extra trainable parameters

Because ``batch(epoch, index)`` is a pure function, a run that stops at any step resumes from its last
checkpoint on exactly the next batch, with the optimizer, schedule and every random generator restored:
on CPU the resumed run ends with the same weights and metrics as an uninterrupted one (tested).

Model selection uses a *declared* dev metric (``TrainConfig.select_metric``): after each evaluation the
dev curve is stored, and when the metric improves the model is saved to ``best/`` together with the
epoch and value, so ``best/`` is provably the argmax of the stored curve. A run folder holds
``log.jsonl`` (one line per logged step or evaluation), ``ckpt/last.pt``, ``best/``, ``final/`` and
``train_state.json``.

Under ``torchrun`` (an initialised process group of more than one rank, see
:mod:`alignlab.train.distributed`) the same loop trains with DDP: ``batch(epoch, index)`` is the
*global* micro-batch and each rank trains its slice of it (or the task's ``local_batch(epoch, index,
rank, world_size)``, for samplers that shard by themselves); every rank reseeds its global generators
with a rank offset after the model exists; rank 0 alone writes checkpoints (holding every rank's RNG
state), ``log.jsonl`` (losses averaged over ranks), ``best/``, ``final/`` and ``train_state.json``, and
all ranks resume from them. In one process nothing of this runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from alignlab.core.errors import ConfigError, ResumeError
from alignlab.core.io import atomic_path, read_json, write_json, write_text
from alignlab.core.manifest import config_hash
from alignlab.core.progress import info, progress
from alignlab.core.seed import derive_seed, get_rng_state, set_rng_state, set_seed
from alignlab.train import distributed as ddp_


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine/linear decay to lr * min_lr_ratio
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    grad_accum: int = 1  # micro-batches per optimizer step
    select_metric: str | None = None  # dev metric that picks best/, e.g. "rsum"; None: the last epoch
    select_mode: str = "max"  # max | min
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps (0: only at epoch ends)
    log_every: int = 20  # log the loss terms every N optimizer steps
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.select_mode not in ("max", "min"):
            raise ValueError("select_mode must be max or min")
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("epochs, batch_size and grad_accum must be >= 1")


class TrainTask(Protocol):
    def num_batches(self, epoch: int) -> int: ...

    def batch(self, epoch: int, index: int) -> Any: ...

    def loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]: ...


@dataclass
class FitResult:
    run_dir: Path
    dev_curve: list[dict[str, Any]]
    best: dict[str, Any] | None
    steps: int
    wall_s: float
    resumed_from_step: int | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_dir(self) -> Path:
        return self.run_dir / "best"

    @property
    def final_dir(self) -> Path:
        return self.run_dir / "final"


class StopTraining(Exception):
    """Raised by a callback to end training early (the run stays resumable)."""


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on (seed, epoch)."""
    return np.random.default_rng(derive_seed(seed, "epoch", epoch)).permutation(n)


def _lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress_ = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        if cfg.schedule == "linear":
            decay = 1.0 - progress_
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * progress_))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay

    return f


def _trainable(model: nn.Module, task: Any) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if hasattr(task, "parameters"):
        seen = {id(p) for p in params}
        params += [p for p in task.parameters() if p.requires_grad and id(p) not in seen]
    if not params:
        raise ConfigError("nothing to train: no parameter requires gradients")
    return params


def _make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    # No weight decay on biases, norms, embeddings of scale (1-D tensors), as is usual for transformers.
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _pack_rng(state: dict[str, Any]) -> dict[str, Any]:
    """RNG state in a form ``torch.load(weights_only=True)`` accepts (tensors, lists, ints, strings)."""
    version, internal, gauss = state["python"]
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    packed = {"python": [version, list(internal), gauss], "torch": state["torch"],
              "numpy": [np_name, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), int(np_pos),
                        int(np_has_gauss), float(np_gauss)]}
    if "cuda" in state:
        packed["cuda"] = list(state["cuda"])
    return packed


def _unpack_rng(packed: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = packed["python"]
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = packed["numpy"]
    state = {"python": (version, tuple(internal), gauss), "torch": packed["torch"],
             "numpy": (np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)}
    if "cuda" in packed:
        state["cuda"] = packed["cuda"]
    return state


def _default_save(model: nn.Module, out_dir: Path, extra: Mapping[str, Any]) -> None:
    from alignlab.models.factory import save_model
    from alignlab.models.tiny import ARCHS

    if getattr(model, "name", None) in ARCHS and hasattr(model, "tokenizer"):
        save_model(model, out_dir, extra=extra)
        return
    from safetensors.torch import save_model as save_safetensors

    out_dir.mkdir(parents=True, exist_ok=True)
    # safetensors' save_model stores tied weights (e.g. an output layer sharing the embedding) once.
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_safetensors(model, str(tmp), force_contiguous=True)
    write_json(out_dir / "info.json", dict(extra))


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class _JsonlLog:
    """Append-only ``log.jsonl``; on resume, lines after the checkpoint's step are dropped first."""

    def __init__(self, path: Path, keep_until_step: int | None):
        self.path = path
        self.records: list[dict[str, Any]] = []
        if keep_until_step is not None and path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut by the crash: it and anything after it are dropped
                if rec.get("step", 0) <= keep_until_step:
                    kept.append(rec)
            self.records = kept
            write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        elif path.exists():
            path.unlink()
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class _MemoryLog:
    """Ranks other than 0 keep their log records in memory only (rank 0 writes ``log.jsonl``)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)

    def close(self) -> None:
        pass


def fit(model: nn.Module, task: Any, cfg: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = True,
        config_for_hash: Any = None, callbacks: Iterable[Callable[[dict[str, Any]], None]] = (),
        save_fn: Callable[[nn.Module, Path, Mapping[str, Any]], None] | None = None,
        device: str | torch.device = "cpu", desc: str = "train") -> FitResult:
    """Train ``model`` on ``task`` with ``cfg``, writing checkpoints and logs to ``run_dir``.

    ``resume=True`` continues from ``run_dir/ckpt/last.pt`` when it exists; its config hash (of
    ``config_for_hash``, default ``cfg``) must match, otherwise a :class:`ResumeError` explains it. A
    finished run (``train_state.json`` says done) is not trained again. ``callbacks`` are called after
    every optimizer step with a state dict (``epoch``, ``step``, ``losses``); raising
    :class:`StopTraining` ends the run early, leaving it resumable.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # DDP: only when a process group of > 1 ranks is running (torchrun); otherwise all of this is inert.
    distributed, rank, world = ddp_.is_distributed(), ddp_.rank(), ddp_.world_size()
    main = rank == 0
    save = save_fn or _default_save
    chash = config_hash(config_for_hash if config_for_hash is not None else asdict(cfg))
    t_start = time.time()
    model.to(device)

    state_path = run_dir / "train_state.json"
    ckpt_path = run_dir / "ckpt" / "last.pt"
    if resume and state_path.exists():
        st = read_json(state_path)
        if st.get("config_sha256") != chash:
            raise ResumeError("the run folder holds a run with a different config", where=str(run_dir),
                              fix="use a new run folder, or the same config to resume")
        if st.get("done"):
            info(f"{desc}: already finished in {run_dir}; loading its final weights")
            _load_final(model, run_dir)
            return FitResult(run_dir, st["dev_curve"], st.get("best"), st["steps"], st.get("wall_s", 0.0))

    params = _trainable(model, task)
    optimizer = _make_optimizer(cfg, params)
    steps_per_epoch = math.ceil(task.num_batches(0) / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, total_steps))

    start_epoch, start_batch, global_step = 0, 0, 0
    dev_curve: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    resumed_from = None
    if resume and ckpt_path.exists():
        try:
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a corrupt file
            raise ResumeError(f"cannot read checkpoint: {e}", where=str(ckpt_path),
                              fix="delete the run folder to start again") from None
        if ck.get("config_sha256") != chash:
            raise ResumeError("the checkpoint was written with a different config", where=str(ckpt_path),
                              fix="use a new run folder, or the same config to resume")
        model.load_state_dict(ck["model"])
        if "task" in ck and hasattr(task, "load_state_dict"):
            task.load_state_dict(ck["task"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if ck.get("world_size", 1) != world:
            raise ResumeError(f"the checkpoint was written by {ck.get('world_size', 1)} process(es), this run has "
                              f"{world}", where=str(ckpt_path),
                              fix="resume with the same number of processes (the global batch depends on it)")
        # Each rank resumes its own generators (they differ by the rank offset); one process: "rng".
        set_rng_state(_unpack_rng(ck["rng_ranks"][rank] if distributed else ck["rng"]))
        start_epoch, start_batch, global_step = ck["epoch"], ck["batch"], ck["step"]
        dev_curve = json.loads(ck["dev_curve"])
        best = json.loads(ck["best"]) if ck["best"] else None
        resumed_from = global_step
        info(f"{desc}: resuming {run_dir} at epoch {start_epoch}, batch {start_batch} (step {global_step})")
    elif distributed:
        # Seed with a rank offset only now that the model exists (DDP also broadcasts rank 0's weights),
        # so that ranks draw different dropout masks and augmentations but start from one model.
        set_seed(derive_seed(cfg.seed, "rank", rank))
    if main:
        log: _JsonlLog | _MemoryLog = _JsonlLog(run_dir / "log.jsonl",
                                                keep_until_step=global_step if resumed_from is not None else None)
    else:
        log = _MemoryLog()
    # Under DDP the task's loss sees a DDPModel: the model's attributes, forward passes through DDP.
    train_model: Any = model
    if distributed:
        train_model = ddp_.DDPModel(model, device=device, methods=getattr(task, "ddp_methods", ()),
                                    find_unused_parameters=getattr(task, "find_unused_parameters", False))
        owned = {id(p) for p in model.parameters()}
        extra_params = [p for p in params if id(p) not in owned]  # e.g. a loss's parameters: not DDP's

    def local_batch(epoch: int, index: int) -> Any:
        if not distributed:
            return task.batch(epoch, index)
        if hasattr(task, "local_batch"):
            return task.local_batch(epoch, index, rank, world)
        return ddp_.shard_batch(task.batch(epoch, index), rank, world)

    def checkpoint(epoch: int, batch: int) -> None:
        rng_ranks = ddp_.all_gather_object(_pack_rng(get_rng_state())) if distributed else None
        if not main:
            ddp_.barrier()  # wait until rank 0 has written it
            return
        ck = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
              "rng": _pack_rng(get_rng_state()), "epoch": epoch, "batch": batch, "step": global_step,
              "dev_curve": json.dumps(dev_curve), "best": json.dumps(best) if best else "",
              "config_sha256": chash}
        if hasattr(task, "state_dict"):
            ck["task"] = task.state_dict()
        if distributed:
            ck["world_size"], ck["rng_ranks"] = world, rng_ranks
        with atomic_path(ckpt_path) as tmp:
            torch.save(ck, tmp)
        if distributed:
            ddp_.barrier()

    def write_state(done: bool) -> None:
        if not main:
            return
        write_json(state_path, {"config_sha256": chash, "done": done, "steps": global_step, "dev_curve": dev_curve,
                                "best": best, "select_metric": cfg.select_metric, "select_mode": cfg.select_mode,
                                "wall_s": round(time.time() - t_start, 3)})

    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            n_batches = task.num_batches(epoch)
            first = start_batch if epoch == start_epoch else 0
            sizes = getattr(task, "batch_size", None)
            bar = progress(total=n_batches, initial=first, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}",
                           unit="batch")
            t_epoch, n_samples = time.time(), 0
            b = first
            while b < n_batches:
                optimizer.zero_grad(set_to_none=True)
                micro = range(b, min(b + cfg.grad_accum, n_batches))
                terms_sum: dict[str, float] = {}
                for mb in micro:
                    batch = local_batch(epoch, mb)
                    # DDP: gradients are all-reduced on the last micro-batch of a step only.
                    last_micro = not distributed or mb == micro[-1]
                    sync = contextlib.nullcontext() if last_micro else train_model.no_sync()
                    with sync:
                        terms = task.loss(train_model, batch)
                        loss = sum(terms.values()) / len(micro)
                        if not torch.isfinite(loss):
                            raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}, batch {mb}; "
                                                     "lower the learning rate")
                        loss.backward()
                    for k, v in terms.items():
                        terms_sum[k] = terms_sum.get(k, 0.0) + float(v.detach()) / len(micro)
                    n_samples += sizes(batch) if sizes else 1
                if distributed and extra_params:
                    ddp_.average_gradients(extra_params)
                if distributed and b == first and epoch == start_epoch:
                    # Once per run: work done outside DDP's forward is not synchronised; fail loudly.
                    ddp_.check_gradients_in_sync(params)
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                global_step += 1
                b = micro[-1] + 1
                bar.update(len(micro))
                rate = n_samples * world / max(1e-9, time.time() - t_epoch)
                bar.set_postfix(loss=f"{sum(terms_sum.values()):.4f}", samples_s=f"{rate:.0f}")
                if global_step % cfg.log_every == 0:
                    if distributed:  # log the global batch's loss: the mean of the ranks' shares
                        terms_sum = ddp_.all_reduce_mean(terms_sum)
                    log.write({"step": global_step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                               **terms_sum, "loss": sum(terms_sum.values())})
                for cb in callbacks:
                    cb({"epoch": epoch, "batch": b, "step": global_step, "losses": terms_sum, "model": model})
                if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0 and b < n_batches:
                    checkpoint(epoch, b)
            bar.close()
            last = epoch == cfg.epochs - 1
            if hasattr(task, "evaluate") and ((epoch + 1) % cfg.eval_every == 0 or last):
                model.eval()
                metrics = {k: float(v) for k, v in task.evaluate(model).items()}
                if distributed:  # every rank evaluates (it may shard the work); rank 0's numbers count
                    metrics = ddp_.broadcast_object(metrics)
                entry = {"epoch": epoch + 1, "step": global_step, **metrics}
                dev_curve.append(entry)
                log.write({"step": global_step, "epoch": epoch, "dev": metrics})
                key = cfg.select_metric
                if key is not None:
                    if key not in metrics:
                        raise ConfigError(f"select_metric {key!r} is not among the dev metrics",
                                          fix=f"choose one of: {', '.join(sorted(metrics))}")
                    if _is_better(metrics[key], best["value"] if best else None, cfg.select_mode):
                        best = {"epoch": epoch + 1, "step": global_step, "metric": key, "value": metrics[key]}
                        if main:
                            save(model, run_dir / "best", best)
                info(f"{desc}: epoch {epoch + 1} dev " + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
            checkpoint(epoch + 1, 0)
            write_state(done=False)
    finally:
        log.close()

    if cfg.select_metric is None:
        best = {"epoch": cfg.epochs, "step": global_step, "metric": None, "value": None}
    final_info = {"epoch": cfg.epochs, "step": global_step}
    if main:
        save(model, run_dir / "final", final_info)
        if cfg.select_metric is None:
            save(model, run_dir / "best", best)
    write_state(done=True)
    ddp_.barrier()  # best/ and final/ exist for every rank once fit returns
    return FitResult(run_dir, dev_curve, best, global_step, round(time.time() - t_start, 3), resumed_from,
                     log.records)


def _load_final(model: nn.Module, run_dir: Path) -> None:
    from safetensors.torch import load_model as load_safetensors

    load_safetensors(model, str(run_dir / "final" / "model.safetensors"))


def load_best(model: nn.Module, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Load ``run_dir/best`` weights into ``model``; returns the best entry (epoch, metric, value)."""
    from safetensors.torch import load_model as load_safetensors

    run_dir = Path(run_dir)
    load_safetensors(model, str(run_dir / "best" / "model.safetensors"))
    return read_json(run_dir / "train_state.json").get("best") or {}
