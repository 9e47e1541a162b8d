"""WSD benchmark: accuracy on WordNet's example sentences and caption throughput, gloss embeddings vs Lesk.

Accuracy: items are WordNet 3.0 example sentences of polysemous nouns (gold = the example's synset), from
the *test* half (words split by a hash of the lemma); the gloss method leaves the sentence out of its
sense's representation. Throughput: the whole caption-scoring pipeline (content nouns + WSD of every
polysemous noun) on real captions, gloss (cold: sense vectors computed on the fly; warm: the same captions
again, sense vectors cached) next to NLTK's Lesk, in one process.

    python benchmarks/bench_wsd.py                      # 500 test items, 300 captions
    python benchmarks/bench_wsd.py --fit                # also refit temperature/prior on 600 dev items
    python benchmarks/bench_wsd.py --items 100 --captions 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=500, help="WordNet test items (default 500)")
    p.add_argument("--captions", type=int, default=300, help="captions for the throughput run (default 300)")
    p.add_argument(
        "--captions-file",
        type=Path,
        default=None,
        help="captions (default: ../shared/data/3am/val.en, else ShapesWorld captions)",
    )
    p.add_argument("--fit", action="store_true", help="refit temperature and prior weight on 600 dev items")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = p.parse_args(argv)

    import torch

    from alignlab.ambiguity.select import SelectConfig, score_captions
    from alignlab.ambiguity.wordnet import get_wordnet
    from alignlab.ambiguity.wsd import (
        Disambiguator,
        WSDConfig,
        evaluate_wsd,
        fit_calibration,
        wordnet_examples,
    )
    from alignlab.core.progress import set_quiet

    set_quiet(True)
    out: dict = {"threads": torch.get_num_threads()}
    t0 = time.time()
    wn = get_wordnet()
    out["wordnet_load_s"] = round(time.time() - t0, 2)
    gloss = Disambiguator(WSDConfig(disk_cache=False), wn=wn)
    t0 = time.time()
    _ = gloss.encoder
    out["encoder_load_s"] = round(time.time() - t0, 2)

    if args.fit:
        dev = wordnet_examples(wn, split="dev", max_items=600, seed=args.seed)
        out["fit"] = fit_calibration(
            gloss,
            dev,
            temperatures=(0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3),
            prior_weights=(0.0, 0.1, 0.25, 0.5, 1.0),
        )
        print(f"fit on {len(dev)} dev items: {out['fit']}")

    items = wordnet_examples(wn, split="test", max_items=args.items, seed=args.seed)
    acc = {}
    for name, cfg in (
        ("gloss", WSDConfig(disk_cache=False)),
        ("gloss+examples", WSDConfig(disk_cache=False, use_examples=True)),
        ("lesk", WSDConfig(method="lesk")),
        ("mfs", WSDConfig(method="mfs")),
    ):
        d = Disambiguator(cfg, wn=wn, encoder=gloss.encoder if cfg.method == "gloss" else None)
        t0 = time.time()
        acc[name] = evaluate_wsd(d, items)
        acc[name]["seconds"] = round(time.time() - t0, 2)
    out["accuracy"] = acc
    print(
        f"\nWordNet example sentences of polysemous nouns (test half, n = {len(items)}; "
        f"random-sense baseline {acc['mfs']['random_baseline']:.3f}):"
    )
    print("| method | accuracy | mean p(gold) | NLL |\n|---|---|---|---|")
    for name, r in acc.items():
        print(f"| {name} | {r['accuracy']:.3f} | {r['mean_gold_prob']:.3f} | {r['nll']:.3f} |")

    caps = _captions(args.captions_file, args.captions)
    out["captions"] = len(caps)
    speed = {}
    lesk = Disambiguator(WSDConfig(method="lesk"), wn=wn)
    fresh = Disambiguator(WSDConfig(disk_cache=False), wn=wn, encoder=gloss.encoder)
    for name, d in (("lesk", lesk), ("gloss (cold sense cache)", fresh), ("gloss (warm sense cache)", fresh)):
        if "warm" in name:
            d.store.transient.clear()  # contexts are encoded again; only sense vectors are reused
        t0 = time.time()
        score_captions(caps, d, SelectConfig())
        dt = time.time() - t0
        speed[name] = {"seconds": round(dt, 2), "captions_per_s": round(len(caps) / dt, 1)}
    out["throughput"] = speed
    base = speed["lesk"]["captions_per_s"]
    print(f"\nCaption scoring throughput ({len(caps)} captions, {out['threads']} torch threads):")
    print("| method | captions/s | vs Lesk |\n|---|---|---|")
    for name, r in speed.items():
        print(f"| {name} | {r['captions_per_s']:.1f} | {r['captions_per_s'] / base:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def _captions(path: Path | None, n: int) -> list[str]:
    from alignlab.data.corpus import read_captions

    if path is None:
        default = Path(__file__).resolve().parents[2] / "shared" / "data" / "3am" / "val.en"
        if default.is_file():
            path = default
    if path is not None:
        return read_captions(path, limit=n)
    from alignlab.data.shapes import ShapesConfig, ShapesWorld

    exs = ShapesWorld(ShapesConfig(polysemous_rate=0.2)).generate(n // 5 + 1, 0, "train")
    return [c.en for ex in exs for c in ex.captions][:n]


if __name__ == "__main__":
    sys.exit(main())
