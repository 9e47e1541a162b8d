"""``alignlab data shapes|check``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alignlab.core.cliargs import add_out, add_overwrite, add_seed
from alignlab.core.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="generate ShapesWorld and check image–text data sets",
        description="Generate the built-in ShapesWorld data or validate a data set.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="<verb>")

    s = verbs.add_parser(
        "shapes",
        help="generate ShapesWorld and export it (Karpathy JSON + PNG)",
        description="Generate ShapesWorld scenes and write images/*.png and dataset.json "
        "(Karpathy split format, with Chinese translations and scene graphs).",
    )
    add_out(s, required=True, help="output folder")
    s.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    s.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    s.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    add_seed(s, default=0, help="random seed (default 0)")
    s.add_argument("--image-size", type=int, default=64, help="image width and height in pixels (default 64)")
    s.add_argument(
        "--polysemous-rate",
        type=float,
        default=0.2,
        help="chance that an object is a polysemous kind such as 'bat' (default 0.2)",
    )
    s.add_argument("--captions-per-image", type=int, default=5, help="captions per image (default 5)")
    s.add_argument(
        "--discriminative",
        action="store_true",
        help="captions unique to their image within each split (checked by the truth evaluator; "
        "scenes without one are redrawn), so that one relevant image per caption is the truth",
    )
    add_overwrite(s, help="replace an export already in --out")
    s.set_defaults(run=run_shapes)

    c = verbs.add_parser(
        "check",
        help="validate a data set and list every problem",
        description="Load a data set the way training and evaluation would, and list every "
        "problem found (missing or unreadable images, image paths that leave the "
        "data root, empty captions, duplicate ids, bad lines) and leakage between "
        "splits (the same caption, image or caption-image pair in train and in val "
        "or test). Plain parallel text (3AM's release: <split>.en, <split>.zh, "
        "images-<split>.txt) is checked for alignment and leakage. Exit status 0 "
        "when clean, 2 when problems were found (or leakage, with "
        "--fail-on-leakage).",
    )
    c.add_argument(
        "spec",
        type=Path,
        help="a folder with dataset.json, a Karpathy/COCO .json, a .csv or .jsonl, "
        "or a folder of parallel <split>.en/.zh files (or one of them)",
    )
    c.add_argument("--split", default="all", help="Karpathy split to check (default: all)")
    c.add_argument("--image-root", type=Path, default=None, help="folder the image paths are relative to")
    c.add_argument("--image-field", default="image", help="CSV/JSONL column of the image path")
    c.add_argument("--caption-field", default="caption", help="CSV/JSONL column of the caption")
    c.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths that leave the data root (absolute or with '..')",
    )
    c.add_argument(
        "--fail-on-leakage",
        action="store_true",
        help="exit with status 2 when splits share captions, images or pairs (default: report only; "
        "generated data such as ShapesWorld repeats short captions across splits by design)",
    )
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(run=run_check)


def run_shapes(args: argparse.Namespace) -> int:
    from alignlab.core.config import check_run_dir, clear_run_dir, option_error
    from alignlab.data.pairs import from_shapes, save_karpathy
    from alignlab.data.shapes import GENERATOR_VERSION, ShapesConfig, ShapesWorld

    for name in ("train", "val", "test"):
        if getattr(args, name) < 0:
            raise ConfigError(
                f"--{name} must be >= 0, got {getattr(args, name)}",
                where=f"--{name}",
                fix=f"give the number of {name} images, e.g. --{name} 100 (0 for none)",
            )
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError("--out is a file, not a folder", where=str(args.out), fix="give a folder path")
    if args.train + args.val + args.test == 0:
        raise ConfigError(
            "nothing to generate", where="--train, --val, --test", fix="give --train, --val or --test > 0"
        )
    try:
        cfg = ShapesConfig(
            image_size=args.image_size,
            polysemous_rate=args.polysemous_rate,
            captions_per_image=args.captions_per_image,
            discriminative=getattr(args, "discriminative", False),
        )
    except ValueError as e:
        raise option_error(
            e,
            {
                "image_size": "--image-size",
                "polysemous_rate": "--polysemous-rate",
                "captions_per_image": "--captions-per-image",
            },
        ) from None
    check_run_dir(args.out, overwrite=args.overwrite)
    if args.overwrite:
        clear_run_dir(args.out)
    world = ShapesWorld(cfg)
    splits = {}
    for split in ("train", "val", "test"):
        n = getattr(args, split)
        if n:
            # The export writes each image's own captions; loading it back recomputes truth relevance.
            splits[split] = from_shapes(
                world.generate(n, args.seed, split), name=f"shapes-{split}", relevance="source"
            )
    from dataclasses import asdict

    path = save_karpathy(
        args.out,
        splits,
        dataset="shapesworld",
        extra={"generator": GENERATOR_VERSION, "seed": args.seed, "config": asdict(cfg)},
    )
    counts = {k: {"images": v.n_images, "captions": v.n_captions} for k, v in splits.items()}
    print(f"wrote {path} ({json.dumps(counts)})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from alignlab.data.leakage import find_leakage, parallel_folder, read_parallel_splits
    from alignlab.data.pairs import Problems, check_data

    split = None if args.split == "all" else args.split
    if not args.spec.exists():
        raise DataError("data not found", where=str(args.spec), fix="check the path")
    folder = parallel_folder(args.spec)
    if folder is not None:
        collected = Problems(collect=True)
        records, summary = read_parallel_splits(folder, collected)
        if split is not None:
            records = {k: v for k, v in records.items() if k == split}
        problems = collected.items
    else:
        kwargs = (
            {"image_field": args.image_field, "caption_field": args.caption_field}
            if args.spec.suffix.lower() in (".csv", ".jsonl")
            else {}
        )
        summary, problems = check_data(
            args.spec, split, args.image_root, allow_outside_root=args.allow_outside_root, **kwargs
        )
        records = _split_records(args, kwargs) if split is None and summary is not None else {}
    leaks = find_leakage(records)
    if args.json:
        print(
            json.dumps(
                {
                    "summary": summary,
                    "problems": [str(p) for p in problems],
                    "leakage": [leak.to_dict() for leak in leaks],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        if summary and folder is not None:
            print(
                f"{folder}: parallel text, "
                + ", ".join(
                    f"{name} {s['lines']} lines"
                    + (f" ({s['distinct_images']} images)" if s["images"] else "")
                    for name, s in summary["splits"].items()
                )
            )
        elif summary:
            print(
                f"{args.spec}: {summary['images']} images, {summary['captions']} captions "
                f"({summary['captions_per_image_min']}–{summary['captions_per_image_max']} per image)"
            )
        if leaks:
            print(f"leakage between splits ({len(leaks)}):")
            for leak in leaks:
                print(f"  {leak}")
        if problems:
            print(f"{len(problems)} problem(s):")
            for p in problems:
                print(f"  {p}")
        else:
            print("no problems found" + (" (besides the leakage above)" if leaks else ""))
    return 2 if problems or (leaks and args.fail_on_leakage) else 0


def _split_records(args: argparse.Namespace, kwargs: dict) -> dict:
    """The records of each split of a Karpathy-style file ({} for data without splits)."""
    from alignlab.data.leakage import records_from_pairs
    from alignlab.data.pairs import Problems, load_pairs

    pairs = load_pairs(
        args.spec,
        None,
        args.image_root,
        problems=Problems(collect=True),
        check_images=False,
        allow_outside_root=args.allow_outside_root,
        **kwargs,
    )
    return records_from_pairs(pairs)
