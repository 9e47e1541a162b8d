"""DDP on 2 CPU processes (gloo) against one process with the same global batch.

The 2-process side runs once for the whole folder (``ddp_run`` in conftest.py, see ddp_scenarios.py);
each test computes the single-process reference here and compares.
"""

from __future__ import annotations

import json

import ddp_scenarios as sc
import pytest
import torch

from alignlab.commonit import CommonITBatchSampler
from alignlab.core.io import to_jsonable
from alignlab.retrieval.evaluate import evaluate_model
from alignlab.retrieval.training import CrossMatchTask, evaluate_cross, evaluate_dual, run_retrieval
from alignlab.train.loop import TrainConfig, fit


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 1e-4) -> None:
    """Equal within float tolerance: per tensor relative to its own norm, with a floor relative to the norm
    of all of them (a gradient that is 0 in theory, like a conv bias before a per-channel GroupNorm or a
    bias under a softmax, is float noise on both sides)."""
    assert a.keys() == b.keys()
    total = torch.sqrt(sum(v.double().pow(2).sum() for v in b.values()))
    for k in a:
        err = (a[k].double() - b[k].double()).norm()
        assert err <= rtol * b[k].double().norm() + 1e-6 * total, (
            f"{k}: |diff| {err:.3g}, |ref| {b[k].norm():.3g}"
        )


@pytest.mark.parametrize("name,loss,local_loss,batch", sc.GRAD_CASES, ids=[c[0] for c in sc.GRAD_CASES])
def test_one_ddp_step_with_gathered_negatives_equals_one_process_with_the_global_batch(
    ddp_run, name, loss, local_loss, batch
):
    got = torch.load(ddp_run / f"grad_{name}.pt", weights_only=True)
    model = sc.dual()
    task = sc.grad_task(model, loss, local_loss, batch, gather=False)
    terms = task.loss(model, task.batch(0, 0))
    sum(terms.values()).backward()
    assert got["ranks_agree"]  # DDP left the same averaged gradient on both ranks
    assert got["local_size"] == (batch + 1) // 2  # rank 0's shard: 4 of 8, or 4 of 7
    for k, v in terms.items():
        assert got["loss"][k] == pytest.approx(float(v.detach()), rel=1e-5)
    _close(got["grads"], sc.grads(model))


def test_gathered_negatives_are_needed_for_the_equivalence(ddp_run):
    """Per-rank negatives (gather=False) give a different gradient: the test above can fail."""
    got = torch.load(ddp_run / "grad_infonce_local.pt", weights_only=True)
    model = sc.dual()
    task = sc.grad_task(model, "infonce", True, 4, gather=False)  # one rank's batch alone
    sum(task.loss(model, task.batch(0, 0)).values()).backward()
    g = sc.grads(model)
    assert not all(torch.allclose(got["grads"][k], g[k], rtol=1e-4, atol=1e-6) for k in g)


def test_cross_encoder_gathered_grid_equals_one_process_with_the_global_batch(ddp_run):
    got = torch.load(ddp_run / "grad_cross.pt", weights_only=True)
    model = sc.cross()
    task = CrossMatchTask(model, sc.data()["train"], 6, seed=3)
    terms = task.loss(model, task.batch(0, 0))
    sum(terms.values()).backward()
    assert got["loss"]["match_loss"] == pytest.approx(float(terms["match_loss"].detach()), rel=1e-5)
    _close(got["grads"], sc.grads(model))


def test_distributed_evaluation_equals_single_process_evaluation(ddp_run):
    got = json.loads((ddp_run / "eval.json").read_text())
    val = sc.data()["val"]
    model = sc.dual(seed=4)
    rep = evaluate_dual(model, val)
    assert got["dual"] == pytest.approx(rep.metrics)
    assert got["dual_ranks"] == to_jsonable([rep.i2t_ranks, rep.t2i_ranks])
    assert got["model"] == pytest.approx(evaluate_model(model, val).metrics)
    crep = evaluate_cross(sc.cross(seed=4), val)
    assert got["cross"] == pytest.approx(crep.metrics)
    assert got["cross_ranks"] == to_jsonable([crep.i2t_ranks, crep.t2i_ranks])


def test_two_process_training_reaches_the_metrics_of_one_process_with_the_same_global_batch(
    ddp_run, tmp_path
):
    got = json.loads((ddp_run / "run_ddp.json").read_text())
    ref = run_retrieval(sc.run_config(batch=2 * sc.PER_RANK_BATCH), tmp_path / "run", data=sc.data())
    assert [e["epoch"] for e in got["dev_curve"]] == [1, 2]
    for a, b in zip(got["dev_curve"], ref["dev_curve"]):
        assert a == pytest.approx(b, abs=1e-6)
    assert got["metrics"] == pytest.approx(ref["metrics"], abs=1e-6)
    # The log holds the global batch's loss (averaged over ranks), step by step, written by rank 0 only.
    log_ddp = [json.loads(s) for s in (ddp_run / "run_ddp" / "log.jsonl").read_text().splitlines()]
    log_ref = [json.loads(s) for s in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_ddp] == [r["step"] for r in log_ref]
    losses_ddp = [r["loss"] for r in log_ddp if "loss" in r]
    assert len(losses_ddp) == 6  # 3 steps per epoch (5 micro-batches of 8 in 2 accumulation steps) x 2
    assert losses_ddp == pytest.approx([r["loss"] for r in log_ref if "loss" in r], rel=1e-4)


def test_ddp_run_resumed_after_a_stop_ends_like_an_uninterrupted_one(ddp_run):
    got = json.loads((ddp_run / "resume.json").read_text())
    assert got["resumed"] == got["full"]
    assert got["resumed_metrics"] == got["full_metrics"]
    ck = torch.load(ddp_run / "resume_cut" / "ckpt" / "last.pt", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng_ranks"]) == 2


def test_ranks_are_seeded_with_an_offset_after_model_initialisation(ddp_run):
    draws = json.loads((ddp_run / "draws.json").read_text())
    assert draws[0] != draws[1]


def test_the_loop_shards_global_batches_of_a_task_without_local_batch(ddp_run, tmp_path):
    got = torch.load(ddp_run / "reg_ddp.pt", weights_only=True)
    model = sc.regression_model()
    fit(
        model,
        sc.RegressionTask(12),
        TrainConfig(epochs=2, lr=0.05, optimizer="sgd", log_every=1, grad_clip=0),
        tmp_path / "reg",
    )
    _close(got, dict(model.state_dict()), rtol=1e-5)


def test_a_task_that_bypasses_ddp_is_stopped_at_its_first_step(ddp_run):
    message = (ddp_run / "bypass.txt").read_text()
    assert "gradients differ between ranks" in message and "forward_through" in message


def test_commonit_steps_are_one_group_across_both_ranks_and_rank_shards_are_disjoint(ddp_run):
    got = json.loads((ddp_run / "commonit.json").read_text())
    groups = sc.COMMONIT_GROUPS
    seen = got["seen"]  # per rank: [epoch, micro-batch index, example indices]
    assert got["weights"][0] == got["weights"][1]  # DDP kept the replicas identical
    A = sc.COMMONIT_A
    for epoch in (0, 1):
        per_rank = [[(i, idx) for e, i, idx in rank if e == epoch] for rank in seen]
        assert [i for i, _ in per_rank[0]] == [i for i, _ in per_rank[1]] == list(range(got["len"]))
        steps = got["len"] // A
        for s in range(steps):
            examples = [x for rank in per_rank for i, idx in rank if i // A == s for x in idx]
            assert len({groups[x] for x in examples}) == 1, f"epoch {epoch} step {s} mixes groups"
        shards = [{x for _, idx in rank for x in idx} for rank in per_rank]
        assert not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(range(len(groups)))
        # The ranks trained exactly the sampler's plan: slot r*A + a of each step is rank r's a-th
        # micro-batch.
        ref = CommonITBatchSampler(
            groups, sc.COMMONIT_B, world_size=2, grad_accum_steps=A, seed=2, warn=False
        )
        for s, (_, batches) in enumerate(ref.steps(epoch)):
            for r in range(2):
                assert [idx for i, idx in per_rank[r] if i // A == s] == batches[r * A : (r + 1) * A]
