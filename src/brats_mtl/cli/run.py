"""``brats-mtl run``: the whole chain on a user's BraTS folder."""

from __future__ import annotations

from pathlib import Path

import click

from brats_mtl.cli.options import preset_option, resolve_config


def labels_option(what: str = "the data"):
    """The ``--labels`` option of ``run``, ``train`` and ``predict``.

    Its value is a label scheme of ``brats_mtl.tasks``; the default is inferred per case
    from the layout, ID and values.
    """
    from brats_mtl.tasks import LABEL_SCHEMES

    return click.option(
        "--labels",
        "labels",
        type=click.Choice(list(LABEL_SCHEMES)),
        default=None,
        help=f"Label scheme of {what}: brats2017 (1 NCR/NET, 2 ED, "
        "4 ET), msd, brats2023 (1 NETC, 2 SNFH, 3 ET), gli-post (+ 4 RC), ped2024 (1 ET, "
        "2 NET, 3 CC, 4 ED). Default: inferred from each case's layout, ID and values; a "
        "folder whose cases disagree is refused.",
    )


def progress_option():
    """The ``--progress/--no-progress`` option of ``run``, ``demo``, ``train`` and ``predict``.

    Its value is None when neither is given (see :func:`progress_bars_wanted`).
    """
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bars of training and prediction [default: only when stdout and "
        "stderr are terminals; in a log file, plain log lines instead].",
    )


def progress_bars_wanted(progress: bool | None) -> bool:
    """Whether to draw progress bars.

    ``progress`` when given, else only when both stdout and stderr are terminals
    (Lightning draws on stdout, tqdm on stderr). A bar written into a file keeps every
    redraw: a short demo's log grew to hundreds of kilobytes.

    Args:
        progress: ``--progress`` (True), ``--no-progress`` (False) or neither (None).

    Source: the convention of tools that redraw a line (pip, git, curl): no redrawn
    lines when the output is a file or a pipe.
    """
    import sys

    if progress is not None:
        return progress
    return all(_isatty(stream) for stream in (sys.stdout, sys.stderr))


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def command_line() -> str:
    """The command as typed, for the output folder's marker file."""
    import shlex
    import sys

    return shlex.join(["brats-mtl", *sys.argv[1:]])


@click.command("run")
@click.argument(
    "data_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder (run, predictions, tables, figures, report.md); must not hold the inputs.",
)
@click.option(
    "--unlabeled",
    "unlabeled_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of unlabeled cases for the VAE branch (repeatable).",
)
@click.option(
    "--test",
    "test_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Cohort to segment with the fold ensemble (evaluated when labeled).",
)
@click.option(
    "--survival",
    "survival_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="BraTS survival table (CSV) for the age regression.",
)
@click.option(
    "--no-test",
    is_flag=True,
    help="With --resume: leave out the --test folder the run started with (no "
    "test-set row; its predictions are kept).",
)
@click.option(
    "--no-survival",
    is_flag=True,
    help="With --resume: leave out the --survival table the run started with (no "
    "survival section; survival/ and tables/table4.csv are removed).",
)
@preset_option(
    default=None,
    extra_help=" Default: paper; with --resume and none of --preset, --config and --set, "
    "the run's saved OUT/run/config.yaml.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML configuration file applied over the preset.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one setting, e.g. --set train.max_steps=500 (repeatable).",
)
@click.option("--folds", default=None, help="Comma-separated folds to train and use (default all).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue in an existing output folder; DATA_DIR, --unlabeled, --test and "
    "--survival not given again are those the run started with.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start again: remove what an earlier run wrote in --out (only in a folder "
    "brats-mtl created; other files are kept).",
)
@labels_option()
@progress_option()
def command(
    data_dir,
    out_dir,
    unlabeled_dirs,
    test_dir,
    survival_csv,
    no_test,
    no_survival,
    preset,
    config_file,
    overrides,
    folds,
    resume,
    overwrite,
    labels,
    progress,
):
    """Train, predict out-of-fold, evaluate, fit survival and write a report for DATA_DIR.

    --resume without --preset, --config and --set continues with the run's saved
    configuration (OUT/run/config.yaml); with any of them the configuration is built
    from those as in a first run. --resume reuses DATA_DIR and the --unlabeled, --test and
    --survival inputs the run started with (recorded in OUT/.brats-mtl-output) unless
    given again, so DATA_DIR may be left out and the report keeps its test-set row and
    survival section; --no-test and --no-survival leave a recorded test folder or
    survival table out. SIGTERM stops the run (exit status 143) after saving the training
    step in progress; --resume continues it.
    """
    from brats_mtl.pipeline import run_pipeline
    from brats_mtl.signals import stop_on_sigterm
    from brats_mtl.workspace.ownership import read_run_inputs

    for flag, given, name in ((no_test, test_dir, "test"), (no_survival, survival_csv, "survival")):
        if flag and given is not None:
            raise click.UsageError(f"--{name} and --no-{name} exclude each other; choose one")
    if data_dir is None:
        if not resume:
            raise click.UsageError(
                "Missing argument 'DATA_DIR' (only --resume may leave it out: it then takes "
                "the one the run recorded)"
            )
        recorded = read_run_inputs(out_dir)
        if recorded is None:
            raise click.UsageError(
                f"Missing argument 'DATA_DIR': {out_dir} records no DATA_DIR to resume with "
                "(no brats-mtl run output there, or one of an older version); give DATA_DIR"
            )
    without = tuple(
        name for flag, name in ((no_test, "test_dir"), (no_survival, "survival_csv")) if flag
    )
    try:
        fold_list = tuple(int(f) for f in folds.split(",")) if folds else None
    except ValueError:
        raise click.BadParameter(
            f"{folds!r}: expected comma-separated integers, e.g. 0,1,2", param_hint="--folds"
        ) from None
    with stop_on_sigterm():
        try:
            config = resolve_config(
                preset=preset,
                config_file=config_file,
                overrides=overrides,
                flags={"--labels": labels},
                saved_run=out_dir / "run" if resume else None,
                set_replaces_saved=True,
            )
            result = run_pipeline(
                data_dir,
                out_dir,
                config=config,
                unlabeled_dirs=tuple(unlabeled_dirs),
                test_dir=test_dir,
                survival_csv=survival_csv,
                folds=fold_list,
                resume=resume,
                overwrite=overwrite,
                progress=progress_bars_wanted(progress),
                command_line=command_line(),
                without=without,
            )
        except (FileNotFoundError, FileExistsError, ValueError) as err:
            raise click.ClickException(str(err)) from err
    click.echo(result.table3.round(3).to_string())
    if result.table4 is not None:
        click.echo(result.table4.round(3).to_string())
    click.echo(f"report: {result.report}")
