"""``alignlab mmt train|eval``: train a small (multimodal) translation model and evaluate it."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from alignlab.core.cliargs import add_out, add_overrides, add_overwrite, add_seed
from alignlab.core.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mmt",
        help="multimodal machine translation: train and evaluate (English -> Chinese)",
        description="Train a small transformer translation model, text-only or using the image "
        "(visual prefix or gated fusion), on ShapesWorld or on parallel text files, "
        "and evaluate BLEU/chrF, sense accuracy, congruent vs incongruent images and "
        "a contrastive score.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="<verb>")

    t = verbs.add_parser(
        "train",
        help="train a translation model into a run folder",
        description="Train on ShapesWorld (--data shapes; images available, any fusion) or on "
        "aligned parallel text files (--data parallel; text-only). Writes config.yaml, "
        "model.pt, tokenizers, train/ (the loop's checkpoints and log.jsonl; re-running resumes) "
        "and visual.pt under --out, then evaluates on the validation data into results.json.",
    )
    add_out(t, required=True, help="run folder")
    t.add_argument(
        "--data", choices=["shapes", "parallel"], default="shapes", help="training data (default shapes)"
    )
    t.add_argument("--src", type=Path, help="English training file, one sentence per line (--data parallel)")
    t.add_argument("--tgt", type=Path, help="Chinese training file aligned with --src (--data parallel)")
    t.add_argument("--val-src", type=Path, help="English validation file (--data parallel)")
    t.add_argument("--val-tgt", type=Path, help="Chinese validation file (--data parallel)")
    t.add_argument("--limit", type=int, default=None, help="use only the first N training pairs")
    t.add_argument(
        "--val-limit", type=int, default=500, help="evaluate on the first N validation pairs (default 500)"
    )
    t.add_argument(
        "--shapes-train", type=int, default=800, help="ShapesWorld training scenes (5 captions each)"
    )
    t.add_argument("--shapes-val", type=int, default=100, help="ShapesWorld validation scenes")
    t.add_argument(
        "--polysemous-rate",
        type=float,
        default=0.25,
        help="ShapesWorld: chance an object is polysemous (bat, mouse, crane, seal, kite)",
    )
    t.add_argument(
        "--fusion",
        choices=["none", "prefix", "gated"],
        default="none",
        help="how the model sees the image: none (text-only), prefix, gated (default none)",
    )
    t.add_argument(
        "--unit",
        choices=["word", "char"],
        default=None,
        help="Chinese target units: jieba words or characters (default: word for shapes, char for "
        "parallel text, whose vocabulary is open)",
    )
    t.add_argument("--epochs", type=int, default=None, help="training epochs (default from the config: 12)")
    add_seed(t, default=0, help="random seed (default 0)")
    t.add_argument(
        "--visual",
        type=Path,
        default=None,
        help="a pretrained visual.pt to reuse (default: pretrain the image tower on ShapesWorld)",
    )
    add_overrides(t, help="override config keys, e.g. model.width=64, train.lr=0.002, visual.images=1000")
    add_overwrite(t)
    t.set_defaults(run=run_train)

    e = verbs.add_parser(
        "eval",
        help="evaluate a trained run",
        description="Translate the evaluation data with a trained run and write BLEU/chrF "
        "(sacrebleu, zh tokenizer, signatures stored), and for ShapesWorld sense "
        "accuracy with the right and a shuffled image and the contrastive score.",
    )
    e.add_argument(
        "--run", dest="run_dir", type=Path, required=True, help="run folder written by `alignlab mmt train`"
    )
    e.add_argument("--src", type=Path, help="English test file (parallel text)")
    e.add_argument("--tgt", type=Path, help="Chinese reference file aligned with --src")
    e.add_argument("--limit", type=int, default=None, help="evaluate the first N pairs only")
    e.add_argument("--shapes-test", type=int, default=200, help="ShapesWorld test scenes (when no --src)")
    e.add_argument("--polysemous-rate", type=float, default=0.4, help="ShapesWorld test polysemous rate")
    add_seed(e, default=0, help="seed of the test scenes and the image shuffle")
    add_out(e, default=None, help="results JSON (default: <run>/results-eval.json)")
    e.add_argument("--translations", type=Path, default=None, help="also write the translations here")
    e.set_defaults(run=run_eval)


def _train_configs(args: argparse.Namespace):
    """(model, train, visual) configs: each section's defaults, then --fusion/--epochs, then --set."""
    from alignlab.core.config import command_config
    from alignlab.mmt.train import MMTRunConfig

    flags = {"model.fusion": (args.fusion, "--fusion"), "train.epochs": (args.epochs, "--epochs")}
    run = command_config(MMTRunConfig, overrides=args.overrides, flags=flags)
    return run.model, run.train, run.visual


def _check_train_args(args: argparse.Namespace, fusion: str) -> None:
    """Every option of `mmt train` checked before any data is made or the run folder is touched."""
    from alignlab.core.config import check_number, check_run_dir, clear_run_dir, option_error
    from alignlab.core.errors import AlignlabError, DataError

    for name in ("shapes_train", "shapes_val", "val_limit", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be >= 1, got {value}", where=flag, fix=f"give {flag} 1 or more")
    try:
        check_number("polysemous_rate", args.polysemous_rate, lo=0, hi=1)
    except AlignlabError as e:
        raise option_error(e, {"polysemous_rate": "--polysemous-rate"}) from None
    if args.data == "parallel":
        if fusion != "none":
            raise ConfigError(
                "parallel text data has no images, so only --fusion none can train on it",
                where=f"--fusion {fusion}",
                fix="use --fusion none, or --data shapes for an image model",
            )
        for name in ("src", "tgt", "val_src", "val_tgt"):
            flag = "--" + name.replace("_", "-")
            path = getattr(args, name)
            if path is None:
                raise ConfigError(
                    f"--data parallel needs {flag}",
                    where=flag,
                    fix=f"give {flag} <file with one sentence per line>",
                )
            if not path.is_file():
                raise DataError("file not found", where=f"{flag} {path}", fix="check the path")
    if args.visual is not None and fusion != "none":
        from alignlab.mmt.train import load_visual_encoder

        load_visual_encoder(args.visual)  # small: a file that does not load fails now, not after the data
    check_run_dir(args.out, overwrite=args.overwrite, finished=("results.json",))
    if args.overwrite:
        clear_run_dir(args.out)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from alignlab.core.manifest import make_result
    from alignlab.mmt.evaluate import contrastive_items, evaluate_model
    from alignlab.mmt.model import MMTModel
    from alignlab.mmt.train import (
        build_tokenizers,
        load_visual_encoder,
        pretrain_or_resume_visual,
        save_run,
        train_model,
        visual_config_hash,
    )
    from alignlab.train.distributed import refuse_launcher
    from alignlab.train.runs import finish_run

    refuse_launcher("alignlab mmt train")
    started = time.time()
    model_cfg, train_cfg, vis_cfg = _train_configs(args)
    _check_train_args(args, model_cfg.fusion)
    from alignlab.core.io import remove_stale_temps
    from alignlab.core.seed import set_seed

    remove_stale_temps(args.out)  # temp files of an interrupted run's atomic writes
    encoder = visual = vis_sha = None
    vis_metrics: dict[str, Any] | None = None
    contrast = None
    if args.data == "parallel":
        from alignlab.data.corpus import read_parallel
        from alignlab.mmt.train import MMTPair

        if model_cfg.fusion != "none":
            raise ConfigError(
                "parallel text data has no images, so only --fusion none can train on it",
                fix="use --fusion none, or --data shapes for an image model",
            )
        for name in ("src", "tgt", "val_src", "val_tgt"):
            if getattr(args, name) is None:
                raise ConfigError(f"--data parallel needs --{name.replace('_', '-')}")
        en, zh = read_parallel(args.src, args.tgt, args.limit)
        ven, vzh = read_parallel(args.val_src, args.val_tgt, args.val_limit)
        train_pairs = [MMTPair(a, b) for a, b in zip(en, zh)]
        val_pairs = [MMTPair(a, b) for a, b in zip(ven, vzh)]
        data_desc = {
            "kind": "parallel",
            "src": str(args.src),
            "tgt": str(args.tgt),
            "pairs": len(train_pairs),
            "val_src": str(args.val_src),
            "val_pairs": len(val_pairs),
        }
        src_tok, tgt_tok = build_tokenizers(
            train_pairs, min_count=2 if len(train_pairs) > 2000 else 1, unit=args.unit or "char"
        )
    else:
        from alignlab.data.shapes import ShapesConfig, ShapesWorld
        from alignlab.mmt.train import pairs_from_shapes, shapes_images

        try:
            world = ShapesWorld(ShapesConfig(polysemous_rate=args.polysemous_rate))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if args.shapes_train < 1 or args.shapes_val < 1:
            raise ConfigError("--shapes-train and --shapes-val must be >= 1")
        tr = world.generate(args.shapes_train, args.seed, "train")
        va = world.generate(args.shapes_val, args.seed, "val")
        train_pairs = pairs_from_shapes(tr)
        val_pairs = pairs_from_shapes(va, image_offset=len(tr))
        if args.limit is not None:
            train_pairs = train_pairs[: args.limit]
        data_desc = {
            "kind": "shapes",
            "train_scenes": len(tr),
            "val_scenes": len(va),
            "pairs": len(train_pairs),
            "polysemous_rate": args.polysemous_rate,
            "seed": args.seed,
        }
        src_tok, tgt_tok = build_tokenizers(train_pairs + val_pairs, unit=args.unit or "word")
        if model_cfg.fusion != "none":
            if args.visual is not None:
                encoder = load_visual_encoder(args.visual)
            else:
                # Checkpointed in the run folder: re-running an interrupted run does not pretrain again.
                encoder, vis_metrics = pretrain_or_resume_visual(vis_cfg, args.seed, args.out / "visual.pt")
                vis_sha = visual_config_hash(vis_cfg, args.seed)
            visual = encoder.features(shapes_images(tr + va))
            model_cfg = replace(model_cfg, visual_dim=encoder.width, visual_tokens=encoder.n_tokens)
            contrast = contrastive_items(va, 200)
    # Seed right before the weights are drawn (whether or not the tower was pretrained or reloaded first),
    # so the same seed gives the same model in a fresh process and in a resumed run.
    set_seed(args.seed)
    model = MMTModel(model_cfg, src_tok, tgt_tok)
    log = train_model(
        model, train_pairs, train_cfg, seed=args.seed, visual=visual, run_dir=args.out / "train"
    )
    save_run(
        args.out,
        model,
        train_cfg=train_cfg,
        data=data_desc,
        visual_encoder=encoder,
        seed=args.seed,
        visual_metrics=vis_metrics,
        visual_config_sha256=vis_sha,
    )
    metrics = evaluate_model(model, val_pairs, visual, encoder=encoder, contrastive=contrast, seed=args.seed)
    result = make_result(
        task="mmt",
        model=f"tiny-mmt-{model_cfg.fusion}",
        data=f"{args.data}-val",
        seed=args.seed,
        metrics=metrics,
        config={"model": vars(model_cfg), "train": vars(train_cfg), "data": data_desc},
        started=started,
        definitions=_definitions(),
        visual_encoder=vis_metrics,
        train_log=log[-1],
    )
    finish_run(args.out, result)  # results.json last: the run-folder sequence (alignlab.train.runs)
    _print_metrics(metrics)
    print(f"run saved in {args.out}")
    return 0


def _definitions() -> dict[str, str]:
    from alignlab.mmt.evaluate import SENSE_DEFINITION

    return {
        "bleu": "sacrebleu corpus BLEU, tokenize=zh (signature stored)",
        "chrf": "sacrebleu chrF",
        "sense_acc": SENSE_DEFINITION,
        "*_incongruent": "the same with each caption's image replaced by another test caption's",
        "contrastive_acc": "share of right preferences between the two sense translations under each "
        "image (0.5 = image ignored)",
    }


_NAN_REASONS = {
    "sense_acc": "no test caption has an ambiguous word with a sense label",
    "sense_acc_incongruent": "no test caption has an ambiguous word with a sense label",
    "sense_gap": "no test caption has an ambiguous word with a sense label",
    "contrastive_acc": "no contrastive items: no ambiguous word with two sense translations",
}


def _print_metrics(m: dict[str, Any]) -> None:
    keys = ["n", "bleu", "chrf", "sense_acc", "sense_acc_incongruent", "sense_gap", "contrastive_acc"]
    shown = {k: (round(m[k], 4) if isinstance(m[k], float) else m[k]) for k in keys if k in m}
    # JSON has no NaN: a metric with nothing to measure prints as n/a with the reason, never a bare NaN.
    reasons = {
        k: _NAN_REASONS.get(k, "nothing to measure")
        for k, v in shown.items()
        if isinstance(v, float) and math.isnan(v)
    }
    print(json.dumps({k: ("n/a" if k in reasons else v) for k, v in shown.items()}, ensure_ascii=False))
    for k, why in reasons.items():
        print(f"{k}: n/a ({why})")
    print(f"BLEU signature: {m['bleu_signature']}")


def run_eval(args: argparse.Namespace) -> int:
    from alignlab.core.config import check_out_file
    from alignlab.core.io import write_json, write_text
    from alignlab.core.manifest import make_result
    from alignlab.mmt.evaluate import contrastive_items, evaluate_model
    from alignlab.mmt.train import MMTPair, load_run

    started = time.time()
    for name in ("shapes_test", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be >= 1, got {value}", where=flag, fix=f"give {flag} 1 or more")
    if (args.src is None) != (args.tgt is None):
        missing = "--tgt" if args.tgt is None else "--src"
        raise ConfigError(
            "give both --src and --tgt",
            where=missing,
            fix=f"add {missing} <file aligned line by line with the other>",
        )
    if not 0.0 <= args.polysemous_rate <= 1.0:
        raise ConfigError(
            f"--polysemous-rate must be in [0, 1], got {args.polysemous_rate}",
            where="--polysemous-rate",
            fix="give a share such as 0.4",
        )
    check_out_file(args.out or args.run_dir / "results-eval.json")
    if args.translations is not None:
        check_out_file(args.translations, "--translations")
    model, encoder, conf = load_run(args.run_dir)
    visual = contrast = None
    if args.src is not None or args.tgt is not None:
        from alignlab.data.corpus import read_parallel

        if model.uses_image:
            raise ConfigError(
                "this run uses images; parallel text files have none",
                fix="evaluate it on ShapesWorld (omit --src/--tgt)",
            )
        en, zh = read_parallel(args.src, args.tgt, args.limit)
        pairs = [MMTPair(a, b) for a, b in zip(en, zh)]
        data = f"parallel:{args.src}"
    else:
        from alignlab.data.shapes import ShapesConfig, ShapesWorld
        from alignlab.mmt.train import pairs_from_shapes, shapes_images

        try:
            world = ShapesWorld(ShapesConfig(polysemous_rate=args.polysemous_rate))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        ex = world.generate(args.shapes_test, args.seed, "test")
        pairs = pairs_from_shapes(ex)[: args.limit]
        if model.uses_image:
            visual = encoder.features(shapes_images(ex))
        contrast = contrastive_items(ex, 400)
        data = f"shapes-test-{args.shapes_test}"
    metrics = evaluate_model(
        model,
        pairs,
        visual,
        encoder=encoder,
        contrastive=contrast,
        seed=args.seed,
        keep_per_item=args.translations is not None,
    )
    per = metrics.pop("per_item", None)
    if args.translations is not None:
        write_text(args.translations, "".join(h + "\n" for h in per["hyps"]))
    out = args.out or args.run_dir / "results-eval.json"
    write_json(
        out,
        make_result(
            task="mmt",
            model=f"tiny-mmt-{model.config.fusion}",
            data=data,
            seed=args.seed,
            metrics=metrics,
            config=conf,
            started=started,
            definitions=_definitions(),
        ),
    )
    _print_metrics(metrics)
    print(f"wrote {out}")
    return 0
