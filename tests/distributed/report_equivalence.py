"""Print how closely 2-process DDP (gloo, CPU) follows one process with the same global batch.

    .venv/bin/python tests/distributed/report_equivalence.py

Runs the same 2-process scenarios as the tests (ddp_scenarios.worker) and prints, per gathered loss,
the loss of both sides and ``‖g_ddp − g_1‖ / ‖g_1‖`` over all parameters (the retrieval losses, then
one step of every DCD case), then the dev/test metrics of the short training runs. The numbers in
docs/distributed.md come from this script.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ALIGNLAB_QUIET", "1")
sys.path.insert(0, str(Path(__file__).parent))

import ddp_scenarios as sc  # noqa: E402
import torch  # noqa: E402

from alignlab.retrieval.training import CrossMatchTask, run_retrieval  # noqa: E402
from alignlab.train.distributed import spawn  # noqa: E402


def rel_err(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum((a[k].double() - b[k].double()).pow(2).sum() for k in b)
    den = sum(b[k].double().pow(2).sum() for k in b)
    return float(torch.sqrt(num / den))


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="ddp-report-"))
    t = time.time()
    spawn(sc.worker, 2, str(out))
    print(f"2-process scenarios: {time.time() - t:.1f} s wall\n")
    print("| case | per-rank batches | loss, 2 processes | loss, 1 process | relative gradient difference |")
    print("|---|---|---|---|---|")
    for name, loss, local_loss, batch in sc.GRAD_CASES:
        got = torch.load(out / f"grad_{name}.pt", weights_only=True)
        model = sc.dual()
        task = sc.grad_task(model, loss, local_loss, batch, gather=False)
        terms = task.loss(model, task.batch(0, 0))
        sum(terms.values()).backward()
        ((key, value),) = terms.items()
        print(
            f"| {name} | {(batch + 1) // 2}+{batch // 2} | {got['loss'][key]:.7f} "
            f"| {float(value.detach()):.7f} | {rel_err(got['grads'], sc.grads(model)):.1e} |"
        )
    got = torch.load(out / "grad_cross.pt", weights_only=True)
    model = sc.cross()
    task = CrossMatchTask(model, sc.data()["train"], 6, seed=3)
    terms = task.loss(model, task.batch(0, 0))
    sum(terms.values()).backward()
    one = float(terms["match_loss"].detach())
    print(
        f"| cross-encoder grid | 3+3 | {got['loss']['match_loss']:.7f} | {one:.7f} "
        f"| {rel_err(got['grads'], sc.grads(model)):.1e} |"
    )

    # DCD: one step per arm, per-rank batch 5 (the global batch packs 9 images: 5 + 4).
    print("\n| DCD case | loss terms, 2 processes | loss terms, 1 process | relative gradient difference |")
    print("|---|---|---|---|")
    for case, _, _ in sc.DCD_CASES:
        got = torch.load(out / f"dcd_{case}.pt", weights_only=True)
        task, student = sc.dcd_task(case, 2 * sc.DCD_PER_RANK)
        terms = task.loss(student, task.batch(0, 0))
        sum(terms.values()).backward()
        g = sc.grads(student)
        g.update({f"task.{i}": p.grad.detach().clone() for i, p in enumerate(task.parameters())})
        two = ", ".join(f"{k} {got['loss'][k]:.7f}" for k in sorted(terms))
        one = ", ".join(f"{k} {float(terms[k].detach()):.7f}" for k in sorted(terms))
        print(f"| {case} | {two} | {one} | {rel_err(got['grads'], g):.1e} |")

    ddp = json.loads((out / "run_ddp.json").read_text())
    one = run_retrieval(sc.run_config(batch=2 * sc.PER_RANK_BATCH), out / "run_one", data=sc.data())
    print("\n| run | dev rsum epoch 1 | dev rsum epoch 2 | test rsum | test i2t R@1 | test t2i R@1 |")
    print("|---|---|---|---|---|---|")
    for label, r in (("2 processes x batch 4 x accum 2", ddp), ("1 process x batch 8 x accum 2", one)):
        m = r["metrics"]
        curve = [e["rsum"] for e in r["dev_curve"]]
        print(
            f"| {label} | {curve[0]:.4f} | {curve[1]:.4f} | {m['rsum']:.4f} | {m['i2t_R@1']:.4f} | "
            f"{m['t2i_R@1']:.4f} |"
        )


if __name__ == "__main__":
    main()
