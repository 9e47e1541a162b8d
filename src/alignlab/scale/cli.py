"""The engine flags that every data-scale command shares (``--engine``, ``--ray-address`` ...).

Without ``--engine`` a command runs its plain single-process path, unchanged. ``--engine local`` runs the
sharded, resumable engine in this process; ``--engine ray`` runs it on Ray Data (a Ray started here with
``--ray-cpus N``, or an existing cluster with ``--ray-address ADDR``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alignlab.scale.engine import ENGINES, EngineOptions
from alignlab.scale.shards import DEFAULT_ROWS_PER_SHARD


def add_engine_args(p: argparse.ArgumentParser, rows_default: int = DEFAULT_ROWS_PER_SHARD) -> None:
    g = p.add_argument_group("data-scale engine (docs/scale.md)")
    g.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="run sharded and resumable: local (this process) or ray (Ray Data actor pool); "
        "default: the plain single-process path",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="an existing Ray cluster (host:port of `ray start --head`, ray://host:10001 or auto); "
        "implies --engine ray",
    )
    g.add_argument(
        "--ray-cpus",
        type=int,
        default=None,
        metavar="N",
        help="start a Ray on this machine with N CPUs (default: all); implies --engine ray",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="Ray actors, each loading the model once (default: one per cluster CPU)",
    )
    g.add_argument(
        "--rows-per-shard",
        type=int,
        default=rows_default,
        metavar="N",
        help=f"rows per shard: the unit of work, output file and resume (default {rows_default})",
    )
    g.add_argument(
        "--shards-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of the Parquet shards and their manifest (default: next to the output); "
        "re-running the command resumes from it",
    )
    g.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        metavar="N",
        help="attempts per shard when workers crash (default 3)",
    )


def engine_name(args: argparse.Namespace) -> str | None:
    """``local``, ``ray`` or None (the plain path); the Ray flags imply ``ray``."""
    engine = getattr(args, "engine", None)
    if engine is None and (getattr(args, "ray_address", None) or getattr(args, "ray_cpus", None)):
        engine = "ray"
    return engine


def engine_options(args: argparse.Namespace) -> EngineOptions:
    return EngineOptions(
        engine=engine_name(args) or "local",
        ray_address=args.ray_address,
        ray_cpus=args.ray_cpus,
        workers=args.workers,
        max_attempts=args.max_attempts,
        quiet=bool(getattr(args, "quiet", False)),
    )


def shards_dir(args: argparse.Namespace, out: Path, suffix: str = ".shards") -> Path:
    """``--shards-dir``, or ``<out><suffix>`` beside the output file or folder (never inside an output
    folder, whose own checks would take the shards for foreign files)."""
    if args.shards_dir is not None:
        return args.shards_dir
    return out.with_name(out.name + suffix)
