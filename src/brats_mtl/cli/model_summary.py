"""``brats-mtl model-summary``: layer shapes and parameter counts beside Tables 1 and 2."""

from __future__ import annotations

from pathlib import Path

import click

from brats_mtl.cli.options import preset_option, resolve_config


@click.command("model-summary")
@click.option(
    "--patch",
    type=int,
    default=None,
    help="Patch edge in voxels, as --set model.patch_size=N [default: model.patch_size].",
)
@preset_option(default="paper", extra_help=" The base of --config and --set.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML/JSON configuration file applied over the preset.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a configuration value, e.g. --set model.widths=[4,8,16,32,64]. Repeatable.",
)
def command(
    patch: int | None, preset: str, config_path: Path | None, overrides: tuple[str, ...]
) -> None:
    """Print each layer's input and output shape and parameter count, per network part.

    Layer names follow the paper's Table 1 (VAE decoder) and Table 2 (ET classifier).
    Shapes are computed on PyTorch's meta device, so no activation memory is allocated.
    Settings come from --preset, then --config, then --set, then --patch, as for
    `brats-mtl train`.
    """
    from brats_mtl.model.summary import model_summary

    config = resolve_config(
        preset=preset, config_file=config_path, overrides=overrides, flags={"--patch": patch}
    )
    try:
        text = model_summary(config.model)
    except (ValueError, FileNotFoundError) as err:
        raise click.UsageError(str(err)) from None
    click.echo(text)
