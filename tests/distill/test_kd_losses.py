"""KD loss numerics: golden values from an independent NumPy reference, hand computations, gradients.

The golden file ``kd_golden.json`` was written by running this file as a script::

    .venv/bin/python tests/distill/test_kd_losses.py --write

which evaluates the formulas below in float64 NumPy (no torch, no alignlab code) on fixed inputs.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignlab.distill.kd import (
    LearnedTemperature,
    dml_loss,
    entropy,
    expected_calibration_error,
    kd_kl,
    label_smoothing_loss,
    max_prob,
    vanilla_kd_loss,
)

GOLDEN = Path(__file__).with_name("kd_golden.json")

# Fixed inputs of the golden file: 3 examples, 4 classes.
STUDENT = [[1.0, 0.5, -0.3, 2.0], [0.0, 0.0, 0.0, 0.0], [-1.2, 3.1, 0.7, 0.2]]
TEACHER = [[4.0, -2.0, 0.5, 6.0], [10.0, 0.0, -5.0, 1.0], [-3.0, 8.0, 2.0, 0.0]]
LABELS = [3, 0, 1]


def _np_reference() -> dict:
    """The golden values, from the textbook formulas in float64 NumPy."""
    zs, zt, y = np.array(STUDENT), np.array(TEACHER), np.array(LABELS)

    def softmax(z, T):
        e = np.exp(z / T - (z / T).max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    out = {
        "command": ".venv/bin/python tests/distill/test_kd_losses.py --write",
        "inputs": {"student": STUDENT, "teacher": TEACHER, "labels": LABELS},
        "values": {},
    }
    for T in (1.0, 4.0, 6.0):
        p, q = softmax(zs, T), softmax(zt, T)
        kl = (q * (np.log(q) - np.log(p))).sum(axis=1) * T * T
        out["values"][f"kd_kl_T{T:g}"] = kl.tolist()
        out["values"][f"entropy_teacher_T{T:g}"] = (-(q * np.log(q)).sum(axis=1)).tolist()
        out["values"][f"maxp_teacher_T{T:g}"] = q.max(axis=1).tolist()
    p1 = softmax(zs, 1.0)
    ce = -np.log(p1[np.arange(3), y])
    out["values"]["ce_mean"] = float(ce.mean())
    for eps in (0.1, 0.3):
        target = np.full((3, 4), eps / 4)
        target[np.arange(3), y] += 1 - eps
        out["values"][f"label_smoothing_eps{eps:g}"] = float((-(target * np.log(p1)).sum(axis=1)).mean())
    alpha, T = 0.9, 4.0
    out["values"]["vanilla_kd_ce"] = float((1 - alpha) * ce.mean())
    out["values"]["vanilla_kd_kd"] = float(alpha * np.mean(out["values"]["kd_kl_T4"]))
    return out


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_kd_terms_match_the_golden_numpy_reference():
    golden = json.loads(GOLDEN.read_text())
    assert golden["inputs"] == {"student": STUDENT, "teacher": TEACHER, "labels": LABELS}
    v = golden["values"]
    zs, zt, y = _t(STUDENT), _t(TEACHER), torch.tensor(LABELS)
    for T in (1.0, 4.0, 6.0):
        assert kd_kl(zs, zt, T).tolist() == pytest.approx(v[f"kd_kl_T{T:g}"], rel=1e-10)
        assert entropy(zt, T).tolist() == pytest.approx(v[f"entropy_teacher_T{T:g}"], rel=1e-10)
        assert max_prob(zt, T).tolist() == pytest.approx(v[f"maxp_teacher_T{T:g}"], rel=1e-10)
    for eps in (0.1, 0.3):
        assert float(label_smoothing_loss(zs, y, eps)) == pytest.approx(
            v[f"label_smoothing_eps{eps:g}"], rel=1e-10
        )
    terms = vanilla_kd_loss(zs, zt, y, T=4.0, alpha=0.9)
    assert set(terms) == {"ce_loss", "kd_loss"}
    assert float(terms["ce_loss"]) == pytest.approx(v["vanilla_kd_ce"], rel=1e-10)
    assert float(terms["kd_loss"]) == pytest.approx(v["vanilla_kd_kd"], rel=1e-10)


def test_kd_kl_by_hand_two_classes():
    # Teacher logits [0, ln 3] give q = (1/4, 3/4); a uniform student gives p = (1/2, 1/2).
    # KL(q || p) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812035...
    hand = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    zt = _t([[0.0, math.log(3.0)]])
    zs = _t([[5.0, 5.0]])
    assert float(kd_kl(zs, zt, T=1.0)[0]) == pytest.approx(hand, rel=1e-12)
    # At T = 2 the teacher logits [0, 2 ln 3] soften to the same q, and the term is multiplied by T² = 4.
    assert float(kd_kl(zs, _t([[0.0, 2 * math.log(3.0)]]), T=2.0)[0]) == pytest.approx(4 * hand, rel=1e-12)
    # Entropy of (1/4, 3/4) and its max probability, by hand.
    assert float(entropy(zt)[0]) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-12)
    assert float(max_prob(zt)[0]) == pytest.approx(0.75, rel=1e-12)


def test_kd_kl_is_zero_only_for_identical_distributions_and_never_negative():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 7, generator=g, dtype=torch.float64)
    b = torch.randn(50, 7, generator=g, dtype=torch.float64)
    assert torch.allclose(kd_kl(a, a + 3.0, T=2.0), torch.zeros(50, dtype=torch.float64), atol=1e-12)
    kl = kd_kl(a, b, T=3.0)
    assert (kl > 0).all()


def test_label_smoothing_matches_torch_and_reduces_to_ce():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(20, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 6, (20,), generator=g)
    for eps in (0.0, 0.1, 0.25):
        ours = label_smoothing_loss(z, y, eps)
        assert float(ours) == pytest.approx(float(F.cross_entropy(z, y, label_smoothing=eps)), rel=1e-10)
    with pytest.raises(ValueError):
        label_smoothing_loss(z, y, 1.0)


def test_vanilla_kd_does_not_send_gradients_into_the_teacher():
    zs = torch.randn(4, 5, requires_grad=True)
    zt = torch.randn(4, 5, requires_grad=True)
    sum(vanilla_kd_loss(zs, zt, torch.tensor([0, 1, 2, 3]), T=4.0).values()).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None


def test_dml_trains_each_network_only_through_its_own_terms():
    za = torch.randn(4, 3, requires_grad=True)
    zb = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    terms = dml_loss(za, zb, y, T=2.0, alpha=0.5)
    assert set(terms) == {"ce_a_loss", "kl_a_loss", "ce_b_loss", "kl_b_loss"}
    terms["kl_a_loss"].backward()
    assert za.grad is not None and za.grad.abs().sum() > 0
    assert zb.grad is None  # the peer is a detached target


def test_learned_temperature_divides_the_logits_by_a_positive_tau():
    lt = LearnedTemperature(init=2.0)
    z = torch.tensor([[2.0, -4.0]])
    assert torch.allclose(lt(z), z / 2.0)
    with torch.no_grad():
        lt.log_tau.fill_(-50.0)  # any real parameter value is still a positive temperature
    assert lt.tau > 0
    with pytest.raises(ValueError):
        LearnedTemperature(init=0.0)


def test_ece_by_hand():
    # Two classes; two predictions at confidence 0.9 (one right, one wrong) and two at 0.6 (both right).
    # With 4 bins: bin (0.75, 1] has acc 0.5, conf 0.9; bin (0.5, 0.75] has acc 1.0, conf 0.6.
    # ECE = 0.5 * |0.5 - 0.9| + 0.5 * |1.0 - 0.6| = 0.4.
    z = _t([[math.log(9.0), 0.0], [math.log(9.0), 0.0], [math.log(1.5), 0.0], [0.0, math.log(1.5)]])
    y = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(z, y, n_bins=4) == pytest.approx(0.4, abs=1e-12)
    # A perfectly confident, always-right model is perfectly calibrated.
    assert expected_calibration_error(_t([[50.0, 0.0], [0.0, 50.0]]), torch.tensor([0, 1])) == pytest.approx(
        0.0, abs=1e-12
    )


def test_uniform_logits_have_maximal_entropy():
    z = torch.zeros(3, 10)
    assert torch.allclose(entropy(z, T=4.0), torch.full((3,), math.log(10.0)))
    assert torch.allclose(max_prob(z), torch.full((3,), 0.1))


if __name__ == "__main__":
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(_np_reference(), indent=1) + "\n")
        print(f"wrote {GOLDEN}")
