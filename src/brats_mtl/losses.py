"""Losses of the multi-task network and their weighted sum as named terms.

    L = w_l2 * L2 + w_kl * KL + w_ce * CE + w_dice * Dice      (0.1, 0.1, 0.1, 1 in the paper)

- Dice: multi-class soft Dice loss in the V-Net form (Milletari et al. 2016), per sample
  and class ``1 - (2 sum(p g) + s) / (sum(p^2) + sum(g^2) + s)`` over the voxels, averaged
  over all ``n_classes`` classes, background included (the common BraTS choice; the paper
  says "multi-class Dice loss" without excluding a class), then over the labeled samples.
  ``s`` is ``LossConfig.dice_smooth``; with it a class absent from both prediction and
  target scores 0 loss, not 0/0.
- L2: mean squared error between the input image and the FCVAE reconstruction, averaged
  over every element (batch, channel, voxel).
- KL: KL(N(mu, sigma^2) || N(0, 1)) per latent element,
  ``0.5 (mu^2 + sigma^2 - log sigma^2 - 1)``, averaged over every latent element (batch,
  channel, voxel), so its scale does not depend on the patch or latent size.
- CE: cross-entropy of the ET-presence logits, averaged over the labeled samples.

Unlabeled samples contribute only L2 and KL: their Dice and CE are multiplied by zero,
which keeps the graph connected (every parameter receives a gradient, exactly zero for the
segmentation decoder and classifier when no sample is labeled; distributed training needs
no unused-parameter search) and never produces NaN.

Source: paper 4.2 (Training Procedure); docs/design.md section 3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from brats_mtl.config import LossConfig
from brats_mtl.model.multitask import MultiTaskOutput


def soft_dice_loss(
    probs: torch.Tensor, class_targets: torch.Tensor, *, smooth: float = 1e-5
) -> torch.Tensor:
    """Multi-class soft Dice loss of each sample, V-Net form, averaged over classes.

    Written out rather than taken from MONAI: ``monai.losses.DiceLoss(squared_pred=True)``
    (MONAI >= 1.5) obtains sum(p g) as (|p|^2 + |g|^2 - |p - g|^2) / 2 from vector norms,
    which loses float32 precision on large classes such as the background, and its
    formula has changed between the MONAI versions this package supports. The sums below
    are the V-Net formula itself; tests compare them with MONAI and a float64 reference.

    Args:
        probs: float, (B, C, X, Y, Z): class probabilities (softmax of the logits).
        class_targets: integer, (B, X, Y, Z): class indices in 0..C-1 (see
            ``conventions.labels_to_classes``).
        smooth: added to numerator and denominator of each class's Dice.

    Returns:
        float, (B,): ``1 - mean_c Dice_c`` per sample; 0 for a perfect one-hot prediction,
        close to 1 when prediction and target are disjoint.

    Raises:
        ValueError: if the shapes do not match, or (CPU tensors) a target is not in 0..C-1.

    Source: Milletari et al. 2016 (V-Net), eq. 1; paper 4.2.
    """
    if probs.dim() < 3 or class_targets.shape != probs.shape[:1] + probs.shape[2:]:
        raise ValueError(
            f"soft_dice_loss: probs {tuple(probs.shape)} and class_targets "
            f"{tuple(class_targets.shape)} must be (B, C, X, Y, Z) and (B, X, Y, Z)"
        )
    n_classes = probs.shape[1]
    index = class_targets.long().unsqueeze(1)  # (B, 1, X, Y, Z)
    # checked on CPU only: on an accelerator the check would wait for the device every step
    # (targets from conventions.labels_to_classes are valid by construction)
    on_cpu = index.device.type == "cpu"
    if on_cpu and index.numel() and (index.min() < 0 or index.max() >= n_classes):
        raise ValueError(
            f"soft_dice_loss: class_targets must hold class indices 0..{n_classes - 1}, "
            f"found {index.min().item()}..{index.max().item()}; map labels with "
            "conventions.labels_to_classes"
        )
    onehot = torch.zeros_like(probs).scatter_(1, index, 1.0)  # (B, C, X, Y, Z)
    axes = tuple(range(2, probs.dim()))
    intersection = (probs * onehot).sum(axes)  # (B, C)
    denominator = (probs * probs).sum(axes) + onehot.sum(axes)  # sum(p^2) + sum(g^2)  (B, C)
    dice = (2 * intersection + smooth) / (denominator + smooth)  # (B, C)
    return 1 - dice.mean(1)  # (B,)


def reconstruction_loss(image: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """L2 loss of the FCVAE: mean squared error over every element.

    Args:
        image: float, (B, C, X, Y, Z): the network's input (z-scored).
        recon: float, same shape: the reconstruction.

    Returns:
        float scalar.

    Source: paper 4.2 (L_L2); Myronenko 2018.
    """
    return F.mse_loss(recon, image)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), averaged over every latent element.

    Args:
        mu: float, (B, L, x, y, z): latent mean.
        logvar: float, same shape: latent log-variance.

    Returns:
        float scalar; 0 exactly when mu = 0 and logvar = 0.

    Source: paper 4.2 (L_KL); Kingma & Welling 2014, appendix B.
    """
    return 0.5 * (mu.square() + logvar.exp() - logvar - 1).mean()


def classification_loss(cls_logits: torch.Tensor, et_targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the ET-presence logits, per sample.

    Args:
        cls_logits: float, (B, 2): logits of (no ET, ET).
        et_targets: integer, (B,): 1 when the patch contains ET, else 0.

    Returns:
        float, (B,).

    Source: paper 4.2 (L_class), Table 2.
    """
    return F.cross_entropy(cls_logits, et_targets.long(), reduction="none")


def multitask_loss(
    output: MultiTaskOutput,
    image: torch.Tensor,
    class_targets: torch.Tensor,
    et_targets: torch.Tensor,
    labeled: torch.Tensor,
    config: LossConfig,
) -> dict[str, torch.Tensor]:
    """The paper's weighted multi-task loss and its terms.

    Args:
        output: the network's output for ``image``.
        image: float, (B, C, X, Y, Z): the network's input (target of the reconstruction).
        class_targets: integer, (B, X, Y, Z): class indices 0..n_classes-1; any value for
            unlabeled samples (it is ignored).
        et_targets: integer, (B,): 1 if the patch contains ET, else 0; ignored for
            unlabeled samples.
        labeled: bool, (B,): True for samples with a segmentation.
        config: the loss weights and the Dice smoothing.

    Returns:
        Scalar tensors ``{"loss", "dice", "l2", "kl", "ce"}``; ``loss`` is
        ``w_l2 l2 + w_kl kl + w_ce ce + w_dice dice``. ``dice`` and ``ce`` are means over
        the labeled samples (0 when there are none); ``l2`` and ``kl`` are over all samples
        and 0 when the output has no reconstruction.

    Raises:
        ValueError: if the batch sizes or shapes disagree.

    Source: paper 4.2 (Training Procedure); docs/design.md section 3.
    """
    seg_logits = output.seg_logits
    batch = seg_logits.shape[0]
    if (
        class_targets.shape != seg_logits.shape[:1] + seg_logits.shape[2:]
        or et_targets.shape != (batch,)
        or labeled.shape != (batch,)
        or image.shape[0] != batch
    ):
        raise ValueError(
            f"multitask_loss: seg_logits {tuple(seg_logits.shape)} needs class_targets "
            f"(B, X, Y, Z), et_targets (B,) and labeled (B,); got "
            f"{tuple(class_targets.shape)}, {tuple(et_targets.shape)}, {tuple(labeled.shape)}"
        )
    weight = labeled.to(seg_logits.dtype)  # (B,) 1 labeled, 0 unlabeled
    n_labeled = weight.sum().clamp(min=1)
    keep = labeled.view(-1, *([1] * (class_targets.dim() - 1)))
    # unlabeled targets may hold anything (-1, 255): replace them by a valid class
    class_targets = torch.where(keep, class_targets, torch.zeros_like(class_targets))
    et_targets = torch.where(labeled, et_targets, torch.zeros_like(et_targets))

    probs = torch.softmax(seg_logits, dim=1)  # (B, n_classes, X, Y, Z)
    dice = (soft_dice_loss(probs, class_targets, smooth=config.dice_smooth) * weight).sum()
    dice = dice / n_labeled
    ce = (classification_loss(output.cls_logits, et_targets) * weight).sum() / n_labeled
    if output.recon is None or output.mu is None or output.logvar is None:
        l2 = kl = seg_logits.new_zeros(())
    else:
        l2 = reconstruction_loss(image, output.recon)
        kl = kl_divergence(output.mu, output.logvar)
    loss = config.w_l2 * l2 + config.w_kl * kl + config.w_ce * ce + config.w_dice * dice
    return {"loss": loss, "dice": dice, "l2": l2, "kl": kl, "ce": ce}
