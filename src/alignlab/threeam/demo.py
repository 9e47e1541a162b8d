"""Demo stage "ambiguity": word senses, ambiguity-aware selection and a multimodal translation model.

1. WSD: the senses of "bat" in two contexts (gloss-embedding disambiguator).
2. Score ShapesWorld captions for ambiguity and select the most ambiguous ones; how many of the selected
   captions need the image for their translation (a polysemous noun), against the pool.
3. Train a small translation model that sees the image (gated fusion over a ShapesWorld-pretrained image
   tower) on the selected captions plus the rest of a small training set, and translate test captions
   with the right and with a shuffled image.
"""

from __future__ import annotations

import time

import numpy as np

STAGE_TITLE = "Ambiguity-aware data selection (3AM) and multimodal translation"

QUICK = {
    "pool": 30,
    "select": 20,
    "train_scenes": 120,
    "test_scenes": 30,
    "epochs": 2,
    "tower_images": 200,
    "tower_epochs": 1,
    "width": 48,
    "real": 0,
}
FULL = {
    "pool": 400,
    "select": 200,
    "train_scenes": 600,
    "test_scenes": 100,
    "epochs": 12,
    "tower_images": 8000,
    "tower_epochs": 4,
    "width": 64,
    "real": 200,
}


def demo_stage(ctx) -> list[str]:
    from alignlab.ambiguity.select import SelectConfig, corpus_stats, score_captions, select_indices
    from alignlab.ambiguity.wsd import Disambiguator, WSDConfig
    from alignlab.core.errors import DependencyError
    from alignlab.core.io import write_json
    from alignlab.data.shapes import ShapesConfig, ShapesWorld
    from alignlab.mmt.evaluate import contrastive_items, evaluate_model
    from alignlab.mmt.model import MMTConfig, MMTModel
    from alignlab.mmt.train import (
        TrainConfig,
        VisualPretrainConfig,
        build_tokenizers,
        pairs_from_shapes,
        pretrain_visual_encoder,
        shapes_images,
        train_model,
    )

    s = QUICK if ctx.quick else FULL
    out = ctx.stage_dir("ambiguity")
    lines: list[str] = []
    t0 = time.time()
    try:
        wsd = Disambiguator(WSDConfig())
        examples = [
            ("a bat flew out of the cave at dusk", "bat"),
            ("he swung the bat and hit the ball", "bat"),
        ]
        res = wsd.disambiguate_batch(examples)
    except DependencyError as e:
        return [f"Skipped: {e.one_line()}"]
    lines += ["**Word-sense disambiguation** (gloss embeddings, all-MiniLM-L6-v2; top 2 senses):", ""]
    for (sent, _word), r in zip(examples, res):
        top = ", ".join(f"`{n}` {p:.2f} ({wsd.wn.synset(n).definition()[:40]}…)" for n, p in r[:2])
        lines.append(f"- *{sent}* — {top}")

    # 2. selection on ShapesWorld
    world = ShapesWorld(ShapesConfig(polysemous_rate=0.05))
    pool_ex = world.generate(s["pool"], ctx.seed, "train", desc="demo pool")
    pool = pairs_from_shapes(pool_ex)
    sel_cfg = SelectConfig()
    scores = score_captions([p.en for p in pool], wsd, sel_cfg, desc="demo scoring")
    chosen = select_indices(scores, s["select"], sel_cfg)
    vn_pool = float(np.mean([bool(p.senses) for p in pool]))
    vn_sel = float(np.mean([bool(pool[i].senses) for i in chosen])) if chosen else float("nan")
    stats = corpus_stats(scores)
    lines += [
        "",
        f"**Selection.** {len(pool)} ShapesWorld captions scored in {time.time() - t0:.1f} s "
        f"(including loading WordNet and the encoder); {stats['share_with_ambiguous_word']:.2f} have an "
        f"ambiguous noun. Selected {len(chosen)}: captions that need the image for translation (a polysemous "
        f"noun) make up {vn_sel:.2f} of the selection vs {vn_pool:.2f} of the pool.",
        "",
    ]
    for i in chosen[:4]:
        sc = scores[i]
        lines.append(f"- {sc.text} (score {sc.score:.2f}, key word *{sc.key_word()}*) → {pool[i].zh}")

    # 3. a visual translation model
    train_world = ShapesWorld(ShapesConfig(polysemous_rate=0.3))
    tr = train_world.generate(s["train_scenes"], ctx.seed, "train", desc="demo mmt train")
    te = ShapesWorld(ShapesConfig(polysemous_rate=0.4)).generate(
        s["test_scenes"], ctx.seed, "test", desc="demo mmt test"
    )
    train_pairs = pairs_from_shapes(tr)
    test_pairs = pairs_from_shapes(te, image_offset=len(tr))
    t1 = time.time()
    encoder, vis = pretrain_visual_encoder(
        VisualPretrainConfig(images=s["tower_images"], val_images=100, epochs=s["tower_epochs"]),
        seed=ctx.seed,
    )
    visual = encoder.features(shapes_images(tr + te))
    src_tok, tgt_tok = build_tokenizers(train_pairs + test_pairs)
    results = {}
    for fusion in ("none", "gated"):
        model = MMTModel(
            MMTConfig(
                width=s["width"],
                heads=4,
                encoder_layers=1,
                decoder_layers=1,
                fusion=fusion,
                visual_dim=encoder.width,
                visual_tokens=encoder.n_tokens,
            ),
            src_tok,
            tgt_tok,
        )
        train_model(
            model,
            train_pairs,
            TrainConfig(epochs=s["epochs"], batch_size=32, lr=3e-3, warmup_steps=20),
            seed=ctx.seed,
            visual=visual,
            desc=f"demo mmt {fusion}",
        )
        results[fusion] = evaluate_model(
            model, test_pairs, visual, encoder=encoder, contrastive=contrastive_items(te, 100), seed=ctx.seed
        )
        if fusion == "gated":
            sample = [(p.en, p.zh) for p in test_pairs if p.senses][:3]
            from alignlab.mmt.evaluate import translate

            idx = [k for k, p in enumerate(test_pairs) if p.senses][:3]
            hyps = (
                translate(
                    model,
                    [p.en for p in (test_pairs[k] for k in idx)],
                    visual[[test_pairs[k].image for k in idx]],
                )
                if idx
                else []
            )
    write_json(
        out / "results.json",
        {
            "selection": {
                "pool": len(pool),
                "selected": len(chosen),
                "visually_necessary_pool": vn_pool,
                "visually_necessary_selected": vn_sel,
            },
            "visual_encoder": vis,
            "mmt": results,
        },
    )
    lines += [
        "",
        f"**Translation** ({len(train_pairs)} training pairs, {s['epochs']} epochs; image tower "
        f"pretrained on {s['tower_images']} scenes: held-out sense accuracy {vis['sense_acc']:.2f}; "
        f"{time.time() - t1:.1f} s):",
        "",
        "| model | BLEU | chrF | sense acc | sense acc (shuffled image) | contrastive |",
        "|---|---|---|---|---|---|",
    ]
    for fusion, m in results.items():
        lines.append(
            f"| {'text-only' if fusion == 'none' else 'gated fusion'} | {m['bleu']:.1f} | {m['chrf']:.1f} | "
            f"{m['sense_acc']:.2f} | {m['sense_acc_incongruent']:.2f} | {m['contrastive_acc']:.2f} |"
        )
    lines += ["", f"BLEU signature `{results['none']['bleu_signature']}`."]
    if sample:
        lines += [
            "",
            "Gated-fusion translations of captions with a polysemous noun (reference after the slash):",
            "",
        ]
        lines += [f"- {en} → {h} / {zh}" for (en, zh), h in zip(sample, hyps)]
    if ctx.quick:
        lines += [
            "",
            "_Quick settings: the models train for seconds, so the numbers show the pipeline, not "
            "the effect; `alignlab experiment 3am` runs the real comparison._",
        ]
    if s["real"]:
        lines += _real_corpora(wsd, s["real"])
    return lines


def _real_corpora(wsd, n: int) -> list[str]:
    from alignlab.ambiguity.select import compare_corpora, score_captions
    from alignlab.data.corpus import read_captions
    from alignlab.threeam.experiment import find_data_dir

    data = find_data_dir()
    if data is None:
        return []
    named = {
        name: score_captions(read_captions(data / rel, limit=n), wsd, desc=name)
        for name, rel in (("3AM", "3am/val.en"), ("Multi30K", "multi30k/val.en"))
    }
    res = compare_corpora(named)
    a, b = res["corpora"]["3AM"], res["corpora"]["Multi30K"]
    return [
        "",
        f"**Real captions** (first {n} validation captions of each): share with an ambiguous noun "
        f"3AM {a['share_with_ambiguous_word']:.2f} vs Multi30K {b['share_with_ambiguous_word']:.2f}; mean "
        f"WSD entropy {a['mean_entropy_bits']:.2f} vs {b['mean_entropy_bits']:.2f} bits.",
    ]
