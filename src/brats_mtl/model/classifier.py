"""Enhancing-tumor (ET) presence classifier on the bottleneck (paper 4.2, Table 2).

Table 2, at the paper's configuration:

    Bottleneck  Conv3D   448 x 8^3 -> 256 x 8^3
    Reduced     Conv3D   256 x 8^3 -> 128 x 8^3
    Dense1      Linear   128 * 8^3 -> 32
    Dropout     p = 0.5
    Dense2      Linear   32 -> 2
    Softmax     (applied by the loss and by inference, not here)

Table 2 gives no kernel size. Its bare "Conv3D" rows are read as 1x1x1, like every bare
"Conv3D" row of Table 1 (DownStage3, Mean, Std, Sample, VAEOut); the 3x3x3 convolutions of
Table 1 are the ones it writes with GN+ReLU. ``kernel_size=3`` is available. Each
convolution is followed by GroupNorm and LeakyReLU, and Dense1 by LeakyReLU (paper 4.2:
"LeakyRelu is used for all activation functions"); without an activation the two Linear
layers would collapse into one.
"""

from __future__ import annotations

import torch
from torch import nn

from brats_mtl.model.blocks import ConvNormAct


class ETClassifier(nn.Module):
    """Does the patch contain enhancing tumor? Two logits: (no ET, ET).

    Args:
        in_channels: bottleneck channels (448).
        channels: output channels of the convolutions, e.g. (256, 128) (Table 2).
        hidden: Dense1 output features (32).
        spatial: bottleneck edge length, ``patch_size / 2**depth`` (8); the flatten size
            ``channels[-1] * spatial**3`` depends on it, so the classifier only accepts
            patches of the configured size.
        norm_groups: GroupNorm groups.
        negative_slope: LeakyReLU slope.
        dropout: dropout probability after Dense1 (0.5).
        kernel_size: kernel of the convolutions: 1 (default, see module docstring) or 3.

    Attributes:
        convs: the Bottleneck and Reduced convolutions (in Table 2's order).

    Source: paper 4.2 ("Enhancing Tumor Detection"), Table 2.
    """

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, ...],
        hidden: int,
        spatial: int,
        norm_groups: int,
        negative_slope: float,
        dropout: float,
        kernel_size: int = 1,
    ) -> None:
        super().__init__()
        channels_in = (in_channels, *channels[:-1])
        self.convs = nn.ModuleList(
            ConvNormAct(c_in, c_out, norm_groups, negative_slope, kernel_size)
            for c_in, c_out in zip(channels_in, channels, strict=True)
        )
        self.flatten = nn.Flatten()
        self.dense1 = nn.Linear(channels[-1] * spatial**3, hidden)
        self.act = nn.LeakyReLU(negative_slope)
        self.dropout = nn.Dropout(dropout)
        self.dense2 = nn.Linear(hidden, 2)

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """ET-presence logits.

        Args:
            bottleneck: float, (B, in_channels, s, s, s) with s = ``spatial``.

        Returns:
            float, (B, 2): logits of (no ET, ET), before softmax.
        """
        x = bottleneck  # (B, 448, 8^3)
        for conv in self.convs:
            x = conv(x)  # (B, 256, 8^3), then (B, 128, 8^3)
        x = self.flatten(x)  # (B, 128 * 8^3) in (C, X, Y, Z) order whatever the memory layout
        x = self.dropout(self.act(self.dense1(x)))  # (B, 32)
        return self.dense2(x)  # (B, 2)
