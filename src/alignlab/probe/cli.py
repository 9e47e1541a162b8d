"""``alignlab probe build|eval``: write frozen SNARE probe items, then evaluate any scorer on them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from alignlab.core.cliargs import add_out, add_overwrite, add_seed
from alignlab.core.errors import ConfigError, DataError
from alignlab.models.adapters import add_model_arguments, model_options

SANITY_MODELS = ("sanity:random", "sanity:bow", "sanity:scene")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe",
        help="build and run SNARE probes (structure, negation, ownership, relations)",
        description="SNARE-style probes of image–text models: build frozen items once, then "
        "evaluate any scorer on them with blind baselines and the grounded gap.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="<verb>")

    b = verbs.add_parser(
        "build",
        help="write frozen probe items (items.jsonl + probe.json + images/)",
        description="Generate probe items from ShapesWorld scene graphs (all four tasks, every "
        "option labelled by the truth evaluator), import ARO's Visual Genome files, or "
        "make word-order perturbations of any caption file.",
    )
    b.add_argument(
        "--source", choices=["shapes", "aro", "captions"], required=True, help="where the items come from"
    )
    add_out(b, required=True, help="output folder")
    add_seed(b, default=0, help="random seed (default 0)")
    b.add_argument(
        "--items-per-category",
        type=int,
        default=100,
        help="shapes: items in each category of each task (default 100)",
    )
    b.add_argument(
        "--tasks",
        default=None,
        help="shapes: comma-separated tasks (default all: semantic_structure, negation, "
        "attribute_ownership, relationship_composition)",
    )
    b.add_argument("--image-size", type=int, default=64, help="shapes: image width and height (default 64)")
    b.add_argument("--aro-relation", type=Path, default=None, help="aro: visual_genome_relation.json")
    b.add_argument("--aro-attribution", type=Path, default=None, help="aro: visual_genome_attribution.json")
    b.add_argument(
        "--no-negation", action="store_true", help="aro: do not derive negation items from attributions"
    )
    b.add_argument(
        "--captions",
        type=Path,
        default=None,
        help="captions: a caption file (Karpathy/COCO JSON, CSV, JSONL or a data folder)",
    )
    b.add_argument("--split", default="test", help="captions: Karpathy split to use (default test)")
    b.add_argument(
        "--tagger",
        default="auto",
        help="captions: part-of-speech tagger: auto (spaCy if a pipeline is installed, else the "
        "lexicon fallback), lexicon, or spacy:<pipeline> (default auto)",
    )
    b.add_argument(
        "--image-root", type=Path, default=None, help="aro/captions: folder the image paths are relative to"
    )
    b.add_argument(
        "--max-items", type=int, default=None, help="aro/captions: use only the first N entries/captions"
    )
    b.add_argument(
        "--no-check-images", action="store_true", help="aro/captions: do not check that images exist"
    )
    b.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="aro/captions: accept image paths that leave the image root or the data's folder "
        "(absolute or with '..')",
    )
    add_overwrite(b, help="replace items already built in --out")
    b.set_defaults(run=run_build)

    e = verbs.add_parser(
        "eval",
        help="evaluate a model on probe items, with blind baselines and the grounded gap",
        description="Score every item with the model (through the scorer contract), judge it "
        "(ties count as wrong), run the blind baselines through the same harness and "
        "write results.json, report.md, per_item.jsonl and one bar chart per task.",
    )
    e.add_argument("--items", type=Path, required=True, help="a probe folder (or its items.jsonl)")
    e.add_argument(
        "--model",
        required=True,
        help="tiny-dual | tiny-cross | ckpt:<dir> | hf:<id or dir> | open_clip:<arch>@<tag>, or a "
        "sanity model: sanity:random, sanity:bow (bag-of-words oracle), sanity:scene "
        "(scene-graph oracle; ShapesWorld items only)",
    )
    add_out(e, default=None, help="output folder (default runs/probe-<items hash>)")
    e.add_argument(
        "--baselines",
        default="all",
        help="comma-separated blind baselines: null_image, mean_image, shuffled_image, never_not, "
        "shorter, unigram_lm; 'all' (default) or 'none'",
    )
    e.add_argument(
        "--lm-captions",
        default=None,
        help="training captions for the unigram-LM baseline: a .txt file (one per line), a data "
        "file/folder (its train split), or 'shapes' (2000 default ShapesWorld training images)",
    )
    e.add_argument(
        "--image-root", type=Path, default=None, help="folder the items' image paths are relative to"
    )
    add_model_arguments(e)  # --device, --allow-download, --fp16, --model-batch-size
    e.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for CIs (default 2000)")
    add_seed(e, default=0, help="seed of the bootstrap, the shuffled-image baseline and the sanity models")
    e.add_argument(
        "--no-verify-hash", action="store_true", help="evaluate items edited since they were built"
    )
    e.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept item image paths that leave the image root (absolute or with '..')",
    )
    e.add_argument("--no-plots", action="store_true", help="do not write the bar charts")
    add_overwrite(e, help="replace a finished evaluation in --out")
    e.set_defaults(run=run_eval)


def run_build(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError("--out is a file, not a folder", where=str(args.out), fix="give a folder path")
    t0 = time.time()
    if args.source == "shapes":
        from alignlab.probe.build_shapes import ShapesProbeConfig, build_shapes_probe
        from alignlab.probe.items import TASKS

        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(TASKS)
        try:
            cfg = ShapesProbeConfig(
                items_per_category=args.items_per_category,
                seed=args.seed,
                image_size=args.image_size,
                tasks=tasks,
            )
        except ValueError as err:
            from alignlab.core.config import option_error

            raise option_error(
                err,
                {
                    "items_per_category": "--items-per-category",
                    "image_size": "--image-size",
                    "tasks": "--tasks",
                    "task": "--tasks",
                    "seed": "--seed",
                },
                "--tasks",
            ) from None
        _check_out(args)
        path, info = build_shapes_probe(cfg, args.out)
    elif args.source == "aro":
        from alignlab.probe.aro import build_aro_items

        if args.image_root is None:
            raise ConfigError(
                "--source aro needs --image-root",
                where="--image-root",
                fix="give the folder that holds ARO's images",
            )
        _check_out(args)
        path, info = build_aro_items(
            args.out,
            relation_file=args.aro_relation,
            attribution_file=args.aro_attribution,
            image_root=args.image_root,
            seed=args.seed,
            negation=not args.no_negation,
            check_images=not args.no_check_images,
            max_items=args.max_items,
            allow_outside_root=args.allow_outside_root,
        )
    else:
        from alignlab.probe.perturb import build_caption_items

        if args.captions is None:
            raise ConfigError(
                "--source captions needs --captions", where="--captions", fix="give a caption file"
            )
        if not args.captions.exists():
            raise DataError(
                "caption file not found", where=f"--captions {args.captions}", fix="check the path"
            )
        _check_out(args)
        path, info = build_caption_items(
            args.captions,
            args.out,
            split=args.split,
            image_root=args.image_root,
            seed=args.seed,
            tagger=args.tagger,
            max_items=args.max_items,
            check_images=not args.no_check_images,
            allow_outside_root=args.allow_outside_root,
        )
    from alignlab.core.io import read_json

    manifest = read_json(path.parent / "probe.json")
    counts = ", ".join(f"{t}: {sum(c.values())}" for t, c in manifest["counts"].items())
    print(
        f"wrote {manifest['n_items']} items to {path} ({counts}); sha256 {manifest['sha256'][:16]}; "
        f"{time.time() - t0:.1f} s"
    )
    return 0


def _check_out(args: argparse.Namespace) -> None:
    from alignlab.core.config import check_run_dir, clear_run_dir

    check_run_dir(args.out, overwrite=args.overwrite)
    if args.overwrite:
        clear_run_dir(args.out)


def _lm_captions(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    if spec == "shapes":
        from alignlab.data.shapes import ShapesWorld

        return [
            c.en
            for ex in ShapesWorld().generate(2000, 0, "train", desc="ShapesWorld captions for the LM")
            for c in ex.captions
        ]
    p = Path(spec)
    if not p.exists():
        raise DataError(
            "LM caption file not found", where=spec, fix="give a .txt file, a data file or 'shapes'"
        )
    if p.suffix == ".txt":
        from alignlab.core.io import read_lines

        return read_lines(p)
    from alignlab.data.pairs import load_pairs

    return load_pairs(p, "train", check_files=False).captions


def load_scorer(spec: str, ps, device: str = "cpu", seed: int = 0, **options):
    """A model from ``--model``: a sanity model or anything :func:`alignlab.models.factory.load_model`
    knows."""
    if spec.startswith("sanity:"):
        from alignlab.probe.baselines import BagOfWordsOracle, RandomScorer, SceneGraphOracle

        if spec == "sanity:random":
            return RandomScorer(seed)
        if spec == "sanity:bow":
            return BagOfWordsOracle.from_probe(ps, seed=seed, unknown="empty")
        if spec == "sanity:scene":
            return SceneGraphOracle.from_probe(ps, seed=seed, unknown="empty")
        raise ConfigError(
            f"unknown sanity model {spec!r}",
            where=f"--model {spec}",
            fix=f"use one of: {', '.join(SANITY_MODELS)}",
        )
    from alignlab.core.seed import set_seed
    from alignlab.models.factory import load_model

    set_seed(seed)  # an untrained model (tiny-dual) draws its weights now: --seed must decide them
    return load_model(spec, device=device, **options)


def run_eval(args: argparse.Namespace) -> int:
    from alignlab.core.io import write_json, write_jsonl, write_text
    from alignlab.core.manifest import make_result
    from alignlab.probe.baselines import BLINDS
    from alignlab.probe.evaluate import (
        flat_metrics,
        format_report,
        per_item_records,
        plot_run,
        run_probe,
        strip_per_item,
    )
    from alignlab.probe.items import load_probe

    started = time.time()
    if args.bootstrap < 100:
        raise ConfigError(
            f"--bootstrap must be at least 100, got {args.bootstrap}",
            where="--bootstrap",
            fix="give --bootstrap 1000 or more for stable intervals",
        )
    if args.baselines == "all":
        blinds = list(BLINDS)
    elif args.baselines == "none":
        blinds = []
    else:
        blinds = [b.strip() for b in args.baselines.split(",") if b.strip()]
        unknown = [b for b in blinds if b not in BLINDS]
        if unknown:
            raise ConfigError(
                f"unknown baseline(s) {', '.join(unknown)}",
                where=f"--baselines {args.baselines}",
                fix=f"use {', '.join(BLINDS)}, all or none",
            )
    if args.lm_captions not in (None, "shapes") and not Path(args.lm_captions).exists():
        raise DataError(
            "LM caption file not found",
            where=f"--lm-captions {args.lm_captions}",
            fix="give a .txt file, a data file or 'shapes'",
        )
    from alignlab.core.config import check_run_dir, clear_run_dir

    if args.out is not None:
        check_run_dir(args.out, overwrite=args.overwrite)
    ps = load_probe(
        args.items,
        image_root=args.image_root,
        verify_hash=not args.no_verify_hash,
        allow_outside_root=args.allow_outside_root,
    )
    out = args.out or Path("runs") / f"probe-{ps.sha256[:12]}"
    if args.out is None:
        check_run_dir(out, overwrite=args.overwrite)
    options = {k: v for k, v in model_options(args).items() if k != "device"}
    from alignlab.core.errors import AlignlabError

    try:
        model = load_scorer(args.model, ps, args.device, args.seed, **options)
    except AlignlabError as e:
        raise e.located(f"--model {args.model}") from None
    run = run_probe(
        model,
        ps,
        blinds=blinds,
        lm_captions=_lm_captions(args.lm_captions),
        bootstrap=args.bootstrap,
        seed=args.seed,
        model_name=args.model,
    )
    if args.overwrite:
        clear_run_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    result = make_result(
        task="probe",
        model=args.model,
        data=ps.name,
        seed=args.seed,
        metrics=flat_metrics(run),
        definitions=run["definitions"],
        config={k: str(v) for k, v in vars(args).items() if k != "run"},
        started=started,
        device=args.device,
        probe=strip_per_item(run),
        items=str(ps.path),
    )
    write_json(out / "results.json", result)
    write_jsonl(out / "per_item.jsonl", per_item_records(run))
    write_text(out / "report.md", format_report(run))
    if not args.no_plots:
        plot_run(run, out / "plots")
    for task, entry in run["model"]["tasks"].items():
        if "accuracy" in entry:
            a = entry["accuracy"]
            g = run["gaps"].get(task, {}).get("accuracy")
            gap = f", gap {g['gap_pct']:+.1f} vs {g['best_blind']}" if g else ""
            print(
                f"{task}: {a['acc_pct']:.1f}% "
                f"(chance {a['chance_pct']:.1f}, ties {a['tie_rate_pct']:.1f}%{gap})"
            )
    print(out / "report.md")
    return 0
