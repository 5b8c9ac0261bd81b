"""Building blocks shared by the encoder, the decoders and the classifier.

Two kinds of convolution block appear in the paper:

- the U-Net block of the encoder, the segmentation decoder and the classifier:
  ``Conv3D -> GroupNorm -> LeakyReLU`` (paper 4.2: "normalization layers are replaced by
  group-norm layers and LeakyRelu is used for all activation functions");
- the FCVAE's pre-activation block ``GN + ReLU + Conv3D`` (Table 1, rows DC4..DC1), which
  the table writes with a plain ReLU; it is kept as written.

Shapes use ``B`` for the batch and ``X, Y, Z`` for the spatial axes of the block's input.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNormAct(nn.Module):
    """``Conv3D(k) -> GroupNorm -> LeakyReLU``: one U-Net convolution (paper 4.2).

    The convolution has no bias: GroupNorm subtracts each group's mean right after it, so a
    per-channel bias would be removed again (up to the group mixing) and only costs memory
    traffic.

    Args:
        in_channels: input channels.
        out_channels: output channels; must be divisible by ``norm_groups``.
        norm_groups: GroupNorm groups (Table 1 caption: 4).
        negative_slope: LeakyReLU slope for negative inputs.
        kernel_size: 3 (padding 1, shape-preserving) or 1.

    Source: paper section 4.2; 3D U-Net (Cicek et al. 2016) with GN and LeakyReLU.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm_groups: int,
        negative_slope: float,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.norm = nn.GroupNorm(norm_groups, out_channels)
        # in place saves one activation-sized buffer; autograd allows it for slope > 0
        self.act = nn.LeakyReLU(negative_slope, inplace=negative_slope > 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, X, Y, Z) -> (B, out, X, Y, Z)."""
        return self.act(self.norm(self.conv(x)))


class UNetStage(nn.Module):
    """Two ``ConvNormAct`` 3x3x3 blocks: a conventional U-Net stage (paper 4.2).

    Args:
        in_channels: input channels.
        out_channels: channels of both convolutions' outputs.
        norm_groups: GroupNorm groups.
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self, in_channels: int, out_channels: int, norm_groups: int, negative_slope: float
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, norm_groups, negative_slope)
        self.conv2 = ConvNormAct(out_channels, out_channels, norm_groups, negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, X, Y, Z) -> (B, out, X, Y, Z)."""
        return self.conv2(self.conv1(x))


class PreActConv(nn.Module):
    """``GroupNorm -> ReLU -> Conv3D(3x3x3, padding 1)``: a DC row of Table 1.

    Args:
        in_channels: input channels; must be divisible by ``norm_groups``.
        out_channels: output channels.
        norm_groups: GroupNorm groups (Table 1 caption: 4).

    Source: Table 1 (DC4, DC3, DC2, DC1: "GN+ReLu+Conv3D", kernel 3, padding yes).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, in_channels)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, X, Y, Z) -> (B, out, X, Y, Z)."""
        return self.conv(self.act(self.norm(x)))


class UpLin(nn.Module):
    """``Conv3D(1x1x1) -> trilinear upsampling x2``: an Up row of Table 1.

    Args:
        channels: input and output channels (Table 1 keeps them equal).

    Source: Table 1 (Up3, Up2, Up1: "Conv3D+UpLin", kernel 1).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 1)
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) -> (B, C, 2X, 2Y, 2Z)."""
        return self.up(self.conv(x))
