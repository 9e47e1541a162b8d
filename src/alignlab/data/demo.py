"""Demo stage: generate ShapesWorld, export it, and draw a contact sheet with captions and translations."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

from alignlab.data.pairs import from_shapes, load_karpathy, save_karpathy
from alignlab.data.shapes import GENERATOR_VERSION, ShapesConfig, ShapesWorld
from alignlab.data.sheet import contact_sheet

STAGE_TITLE = "ShapesWorld data"

# Sizes of the demo data set; later stages train and evaluate on it.
FULL = {"train": 4000, "val": 500, "test": 1000}
QUICK = {"train": 1200, "val": 200, "test": 500}


def demo_stage(ctx) -> list[str]:
    from PIL import Image

    out = ctx.stage_dir("data")
    cfg = ShapesConfig(polysemous_rate=0.2)
    world = ShapesWorld(cfg)
    sizes = QUICK if ctx.quick else FULL
    examples = {split: world.generate(n, ctx.seed, split) for split, n in sizes.items()}
    pairs = {split: from_shapes(exs, name=f"shapes-{split}") for split, exs in examples.items()}
    ctx.artifacts["shapes_config"] = cfg
    ctx.artifacts["shapes_examples"] = examples
    ctx.artifacts["shapes"] = pairs

    # Export the test split and read it back through the Karpathy loader, as real data would be.
    dataset = save_karpathy(
        out / "shapes-export",
        {"test": pairs["test"].subset(range(100), "shapes-test")},
        dataset="shapesworld",
        extra={"generator": GENERATOR_VERSION, "seed": ctx.seed, "config": asdict(cfg)},
    )
    reloaded = load_karpathy(dataset, split="test")
    sample = examples["train"][:12]
    has_cjk = contact_sheet(
        [Image.fromarray(ex.image) for ex in sample],
        [[(c.en, c.zh) for c in ex.captions] for ex in sample],
        out / "contact_sheet.png",
    )
    families = Counter(c.family for ex in examples["train"] for c in ex.captions)
    n_poly = sum(o.sense is not None for ex in examples["train"] for o in ex.scene.objects)
    n_obj = sum(len(ex.scene.objects) for ex in examples["train"])
    lines = [
        f"Generated with `{GENERATOR_VERSION}`, seed {ctx.seed}, {cfg.image_size}×{cfg.image_size} images.",
        "",
        "| split | images | captions |",
        "|---|---|---|",
        *[f"| {s} | {p.n_images} | {p.n_captions} |" for s, p in pairs.items()],
        "",
        f"Objects in train: {n_obj}, of which polysemous (bat, mouse, crane, seal, kite): {n_poly}.",
        "Caption families in train: " + ", ".join(f"{k} {v}" for k, v in sorted(families.items())) + ".",
        f"Karpathy export round trip: {reloaded.n_images} images and {reloaded.n_captions} captions "
        f"read back from `{dataset}`.",
        "",
        f"![contact sheet](data/contact_sheet.png){'' if has_cjk else ' (no CJK font: English only)'}",
        "",
        "Samples (English → Chinese):",
        "",
    ]
    for ex in sample[:4]:
        for c in ex.captions[:3]:
            lines.append(f"- {ex.image_id}: {c.en} → {c.zh}")
    return lines
