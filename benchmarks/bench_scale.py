"""Ambiguity scoring (gloss WSD) on Ray Data with 1 and 2 workers, beside the single process.

All three score the same N captions with the same settings (``ambiguity score`` defaults: gloss WSD with
all-MiniLM-L6-v2, nouns, entropy) and one thread per worker:

* **single process** — the plain path (``_score_file``), torch limited to one thread; first a warm-up run
  that also fills the sense-vector disk cache, so every measured run is warm;
* **Ray, 1 worker / 2 workers** — ``--engine ray`` through :func:`alignlab.scale.run_job` on a local Ray
  started with that many CPUs, shards of ``--rows-per-shard`` captions.

Reported: Ray's start-up (``ray.init``), each run's wall time and end-to-end rows/s (model loading
included), the steady rows/s of one worker (rows / time spent inside shards, from the manifest), the
ratios to the single process, and how far the outputs are from the single process's (the stated
tolerance of :mod:`alignlab.ambiguity.scale_job`). The load average of the (shared)
machine is printed before and after: on a busy machine the ratios are the figures to trust.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py --n 1024`` (``--json out.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "3am" / "train.en"


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def single_process(src: Path, wsd_cfg, sel_cfg) -> dict:
    import torch

    from alignlab.ambiguity import wsd as wsd_mod
    from alignlab.ambiguity.cli import _score_file, write_scores
    from alignlab.ambiguity.wordnet import get_wordnet

    torch.set_num_threads(1)
    t0 = time.time()
    get_wordnet()
    wsd_mod.load_encoder(wsd_cfg.encoder, wsd_cfg.batch_size)
    load_s = time.time() - t0
    t1 = time.time()
    scores = _score_file(src, wsd_cfg, sel_cfg)
    score_s = time.time() - t1
    out = src.with_suffix(".plain.jsonl")
    write_scores(out, scores)
    return {
        "rows": len(scores),
        "load_s": round(load_s, 2),
        "score_s": round(score_s, 2),
        "wall_s": round(load_s + score_s, 2),
        "rows_per_s": round(len(scores) / score_s, 1),
        "end_to_end_rows_per_s": round(len(scores) / (load_s + score_s), 1),
        "out": str(out),
    }


def on_ray(src: Path, wsd_cfg, sel_cfg, workers: int, rows_per_shard: int, work: Path) -> dict:
    import ray

    from alignlab.ambiguity.scale_job import score_sharded
    from alignlab.scale import EngineOptions, load_manifest

    t0 = time.time()
    ray.init(
        address="local",
        num_cpus=workers,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
    )
    startup_s = time.time() - t0
    ray.data.DataContext.get_current().enable_progress_bars = False
    shards = work / f"ray-{workers}"
    try:
        t1 = time.time()
        _, lines, report = score_sharded(
            src,
            shards,
            wsd_cfg,
            sel_cfg,
            EngineOptions(engine="ray", workers=workers, quiet=True),
            rows_per_shard,
        )
        wall = time.time() - t1
    finally:
        ray.shutdown()
    done = load_manifest(shards)["done"]
    in_shards = sum(d["seconds"] for d in done.values())
    out = src.with_suffix(f".ray{workers}.jsonl")
    out.write_text("".join(line + "\n" for line in lines))
    return {
        "workers": workers,
        "rows": report.rows,
        "startup_s": round(startup_s, 2),
        "wall_s": round(wall, 2),
        "end_to_end_rows_per_s": round(report.rows / wall, 1),
        "per_worker_rows_per_s": round(report.rows / in_shards, 1),
        "retries": report.retries,
        "out": str(out),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", type=Path, default=DEFAULT_CAPTIONS, help="one caption per line")
    ap.add_argument("--n", type=int, default=1024, help="captions to score (the first N lines)")
    ap.add_argument("--rows-per-shard", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from alignlab.ambiguity.select import SelectConfig
    from alignlab.ambiguity.wsd import WSDConfig
    from alignlab.core.progress import set_quiet

    set_quiet(True)
    if not args.captions.is_file():
        print(f"captions not found: {args.captions} (give --captions)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    src = work / "captions.en"
    with open(args.captions, encoding="utf-8") as f:
        src.write_text("".join(next(f) for _ in range(args.n)), encoding="utf-8")
    wsd_cfg, sel_cfg = WSDConfig(), SelectConfig()
    result: dict = {
        "captions": args.n,
        "rows_per_shard": args.rows_per_shard,
        "cpus": os.cpu_count(),
        "loadavg_before": loadavg(),
    }
    warm = single_process(
        src, wsd_cfg, sel_cfg
    )  # warm-up: loads the models, fills the sense-vector disk cache
    result["single"] = single_process(src, wsd_cfg, sel_cfg)
    s = result["single"]
    s["load_s"] = warm["load_s"]  # WordNet + encoder, loaded once per process (measured by the warm-up)
    s["wall_s"] = round(s["load_s"] + s["score_s"], 2)
    s["end_to_end_rows_per_s"] = round(s["rows"] / s["wall_s"], 1)
    result["ray1"] = on_ray(src, wsd_cfg, sel_cfg, 1, args.rows_per_shard, work)
    result["ray2"] = on_ray(src, wsd_cfg, sel_cfg, 2, args.rows_per_shard, work)
    result["loadavg_after"] = loadavg()
    from alignlab.ambiguity.scale_job import TOLERANCE, compare_records

    plain = Path(s["out"]).read_text().splitlines()
    for k in ("ray1", "ray2"):
        worst, other = compare_records(plain, Path(result[k]["out"]).read_text().splitlines())
        result[k].update(max_float_diff=worst, other_fields_differing=other)
    print(
        f"{args.n} captions, shards of {args.rows_per_shard}; load average before "
        f"{result['loadavg_before']}, after {result['loadavg_after']} ({result['cpus']} CPUs)"
    )
    from alignlab.core.tables import markdown_table

    rows = [
        [
            "single process, 1 thread",
            f"0 (models {s['load_s']})",
            s["wall_s"],
            s["end_to_end_rows_per_s"],
            s["rows_per_s"],
            "1.00",
        ]
    ]
    rows += [
        [
            f"Ray, {r['workers']} worker(s)",
            r["startup_s"],
            r["wall_s"],
            r["end_to_end_rows_per_s"],
            r["per_worker_rows_per_s"],
            f"{r['end_to_end_rows_per_s'] / s['end_to_end_rows_per_s']:.2f}",
        ]
        for r in (result["ray1"], result["ray2"])
    ]
    print(
        markdown_table(
            [
                "run",
                "start-up s",
                "wall s",
                "rows/s end to end",
                "rows/s per worker (steady)",
                "vs single (end to end)",
            ],
            rows,
        )
    )
    print(
        f"Ray 2 workers vs 1 worker (end to end): "
        f"{result['ray2']['end_to_end_rows_per_s'] / result['ray1']['end_to_end_rows_per_s']:.2f}x"
    )
    for k in ("ray1", "ray2"):
        r = result[k]
        print(
            f"{k} vs single process: largest float difference {r['max_float_diff']:.1e} (tolerance "
            f"{TOLERANCE:.0e}), other fields differing: {r['other_fields_differing']}, retries: "
            f"{r['retries']}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
