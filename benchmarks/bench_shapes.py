"""ShapesWorld speed on one CPU core: rendering alone vs. full examples vs. PNG export.

Run:  .venv/bin/python benchmarks/bench_shapes.py [--n 2000] [--size 64] [--repeats 3]

Four jobs run side by side in one process on the same scenes, each timed as the best of ``--repeats``:

* ``render``        — draw pre-sampled scene graphs with Pillow into ``uint8`` arrays (the target:
                      >= 1,000 images/s at 64x64 on one core);
* ``example``       — what ``ShapesWorld.example`` does per image: sample the scene, make and translate
                      its captions, render it;
* ``png-encode``    — encode rendered images as PNG bytes in memory (no file system);
* ``png-files``     — the same PNGs saved straight to files with ``Image.save`` (no temp file, no fsync):
                      the alternative to an atomic export;
* ``export``        — ``save_karpathy``: one PNG file per image (written atomically: temp file, fsync,
                      rename) plus ``dataset.json``, as ``alignlab data shapes`` does.

Each job reports images per second of wall time and of this process's CPU time (the steadier figure on
a shared machine), and its ratio to ``render``. Threads are pinned to one (torch, NumPy's BLAS) before
imports.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("ALIGNLAB_QUIET", "1")

import argparse  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from alignlab.data.pairs import from_shapes, save_karpathy  # noqa: E402
from alignlab.data.shapes import ShapesConfig, ShapesWorld, render_array, sample_scene  # noqa: E402


def best_of(fn, repeats: int) -> tuple[float, float]:
    """Smallest wall time and smallest CPU time of this process over ``repeats`` calls.

    On a shared machine the wall time includes waiting for a core; the CPU time does not, so it is the
    steadier measure of one core's throughput. Only wall time counts waiting for the disk (fsync).
    """
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="images per job (default 2000)")
    ap.add_argument("--size", type=int, default=64, help="image width and height (default 64)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed repeats per job; the best counts (default 3)"
    )
    ap.add_argument("--polysemous-rate", type=float, default=0.2, help="as in ShapesConfig (default 0.2)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    cfg = ShapesConfig(image_size=args.size, polysemous_rate=args.polysemous_rate)
    world = ShapesWorld(cfg)
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, cfg) for _ in range(args.n)]
    examples = world.generate(args.n, seed=0, split="train")
    pairs = {"train": from_shapes(examples)}
    arrays = [ex.image for ex in examples]

    def render():
        for s in scenes:
            render_array(s, args.size, cfg.background)

    def example():
        for i in range(args.n):
            world.example(0, "train", i)

    def png_encode():
        for a in arrays:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")

    tmp = Path(tempfile.mkdtemp(prefix="bench_shapes_"))

    def png_files():
        out = tmp / "plain"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(out / f"{i}.png", format="PNG")

    def export():
        out = tmp / "export"
        shutil.rmtree(out, ignore_errors=True)
        save_karpathy(out, pairs, dataset="bench")

    jobs = {
        "render": render,
        "example": example,
        "png-encode": png_encode,
        "png-files": png_files,
        "export": export,
    }
    try:
        seconds = {name: best_of(fn, args.repeats) for name, fn in jobs.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"ShapesWorld benchmark: {args.n} images of {args.size}x{args.size}, best of {args.repeats}, "
        f"torch threads {torch.get_num_threads()}, Python {platform.python_version()}, Pillow "
        f"{PIL.__version__}, {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f}"
    )
    base_cpu = args.n / seconds["render"][1]
    print(f"{'job':<11} {'img/s wall':>11} {'img/s CPU':>10} {'ms/img CPU':>11} {'vs render (CPU)':>16}")
    for name, (wall, cpu) in seconds.items():
        rate_cpu = args.n / cpu
        print(
            f"{name:<11} {args.n / wall:>11,.0f} {rate_cpu:>10,.0f} {1000 * cpu / args.n:>11.3f} "
            f"{rate_cpu / base_cpu:>15.3f}x"
        )
    base_wall = args.n / seconds["render"][0]
    verdict = "met" if min(base_cpu, base_wall) >= 1000 else "NOT met"
    print(
        f"target >= 1,000 rendered images/s at 64x64 on one core: {verdict} "
        f"({base_wall:,.0f}/s wall, {base_cpu:,.0f}/s CPU at {args.size}x{args.size})"
    )
    print(
        f"atomic export vs plain PNG files, wall time: "
        f"{seconds['export'][0] / seconds['png-files'][0]:.1f}x (temp file + fsync + rename per image)"
    )


if __name__ == "__main__":
    main()
