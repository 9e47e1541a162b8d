"""Reading training images at Flickr30K-like size: decode-on-demand DataLoader vs load-everything.

Flickr30K's Karpathy train split has 29,000 JPEG photos of about 500 x 375 pixels; a CLIP-style model
at 384 px needs each as ``uint8 [3, 384, 384]`` (442,368 bytes). Generating 29,000 files here would
take minutes and gigabytes, so the benchmark writes ``--images`` JPEG files of that size (smooth random
scenes that compress like photos, ~40-90 KB each) and measures, each mode in a fresh process:

* ``everything`` — what training did before: ``load_pairs(...).materialize(384)``, every image of the
  split decoded into one array in RAM (run at N and N/2 to show memory grows with the split; the
  per-image cost is extrapolated to 29,000 images);
* ``workers=0|1|2`` — :class:`alignlab.data.loading.ImageBatchLoader` over the same files: one pass
  (an epoch) in the batches training uses, decoding in the main process or in 1 or 2 worker processes.

It reports wall-clock images/s, CPU time per image (of the main process, i.e. the one that trains, and
of all processes; unlike wall time it does not depend on other load), and peak memory above the level
after imports: the main process's RSS, and the
proportional set size (PSS) of main + workers together, which counts pages that forked workers share
with the parent once.

    python benchmarks/bench_loading.py [--images 768] [--size 384] [--batch 32] [--out /tmp/bench_loading]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("ALIGNLAB_QUIET", "1")
FLICKR30K_TRAIN = 29_000


def make_images(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEG files of 500 x 375 (smooth colour fields plus shapes) and a CSV listing them."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "pairs.csv"
    if csv.is_file() and len(csv.read_text().splitlines()) == n + 1:
        return csv
    rng = np.random.default_rng(seed)
    rows = ["image,caption"]
    for i in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = int(rng.integers(0, 450)), int(rng.integers(0, 325))
            w, h = int(rng.integers(20, 200)), int(rng.integers(20, 200))
            draw.ellipse((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        noise = rng.normal(0, 6, (375, 500, 3))
        arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:06d}.jpg", quality=90)
        rows.append(f"{i:06d}.jpg,picture number {i}")
    csv.write_text("\n".join(rows) + "\n")
    return csv


class PeakRss:
    """Samples memory every 20 ms (psutil): this process's RSS, and the PSS of it and its worker children
    (PSS splits pages shared after fork between the processes, so the sum is the real total)."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.base_total = self.proc.memory_full_info().pss
        self.peak_self = self.base
        self.peak_total = self.base_total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                own = self.proc.memory_info().rss
                total = self.proc.memory_full_info().pss + sum(
                    c.memory_full_info().pss for c in self.proc.children(recursive=True)
                )
            except psutil.Error:
                continue
            self.peak_self = max(self.peak_self, own)
            self.peak_total = max(self.peak_total, total)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(mode: str, csv: Path, n: int, size: int, batch: int) -> dict:
    """One mode in this process: seconds, images/s and peak memory in MB."""
    import gc
    import resource

    import numpy as np
    import torch

    from alignlab.data.loading import ImageBatchLoader, streaming
    from alignlab.data.pairs import load_pairs

    torch.set_num_threads(1)
    pairs = load_pairs(csv, image_root=csv.parent).subset(range(n))
    mb = 1024 * 1024

    def cpu(who: int) -> float:
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    with PeakRss() as mem:
        t = time.perf_counter()
        cpu_main, cpu_kids = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
        if mode == "everything":
            held = pairs.materialize(size)
            checksum = int(held.image_array[:, ::97, ::97].sum())
        else:
            workers = int(mode.split("=")[1])
            perm = np.random.default_rng(0).permutation(n)
            n_batches = n // batch
            loader = ImageBatchLoader(
                streaming(pairs).images,
                size,
                lambda epoch, b: perm[b * batch : (b + 1) * batch],
                lambda epoch: n_batches,
                num_workers=workers,
            )
            checksum = 0
            for b in range(n_batches):
                checksum += int(loader.get(0, b)[:, :, ::97, ::97].sum())
            n = n_batches * batch
            loader.close()
            gc.collect()  # the workers exit and are waited for, so their CPU time is counted
        seconds = time.perf_counter() - t
        cpu_main = cpu(resource.RUSAGE_SELF) - cpu_main  # includes the memory sampler's share
        cpu_kids = cpu(resource.RUSAGE_CHILDREN) - cpu_kids
    return {
        "mode": mode,
        "images": n,
        "seconds": round(seconds, 2),
        "images_s": round(n / seconds, 1),
        "main_cpu_ms": round(1000 * cpu_main / n, 1),
        "total_cpu_ms": round(1000 * (cpu_main + cpu_kids) / n, 1),
        "peak_main_mb": round((mem.peak_self - mem.base) / mb, 1),
        "peak_with_workers_mb": round((mem.peak_total - mem.base_total) / mb, 1),
        "checksum": checksum,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=768, help="JPEG files to generate (default 768)")
    ap.add_argument("--size", type=int, default=384, help="model input size in pixels (default 384)")
    ap.add_argument("--batch", type=int, default=32, help="training batch size (default 32)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_loading"), help="folder for the JPEG files")
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)  # one measurement, in a child process
    ap.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    csv = args.out / "pairs.csv"
    if args.mode:
        print(json.dumps(measure(args.mode, csv, args.n, args.size, args.batch)))
        return
    t = time.perf_counter()
    make_images(args.out, args.images)
    kb = sum(p.stat().st_size for p in args.out.glob("*.jpg")) / args.images / 1024
    print(
        f"{args.images} JPEG files of 500x375, {kb:.0f} KB each on average ({time.perf_counter() - t:.0f} s "
        f"to write or reuse); model input {args.size}x{args.size}, batch {args.batch}; uptime: "
        f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}"
    )
    runs = [
        ("everything", args.images // 2),
        ("everything", args.images),
        ("workers=0", args.images),
        ("workers=1", args.images),
        ("workers=2", args.images),
    ]
    results = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for mode, n in runs:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--n",
                str(n),
                "--size",
                str(args.size),
                "--batch",
                str(args.batch),
                "--out",
                str(args.out),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        "| mode | images | s | images/s | CPU ms/image, main | CPU ms/image, all | peak RSS main (MB) | "
        "peak PSS main + workers (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['mode']} | {r['images']} | {r['seconds']} | {r['images_s']} | {r['main_cpu_ms']} | "
            f"{r['total_cpu_ms']} | {r['peak_main_mb']} | {r['peak_with_workers_mb']} |"
        )
    half, full = results[0], results[1]
    # The slope between N/2 and N images (both past materialize()'s first 256-image chunk) is the cost of
    # one more image; the array that training then holds is size x size x 3 bytes per image.
    per_image = (full["peak_main_mb"] - half["peak_main_mb"]) / (full["images"] - half["images"])
    array_mb = args.size * args.size * 3 / 1024 / 1024
    print(
        f"load-everything: {per_image * 1024:.0f} KB more peak memory per image (the array kept for "
        f"training: {array_mb * 1024:.0f} KB); for {FLICKR30K_TRAIN:,} images: peak "
        f"{per_image * FLICKR30K_TRAIN / 1024:.1f} GB, held {array_mb * FLICKR30K_TRAIN / 1024:.1f} GB"
    )
    streamed = [r for r in results if r["mode"].startswith("workers")]
    print(
        "streaming: peak memory independent of the split size (batch x prefetch); "
        + ", ".join(f"{r['mode']} {r['peak_with_workers_mb']} MB" for r in streamed)
    )
    if len({r["checksum"] for r in streamed}) != 1:
        raise SystemExit("the loaders returned different images")


if __name__ == "__main__":
    main()
