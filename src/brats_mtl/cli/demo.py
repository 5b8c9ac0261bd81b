"""``brats-mtl demo``: the whole chain on a synthetic cohort, sized for a CPU."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", "out_dir", default="demo_output", show_default=True,
              type=click.Path(path_type=Path), help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Delete an existing output folder first.")
@click.option("--resume", is_flag=True, help="Continue an interrupted demo.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting of the demo preset (repeatable).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bars of training and prediction.")
def command(out_dir, overwrite, resume, overrides, progress):
    """Generate a synthetic cohort, train 5 folds, predict, evaluate, report."""
    import time

    from brats_mtl.config import apply_overrides
    from brats_mtl.pipeline import demo_config, make_demo_cohort, run_pipeline

    start = time.perf_counter()
    try:
        config = apply_overrides(demo_config(), overrides)
        if out_dir.exists() and any(out_dir.iterdir()) and not (resume or overwrite):
            raise FileExistsError(
                f"{out_dir} is not empty; pass --resume to continue or --overwrite to start again"
            )
        if overwrite and out_dir.exists():
            import shutil

            shutil.rmtree(out_dir)
        click.echo(f"writing a synthetic cohort to {out_dir / 'data'}")
        cohort = make_demo_cohort(out_dir / "data", seed=config.train.seed)
        result = run_pipeline(
            cohort.train_dir, out_dir / "results", config=config,
            unlabeled_dirs=(cohort.unlabeled_dir,), test_dir=cohort.test_dir,
            survival_csv=cohort.survival_csv, resume=True, progress=progress,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(result.table3.round(3).to_string())
    if result.table4 is not None:
        click.echo(result.table4.round(3).to_string())
    click.echo(f"finished in {time.perf_counter() - start:.0f} s; report: {result.report}")
