"""Entry point of ``brats-mtl``.

Each subcommand lives in its own module under ``brats_mtl.cli`` and is imported only when
it runs, so ``brats-mtl --help`` does not pay for torch or matplotlib.
"""

from __future__ import annotations

import importlib
import logging

import click

from brats_mtl import __version__

# command name -> "module:attribute" of a click command in brats_mtl.cli
_COMMANDS: dict[str, tuple[str, str]] = {
    "evaluate": (
        "brats_mtl.cli.evaluate",
        "Dice, HD95, sensitivity, specificity as the BraTS online system.",
    ),
    "evaluate-uncertainty": (
        "brats_mtl.cli.evaluate_uncertainty",
        "QU-BraTS score of voxel-wise uncertainty maps.",
    ),
    "model-summary": (
        "brats_mtl.cli.model_summary",
        "Layer shapes and parameter counts (Tables 1, 2).",
    ),
    "train": ("brats_mtl.cli.train", "Train fold models with semi-supervised multi-task learning."),
    "predict": (
        "brats_mtl.cli.predict",
        "Segment a cohort with TTA, ET suppression and the fold ensemble.",
    ),
    "survival": (
        "brats_mtl.cli.survival",
        "Age-based survival regression: fit, predict, evaluate, plot.",
    ),
    "run": (
        "brats_mtl.cli.run",
        "The whole chain on a BraTS folder: train, predict, evaluate, report.",
    ),
    "demo": ("brats_mtl.cli.demo", "The whole chain on a synthetic cohort, CPU-sized."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module = importlib.import_module(_COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def configure_logging(verbose: int) -> None:
    """Log levels of a ``brats-mtl`` run: the package's own loggers apart from the rest.

    ======  ===========================  =====================================
    flag    ``brats_mtl.*`` loggers      every other logger (root level)
    ======  ===========================  =====================================
    none    INFO                         WARNING
    ``-v``  DEBUG                        WARNING (no fsspec / matplotlib / PIL
                                         debug lines)
    ``-vv`` DEBUG                        DEBUG
    ======  ===========================  =====================================

    Libraries that set their own level (Lightning sets INFO on ``lightning.pytorch``)
    keep it, except Lightning's start-up notes (``lightning.pytorch.utilities.rank_zero``:
    accelerator found, tips), shown from ``-v`` on. One stderr handler on the root logger prints ``LEVEL logger: message``; a
    handler already installed there (by an embedding program) is kept.

    Args:
        verbose: how many times ``-v`` was given.
    """
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("brats_mtl").setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)
    # Lightning's start-up notes (accelerator, tips, "max_steps reached") only with -v
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(
        logging.NOTSET if verbose >= 1 else logging.WARNING
    )


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="brats-mtl")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="-v: debug output of brats-mtl; -vv: debug output of every library too.",
)
def cli(verbose: int) -> None:
    """Multi-task brain-tumor segmentation on BraTS MRI (BraTS 2019 paper)."""
    configure_logging(verbose)


if __name__ == "__main__":  # pragma: no cover
    cli()
