"""DCD under DDP: one 2-process step (per-rank batch B) equals one process with the global batch 2B.

The 2-process side runs in the shared session (``ddp_run``, :func:`ddp_scenarios.dcd_step`); each test
computes the one-process reference here. The global batch holds 9 images (3 near-duplicate groups), so
the ranks hold 5 + 4: uneven shards.
"""

from __future__ import annotations

import ddp_scenarios as sc
import numpy as np
import pytest
import torch
from test_ddp_equivalence import _close

from alignlab.distill.dcd.train import DCDBatch

CASES = [c[0] for c in sc.DCD_CASES]


def _reference(case: str, batch: DCDBatch | None = None):
    """``(terms, gradients, global batch, task)`` of one process with the global batch (or with ``batch``)."""
    task, student = sc.dcd_task(case, 2 * sc.DCD_PER_RANK)
    b = task.batch(0, 0) if batch is None else batch
    terms = task.loss(student, b)
    sum(terms.values()).backward()
    g = sc.grads(student)
    g.update({f"task.{i}": p.grad.detach().clone() for i, p in enumerate(task.parameters())})
    return terms, g, b, task


@pytest.mark.parametrize("case", CASES)
def test_one_ddp_dcd_step_equals_one_process_with_the_global_batch(ddp_run, case):
    got = torch.load(ddp_run / f"dcd_{case}.pt", weights_only=True)
    terms, g, b, task = _reference(case)
    assert len(b.images) == 9 and [m["shard"] for m in got["mined"]] == [[0, 5, 9], [5, 9, 9]]
    assert got["ranks_agree"]  # DDP left the same averaged gradient on both ranks
    assert set(got["loss"]) == set(terms)
    for k, v in terms.items():
        assert got["loss"][k] == pytest.approx(float(v.detach()), rel=1e-5, abs=1e-7), k
    _close(got["grads"], g)
    # The weight diagnostics are those of the global batch (weights normalised over all 9 images).
    assert got["diagnostics"] == pytest.approx(task.loss_fn.last, rel=1e-5)


@pytest.mark.parametrize("case", ["dcd", "no-kd", "dcd-shuffled"])
def test_every_rank_mined_its_rows_of_the_one_process_batch(ddp_run, case):
    got = torch.load(ddp_run / f"dcd_{case}.pt", weights_only=True)
    _, _, b, task = _reference(case)
    mined = got["mined"]
    assert np.concatenate([m["images"] for m in mined]).tolist() == b.images.tolist()
    cand = np.concatenate([m["candidates"] for m in mined])
    assert cand.tolist() == b.candidates.tolist()  # the same positives and the same kept negatives
    if b.teacher is None:
        assert all(m["teacher"] is None for m in mined)
        return
    teacher = torch.tensor([row for m in mined for row in m["teacher"]])
    assert torch.equal(teacher, b.teacher)
    # Each row's scores belong to its own candidates, positive first: score them again and compare.
    rescored = task.ts.pair_scores(np.repeat(b.images, cand.shape[1]), cand.reshape(-1)).view(cand.shape)
    torch.testing.assert_close(teacher, rescored, rtol=1e-5, atol=1e-5)
    assert all(int(c) in task.train.relevance[int(i)] for i, c in zip(b.images, cand[:, 0]))


def test_per_shard_weighting_would_not_give_the_one_process_step(ddp_run):
    """The old behaviour (each rank's shard treated as a batch of its own: weights normalised over the
    shard, caption -> image negatives from the shard) differs from the global step: the test above can
    fail."""
    got = torch.load(ddp_run / "dcd_dcd.pt", weights_only=True)
    _, g_ref, b, task = _reference("dcd")
    w_global, _ = task.loss_fn.weights(b.teacher)
    per_shard: list[dict[str, torch.Tensor]] = []
    for lo, hi in ((0, 5), (5, 9)):
        part = DCDBatch(b.images[lo:hi], b.candidates[lo:hi], b.teacher[lo:hi], None, 0, 0)
        w_local, _ = task.loss_fn.weights(part.teacher)
        # Normalised over the shard's 5 (or 4) rows, then averaged over 2 ranks: not the global weights.
        assert not torch.allclose(w_local / 2, w_global[lo:hi], rtol=1e-3)
        per_shard.append(_reference("dcd", part)[1])
    old = {k: (per_shard[0][k] + per_shard[1][k]) / 2 for k in g_ref}  # what DDP's average made of them
    with pytest.raises(AssertionError):
        _close(old, g_ref)
    _close(got["grads"], g_ref)  # while the gathered, globally weighted step matches
