"""Layer-by-layer summary of the network, to read beside the paper's Tables 1 and 2.

Shapes come from one forward pass on PyTorch's "meta" device: tensors carry shapes but no
data, so the paper-size network at 128^3 is summarised in about a second without
allocating its activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from brats_mtl.config import ModelConfig
from brats_mtl.model.blocks import ConvNormAct, PreActConv, UpLin
from brats_mtl.model.multitask import MultiTaskNet

#: Parts in the order they are listed.
PARTS: tuple[str, ...] = ("encoder", "segmentation decoder", "VAE decoder", "classifier")


@dataclass(frozen=True)
class SummaryRow:
    """One layer of the summary.

    Attributes:
        part: one of ``PARTS``.
        name: layer name; Table 1 / Table 2 names for the VAE decoder and the classifier.
        operation: what the layer does, e.g. ``"GN+ReLU+Conv3D 3x3x3"``.
        input_shape: (C, X, Y, Z) or (F,) of the layer's first input, batch left out.
        output_shape: the same for its output.
        params: number of trainable parameters of the layer.
    """

    part: str
    name: str
    operation: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int


def summary_rows(config: Any) -> list[SummaryRow]:
    """Every layer's input and output shape and parameter count, part by part.

    Args:
        config: a ``ModelConfig`` or a whole ``Config`` (its ``model`` section is used);
            the input is one cubic patch of edge ``patch_size``.

    Returns:
        Rows in forward order within each part, parts in the order of ``PARTS``.

    Raises:
        ValueError: if the configuration or the patch size is invalid (names the fix).

    Source: paper Tables 1 and 2 (layer names), docs/design.md section 3.
    """
    model_config: ModelConfig = getattr(config, "model", config)
    with torch.device("meta"):
        net = MultiTaskNet(model_config).eval()
    layers = _named_layers(net)
    calls: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        calls.append((module, tuple(inputs[0].shape[1:]), tuple(output.shape[1:])))

    unique = {id(module): module for module, *_ in layers}.values()
    handles = [module.register_forward_hook(hook) for module in unique]
    try:
        p = model_config.patch_size
        x = torch.empty(1, model_config.in_channels, p, p, p, device="meta")
        with torch.no_grad():
            net(x, with_vae=True)
    finally:
        for handle in handles:
            handle.remove()

    # a module may run more than once (the shared max-pool): its k-th call is its k-th name
    names: dict[int, list[tuple[str, str, str]]] = {}
    for module, part, name, operation in layers:
        names.setdefault(id(module), []).append((part, name, operation))
    rows = []
    seen: dict[int, int] = {}
    for module, in_shape, out_shape in calls:
        k = seen.get(id(module), 0)
        seen[id(module)] = k + 1
        part, name, operation = names[id(module)][k]
        params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        rows.append(SummaryRow(part, name, operation, in_shape, out_shape, params))
    logits = next(r.output_shape for r in rows if r.name == "Dense2")
    rows.append(SummaryRow("classifier", "Softmax", "in loss / inference", logits, logits, 0))
    return sorted(rows, key=lambda r: PARTS.index(r.part))  # stable: forward order kept


def model_summary(config: Any) -> str:
    """The summary as text: one table per part with its total, then the network's total.

    Args:
        config: a ``ModelConfig`` or a whole ``Config`` (see :func:`summary_rows`).

    Returns:
        Plain text, one line per layer: name, operation, input, output, parameters.

    Raises:
        ValueError: if the configuration or the patch size is invalid.
    """
    rows = summary_rows(config)
    header = ("Name", "Operation", "Input", "Output", "Params")
    lines: list[str] = []
    total = 0
    for part in PARTS:
        part_rows = [r for r in rows if r.part == part]
        table = [header] + [
            (r.name, r.operation, _shape(r.input_shape), _shape(r.output_shape), f"{r.params:,}")
            for r in part_rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        part_total = sum(r.params for r in part_rows)
        total += part_total
        lines.append(f"{part} ({part_total:,} parameters)")
        for row in table:
            cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
            lines.append("  " + "  ".join([*cells, row[-1].rjust(widths[-1])]))
        lines.append("")
    lines.append(f"total: {total:,} parameters")
    return "\n".join(lines)


def _shape(shape: tuple[int, ...]) -> str:
    if len(shape) == 4 and shape[1] == shape[2] == shape[3]:
        return f"{shape[0]} x {shape[1]}^3"
    if len(shape) == 4:
        return f"{shape[0]} x {shape[1]}x{shape[2]}x{shape[3]}"
    return " x ".join(map(str, shape))


def _named_layers(net: MultiTaskNet) -> list[tuple[nn.Module, str, str, str]]:
    """(module, part, name, operation) for every summarised layer, in forward order."""
    enc, seg, vae, cls = net.encoder, net.seg_decoder, net.vae_decoder, net.classifier
    layers: list[tuple[nn.Module, str, str, str]] = []
    for i, stage in enumerate(enc.stages):
        if i > 0:
            layers.append((enc.pool, "encoder", f"Down{i}", "MaxPool 2x2x2"))
        layers += [
            (stage.conv1, "encoder", f"Stage{i}.conv1", _conv_op(stage.conv1)),
            (stage.conv2, "encoder", f"Stage{i}.conv2", _conv_op(stage.conv2)),
        ]
    for j, (up, stage) in enumerate(zip(seg.ups, seg.stages, strict=True)):
        level = enc.depth - 1 - j
        layers += [
            (up, "segmentation decoder", f"UpConv{level}", "ConvTranspose3D 2x2x2 stride 2"),
            (
                stage.conv1,
                "segmentation decoder",
                f"DecStage{level}.conv1",
                "concat skip + " + _conv_op(stage.conv1),
            ),
            (stage.conv2, "segmentation decoder", f"DecStage{level}.conv2", _conv_op(stage.conv2)),
        ]
    layers.append((seg.head, "segmentation decoder", "SegOut", "Conv3D 1x1x1 (logits)"))
    top = enc.depth - 1
    layers += [
        (vae.down_stage, "VAE decoder", f"DownStage{top}", "Conv3D 1x1x1"),
        (vae.mean, "VAE decoder", "Mean", "Conv3D 1x1x1"),
        (vae.std, "VAE decoder", "Std", "Conv3D 1x1x1 (log-variance)"),
        (vae.sample, "VAE decoder", "Sample", "z = mu + sigma*eps, Conv3D 1x1x1"),
    ]
    for name, block in vae.blocks.items():
        if isinstance(block, PreActConv):
            layers.append((block, "VAE decoder", name, "GN+ReLU+Conv3D 3x3x3"))
        elif isinstance(block, UpLin):
            layers.append((block, "VAE decoder", name, "Conv3D 1x1x1 + UpLin x2"))
    layers.append((vae.out, "VAE decoder", "VAEOut", "Conv3D 1x1x1"))
    for i, conv in enumerate(cls.convs):
        name = "Bottleneck" if i == 0 else ("Reduced" if i == 1 else f"Reduced{i}")
        layers.append((conv, "classifier", name, _conv_op(conv)))
    layers += [
        (cls.dense1, "classifier", "Dense1", "Linear (flattened) + LeakyReLU"),
        (cls.dropout, "classifier", "Dropout", f"Dropout p={cls.dropout.p}"),
        (cls.dense2, "classifier", "Dense2", "Linear (logits)"),
    ]
    return layers


def _conv_op(block: ConvNormAct) -> str:
    k = block.conv.kernel_size[0]
    return f"Conv3D {k}x{k}x{k} + GN + LeakyReLU"
