"""Data-parallel training and evaluation with ``torch.distributed`` (torchrun, DDP): the pieces ``fit`` uses.

Launch any alignlab training under ``torchrun --nproc_per_node N`` and every process calls
:func:`init_from_env`, which reads torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` and starts the
process group (``nccl`` on CUDA, ``gloo`` on CPU). :func:`alignlab.train.fit` then notices the group
and trains with PyTorch's :class:`~torch.nn.parallel.DistributedDataParallel`.

Batches. With ``W`` ranks, per-rank batch ``B`` and ``A`` accumulation steps, one optimizer step uses the
*global* batch ``W·A·B``. A task's ``batch(epoch, index)`` is the global micro-batch ``index`` (``W·B``
examples, the same on every rank because it is a pure function); rank ``r`` trains the ``r``-th of
``W`` contiguous, near-equal slices of it (:func:`shard_batch`, or the task's own ``local_batch``). So
two ranks with batch ``B`` see exactly the examples one process with batch ``2B`` sees, step by step.
A task whose sampler already shards by rank (CommonIT) says so with ``local_batch`` (see
:class:`SamplerBatches`).

Cross-rank negatives. :func:`all_gather_with_grad` concatenates a tensor from all ranks in rank order;
its backward returns to each rank the *sum over ranks* of the gradients that reached its own slice (a
reduce-scatter), so a loss computed on every rank from gathered features sends gradients back to the
shard that produced them (the gather-with-grad semantics of open_clip). :func:`label_offset` gives the
position of this rank's first row in the gathered tensor: the positives of the local rows.

Why the gradients then match one process (``N`` examples in all, ``n_r`` on rank ``r``): DDP *averages*
parameter gradients over ranks. With ``local_loss`` a rank computes only its own rows' terms and scales
their sum by ``W/N``; the average over ranks of ``∇(W/N Σ_{k∈r} ℓ_k)`` summed through the gather is
``∇(1/N Σ_k ℓ_k)``, the single-process gradient. Without ``local_loss`` every rank computes the full
loss ``L``; the gather's backward sums ``W`` copies and DDP's average divides by ``W``: ``∇L`` again.

Evaluation. :func:`eval_shard` gives rank ``r`` a contiguous block of ``⌈n/W⌉`` item indices, padded
with repeats of the last index; :func:`gather_eval` gathers the blocks once and drops the padded
duplicates, so the gathered encodings are in the original order and a metric computed from them is the
single-process metric.

Everything here is a no-op (or the identity) in a single process, so code can call it unconditionally.

>>> world_size(), rank(), is_main()
(1, 0, True)
>>> [eval_shard(5, world=2, rank=r).tolist() for r in range(2)]
[[0, 1, 2], [3, 4, 4]]
>>> shard_range(5, world=2, rank=1)
(3, 5)
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from alignlab.core.errors import ConfigError

# ---------------------------------------------------------------------------------------- process group


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when not launched by a distributed launcher)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number",
            fix="launch with torchrun, or unset WORLD_SIZE",
        ) from None


def launched_distributed() -> bool:
    """True when a launcher (torchrun, ``torch.distributed.launch``, SLURM wrappers) asked for ``> 1``
    ranks."""
    return env_world_size() > 1


@contextlib.contextmanager
def group_from_launcher(device: str | torch.device = "cpu") -> Iterator[None]:
    """Start the process group when a launcher (torchrun) asked for ``> 1`` ranks, and shut it down
    afterwards; in one process this does nothing. For the commands that scale out."""
    started = launched_distributed() and init_from_env(device)
    try:
        yield
    finally:
        if started:
            shutdown()


def refuse_launcher(command: str) -> None:
    """Stop a command that does not run under torchrun before every rank starts writing the same run
    folder."""
    if launched_distributed():
        raise ConfigError(
            f"`{command}` does not run under torchrun (WORLD_SIZE={env_world_size()}): every rank "
            "would train alone and write the same run folder",
            where="WORLD_SIZE",
            fix=f"run `{command}` as one process; `alignlab train` and "
            "`alignlab commonit train` are the commands that scale out (docs/distributed.md)",
        )


def init_from_env(
    device: str | torch.device = "cpu", backend: str | None = None, timeout_s: float = 1800.0
) -> bool:
    """Start the default process group from torchrun's environment; returns True if one is running.

    Does nothing (returns False) when ``WORLD_SIZE`` is absent or 1, and nothing more than return True
    when a group is already initialised. ``backend`` defaults to ``nccl`` when ``device`` is CUDA and
    ``gloo`` otherwise. On CUDA each process binds to GPU ``LOCAL_RANK``, so ``"cuda"`` means its own GPU.
    """
    if dist.is_available() and dist.is_initialized():
        return True
    if not launched_distributed():
        return False
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed", fix="install a torch build with it")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ConfigError(
                f"WORLD_SIZE is set but {key} is not", fix="launch with torchrun (it sets both)"
            )
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError("device cuda was asked for but CUDA is not available", fix="use --device cpu")
        torch.cuda.set_device(local_rank())
    dist.init_process_group(
        backend or ("nccl" if cuda else "gloo"),
        init_method="env://",
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return True


def shutdown() -> None:
    """Destroy the default process group if there is one (call once at the end of a launched script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's index on its node (``LOCAL_RANK``; GPU ``i`` for process ``i`` of a node)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0, the process that writes checkpoints, logs and results."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def device_for(device: str | torch.device) -> torch.device:
    """``device`` with this rank's GPU index filled in (``"cuda"`` -> ``cuda:LOCAL_RANK`` under torchrun)."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None and launched_distributed():
        return torch.device("cuda", local_rank())
    return d


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (any picklable object); the identity in one process."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(values: Mapping[str, float]) -> dict[str, float]:
    """The mean over ranks of each named float (keys must be the same on every rank)."""
    if not is_distributed():
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    t /= world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Average ``.grad`` over ranks, for trainable tensors that DDP does not own (e.g. a loss's
    parameters)."""
    if not is_distributed():
        return
    for p in params:
        if p.grad is None:  # every rank must take part in the same collectives: use a zero gradient
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world_size()


def check_gradients_in_sync(params: Sequence[torch.Tensor], rtol: float = 1e-4) -> None:
    """Raise if the ranks hold different gradients after DDP's all-reduce (``fit`` checks its first step).

    Gradients computed outside DDP's forward pass (a task calling a submodule of the plain model) are
    not synchronised: the replicas would drift apart silently. One gather of per-tensor sums finds it.
    """
    if not is_distributed():
        return
    # Per tensor: the sum (sensitive to any difference) and the sum of magnitudes (its scale).
    mine = [
        None
        if p.grad is None
        else (float(p.grad.detach().double().sum()), float(p.grad.detach().double().abs().sum()))
        for p in params
    ]
    ref = broadcast_object(mine)
    bad = len(ref) != len(mine) or any(
        (a is None) != (b is None) or (a is not None and abs(a[0] - b[0]) > rtol * max(a[1], b[1]) + 1e-12)
        for a, b in zip(mine, ref)
    )
    flags = all_gather_object(bad)
    if any(flags):
        odd = [i for i, f in enumerate(flags) if f]
        raise ConfigError(
            f"gradients differ between ranks after the first step (ranks {odd} differ from rank 0): "
            "the task's loss ran part of the model outside DDP's forward pass",
            where="alignlab.train.fit under torch.distributed",
            fix="call the model (or forward_grid/embed_*), or wrap the computation in "
            "alignlab.train.distributed.forward_through(model, fn, ...)",
        )


def _comm_device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------- gathers with gradients


def gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """The first-dimension size of every rank's tensor (``[n]`` in one process)."""
    if not is_distributed():
        return [int(n)]
    t = torch.tensor([int(n)], dtype=torch.int64, device=_comm_device())
    out = [torch.zeros_like(t) for _ in range(world_size())]
    dist.all_gather(out, t)
    return [int(x.item()) for x in out]


class _AllGatherGrad(torch.autograd.Function):
    """All-gather of equal-shaped tensors; backward hands each rank the sum over ranks of its slice's
    grads."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        m, r = ctx.rows, dist.get_rank()
        if dist.get_backend() == "nccl":  # a reduce-scatter moves 1/W of what an all-reduce moves
            out = torch.empty_like(grad[:m])
            dist.reduce_scatter_tensor(out, grad)
            return out
        total = grad.clone()  # gloo has no reduce-scatter: all-reduce and keep this rank's slice
        dist.all_reduce(total)
        return total[r * m : (r + 1) * m]


def all_gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(cat of every rank's x in rank order, this rank's row offset in it)``, differentiable.

    Ranks may hold different numbers of rows (the last batch of an epoch): they are padded to the
    largest for the collective and the padding is cut off again. Gradients that reach the gathered
    tensor flow back, summed over ranks, to the rank that owns each row. In one process: ``(x, 0)``.
    """
    if not is_distributed():
        return x, 0
    sizes = gather_sizes(x.shape[0], x.device)
    m = max(sizes)
    padded = x if x.shape[0] == m else torch.cat([x, x.new_zeros(m - x.shape[0], *x.shape[1:])])
    full = _AllGatherGrad.apply(padded)
    if all(s == m for s in sizes):
        out = full
    else:
        out = torch.cat([full[i * m : i * m + s] for i, s in enumerate(sizes)])
    return out, sum(sizes[: rank()])


def all_gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order, without gradients (ranks may differ in rows)."""
    with torch.no_grad():
        return all_gather_with_grad(x.detach())[0]


def label_offset(n_local: int) -> int:
    """Row of this rank's first example in a gathered batch: the sum of the lower ranks' sizes."""
    if not is_distributed():
        return 0
    return sum(gather_sizes(n_local)[: rank()])


# -------------------------------------------------------------------------------- batch shards


def shard_range(n: int, world: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous slice of ``n`` items; slices differ by at most one item."""
    world = world_size() if world is None else int(world)
    r = _rank() if rank is None else int(rank)
    base, extra = divmod(int(n), world)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


_rank = rank  # shard_range's argument shadows the function


def shard_batch(batch: Any, rank: int, world: int) -> Any:
    """This rank's slice of a global batch: tensors, arrays and lists are cut along their first axis.

    Tuples, lists of batch fields and dicts are sharded field by field (each field must have the same
    first-axis length). A global batch smaller than ``world`` would leave a rank with nothing: that is
    a :class:`ConfigError` (use a larger batch, or fewer ranks).
    """
    n = _batch_len(batch)
    if n < world:
        raise ConfigError(
            f"a global batch of {n} example(s) cannot be split over {world} ranks",
            fix="raise train.batch_size, or use fewer processes",
        )
    lo, hi = shard_range(n, world, rank)
    return _slice(batch, lo, hi, n)


def _batch_len(batch: Any) -> int:
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        lens = {_batch_len(v) for v in batch.values()}
    elif isinstance(batch, tuple) or (isinstance(batch, list) and batch and _is_field(batch[0])):
        lens = {_batch_len(v) for v in batch}
    elif isinstance(batch, list):
        return len(batch)
    else:
        raise ConfigError(
            f"cannot split a batch of type {type(batch).__name__} over ranks",
            fix="give the task a local_batch(epoch, index, rank, world_size) method",
        )
    if len(lens) != 1:
        raise ConfigError(
            f"batch fields differ in length ({sorted(lens)}), so they cannot be split over ranks",
            fix="give the task a local_batch(epoch, index, rank, world_size) method",
        )
    return lens.pop()


def _is_field(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray, list, tuple, Mapping))


def _slice(batch: Any, lo: int, hi: int, n: int) -> Any:
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return batch[lo:hi]
    if isinstance(batch, Mapping):
        mapping_type: Callable[..., Any] = type(batch)  # dict, OrderedDict, a tokenizer's BatchEncoding ...
        return mapping_type((k, _slice(v, lo, hi, n)) for k, v in batch.items())
    if isinstance(batch, tuple) or (isinstance(batch, list) and batch and _is_field(batch[0])):
        return type(batch)(_slice(v, lo, hi, n) for v in batch)
    return batch[lo:hi]


class SamplerBatches:
    """Loop batches from a rank-aware batch sampler that shards by itself (e.g. CommonIT's).

    ``sampler`` yields this rank's micro-batches (lists of example indices) for the epoch given to its
    ``set_epoch``, the same number on every rank; ``fetch(indices)`` turns indices into a batch. Mix it
    into a task (or give it to one): ``num_batches`` is the sampler's length and ``batch``/``local_batch``
    return this rank's ``index``-th micro-batch, so :func:`~alignlab.train.fit` does not shard it again.
    The loop's ``grad_accum`` must equal the sampler's accumulation steps, so that a loop step is a
    sampler step.
    """

    def __init__(self, sampler: Any, fetch: Callable[[list[int]], Any]):
        self.sampler = sampler
        self.fetch = fetch
        self._epoch: int | None = None
        self._batches: list[list[int]] = []

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._epoch != epoch:
            self.sampler.set_epoch(epoch)
            self._batches = [list(b) for b in self.sampler]  # the plan is a function of (seed, epoch)
            self._epoch = epoch
        return self._batches

    def num_batches(self, epoch: int) -> int:
        return len(self.sampler)

    def indices(self, epoch: int, index: int) -> list[int]:
        return self._epoch_batches(epoch)[index]

    def batch(self, epoch: int, index: int) -> Any:
        return self.fetch(self.indices(epoch, index))

    def local_batch(self, epoch: int, index: int, rank: int, world: int) -> Any:
        s_world, s_rank = getattr(self.sampler, "world_size", 1), getattr(self.sampler, "rank", 0)
        if (s_world, s_rank) != (world, rank):
            raise ConfigError(
                f"the sampler was built for rank {s_rank} of {s_world}, but this is rank {rank} of {world}",
                fix="build the sampler with world_size=world_size(), rank=rank()",
            )
        return self.batch(epoch, index)


# ------------------------------------------------------------------------------------- evaluation


def eval_shard(n: int, world: int | None = None, rank: int | None = None) -> np.ndarray:
    """Rank ``rank``'s block of ``⌈n/W⌉`` indices of ``range(n)``, padded with repeats of ``n - 1``.

    Every rank gets the same number of indices (collectives need equal shapes); :func:`gather_eval`
    drops the padding.
    """
    world = world_size() if world is None else int(world)
    r = _rank() if rank is None else int(rank)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    m = -(-int(n) // world)
    idx = np.arange(r * m, (r + 1) * m, dtype=np.int64)
    return np.minimum(idx, n - 1)


def gather_eval(local: torch.Tensor, n: int) -> torch.Tensor:
    """Undo :func:`eval_shard`: the rows of every rank's block, in order, without the padded duplicates."""
    if not is_distributed():
        return local[:n]
    world = world_size()
    m = -(-int(n) // world) if n > 0 else 0
    if local.shape[0] != m:
        raise ValueError(f"gather_eval expects {m} rows per rank (eval_shard({n})), got {local.shape[0]}")
    x = local.detach().contiguous()
    dev = _comm_device()
    parts = [torch.empty_like(x, device=dev) for _ in range(world)]
    dist.all_gather(parts, x.to(dev))
    return torch.cat(parts)[:n].to(local.device)


# ------------------------------------------------------------------------------------------ DDP


class _Dispatch(nn.Module):
    """Lets DDP run any method of the model (or any function of it) as its forward pass."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, method: str | Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if callable(method):
            return method(self.module, *args, **kwargs)
        return getattr(self.module, method)(*args, **kwargs)


class DDPModel:
    """The model as a task's ``loss`` sees it under DDP: attributes are the model's, forwards go through DDP.

    DDP synchronises gradients only for work done inside its ``forward``. Calling the model, or one of
    the differentiable entry points in :attr:`FORWARD_METHODS` (plus a task's ``ddp_methods``), runs
    through DDP; everything else (``tokenize``, ``config``, ``image_tower.preprocess``, ``device``) is
    read from the model itself. :func:`forward_through` runs any function of the model through DDP.
    Keep the wrapper alive until ``backward()`` has run: DDP's gradient all-reduce hooks live with it.
    """

    FORWARD_METHODS = ("forward", "forward_grid", "embed_images", "embed_texts")

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device | str = "cpu",
        methods: Sequence[str] = (),
        find_unused_parameters: bool = False,
    ):
        from torch.nn.parallel import DistributedDataParallel

        d = torch.device(device)
        ids = [d.index if d.index is not None else torch.cuda.current_device()] if d.type == "cuda" else None
        self.__dict__.update(
            module=model,
            _methods=frozenset(self.FORWARD_METHODS) | frozenset(methods),
            ddp=DistributedDataParallel(
                _Dispatch(model), device_ids=ids, find_unused_parameters=find_unused_parameters
            ),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.ddp("forward", *args, **kwargs)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(model, *args, **kwargs)`` as one DDP forward pass."""
        return self.ddp(fn, *args, **kwargs)

    def no_sync(self) -> contextlib.AbstractContextManager[None]:
        """Skip the gradient all-reduce (accumulation micro-batches before the last)."""
        return self.ddp.no_sync()

    def __getattr__(self, name: str) -> Any:
        if name in self._methods:
            return functools.partial(self.ddp, name)
        return getattr(self.module, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.module, name, value)


def forward_through(model: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(m, *args, **kwargs)``, ``m`` the plain model; one DDP forward when ``model`` is a
    :class:`DDPModel`."""
    if isinstance(model, DDPModel):
        return model.run(fn, *args, **kwargs)
    return fn(model, *args, **kwargs)


def unwrap(model: Any) -> Any:
    """The plain model behind a :class:`DDPModel` (or DDP module); the model itself otherwise."""
    if isinstance(model, DDPModel):
        return model.module
    inner = getattr(model, "module", None)
    if isinstance(inner, _Dispatch):
        return inner.module
    return inner if isinstance(model, nn.parallel.DistributedDataParallel) else model


# -------------------------------------------------------------------------- local process groups


def free_port() -> int:
    """A free TCP port on the loopback interface (for a single-node rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_entry(r: int, fn: Callable[..., Any], world: int, store: str, threads: int, args: tuple) -> None:
    # What torchrun would set: progress bars and info() read RANK to stay quiet on ranks > 0.
    os.environ.update(
        {"RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": str(world)}
    )
    torch.set_num_threads(threads)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=r,
        world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )
    try:
        fn(r, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], world: int, *args: Any, threads: int = 1) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` new CPU processes joined by a gloo process group.

    For tests and small local runs (torchrun is the launcher for real jobs). The rendezvous is a file
    store in a temporary folder, so parallel test runs cannot collide on a port. ``fn`` must be
    importable (a module-level function).
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="alignlab-dist-") as tmp:
        store = str(Path(tmp) / "store")
        mp.spawn(_spawn_entry, args=(fn, world, store, threads, args), nprocs=world, join=True)
