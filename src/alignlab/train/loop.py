"""``fit()``: a small training loop with exact resume, dev-metric model selection and honest logs.

A *task* says what to train on and how to score it; the loop does the rest:

.. code-block:: python

    class MyTask:
        def num_batches(self, epoch: int) -> int: ...
        def batch(self, epoch: int, index: int): ...       # deterministic in (seed, epoch, index)
        def loss(self, model, batch) -> dict[str, Tensor]: ...   # named *_loss terms; their sum is trained
        def evaluate(self, model) -> dict[str, float]: ...       # optional: dev metrics after each epoch
        def batch_size(self, batch) -> int: ...                  # optional: samples per batch (samples/s)
        def parameters(self): ...                                # optional: extra trainable parameters

The three required methods are the :class:`TrainTask` Protocol; each optional hook is a small
runtime-checkable Protocol (:class:`EvaluatingTask`, :class:`CountsSamples`, :class:`HasParameters`,
:class:`StatefulTask`, :class:`ShardingTask`) whose docstring gives the default when a task lacks it.

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
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, Protocol, cast, runtime_checkable

import numpy as np
import torch
from torch import nn

from alignlab.core.errors import ConfigError, ResumeError
from alignlab.core.io import atomic_path, read_json, remove_stale_temps, write_json, write_text
from alignlab.core.logs import open_tensorboard, run_log, tensorboard_scalars
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
        from alignlab.core.config import check_number

        for key, allowed in (
            ("optimizer", ("adamw", "sgd")),
            ("schedule", ("cosine", "linear", "constant")),
            ("select_mode", ("max", "min")),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"{key} must be {' or '.join(allowed)}, got {getattr(self, key)!r}",
                    key=key,
                    fix=f"choose one of: {', '.join(allowed)}",
                )
        for key in ("epochs", "batch_size", "grad_accum", "eval_every", "log_every"):
            check_number(key, getattr(self, key), lo=1)
        for key in ("warmup_steps", "checkpoint_every", "weight_decay", "grad_clip"):
            check_number(key, getattr(self, key), lo=0)
        check_number("lr", self.lr, lo=0, lo_open=True, hi=10, fix="give a learning rate such as lr=0.001")
        check_number("momentum", self.momentum, lo=0, hi=1, hi_open=True)
        check_number("min_lr_ratio", self.min_lr_ratio, lo=0, hi=1)


class TrainTask(Protocol):
    """What :func:`fit` needs from every task. A task may also implement the optional hooks below.

    Each optional hook is its own runtime-checkable Protocol, so a task opts in by defining the method
    (no base class needed) and :func:`fit` sees it with ``isinstance``; without a hook the documented
    default applies.
    """

    def num_batches(self, epoch: int) -> int:
        """Micro-batches in ``epoch``."""
        ...

    def batch(self, epoch: int, index: int) -> Any:
        """The (global) micro-batch ``index`` of ``epoch``; a pure function of (seed, epoch, index)."""
        ...

    # ``model`` is typed Any: tasks name their own model class, and under DDP it is a ``DDPModel`` proxy.
    def loss(self, model: Any, batch: Any) -> dict[str, torch.Tensor]:
        """Named loss terms (``*_loss``); their sum is trained. Under DDP ``model`` is a ``DDPModel``."""
        ...


@runtime_checkable
class EvaluatingTask(Protocol):
    """Optional hook: dev metrics, after every ``eval_every`` epochs and the last.

    Default (no ``evaluate``): no dev curve; ``best/`` is the last epoch when ``select_metric`` is None,
    and is not written otherwise.
    """

    def evaluate(
        self, model: Any
    ) -> Mapping[str, float]: ...  # the model itself (its own class), never DDP's


@runtime_checkable
class CountsSamples(Protocol):
    """Optional hook: the samples in a batch, for samples/s. Default: every micro-batch counts as one."""

    def batch_size(self, batch: Any) -> int: ...


@runtime_checkable
class HasParameters(Protocol):
    """Optional hook: trainable parameters outside the model (e.g. a loss's temperature). Default: none."""

    def parameters(self) -> Iterable[nn.Parameter]: ...


@runtime_checkable
class StatefulTask(Protocol):
    """Optional hook: task state (e.g. a sampler's position) kept in the checkpoint. Default: none."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class ShardingTask(Protocol):
    """Optional hook, DDP only: this rank's share of the global micro-batch, for samplers that shard
    by themselves. Default: ``distributed.shard_batch(task.batch(epoch, index), rank, world)``."""

    def local_batch(self, epoch: int, index: int, rank: int, world: int) -> Any: ...


def _ddp_options(task: TrainTask) -> tuple[tuple[str, ...], bool]:
    """The optional DDP attributes of a task, with their defaults.

    ``ddp_methods`` (default ``()``): model methods besides the usual forward ones that run through DDP;
    ``find_unused_parameters`` (default False): set it when a loss leaves some parameters without a
    gradient (the retrieval task does for VSE losses).
    """
    return tuple(getattr(task, "ddp_methods", ())), bool(getattr(task, "find_unused_parameters", False))


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


def _trainable(model: nn.Module, task: TrainTask) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(task, HasParameters):
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
    packed = {
        "python": [version, list(internal), gauss],
        "torch": state["torch"],
        "numpy": [
            np_name,
            torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
    }
    if "cuda" in state:
        packed["cuda"] = list(state["cuda"])
    return packed


def _unpack_rng(packed: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = packed["python"]
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = packed["numpy"]
    state = {
        "python": (version, tuple(internal), gauss),
        "torch": packed["torch"],
        "numpy": (np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss),
    }
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

    def __init__(self, path: Path, keep_until_step: int | None, tensorboard: Any = None):
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.tb = tensorboard  # a SummaryWriter mirroring every record's scalars, or None
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
        if self.tb is not None:
            for tag, value in tensorboard_scalars(rec).items():
                self.tb.add_scalar(tag, value, global_step=rec["step"])

    def close(self) -> None:
        self._f.close()
        if self.tb is not None:
            self.tb.close()


class _MemoryLog:
    """Ranks other than 0 keep their log records in memory only (rank 0 writes ``log.jsonl``)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)

    def close(self) -> None:
        pass


_P = ParamSpec("_P")


def _with_text_log(fit_fn: Callable[_P, FitResult]) -> Callable[_P, FitResult]:
    """``fit`` writes its status and progress lines and any warning to ``run_dir/log.txt`` (rank 0)."""

    @functools.wraps(fit_fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> FitResult:
        run_dir = Path(cast("str | os.PathLike[str]", kwargs["run_dir"] if "run_dir" in kwargs else args[3]))
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_log(run_dir, enabled=ddp_.rank() == 0):
            return fit_fn(*args, **kwargs)

    return wrapper


@_with_text_log
def fit(
    model: nn.Module,
    task: TrainTask,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = True,
    config_for_hash: Any = None,
    callbacks: Iterable[Callable[[dict[str, Any]], None]] = (),
    save_fn: Callable[[nn.Module, Path, Mapping[str, Any]], None] | None = None,
    device: str | torch.device = "cpu",
    desc: str = "train",
) -> FitResult:
    """Train ``model`` on ``task`` with ``cfg``, writing checkpoints and logs to ``run_dir``.

    Every ``log_every`` optimizer steps ``log.jsonl`` gets the *mean* of each loss term over those steps
    (and the learning rate and samples/s); the same scalars go to TensorBoard event files in
    ``run_dir/tensorboard`` when the ``tensorboard`` package is installed. ``log.txt`` holds the text log.

    ``resume=True`` continues from ``run_dir/ckpt/last.pt`` when it exists; its config hash (of
    ``config_for_hash``, default ``cfg``) must match, otherwise a :class:`ResumeError` explains it. A
    finished run (``train_state.json`` says done) is not trained again. ``callbacks`` are called after
    every optimizer step with a state dict (``epoch``, ``step``, ``losses``); raising
    :class:`StopTraining` ends the run early, leaving it resumable.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (
        ddp_.rank() == 0
    ):  # an interrupted atomic write's temp file (up to a checkpoint in size) is never renamed
        remove_stale_temps(run_dir)
    chash = config_hash(config_for_hash if config_for_hash is not None else asdict(cfg))
    t_start = time.time()
    model.to(device)
    if resume:
        finished = _finished_run(model, run_dir, chash, desc)
        if finished is not None:
            return finished
    run = _Run(
        model,
        task,
        cfg,
        run_dir,
        chash=chash,
        callbacks=callbacks,
        save=save_fn or _default_save,
        device=device,
        desc=desc,
        t_start=t_start,
    )
    if resume and run.ckpt_path.exists():
        run.resume_from_checkpoint()
    elif run.distributed:
        # Seed with a rank offset only now that the model exists (DDP also broadcasts rank 0's weights),
        # so that ranks draw different dropout masks and augmentations but start from one model.
        set_seed(derive_seed(cfg.seed, "rank", run.rank))
    run.open_log()
    run.wrap_ddp()
    run.train()
    return run.finish()


def _finished_run(model: nn.Module, run_dir: Path, chash: str, desc: str) -> FitResult | None:
    """The result of a finished run in ``run_dir`` (its final weights loaded into ``model``), else None."""
    state_path = run_dir / "train_state.json"
    if not state_path.exists():
        return None
    st = read_json(state_path)
    if st.get("config_sha256") != chash:
        raise ResumeError(
            "the run folder holds a run with a different config",
            where=str(run_dir),
            fix="use a new run folder, or the same config to resume",
        )
    if not st.get("done"):
        return None
    info(f"{desc}: already finished in {run_dir}; loading its final weights")
    _load_final(model, run_dir)
    return FitResult(run_dir, st["dev_curve"], st.get("best"), st["steps"], st.get("wall_s", 0.0))


class _Run:
    """One call of :func:`fit`: the optimizer, the position in training, the logs, and the three phases.

    The phases are resume (:meth:`resume_from_checkpoint`, :meth:`checkpoint`, :meth:`write_state`), one
    epoch (:meth:`train_epoch`, :meth:`optimizer_step`, :meth:`after_step`) and evaluate-and-select
    (:meth:`evaluate_and_select`); :meth:`train` runs the epochs and :meth:`finish` saves ``final/``.
    """

    def __init__(
        self,
        model: nn.Module,
        task: TrainTask,
        cfg: TrainConfig,
        run_dir: Path,
        *,
        chash: str,
        callbacks: Iterable[Callable[[dict[str, Any]], None]],
        save: Callable[[nn.Module, Path, Mapping[str, Any]], None],
        device: str | torch.device,
        desc: str,
        t_start: float,
    ):
        self.model, self.task, self.cfg, self.run_dir = model, task, cfg, run_dir
        self.chash, self.callbacks, self.save, self.device, self.desc = chash, callbacks, save, device, desc
        self.t_start = t_start
        # DDP: only when a process group of > 1 ranks is running (torchrun); otherwise all of this is inert.
        self.distributed, self.rank, self.world = ddp_.is_distributed(), ddp_.rank(), ddp_.world_size()
        self.main = self.rank == 0
        self.ckpt_path = run_dir / "ckpt" / "last.pt"
        self.state_path = run_dir / "train_state.json"
        self.sizes = task.batch_size if isinstance(task, CountsSamples) else None

        self.params = _trainable(model, task)
        self.optimizer = _make_optimizer(cfg, self.params)
        steps_per_epoch = math.ceil(task.num_batches(0) / cfg.grad_accum)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(cfg, steps_per_epoch * cfg.epochs)
        )

        # Where training stands; all of it is in every checkpoint.
        self.start_epoch, self.start_batch, self.step = 0, 0, 0
        self.dev_curve: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.interval: dict[str, Any] = {"sum": {}, "steps": 0}  # loss terms summed since the last log line
        self.resumed_from: int | None = None

        self.log: _JsonlLog | _MemoryLog = _MemoryLog()
        # Under DDP the task's loss sees a DDPModel: the model's attributes, forward passes through DDP.
        self.train_model: Any = model
        self.extra_params: list[nn.Parameter] = []  # DDP: trainable parameters the model does not own
        self.t_interval, self.interval_samples = time.time(), 0

    # -- resume and checkpointing ------------------------------------------------------------------------

    def resume_from_checkpoint(self) -> None:
        """Restore weights, optimizer, schedule, task state, RNG and position from ``ckpt/last.pt``."""
        try:
            ck = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a corrupt file
            raise ResumeError(
                f"cannot read checkpoint: {e}",
                where=str(self.ckpt_path),
                fix="delete the run folder to start again",
            ) from None
        if ck.get("config_sha256") != self.chash:
            raise ResumeError(
                "the checkpoint was written with a different config",
                where=str(self.ckpt_path),
                fix="use a new run folder, or the same config to resume",
            )
        self.model.load_state_dict(ck["model"])
        if "task" in ck and isinstance(self.task, StatefulTask):
            self.task.load_state_dict(ck["task"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("world_size", 1) != self.world:
            raise ResumeError(
                f"the checkpoint was written by {ck.get('world_size', 1)} process(es), this run has "
                f"{self.world}",
                where=str(self.ckpt_path),
                fix="resume with the same number of processes (the global batch depends on it)",
            )
        # Each rank resumes its own generators (they differ by the rank offset); one process: "rng".
        set_rng_state(_unpack_rng(ck["rng_ranks"][self.rank] if self.distributed else ck["rng"]))
        self.start_epoch, self.start_batch, self.step = ck["epoch"], ck["batch"], ck["step"]
        self.dev_curve = json.loads(ck["dev_curve"])
        self.best = json.loads(ck["best"]) if ck["best"] else None
        if ck.get("log_interval"):
            self.interval = json.loads(ck["log_interval"])
        self.resumed_from = self.step
        info(
            f"{self.desc}: resuming {self.run_dir} at epoch {self.start_epoch}, batch {self.start_batch} "
            f"(step {self.step})"
        )

    def checkpoint(self, epoch: int, batch: int) -> None:
        """Write ``ckpt/last.pt`` (rank 0; under DDP it holds every rank's RNG state)."""
        rng_ranks = ddp_.all_gather_object(_pack_rng(get_rng_state())) if self.distributed else None
        if not self.main:
            ddp_.barrier()  # wait until rank 0 has written it
            return
        ck = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _pack_rng(get_rng_state()),
            "epoch": epoch,
            "batch": batch,
            "step": self.step,
            "dev_curve": json.dumps(self.dev_curve),
            "best": json.dumps(self.best) if self.best else "",
            "config_sha256": self.chash,
            "log_interval": json.dumps(self.interval),
        }
        if isinstance(self.task, StatefulTask):
            ck["task"] = self.task.state_dict()
        if self.distributed:
            ck["world_size"], ck["rng_ranks"] = self.world, rng_ranks
        with atomic_path(self.ckpt_path) as tmp:
            torch.save(ck, tmp)
        if self.distributed:
            ddp_.barrier()

    def write_state(self, done: bool) -> None:
        if not self.main:
            return
        write_json(
            self.state_path,
            {
                "config_sha256": self.chash,
                "done": done,
                "steps": self.step,
                "dev_curve": self.dev_curve,
                "best": self.best,
                "select_metric": self.cfg.select_metric,
                "select_mode": self.cfg.select_mode,
                "wall_s": round(time.time() - self.t_start, 3),
            },
        )

    def open_log(self) -> None:
        if not self.main:
            return  # other ranks keep their records in memory
        resumed = self.resumed_from is not None
        # TensorBoard hides events of a crashed run after its checkpoint (purge_step), as log.jsonl drops
        # them.
        tb = open_tensorboard(self.run_dir / "tensorboard", purge_step=self.step + 1 if resumed else None)
        self.log = _JsonlLog(
            self.run_dir / "log.jsonl", keep_until_step=self.step if resumed else None, tensorboard=tb
        )

    def wrap_ddp(self) -> None:
        if not self.distributed:
            return
        ddp_methods, find_unused = _ddp_options(self.task)
        self.train_model = ddp_.DDPModel(
            self.model, device=self.device, methods=ddp_methods, find_unused_parameters=find_unused
        )
        owned = {id(p) for p in self.model.parameters()}
        self.extra_params = [p for p in self.params if id(p) not in owned]  # e.g. a loss's parameters

    # -- one epoch ---------------------------------------------------------------------------------------

    def train(self) -> None:
        self.t_interval, self.interval_samples = time.time(), 0
        try:
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self.train_epoch(epoch)
                last = epoch == self.cfg.epochs - 1
                if (
                    last and self.interval["steps"]
                ):  # the steps after the last full interval (before the checkpoint)
                    self.log_interval(epoch)
                if isinstance(self.task, EvaluatingTask) and ((epoch + 1) % self.cfg.eval_every == 0 or last):
                    self.evaluate_and_select(self.task, epoch)
                self.checkpoint(epoch + 1, 0)
                self.write_state(done=False)
        finally:
            self.log.close()

    def local_batch(self, epoch: int, index: int) -> Any:
        if not self.distributed:
            return self.task.batch(epoch, index)
        if isinstance(self.task, ShardingTask):
            return self.task.local_batch(epoch, index, self.rank, self.world)
        return ddp_.shard_batch(self.task.batch(epoch, index), self.rank, self.world)

    def train_epoch(self, epoch: int) -> None:
        self.model.train()
        n_batches = self.task.num_batches(epoch)
        first = self.start_batch if epoch == self.start_epoch else 0
        bar = progress(
            total=n_batches,
            initial=first,
            desc=f"{self.desc} epoch {epoch + 1}/{self.cfg.epochs}",
            unit="batch",
        )
        t_epoch, n_samples = time.time(), 0
        epoch_loss, epoch_steps = 0.0, 0  # the bar shows the epoch's mean loss, not the last batch's
        b = first
        while b < n_batches:
            micro = range(b, min(b + self.cfg.grad_accum, n_batches))
            # Once per run: work done outside DDP's forward is not synchronised; fail loudly.
            check_sync = self.distributed and b == first and epoch == self.start_epoch
            terms_sum, samples = self.optimizer_step(epoch, micro, check_sync)
            n_samples += samples
            b = micro[-1] + 1
            bar.update(len(micro))
            rate = n_samples * self.world / max(1e-9, time.time() - t_epoch)
            epoch_loss, epoch_steps = epoch_loss + sum(terms_sum.values()), epoch_steps + 1
            bar.set_postfix(loss=f"{epoch_loss / epoch_steps:.4f}", samples_s=f"{rate:.0f}")
            self.after_step(epoch, b, n_batches, terms_sum)
        bar.close()

    def optimizer_step(self, epoch: int, micro: range, check_sync: bool) -> tuple[dict[str, float], int]:
        """One optimizer step over the micro-batches ``micro``: the mean loss terms and the samples seen."""
        self.optimizer.zero_grad(set_to_none=True)
        terms_sum: dict[str, float] = {}
        samples = 0
        for mb in micro:
            batch = self.local_batch(epoch, mb)
            # DDP: gradients are all-reduced on the last micro-batch of a step only.
            last_micro = not self.distributed or mb == micro[-1]
            with contextlib.nullcontext() if last_micro else self.train_model.no_sync():
                terms = self.task.loss(self.train_model, batch)
                loss = cast(torch.Tensor, sum(terms.values())) / len(micro)  # a sum of tensors
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss became {loss.item()} at epoch {epoch}, batch {mb}; lower the learning rate"
                    )
                loss.backward()
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + float(v.detach()) / len(micro)
            samples += self.sizes(batch) if self.sizes else 1
        self.interval_samples += samples
        if self.distributed and self.extra_params:
            ddp_.average_gradients(self.extra_params)
        if check_sync:
            ddp_.check_gradients_in_sync(self.params)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return terms_sum, samples

    def after_step(self, epoch: int, b: int, n_batches: int, terms_sum: dict[str, float]) -> None:
        """Log the interval's mean, call the callbacks and checkpoint mid-epoch when due."""
        for k, v in terms_sum.items():
            self.interval["sum"][k] = self.interval["sum"].get(k, 0.0) + v
        self.interval["steps"] += 1
        if self.step % self.cfg.log_every == 0:
            self.log_interval(epoch)
        for cb in self.callbacks:
            cb({"epoch": epoch, "batch": b, "step": self.step, "losses": terms_sum, "model": self.model})
        if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0 and b < n_batches:
            self.checkpoint(epoch, b)

    def log_interval(self, epoch: int) -> None:
        """One log.jsonl line: each term's mean over the optimizer steps since the last line."""
        mean = {k: v / self.interval["steps"] for k, v in self.interval["sum"].items()}
        if self.distributed:  # the global batch's loss: the mean of the ranks' shares
            mean = ddp_.all_reduce_mean(mean)
        rate = self.interval_samples * self.world / max(1e-9, time.time() - self.t_interval)
        self.log.write(
            {
                "step": self.step,
                "epoch": epoch,
                "lr": self.scheduler.get_last_lr()[0],
                **mean,
                "loss": sum(mean.values()),
                "samples_s": round(rate, 2),
            }
        )
        self.interval.update(sum={}, steps=0)
        self.t_interval, self.interval_samples = time.time(), 0

    # -- evaluate and select -----------------------------------------------------------------------------

    def evaluate_and_select(self, task: EvaluatingTask, epoch: int) -> None:
        """Append the dev metrics to the curve and save ``best/`` when the declared metric improves."""
        self.model.eval()
        metrics = {k: float(v) for k, v in task.evaluate(self.model).items()}
        if self.distributed:  # every rank evaluates (it may shard the work); rank 0's numbers count
            metrics = ddp_.broadcast_object(metrics)
        self.dev_curve.append({"epoch": epoch + 1, "step": self.step, **metrics})
        self.log.write({"step": self.step, "epoch": epoch, "dev": metrics})
        key = self.cfg.select_metric
        if key is not None:
            if key not in metrics:
                raise ConfigError(
                    f"select_metric {key!r} is not among the dev metrics",
                    fix=f"choose one of: {', '.join(sorted(metrics))}",
                )
            if _is_better(metrics[key], self.best["value"] if self.best else None, self.cfg.select_mode):
                self.best = {"epoch": epoch + 1, "step": self.step, "metric": key, "value": metrics[key]}
                if self.main:
                    self.save(self.model, self.run_dir / "best", self.best)
        info(f"{self.desc}: epoch {epoch + 1} dev " + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))

    def finish(self) -> FitResult:
        """Save ``final/`` (and ``best/`` = the last epoch when no metric is declared); mark the run done."""
        if self.cfg.select_metric is None:
            self.best = {"epoch": self.cfg.epochs, "step": self.step, "metric": None, "value": None}
        if self.main:
            self.save(self.model, self.run_dir / "final", {"epoch": self.cfg.epochs, "step": self.step})
            if self.best is not None and self.cfg.select_metric is None:
                self.save(self.model, self.run_dir / "best", self.best)
        self.write_state(done=True)
        ddp_.barrier()  # best/ and final/ exist for every rank once fit returns
        return FitResult(
            self.run_dir,
            self.dev_curve,
            self.best,
            self.step,
            round(time.time() - self.t_start, 3),
            self.resumed_from,
            self.log.records,
        )


def _load_final(model: nn.Module, run_dir: Path) -> None:
    from safetensors.torch import load_model as load_safetensors

    load_safetensors(model, str(run_dir / "final" / "model.safetensors"))


def load_best(model: nn.Module, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Load ``run_dir/best`` weights into ``model``; returns the best entry (epoch, metric, value)."""
    from safetensors.torch import load_model as load_safetensors

    run_dir = Path(run_dir)
    load_safetensors(model, str(run_dir / "best" / "model.safetensors"))
    return read_json(run_dir / "train_state.json").get("best") or {}
