"""CommonIT batching: every optimizer step draws its examples from one group.

CommonIT (Rao et al., EMNLP 2024) partitions instruction data into groups (by task, by embedding
cluster of the instruction, or by response length) and makes every training mini-batch come from a
single group, while the order of the batches stays random. :class:`CommonITBatchSampler` does this for
any ``torch.utils.data.DataLoader`` (pass it as ``batch_sampler=``) and for any number of ranks.

Units, steps and ranks
----------------------
With per-device batch size ``B``, ``W`` ranks and ``A`` gradient-accumulation steps, one optimizer
step consumes ``U = W·A·B`` examples. Under ``homogeneity="step"`` (the default) the sampler plans
*units* of ``U`` examples from one group; unit ``s`` is cut into ``P = W·A`` micro-batches and
micro-batch ``i = r·A + a`` goes to rank ``r`` as its ``a``-th accumulation step. So every rank
sees the same group at the same optimizer step, the ranks' shards are disjoint, and each rank yields
``len(sampler) = steps · A`` micro-batches, the same number on every rank. Under
``homogeneity="batch"`` the units are single micro-batches of ``B`` examples, dealt round-robin over
the ``W·A`` slots of a step (each device batch is homogeneous, a step may mix groups).

Group orders for one epoch (``order=``)
---------------------------------------
* ``"proportional"`` (exhaustive): each group is shuffled, cut into units, and all units of all groups
  are shuffled together. Every kept example is used once per epoch; a group appears in proportion to its
  size.
* ``"uniform"`` / ``"temperature"``: the group of each step is drawn with probability
  ``p_g ∝ n_g^(1/T)`` (uniform is ``T → ∞``); examples come from a per-group stream that walks through
  a fresh permutation of the group each time it is used up. The epoch has a fixed number of steps
  (default: as many as the proportional plan), so ``len`` is exact. (A unit that straddles two
  permutations of a group can hold one example twice; groups have at least one unit of examples, so
  this is rare.)

Policies (never silent: each raises, or warns with :class:`CommonITWarning` and is in :attr:`report`)
------------------------------------------------------------------------------------------------------
* ``small_groups`` — a group with fewer than ``min_group_size`` examples (default ``U``, one full
  step): ``"merge"`` pools all such groups into one merged group (which is merged into the smallest
  regular group if it is itself still too small), ``"drop"`` leaves them out, ``"error"`` raises.
* ``leftover`` (proportional order; the sampled orders always take full units from their streams) —
  the ``r = n_g mod U`` examples left after a group's full units:
  ``"partial"`` (default) makes them one smaller unit, split as evenly as possible over the ``P``
  micro-batches (topped up to ``P`` examples with repeats from the group if ``r < P``, so no rank gets an
  empty batch); ``"pad"`` tops the unit up to ``U`` with repeats from the same group; ``"drop"`` leaves
  them out this epoch (a different subset each epoch); ``"mix"`` pools all groups' leftovers into mixed
  units.

Randomness and resuming
-----------------------
All draws come from a private ``numpy.random.Generator`` seeded from ``(seed, epoch)`` only, so every
rank computes the same plan, :meth:`set_epoch` changes it, and the global RNGs are never touched.
:meth:`state_dict` records the epoch and the number of micro-batches handed out; after
:meth:`load_state_dict` the next iteration starts at the very next micro-batch: the epoch plan is
recomputed (vectorised) and the skipped micro-batches are never built.

``mix_ratio=ρ`` turns a share ρ of the units of each epoch into random (mixed) units with the same
examples; ``mode="random"`` is the baseline with ``ρ = 1``: the very same examples, repeats and step
sizes as the CommonIT plan, only the grouping of examples into steps is random.

>>> s = CommonITBatchSampler(["a"] * 6 + ["b"] * 4, batch_size=2, seed=0)
>>> batches = list(s)
>>> len(batches) == len(s) == 5
True
>>> all(len({"a" if i < 6 else "b" for i in b}) == 1 for b in batches)
True
>>> sorted(i for b in batches for i in b) == list(range(10))
True
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from alignlab.core.errors import ConfigError, DataError, ResumeError
from alignlab.core.seed import derive_seed

ORDERS = ("proportional", "uniform", "temperature")
HOMOGENEITY = ("step", "batch")
SMALL_GROUP_POLICIES = ("merge", "drop", "error")
LEFTOVER_POLICIES = ("partial", "pad", "drop", "mix")
MODES = ("commonit", "random")
MIXED = -1  # group label of a unit whose examples come from several groups
_STATE_VERSION = 1


class CommonITWarning(UserWarning):
    """A sampler policy changed which examples are trained (merged or dropped groups, dropped leftovers)."""


@dataclass
class EpochPlan:
    """One epoch's plan, identical on every rank.

    ``order`` holds example indices; unit ``u`` is ``order[start[u] : start[u] + length[u]]`` with group
    ``group[u]`` (an index into :attr:`CommonITBatchSampler.group_names`, or ``-1`` for a mixed unit);
    ``sequence`` lists the units in the order they are trained.
    """

    epoch: int
    order: np.ndarray
    start: np.ndarray
    length: np.ndarray
    group: np.ndarray
    sequence: np.ndarray
    repeats: int
    dropped: int

    def unit(self, u: int) -> np.ndarray:
        s = int(self.start[u])
        return self.order[s : s + int(self.length[u])]


class CommonITBatchSampler(Sampler[list[int]]):
    """A seedable, resumable, rank-aware batch sampler whose optimizer steps each come from one group.

    Args:
        group_ids: one group label per example (ints, strings, any hashable; a NumPy integer array is the
            fast path for millions of examples).
        batch_size: per-device micro-batch size ``B``.
        world_size, rank: data-parallel ranks; every rank builds its own sampler with its ``rank``.
        grad_accum_steps: micro-batches per optimizer step on each rank (``A``).
        seed: seed of the private generator (with the epoch).
        order: ``"proportional"`` (exhaustive, default), ``"uniform"`` or ``"temperature"``.
        temperature: ``T`` of ``order="temperature"`` (``p_g ∝ n_g^(1/T)``; 1 = proportional in expectation).
        homogeneity: ``"step"`` (one group per optimizer step across all ranks) or ``"batch"``.
        small_groups, min_group_size: policy for groups smaller than ``min_group_size`` (default: one unit).
        leftover: policy for the examples left after a group's full units.
        mix_ratio: share of each epoch's units replaced by random (mixed) units of the same examples.
        mode: ``"commonit"`` or the ``"random"`` baseline (same data, random steps).
        steps_per_epoch: optimizer steps per epoch for the sampled orders (default: as proportional).
        warn: emit :class:`CommonITWarning` for policies that changed the data (they are in ``report``
            anyway).
    """

    def __init__(
        self,
        group_ids: Sequence[Any] | np.ndarray,
        batch_size: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        grad_accum_steps: int = 1,
        seed: int = 0,
        order: str = "proportional",
        temperature: float = 1.0,
        homogeneity: str = "step",
        small_groups: str = "merge",
        min_group_size: int | None = None,
        leftover: str = "partial",
        mix_ratio: float = 0.0,
        mode: str = "commonit",
        steps_per_epoch: int | None = None,
        warn: bool = True,
    ):
        super().__init__()
        _check_int("batch_size", batch_size, 1)
        _check_int("world_size", world_size, 1)
        _check_int("grad_accum_steps", grad_accum_steps, 1)
        _check_int("seed", seed, 0)
        _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ConfigError(
                f"rank {rank} is not below world_size {world_size}", fix="use 0 <= rank < world_size"
            )
        _check_choice("order", order, ORDERS)
        _check_choice("homogeneity", homogeneity, HOMOGENEITY)
        _check_choice("small_groups", small_groups, SMALL_GROUP_POLICIES)
        _check_choice("leftover", leftover, LEFTOVER_POLICIES)
        _check_choice("mode", mode, MODES)
        if not (isinstance(mix_ratio, (int, float)) and 0.0 <= float(mix_ratio) <= 1.0):
            raise ConfigError(f"mix_ratio must be in [0, 1], got {mix_ratio!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
            raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
        if steps_per_epoch is not None:
            _check_int("steps_per_epoch", steps_per_epoch, 1)
            if order == "proportional":
                raise ConfigError(
                    "steps_per_epoch applies to order='uniform' or 'temperature' only",
                    fix="leave it unset: the proportional order uses every example once",
                )

        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.grad_accum_steps = int(grad_accum_steps)
        self.seed = int(seed)
        self.order = order
        self.temperature = float(temperature)
        self.homogeneity = homogeneity
        self.small_groups = small_groups
        self.leftover = leftover
        self.mix_ratio = float(mix_ratio)
        self.mode = mode
        self.drop_last = False  # read by accelerate; the sampler itself decides what an epoch holds
        self.epoch = 0
        self._position = 0
        self._resume_at: int | None = None
        self._plan_cache: EpochPlan | None = None
        self._fingerprint: str | None = None

        slots = self.world_size * self.grad_accum_steps
        if homogeneity == "step":
            self.unit_size, self._parts, self._units_per_round = slots * self.batch_size, slots, 1
        else:
            self.unit_size, self._parts, self._units_per_round = self.batch_size, 1, slots
        if min_group_size is None:
            min_group_size = self.unit_size
        _check_int("min_group_size", min_group_size, 1)
        self.min_group_size = int(min_group_size)

        codes, labels = _encode_groups(group_ids)
        self.n_examples = int(codes.size)
        self._codes = codes
        self.original_names = labels
        counts = _bincount(codes, len(labels))
        self._eff_of_code, self.group_names, small_report = self._apply_small_group_policy(
            counts, labels, warn
        )
        self.group_sizes = np.bincount(
            self._eff_of_code[self._eff_of_code >= 0],
            weights=counts[self._eff_of_code >= 0],
            minlength=len(self.group_names),
        ).astype(np.int64)
        self._members, self._offsets = _group_members(codes, self._eff_of_code, self.group_sizes)
        self._weights = self._group_weights()
        self._layout(steps_per_epoch)
        self.report = self._make_report(small_report)
        if warn and self._round_fill < 0:
            warnings.warn(
                f"CommonIT: leftover='drop' with homogeneity='batch' leaves {-self._round_fill} device "
                f"batch(es) out of every epoch to give every rank the same number of steps",
                CommonITWarning,
                stacklevel=2,
            )
        if warn and self._static_dropped:
            warnings.warn(
                f"CommonIT: leftover='drop' leaves {self._static_dropped} of {self.n_kept} examples "
                f"out of every epoch (a different subset each epoch); use leftover='partial' to "
                f"train on all of them",
                CommonITWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ construction helpers

    def _apply_small_group_policy(
        self, counts: np.ndarray, labels: list[Any], warn: bool
    ) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        small = np.flatnonzero(counts < self.min_group_size)
        big = np.flatnonzero(counts >= self.min_group_size)
        eff = np.full(len(labels), -1, dtype=np.int64)
        names = [str(labels[c]) for c in big]
        eff[big] = np.arange(big.size)
        info: dict[str, Any] = {
            "policy": self.small_groups,
            "min_group_size": self.min_group_size,
            "groups": {str(labels[c]): int(counts[c]) for c in small},
        }
        if small.size == 0:
            return eff, names, info
        listing = ", ".join(f"{labels[c]!r} ({counts[c]})" for c in small[:8]) + (
            f" and {small.size - 8} more" if small.size > 8 else ""
        )
        need = (
            f"{self.min_group_size} examples (one optimizer step of {self.world_size} rank(s) × "
            f"{self.grad_accum_steps} accumulation × batch {self.batch_size})"
            if self.min_group_size == self.unit_size and self.homogeneity == "step"
            else f"{self.min_group_size} examples"
        )
        if self.small_groups == "error":
            raise ConfigError(
                f"{small.size} group(s) have fewer than {need}: {listing}",
                where="CommonITBatchSampler(small_groups='error')",
                fix="lower batch_size / grad_accum_steps, or use small_groups='merge' or 'drop'",
            )
        if self.small_groups == "drop":
            if big.size == 0:
                raise ConfigError(
                    f"every group has fewer than {need}, so small_groups='drop' leaves nothing",
                    fix="lower batch_size / grad_accum_steps, or use small_groups='merge'",
                )
            info["dropped_examples"] = int(counts[small].sum())
            if warn:
                warnings.warn(
                    f"CommonIT: dropped {small.size} group(s) with fewer than {need}: {listing}",
                    CommonITWarning,
                    stacklevel=3,
                )
            return eff, names, info
        # merge: one pooled group; if the pool itself is too small it joins the smallest regular group.
        pooled = int(counts[small].sum())
        if pooled >= self.min_group_size or big.size == 0:
            eff[small] = len(names)
            names.append(
                str(labels[small[0]])
                if small.size == 1
                else "merged("
                + "+".join(str(labels[c]) for c in small[:8])
                + ("+…" if small.size > 8 else "")
                + ")"
            )
            info["merged_into"] = names[-1]
        else:
            target = int(big[np.argmin(counts[big])])
            eff[small] = eff[target]
            names[eff[target]] = f"{labels[target]}+merged"
            info["merged_into"] = names[eff[target]]
        info["merged_examples"] = pooled
        if warn:
            warnings.warn(
                f"CommonIT: merged {small.size} group(s) with fewer than {need} into "
                f"{info['merged_into']!r}: {listing}",
                CommonITWarning,
                stacklevel=3,
            )
        return eff, names, info

    def _group_weights(self) -> np.ndarray:
        n = self.group_sizes.astype(np.float64)
        if self.order == "uniform":
            w = np.ones_like(n)
        else:
            # Work in logs so that n^(1/T) for a small T cannot overflow.
            logw = np.log(n) / self.temperature
            w = np.exp(logw - logw.max())
        return w / w.sum()

    def _layout(self, steps_per_epoch: int | None) -> None:
        """Static part of every epoch's plan: unit sizes, counts, len (they do not depend on the draws)."""
        U, P, R = self.unit_size, self._parts, self._units_per_round
        n = self.group_sizes
        full = n // U
        rem = n % U
        if self.leftover == "partial":
            tail = np.where(rem == 0, 0, np.maximum(rem, P))
        elif self.leftover == "pad":
            tail = np.where(rem == 0, 0, U)
        else:
            tail = np.zeros_like(rem)
        self._full, self._rem, self._tail = full, rem, tail
        pool = int(rem.sum()) if self.leftover == "mix" else 0
        pool_full, pool_rem = divmod(pool, U)
        pool_tail = max(pool_rem, P) if pool_rem else 0
        self._pool = (pool, pool_full, pool_tail)
        n_units = int(full.sum() + (tail > 0).sum() + pool_full + (pool_tail > 0))
        self._static_repeats = int(
            (tail - np.where(tail > 0, rem, 0)).sum() + (pool_tail - pool_rem if pool_tail else 0)
        )
        proportional = self.order == "proportional"
        self._static_dropped = int(rem.sum()) if self.leftover == "drop" and proportional else 0
        self.n_kept = int(n.sum())
        self._n_units_planned = n_units
        if self.order == "proportional":
            n_rounds, extra = divmod(n_units, R)
            if extra and self.leftover != "drop":
                n_rounds += 1  # the last round is completed with repeated units (batch homogeneity only)
            self._round_fill = (R - extra) % R if self.leftover != "drop" else -extra
        else:
            if steps_per_epoch is None:
                steps_per_epoch = (
                    max(1, -(-n_units // R)) if self.leftover != "drop" else max(1, n_units // R)
                )
            n_rounds = int(steps_per_epoch)
            self._round_fill = 0
        if n_rounds == 0:
            raise ConfigError(
                f"the data make no complete optimizer step ({n_units} unit(s) of up to {U} "
                f"examples for {R} slot(s)) under leftover='drop'",
                fix="use leftover='partial' or a smaller batch size",
            )
        self.steps_per_epoch = n_rounds
        self._len = n_rounds * self.grad_accum_steps

    def _make_report(self, small: dict[str, Any]) -> dict[str, Any]:
        return {
            "n_examples": self.n_examples,
            "n_kept": self.n_kept,
            "n_groups": len(self.original_names),
            "n_effective_groups": len(self.group_names),
            "group_sizes": {name: int(s) for name, s in zip(self.group_names, self.group_sizes)},
            "unit_examples": self.unit_size,
            "micro_batches_per_unit": self._parts,
            "steps_per_epoch": self.steps_per_epoch,
            "micro_batches_per_rank": self._len,
            "order": self.order,
            "mode": self.mode,
            "homogeneity": self.homogeneity,
            "mix_ratio": self.mix_ratio,
            "small_groups": small,
            "leftover": {
                "policy": self.leftover,
                "leftover_examples": int(self._rem.sum()),
                "repeats_per_epoch": self._static_repeats if self.order == "proportional" else None,
                "dropped_per_epoch": self._static_dropped,
                "mixed_units": int(self._pool[1] + (self._pool[2] > 0)),
                # batch homogeneity: whole units repeated (> 0) or left out (< 0) to fill the last step
                "last_step_units": int(self._round_fill),
            },
        }

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        """Micro-batches this rank yields per epoch (identical on every rank)."""
        return self._len

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose plan the next iteration follows (reseeds the private generator).

        The position goes back to the start of the epoch, except right after :meth:`load_state_dict` for
        that same epoch (a training loop calls ``set_epoch`` when it re-enters the resumed epoch).
        """
        _check_int("epoch", epoch, 0)
        if int(epoch) != self.epoch or self._resume_at is None:
            self._resume_at = None
            self._position = 0
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        start = self._resume_at if self._resume_at is not None else 0
        self._resume_at = None
        plan = self.plan(self.epoch)
        self._position = start  # set now, not at the first next(): state_dict() is right at once
        return self._batches(plan, start)

    def _batches(self, plan: EpochPlan, start: int) -> Iterator[list[int]]:
        for k in range(start, self._len):
            batch = self._micro_batch(plan, k)
            self._position = k + 1
            yield batch

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """Epoch and micro-batches handed out so far (pass ``position`` when a loader prefetches ahead)."""
        pos = self._position if position is None else int(position)
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "position": pos,
            "rank": self.rank,
            "fingerprint": self.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration continues the saved epoch at the next micro-batch."""
        try:
            version, epoch, pos, fp = (
                state["version"],
                int(state["epoch"]),
                int(state["position"]),
                state["fingerprint"],
            )
        except (KeyError, TypeError, ValueError):
            raise ResumeError(
                "sampler state is malformed",
                where="CommonITBatchSampler.load_state_dict",
                fix="pass what state_dict() returned",
            ) from None
        if version != _STATE_VERSION:
            raise ResumeError(f"sampler state version {version} is not {_STATE_VERSION}")
        if fp != self.fingerprint():
            raise ResumeError(
                "sampler state was saved with different data or settings",
                where="CommonITBatchSampler.load_state_dict",
                fix="resume with the same group ids, batch size, world size, accumulation and policies",
            )
        if not 0 <= pos <= self._len:
            raise ResumeError(f"saved position {pos} is outside the epoch (0..{self._len})")
        self.epoch = epoch
        self._position = pos
        self._resume_at = pos

    def fingerprint(self) -> str:
        """SHA-256 of the settings and the group labels; two samplers with equal fingerprints plan alike."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(
                json.dumps(
                    [
                        self.batch_size,
                        self.world_size,
                        self.grad_accum_steps,
                        self.seed,
                        self.order,
                        self.temperature,
                        self.homogeneity,
                        self.small_groups,
                        self.min_group_size,
                        self.leftover,
                        self.mix_ratio,
                        self.mode,
                        self.steps_per_epoch,
                        [str(x) for x in self.original_names],
                    ]
                ).encode()
            )
            h.update(np.ascontiguousarray(self._codes).tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def group_of(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Effective group of each example index (``-1`` for an example in a dropped group)."""
        idx = np.asarray(indices, dtype=np.int64)
        return self._eff_of_code[self._codes[idx]]

    def steps(self, epoch: int | None = None) -> Iterator[tuple[int, list[list[int]]]]:
        """Every optimizer step of an epoch across all ranks: ``(group, [micro-batch per slot])``.

        Slot ``r·A + a`` is rank ``r``'s ``a``-th micro-batch of the step; group is ``-1`` for a mixed step
        (or, under batch homogeneity, when the step's device batches come from different groups).
        """
        plan = self.plan(self.epoch if epoch is None else epoch)
        slots = self.world_size * self.grad_accum_steps
        for rnd in range(self.steps_per_epoch):
            batches, groups = [], set()
            for i in range(slots):
                u, lo, hi = self._locate(plan, rnd, i)
                batches.append(plan.order[lo:hi].tolist())
                groups.add(int(plan.group[u]))
            yield (groups.pop() if len(groups) == 1 else MIXED), batches

    # ------------------------------------------------------------------ planning

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng(derive_seed("commonit-sampler", self.seed, epoch))

    def plan(self, epoch: int) -> EpochPlan:
        """The (cached) plan of ``epoch``; the same on every rank."""
        if self._plan_cache is not None and self._plan_cache.epoch == epoch:
            return self._plan_cache
        rng = self._rng(epoch)
        if self.order == "proportional":
            plan = self._plan_proportional(epoch, rng)
        else:
            plan = self._plan_sampled(epoch, rng)
        self._randomise_units(plan, rng)
        self._plan_cache = plan
        return plan

    def _plan_proportional(self, epoch: int, rng: np.random.Generator) -> EpochPlan:
        U = self.unit_size
        full, rem, tail = self._full, self._rem, self._tail
        pool_n, pool_full, pool_tail = self._pool
        region = full * U + tail
        pool_base = int(region.sum())
        pool_size = pool_full * U + pool_tail
        order = np.empty(pool_base + pool_size, dtype=self._members.dtype)
        n_units = self._n_units_planned
        # int32 offsets whenever they fit: at 10M examples the unit tables are then ~25 MB, not ~50 MB.
        pos_dtype = np.int32 if order.size < 2**31 else np.int64
        start = np.empty(n_units, dtype=pos_dtype)
        length = np.empty(n_units, dtype=np.int32)
        group = np.empty(n_units, dtype=np.int32)
        pos = unit = 0
        pool_pos = pool_base
        dropped = 0
        for g in range(len(self.group_names)):
            lo, n = int(self._offsets[g]), int(self.group_sizes[g])
            members = self._members[lo : lo + n]
            f, r, t = int(full[g]), int(rem[g]), int(tail[g])
            if region[g] >= n:  # partial / pad (or no leftover): shuffle in place in the order array
                buf = order[pos : pos + n]
                buf[:] = members
                rng.shuffle(buf)
                if t > r:
                    # Top the tail up with repeats from the start of the shuffled group, i.e. from its first
                    # full unit when there is one (cyclic only for a group smaller than the top-up).
                    order[pos + n : pos + f * U + t] = np.resize(buf, t - r)
            else:  # drop / mix: the leftover goes to the pool or is left out this epoch
                buf = members.copy()
                rng.shuffle(buf)
                order[pos : pos + f * U] = buf[: f * U]
                if self.leftover == "mix":
                    order[pool_pos : pool_pos + r] = buf[f * U :]
                    pool_pos += r
                else:
                    dropped += r
            start[unit : unit + f] = pos + np.arange(f, dtype=pos_dtype) * U
            length[unit : unit + f] = U
            group[unit : unit + f] = g
            unit += f
            if t:
                start[unit], length[unit], group[unit] = pos + f * U, t, g
                unit += 1
            pos += int(region[g])
        if pool_n:
            body = order[pool_base : pool_base + pool_n]
            rng.shuffle(body)
            if pool_size > pool_n:
                order[pool_base + pool_n : pool_base + pool_size] = np.resize(body, pool_size - pool_n)
            k = pool_full + (pool_tail > 0)
            start[unit : unit + k] = pool_base + np.arange(k, dtype=pos_dtype) * U
            length[unit : unit + pool_full] = U
            if pool_tail:
                length[unit + pool_full] = pool_tail
            group[unit : unit + k] = MIXED
            unit += k
        assert unit == n_units
        sequence = rng.permutation(np.arange(n_units, dtype=np.int32))
        extra = self._round_fill
        if extra > 0:  # batch homogeneity: complete the last round with whole repeated units
            dup = (
                rng.choice(n_units, size=extra, replace=False)
                if extra <= n_units
                else rng.integers(0, n_units, extra)
            )
            sequence = np.concatenate([sequence, dup.astype(np.int32)])
            dup_examples = int(length[dup].sum())
        else:
            dup_examples = 0
        if extra < 0:  # batch homogeneity with leftover='drop': the last, incomplete round is left out
            dropped += int(length[sequence[extra:]].sum())
            sequence = sequence[:extra]
        return EpochPlan(
            epoch,
            order,
            start,
            length,
            group,
            sequence,
            repeats=self._static_repeats + dup_examples,
            dropped=dropped,
        )

    def _plan_sampled(self, epoch: int, rng: np.random.Generator) -> EpochPlan:
        U, R = self.unit_size, self._units_per_round
        n_units = self.steps_per_epoch * R
        G = len(self.group_names)
        seq_groups = rng.choice(G, size=n_units, p=self._weights).astype(np.int32)
        counts = np.bincount(seq_groups, minlength=G)
        region_start = np.concatenate([[0], np.cumsum(counts * U)[:-1]]).astype(np.int64)
        order = np.empty(int(counts.sum()) * U, dtype=self._members.dtype)
        repeats = 0
        for g in range(G):
            need = int(counts[g]) * U
            if not need:
                continue
            lo, n = int(self._offsets[g]), int(self.group_sizes[g])
            members = self._members[lo : lo + n]
            pos, end = int(region_start[g]), int(region_start[g]) + need
            while pos < end:  # the group's stream: one fresh permutation each time it is used up
                k = min(n, end - pos)
                buf = members.copy()
                rng.shuffle(buf)
                order[pos : pos + k] = buf[:k]
                pos += k
            repeats += max(0, need - n)
        # The j-th unit of group g in the sequence takes the j-th U-slice of g's region.
        pos_dtype = np.int32 if order.size < 2**31 else np.int64
        rank_in_group = np.empty(n_units, dtype=pos_dtype)
        by_group = np.argsort(seq_groups, kind="stable")
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(pos_dtype)
        rank_in_group[by_group] = np.arange(n_units, dtype=pos_dtype) - np.repeat(first, counts)
        del by_group
        start = region_start.astype(pos_dtype)[seq_groups] + rank_in_group * U
        length = np.full(n_units, U, dtype=np.int32)
        group = seq_groups
        return EpochPlan(
            epoch, order, start, length, group, np.arange(n_units, dtype=np.int32), repeats=repeats, dropped=0
        )

    def _randomise_units(self, plan: EpochPlan, rng: np.random.Generator) -> None:
        """``mode="random"`` or ``mix_ratio``: regroup the examples of some units at random, in place."""
        eligible = np.flatnonzero(plan.group != MIXED)
        if self.mode == "random":
            chosen = np.arange(plan.group.size)
        elif self.mix_ratio > 0:
            m = int(round(self.mix_ratio * eligible.size))
            chosen = np.sort(rng.choice(eligible, size=m, replace=False)) if m else eligible[:0]
        else:
            return
        if chosen.size == 0:
            return
        if chosen.size == plan.group.size and int(plan.length.sum()) == plan.order.size:
            rng.shuffle(plan.order)  # every unit: one global shuffle of the order array
        else:
            lens = plan.length[chosen]
            total = int(lens.sum())
            dt = np.int32 if plan.order.size < 2**31 else np.int64
            # Positions of the chosen units' examples, without a Python list of per-unit ranges.
            shift = (plan.start[chosen] - np.concatenate([[0], np.cumsum(lens)[:-1]])).astype(dt)
            where = np.repeat(shift, lens)
            for c0 in range(0, total, _CHUNK):  # += in chunks: no second full-size temporary
                where[c0 : c0 + _CHUNK] += np.arange(c0, min(total, c0 + _CHUNK), dtype=dt)
            pool = plan.order[where]
            rng.shuffle(pool)
            plan.order[where] = pool
        plan.group[chosen] = MIXED

    def _locate(self, plan: EpochPlan, rnd: int, slot: int) -> tuple[int, int, int]:
        """Unit and [lo, hi) in ``plan.order`` of slot ``slot`` (= rank·A + a) of round ``rnd``."""
        if self._units_per_round == 1:
            u = int(plan.sequence[rnd])
            L, P = int(plan.length[u]), self._parts
            base, extra = divmod(L, P)
            lo = int(plan.start[u]) + slot * base + min(slot, extra)
            return u, lo, lo + base + (1 if slot < extra else 0)
        u = int(plan.sequence[rnd * self._units_per_round + slot])
        lo = int(plan.start[u])
        return u, lo, lo + int(plan.length[u])

    def _micro_batch(self, plan: EpochPlan, k: int) -> list[int]:
        rnd, a = divmod(k, self.grad_accum_steps)
        _, lo, hi = self._locate(plan, rnd, self.rank * self.grad_accum_steps + a)
        return plan.order[lo:hi].tolist()

    def __repr__(self) -> str:
        return (
            f"CommonITBatchSampler(n={self.n_examples}, groups={len(self.group_names)}, "
            f"batch_size={self.batch_size}, world_size={self.world_size}, rank={self.rank}, "
            f"grad_accum_steps={self.grad_accum_steps}, order={self.order!r}, mode={self.mode!r}, "
            f"len={self._len})"
        )


# ---------------------------------------------------------------------- helpers


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}", fix=f"choose one of {', '.join(choices)}")


_CHUNK = 1 << 20  # elements per chunk when walking arrays of many millions (keeps temporaries small)


def _bincount(values: np.ndarray, minlength: int, offset: int = 0) -> np.ndarray:
    """``np.bincount(values - offset)`` in chunks: bincount copies its input to int64 first."""
    counts = np.zeros(minlength, dtype=np.int64)
    for c0 in range(0, values.size, _CHUNK):
        part = values[c0 : c0 + _CHUNK]
        counts += np.bincount(part - offset if offset else part, minlength=minlength)
    return counts


def _compact(codes: np.ndarray, n_labels: int) -> np.ndarray:
    for dt in (np.uint8, np.uint16, np.uint32):
        if n_labels <= np.iinfo(dt).max + 1:
            return codes.astype(dt, copy=False)
    return codes.astype(np.int64, copy=False)


def _encode_groups(group_ids: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Group labels -> (compact integer codes 0..G-1, the label of each code)."""
    if hasattr(group_ids, "detach") and hasattr(group_ids, "cpu"):  # a torch tensor
        group_ids = group_ids.detach().cpu().numpy()
    if isinstance(group_ids, np.ndarray) and group_ids.ndim != 1:
        raise DataError(f"group_ids must be one-dimensional, got shape {group_ids.shape}")
    n = len(group_ids)
    if n == 0:
        raise DataError("no examples: group_ids is empty", fix="give one group id per example")
    if isinstance(group_ids, np.ndarray) and np.issubdtype(group_ids.dtype, np.integer):
        lo, hi = int(group_ids.min()), int(group_ids.max())
        if hi - lo < max(1 << 20, 4 * n):  # dense labels: a lookup table beats sorting
            counts = _bincount(group_ids, hi - lo + 1, offset=lo)
            present = np.flatnonzero(counts)
            lut = _compact(np.zeros(hi - lo + 1, dtype=np.int64), present.size)
            lut[present] = np.arange(present.size)
            codes = np.empty(n, dtype=lut.dtype)
            for c0 in range(0, n, _CHUNK):
                part = group_ids[c0 : c0 + _CHUNK]
                codes[c0 : c0 + _CHUNK] = lut[part - lo if lo else part]
            return codes, [int(p + lo) for p in present]
        labels_arr, inverse = np.unique(group_ids, return_inverse=True)
        return _compact(inverse, labels_arr.size), [int(x) for x in labels_arr]
    values = group_ids.tolist() if isinstance(group_ids, np.ndarray) else list(group_ids)
    mapping: dict[Any, int] = {}
    raw = np.empty(n, dtype=np.int64)
    for i, g in enumerate(values):
        if g is None or (isinstance(g, float) and g != g):
            raise DataError(
                f"example {i} has no group id",
                where=f"group_ids[{i}]",
                fix="give every example a group (run `alignlab commonit group` first)",
            )
        try:
            raw[i] = mapping.setdefault(g, len(mapping))
        except TypeError:
            raise DataError(
                f"group id of example {i} is not hashable: {g!r}",
                where=f"group_ids[{i}]",
                fix="use strings or integers as group ids",
            ) from None
    # Sort labels so that the codes (and so the plans) do not depend on which label came first.
    labels = sorted(
        mapping,
        key=lambda x: (
            (type(x).__name__, x) if isinstance(x, (int, float, str)) else (type(x).__name__, str(x))
        ),
    )
    relabel = np.empty(len(labels), dtype=np.int64)
    for new, lab in enumerate(labels):
        relabel[mapping[lab]] = new
    return _compact(relabel[raw], len(labels)), labels


def _group_members(
    codes: np.ndarray, eff_of_code: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Example indices grouped by effective group (ascending within a group), and each group's offset.

    A chunked counting sort: peak extra memory is one chunk, not an int64 copy of the whole array.
    """
    n = codes.size
    idx_dtype = np.int32 if n < 2**31 else np.int64
    kept = int(sizes.sum())
    members = np.empty(kept, dtype=idx_dtype)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    fill = offsets.copy()
    G = sizes.size
    # Shift by one so that dropped examples (-1) sort first and can be cut off; small keys sort by radix.
    lut = _compact(eff_of_code + 1, G + 1)
    chunk = _CHUNK // 4  # about ten int64 temporaries per chunk
    for c0 in range(0, n, chunk):
        key = lut[codes[c0 : c0 + chunk]]
        idx = np.argsort(key, kind="stable")
        key_sorted = key[idx]
        cnt = np.bincount(key_sorted, minlength=G + 1)
        skip = int(cnt[0])
        cnt = cnt[1:]
        key_sorted = key_sorted[skip:].astype(np.int64) - 1
        idx = idx[skip:]
        first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        dest = fill[key_sorted] + (np.arange(idx.size) - first[key_sorted])
        members[dest] = idx + c0
        fill += cnt
    return members, offsets
