"""Demo stage: group a synthetic instruction set three ways and show that every optimizer step is one
group."""

from __future__ import annotations

import warnings

STAGE_TITLE = "CommonIT: commonality-aware batching"

# Unequal task frequencies, as in real instruction mixtures.
WEIGHTS = [4, 3, 3, 2, 2, 1]


def demo_stage(ctx) -> list[str]:
    from alignlab.commonit import CommonITBatchSampler, tasks
    from alignlab.commonit.grouping import (
        GroupingConfig,
        group_records,
        normalize_record,
        purity,
        write_grouped,
    )

    out = ctx.stage_dir("commonit")
    n = 150 if ctx.quick else 600
    rows = tasks.generate(n, ctx.seed, "train", tasks.TASKS, WEIGHTS)
    records = [normalize_record(r, f"synthetic[{i}]", source="synthetic") for i, r in enumerate(rows)]
    task_labels = [r.task for r in records]
    # The packaged MiniLM encoder takes ~10 s to import and load; the quick demo uses TF-IDF instead.
    encoder = "tfidf" if ctx.quick else "minilm"
    configs = {
        "task": GroupingConfig(metric="task"),
        "embedding": GroupingConfig(metric="embedding", encoder=encoder, k=6, seed=ctx.seed),
        "length": GroupingConfig(metric="length", tokenizer="chars", bins=4),
    }
    results = {name: group_records(records, cfg) for name, cfg in configs.items()}
    write_grouped(out / "by-task", records, results["task"], inputs=["synthetic"])
    lines = [
        f"{n} synthetic instruction records (tasks {', '.join(tasks.TASKS)}; frequencies "
        f"{':'.join(map(str, WEIGHTS))}), grouped three ways "
        f"(embedding: {'TF-IDF + SVD' if encoder == 'tfidf' else 'all-MiniLM-L6-v2'}, k-means k=6; "
        "length: 4 quantile bins of response characters). Grouped data and manifest: "
        "`commonit/by-task/`.",
        "",
        "| metric | group sizes | purity vs task | NMI vs task |",
        "|---|---|---|---|",
    ]
    for name, res in results.items():
        agree = purity(res.group_ids, task_labels)
        sizes = ", ".join(f"{k}: {v}" for k, v in res.sizes().items())
        lines.append(f"| {name} | {sizes} | {agree['purity']:.2f} | {agree['nmi']:.2f} |")
    edges = results["length"].manifest["bin_edges"]
    lines += ["", f"Length bin edges (characters): {edges}.", ""]

    # Two simulated ranks × 2 accumulation steps × batch 4 = 16 examples per optimizer step.
    W, A, B = 2, 2, 4
    gids = results["task"].group_ids
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ranks = [
            CommonITBatchSampler(gids, B, world_size=W, rank=r, grad_accum_steps=A, seed=ctx.seed)
            for r in range(W)
        ]
    per_rank = [list(s) for s in ranks]
    steps = [[b for r in per_rank for b in r[k : k + A]] for k in range(0, len(per_rank[0]), A)]
    s0 = ranks[0]
    one_group = sum(len(set(s0.group_of([i for b in s for i in b]).tolist())) == 1 for s in steps)
    one_task = sum(len({task_labels[i] for b in s for i in b}) == 1 for s in steps)
    flat = [i for s in steps for b in s for i in b]
    rep = s0.report
    lines += [
        f"CommonIT-Task sampler for {W} simulated ranks × {A} accumulation steps × batch {B} "
        f"({W * A * B} examples per optimizer step): {len(steps)} optimizer steps per epoch, "
        f"{len(s0)} micro-batches on every rank. **{one_group}/{len(steps)} steps draw all their examples "
        f"from one group** ({one_task}/{len(steps)} from one task: the rest are steps of the merged "
        f"small groups); {len(set(flat))}/{n} examples used, {rep['leftover']['repeats_per_epoch']} "
        "repeat(s) so that every micro-batch of a group's last, smaller step is non-empty.",
        "",
    ]
    notices = sorted({str(w.message) for w in caught})
    if notices:
        lines += ["Sampler notices (the small-group policy is never silent): " + "; ".join(notices), ""]
    lines += ["First optimizer steps (rank r, accumulation step a: example ids → tasks):", ""]
    for k, s in enumerate(steps[:3]):
        parts = []
        for slot, b in enumerate(s):
            r, a = divmod(slot, A)
            parts.append(f"r{r}a{a} {b} → {'+'.join(sorted({task_labels[i] for i in b}))}")
        group = s0.group_names[int(s0.group_of(s[0][:1])[0])]
        lines.append(f"- step {k} (group {group}): " + "; ".join(parts))
    baseline = CommonITBatchSampler(
        gids, B, world_size=1, grad_accum_steps=W * A, seed=ctx.seed, mode="random", warn=False
    )
    rb = list(baseline)
    rsteps = [rb[k : k + W * A] for k in range(0, len(rb), W * A)]
    rpure = sum(len({task_labels[i] for b in s for i in b}) == 1 for s in rsteps)
    lines += [
        "",
        f'Random baseline (`mode="random"`: the same examples and step sizes): {rpure}/{len(rsteps)} '
        "one-task steps.",
    ]
    return lines
