"""Planning one epoch of CommonIT batches for 10M examples, beside transformers' LengthGroupedSampler.

Both samplers see the same N examples with the same lengths (CommonIT groups them into quantile bins of
length, LengthGroupedSampler sorts mega-batches by length). For each we measure, in this one process:

* the time to plan one epoch (CommonIT: ``set_epoch`` + first batch, which builds the whole epoch plan;
  LengthGroupedSampler: ``iter()``, which builds its whole index list);
* the peak memory of that planning: traced Python/NumPy allocations (tracemalloc) and the growth of the
  process's resident set (sampled every 2 ms from /proc, which also sees torch's allocations);
* for CommonIT also the one-off construction (grouping the indices) and a full pass over one rank's batches.

Run: ``.venv/bin/python benchmarks/bench_commonit_sampler.py`` (``--n 1000000`` for a quicker run).
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
import tracemalloc

import numpy as np


class PeakRSS:
    """Peak growth of the resident set size while the block runs (Linux /proc; 0 elsewhere)."""

    def __enter__(self):
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        except OSError:
            return 0

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.grew_mb = (self.peak - self.base) / 1e6


def measure(fn):
    """(result, wall s, CPU s of this process, traced peak MB, RSS growth MB)."""
    gc.collect()
    tracemalloc.start()
    with PeakRSS() as rss:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, dt, dc, peak / 1e6, rss.grew_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="examples (default 10M)")
    ap.add_argument("--batch-size", type=int, default=8, help="per-device batch (default 8)")
    ap.add_argument("--bins", type=int, default=16, help="CommonIT length bins (default 16)")
    ap.add_argument("--skip-hf", action="store_true", help="do not run LengthGroupedSampler")
    args = ap.parse_args()

    import torch

    from alignlab.commonit import CommonITBatchSampler
    from alignlab.commonit.grouping import quantile_bins

    torch.set_num_threads(1)
    n, b = args.n, args.batch_size
    rng = np.random.default_rng(0)
    lengths = np.minimum(2048, np.maximum(1, rng.lognormal(5.0, 1.0, n))).astype(np.int32)
    print(f"N = {n:,} examples, batch {b}, torch {torch.__version__}, numpy {np.__version__}")

    print(
        f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "(wall times stretch under load; CPU times do not)"
    )
    (gids, _), t_group, _, m_group, r_group = measure(lambda: quantile_bins(lengths, args.bins))
    gids = gids.astype(np.int32)
    print(f"grouping into {args.bins} length bins: {t_group:.3f} s, traced peak {m_group:.0f} MB")

    rows = []
    for label, kw in (
        ("CommonIT W=1 A=1", dict(world_size=1, grad_accum_steps=1)),
        ("CommonIT W=8 A=4", dict(world_size=8, grad_accum_steps=4)),
    ):
        sampler, t_ctor, c_ctor, m_ctor, r_ctor = measure(
            lambda kw=kw: CommonITBatchSampler(gids, b, seed=0, warn=False, **kw)
        )

        def plan(s=sampler):
            s.set_epoch(1)
            it = iter(s)
            return next(it)

        _, t_plan, c_plan, m_plan, r_plan = measure(plan)
        t0 = time.perf_counter()
        n_batches = sum(1 for _ in sampler)
        t_pass = time.perf_counter() - t0
        rows.append((label, t_plan, c_plan, m_plan, r_plan))
        print(
            f"{label}: construct {t_ctor:.3f} s wall / {c_ctor:.3f} s CPU (traced {m_ctor:.0f} MB, RSS "
            f"+{r_ctor:.0f} MB); plan one epoch {t_plan:.3f} s wall / {c_plan:.3f} s CPU (traced "
            f"{m_plan:.0f} MB, RSS +{r_plan:.0f} MB); "
            f"full pass over rank 0's {n_batches:,} micro-batches {t_pass:.2f} s"
        )
        del sampler

    if not args.skip_hf:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        as_list = lengths.tolist()  # LengthGroupedSampler wants a Python list (a tensor is converted)
        lgs = LengthGroupedSampler(b, lengths=as_list, generator=torch.Generator().manual_seed(0))
        it, t_lgs, c_lgs, m_lgs, r_lgs = measure(lambda: iter(lgs))
        t0 = time.perf_counter()
        n_idx = sum(1 for _ in it)
        t_lgs_pass = time.perf_counter() - t0
        print(
            f"LengthGroupedSampler: plan one epoch {t_lgs:.3f} s wall / {c_lgs:.3f} s CPU (traced "
            f"{m_lgs:.0f} MB, RSS +{r_lgs:.0f} MB); "
            f"full pass over its {n_idx:,} indices {t_lgs_pass:.2f} s"
        )
        print()
        print(
            "| sampler | plan one epoch: wall s | CPU s | traced peak MB | RSS growth MB | "
            "LGS/this (CPU time) | LGS/this (memory) |"
        )
        print("|---|---|---|---|---|---|---|")
        for label, t, c, m, r in rows:
            print(
                f"| {label} | {t:.3f} | {c:.3f} | {m:.0f} | {r:.0f} | {c_lgs / c:.1f}x | "
                f"{max(m_lgs, r_lgs) / max(m, r, 1e-9):.1f}x |"
            )
        print(
            f"| LengthGroupedSampler | {t_lgs:.3f} | {c_lgs:.3f} | {m_lgs:.0f} | {r_lgs:.0f} | 1.0x | 1.0x |"
        )
    ok = all(c < 1.0 and max(m, r) < 100 for _, _, c, m, r in rows)
    print(
        f"\ntarget (plan < 1 s of CPU and < 100 MB): {'met' if ok else 'NOT met'}; "
        f"load average after: {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
