"""Shared 3D U-Net encoder (paper 4.2, Fig. 2; docs/design.md section 3).

Stage ``i`` works at ``1 / 2**i`` of the input resolution with ``widths[i]`` channels. At
the paper's 128^3 patch and widths (28, 56, 112, 224, 448):

    stage 0: 28  x 128^3
    stage 1: 56  x  64^3   (max-pool, then two 3x3x3 conv blocks)
    stage 2: 112 x  32^3
    stage 3: 224 x  16^3   <- the FCVAE branches here (Table 1, DownStage3)
    stage 4: 448 x   8^3   <- bottleneck: segmentation decoder and ET classifier

Downsampling is 2x2x2 max-pooling, as in the 3D U-Net the paper cites (Cicek et al. 2016);
the paper does not say otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from brats_mtl.model.blocks import UNetStage


class Encoder(nn.Module):
    """3D U-Net encoder: ``len(widths)`` stages, ``len(widths) - 1`` max-pool downsamplings.

    Args:
        in_channels: image channels (4: t1, t1ce, t2, flair).
        widths: channels per stage, e.g. (28, 56, 112, 224, 448).
        norm_groups: GroupNorm groups; every width must be divisible by it.
        negative_slope: LeakyReLU slope.

    Attributes:
        widths: the stage widths, read by the decoders and heads for their channel counts.
        depth: number of downsamplings, ``len(widths) - 1``.

    Source: paper 4.2 ("3D U-Net with a depth of 4 ... first layer 28 feature maps").
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...],
        norm_groups: int,
        negative_slope: float,
    ) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.depth = len(widths) - 1
        self.pool = nn.MaxPool3d(2)
        channels_in = (in_channels, *widths[:-1])
        self.stages = nn.ModuleList(
            UNetStage(c_in, c_out, norm_groups, negative_slope)
            for c_in, c_out in zip(channels_in, widths, strict=True)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every stage, full resolution first, bottleneck last.

        Args:
            x: float, (B, in_channels, X, Y, Z); X, Y, Z multiples of ``2**depth``.

        Returns:
            ``depth + 1`` tensors; entry ``i`` is (B, widths[i], X/2^i, Y/2^i, Z/2^i).
        """
        features = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.pool(x)  # (B, widths[i-1], X/2^i, ...)
            x = stage(x)  # (B, widths[i], X/2^i, ...)
            features.append(x)
        return features
