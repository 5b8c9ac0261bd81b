"""The two decoders on the shared encoder: U-Net segmentation and FCVAE reconstruction.

Both read their channel counts from the encoder's ``widths``; shapes in comments are for
the paper's configuration (widths 28..448, 128^3 patch, batch B).

Source: paper 4.2, Fig. 2, Table 1; docs/design.md section 3.
"""

from __future__ import annotations

import torch
from torch import nn

from brats_mtl.model.blocks import ConvNormAct, PreActConv, UNetStage, UpLin


class SegmentationDecoder(nn.Module):
    """3D U-Net decoder with skip connections, ending in per-class logits.

    Each level, deepest first: 2x2x2 transposed convolution (stride 2) halving the
    channels to the skip's width, concatenation with the encoder's skip feature, a U-Net
    stage (two 3x3x3 conv + GN + LeakyReLU). A 1x1x1 convolution gives the logits; softmax
    is applied by the loss and by inference, not here.

    Transposed convolution ("up-convolution") is the upsampling of the 3D U-Net the paper
    cites (Cicek et al. 2016); the paper does not name another.

    Args:
        widths: encoder stage widths, e.g. (28, 56, 112, 224, 448).
        n_classes: output classes (4: background, NCR/NET, ED, ET).
        norm_groups: GroupNorm groups.
        negative_slope: LeakyReLU slope.

    Source: paper 4.2 ("3D U-Net with a depth of 4"), Fig. 2.
    """

    def __init__(
        self, widths: tuple[int, ...], n_classes: int, norm_groups: int, negative_slope: float
    ) -> None:
        super().__init__()
        levels = range(len(widths) - 2, -1, -1)  # deepest skip first: 3, 2, 1, 0
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(widths[i + 1], widths[i], kernel_size=2, stride=2) for i in levels
        )
        self.stages = nn.ModuleList(
            UNetStage(2 * widths[i], widths[i], norm_groups, negative_slope) for i in levels
        )
        self.head = nn.Conv3d(widths[0], n_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor], *, lean: bool = False) -> torch.Tensor:
        """Segmentation logits from the encoder's features.

        Args:
            features: the encoder's output; entry ``i`` is (B, widths[i], X/2^i, ...).
            lean: the memory-lean decode for whole-volume inference: the same arithmetic
                in another order of allocations (:meth:`_forward_lean`). It consumes
                ``features`` (the list is emptied, so the caller must hold no other
                reference to the tensors for the memory to be freed) and saves memory
                only without autograd (``torch.inference_mode``); under autograd it gives
                the same result and gradients.

        Returns:
            float, (B, n_classes, X, Y, Z): logits over the classes (before softmax).
        """
        if lean:
            return self._forward_lean(features)
        x = features[-1]  # (B, 448, 8^3)
        for up, stage, skip in zip(self.ups, self.stages, reversed(features[:-1]), strict=True):
            x = up(x)  # (B, 224, 16^3), then 112 x 32^3, 56 x 64^3, 28 x 128^3
            x = torch.cat([skip, x], dim=1)  # (B, 448, 16^3) ... (B, 56, 128^3)
            x = stage(x)  # (B, 224, 16^3) ... (B, 28, 128^3)
        return self.head(x)  # (B, 4, 128^3)

    def _forward_lean(self, features: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`forward` with less memory alive at once; empties ``features``.

        - each skip feature is copied into a preallocated concatenation buffer and dropped
          before the upsampled tensor is made, so the skip, the upsampled tensor and their
          concatenation never coexist (``torch.cat`` needs all three);
        - each convolution's input is dropped as soon as the convolution returns, before
          GroupNorm allocates its output.

        On a whole brain crop (144 x 176 x 160) a full-resolution 28-channel float32
        tensor is 454 MB; the decoder's peak falls from four such tensors to three.
        """
        x = features.pop()  # bottleneck (B, 448, X/16, Y/16, Z/16)
        for up, stage in zip(self.ups, self.stages, strict=True):
            skip = features.pop()  # (B, widths[i], ...)
            n_skip = skip.shape[1]
            merged = torch.empty(
                (skip.shape[0], n_skip + up.out_channels, *skip.shape[2:]),
                dtype=skip.dtype,
                device=skip.device,
                memory_format=_memory_format(skip),
            )  # (B, 2 * widths[i], ...): [skip, up(x)] as torch.cat would give
            merged[:, :n_skip] = skip
            del skip
            merged[:, n_skip:] = up(x)
            del x
            held = [merged]
            del merged
            x = _conv_norm_act_releasing(stage.conv1, held)
            held = [x]
            del x
            x = _conv_norm_act_releasing(stage.conv2, held)  # (B, widths[i], ...)
        return self.head(x)


def _conv_norm_act_releasing(block: ConvNormAct, held: list[torch.Tensor]) -> torch.Tensor:
    """``block(x)`` where ``held`` holds the only reference to ``x``, freed after the conv."""
    h = block.conv(held.pop())  # x is freed when conv returns
    return block.act(block.norm(h))


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


class VAEDecoder(nn.Module):
    """Fully convolutional VAE decoder of Table 1, with its own weights.

    Branches from the encoder stage one above the bottleneck (224 x 16^3 in the paper):

        DownStage3  Conv3D 1x1x1        224 -> 100   16^3
        Mean (mu)   Conv3D 1x1x1        100 -> 50    16^3
        Std         Conv3D 1x1x1        100 -> 50    16^3   (read as log-variance)
        Sample      z = mu + sigma*eps, then Conv3D 1x1x1 50 -> 100   16^3
        DC4         GN+ReLU+Conv3D 3x3x3  100 -> 224   16^3
        Up3         Conv3D 1x1x1 + trilinear x2   224   32^3
        DC3         GN+ReLU+Conv3D        224 -> 112   32^3
        Up2 / DC2   112 -> 56 at 64^3;  Up1 / DC1   56 -> 28 at 128^3
        VAEOut      Conv3D 1x1x1        28 -> 4      128^3

    The table's typos are read as docs/design.md section 3 says (input 224, sigma at 16^3, DC2 at
    64^3). The "Std" layer's output is used as log-variance, ``sigma = exp(logvar / 2)``,
    the usual parametrisation that keeps sigma positive without a constraint. In training
    mode z is sampled; in eval mode z = mu (the decoder is then deterministic).

    Args:
        widths: encoder stage widths; the branch input has ``widths[-2]`` channels.
        out_channels: reconstructed image channels (4).
        hidden_channels: DownStage3 / Sample output channels (Table 1: 100).
        latent_channels: mu and sigma channels (Table 1: 50).
        norm_groups: GroupNorm groups of the DC blocks.

    Attributes:
        blocks: ``ModuleDict`` named as Table 1 (``DC4``, ``Up3``, ``DC3``, ..., ``DC1``).

    Source: Table 1; Baur et al. 2019 (FCVAE); Kingma & Welling 2014 (reparametrisation).
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        out_channels: int,
        hidden_channels: int,
        latent_channels: int,
        norm_groups: int,
    ) -> None:
        super().__init__()
        top = len(widths) - 2  # encoder stage the branch reads: 3 in the paper
        self.down_stage = nn.Conv3d(widths[top], hidden_channels, 1)
        self.mean = nn.Conv3d(hidden_channels, latent_channels, 1)
        self.std = nn.Conv3d(hidden_channels, latent_channels, 1)
        self.sample = nn.Conv3d(latent_channels, hidden_channels, 1)
        blocks: dict[str, nn.Module] = {
            f"DC{top + 1}": PreActConv(hidden_channels, widths[top], norm_groups)
        }
        for k in range(top, 0, -1):  # 3, 2, 1
            blocks[f"Up{k}"] = UpLin(widths[k])
            blocks[f"DC{k}"] = PreActConv(widths[k], widths[k - 1], norm_groups)
        self.blocks = nn.ModuleDict(blocks)
        self.out = nn.Conv3d(widths[0], out_channels, 1)

    def forward(
        self, feature: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct the input image from one encoder feature map.

        Args:
            feature: float, (B, widths[-2], X/2^(depth-1), ...): encoder stage ``depth - 1``.
            generator: random source of eps in training mode; the global one if None.

        Returns:
            ``(recon, mu, logvar)``: recon (B, out_channels, X, Y, Z); mu and logvar
            (B, latent_channels, X/2^(depth-1), Y/2^(depth-1), Z/2^(depth-1)).
        """
        h = self.down_stage(feature)  # (B, 100, 16^3)
        mu = self.mean(h)  # (B, 50, 16^3)
        logvar = self.std(h)  # (B, 50, 16^3)
        z = mu
        if self.training:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            z = mu + torch.exp(0.5 * logvar) * eps  # (B, 50, 16^3)
        h = self.sample(z)  # (B, 100, 16^3)
        for block in self.blocks.values():
            h = block(h)  # DC4: 224 x 16^3, Up3: 224 x 32^3, ..., DC1: 28 x 128^3
        return self.out(h), mu, logvar  # (B, 4, 128^3), (B, 50, 16^3) x 2
