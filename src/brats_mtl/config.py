"""One frozen configuration tree with the paper's defaults.

Every default cites where it comes from. The tree is saved with every run (YAML), can be
read back from a file, and single values can be overridden with ``key=value`` strings
(``model.widths=[4,8,16,32,64]``, ``train.max_steps=20``), as the CLI's ``--set`` does.

A setting with a fixed vocabulary is typed ``Literal[...]``: that type is the one list of
its values (:func:`choices`). Every section checks its values when it is built
(:func:`check_config`: the vocabularies and the numeric ranges), so a configuration read
from a file, from ``--set`` or made in Python is refused at once, naming the key.

Source: paper sections 4.1-4.3 and Tables 1-2; ``docs/design.md`` sections 2-7 where the paper
is silent.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from brats_mtl.atomic import write_text_atomic

#: Names of the label schemes (``brats_mtl.tasks.LABEL_SCHEMES``) and of the label
#: convention ``brats2019`` (the scheme brats2017), as ``tasks.get_label_scheme`` takes them.
LabelSchemeName = Literal["brats2017", "msd", "brats2023", "gli-post", "ped2024", "brats2019"]


class _Checked:
    """Base of the config sections: each checks its values when built (:func:`check_config`)."""

    def __post_init__(self) -> None:
        check_config(self)


@dataclass(frozen=True)
class ModelConfig(_Checked):
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
    # Bottleneck/Reduced conv kernel; Table 2 gives none
    classifier_kernel_size: Literal[1, 3] = 1
    patch_size: int = 128  # 128^3 patches (paper 4.1)


@dataclass(frozen=True)
class LossConfig(_Checked):
    """Weights of L = w_l2 L2 + w_kl KL + w_ce CE + w_dice Dice (paper 4.2, Training)."""

    w_l2: float = 0.1  # paper: 0.1 * L_L2
    w_kl: float = 0.1  # paper: 0.1 * L_KL
    w_ce: float = 0.1  # paper: 0.1 * L_class
    w_dice: float = 1.0  # paper: 1 * L_dice
    dice_smooth: float = 1e-5  # soft-Dice smoothing; not in the paper


@dataclass(frozen=True)
class TrainConfig(_Checked):
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
    # "grid": the paper's sequential tiles; "random": crops at random places
    patch_sampling: Literal["grid", "random"] = "grid"
    random_patches_per_case: int = 2  # patches per case and epoch when sampling "random"
    seed: int = 0
    num_workers: int = 0  # DataLoader workers; 0 reads in the main process
    # Lightning's precision values (lightning.fabric's _PRECISION_INPUT_STR and its aliases),
    # e.g. "16-mixed" or "bf16-mixed" on a GPU
    precision: Literal[
        "32-true",
        "16-mixed",
        "bf16-mixed",
        "16-true",
        "bf16-true",
        "64-true",
        "transformer-engine",
        "transformer-engine-float16",
        "32",
        "16",
        "bf16",
        "64",
    ] = "32-true"
    # Lightning's accelerators (its AcceleratorRegistry), "gpu" (any GPU) and "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = "auto"
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
    # label scheme of the training labels (brats_mtl.tasks.LABEL_SCHEMES, or a label
    # convention's name: brats2019 is brats2017's); None: inferred from the data and
    # recorded here in the run's config.yaml. It decides model.n_classes.
    labels: LabelSchemeName | None = None


@dataclass(frozen=True)
class InferenceConfig(_Checked):
    """Inference (paper, Inference; docs/design.md section 5)."""

    # mirror TTA passes: 0 (off), 4 (identity + 3 flips, paper), 8 (all flips)
    tta: Literal[0, 4, 8] = 4
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
    # "vote": per-voxel majority (paper 5.1); "mean": argmax of the mean probabilities
    ensemble: Literal["vote", "mean"] = "vote"
    # "window": sliding windows; "whole": one pass over the padded crop
    mode: Literal["window", "whole"] = "window"
    channels_last: bool = True  # measured faster for 3-D convs on CPU
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    # bf16 on CPUs with AMX (Dice >= 0.999 vs float32), else "32"
    precision: Literal["auto", "32", "bf16"] = "auto"
    mask_outside_brain: bool = True  # 0 outside the brain: nnU-Net convention, not in the paper
    # voxel-wise uncertainty maps in the QU-BraTS format (Mehta et al., MELBA 2022); not in
    # the paper: "entropy" of the mean probability or "disagreement" of the passes x folds
    uncertainty: Literal["none", "entropy", "disagreement"] = "none"


@dataclass(frozen=True)
class SurvivalConfig(_Checked):
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


#: What the values of a setting mean, added to the error on a value outside its ``Literal``.
_CHOICE_HINTS: dict[str, str] = {
    "inference.tta": "0: off; 4: identity and 3 single-axis flips, the paper's; 8: all flip "
    "combinations",
    "inference.mode": "window: sliding windows, the paper's; whole: one pass over the cropped "
    "brain, faster",
    "inference.ensemble": "vote: majority of the folds' label maps, the paper's; mean: argmax "
    "of the mean probabilities",
    "inference.precision": "auto: bf16 on CPUs with AMX, else 32; 32: float32; bf16: "
    "bfloat16 autocast",
    "inference.uncertainty": "entropy: of the mean probability over passes and folds; "
    "disagreement: share of passes and folds against the final label",
    "train.labels": "null: inferred from the data",
}

#: Numeric settings checked when a section is built: key -> (the rule in words, the test
#: of a value and its section). Each was checked where the value is used before.
_RANGES: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "train.n_folds": ("at least 2", lambda v, _: v >= 2),
    "train.batch_size": (">= 1", lambda v, _: v >= 1),
    "train.lr": ("positive", lambda v, _: v > 0),
    "train.weight_decay": (">= 0", lambda v, _: v >= 0),
    "train.max_epochs": (">= 1", lambda v, _: v >= 1),
    # Lightning's convention: -1 = no step limit; 0 would leave the fold untrained
    "train.max_steps": (
        ">= 1, or -1 (no limit: train.max_epochs decides)",
        lambda v, _: v >= 1 or v == -1,
    ),
    "train.num_workers": (">= 0 (0: read in the main process)", lambda v, _: v >= 0),
    "train.num_nodes": (">= 1", lambda v, _: v >= 1),
    "train.val_every_n_epochs": (">= 1", lambda v, _: v >= 1),
    "train.log_every_n_steps": (">= 1", lambda v, _: v >= 1),
    "train.decoder_lr_scale": ("positive", lambda v, _: v > 0),
    "train.classifier_lr_scale": ("positive", lambda v, _: v > 0),
    "train.random_patches_per_case": (
        "at least 1 with train.patch_sampling='random'",
        lambda v, t: t.patch_sampling != "random" or v >= 1,
    ),
    "train.cache_workers": (">= 0 (0: preprocess in this process)", lambda v, _: v >= 0),
    "train.checkpoint_every_n_steps": (
        ">= 0 (0: only at validations and the end)",
        lambda v, _: v >= 0,
    ),
    "inference.overlap": (
        "in [0, 1): the fraction of a window shared with its neighbour (0.5 by default)",
        lambda v, _: 0.0 <= v < 1.0,
    ),
    "inference.window_batch_size": (">= 1", lambda v, _: v >= 1),
    "inference.et_probability_threshold": ("in [0, 1]", lambda v, _: 0.0 <= v <= 1.0),
    "inference.et_min_voxels": (">= 0", lambda v, _: v >= 0),
}


#: ``inference.device``: the torch device names prediction runs on.
_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


@functools.cache
def _section_fields(cls: type) -> tuple[str, dict[str, Any]]:
    """A section class's name in :class:`Config` and its resolved type hints."""
    names = {hint: name for name, hint in typing.get_type_hints(Config).items()}
    return names[cls], typing.get_type_hints(cls)


def _literal_values(hint: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal[...]`` hint, or None when the hint is no ``Literal``.

    ``None`` is added last for ``Literal[...] | None``.
    """
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and typing.get_origin(inner[0]) is Literal:
            return (*typing.get_args(inner[0]), *((None,) if len(inner) < len(args) else ()))
    return None


@functools.cache
def choices(key: str) -> tuple[Any, ...]:
    """The values a setting accepts, read from its ``Literal`` type.

    Args:
        key: ``section.name``, e.g. ``"inference.ensemble"``.

    Returns:
        The values in the order of the type (``None`` last when the setting may be unset),
        e.g. ``("vote", "mean")``.

    Raises:
        ValueError: if ``key`` is no setting or its type is no ``Literal``.
    """
    section, _, name = key.partition(".")
    sections = typing.get_type_hints(Config)
    hints = typing.get_type_hints(sections[section]) if section in sections else {}
    values = _literal_values(hints[name]) if name in hints else None
    if values is None:
        raise ValueError(f"{key!r} is not a setting with a fixed set of values")
    return values


def check_choice(key: str, value: Any) -> None:
    """Refuse a value outside the ``Literal`` type of setting ``key`` (see :func:`choices`).

    Raises:
        ValueError: naming the key, the value and the accepted values, e.g.
            ``inference.precision='fp64' is not one of 'auto', '32', 'bf16'``.
    """
    allowed = choices(key)
    if not any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed):
        hint = _CHOICE_HINTS.get(key)
        raise ValueError(
            f"{key}={value!r} is not one of {', '.join(map(repr, allowed))}"
            + (f" ({hint})" if hint else "")
        )


def parse_devices(devices: str | int | Sequence[int]) -> str | int | list[int]:
    """Lightning's ``devices`` from the configuration string (``train.devices``).

    "auto" -> "auto"; "2" -> 2 (two devices; "-1": all); "0,1" or "[0, 1]" -> [0, 1]
    (those device indices).

    Raises:
        ValueError: on anything else (names ``train.devices``).
    """
    if isinstance(devices, int):
        return devices
    if not isinstance(devices, str):
        return [int(d) for d in devices]
    text = devices.strip().strip("[]").strip()
    if text == "auto":
        return "auto"
    try:
        if "," in text:
            return [int(d) for d in text.split(",") if d.strip()]
        return int(text)
    except ValueError:
        raise ValueError(
            f"train.devices={devices!r}: use 'auto', a count such as '2' ('-1' for all), "
            "or device indices such as '0,1'"
        ) from None


def check_config(config: Any) -> None:
    """Check a configuration tree or one section: option vocabularies and numeric ranges.

    Every field typed ``Literal[...]`` must hold one of its values (:func:`check_choice`);
    the numeric settings of ``_RANGES`` must lie in their range. Sections run this when
    they are built, so a ``Config`` from :func:`load_config`, :func:`apply_overrides`,
    :func:`from_dict`, ``dataclasses.replace`` or Python code is always checked.

    Args:
        config: a :class:`Config` or one of its sections (``InferenceConfig``, ...).

    Raises:
        ValueError: on the first bad value, naming the key (``section.name``), the value
            and what is accepted.
    """
    if isinstance(config, Config):
        for f in dataclasses.fields(config):
            check_config(getattr(config, f.name))
        return
    section, hints = _section_fields(type(config))
    for f in dataclasses.fields(config):
        key, value = f"{section}.{f.name}", getattr(config, f.name)
        if _literal_values(hints[f.name]) is not None:
            check_choice(key, value)
        if key in _RANGES:
            rule, holds = _RANGES[key]
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{key}={value!r} must be a number {rule}")
            if not holds(value, config):
                raise ValueError(f"{key}={value!r} must be {rule}")
    if section == "train":
        parse_devices(config.devices)
    if section == "inference" and not _DEVICE.fullmatch(str(config.device)):
        raise ValueError(
            f"inference.device={config.device!r} is not a device name: use 'auto', 'cpu', "
            "'cuda', 'cuda:N' (the N-th GPU), 'mps' or 'xpu'"
        )


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
        ValueError: on an unknown key, a value of the wrong type, or one that
            :func:`check_config` refuses (names the key).
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
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        return _coerce(value, hint, path)
    if origin is Literal:
        # to the values' type ("32" for precision, 4 for tta); whether the value is one of
        # them is check_config's, when the section is built
        kinds = {type(a) for a in typing.get_args(hint)}
        try:
            return _coerce(value, kinds.pop(), path) if len(kinds) == 1 else value
        except ValueError:
            return value
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
