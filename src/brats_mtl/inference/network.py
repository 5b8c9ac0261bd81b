"""Predictors built from a trained ``MultiTaskNet``: softmax outputs, VAE off, no autograd.

``network_predictor`` gives the windowed mode's ``Predictor`` and
``network_volume_predictor`` the whole-volume mode's ``VolumePredictor`` (interfaces in
``brats_mtl.inference.sliding_window``). Both put the model in eval mode on ``device``
(in place), run under ``torch.inference_mode``, optionally in the channels-last-3d memory
layout and in bfloat16 autocast, and return float32 probabilities.

Speed notes, measured with ``benchmarks/bench_inference.py`` on an idle 2-core Xeon
(AVX-512 + AMX) with the paper's network: one 128^3 window takes about 6.9 s in the
default memory layout (MONAI's inferer), 4.6 s channels-last (oneDNN convolutions) and
2.1 s with bfloat16 autocast on top (AMX); GroupNorm is then about 39% of a forward pass
(profiled with ``torch.profiler``), convolutions 42%. bfloat16 is only fast where the CPU has AMX; elsewhere it is emulated and far slower.
``precision="auto"`` (the default) therefore takes bfloat16 only on a CPU with AMX-BF16
tiles and float32 everywhere else (GPUs included). Against float32 windows, bfloat16
windows gave Dice >= 0.999 per region on two real cases with a trained model (see the
README). On the CPU a batch of 2 windows is no faster per window than 1 and costs 1.5 GB
more.

Source: paper, Inference (VAE branch off; classifier output saved); docs/design.md section 5.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import torch
from torch import nn

from brats_mtl.config import choices
from brats_mtl.conventions import Box
from brats_mtl.inference.sliding_window import Predictor, VolumePredictor

logger = logging.getLogger(__name__)

#: Accepted ``precision`` values: "auto" (see :func:`resolve_precision`), float32, or
#: bfloat16 autocast (convolutions in bf16).
PRECISIONS: tuple[str, ...] = choices("inference.precision")


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX tiles with bfloat16 (Intel Xeon 4th generation and later).

    Reads torch's own CPU feature probe (``torch.cpu._is_amx_tile_supported`` and
    ``_is_avx512_bf16_supported``, private in torch 2.x); False when torch has no such
    probe.
    """
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return all(getattr(torch.cpu, name)() for name in probes)
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The precision a forward pass runs in: ``"32"`` or ``"bf16"``.

    ``"auto"`` gives ``"bf16"`` on a CPU with AMX-BF16 (:func:`cpu_has_amx_bf16`), where
    bfloat16 convolutions ran about 2.2x faster than float32 ones
    (``benchmarks/bench_model.py``), and ``"32"`` on other CPUs (bfloat16 is emulated
    there, hundreds of times slower) and on GPUs (float32 is fast there, and bfloat16 on
    a GPU is unmeasured here). ``"32"`` and ``"bf16"`` are returned as given.

    Args:
        precision: one of :data:`PRECISIONS`.
        device: the device the model runs on ("auto", "cpu", "cuda", a ``torch.device``).

    Raises:
        ValueError: on an unknown ``precision`` or device.

    Source: docs/design.md section 5 (CPU speed); measured on a 2-core Xeon with AMX.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is not one of {list(PRECISIONS)}; use auto, 32 "
            "(float32) or bf16 (bfloat16 autocast: fast on CPUs with AMX and on recent GPUs)"
        )
    if precision != "auto":
        return precision
    if resolve_device(device).type == "cpu" and cpu_has_amx_bf16():
        return "bf16"
    return "32"


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; other names as torch reads them.

    Raises:
        ValueError: if a CUDA device is asked for and none is available, or the name is
            not a torch device.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"inference.device={device!r} is not a device name; use auto, cpu, cuda or cuda:N"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"inference.device={device!r} but this torch build sees no CUDA device; "
            "use --device cpu (or auto)"
        )
    return resolved


def prepare_model(
    model: nn.Module, device: str | torch.device, *, channels_last: bool
) -> nn.Module:
    """Eval mode, on ``device``, in the channels-last-3d layout if asked; in place.

    Returns:
        ``model`` itself.
    """
    model.eval()
    model.to(resolve_device(device))
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    return model


def network_predictor(
    model: nn.Module,
    *,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
    precision: str = "32",
) -> Predictor:
    """A windowed-mode ``Predictor`` from a ``MultiTaskNet``.

    Args:
        model: a ``brats_mtl.model.MultiTaskNet`` (or anything whose ``forward(x)`` returns
            a record with ``seg_logits`` (B, C, P, P, P) and ``cls_logits`` (B, 2) or
            None). Put in eval mode on ``device``, in place.
        device: "auto", "cpu", "cuda", "cuda:1", or a ``torch.device``.
        channels_last: run in the channels-last-3d memory layout (faster oneDNN and cuDNN
            3-D convolutions).
        precision: "auto", "32" (float32) or "bf16" (bfloat16 autocast); see
            :func:`resolve_precision`.

    Returns:
        ``predictor(x) -> (seg_probs, et_prob)``: ``x`` float32 (B, 4, P, P, P), cast to
        the model's parameter dtype before the forward pass;
        ``seg_probs`` float32 (B, C, P, P, P), softmax over the classes; ``et_prob``
        float32 (B,), softmax of ``cls_logits`` at index 1 ("ET present"), NaN when the
        model has no classifier output.

    Raises:
        ValueError: on an unknown ``precision`` or device.

    Source: paper, Inference; docs/design.md section 5.
    """
    run_context = _run_context(precision, device)
    prepare_model(model, device, channels_last=channels_last)
    target = resolve_device(device)
    dtype = _parameter_dtype(model)

    def predictor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _prepare_input(x, target, channels_last, dtype)
        with run_context():
            out = model(x)
            seg_probs = torch.softmax(out.seg_logits.float(), dim=1).contiguous()
            et_prob = _et_probability(out.cls_logits, x.shape[0], x.device)
        return seg_probs, et_prob

    return predictor


def network_volume_predictor(
    model: nn.Module,
    *,
    device: str | torch.device = "cpu",
    channels_last: bool = True,
    precision: str = "32",
) -> VolumePredictor:
    """A whole-volume ``VolumePredictor`` from a ``MultiTaskNet``: one encoder pass.

    The encoder runs once over the padded volume; the ET classifier runs on the
    bottleneck tiles under the requested windows (window start / ``2**depth``), and the
    segmentation decoder on the same features, in its memory-lean decode
    (``SegmentationDecoder.forward(..., lean=True)``).

    Args:
        model: a ``MultiTaskNet`` (needs ``encode``, ``seg_decoder``, ``classifier`` and
            ``depth``). Put in eval mode on ``device``, in place.
        device: as :func:`network_predictor`.
        channels_last: as :func:`network_predictor`.
        precision: as :func:`network_predictor`.

    Returns:
        ``volume_predictor(x, boxes) -> (seg_probs, et_probs)``: ``x`` float32
        (1, 4, X, Y, Z), X, Y, Z multiples of ``2**depth``; ``boxes`` windows of
        ``patch_size^3`` on that grid whose starts are multiples of ``2**depth``;
        ``seg_probs`` float32 (1, C, X, Y, Z); ``et_probs`` float32 (len(boxes),).

    Raises:
        ValueError: on an unknown ``precision`` or device; (when called) on a window not
            on the bottleneck grid.

    Source: docs/design.md section 5 (fast mode); classifier on the bottleneck (Table 2).
    """
    for name in ("encode", "seg_decoder", "classifier", "depth"):
        if not hasattr(model, name):
            raise ValueError(
                f"whole-volume inference needs a MultiTaskNet (model lacks {name!r}); "
                "use inference.mode=window for other predictors"
            )
    run_context = _run_context(precision, device)
    prepare_model(model, device, channels_last=channels_last)
    target = resolve_device(device)
    factor = 2**model.depth
    dtype = _parameter_dtype(model)

    def volume_predictor(
        x: torch.Tensor, boxes: Sequence[Box]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = _prepare_input(x, target, channels_last, dtype)
        with run_context():
            features = model.encode(x)  # [(1, 28, X, Y, Z), ..., (1, 448, X/16, Y/16, Z/16)]
            tiles = [_bottleneck_tile(features[-1], box, factor) for box in boxes]
            cls_logits = model.classifier(torch.cat(tiles)) if tiles else None  # (n, 2)
            et_probs = _et_probability(cls_logits, len(boxes), x.device)
            del tiles
            # the decoder's memory-lean decode empties ``features`` as it goes
            seg_logits = model.seg_decoder(features, lean=True)  # (1, C, X, Y, Z)
            seg_probs = torch.softmax(seg_logits.float(), dim=1).contiguous()
        return seg_probs, et_probs

    return volume_predictor


def _bottleneck_tile(bottleneck: torch.Tensor, box: Box, factor: int) -> torch.Tensor:
    """The bottleneck cells under one window: (B, C, P/f, P/f, P/f)."""
    cells = []
    for sl in box:
        if sl.start % factor or sl.stop % factor:
            raise ValueError(f"window {box} is not on the {factor}-voxel bottleneck grid")
        cells.append(slice(sl.start // factor, sl.stop // factor))
    return bottleneck[(slice(None), slice(None), *cells)]


def _et_probability(
    cls_logits: torch.Tensor | None, batch: int, device: torch.device
) -> torch.Tensor:
    if cls_logits is None:
        return torch.full((batch,), float("nan"), device=device)
    return torch.softmax(cls_logits.float(), dim=1)[:, 1]


def _parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs are cast to: the model's parameters', float32 without any.

    Float32 unless the model was cast, e.g. by a Lightning ``bf16-true`` trainer during
    validation.
    """
    parameter = next(iter(model.parameters()), None)
    return torch.float32 if parameter is None else parameter.dtype


def _prepare_input(
    x: torch.Tensor, device: torch.device, channels_last: bool, dtype: torch.dtype
) -> torch.Tensor:
    x = x.to(device, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return x


def _run_context(precision: str, device: str | torch.device):
    """A factory of the context every forward pass runs in."""
    precision = resolve_precision(precision, device)
    device_type = resolve_device(device).type

    def context() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if precision == "bf16":
            stack.enter_context(torch.autocast(device_type, dtype=torch.bfloat16))
        return stack

    return context
