"""The multi-task network: shared encoder -> segmentation decoder, FCVAE decoder, ET classifier.

    image (B, 4, 128^3)
      -> Encoder: stages 0..4, [(B, 28, 128^3), (B, 56, 64^3), ..., (B, 448, 8^3)]
      -> SegmentationDecoder(all stages)      -> seg_logits (B, 4, 128^3)
      -> ETClassifier(stage 4, bottleneck)    -> cls_logits (B, 2)
      -> VAEDecoder(stage 3, 224 x 16^3)      -> recon (B, 4, 128^3), mu, logvar (B, 50, 16^3)

The VAE branch runs only when asked (training; docs/design.md section 5: off at inference). The output
record has the same fields in every mode; branches not run are ``None``. No loss is
computed here (see ``brats_mtl.losses``).

Source: paper 4.2, Fig. 2, Tables 1 and 2; docs/design.md section 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from brats_mtl.config import ModelConfig, check_choice
from brats_mtl.model.classifier import ETClassifier
from brats_mtl.model.decoders import SegmentationDecoder, VAEDecoder
from brats_mtl.model.encoder import Encoder


@dataclass(frozen=True)
class MultiTaskOutput:
    """What ``MultiTaskNet.forward`` returns; the same fields in every mode.

    Attributes:
        seg_logits: float, (B, n_classes, X, Y, Z); class order of
            ``conventions.CLASS_LABELS`` (background, NCR/NET, ED, ET); before softmax.
        cls_logits: float, (B, 2); logits of (no ET, ET) in the patch; before softmax.
        recon: float, (B, in_channels, X, Y, Z): the FCVAE's reconstruction of the input;
            None when the VAE branch did not run.
        mu: float, (B, latent_channels, X/2^(depth-1), ...): latent mean; None likewise.
        logvar: same shape as ``mu``: latent log-variance, sigma = exp(logvar / 2); None
            likewise.
    """

    seg_logits: torch.Tensor
    cls_logits: torch.Tensor
    recon: torch.Tensor | None = None
    mu: torch.Tensor | None = None
    logvar: torch.Tensor | None = None


def nearest_valid_sizes(size: int, multiple: int) -> list[int]:
    """The one or two positive multiples of ``multiple`` closest to ``size`` (below, above)."""
    below = (size // multiple) * multiple
    above = below if below == size else below + multiple
    return sorted({s for s in (below, above) if s > 0})


def check_model_config(config: ModelConfig) -> None:
    """Reject a model configuration that cannot build a consistent network.

    Raises:
        ValueError: naming the ``model.*`` key at fault and a valid value: fewer than two
            widths; a channel count not divisible by ``norm_groups``; a ``patch_size`` that
            is not a multiple of ``2**depth`` (names the nearest valid sizes).
    """
    if len(config.widths) < 2:
        raise ValueError(
            f"model.widths={list(config.widths)} needs at least two stages (one "
            "downsampling); the paper uses [28, 56, 112, 224, 448]"
        )
    grouped = {
        "model.widths": config.widths,
        "model.vae_hidden_channels": (config.vae_hidden_channels,),
        "model.classifier_channels": config.classifier_channels,
    }
    for key, values in grouped.items():
        bad = [c for c in values if c <= 0 or c % config.norm_groups]
        if bad:
            raise ValueError(
                f"{key}: channel counts {bad} are not positive multiples of "
                f"model.norm_groups={config.norm_groups} (GroupNorm splits channels into "
                "equal groups); change the counts or norm_groups"
            )
    if not config.classifier_channels:
        raise ValueError("model.classifier_channels is empty; Table 2 uses [256, 128]")
    check_choice("model.classifier_kernel_size", config.classifier_kernel_size)
    depth = len(config.widths) - 1
    multiple = 2**depth
    if config.patch_size <= 0 or config.patch_size % multiple:
        sizes = " or ".join(map(str, nearest_valid_sizes(max(config.patch_size, 1), multiple)))
        raise ValueError(
            f"model.patch_size={config.patch_size} is not a multiple of {multiple} "
            f"(2**{depth} for {depth} downsamplings); use {sizes}"
        )


class MultiTaskNet(nn.Module):
    """Shared 3D U-Net encoder with a segmentation decoder, an FCVAE decoder and an ET classifier.

    Args:
        config: the ``model`` section of the configuration (the classifier's kernel is
            ``config.classifier_kernel_size``: Table 2 is silent, see
            ``brats_mtl.model.classifier``).

    Attributes:
        encoder: ``Encoder``; ``encoder.widths`` and ``encoder.depth`` size everything else.
        seg_decoder: ``SegmentationDecoder``.
        vae_decoder: ``VAEDecoder`` (own weights, Table 1).
        classifier: ``ETClassifier`` (Table 2).

    Raises:
        ValueError: if the configuration is inconsistent (see ``check_model_config``).

    Example:
        >>> net = MultiTaskNet(tiny_config().model)
        >>> out = net(torch.zeros(2, 4, 32, 32, 32), with_vae=True)
        >>> out.seg_logits.shape, out.cls_logits.shape, out.mu.shape
        (torch.Size([2, 4, 32, 32, 32]), torch.Size([2, 2]), torch.Size([2, 4, 4, 4, 4]))

    Source: paper Fig. 2.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        check_model_config(config)
        self.config = config
        w, groups, slope = tuple(config.widths), config.norm_groups, config.negative_slope
        self.encoder = Encoder(config.in_channels, w, groups, slope)
        self.seg_decoder = SegmentationDecoder(w, config.n_classes, groups, slope)
        self.vae_decoder = VAEDecoder(
            w, config.in_channels, config.vae_hidden_channels, config.latent_channels, groups
        )
        self.classifier = ETClassifier(
            w[-1],
            tuple(config.classifier_channels),
            config.classifier_hidden,
            spatial=config.patch_size // 2**self.encoder.depth,
            norm_groups=groups,
            negative_slope=slope,
            dropout=config.dropout,
            kernel_size=config.classifier_kernel_size,
        )

    @property
    def depth(self) -> int:
        """Number of downsamplings (4 in the paper)."""
        return self.encoder.depth

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features, full resolution first and bottleneck last.

        Args:
            x: float, (B, in_channels, X, Y, Z); X, Y, Z multiples of ``2**depth``.

        Returns:
            ``depth + 1`` tensors, entry ``i`` of shape (B, widths[i], X/2^i, Y/2^i, Z/2^i).

        Raises:
            ValueError: on a wrong number of dimensions or channels, or a spatial size that
                is not a multiple of ``2**depth``.
        """
        self._check_input(x, exact_patch=False)
        return self.encoder(x)

    def forward(
        self,
        x: torch.Tensor,
        *,
        with_vae: bool = False,
        generator: torch.Generator | None = None,
    ) -> MultiTaskOutput:
        """Segmentation, ET classification and (with ``with_vae``) reconstruction.

        Args:
            x: float, (B, in_channels, P, P, P) with P = ``config.patch_size``: z-scored
                image patches (docs/design.md section 2).
            with_vae: run the FCVAE branch (training). In train mode z is sampled, in eval
                mode z = mu.
            generator: random source of the VAE's eps; the global one if None.

        Returns:
            ``MultiTaskOutput``; ``recon``, ``mu``, ``logvar`` are None unless ``with_vae``.

        Raises:
            ValueError: if ``x`` is not (B, in_channels, P, P, P); the segmentation alone
                runs on other sizes with ``forward_segmentation``.
        """
        self._check_input(x, exact_patch=True)
        features = self.encoder(x)  # [(B, 28, 128^3), ..., (B, 448, 8^3)]
        seg_logits = self.seg_decoder(features)  # (B, 4, 128^3)
        cls_logits = self.classifier(features[-1])  # (B, 2)
        if not with_vae:
            return MultiTaskOutput(seg_logits, cls_logits)
        recon, mu, logvar = self.vae_decoder(features[-2], generator=generator)
        return MultiTaskOutput(seg_logits, cls_logits, recon, mu, logvar)

    def forward_segmentation(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder and segmentation decoder only, on any size the encoder can halve.

        The fully convolutional path used by whole-volume inference (docs/design.md section 5).

        Args:
            x: float, (B, in_channels, X, Y, Z); X, Y, Z multiples of ``2**depth``.

        Returns:
            float, (B, n_classes, X, Y, Z): segmentation logits.

        Raises:
            ValueError: on a wrong number of dimensions or channels, or a spatial size that
                is not a multiple of ``2**depth`` (names the nearest valid sizes).
        """
        self._check_input(x, exact_patch=False)
        return self.seg_decoder(self.encoder(x))

    def _check_input(self, x: torch.Tensor, *, exact_patch: bool) -> None:
        cfg = self.config
        if x.dim() != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"input of shape {tuple(x.shape)}: expected (B, {cfg.in_channels}, X, Y, Z) "
                f"with channels {cfg.in_channels} (t1, t1ce, t2, flair)"
            )
        spatial = tuple(x.shape[2:])
        if exact_patch:
            if spatial != (cfg.patch_size,) * 3:
                raise ValueError(
                    f"input spatial size {spatial}: the ET classifier's flatten size is fixed "
                    f"by model.patch_size={cfg.patch_size}, so forward needs "
                    f"{(cfg.patch_size,) * 3}; use forward_segmentation for other sizes"
                )
            return
        multiple = 2**self.depth
        bad = [s for s in spatial if s % multiple]
        if bad:
            fixes = ", ".join(
                f"{s} -> {' or '.join(map(str, nearest_valid_sizes(s, multiple)))}" for s in bad
            )
            raise ValueError(
                f"input spatial size {spatial}: every axis must be a multiple of {multiple} "
                f"(2**{self.depth} downsamplings); pad the input ({fixes})"
            )
