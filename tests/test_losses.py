"""Losses: analytic values, reference implementations, masking of unlabeled samples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from brats_mtl.config import LossConfig
from brats_mtl.losses import (
    classification_loss,
    kl_divergence,
    multitask_loss,
    reconstruction_loss,
    soft_dice_loss,
)
from brats_mtl.model import MultiTaskOutput


def _onehot(classes: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(classes, n).movedim(-1, 1).double()


# --- Dice -------------------------------------------------------------------------------


def test_dice_is_zero_for_a_perfect_one_hot_prediction():
    classes = torch.randint(0, 4, (2, 6, 5, 4), generator=torch.Generator().manual_seed(0))
    classes[1] = 0  # second sample: only background, three classes absent on both sides
    loss = soft_dice_loss(_onehot(classes, 4), classes)
    torch.testing.assert_close(loss, torch.zeros(2, dtype=torch.float64))


def test_dice_is_near_one_for_disjoint_prediction():
    classes = torch.randint(0, 4, (2, 6, 5, 4), generator=torch.Generator().manual_seed(1))
    loss = soft_dice_loss(_onehot((classes + 1) % 4, 4), classes, smooth=1e-5)
    assert ((loss > 0.999) & (loss <= 1)).all()
    assert soft_dice_loss(_onehot((classes + 1) % 4, 4), classes, smooth=0.0).eq(1).all()


def test_dice_hand_example():
    # one sample, two classes, four voxels; smooth 0
    p1 = torch.tensor([0.9, 0.2, 0.6, 0.1], dtype=torch.float64)
    probs = torch.stack([1 - p1, p1]).view(1, 2, 4, 1, 1)
    target = torch.tensor([1, 0, 1, 0]).view(1, 4, 1, 1)
    # class 1: 2 * 1.5 / (1.22 + 2); class 0: 2 * 1.7 / (1.62 + 2)
    expected = 1 - (3.0 / 3.22 + 3.4 / 3.62) / 2
    torch.testing.assert_close(soft_dice_loss(probs, target, smooth=0.0).item(), expected)


def test_dice_matches_monai_v_net_form():
    monai_losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(3, 4, 9, 8, 7, generator=g, dtype=torch.float64), 1)
    target = torch.randint(0, 4, (3, 9, 8, 7), generator=g)
    reference = monai_losses.DiceLoss(
        include_background=True,
        to_onehot_y=True,
        squared_pred=True,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        reduction="none",
    )(probs, target[:, None])  # (B, C, 1, 1, 1)
    torch.testing.assert_close(soft_dice_loss(probs, target), reference.flatten(1).mean(1))


def test_dice_rejects_bad_targets():
    probs = torch.full((1, 4, 2, 2, 2), 0.25)
    with pytest.raises(ValueError, match="0..3"):
        soft_dice_loss(probs, torch.full((1, 2, 2, 2), 4))
    with pytest.raises(ValueError, match="must be"):
        soft_dice_loss(probs, torch.zeros(1, 2, 2, 3, dtype=torch.long))


# --- L2, KL, CE -------------------------------------------------------------------------


def test_kl_is_zero_for_the_standard_normal():
    zeros = torch.zeros(2, 5, 3, 3, 3)
    assert kl_divergence(zeros, zeros).item() == 0.0


def test_kl_hand_example_and_torch_distributions():
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64).view(1, 2, 1, 1, 1)
    logvar = torch.tensor([0.0, math.log(4.0)], dtype=torch.float64).view(1, 2, 1, 1, 1)
    # 0.5 (mu^2 + sigma^2 - log sigma^2 - 1): 0.5 and 0.5 (4 + 4 - log 4 - 1); mean of both
    expected = (0.5 + 0.5 * (7.0 - math.log(4.0))) / 2
    torch.testing.assert_close(kl_divergence(mu, logvar).item(), expected)
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(2, 3, 4, 4, 4, generator=g), torch.randn(2, 3, 4, 4, 4, generator=g)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * logvar)), torch.distributions.Normal(0, 1)
    ).mean()
    torch.testing.assert_close(kl_divergence(mu, logvar), reference)


def test_l2_and_ce_hand_values():
    image = torch.zeros(1, 2, 1, 1, 2)
    recon = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 2, 1, 1, 2)
    assert reconstruction_loss(image, recon).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert classification_loss(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))


# --- the multi-task sum -----------------------------------------------------------------


def _output(batch: int, vae: bool, seed: int = 0) -> tuple[MultiTaskOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 4, 6, 5, 4)

    def rand(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()

    image = torch.randn(shape, generator=g, dtype=torch.float64)
    if not vae:
        return MultiTaskOutput(rand(*shape), rand(batch, 2)), image
    return MultiTaskOutput(
        rand(*shape), rand(batch, 2), rand(*shape), rand(batch, 3, 2, 2, 2), rand(batch, 3, 2, 2, 2)
    ), image


def test_weighted_sum_of_named_terms():
    out, image = _output(2, vae=True)
    classes = torch.randint(0, 4, (2, 6, 5, 4), generator=torch.Generator().manual_seed(4))
    et = torch.tensor([1, 0])
    config = LossConfig(w_l2=0.2, w_kl=0.3, w_ce=0.4, w_dice=0.5)
    terms = multitask_loss(out, image, classes, et, torch.tensor([True, True]), config)
    assert set(terms) == {"loss", "dice", "l2", "kl", "ce"}
    dice = soft_dice_loss(torch.softmax(out.seg_logits, 1), classes, smooth=config.dice_smooth)
    torch.testing.assert_close(terms["dice"], dice.mean())
    torch.testing.assert_close(terms["ce"], F.cross_entropy(out.cls_logits, et))
    torch.testing.assert_close(terms["l2"], F.mse_loss(out.recon, image))
    torch.testing.assert_close(terms["kl"], kl_divergence(out.mu, out.logvar))
    expected = 0.2 * terms["l2"] + 0.3 * terms["kl"] + 0.4 * terms["ce"] + 0.5 * terms["dice"]
    torch.testing.assert_close(terms["loss"], expected)
    # the paper's weights
    paper = multitask_loss(out, image, classes, et, torch.tensor([True, True]), LossConfig())
    expected = 0.1 * (paper["l2"] + paper["kl"] + paper["ce"]) + paper["dice"]
    torch.testing.assert_close(paper["loss"], expected)


def test_unlabeled_samples_are_masked_out_of_dice_and_ce():
    out, image = _output(2, vae=True)
    classes = torch.randint(0, 4, (2, 6, 5, 4), generator=torch.Generator().manual_seed(5))
    classes[1] = 255  # unlabeled: targets are never read
    labeled = torch.tensor([True, False])
    terms = multitask_loss(out, image, classes, torch.tensor([1, -1]), labeled, LossConfig())
    dice0 = soft_dice_loss(torch.softmax(out.seg_logits[:1], 1), classes[:1])
    torch.testing.assert_close(terms["dice"], dice0[0])
    torch.testing.assert_close(terms["ce"], F.cross_entropy(out.cls_logits[:1], torch.tensor([1])))
    terms["loss"].backward()
    assert out.seg_logits.grad[0].any() and out.cls_logits.grad[0].any()
    assert torch.equal(out.seg_logits.grad[1], torch.zeros_like(out.seg_logits.grad[1]))
    assert torch.equal(out.cls_logits.grad[1], torch.zeros(2, dtype=torch.float64))


def test_all_unlabeled_gives_exact_zero_dice_and_ce():
    out, image = _output(2, vae=True)
    classes = torch.full((2, 6, 5, 4), -1)
    terms = multitask_loss(
        out, image, classes, torch.tensor([-1, -1]), torch.tensor([False, False]), LossConfig()
    )
    assert terms["dice"].item() == 0.0 and terms["ce"].item() == 0.0
    terms["loss"].backward()
    assert torch.equal(out.seg_logits.grad, torch.zeros_like(out.seg_logits))
    assert torch.equal(out.cls_logits.grad, torch.zeros_like(out.cls_logits))
    assert out.recon.grad.any() and out.mu.grad.any() and out.logvar.grad.any()
    torch.testing.assert_close(terms["loss"], 0.1 * terms["l2"] + 0.1 * terms["kl"])


def test_without_vae_l2_and_kl_are_zero():
    out, image = _output(2, vae=False)
    classes = torch.zeros(2, 6, 5, 4, dtype=torch.long)
    terms = multitask_loss(
        out, image, classes, torch.tensor([0, 0]), torch.tensor([True, True]), LossConfig()
    )
    assert terms["l2"].item() == 0.0 and terms["kl"].item() == 0.0
    torch.testing.assert_close(terms["loss"], 0.1 * terms["ce"] + terms["dice"])


def test_mismatched_shapes_are_rejected():
    out, image = _output(2, vae=False)
    with pytest.raises(ValueError, match="class_targets"):
        multitask_loss(
            out,
            image,
            torch.zeros(2, 6, 5, dtype=torch.long),
            torch.tensor([0, 0]),
            torch.tensor([True, True]),
            LossConfig(),
        )
