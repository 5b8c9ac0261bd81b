"""Mirror test-time augmentation (TTA): which axes to flip, and flipping.

The input is mirrored along spatial axes, the network's output is mirrored back along the
same axes, and the results are averaged (paper, Inference; docs/design.md section 5). Flipping
twice along the same axes is the identity, so "flip back" is the same operation as "flip".

Spatial axes are numbered 0, 1, 2 (X, Y, Z) whatever the tensor's leading dimensions; a
tensor of shape (..., X, Y, Z) is flipped on its last three dimensions.
"""

from __future__ import annotations

import itertools

import torch

from brats_mtl.config import choices
from brats_mtl.conventions import Box

#: The TTA settings accepted by :func:`mirror_axes` (``InferenceConfig.tta``).
TTA_CHOICES: tuple[int, ...] = choices("inference.tta")


def mirror_axes(tta: int) -> list[tuple[int, ...]]:
    """The flips of one TTA setting, identity first.

    Args:
        tta: 0 (no TTA: identity only), 4 (identity and each single-axis flip, the paper's
            "mirrored with respect to each axis") or 8 (all 2^3 combinations of flips).

    Returns:
        Tuples of spatial axes (0 = X, 1 = Y, 2 = Z) to flip; ``()`` is the identity.
        0 -> ``[()]``; 4 -> ``[(), (0,), (1,), (2,)]``; 8 -> all subsets of ``(0, 1, 2)``.

    Raises:
        ValueError: if ``tta`` is not 0, 4 or 8.

    Source: paper, Inference ("input images are mirrored with respect to each axis");
    docs/design.md section 5 (4 by default, 8 on request).
    """
    if tta == 0:
        return [()]
    if tta == 4:
        return [(), (0,), (1,), (2,)]
    if tta == 8:
        return [c for r in range(4) for c in itertools.combinations((0, 1, 2), r)]
    raise ValueError(
        f"inference.tta={tta!r} is not a mirror TTA setting; use 0 (off), 4 (identity + "
        "3 single-axis flips, the paper) or 8 (all flip combinations)"
    )


def flip_spatial(tensor: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Mirror a tensor along spatial axes.

    Args:
        tensor: shape (..., X, Y, Z); any dtype and device.
        axes: spatial axes to flip (0 = X, 1 = Y, 2 = Z), e.g. from :func:`mirror_axes`.

    Returns:
        ``tensor`` itself for ``axes == ()``, else a flipped copy of the same shape.
    """
    if not axes:
        return tensor
    offset = tensor.dim() - 3
    return torch.flip(tensor, [offset + a for a in axes])


def flip_box(box: Box, shape: tuple[int, int, int], axes: tuple[int, ...]) -> Box:
    """Where a box lands after mirroring the volume along ``axes``.

    Args:
        box: three slices with explicit start and stop inside ``shape``.
        shape: (X, Y, Z) of the volume.
        axes: mirrored spatial axes.

    Returns:
        The box covering the same voxels in the mirrored volume: along a flipped axis of
        length n, ``[start, stop)`` becomes ``[n - stop, n - start)``.
    """
    out = list(box)
    for a in axes:
        sl = box[a]
        out[a] = slice(shape[a] - sl.stop, shape[a] - sl.start)
    return tuple(out)
