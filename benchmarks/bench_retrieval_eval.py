"""Exact retrieval evaluation vs the bare similarity matmul and vs the common full-sort way.

Run (defaults are the issue's setting: 5,000 images x 25,000 captions, D = 512, 2 threads)::

    .venv/bin/python benchmarks/bench_retrieval_eval.py
    .venv/bin/python benchmarks/bench_retrieval_eval.py --images 500 --repeats 1   # quick smoke run

Methods, all on the same embeddings (captions = their image's embedding + noise, L2-normalised; caption
ids shuffled so nothing relies on "caption // 5"):

* ``matmul``: the bare similarity matrix ``A @ B.T`` (what any evaluation must at least compute).
* ``blocks``: the same product in our row blocks, with nothing else (how much of our time is the matmul).
* ``ours``: ``evaluate_embeddings`` (ties="index" to match a stable sort, and the default "pessimistic").
* ``common``: the usual vectorised code: materialise ``S = A @ B.T``, a one-hot relevance tensor
  ``R [N, M]``, stable ``argsort`` of every row (i2t) and every column (t2i), gather ``R`` in that order
  and take the first hit. Its ranks must equal ours exactly (asserted).

Timing: all methods in this one process, interleaved, ``--repeats`` times; the minimum and median are
printed. Peak memory: tracemalloc cannot see torch's allocations, so each method runs once more in a
fresh subprocess that builds the same inputs, resets the kernel's high-water mark (writing 5 to
``/proc/self/clear_refs``), runs the method, and reports ``VmHWM`` (peak resident set) minus the
``VmRSS`` just before: the extra memory the method itself needed at its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from alignlab.retrieval import evaluate_embeddings
from alignlab.retrieval.metrics import DEFAULT_BLOCK_ENTRIES

METHODS = ("matmul", "blocks", "ours", "ours_pessimistic", "common")


def make_inputs(
    n_images: int, per_image: int, dim: int, seed: int, noise: float
) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=g), dim=1)
    m = n_images * per_image
    owner = torch.arange(m) // per_image
    perm = torch.randperm(m, generator=g)  # caption id of the k-th caption of image owner[k]
    txt = torch.empty(m, dim)
    for a in range(0, m, 8192):  # in slices: keep the input-making peak small
        b = min(a + 8192, m)
        txt[perm[a:b]] = torch.nn.functional.normalize(
            img[owner[a:b]] + noise / dim**0.5 * torch.randn(b - a, dim, generator=g), dim=1
        )
    relevance: list[list[int]] = [[] for _ in range(n_images)]
    for k, c in enumerate(perm.tolist()):
        relevance[k // per_image].append(c)
    return img, txt, relevance


def common_way(
    img: torch.Tensor, txt: torch.Tensor, relevance: list[list[int]]
) -> tuple[np.ndarray, np.ndarray]:
    n, m = len(img), len(txt)
    scores = img @ txt.T
    onehot = torch.zeros(n, m, dtype=torch.bool)
    rows = torch.repeat_interleave(torch.arange(n), torch.tensor([len(r) for r in relevance]))
    onehot[rows, torch.tensor([c for r in relevance for c in r])] = True
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    i2t = torch.gather(onehot, 1, order).to(torch.uint8).argmax(1) + 1  # first relevant position
    del order
    order = torch.argsort(scores.T, dim=1, descending=True, stable=True)
    t2i = torch.gather(onehot.T, 1, order).to(torch.uint8).argmax(1) + 1
    return i2t.numpy(), t2i.numpy()


def blocks_only(img: torch.Tensor, txt: torch.Tensor) -> None:
    rows = max(1, DEFAULT_BLOCK_ENTRIES // len(txt))
    for a in range(0, len(img), rows):
        img[a : a + rows] @ txt.T


def run(method: str, img, txt, relevance):
    if method == "matmul":
        return img @ txt.T
    if method == "blocks":
        return blocks_only(img, txt)
    if method == "ours":
        return evaluate_embeddings(img, txt, relevance, ties="index")
    if method == "ours_pessimistic":
        return evaluate_embeddings(img, txt, relevance, ties="pessimistic")
    if method == "common":
        return common_way(img, txt, relevance)
    raise ValueError(method)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(method: str, args: argparse.Namespace) -> None:
    """Child process: peak extra resident memory of one run of ``method``, printed as JSON."""
    img, txt, relevance = make_inputs(args.images, args.per_image, args.dim, args.seed, args.noise)
    run("blocks", img[:8], txt[:64], relevance)  # load the BLAS kernels outside the measurement
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    result = run(method, img, txt, relevance)
    peak = _status_kb("VmHWM")
    del result
    print(
        json.dumps(
            {"method": method, "peak_extra_mb": (peak - before) / 1024, "rss_before_mb": before / 1024}
        )
    )


def _memory_all(args: argparse.Namespace) -> dict[str, float]:
    memory = {}
    for method in METHODS:
        cmd = [
            sys.executable,
            __file__,
            "--memory-of",
            method,
            "--images",
            str(args.images),
            "--per-image",
            str(args.per_image),
            "--dim",
            str(args.dim),
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
            "--noise",
            str(args.noise),
        ]
        # Every allocation of 128 KB or more gets its own mapping, returned to the kernel when freed: without
        # this, glibc reuses freed heap memory (up to 32 MB blocks) and a method's peak can hide in it.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        memory[method] = json.loads(done.stdout.strip().splitlines()[-1])["peak_extra_mb"]
    return memory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--per-image", type=int, default=5, help="captions per image")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (at most 2 on the shared machine)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--noise",
        type=float,
        default=7.0,
        help="caption = image embedding + noise * N(0, I/D), then normalised",
    )
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory measurements")
    ap.add_argument("--memory-of", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(args.threads, 2)))
    if args.memory_of:
        measure_memory(args.memory_of, args)
        return

    if args.memory_only:
        memory = _memory_all(args)
        for m in METHODS:
            print(f"{m:<18}{memory[m]:>10.1f} MB")
        print(f"common / ours (peak memory, goal >= 10): {memory['common'] / max(memory['ours'], 1e-9):.2f}")
        print(
            "common / ours_pessimistic (peak memory): "
            f"{memory['common'] / max(memory['ours_pessimistic'], 1e-9):.2f}"
        )
        return
    img, txt, relevance = make_inputs(args.images, args.per_image, args.dim, args.seed, args.noise)
    load_start = os.getloadavg()[0]
    print(
        f"{args.images} images x {len(txt)} captions, D={args.dim}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}, "
        f"load average {load_start:.1f} on {os.cpu_count()} cores"
    )
    full = img @ txt.T
    same_bits = all(torch.equal(img[a : a + 97] @ txt.T, full[a : a + 97]) for a in range(0, args.images, 97))
    del full
    print(f"row blocks of the matmul have the same bits as the full product: {same_bits}")

    times: dict[str, list[float]] = {m: [] for m in METHODS}
    results = {}
    for r in range(args.repeats):
        for method in METHODS:
            t0 = time.perf_counter()
            out = run(method, img, txt, relevance)
            times[method].append(time.perf_counter() - t0)
            if r == 0 and method in ("ours", "ours_pessimistic", "common"):
                results[method] = out
            del out
    ours, common = results["ours"], results["common"]
    assert np.array_equal(ours.i2t_ranks, common[0]), "i2t ranks differ from the full sort"
    assert np.array_equal(ours.t2i_ranks, common[1]), "t2i ranks differ from the full sort"
    print(
        "identical per-query ranks (ours, ties='index') and full stable sort: yes "
        f"(i2t R@1 {ours.metrics['i2t_R@1']:.2f}, t2i R@1 {ours.metrics['t2i_R@1']:.2f}, "
        f"rsum {ours.metrics['rsum']:.2f}; t2i {ours.t2i_method}; "
        f"tied queries i2t {ours.ties['i2t_tied_queries']}, t2i {ours.ties['t2i_tied_queries']})"
    )

    memory = _memory_all(args)

    best = {m: min(v) for m, v in times.items()}
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"\n{'method':<18}{'min s':>9}{'median s':>10}{'peak extra MB':>15}")
    for m in METHODS:
        print(f"{m:<18}{best[m]:>9.3f}{med[m]:>10.3f}{memory[m]:>15.1f}")
    ratios = {
        "ours / matmul (time, goal <= 1.3)": best["ours"] / best["matmul"],
        "ours_pessimistic / matmul (time)": best["ours_pessimistic"] / best["matmul"],
        "ours / blocks (time: cost beyond the blocked matmul)": best["ours"] / best["blocks"],
        "common / ours (time, goal >= 5)": best["common"] / best["ours"],
        "common / ours (peak memory, goal >= 10)": memory["common"] / max(memory["ours"], 1e-9),
    }
    print()
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    goals = {
        "time vs matmul": ratios["ours / matmul (time, goal <= 1.3)"] <= 1.3,
        "speed vs common": ratios["common / ours (time, goal >= 5)"] >= 5,
        "memory vs common": ratios["common / ours (peak memory, goal >= 10)"] >= 10,
    }
    load_end = os.getloadavg()[0]
    print(f"load average at the end: {load_end:.1f}")
    print("goals: " + ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in goals.items()))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "times_s": times,
                    "peak_extra_mb": memory,
                    "ratios": ratios,
                    "goals": goals,
                    "same_bits": same_bits,
                    "metrics": ours.metrics,
                    "load_average": [load_start, load_end],
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
