"""Contrastive losses: values against plain loop references, gradients by finite differences, weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alignlab.core.errors import ConfigError
from alignlab.train.losses import LOSSES, InfoNCELoss, VSEHingeLoss, build_loss


def _emb(b=5, d=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (
        F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=-1),
        F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=-1),
    )


def infonce_reference(img, txt, scale):
    b = len(img)
    total = 0.0
    for k in range(b):
        row = [scale * float(img[k] @ txt[j]) for j in range(b)]
        col = [scale * float(img[j] @ txt[k]) for j in range(b)]
        total += 0.5 * (-row[k] + math.log(sum(math.exp(v) for v in row)))
        total += 0.5 * (-col[k] + math.log(sum(math.exp(v) for v in col)))
    return total / b


def hinge_reference(img, txt, margin, hardest):
    b = len(img)
    s = [[float(img[i] @ txt[j]) for j in range(b)] for i in range(b)]
    total = 0.0
    for k in range(b):
        ct = [max(0.0, margin - s[k][k] + s[k][c]) for c in range(b) if c != k]
        ci = [max(0.0, margin - s[k][k] + s[i][k]) for i in range(b) if i != k]
        total += (max(ct) + max(ci)) if hardest else (sum(ct) + sum(ci))
    return total / b


def test_infonce_matches_a_loop_reference():
    img, txt = _emb()
    got = InfoNCELoss()(img, txt, torch.tensor(7.0, dtype=torch.float64))["contrastive_loss"]
    assert got.item() == pytest.approx(infonce_reference(img, txt, 7.0), rel=1e-12)


@pytest.mark.parametrize("hardest", [False, True])
def test_vse_hinge_matches_a_loop_reference(hardest):
    img, txt = _emb(b=6, seed=3)
    got = VSEHingeLoss(margin=0.3, max_violation=hardest)(img, txt)["hinge_loss"]
    assert got.item() == pytest.approx(hinge_reference(img, txt, 0.3, hardest), rel=1e-12)


def test_gradients_agree_with_finite_differences():
    img, txt = _emb(b=4, d=3, seed=1)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, s: InfoNCELoss()(a, b, s)["contrastive_loss"], (img, txt, scale)
    )
    # The hinge is piecewise linear: check away from kinks (margin chosen so no term sits at zero).
    assert torch.autograd.gradcheck(lambda a, b: VSEHingeLoss(0.37, False)(a, b)["hinge_loss"], (img, txt))
    assert torch.autograd.gradcheck(lambda a, b: VSEHingeLoss(0.37, True)(a, b)["hinge_loss"], (img, txt))


def test_learnable_temperature_receives_a_gradient():
    img, txt = _emb()
    log_scale = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    InfoNCELoss()(img, txt, log_scale.exp())["contrastive_loss"].backward()
    assert log_scale.grad is not None and log_scale.grad.abs() > 0


def test_per_sample_weights_are_applied_before_reduction():
    img, txt = _emb(b=4)
    loss = InfoNCELoss()
    w = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    weighted = loss(img, txt, 3.0, weights=w)["contrastive_loss"]
    per = 0.5 * (
        F.cross_entropy(3.0 * img @ txt.T, torch.arange(4), reduction="none")
        + F.cross_entropy(3.0 * txt @ img.T, torch.arange(4), reduction="none")
    )
    assert weighted.item() == pytest.approx(per[0].item() / 4)
    with pytest.raises(ConfigError, match="weights"):
        loss(img, txt, 3.0, weights=torch.ones(3, dtype=torch.float64))


def test_losses_are_registered_by_name_and_reject_bad_shapes():
    assert set(LOSSES.names()) >= {"infonce", "vse-sum", "vse-max"}
    assert build_loss("vse-max", margin=0.1).max_violation is True
    with pytest.raises(ConfigError, match="unknown loss"):
        build_loss("triplet")
    with pytest.raises(ConfigError, match="must both be"):
        InfoNCELoss()(torch.zeros(3, 4), torch.zeros(2, 4), 1.0)


# --- true captions are not negatives (masked InfoNCE) ---------------------------------------------------


def masked_infonce_reference(img, txt, scale, positives):
    """Per pair k: CE over the captions (images) that are not true of image k (caption k), the target kept."""
    b = len(img)
    total = 0.0
    for k in range(b):
        row = [scale * float(img[k] @ txt[j]) for j in range(b) if j == k or not positives[k][j]]
        col = [scale * float(img[i] @ txt[k]) for i in range(b) if i == k or not positives[i][k]]
        pos = scale * float(img[k] @ txt[k])
        total += 0.5 * (-pos + math.log(sum(math.exp(v) for v in row)))
        total += 0.5 * (-pos + math.log(sum(math.exp(v) for v in col)))
    return total / b


def test_a_caption_true_of_two_images_is_not_a_negative_of_either():
    img, txt = _emb(b=5, seed=3)
    positives = torch.eye(5, dtype=torch.bool)
    positives[0, 2] = True  # caption 2 ("there is a circle") is also true of image 0
    got = float(InfoNCELoss()(img, txt, 10.0, positives=positives)["contrastive_loss"])
    assert got == pytest.approx(masked_infonce_reference(img, txt, 10.0, positives.tolist()), rel=1e-9)
    # Image 0 without caption 2 among its candidates, caption 2 without image 0: the same as deleting
    # that one logit from each of the two softmaxes, and not the plain loss.
    plain = float(InfoNCELoss()(img, txt, 10.0)["contrastive_loss"])
    assert got != pytest.approx(plain, rel=1e-6)
    logits = 10.0 * img @ txt.T
    per = []
    for k in range(5):
        row = [logits[k, j] for j in range(5) if not (k == 0 and j == 2)]
        col = [logits[i, k] for i in range(5) if not (k == 2 and i == 0)]
        per.append(
            0.5 * (torch.logsumexp(torch.stack(row), 0) + torch.logsumexp(torch.stack(col), 0)) - logits[k, k]
        )
    assert got == pytest.approx(float(torch.stack(per).mean()), rel=1e-9)


def test_without_shared_truth_the_masked_loss_is_plain_infonce():
    img, txt = _emb(b=6, seed=4)
    plain = InfoNCELoss()(img, txt, 7.0)["contrastive_loss"]
    for positives in (None, torch.eye(6, dtype=torch.bool)):
        assert float(InfoNCELoss()(img, txt, 7.0, positives=positives)["contrastive_loss"]) == float(plain)
    assert float(plain) == pytest.approx(infonce_reference(img, txt, 7.0), rel=1e-9)


def test_a_true_pair_gets_no_gradient_from_the_contrastive_loss():
    # One-hot image embeddings: logit[i, j] = scale * txt[j, i], so d loss / d txt[3, 1] is the gradient
    # of the (image 1, caption 3) logit.
    img = torch.eye(4, dtype=torch.float64)
    txt = _emb(b=4, seed=5)[1].clone().requires_grad_(True)
    positives = torch.eye(4, dtype=torch.bool)
    positives[1, 3] = True
    (masked,) = torch.autograd.grad(
        InfoNCELoss()(img, txt, 5.0, positives=positives)["contrastive_loss"], txt
    )
    (plain,) = torch.autograd.grad(InfoNCELoss()(img, txt, 5.0)["contrastive_loss"], txt)
    assert float(masked[3, 1]) == 0.0 and float(plain[3, 1]) > 0.0  # plain InfoNCE pushes the true pair apart
    assert torch.isfinite(masked).all() and float(masked[2, 1]) != 0.0  # other negatives still count


def test_hinge_losses_give_a_true_pair_no_cost():
    img, txt = _emb(b=4, seed=6)
    positives = torch.eye(4, dtype=torch.bool)
    positives[2, 0] = True
    for hardest in (False, True):
        loss = VSEHingeLoss(margin=0.2, max_violation=hardest)
        got = float(loss(img, txt, positives=positives)["hinge_loss"])
        # Reference: the pair (image 2, caption 0) is dropped from both sums.
        s = (img @ txt.T).tolist()
        total = 0.0
        for k in range(4):
            ct = [max(0.0, 0.2 - s[k][k] + s[k][c]) for c in range(4) if c != k and not positives[k, c]]
            ci = [max(0.0, 0.2 - s[k][k] + s[i][k]) for i in range(4) if i != k and not positives[i, k]]
            total += (max(ct, default=0.0) + max(ci, default=0.0)) if hardest else (sum(ct) + sum(ci))
        assert got == pytest.approx(total / 4, rel=1e-9)


def test_a_positives_mask_of_the_wrong_size_is_a_config_error():
    img, txt = _emb(b=3)
    with pytest.raises(ConfigError, match="positives"):
        InfoNCELoss()(img, txt, 1.0, positives=torch.eye(4, dtype=torch.bool))
