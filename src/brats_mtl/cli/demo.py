"""``brats-mtl demo``: the whole chain on a synthetic cohort, sized for a CPU."""

from __future__ import annotations

from pathlib import Path

import click

from brats_mtl.cli.options import resolve_config
from brats_mtl.cli.run import command_line, progress_bars_wanted, progress_option


@click.command("demo")
@click.option(
    "--out",
    "out_dir",
    default="demo_output",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Output folder.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start again: remove the demo's data/ and what it wrote in results/ from "
    "--out first (only in a folder the demo created; other files are kept).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted demo (what a second demo into the same --out "
    "does anyway; the hint printed after an interruption names it).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one setting of the demo preset (repeatable); without --set a "
    "demo folder is continued with its saved configuration.",
)
@progress_option()
def command(out_dir, overwrite, resume, overrides, progress):
    """Generate a synthetic cohort, train 5 folds, predict, evaluate, report.

    Running it again in the same --out folder reuses the work done: the cohort is kept,
    trained folds are not trained again and written predictions are skipped; without --set
    the configuration saved in OUT/results/run/config.yaml is used. --overwrite starts
    again. SIGTERM stops it (exit status 143); the next run continues.
    """
    import time

    from brats_mtl.demo import run_demo
    from brats_mtl.signals import stop_on_sigterm

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other; choose one")
    start = time.perf_counter()
    with stop_on_sigterm():
        try:
            config = resolve_config(  # without --set: continue the demo as it was started
                overrides=overrides,
                saved_run=None if overwrite else out_dir / "results" / "run",
                set_replaces_saved=True,
                default_preset="demo",
            )
            result = run_demo(
                out_dir,
                config,
                overwrite=overwrite,
                progress=progress_bars_wanted(progress),
                command_line=command_line(),
            )
        except (FileNotFoundError, FileExistsError, ValueError) as err:
            raise click.ClickException(str(err)) from err
    click.echo(result.table3.round(3).to_string())
    if result.table4 is not None:
        click.echo(result.table4.round(3).to_string())
    click.echo(f"finished in {time.perf_counter() - start:.0f} s; report: {result.report}")
