"""The one place that turns a command's settings into a :class:`~brats_mtl.config.Config`.

Every command that takes settings (``train``, ``run``, ``demo``, ``predict``,
``model-summary``, ``survival``) builds its configuration with :func:`resolve_config`, in
this order, each step over the one before:

1. the base: a run's saved ``config.yaml`` where the command continues a run (see
   :func:`resolve_config` for when), else the ``--preset``;
2. ``--config FILE``;
3. ``--set KEY=VALUE``, in the order given;
4. the command's own flags (``--tta``, ``--precision``, ``--cache-workers``, ...): each is
   another spelling of one ``--set`` key (:data:`FLAG_KEYS`), so ``--tta 0`` and
   ``--set inference.tta=0`` give the same configuration.

What the configuration refuses (:func:`brats_mtl.config.check_config`) is a usage error
(exit status 2) naming the option at fault; a bad saved ``config.yaml`` is not the user's
typing, and fails with exit status 1.

Source: the convention of Lightning's and Hydra's command lines (defaults < config file <
command-line overrides).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from brats_mtl.config import Config

#: Command-line flags that are sugar for one ``--set`` key: flag -> configuration key.
#: (``predict --labels`` is the label scheme of the input files, not a setting.)
FLAG_KEYS: dict[str, str] = {
    "--tta": "inference.tta",
    "--mode": "inference.mode",
    "--device": "inference.device",
    "--precision": "inference.precision",
    "--uncertainty": "inference.uncertainty",
    "--cache-workers": "train.cache_workers",
    "--checkpoint-every": "train.checkpoint_every_n_steps",
    "--labels": "train.labels",
    "--patch": "model.patch_size",
}


def preset_option(*, default: str | None = "paper", extra_help: str = ""):
    """The ``--preset`` option of ``run``, ``train`` and ``model-summary``.

    Its choices are :data:`~brats_mtl.presets.PRESET_NAMES` with
    :data:`~brats_mtl.presets.PRESET_HELP`; :func:`resolve_config` turns the name into
    the base configuration.

    Args:
        default: the preset used without the option (None: the command decides).
        extra_help: appended to the shared help text.
    """
    from brats_mtl.presets import PRESET_HELP, PRESET_NAMES

    return click.option(
        "--preset",
        type=click.Choice(PRESET_NAMES),
        default=default,
        show_default=default is not None,
        help=PRESET_HELP + extra_help,
    )


def flag_overrides(flags: Mapping[str, Any]) -> list[str]:
    """The ``--set`` spelling of the flags given (None values: flag not given).

    Args:
        flags: flag (a key of :data:`FLAG_KEYS`, e.g. ``"--tta"``) -> its parsed value.

    Returns:
        ``KEY=VALUE`` strings, the value written as JSON (valid YAML), so that it reaches
        the configuration as click parsed it: ``--tta 0`` gives ``inference.tta="0"``.

    Raises:
        KeyError: on a flag that is not in :data:`FLAG_KEYS`.
    """
    return [f"{FLAG_KEYS[flag]}={json.dumps(v)}" for flag, v in flags.items() if v is not None]


def resolve_config(
    *,
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    saved_run: Path | None = None,
    set_replaces_saved: bool = False,
    default_preset: str | None = "paper",
) -> Config:
    """A command's configuration: base < ``--config`` < ``--set`` < flags.

    The base is the configuration saved in the run folder ``saved_run`` (its
    ``config.yaml``) when the folder has one and neither ``--preset`` nor ``--config`` is
    given (nor ``--set``, when ``set_replaces_saved``); else the preset ``preset``, or
    ``default_preset`` without one. The commands pass:

    - ``train``: the run folder; ``--set`` applies over its saved configuration.
    - ``run``: ``OUT/run`` with ``--resume`` only; ``set_replaces_saved`` (``--set``
      builds the configuration from the preset, as in a first run).
    - ``demo``: ``OUT/results/run`` unless ``--overwrite``; ``set_replaces_saved``;
      the ``demo`` preset.
    - ``predict``: the run folder, required (``default_preset`` None).

    Args:
        preset: ``--preset`` (None: not given); ``"paper"``, ``"cpu"`` or ``"demo"``.
        config_file: ``--config``.
        overrides: ``--set`` values, ``section.key=value``.
        flags: the command's flags (:func:`flag_overrides`), None values not given.
        saved_run: a run folder whose saved configuration may be the base.
        set_replaces_saved: whether ``--set`` makes the preset the base.
        default_preset: the preset without ``--preset``; None: ``saved_run`` must hold a
            configuration.

    Returns:
        The checked configuration.

    Raises:
        click.BadParameter: a bad ``--config`` file, ``--set`` value or flag value
            (exit status 2), naming the option.
        click.ClickException: a run folder whose ``config.yaml`` is unreadable or
            invalid, or missing where it is required (exit status 1).
    """
    from brats_mtl.config import apply_overrides, load_config

    saved = None
    if saved_run is not None:
        saved = _saved_config(saved_run, required=default_preset is None)
    replaced = (
        preset is not None or config_file is not None or bool(set_replaces_saved and overrides)
    )
    if saved is not None and not replaced:
        base = saved
    else:
        base = _preset_config(preset or default_preset or "paper")
    given = [name for name, value in (("--config", config_file), ("--set", overrides)) if value]
    try:
        config = load_config(config_file, overrides, base=base)
    except (FileNotFoundError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="/".join(given) or "--set") from None
    given_flags = {flag: value for flag, value in (flags or {}).items() if value is not None}
    try:
        return apply_overrides(config, flag_overrides(given_flags))
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="/".join(given_flags)) from None


def _preset_config(name: str) -> Config:
    """The configuration of a preset name: ``paper``, ``cpu`` or ``demo``."""
    from brats_mtl import presets

    return presets.demo_config() if name == "demo" else presets.preset_config(name)


def _saved_config(run_dir: Path, *, required: bool) -> Config | None:
    """The configuration saved in a run folder; None when it has none and none is required.

    Raises:
        click.ClickException: on an unreadable or invalid file, or a missing one that is
            ``required``.
    """
    from brats_mtl.training import read_run_config

    try:
        return read_run_config(run_dir)
    except FileNotFoundError as err:
        if required:
            raise click.ClickException(str(err)) from err
        return None
    except ValueError as err:
        raise click.ClickException(str(err)) from err
