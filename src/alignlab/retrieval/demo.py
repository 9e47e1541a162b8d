"""Demo stage: train the tiny dual encoder on ShapesWorld and print its exact retrieval report."""

from __future__ import annotations

from alignlab.retrieval.training import DataConfig, RetrievalRunConfig, run_retrieval
from alignlab.train.loop import TrainConfig

STAGE_TITLE = "Image–text retrieval (tiny dual encoder, exact R@K)"

QUICK_MODEL = {"width": 64, "embed_dim": 64, "image_channels": [16, 32], "text_layers": 1}


def demo_stage(ctx) -> list[str]:
    data = ctx.artifacts.get("shapes")
    if data and ctx.quick:
        # Quick mode: a smaller slice keeps the whole demo within its two-minute budget.
        data = {"train": data["train"].subset(range(min(600, data["train"].n_images)), "shapes-train"),
                "val": data["val"].subset(range(min(100, data["val"].n_images)), "shapes-val"),
                "test": data["test"].subset(range(min(300, data["test"].n_images)), "shapes-test")}
    sizes = {k: v.n_images for k, v in data.items()} if data else {"train": 600, "val": 100, "test": 300}
    cfg = RetrievalRunConfig(
        model_config=QUICK_MODEL if ctx.quick else {},
        data=DataConfig(train=sizes["train"], val=sizes["val"], test=sizes["test"], seed=ctx.seed),
        train=TrainConfig(epochs=2 if ctx.quick else 10, batch_size=64, lr=3e-3, warmup_steps=10,
                          select_metric="rsum", log_every=10),
        seed=ctx.seed)
    run_dir = ctx.stage_dir("retrieval") / "tiny-dual"
    result = run_retrieval(cfg, run_dir, data=data)
    ctx.artifacts["retrieval_run"] = run_dir
    ctx.artifacts["retrieval_model"] = run_dir / "best"
    m = result["metrics"]
    curve = ", ".join(f"{e['epoch']}: {e['rsum']:.1f}" for e in result["dev_curve"])
    return [
        f"Trained `tiny-dual` for {cfg.train.epochs} epochs on {sizes['train']} ShapesWorld images "
        f"(InfoNCE, batch {cfg.train.batch_size}); best epoch {result['best']['epoch']} by dev RSUM "
        f"(dev curve {curve}). Test: {sizes['test']} images, {5 * sizes['test']} captions.",
        "",
        "| direction | R@1 | R@5 | R@10 | median rank | mean rank |",
        "|---|---|---|---|---|---|",
        *[f"| {d} | {m[f'{d}_R@1']:.1f} | {m[f'{d}_R@5']:.1f} | {m[f'{d}_R@10']:.1f} | {m[f'{d}_medr']:g} | "
          f"{m[f'{d}_meanr']:.1f} |" for d in ("i2t", "t2i")],
        "",
        f"RSUM {m['rsum']:.1f}. R@K: a hit if any relevant item is in the top K; ties pessimistic "
        f"({m['i2t_tied_queries']} image and {m['t2i_tied_queries']} caption queries had exact ties). "
        f"Run folder: `{run_dir}` (resume or inspect `log.jsonl`).",
    ]
