"""The DCD loss: difficulty weights, their effect on gradients, released-code mode, baselines."""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.core.config import from_dict
from alignlab.core.errors import ConfigError
from alignlab.distill.dcd.baselines import FeatureMSE, relation_kd_terms
from alignlab.distill.dcd.loss import (
    DCDLoss,
    DCDLossConfig,
    difficulty_weights,
    entropy,
    kd_terms,
    kd_weights,
    self_terms,
)
from alignlab.distill.dcd.train import torch_threads


def _scores(seed: int = 0, b: int = 6, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(b, n, generator=g)
    # Rows of very different sharpness, so the teacher's entropies (and the weights) differ.
    teacher = torch.randn(b, n, generator=g) * torch.linspace(0.1, 6.0, b)[:, None]
    return student, teacher


def test_difficulty_weights_are_normalised_entropies():
    teacher = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.5, 0.0]])
    w = difficulty_weights(teacher)
    h = entropy(teacher)
    assert torch.allclose(w, h / h.sum())
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-6)
    assert float(h[1]) == pytest.approx(math.log(3))  # a uniform row has maximal entropy ...
    assert int(w.argmax()) == 1 and int(w.argmin()) == 0  # ... and is the hardest sample


def test_kd_weights_are_a_softmax_of_one_minus_w_squared():
    w = torch.tensor([0.1, 0.3, 0.6])
    r = kd_weights(w)
    expected = torch.exp((1 - w) ** 2) / torch.exp((1 - w) ** 2).sum()
    assert torch.allclose(r, expected)
    assert int(r.argmax()) == 0  # easy samples (low w) get the most distillation


def test_weights_multiply_per_sample_terms_before_the_reduction():
    s, t = _scores()
    cfg = DCDLossConfig(alpha=0.3, temperature=2.0)
    out = DCDLoss(cfg)(s, t)
    w = difficulty_weights(t)
    r = kd_weights(w)
    assert torch.allclose(out["self_loss"], 0.7 * (w * self_terms(s)).sum())
    assert torch.allclose(out["kd_loss"], 0.3 * (r * kd_terms(s, t, 2.0)).sum())


def test_weighting_off_gives_plain_means_static_kd():
    s, t = _scores(1)
    out = DCDLoss(DCDLossConfig(alpha=0.2, weighting=False))(s, t)
    assert torch.allclose(out["self_loss"], 0.8 * self_terms(s).mean())
    assert torch.allclose(out["kd_loss"], 0.2 * kd_terms(s, t, 1.0).mean())


def _grad(cfg: DCDLossConfig, term: str | None = None, seed: int = 2) -> torch.Tensor:
    s, t = _scores(seed)
    s.requires_grad_(True)
    out = DCDLoss(cfg)(s, t)
    (out[term] if term else sum(out.values())).backward()
    return s.grad.clone()


def test_dynamic_weights_change_the_gradients():
    on, off = DCDLossConfig(weighting=True), DCDLossConfig(weighting=False)
    for term in ("self_loss", "kd_loss", None):
        g_on, g_off = _grad(on, term), _grad(off, term)
        assert not torch.allclose(g_on, g_off, atol=1e-7), term
    # Per sample, the self term's gradient scales exactly with the sample's weight.
    s, t = _scores(2)
    w = difficulty_weights(t)
    g_on, g_off = _grad(on, "self_loss"), _grad(off, "self_loss")
    ratio = g_on.norm(dim=1) / g_off.norm(dim=1)
    assert torch.allclose(ratio, w * len(w), rtol=1e-4)


def test_released_mode_makes_the_kd_weights_do_nothing():
    # Rows already in the teacher's order (positive first, mined negatives hardest first, as the miner
    # returns them when the teacher ranks the positive first): the sort changes nothing, isolating defect 1.
    s, t = _scores(3)
    t = torch.sort(t, dim=1, descending=True).values
    s.requires_grad_(True)
    rel = DCDLoss(DCDLossConfig(mode="released", weighting=True))(s, t)["kd_loss"]
    static = DCDLoss(DCDLossConfig(mode="correct", weighting=False))(s, t)["kd_loss"]
    dynamic = DCDLoss(DCDLossConfig(mode="correct", weighting=True))(s, t)["kd_loss"]
    assert torch.allclose(rel, static)  # weighted after reduction == unweighted
    assert not torch.allclose(dynamic, static)  # while the correct form does weight the samples


def test_released_mode_misaligns_only_when_the_teacher_does_not_rank_the_positive_first():
    s = torch.tensor([[1.0, 0.5, 0.2], [0.3, 0.1, 0.9]])
    t = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])  # row 0: positive first; row 1: last
    off_rel = DCDLoss(DCDLossConfig(alpha=1.0, mode="released", weighting=False))
    off_ok = DCDLoss(DCDLossConfig(alpha=1.0, mode="correct", weighting=False))
    d_rel = float(off_rel(s[:1], t[:1])["kd_loss"])
    d_ok = float(off_ok(s[:1], t[:1])["kd_loss"])
    assert d_rel == pytest.approx(d_ok)
    d_rel = float(off_rel(s[1:], t[1:])["kd_loss"])
    d_ok = float(off_ok(s[1:], t[1:])["kd_loss"])
    # Released code compares the student's [pos, n1, n2] with the teacher's sorted [3, 2, 1].
    assert d_rel == pytest.approx(float(((s[1] - torch.tensor([3.0, 2.0, 1.0])) ** 2).mean()))
    assert d_rel != pytest.approx(d_ok)


def test_shuffled_weights_are_a_seeded_permutation_of_the_weights():
    _, t = _scores(4)
    loss = DCDLoss(DCDLossConfig(shuffle_weights=True))
    w, r = loss.weights(t, generator=torch.Generator().manual_seed(0))
    w0, r0 = difficulty_weights(t), kd_weights(difficulty_weights(t))
    assert torch.allclose(torch.sort(w).values, torch.sort(w0).values)
    assert not torch.allclose(w, w0)
    perm = torch.randperm(len(w0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(w, w0[perm]) and torch.equal(r, r0[perm])


def test_alpha_without_teacher_scores_and_bad_settings_are_config_errors():
    s, _ = _scores()
    with pytest.raises(ConfigError):
        DCDLoss(DCDLossConfig(alpha=0.2, weighting=False))(s, None)
    with pytest.raises(ConfigError):
        from_dict(DCDLossConfig, {"mode": "paper"})
    with pytest.raises(ConfigError):
        from_dict(DCDLossConfig, {"temperature": 0})
    out = DCDLoss(DCDLossConfig(alpha=0.0, weighting=False))(s, None)
    assert set(out) == {"self_loss"}


def test_relation_kd_is_zero_for_identical_grids_and_pulls_towards_the_teacher():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(5, 5, generator=g) * 3
    assert float(relation_kd_terms(teacher.clone(), teacher).abs().max()) < 1e-6
    student = torch.zeros(5, 5, requires_grad=True)
    opt = torch.optim.SGD([student], lr=2.0)
    first = float(relation_kd_terms(student, teacher).mean().detach())
    with torch_threads(1):  # tiny ops: one thread avoids thread-pool overhead on a busy machine
        for _ in range(30):
            loss = relation_kd_terms(student, teacher).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert float(loss.detach()) < 0.2 * first


def test_feature_mse_trains_its_projection():
    g = torch.Generator().manual_seed(0)
    fm = FeatureMSE(4, 6)
    s_img, s_txt = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    t_img, t_txt = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    per = fm(s_img, s_txt, t_img, t_txt)
    assert per.shape == (8,)
    per.mean().backward()
    assert fm.image.weight.grad is not None and fm.image.weight.grad.abs().sum() > 0
