"""Dense prediction of one cropped case: sliding windows or one whole-volume pass, with TTA.

Two ways to cover the cropped brain (docs/design.md section 5):

- ``predict_sliding_window`` (the default, ``inference.mode="window"``): windows of
  ``patch_size^3`` (the training patch), evenly spaced with at least ``overlap`` between
  neighbours, blended with a Gaussian importance map (sigma = 1/8 of the window, as
  nnU-Net and MONAI). Every window and each of its mirrored copies is one item; items go
  through the predictor in batches of ``batch_size``, and each output is flipped back and
  added into float32 accumulators on the cropped grid at once, so no more than one batch
  of flipped copies is alive at any time.
- ``predict_whole_volume`` (``inference.mode="whole"``): the segmentation path is fully
  convolutional, so it runs once per mirror over the whole crop padded to a multiple of
  ``2**depth``: about 4x fewer voxels than 8 overlapping 128^3 windows. The ET classifier
  needs a ``patch_size^3`` receptive field; it runs on ``(patch_size / 2**depth)^3`` tiles
  of the whole-volume bottleneck at the window positions (snapped to the bottleneck
  grid), reusing the encoder pass. GroupNorm statistics are then taken over the whole
  crop instead of one window, so the result is close to, not equal to, the windowed one.

**ET probability of the case.** The classifier is trained on patches ("does this patch
contain ET", Table 2), so it answers per window. The case's probability is the maximum
over windows of the TTA-averaged window probability: a case contains ET if any of its
windows does (the logical OR of the per-patch question). A mean over windows, Gaussian
weighted or not, would dilute a small ET focus seen by one window with the ET-free
windows' low probabilities, so it would call small tumors "no ET" and suppress exactly the
small ET volumes the rule is meant to keep when the classifier sees them. The maximum
errs the other way (more windows, more chances of a false "ET present"), and that error
is safe: it only means ET is not suppressed, i.e. the network's segmentation is kept.

Predictor interfaces (so tests can use toy functions):

- ``Predictor``: ``predictor(x) -> (seg_probs, et_prob)`` with ``x`` float32
  (B, 4, P, P, P), ``seg_probs`` float (B, n_classes, P, P, P) (softmax) and ``et_prob``
  float (B,) (probability of "ET present").
- ``VolumePredictor``: ``volume_predictor(x, boxes) -> (seg_probs, et_probs)`` with ``x``
  float32 (1, 4, X, Y, Z), ``boxes`` the ``patch_size^3`` windows whose ET probability is
  wanted, ``seg_probs`` (1, n_classes, X, Y, Z) and ``et_probs`` (len(boxes),).

Source: paper, Inference; docs/design.md section 5; window spacing and Gaussian blending as
nnU-Net v2 (``compute_steps_for_sliding_window``, Isensee et al. 2021).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from brats_mtl.conventions import Box
from brats_mtl.inference.tta import flip_box, flip_spatial, mirror_axes

logger = logging.getLogger(__name__)

Predictor = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
VolumePredictor = Callable[[torch.Tensor, Sequence[Box]], tuple[torch.Tensor, torch.Tensor]]
#: Receives one mirror pass's class map, int64 (x, y, z) on the cropped grid.
PassCallback = Callable[[torch.Tensor], None]

#: Gaussian sigma as a fraction of the window edge (nnU-Net and MONAI default).
GAUSSIAN_SIGMA_SCALE: float = 0.125


@dataclass(frozen=True, eq=False)
class VolumePrediction:
    """Dense prediction of one model (TTA-averaged) on a cropped case.

    Attributes:
        probs: float32, (n_classes, x, y, z) on the cropped grid: softmax probabilities,
            class order ``conventions.CLASS_LABELS``; each voxel sums to 1 (up to rounding).
        et_probability: the case's ET probability: maximum over windows of
            ``window_et_probabilities`` (module docstring); NaN if the predictor gives none.
        window_et_probabilities: float64, (n_windows,): TTA-averaged ET probability of
            each window.
        windows: the windows, as boxes on the padded cropped grid.
    """

    probs: np.ndarray
    et_probability: float
    window_et_probabilities: np.ndarray
    windows: list[Box]


def window_starts(size: int, patch_size: int, overlap: float) -> list[int]:
    """Start indices of evenly spaced windows covering one axis.

    As nnU-Net: the fewest windows whose step is at most ``patch_size * (1 - overlap)``,
    spread evenly from 0 to ``size - patch_size`` (so the first and last windows touch the
    borders and the pattern is mirror symmetric up to rounding).

    Args:
        size: axis length (after padding to at least ``patch_size``).
        patch_size: window edge.
        overlap: minimum overlap of neighbours as a fraction of the window, in [0, 1).

    Returns:
        Sorted, distinct starts; ``[0]`` when ``size <= patch_size``.

    Raises:
        ValueError: if ``overlap`` is outside [0, 1) or a size is below 1.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(
            f"inference.overlap={overlap!r} must be in [0, 1): the fraction of a window "
            "shared with its neighbour (0.5 by default)"
        )
    if size < 1 or patch_size < 1:
        raise ValueError(f"size {size} and patch_size {patch_size} must be positive")
    if size <= patch_size:
        return [0]
    max_step = max(1.0, patch_size * (1.0 - overlap))
    n = math.ceil((size - patch_size) / max_step) + 1
    step = (size - patch_size) / (n - 1)
    return sorted({int(round(i * step)) for i in range(n)})


def sliding_window_boxes(
    shape: tuple[int, int, int], patch_size: int, overlap: float, *, multiple: int = 1
) -> list[Box]:
    """The windows covering a volume, in C order of their starts.

    Args:
        shape: (X, Y, Z), each at least ``patch_size``.
        patch_size: window edge P.
        overlap: minimum overlap fraction, see :func:`window_starts`.
        multiple: snap every start to a multiple of this (the whole-volume mode puts the
            classifier's windows on the bottleneck grid, ``2**depth``); ``shape`` minus
            ``patch_size`` must then be a multiple of it too.

    Returns:
        Boxes of P^3 voxels inside ``shape``.

    Raises:
        ValueError: if an axis is shorter than ``patch_size`` or cannot be snapped.
    """
    per_axis = []
    for n in shape:
        if n < patch_size:
            raise ValueError(f"axis of {n} voxels is shorter than the window ({patch_size})")
        if (n - patch_size) % multiple:
            raise ValueError(f"axis of {n} voxels cannot hold windows on a {multiple} grid")
        starts = window_starts(n, patch_size, overlap)
        per_axis.append(sorted({int(round(s / multiple)) * multiple for s in starts}))
    return [
        (slice(x, x + patch_size), slice(y, y + patch_size), slice(z, z + patch_size))
        for x in per_axis[0]
        for y in per_axis[1]
        for z in per_axis[2]
    ]


def gaussian_importance_map(patch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Gaussian blending weights of one window (MONAI's ``compute_importance_map``).

    Args:
        patch_size: window edge P.
        device: where to build it.

    Returns:
        float32, (P, P, P): a separable Gaussian centred on the window, sigma = P / 8,
        maximum 1, clamped below to keep every weight positive. Symmetric under mirroring.
    """
    from monai.data.utils import compute_importance_map

    return compute_importance_map(
        (patch_size,) * 3, mode="gaussian", sigma_scale=GAUSSIAN_SIGMA_SCALE, device=device
    ).to(torch.float32)


def predict_sliding_window(
    image: np.ndarray | torch.Tensor,
    predictor: Predictor,
    *,
    patch_size: int,
    overlap: float = 0.5,
    tta: int = 4,
    batch_size: int = 2,
    device: torch.device | str = "cpu",
    on_pass: PassCallback | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VolumePrediction:
    """Sliding-window prediction of one cropped case with Gaussian blending and mirror TTA.

    Args:
        image: float32, (4, x, y, z): the cropped, z-scored case
            (``preprocessing.preprocess_case``). Axes shorter than ``patch_size`` are
            zero-padded at their end (docs/design.md section 2.3) and the padding is dropped again.
        predictor: ``Predictor`` (module docstring), e.g. from
            :func:`brats_mtl.inference.network_predictor`.
        patch_size: window edge P (the training patch, 128 in the paper).
        overlap: minimum overlap of neighbouring windows, fraction of P, in [0, 1).
        tta: 0, 4 or 8 mirror passes (:func:`~brats_mtl.inference.tta.mirror_axes`).
        batch_size: windows and mirrored copies per predictor call (>= 1). With
            ``batch_size >= 2`` a last batch of one item is sent twice (the copy's output
            is dropped; GroupNorm is per sample, so the result is the same): PyTorch runs
            a 3-D convolution of a single narrow sample on its slow native path instead
            of oneDNN (its ``use_mkldnn`` rule, measured 3x slower per window for the
            CPU preset's widths), so one lone item would cost more than two.
        device: where the image, the batches and the float32 accumulators live.
        on_pass: called once per mirror pass with that pass's class map, int64 (x, y, z)
            on ``device`` (argmax of the pass's blended probabilities), e.g.
            ``uncertainty.RegionVotes.add``. The items then run pass by pass (every
            window of one mirror before the next mirror) with one more float32
            accumulator of the crop for the pass; the mean is the same sum in another
            order of float additions.
        progress: called after each batch with (items done, items in all), an item being
            one window in one mirror pass; for progress bars.

    Returns:
        :class:`VolumePrediction` on the cropped grid (x, y, z).

    Raises:
        ValueError: on a bad ``image`` shape, ``overlap``, ``tta`` or ``batch_size``, or
            a predictor output of the wrong shape.

    Source: paper, Inference (sliding windows, mirror TTA for segmentation and
    classifier); docs/design.md section 5.
    """
    if batch_size < 1:
        raise ValueError(f"inference.window_batch_size={batch_size} must be at least 1")
    flips = mirror_axes(tta)
    x, crop_shape = _padded_input(image, device, (patch_size,) * 3)
    padded_shape = tuple(x.shape[1:])
    windows = sliding_window_boxes(padded_shape, patch_size, overlap)
    importance = gaussian_importance_map(patch_size, x.device)  # (P, P, P)

    prob_sum: torch.Tensor | None = None  # (n_classes, X, Y, Z) float32, allocated lazily
    weight_sum = torch.zeros(padded_shape, dtype=torch.float32, device=x.device)
    for box in windows:
        weight_sum[box] += importance
    et_sum = np.zeros(len(windows), dtype=np.float64)

    if on_pass is None:
        items = [(w, axes) for w in range(len(windows)) for axes in flips]
    else:  # pass by pass: each mirror's blend is complete before the next one starts
        items = [(w, axes) for axes in flips for w in range(len(windows))]
    pass_sum: torch.Tensor | None = None  # (n_classes, X, Y, Z): the current pass (on_pass)
    crop_box = (slice(None), *(slice(0, n) for n in crop_shape))
    logger.debug(
        "%d windows x %d mirrors = %d items of %d^3 in batches of %d",
        len(windows),
        len(flips),
        len(items),
        patch_size,
        batch_size,
    )
    for first in range(0, len(items), batch_size):
        batch = items[first : first + batch_size]
        inputs = torch.stack(
            [flip_spatial(x[(slice(None), *windows[w])], axes) for w, axes in batch]
        )  # (b, 4, P, P, P)
        if len(batch) == 1 and batch_size > 1:
            seg_probs, et_prob = predictor(torch.cat([inputs, inputs]))
            _check_outputs(seg_probs, et_prob, 2, (patch_size,) * 3)
            seg_probs, et_prob = seg_probs[:1], et_prob[:1]
        else:
            seg_probs, et_prob = predictor(inputs)
            _check_outputs(seg_probs, et_prob, len(batch), (patch_size,) * 3)
        if prob_sum is None:
            prob_sum = torch.zeros(
                (seg_probs.shape[1], *padded_shape), dtype=torch.float32, device=x.device
            )
            if on_pass is not None:
                pass_sum = torch.zeros_like(prob_sum)
        et_values = et_prob.detach().float().cpu().numpy()
        for i, (w, axes) in enumerate(batch):
            back = flip_spatial(seg_probs[i], axes).to(x.device, torch.float32)
            target = prob_sum if pass_sum is None else pass_sum
            target[(slice(None), *windows[w])] += back * importance
            et_sum[w] += et_values[i]
            if pass_sum is not None and w == len(windows) - 1:  # the pass is complete
                prob_sum += pass_sum
                on_pass(pass_sum[crop_box].argmax(dim=0))  # weights > 0: argmax unchanged
                pass_sum.zero_()
        del inputs, seg_probs, et_prob
        if progress is not None:
            progress(first + len(batch), len(items))
    del pass_sum

    prob_sum /= weight_sum * len(flips)
    probs = prob_sum[crop_box]
    window_et = et_sum / len(flips)
    return VolumePrediction(
        probs=probs.cpu().numpy(),
        et_probability=float(np.max(window_et)),
        window_et_probabilities=window_et,
        windows=windows,
    )


def predict_whole_volume(
    image: np.ndarray | torch.Tensor,
    volume_predictor: VolumePredictor,
    *,
    patch_size: int,
    multiple: int,
    overlap: float = 0.5,
    tta: int = 4,
    device: torch.device | str = "cpu",
    on_pass: PassCallback | None = None,
) -> VolumePrediction:
    """One fully convolutional pass per mirror over the whole cropped case.

    The crop is zero-padded at its end to a multiple of ``multiple`` (and to at least
    ``patch_size``) per axis; each mirror of the padded volume goes through
    ``volume_predictor`` alone (one volume at a time bounds the peak memory), its
    segmentation is flipped back and averaged, and the classifier windows are mirrored
    with the volume so that every window's probability is averaged over the same voxels.

    Args:
        image: float32, (4, x, y, z): the cropped, z-scored case.
        volume_predictor: ``VolumePredictor`` (module docstring), e.g. from
            :func:`brats_mtl.inference.network_volume_predictor`.
        patch_size: the classifier's window edge P (the training patch).
        multiple: the network's size divisor, ``2**depth`` (16 in the paper).
        overlap: minimum overlap of the classifier windows (as the windowed mode's).
        tta: 0, 4 or 8 mirror passes.
        device: where the image and accumulators live.
        on_pass: called once per mirror pass with its class map, int64 (x, y, z) on
            ``device`` (as :func:`predict_sliding_window`; no extra accumulator here).

    Returns:
        :class:`VolumePrediction` on the cropped grid; ``windows`` are the classifier's.

    Raises:
        ValueError: on a bad ``image`` shape, ``overlap``, ``tta``, a ``patch_size`` that
            is not a multiple of ``multiple``, or predictor outputs of the wrong shape.

    Source: docs/design.md section 5 (the fast mode; not in the paper).
    """
    flips = mirror_axes(tta)
    if patch_size % multiple:
        raise ValueError(f"patch_size {patch_size} is not a multiple of {multiple}")
    shape = np.shape(image)[-3:]
    target = tuple(max(patch_size, -(-int(n) // multiple) * multiple) for n in shape)
    x, crop_shape = _padded_input(image, device, target)
    padded_shape = tuple(x.shape[1:])
    windows = sliding_window_boxes(padded_shape, patch_size, overlap, multiple=multiple)

    prob_sum: torch.Tensor | None = None
    et_sum = np.zeros(len(windows), dtype=np.float64)
    for axes in flips:
        mirrored_windows = [flip_box(box, padded_shape, axes) for box in windows]
        seg_probs, et_probs = volume_predictor(flip_spatial(x, axes)[None], mirrored_windows)
        _check_outputs(seg_probs, et_probs, 1, padded_shape, n_et=len(windows))
        back = flip_spatial(seg_probs[0], axes).to(x.device, torch.float32)
        if prob_sum is None:
            prob_sum = torch.zeros_like(back)
        prob_sum += back
        if on_pass is not None:
            on_pass(back[(slice(None), *(slice(0, n) for n in crop_shape))].argmax(dim=0))
        et_sum += et_probs.detach().float().cpu().numpy()
        del seg_probs, back

    prob_sum /= len(flips)
    probs = prob_sum[(slice(None), *(slice(0, n) for n in crop_shape))]
    window_et = et_sum / len(flips)
    return VolumePrediction(
        probs=probs.cpu().numpy(),
        et_probability=float(np.max(window_et)),
        window_et_probabilities=window_et,
        windows=windows,
    )


def _padded_input(
    image: np.ndarray | torch.Tensor, device: torch.device | str, size: tuple[int, int, int]
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The image as a float32 tensor on ``device``, zero-padded at the end up to ``size``."""
    x = torch.as_tensor(image, dtype=torch.float32).to(device)
    if x.dim() != 4:
        raise ValueError(
            f"image of shape {tuple(x.shape)}: expected (channels, x, y, z), the cropped "
            "case from preprocessing.preprocess_case"
        )
    crop_shape = tuple(int(n) for n in x.shape[1:])
    pad = [max(0, s - n) for n, s in zip(crop_shape, size, strict=True)]
    if any(pad):
        # F.pad lists the last axis first: (z_before, z_after, y_before, y_after, ...)
        x = torch.nn.functional.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
    return x.contiguous(), crop_shape


def _check_outputs(
    seg_probs: torch.Tensor,
    et_prob: torch.Tensor,
    batch: int,
    spatial: tuple[int, ...],
    *,
    n_et: int | None = None,
) -> None:
    if seg_probs.dim() != 5 or seg_probs.shape[0] != batch or tuple(seg_probs.shape[2:]) != spatial:
        raise ValueError(
            f"predictor returned segmentation of shape {tuple(seg_probs.shape)}; expected "
            f"({batch}, n_classes, {', '.join(map(str, spatial))})"
        )
    expected = (batch,) if n_et is None else (n_et,)
    if tuple(et_prob.shape) != expected:
        raise ValueError(
            f"predictor returned ET probabilities of shape {tuple(et_prob.shape)}; "
            f"expected {expected}"
        )
