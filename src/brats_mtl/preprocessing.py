"""Preprocessing of one case (paper section 4.1, docs/design.md section 2), numpy only.

1. Brain mask = voxels where any modality is non-zero; crop to its bounding box and keep
   the box to undo the crop exactly (as nnU-Net's ``crop_to_nonzero``).
2. Z-score each modality over the brain mask; the background stays 0.
3. A grid of sequential tiles (128^3 in the paper) covering the cropped brain, zero-padded
   where the crop is smaller than a tile.

NaN and inf voxels are refused (:func:`check_finite`), in memory as on loading. An empty
brain and a modality constant inside the brain are errors, except for prediction, which
asks ``preprocess_case(case, allow_degenerate=True)`` and goes on: a zero-size crop, and
the constant channel 0 after normalisation (nnU-Net's ``max(std, 1e-8)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from brats_mtl.conventions import MODALITIES, Box

if TYPE_CHECKING:
    from brats_mtl.data import Case


#: Smallest standard deviation a channel is divided by in :func:`zscore_in_mask`, as
#: nnU-Net's ``ZScoreNormalization`` (``max(std, 1e-8)``): a constant channel becomes 0.
MIN_STD: float = 1e-8


class ConstantChannelError(ValueError):
    """A modality is constant inside the brain, so it cannot be z-scored.

    Attributes:
        channel: the channel's name, e.g. ``"t1ce"``.
    """

    def __init__(self, message: str, channel: str) -> None:
        super().__init__(message)
        self.channel = channel


# the words of data.load_case for a file with NaN/inf voxels
_FINITE_ADVICE = "BraTS images must be finite (background 0): fix or re-export the file"


class NonFiniteImageError(ValueError):
    """A modality holds NaN or inf voxels (as file loading refuses them).

    Attributes:
        channel: the channel's name, e.g. ``"t1ce"``.
        n_bad: how many of its voxels are NaN or inf.
    """

    def __init__(self, where: str, channel: str, n_bad: int) -> None:
        super().__init__(f"{where} holds {n_bad} NaN/inf voxels; {_FINITE_ADVICE}")
        self.channel = channel
        self.n_bad = n_bad


def check_finite(image: np.ndarray, channel_names: tuple[str, ...] = MODALITIES) -> None:
    """Refuse NaN and inf voxels, naming the first channel that holds any.

    Args:
        image: shape (C, X, Y, Z), any dtype (integer images always pass).
        channel_names: one name per channel, for the message.

    Raises:
        NonFiniteImageError: (a ``ValueError``) "modality t1ce holds 3 NaN/inf voxels;
            BraTS images must be finite (background 0): ...", the wording of
            ``data.load_case`` for a file.

    Source: BraTS images are finite with background exactly 0 (the releases' format).
    """
    image = np.asarray(image)
    if image.dtype.kind not in "fc":
        return
    for c in range(image.shape[0]):
        n_bad = int(image[c].size - np.count_nonzero(np.isfinite(image[c])))
        if n_bad:
            name = _channel_name(channel_names, c)
            raise NonFiniteImageError(f"modality {name}", name, n_bad)


def brain_mask(image: np.ndarray, channel_names: tuple[str, ...] = MODALITIES) -> np.ndarray:
    """Voxels where any modality is non-zero.

    Args:
        image: shape (C, X, Y, Z), any dtype; BraTS background is exactly 0.
        channel_names: one name per channel, for error messages.

    Returns:
        bool, shape (X, Y, Z).

    Raises:
        ValueError: if ``image`` is not 4-D.
        NonFiniteImageError: (a ``ValueError``) if a voxel is NaN or inf
            (:func:`check_finite`); a NaN is not 0 and would count as brain.

    Source: docs/design.md section 2.1 (BraTS images are skull-stripped, background 0).
    """
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"image must have shape (C, X, Y, Z), got {image.shape}")
    check_finite(image, channel_names)
    return np.any(image != 0, axis=0)


def bounding_box(mask: np.ndarray) -> Box:
    """Tightest box holding every True voxel of ``mask``.

    Args:
        mask: bool, shape (X, Y, Z).

    Returns:
        Three slices (start inclusive, stop exclusive) along X, Y, Z.

    Raises:
        ValueError: if ``mask`` is empty (an all-zero image has no brain).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must have shape (X, Y, Z), got {mask.shape}")
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            raise ValueError("the brain mask is empty: every voxel of every modality is 0")
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return box[0], box[1], box[2]


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    """Crop the last three axes of ``array`` to ``box``.

    Args:
        array: shape (..., X, Y, Z).
        box: three slices from :func:`bounding_box`.

    Returns:
        A view, shape (..., x, y, z) with x, y, z the box's extents.
    """
    return np.asarray(array)[(..., *box)]


def uncrop(
    array: np.ndarray, box: Box, shape: tuple[int, int, int], fill: float | int = 0
) -> np.ndarray:
    """Inverse of :func:`crop`: place ``array`` at ``box`` in a volume of ``shape``.

    Args:
        array: shape (..., x, y, z) with x, y, z the box's extents.
        box: the slices used to crop.
        shape: the original (X, Y, Z).
        fill: value outside the box.

    Returns:
        Same dtype as ``array``, shape (..., X, Y, Z); ``crop(uncrop(a, box, s), box)``
        equals ``a`` and voxels outside ``box`` equal ``fill``.

    Raises:
        ValueError: if ``array`` does not have the box's extents or the box leaves
            ``shape``.
    """
    array = np.asarray(array)
    shape = tuple(int(s) for s in shape)
    extents = []
    for sl, n in zip(box, shape, strict=True):
        start, stop, step = sl.indices(n)
        if step != 1 or sl.start is None or sl.stop is None or sl.stop > n or sl.start < 0:
            raise ValueError(f"box {box} is not a crop box inside shape {shape}")
        extents.append(stop - start)
    if array.shape[-3:] != tuple(extents):
        raise ValueError(
            f"array of shape {array.shape} does not fit box {box} (extents {tuple(extents)})"
        )
    out = np.full((*array.shape[:-3], *shape), fill, dtype=array.dtype)
    out[(..., *box)] = array
    return out


def zscore_in_mask(
    image: np.ndarray,
    brain_mask: np.ndarray,
    channel_names: tuple[str, ...] = MODALITIES,
    *,
    allow_constant: bool = False,
) -> np.ndarray:
    """Normalise each channel to zero mean, unit std over the brain.

    Args:
        image: shape (C, X, Y, Z), raw MR intensities.
        brain_mask: bool, shape (X, Y, Z); True inside the brain.
        channel_names: one name per channel, for error messages.
        allow_constant: a channel constant inside the brain becomes 0 there (nnU-Net's
            ``(x - mean) / max(std, 1e-8)``) instead of raising; for prediction, where
            one blank modality should not stop the case.

    Returns:
        float32, shape (C, X, Y, Z); mean 0 and std 1 (population std) over the mask in
        every non-constant channel, exactly 0 outside the mask (and, with
        ``allow_constant``, in constant channels).

    Raises:
        ValueError: if the mask is empty or does not match the image.
        NonFiniteImageError: (a ``ValueError``) if a voxel is NaN or inf.
        ConstantChannelError: (a ``ValueError``) if a channel is constant inside the
            brain (names the channel), unless ``allow_constant``.

    Source: paper section 4.1 (per-scan z-score), docs/design.md section 2.2; the constant
    channel rule: nnU-Net's ``ZScoreNormalization``.
    """
    out, _ = _zscore(image, brain_mask, channel_names, allow_constant=allow_constant)
    return out


def _zscore(
    image: np.ndarray,
    brain_mask: np.ndarray,
    channel_names: tuple[str, ...],
    *,
    allow_constant: bool,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """:func:`zscore_in_mask` and the names of the channels constant inside the mask."""
    image = np.asarray(image)
    mask = np.asarray(brain_mask, dtype=bool)
    if image.ndim != 4 or mask.shape != image.shape[1:]:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be (C,X,Y,Z), (X,Y,Z)")
    if not mask.any():
        raise ValueError("the brain mask is empty; nothing to normalise")
    check_finite(image, channel_names)
    out = np.zeros(image.shape, dtype=np.float32)
    constant = []
    for c in range(image.shape[0]):
        values = image[c][mask]
        mean = values.mean(dtype=np.float64)
        std = values.std(dtype=np.float64)
        if std == 0:
            name = _channel_name(channel_names, c)
            if not allow_constant:
                raise ConstantChannelError(
                    f"modality {name} is constant ({mean:g}) inside the brain mask; it "
                    "cannot be z-scored: check that the file holds the right scan",
                    name,
                )
            constant.append(name)
            continue  # (x - mean) / max(0, 1e-8) is 0: the channel stays 0
        out[c][mask] = ((values - mean) / max(std, MIN_STD)).astype(np.float32)
    return out, tuple(constant)


def _channel_name(channel_names: tuple[str, ...], c: int) -> str:
    return channel_names[c] if c < len(channel_names) else f"channel {c}"


def pad_to_size(array: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Zero-pad the last three axes at their end up to ``size``.

    Args:
        array: shape (..., X, Y, Z).
        size: minimum (X, Y, Z); axes already at least this long are left as they are.

    Returns:
        Same dtype, shape (..., max(X, sx), max(Y, sy), max(Z, sz)); ``array`` itself
        when nothing needs padding. The data keep their indices (padding at the end only),
        so ``out[..., :X, :Y, :Z]`` is ``array``.
    """
    array = np.asarray(array)
    pad = [(0, max(0, int(s) - n)) for n, s in zip(array.shape[-3:], size, strict=True)]
    if not any(after for _, after in pad):
        return array
    return np.pad(array, [(0, 0)] * (array.ndim - 3) + pad)


def pad_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
    """Zero-pad the last three axes at their end up to a multiple of ``multiple``.

    Args:
        array: shape (..., X, Y, Z).
        multiple: e.g. 16 for a network with 4 downsamplings.

    Returns:
        Same dtype, shape (..., X', Y', Z') with each axis the next multiple.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    size = tuple(-(-n // multiple) * multiple for n in np.shape(array)[-3:])
    return pad_to_size(array, size)


def patch_grid(shape: tuple[int, int, int], patch_size: int | tuple[int, int, int]) -> list[Box]:
    """Sequential tiles covering a volume, the paper's patch extraction.

    Along each axis of length n (first padded up to at least p if shorter), tiles start at
    0, p, 2p, ...; the last tile is shifted back to end at the border, so no tile leaves
    the (padded) volume and every voxel is covered.

    Args:
        shape: (X, Y, Z) of the cropped volume.
        patch_size: tile edge p (128 in the paper), or one per axis.

    Returns:
        Tiles as slice triples, in C order of their starts; each tile is p voxels long.
        Use with ``pad_to_size(volume, (p, p, p))``.

    Raises:
        ValueError: if a patch size or an axis is below 1.

    Source: paper section 4.1 ("patches extracted sequentially"), docs/design.md section 2.3.
    """
    sizes = (patch_size,) * 3 if np.isscalar(patch_size) else tuple(patch_size)
    if len(sizes) != 3 or min(sizes) < 1 or len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"need 3 positive axes and patch sizes, got {shape} and {patch_size}")
    starts_per_axis = []
    for n, p in zip(shape, sizes, strict=True):
        length = max(int(n), int(p))
        starts = list(range(0, length - p + 1, p))
        if starts[-1] + p < length:
            starts.append(length - p)
        starts_per_axis.append(starts)
    return [
        (slice(x, x + sizes[0]), slice(y, y + sizes[1]), slice(z, z + sizes[2]))
        for x in starts_per_axis[0]
        for y in starts_per_axis[1]
        for z in starts_per_axis[2]
    ]


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """A case cropped to its brain and z-scored, ready for patching.

    Attributes:
        case_id: the case ID.
        image: float32 (4, x, y, z), channels ``t1, t1ce, t2, flair``, cropped to the
            brain box, z-scored inside the brain mask, 0 outside. (4, 0, 0, 0) for an
            empty brain (:attr:`empty`).
        labels: uint8 (x, y, z) internal labels {0, 1, 2, 4}, cropped; ``None`` when the
            case has none.
        box: the crop box in the original grid (see :func:`uncrop`); three empty slices
            ``slice(0, 0)`` for an empty brain.
        original_shape: (X, Y, Z) of the input images.
        constant_channels: the modalities constant inside the brain, 0 in ``image``
            (only with ``preprocess_case(..., allow_degenerate=True)``).
    """

    case_id: str
    image: np.ndarray
    labels: np.ndarray | None
    box: Box
    original_shape: tuple[int, int, int]
    constant_channels: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when every voxel of every modality was 0: no brain, a zero-size crop."""
        return self.image.size == 0


def preprocess_case(case: Case, *, allow_degenerate: bool = False) -> Preprocessed:
    """Crop a loaded case to its brain and z-score each modality (docs/design.md section 2).

    Args:
        case: from :func:`brats_mtl.data.load_case`.
        allow_degenerate: for prediction: an empty brain (every voxel of every
            modality 0) gives a zero-size crop (``Preprocessed.empty``) and a modality
            constant inside the brain becomes 0 (``Preprocessed.constant_channels``, as
            nnU-Net's z-score), instead of raising. Training leaves it False: such a
            case cannot teach the network.

    Returns:
        The :class:`Preprocessed` case (arrays are new, contiguous copies).

    Raises:
        NonFiniteImageError: (a ``ValueError``) if a voxel is NaN or inf; names the
            modality's file, in the words of ``data.load_case`` for that file.
        ValueError: without ``allow_degenerate``, if every voxel is 0 or a modality is
            constant inside the brain (a ``ConstantChannelError``); names the case's file.

    Source: paper section 4.1, docs/design.md section 2; a constant modality: nnU-Net's
    ``ZScoreNormalization``.
    """
    try:
        mask = brain_mask(case.image)
    except NonFiniteImageError as exc:
        # the words of data.load_case: the file, and the channel of an MSD 4-D file
        path = case.files.images.get(exc.channel, case.case_id)
        where = f"{path} (channel {exc.channel})" if case.files.layout == "msd" else f"{path}"
        raise NonFiniteImageError(where, exc.channel, exc.n_bad) from None
    original_shape = tuple(int(s) for s in case.image.shape[1:])
    labels = case.labels
    if not mask.any():
        if not allow_degenerate:
            raise ValueError(
                f"case {case.case_id}: every voxel of "
                f"{sorted(map(str, case.files.images.values()))} is 0; no brain to crop"
            )
        box = (slice(0, 0), slice(0, 0), slice(0, 0))
        empty = np.zeros((case.image.shape[0], 0, 0, 0), dtype=np.float32)
        return Preprocessed(
            case_id=case.case_id,
            image=empty,
            labels=None if labels is None else np.ascontiguousarray(crop(labels, box)),
            box=box,
            original_shape=original_shape,
        )
    box = bounding_box(mask)
    try:
        image, constant = _zscore(
            crop(case.image, box), crop(mask, box), MODALITIES, allow_constant=allow_degenerate
        )
    except ConstantChannelError as exc:
        raise ConstantChannelError(
            f"{case.files.images.get(exc.channel, case.case_id)}: {exc}", exc.channel
        ) from None
    return Preprocessed(
        case_id=case.case_id,
        image=image,
        labels=None if labels is None else np.ascontiguousarray(crop(labels, box)),
        box=box,
        original_shape=original_shape,
        constant_channels=constant,
    )
