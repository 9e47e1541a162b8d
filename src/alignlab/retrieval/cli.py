"""``alignlab train``, ``alignlab eval retrieval`` and ``alignlab repro run|compare|diff``."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from alignlab.core.cliargs import add_device, add_out, add_overrides, add_overwrite, add_seed
from alignlab.core.config import (
    check_out_file,
    check_run_dir,
    clear_run_dir,
)
from alignlab.core.errors import AlignlabError, ConfigError
from alignlab.core.io import write_json
from alignlab.models.adapters import add_model_arguments, model_options


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="train an image–text retrieval model from a config",
        description="Train a dual or cross encoder (config: model, data, loss, train; the model a tiny "
        "one, pretrained-lit, hf:<id or folder> or open_clip:<arch>@<tag>), select "
        "the best epoch by the declared dev metric, and evaluate it on the test split. "
        "Re-running the same command resumes an interrupted run. Under `torchrun "
        "--nproc_per_node N -m alignlab train ...` it trains with DDP on N processes "
        "(train.batch_size is then the per-process batch; see docs/distributed.md).",
    )
    t.add_argument(
        "--config", type=Path, default=None, help="YAML run config (default: the built-in defaults)"
    )
    add_out(t, default=Path("runs/train"), help="run folder (default: runs/train)")
    add_seed(t, default=None, help="override the config's seed")
    add_overrides(t)
    t.add_argument(
        "--no-resume", action="store_true", help="start again even if the run folder has a checkpoint"
    )
    add_overwrite(t)
    t.add_argument(
        "--num-workers",
        type=int,
        default=None,
        metavar="N",
        help="DataLoader processes decoding training images from files, HF datasets or tar shards "
        "(sets data.num_workers; default 0: the main process)",
    )
    add_device(t, note="under torchrun each process uses GPU LOCAL_RANK")
    t.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths in data files that leave the data root (absolute or with '..')",
    )
    t.set_defaults(run=run_train)

    e = sub.add_parser(
        "eval",
        help="evaluate models (retrieval)",
        description="Evaluate a model; `alignlab eval retrieval --help` for the options.",
    )
    ev = e.add_subparsers(dest="verb", required=True, metavar="<verb>")
    r = ev.add_parser(
        "retrieval",
        help="exact image–text retrieval metrics of any model",
        description="Exact R@K (a hit if any relevant item is in the top K), median/mean rank and "
        "tie counts, both directions, for a dual or cross encoder.",
    )
    r.add_argument(
        "--model",
        required=True,
        help="tiny-dual | tiny-cross | ckpt:<dir> | hf:<hub id or dir> | open_clip:<arch>@<tag>",
    )
    r.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data: a folder with dataset.json, Karpathy/COCO .json, .csv or .jsonl "
        "(not needed for shapes-* protocols)",
    )
    r.add_argument(
        "--protocol",
        default=None,
        help="named protocol: f30k-1k, coco-5k, coco-1k-5fold, shapes-1k, shapes-5k (truth relevance), "
        "shapes-1k-source, shapes-5k-source (source labels), shapes-1k-disc, shapes-5k-disc "
        "(discriminative captions)",
    )
    r.add_argument(
        "--relevance",
        default=None,
        choices=["truth", "source"],
        help="relevance labels: truth (ShapesWorld: a caption is relevant to every image it is true "
        "of; the default there) or source (only the captions written for an image; the default "
        "for other data)",
    )
    r.add_argument("--split", default="test", help="Karpathy split when no protocol is given (default: test)")
    r.add_argument("--image-root", type=Path, default=None, help="folder the image paths are relative to")
    r.add_argument(
        "--image-size",
        type=int,
        default=224,
        metavar="PX",
        help="size tar shards and Hugging Face datasets are decoded at (default 224; each model "
        "then resizes to its own input)",
    )
    r.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths in --data that leave the image root (absolute or with '..')",
    )
    r.add_argument(
        "--ties",
        default="pessimistic",
        choices=["pessimistic", "optimistic", "index"],
        help="how a tie between a relevant and an irrelevant item counts (default: pessimistic)",
    )
    r.add_argument("--ks", default="1,5,10", help="cut-offs K of R@K (default: 1,5,10)")
    add_out(r, default=None, help="write results JSON here")
    add_seed(
        r,
        default=0,
        help="seed set before the model is built (decides an untrained tiny model's weights; default 0)",
    )
    add_model_arguments(r)  # --device, --allow-download, --fp16, --model-batch-size
    from alignlab.scale.cli import add_engine_args

    add_engine_args(r, rows_default=1024)  # dual encoders: the encoding runs sharded (docs/scale.md)
    r.set_defaults(run=run_eval)

    p = sub.add_parser(
        "repro",
        help="seed-aware reproducibility: run over seeds, compare, diff",
        description="Reproducibility tools after 'Where Does the Performance Improvement Come "
        "From?' (SIGIR 2022).",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="<verb>")
    rr = verbs.add_parser(
        "run",
        help="train and evaluate a config once per seed, and aggregate",
        description="Train and evaluate once per seed (each run resumable) and write every "
        "seed's results plus mean ± sd, min–max and 95% CI per metric.",
    )
    rr.add_argument("--config", type=Path, default=None, help="YAML run config (default: built-in defaults)")
    rr.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-4 or 0,3,7 (default: 0-4)")
    add_out(rr, default=Path("runs/repro"), help="output folder (default: runs/repro)")
    add_overrides(rr, help="override a config value (repeatable)")
    add_device(rr)
    add_overwrite(
        rr,
        help="rewrite the aggregate of a finished repro folder (seed runs of the same config and "
        "code are reused, not retrained)",
    )
    rr.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths in data files that leave the data root (absolute or with '..')",
    )
    rr.set_defaults(run=run_repro)
    rc = verbs.add_parser(
        "compare",
        help="compare two systems run with the same seeds (paired test over seeds)",
        description="B − A on RSUM, paired by training seed: exact sign-flip test over the "
        "paired seeds, TOST at --margin for equivalence, and a 95%% CI from a "
        "hierarchical bootstrap over seeds and test queries; the verdict is improves, "
        "hurts, equivalent within ±margin or inconclusive (alignlab.core.analysis).",
    )
    rc.add_argument("a", type=Path, help="system A: a `repro run` folder (or one run folder)")
    rc.add_argument("b", type=Path, help="system B: a `repro run` folder (or one run folder)")
    rc.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples")
    rc.add_argument(
        "--margin",
        type=float,
        default=5.0,
        help="smallest RSUM difference that matters; equivalence is tested at ±margin (default 5)",
    )
    add_seed(rc, default=0, help="seed of the resampling")
    rc.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rc.set_defaults(run=run_compare)
    rd = verbs.add_parser(
        "diff",
        help="what differs between two runs' settings and environment",
        description="List every config and manifest value that differs between two runs "
        "(results.json files or run folders).",
    )
    rd.add_argument("a", type=Path)
    rd.add_argument("b", type=Path)
    rd.set_defaults(run=run_diff)


def _run_config(path: Path | None, overrides: list[str], seed: int | None = None):
    from alignlab.core.config import command_config
    from alignlab.retrieval.training import load_run_config

    return command_config(load_run_config, path=path, overrides=overrides, flags={"seed": (seed, "--seed")})


def _device(name: str) -> str:
    from alignlab.models.base import resolve_device

    return str(resolve_device(name))


def run_train(args: argparse.Namespace) -> int:
    from alignlab.retrieval.training import run_retrieval
    from alignlab.train import distributed as ddp_

    workers = [f"data.num_workers={args.num_workers}"] if args.num_workers is not None else []
    cfg = _run_config(args.config, [*args.overrides, *workers], args.seed)
    device = _device(args.device)
    # Everything is checked before the run folder is touched; a finished run is replaced only on --overwrite.
    check_run_dir(args.out, overwrite=args.overwrite, config=cfg, resume=not args.no_resume)
    if args.overwrite and os.environ.get("RANK", "0") == "0":
        clear_run_dir(args.out)
    # torchrun sets WORLD_SIZE > 1: start the process group (nccl on CUDA, gloo on CPU); fit() then uses DDP.
    with ddp_.group_from_launcher(device):
        result = run_retrieval(cfg, args.out, resume=not args.no_resume, device=str(ddp_.device_for(device)))
        main = ddp_.is_main()
    if not main:  # rank 0 prints the summary
        return 0
    m = result["metrics"]
    print(
        f"best epoch {result['best'].get('epoch')} by dev {result['best'].get('metric')}; test "
        + ", ".join(f"{k}={m[k]:.2f}" for k in m if "R@" in k or k == "rsum")
    )
    print(f"results: {args.out / 'results.json'}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from alignlab.core.manifest import make_result
    from alignlab.data.pairs import load_pairs
    from alignlab.models.factory import load_model
    from alignlab.retrieval.evaluate import evaluate_model
    from alignlab.retrieval.protocols import get_protocol, with_relevance
    from alignlab.scale.cli import engine_name

    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise ConfigError(f"cannot read --ks {args.ks!r}", where="--ks", fix="write e.g. 1,5,10") from None
    if not ks or min(ks) < 1:
        raise ConfigError(
            f"every K of --ks must be >= 1, got {args.ks!r}", where="--ks", fix="write e.g. 1,5,10"
        )
    if args.out is not None:
        check_out_file(args.out)
    started = time.time()
    if args.protocol:
        try:
            proto = with_relevance(get_protocol(args.protocol), args.relevance)
        except AlignlabError as e:
            raise e.located(f"--protocol {args.protocol}") from None
        pairs = proto.load(args.data, args.image_root)
    elif args.data is None:
        raise ConfigError(
            "give --data or a --protocol", where="--data, --protocol", fix="e.g. --protocol shapes-1k"
        )
    else:
        from alignlab.data.loading import is_hf_folder, is_tar_source, open_image_text

        split = None if args.split == "all" else args.split
        if is_tar_source(args.data) or is_hf_folder(Path(args.data)):
            # webdataset tar shards or a saved Hugging Face dataset: no image files to point at, so the
            # split is decoded once (at --image-size) into memory, as evaluation holds every image anyway
            pairs = open_image_text(args.data, split).to_pairs(args.image_size)
        else:
            pairs = load_pairs(
                args.data,
                split,
                args.image_root,
                allow_outside_root=args.allow_outside_root,
                relevance=args.relevance or "auto",
            )
    kwargs = {k: v for k, v in model_options(args).items() if k != "device"}
    from alignlab.core.seed import set_seed

    set_seed(args.seed)
    device = _device(args.device)
    try:
        model = load_model(args.model, device=device, **kwargs)
    except AlignlabError as e:
        raise e.located(f"--model {args.model}") from None
    if engine_name(args) is not None:
        report = _evaluate_sharded(args, model, pairs, ks)
    else:
        report = evaluate_model(model, pairs, proto if args.protocol else None, ks=ks, ties=args.ties)
    print(_format_eval(report))
    if args.out:
        result = make_result(
            task="retrieval",
            model=args.model,
            data=pairs.name,
            seed=args.seed,
            metrics=report.metrics,
            definitions=report.definitions,
            config={
                "protocol": args.protocol,
                "ties": args.ties,
                "ks": list(ks),
                "data": str(args.data) if args.data else None,
            },
            started=started,
            device=args.device,
            report=report.to_dict(),
        )
        write_json(args.out, result)
        print(f"results: {args.out}")
    return 0


def _format_eval(report) -> str:
    """The same rounded metrics table for a --protocol run as for --data, then the protocol's ceilings."""
    from dataclasses import replace

    from alignlab.retrieval.protocols import ProtocolReport

    if not isinstance(report, ProtocolReport):
        return report.format()
    folds = f", mean over {len(report.folds)} folds" if len(report.folds) > 1 else ""
    table = replace(report.folds[0], metrics=report.metrics).format()
    ceilings = report.format().splitlines()[1:]  # its first line repeats the metrics
    return "\n".join([f"{report.protocol} ({report.relevance} labels{folds})", "", table, "", *ceilings])


def _evaluate_sharded(args: argparse.Namespace, model, pairs, ks: tuple[int, ...]):
    """Encode with the sharded engine (``--engine local|ray``), then the same exact metrics."""
    from alignlab.retrieval.metrics import evaluate_embeddings
    from alignlab.retrieval.protocols import evaluate_protocol
    from alignlab.retrieval.scale_job import EncodeJob, encode_sharded
    from alignlab.scale.cli import engine_options, shards_dir

    if not getattr(model, "is_dual", False):
        raise ConfigError(
            "--engine shards the encoding of a dual encoder; a cross encoder scores every pair",
            fix="drop --engine for a cross encoder",
        )
    if args.out is None and args.shards_dir is None:
        raise ConfigError(
            "--engine writes resumable shards and needs a place for them",
            fix="give --out (shards go next to it) or --shards-dir",
        )
    job = EncodeJob(
        args.model, pairs, seed=args.seed, device=_device(args.device), allow_download=args.allow_download
    )
    out = shards_dir(args, args.out) if args.out is not None else args.shards_dir
    img, txt, run = encode_sharded(job, out, engine_options(args), args.rows_per_shard)
    print(run.summary())
    if args.protocol:
        return evaluate_protocol(args.protocol, img, txt, pairs, ks=ks, ties=args.ties)
    return evaluate_embeddings(img, txt, pairs.relevance, ks=ks, ties=args.ties)


def _check_repro_out(out: Path, overwrite: bool) -> None:
    """A repro folder holds seed-N/ runs, aggregate.json and report.md. Before any training: a finished one
    (with its aggregate) is refused without --overwrite, and a folder holding anything else is refused."""
    from alignlab.core.config import check_run_dir

    if not out.is_dir():
        check_run_dir(out)  # a file, a folder inside a file, an unwritable place
        return
    own = {"aggregate.json", "report.md", "plots"}
    foreign = sorted(
        p.name for p in out.iterdir() if p.name not in own and not re.fullmatch(r"seed-\d+", p.name)
    )
    if foreign:
        raise ConfigError(
            f"--out holds files a repro run did not write ({', '.join(foreign[:3])})",
            where=str(out),
            fix="choose a new folder for the repro run",
        )
    if (out / "aggregate.json").exists() and not overwrite:
        raise ConfigError(
            "--out already holds a finished repro run, which is never changed",
            where=str(out),
            fix="choose a new folder, or pass --overwrite to rewrite its aggregate",
        )


def run_repro(args: argparse.Namespace) -> int:
    from alignlab.core.seed import parse_seeds
    from alignlab.retrieval.repro import format_aggregate, run_seeds

    cfg = _run_config(args.config, args.overrides)
    try:
        seeds = parse_seeds(args.seeds)
    except AlignlabError as e:
        raise e.located(f"--seeds {args.seeds}") from None
    _check_repro_out(args.out, args.overwrite)
    agg = run_seeds(cfg, seeds, args.out, device=_device(args.device))
    print(format_aggregate(agg, title=f"{cfg.model} over seeds {seeds}"))
    print(f"aggregate: {args.out / 'aggregate.json'}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    import math

    from alignlab.retrieval.repro import compare, format_compare

    if not (math.isfinite(args.margin) and args.margin > 0):
        raise ConfigError(
            f"the margin must be a positive number of RSUM points, got {args.margin}",
            where="--margin",
            fix="give the smallest difference that matters, e.g. --margin 5",
        )
    c = compare(args.a, args.b, n_resamples=args.resamples, seed=args.seed, margin=args.margin)
    print(json.dumps(c, indent=2) if args.json else format_compare(c))
    return 0


def run_diff(args: argparse.Namespace) -> int:
    from alignlab.retrieval.repro import diff_runs

    rows = diff_runs(args.a, args.b)
    if not rows:
        print("no differences in config or environment")
    for key, va, vb in rows:
        print(f"{key}: {json.dumps(va, ensure_ascii=False)} -> {json.dumps(vb, ensure_ascii=False)}")
    return 0
