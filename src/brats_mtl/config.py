"""One frozen configuration tree with the paper's defaults.

Every default cites where it comes from. The tree is saved with every run (YAML), can be
read back from a file, and single values can be overridden with ``key=value`` strings
(``model.widths=[4,8,16,32,64]``, ``train.max_steps=20``), as the CLI's ``--set`` does.

Source: paper sections 4.1-4.3 and Tables 1-2; ``docs/design.md`` sections 2-7 where the paper
is silent.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from brats_mtl.atomic import write_text_atomic


@dataclass(frozen=True)
class ModelConfig:
    """The multi-task network (paper section 4.2, Fig. 2, Tables 1 and 2)."""

    in_channels: int = 4  # t1, t1ce, t2, flair (paper section 3)
    n_classes: int = (
        4  # background, NCR/NET, ED, ET (softmax over 4 labels, docs/design.md section 3)
    )
    widths: tuple[int, ...] = (28, 56, 112, 224, 448)  # first layer 28, depth 4 (paper 4.2)
    norm_groups: int = 4  # GroupNorm with 4 groups (Table 1 caption)
    negative_slope: float = 0.01  # LeakyReLU slope; paper gives none, PyTorch default
    vae_hidden_channels: int = 100  # DownStage3 / Sample output channels (Table 1)
    latent_channels: int = 50  # mu and sigma channels (Table 1)
    classifier_channels: tuple[int, ...] = (256, 128)  # Bottleneck, Reduced convs (Table 2)
    classifier_hidden: int = 32  # Dense1 output (Table 2)
    dropout: float = 0.5  # dropout after Dense1 (Table 2, paper 4.2)
    classifier_kernel_size: int = 1  # Bottleneck/Reduced conv kernel; Table 2 gives none
    patch_size: int = 128  # 128^3 patches (paper 4.1)


@dataclass(frozen=True)
class LossConfig:
    """Weights of L = w_l2 L2 + w_kl KL + w_ce CE + w_dice Dice (paper 4.2, Training)."""

    w_l2: float = 0.1  # paper: 0.1 * L_L2
    w_kl: float = 0.1  # paper: 0.1 * L_KL
    w_ce: float = 0.1  # paper: 0.1 * L_class
    w_dice: float = 1.0  # paper: 1 * L_dice
    dice_smooth: float = 1e-5  # soft-Dice smoothing; not in the paper


@dataclass(frozen=True)
class TrainConfig:
    """Training procedure (paper, Training Procedure; docs/design.md section 4)."""

    n_folds: int = 5  # stratified five-fold cross-validation (paper)
    batch_size: int = 2  # paper
    lr: float = 1e-4  # paper
    # the segmentation and VAE decoders learn at lr * decoder_lr_scale, the ET classifier at
    # lr * classifier_lr_scale, the shared encoder at lr. Paper: one rate for the whole
    # network (1.0, 1.0); the demo's short schedule needs faster heads on an encoder at the
    # paper's rate (presets.demo_config, MultiTaskModule.parameter_groups)
    decoder_lr_scale: float = 1.0
    classifier_lr_scale: float = 1.0
    weight_decay: float = 1e-5  # paper
    max_epochs: int = 300  # not in the paper; a budget for 335 cases
    max_steps: int = -1  # -1: limited by max_epochs only (Lightning convention)
    patch_sampling: str = "grid"  # "grid": the paper's sequential tiles; "random": crops
    random_patches_per_case: int = 2  # patches per case and epoch when sampling "random"
    seed: int = 0
    num_workers: int = 0  # DataLoader workers; 0 reads in the main process
    precision: str = "32-true"  # Lightning precision, e.g. "16-mixed" or "bf16-mixed" on GPU
    accelerator: str = "auto"  # "cpu", "gpu", "auto"
    devices: str = "auto"  # Lightning devices: "auto", "1", "4", "0,1"
    num_nodes: int = 1
    strategy: str = "auto"  # e.g. "ddp" for several GPUs or nodes
    val_every_n_epochs: int = 1
    # NDHWC activations: forward+backward of small 3-D U-Nets measured ~25x faster on CPU
    # (oneDNN's default-layout backward is slow); cuDNN supports the layout too.
    channels_last: bool = True
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 100  # last.ckpt every N steps too (0: validations, end)
    cache_workers: int = 0  # processes preprocessing cases into the cache; 0: this process
    # deterministic algorithms; None: on the CPU only (some CUDA kernels of 3-D upsampling
    # have no deterministic backward pass)
    deterministic: bool | None = None
    # label scheme of the training labels (brats_mtl.tasks); None: inferred from the data
    # and recorded here in the run's config.yaml. It decides model.n_classes.
    labels: str | None = None


@dataclass(frozen=True)
class InferenceConfig:
    """Inference (paper, Inference; docs/design.md section 5)."""

    tta: int = 4  # mirror TTA passes: 0 (off), 4 (identity + 3 flips, paper), 8 (all flips)
    overlap: float = 0.5  # sliding-window overlap (fraction of the window); not in the paper
    window_batch_size: int = (
        1  # windows per forward pass; 2 was no faster on CPU and 1.8x the memory
    )
    et_probability_threshold: float = (
        0.5  # classifier "no ET" below this (docs/design.md section 5)
    )
    et_min_voxels: int = (
        500  # suppress ET only when fewer voxels than this (docs/design.md section 5)
    )
    ensemble: str = "vote"  # "vote": per-voxel majority (paper 5.1); "mean": probabilities
    mode: str = "window"  # "window": sliding windows; "whole": one pass over the padded crop
    channels_last: bool = True  # measured faster for 3-D convs on CPU
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    precision: str = "auto"  # bf16 on CPUs with AMX (Dice >= 0.999 vs float32), else "32"
    mask_outside_brain: bool = True  # 0 outside the brain: nnU-Net convention, not in the paper
    # voxel-wise uncertainty maps in the QU-BraTS format (Mehta et al., MELBA 2022); not in
    # the paper: "entropy" of the mean probability or "disagreement" of the passes x folds
    uncertainty: Literal["none", "entropy", "disagreement"] = "none"


@dataclass(frozen=True)
class SurvivalConfig:
    """Survival classes of the BraTS online system (docs/design.md section 7)."""

    short_days: float = 300.0  # short survivors: < 300 days
    long_days: float = 450.0  # long survivors: > 450 days
    gtr_only: bool = True  # fit and predict on GTR patients only (paper 4.3)
    cv_folds: int = 5


@dataclass(frozen=True)
class Config:
    """The whole configuration tree."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    survival: SurvivalConfig = field(default_factory=SurvivalConfig)


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (tuples become lists), for YAML/JSON."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def from_dict(data: dict[str, Any], cls: type = Config, where: str = "") -> Any:
    """Build a config dataclass from a nested dict; missing keys keep their defaults.

    Raises:
        ValueError: on an unknown key or a value of the wrong type (names the key).
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}{key}"
        if key not in names:
            raise ValueError(
                f"unknown configuration key {path!r}; known keys here: {sorted(names)}"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"configuration key {path!r} must be a mapping")
            kwargs[key] = from_dict(value, hint, path + ".")
        else:
            kwargs[key] = _coerce(value, hint, path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, list | tuple):
            raise ValueError(f"configuration key {path!r} must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(v, item, path) for v in value)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return value
        raise ValueError(
            f"configuration key {path!r} must be one of {list(choices)}, got {value!r}"
        )
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
    elif hint in (int, float, str):
        try:
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            if hint is not str and isinstance(value, bool):
                raise ValueError
            return hint(value)
        except (TypeError, ValueError):
            pass
    raise ValueError(
        f"configuration key {path!r} expects {getattr(hint, '__name__', hint)}, got {value!r}"
    )


def apply_overrides(config: Config, overrides: typing.Iterable[str]) -> Config:
    """Return ``config`` with ``section.key=value`` overrides applied (values parsed as YAML).

    Raises:
        ValueError: on a malformed override, an unknown key or a badly typed value.
    """
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise ValueError(f"unknown configuration section {key!r} in override {item!r}")
            node = node[key]
        if keys[-1] not in node:
            raise ValueError(
                f"unknown configuration key {dotted!r}; known keys here: {sorted(node)}"
            )
        node[keys[-1]] = yaml.safe_load(raw)
    return from_dict(data)


def load_config(
    path: str | Path | None = None,
    overrides: typing.Iterable[str] = (),
    *,
    base: Config | None = None,
) -> Config:
    """``base`` (default: the paper's defaults), updated from a YAML/JSON file, then overrides.

    Keys absent from the file keep their ``base`` values.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a mapping or holds unknown or badly typed keys.
    """
    config = base or Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"configuration file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"configuration file {path} is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"configuration file {path} must hold a mapping of sections")
        merged = to_dict(config)
        for section, values in data.items():
            if isinstance(values, dict) and isinstance(merged.get(section), dict):
                merged[section].update(values)
            else:
                merged[section] = values
        try:
            config = from_dict(merged)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return apply_overrides(config, overrides)


def save_config(config: Config, path: str | Path) -> None:
    """Write ``config`` as YAML, atomically (temp file, then rename)."""
    write_text_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False), overwrite=True)
