"""``alignlab train``, ``alignlab eval retrieval`` and ``alignlab repro run|compare|diff``."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from alignlab.core.config import load_yaml, merge, parse_overrides
from alignlab.core.errors import ConfigError
from alignlab.core.io import write_json, write_text


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train an image–text retrieval model from a config",
                       description="Train a tiny dual or cross encoder (config: model, data, loss, train), select "
                                   "the best epoch by the declared dev metric, and evaluate it on the test split. "
                                   "Re-running the same command resumes an interrupted run. Under `torchrun "
                                   "--nproc_per_node N -m alignlab train ...` it trains with DDP on N processes "
                                   "(train.batch_size is then the per-process batch; see docs/distributed.md).")
    t.add_argument("--config", type=Path, default=None, help="YAML run config (default: the built-in defaults)")
    t.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder (default: runs/train)")
    t.add_argument("--seed", type=int, default=None, help="override the config's seed")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    t.add_argument("--no-resume", action="store_true", help="start again even if the run folder has a checkpoint")
    t.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu); under torchrun each "
                                                   "process uses GPU LOCAL_RANK")
    t.set_defaults(run=run_train)

    e = sub.add_parser("eval", help="evaluate models (retrieval)",
                       description="Evaluate a model; `alignlab eval retrieval --help` for the options.")
    ev = e.add_subparsers(dest="verb", required=True, metavar="<verb>")
    r = ev.add_parser("retrieval", help="exact image–text retrieval metrics of any model",
                      description="Exact R@K (a hit if any relevant item is in the top K), median/mean rank and "
                                  "tie counts, both directions, for a dual or cross encoder.")
    r.add_argument("--model", required=True,
                   help="tiny-dual | tiny-cross | ckpt:<dir> | hf:<hub id or dir> | open_clip:<arch>@<tag>")
    r.add_argument("--data", type=Path, default=None,
                   help="data: a folder with dataset.json, Karpathy/COCO .json, .csv or .jsonl "
                        "(not needed for shapes-* protocols)")
    r.add_argument("--protocol", default=None,
                   help="named protocol: f30k-1k, coco-5k, coco-1k-5fold, shapes-1k, shapes-5k")
    r.add_argument("--split", default="test", help="Karpathy split when no protocol is given (default: test)")
    r.add_argument("--image-root", type=Path, default=None, help="folder the image paths are relative to")
    r.add_argument("--ties", default="pessimistic", choices=["pessimistic", "optimistic", "index"],
                   help="how a tie between a relevant and an irrelevant item counts (default: pessimistic)")
    r.add_argument("--ks", default="1,5,10", help="cut-offs K of R@K (default: 1,5,10)")
    r.add_argument("--out", type=Path, default=None, help="write results JSON here")
    r.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")
    r.add_argument("--allow-download", action="store_true",
                   help="allow downloading a hub model (otherwise only local copies are used)")
    r.set_defaults(run=run_eval)

    p = sub.add_parser("repro", help="seed-aware reproducibility: run over seeds, compare, diff",
                       description="Reproducibility tools after 'Where Does the Performance Improvement Come "
                                   "From?' (SIGIR 2022).")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="<verb>")
    rr = verbs.add_parser("run", help="train and evaluate a config once per seed, and aggregate",
                          description="Train and evaluate once per seed (each run resumable) and write every "
                                      "seed's results plus mean ± sd, min–max and 95% CI per metric.")
    rr.add_argument("--config", type=Path, default=None, help="YAML run config (default: built-in defaults)")
    rr.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-4 or 0,3,7 (default: 0-4)")
    rr.add_argument("--out", type=Path, default=Path("runs/repro"), help="output folder (default: runs/repro)")
    rr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value (repeatable)")
    rr.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    rr.set_defaults(run=run_repro)
    rc = verbs.add_parser("compare", help="compare two systems with paired tests and their seed ranges",
                          description="Paired randomization test and bootstrap CI over test queries (per-query "
                                      "RSUM contributions averaged over seeds), the seed range of each system, and "
                                      "a plain verdict.")
    rc.add_argument("a", type=Path, help="system A: a `repro run` folder (or one run folder)")
    rc.add_argument("b", type=Path, help="system B: a `repro run` folder (or one run folder)")
    rc.add_argument("--resamples", type=int, default=10000, help="randomization/bootstrap resamples")
    rc.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    rc.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rc.set_defaults(run=run_compare)
    rd = verbs.add_parser("diff", help="what differs between two runs' settings and environment",
                          description="List every config and manifest value that differs between two runs "
                                      "(results.json files or run folders).")
    rd.add_argument("a", type=Path)
    rd.add_argument("b", type=Path)
    rd.set_defaults(run=run_diff)


def _run_config(path: Path | None, overrides: list[str], seed: int | None = None):
    from alignlab.retrieval.training import load_run_config

    data = load_yaml(path) if path else {}
    data = merge(data, parse_overrides(overrides))
    if seed is not None:
        data["seed"] = seed
    return load_run_config(data, where=str(path) if path else None)


def _device(name: str) -> str:
    from alignlab.models.base import resolve_device

    return str(resolve_device(name))


def run_train(args: argparse.Namespace) -> int:
    from alignlab.retrieval.training import run_retrieval
    from alignlab.train import distributed as ddp_

    cfg = _run_config(args.config, args.overrides, args.seed)
    device = _device(args.device)
    # torchrun sets WORLD_SIZE > 1: start the process group (nccl on CUDA, gloo on CPU); fit() then uses DDP.
    with ddp_.group_from_launcher(device):
        result = run_retrieval(cfg, args.out, resume=not args.no_resume, device=str(ddp_.device_for(device)))
        main = ddp_.is_main()
    if not main:  # rank 0 prints the summary
        return 0
    m = result["metrics"]
    print(f"best epoch {result['best'].get('epoch')} by dev {result['best'].get('metric')}; test "
          + ", ".join(f"{k}={m[k]:.2f}" for k in m if "R@" in k or k == "rsum"))
    print(f"results: {args.out / 'results.json'}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from alignlab.core.manifest import make_result
    from alignlab.data.pairs import load_pairs
    from alignlab.models.factory import load_model
    from alignlab.retrieval.evaluate import evaluate_model
    from alignlab.retrieval.protocols import get_protocol

    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise ConfigError(f"cannot read --ks {args.ks!r}", fix="write e.g. 1,5,10") from None
    started = time.time()
    if args.protocol:
        proto = get_protocol(args.protocol)
        pairs = proto.load(args.data, args.image_root)
    elif args.data is None:
        raise ConfigError("give --data or a --protocol", fix="e.g. --protocol shapes-1k")
    else:
        pairs = load_pairs(args.data, None if args.split == "all" else args.split, args.image_root)
    kwargs = {"allow_download": True} if args.allow_download else {}
    model = load_model(args.model, device=_device(args.device), **kwargs)
    report = evaluate_model(model, pairs, args.protocol, ks=ks, ties=args.ties)
    print(report.format() if hasattr(report, "format") else json.dumps(report.metrics, indent=2))
    if args.out:
        result = make_result(task="retrieval", model=args.model, data=pairs.name, seed=None,
                             metrics=report.metrics, definitions=report.definitions,
                             config={"protocol": args.protocol, "ties": args.ties, "ks": list(ks),
                                     "data": str(args.data) if args.data else None},
                             started=started, device=args.device, report=report.to_dict())
        write_json(args.out, result)
        print(f"results: {args.out}")
    return 0


def run_repro(args: argparse.Namespace) -> int:
    from alignlab.core.seed import parse_seeds
    from alignlab.retrieval.repro import format_aggregate, run_seeds

    cfg = _run_config(args.config, args.overrides)
    seeds = parse_seeds(args.seeds)
    agg = run_seeds(cfg, seeds, args.out, device=_device(args.device))
    print(format_aggregate(agg, title=f"{cfg.model} over seeds {seeds}"))
    print(f"aggregate: {args.out / 'aggregate.json'}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from alignlab.retrieval.repro import compare, format_compare

    c = compare(args.a, args.b, n_resamples=args.resamples, seed=args.seed)
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


def write_config_template(path: Path) -> None:
    """Write the default run config as YAML (documentation helper)."""
    import yaml

    from alignlab.retrieval.training import RetrievalRunConfig

    write_text(path, yaml.safe_dump(asdict(RetrievalRunConfig()), sort_keys=False))
