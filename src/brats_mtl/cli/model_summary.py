"""``brats-mtl model-summary``: layer shapes and parameter counts beside Tables 1 and 2."""

from __future__ import annotations

import click


@click.command("model-summary")
@click.option("--patch", type=int, default=None, help="Patch edge in voxels (default: model.patch_size).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML/JSON configuration file (default: the paper's configuration).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a configuration value, e.g. --set model.widths=[4,8,16,32,64]. Repeatable.",
)
def command(patch: int | None, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Print each layer's input and output shape and parameter count, per network part.

    Layer names follow the paper's Table 1 (VAE decoder) and Table 2 (ET classifier).
    Shapes are computed on PyTorch's meta device, so no activation memory is allocated.
    """
    from brats_mtl.config import load_config
    from brats_mtl.model.summary import model_summary

    try:
        config = load_config(config_path, overrides)
        text = model_summary(config.model, patch_size=patch)
    except (ValueError, FileNotFoundError) as err:
        raise click.UsageError(str(err)) from None
    click.echo(text)
