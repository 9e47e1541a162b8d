"""``alignlab commonit group|stats|train``."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from alignlab.core.cliargs import add_out, add_overwrite, add_seed
from alignlab.core.config import check_run_dir, clear_run_dir, option_error
from alignlab.core.errors import AlignlabError, ConfigError, DataError


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data",
        type=Path,
        nargs="+",
        help="grouped JSONL (or its folder) from `commonit group`; with --group-files, one file per "
        "group or a folder of them",
    )
    p.add_argument(
        "--group-files",
        action="store_true",
        help="read one JSON/JSONL file per group (CommonIT's released layout); group = file name",
    )
    p.add_argument("--group-field", default="group_id", help="field holding the group (default: group_id)")
    p.add_argument("--task-field", default="task", help="field holding the task label (default: task)")


def _add_sampler_args(p: argparse.ArgumentParser, batch_default: int) -> None:
    from alignlab.commonit.sampler import HOMOGENEITY, LEFTOVER_POLICIES, ORDERS, SMALL_GROUP_POLICIES

    p.add_argument(
        "--batch-size",
        type=int,
        default=batch_default,
        help=f"per-device micro-batch size (default {batch_default})",
    )
    p.add_argument("--world-size", type=int, default=1, help="data-parallel ranks to plan for (default 1)")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    p.add_argument(
        "--order",
        choices=ORDERS,
        default="proportional",
        help="group order: proportional = every example once per epoch (default)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="T of --order temperature (default 1)")
    p.add_argument(
        "--homogeneity",
        choices=HOMOGENEITY,
        default="step",
        help="one group per optimizer step (default) or per device batch",
    )
    p.add_argument(
        "--small-groups",
        choices=SMALL_GROUP_POLICIES,
        default="merge",
        help="groups smaller than one step: merge (default), drop (warns) or error",
    )
    p.add_argument(
        "--min-group-size",
        type=int,
        default=None,
        help="size below which a group is small (default: one optimizer step of examples)",
    )
    p.add_argument(
        "--leftover",
        choices=LEFTOVER_POLICIES,
        default="partial",
        help="examples after a group's full steps: partial step (default), pad, drop or mix",
    )
    p.add_argument("--mix-ratio", type=float, default=0.0, help="share of steps made random (default 0)")


def register(sub: argparse._SubParsersAction) -> None:
    from alignlab.commonit.grouping import EMBED_TEXTS, LENGTH_OF, METRICS

    p = sub.add_parser(
        "commonit",
        help="CommonIT: group instruction data and train one group per step",
        description="Commonality-aware instruction tuning: partition instruction data by task, "
        "embedding cluster or response length, and train with every optimizer step "
        "drawn from one group.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="<verb>")

    g = verbs.add_parser(
        "group",
        help="give every record a group_id (task, embedding or length)",
        description="Read Alpaca-style or chat JSONL, assign a group to every record and write "
        "OUT/grouped.jsonl (records + group_id) and OUT/manifest.json.",
    )
    g.add_argument("inputs", type=Path, nargs="+", help="JSONL/JSON files of instruction records")
    add_out(g, required=True, help="output folder")
    g.add_argument("--metric", choices=METRICS, default="task", help="grouping metric (default task)")
    g.add_argument(
        "--task-field",
        default="task",
        help="task: field with the task label; records without it use their file name (default task)",
    )
    g.add_argument(
        "--encoder",
        default="minilm",
        help="embedding: minilm (packaged all-MiniLM-L6-v2, default), tfidf (no model), or a "
        "sentence-transformers name or local folder",
    )
    g.add_argument(
        "--text",
        choices=EMBED_TEXTS,
        default="instruction",
        help="embedding: which text to embed (default instruction)",
    )
    g.add_argument("--k", type=int, default=8, help="embedding: number of k-means clusters (default 8)")
    g.add_argument(
        "--allow-download",
        action="store_true",
        help="embedding/length: let a named hub model or tokenizer download (off by default)",
    )
    g.add_argument(
        "--length-of",
        choices=LENGTH_OF,
        default="response",
        help="length: count tokens of the response (default) or of the whole example",
    )
    g.add_argument("--bins", type=int, default=4, help="length: number of quantile bins (default 4)")
    g.add_argument(
        "--tokenizer",
        default="whitespace",
        help="length: whitespace (default), chars, or a Hugging Face tokenizer folder/name",
    )
    add_seed(g, default=0, help="random seed of SVD and k-means (default 0)")
    add_overwrite(g, help="replace a grouping already in --out")
    g.add_argument(
        "--kmeans",
        choices=["full", "minibatch"],
        default="full",
        help="embedding: full k-means (default) or MiniBatchKMeans for millions of records",
    )
    from alignlab.scale.cli import add_engine_args

    add_engine_args(g, rows_default=10_000)  # embedding: the encoding step runs sharded (docs/scale.md)
    g.set_defaults(run=run_group)

    s = verbs.add_parser(
        "stats",
        help="group sizes, what the sampler merges or drops, purity against tasks",
        description="Summarise a grouped data set: group sizes, the groups and examples the "
        "sampler would merge, drop or repeat under the given batch settings, and "
        "purity / NMI of the groups against the task labels when records have them.",
    )
    _add_data_args(s)
    _add_sampler_args(s, batch_default=8)
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.set_defaults(run=run_stats)

    t = verbs.add_parser(
        "train",
        help="train a causal LM with CommonIT batching (HF Trainer)",
        description="Fine-tune (or train from scratch) a causal LM on grouped instruction data "
        "with CommonITTrainer; loss on the response only. The default model is a tiny "
        "GPT-2 built from a config with a character tokenizer (no download).",
    )
    _add_data_args(t)
    _add_sampler_args(t, batch_default=16)
    add_out(t, required=True, help="output folder (model, results.json)")
    t.add_argument(
        "--batching",
        choices=["commonit", "random"],
        default="commonit",
        help="commonit (default) or the random baseline on exactly the same data",
    )
    t.add_argument(
        "--model",
        default="tiny-gpt2",
        help="tiny-gpt2 (default, from config) or a local Hugging Face causal-LM folder",
    )
    t.add_argument("--n-layer", type=int, default=2, help="tiny-gpt2: layers (default 2)")
    t.add_argument("--n-embd", type=int, default=64, help="tiny-gpt2: width (default 64)")
    t.add_argument("--epochs", type=float, default=3.0, help="training epochs (default 3)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    t.add_argument("--max-length", type=int, default=128, help="maximum tokens per example (default 128)")
    add_seed(t, default=0, help="seed of model init and batch order (default 0)")
    add_overwrite(t)
    t.set_defaults(run=run_train)


def _load(args: argparse.Namespace):
    from alignlab.commonit.grouping import load_group_files, load_grouped

    if args.group_files:
        return load_group_files(args.data, task_field=args.task_field)
    if len(args.data) != 1:
        raise ConfigError(
            f"give one grouped JSONL file, got {len(args.data)}",
            where="DATA",
            fix="pass one file, or --group-files for one file per group",
        )
    return load_grouped(args.data[0], field_name=args.group_field, task_field=args.task_field)


def _options(args: argparse.Namespace) -> dict[str, str]:
    """Config field -> the option that sets it (errors of the config classes name the option)."""
    out = {k: "--" + k.replace("_", "-") for k in vars(args) if k not in ("run", "command", "verb")}
    out.update({"grad_accum_steps": "--grad-accum", "n_head": "--n-embd"})
    return out


def _sampler_options(args: argparse.Namespace) -> dict:
    return {
        "order": args.order,
        "temperature": args.temperature,
        "homogeneity": args.homogeneity,
        "small_groups": args.small_groups,
        "min_group_size": args.min_group_size,
        "leftover": args.leftover,
        "mix_ratio": args.mix_ratio,
    }


def run_group(args: argparse.Namespace) -> int:
    from alignlab.commonit.grouping import GroupingConfig, group_records, load_records, write_grouped
    from alignlab.core.progress import info
    from alignlab.scale.cli import engine_name

    try:
        cfg = GroupingConfig(
            metric=args.metric,
            task_field=args.task_field,
            encoder=args.encoder,
            text=args.text,
            k=args.k,
            allow_download=args.allow_download,
            length_of=args.length_of,
            bins=args.bins,
            tokenizer=args.tokenizer,
            seed=args.seed,
            kmeans=args.kmeans,
        )
    except (AlignlabError, ValueError) as e:
        raise option_error(e, _options(args), "--metric") from None
    for path in args.inputs:
        if not path.is_file():
            raise DataError(
                "input file not found", where=str(path), fix="give JSONL/JSON files of instruction records"
            )
    check_run_dir(args.out, overwrite=args.overwrite, finished=("grouped.jsonl",))
    if args.overwrite:
        clear_run_dir(args.out)
    if engine_name(args) is not None and args.metric != "embedding":
        raise ConfigError(
            "--engine runs the embedding step; it has no use with --metric " + args.metric,
            fix="drop --engine, or use --metric embedding",
        )
    records = load_records(args.inputs, task_field=args.task_field)
    info(f"grouping {len(records)} records by {args.metric}")
    embeddings = None
    if engine_name(args) is not None:
        from alignlab.commonit.scale_job import embed_sharded
        from alignlab.scale.cli import engine_options, shards_dir

        embeddings, report = embed_sharded(
            args.inputs, shards_dir(args, args.out), cfg, engine_options(args), args.rows_per_shard
        )
        print(report.summary())
    result = group_records(records, cfg, embeddings)
    data_path, man_path = write_grouped(args.out, records, result, inputs=args.inputs)
    sizes = result.manifest["group_sizes"]
    print(
        f"{len(records)} records in {len(sizes)} groups ({args.metric}): "
        + ", ".join(f"{k}={v}" for k, v in sizes.items())
    )
    if "bin_edges" in result.manifest:
        print(
            f"bin edges ({result.manifest['tokenizer']} tokens of {result.manifest['length_of']}): "
            f"{result.manifest['bin_edges']}"
        )
    print(f"wrote {data_path} and {man_path}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from alignlab.commonit.grouping import group_stats
    from alignlab.commonit.sampler import CommonITBatchSampler

    records, gids = _load(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report below lists merges and drops explicitly
        try:
            sampler = CommonITBatchSampler(
                gids,
                args.batch_size,
                world_size=args.world_size,
                grad_accum_steps=args.grad_accum,
                **_sampler_options(args),
            )
        except (AlignlabError, ValueError) as e:
            raise option_error(e, _options(args), "--batch-size") from None
    tasks = [r.task for r in records]
    stats = group_stats(gids, tasks if all(t is not None for t in tasks) else None, sampler.report)
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
        return 0
    print(
        f"{stats['n_records']} records in {stats['n_groups']} groups "
        f"(smallest {stats['smallest']}, largest {stats['largest']})"
    )
    for g, n in stats["group_sizes"].items():
        top = stats.get("top_task_per_group", {}).get(g)
        extra = f"  top task {top['task']} ({top['share']:.0%})" if top else ""
        print(f"  {g:>24}  {n:>8}{extra}")
    if "agreement_with_tasks" in stats:
        a = stats["agreement_with_tasks"]
        print(
            f"agreement with task labels: purity {a['purity']:.3f}, "
            f"inverse purity {a['inverse_purity']:.3f}, NMI {a['nmi']:.3f}"
        )
    sp = stats["sampler"]
    print(
        f"sampler (batch {args.batch_size} × {args.world_size} rank(s) × {args.grad_accum} accumulation = "
        f"{sp['settings']['unit_examples']} examples per homogeneous unit): "
        f"{sp['steps_per_epoch']} optimizer steps per epoch"
    )
    if sp["small_groups"]:
        action = {"merge": f"merged into {sp['merged_into']!r}", "drop": "dropped", "error": "an error"}[
            sp["small_group_policy"]
        ]
        n_small = sum(sp["small_groups"].values())
        print(f"  small groups ({len(sp['small_groups'])}, {n_small} examples): {action}")
    else:
        print("  small groups: none")
    print(
        f"  leftover examples after full steps: {sp['leftover_examples']} (policy {sp['leftover_policy']}); "
        f"repeats per epoch: {sp['repeats_per_epoch']}; dropped per epoch: {sp['dropped_leftover_per_epoch']}"
    )
    return 0


def run_train(args: argparse.Namespace) -> int:
    from alignlab.commonit.hf import TrainConfig, train_instruction_lm

    try:
        cfg = TrainConfig(
            model=args.model,
            n_layer=args.n_layer,
            n_embd=args.n_embd,
            batching=args.batching,
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            epochs=args.epochs,
            lr=args.lr,
            max_length=args.max_length,
            seed=args.seed,
            **_sampler_options(args),
        )
    except (AlignlabError, ValueError) as e:
        raise option_error(e, _options(args), "--model") from None
    if args.world_size != 1:
        raise ConfigError(
            "--world-size is read from the launcher when training",
            where="--world-size",
            fix="start with torchrun / accelerate launch; drop --world-size",
        )
    check_run_dir(args.out, overwrite=args.overwrite)
    records, gids = _load(args)
    if args.overwrite:
        clear_run_dir(args.out)
    result = train_instruction_lm(records, gids, cfg, args.out, quiet=args.quiet)
    print(
        f"trained {cfg.model} with {cfg.batching} batching: {result['metrics']['optimizer_steps']} steps, "
        f"final train loss {result['metrics']['train_loss']:.4f}; wrote {args.out}"
    )
    return 0
