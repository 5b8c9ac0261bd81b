"""``brats-mtl survival``: fit, predict, evaluate, cross-validate and plot the age model.

Thin wrappers over :mod:`brats_mtl.survival`; each subcommand prints a short summary.
Source: paper 4.3, 5.2, Table 4, Fig. 4; docs/design.md section 7.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import click

_EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUTPUT = click.Path(dir_okay=False, path_type=Path)


def _config_options(func):
    """``--config FILE`` and ``--set survival.key=value``; passes ``config`` (SurvivalConfig)."""

    @click.option(
        "--config",
        "config_path",
        type=_EXISTING,
        default=None,
        help="YAML/JSON configuration file (its `survival` section is used).",
    )
    @click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a configuration value, e.g. survival.short_days=304.",
    )
    @functools.wraps(func)
    def wrapper(*args, config_path, overrides, **kwargs):
        from brats_mtl.cli.options import resolve_config

        # a bad option value: exit status 2
        config = resolve_config(config_file=config_path, overrides=overrides).survival
        return func(*args, config=config, **kwargs)

    return wrapper


def _user_errors(func):
    """Show user errors (bad files, existing outputs) as one clean message."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError, FileExistsError) as err:
            raise click.ClickException(str(err)) from None

    return wrapper


def _check_free(overwrite: bool, *paths: Path | None) -> None:
    """Fail before any work when an output exists and --overwrite is not given."""
    for path in paths:
        if path is not None and path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")


def _write_csv(frame, path: Path, overwrite: bool) -> None:
    from brats_mtl.atomic import write_text_atomic

    write_text_atomic(path, frame.to_csv(index=False), overwrite=overwrite)


@click.group(name="survival")
def command() -> None:
    """Age-based survival regression on GTR patients (paper 4.3, Table 4, Fig. 4)."""


@command.command()
@click.argument("csv", type=_EXISTING)
@click.option("--out", type=_OUTPUT, required=True, help="Model JSON to write.")
@click.option("--all-resections", is_flag=True, help="Fit every resection status, not GTR only.")
@click.option(
    "--include-censored",
    is_flag=True,
    help="Fit censored rows (ALIVE ...) with their follow-up days (biased; off).",
)
@click.option("--strict", is_flag=True, help="Fail on any bad value in the table.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@_config_options
@_user_errors
def fit(
    csv: Path,
    out: Path,
    all_resections: bool,
    include_censored: bool,
    strict: bool,
    overwrite: bool,
    config,
) -> None:
    """Fit survival days on age (GTR rows of CSV); save the model as JSON."""
    from brats_mtl.conventions import plural
    from brats_mtl.survival import fit_age_model, read_survival_csv, save_model

    _check_free(overwrite, out)
    table = read_survival_csv(csv, strict=strict)
    if all_resections:
        config = dataclasses.replace(config, gtr_only=False)
    model = fit_age_model(table, config, include_censored=include_censored)
    save_model(model, out, overwrite=overwrite)
    click.echo(table.describe())
    click.echo(
        f"{model.equation()}  (n = {model.n}, residual std = "
        f"{model.residual_std_days:.0f} days, R^2 = {model.r_squared:.3f}, "
        f"{plural(model.n_censored_excluded, 'censored row')} of the fitted group left out)"
    )
    click.echo(f"wrote {out}")


@command.command()
@click.argument("model_json", type=_EXISTING)
@click.argument("csv", type=_EXISTING)
@click.option("--out", type=_OUTPUT, required=True, help="Submission CSV to write (ID,days).")
@click.option("--all-rows", is_flag=True, help="Predict every row with an age, not GTR only.")
@click.option(
    "--header", is_flag=True, help="Write an 'ID,days' header line (BraTS uploads had none)."
)
@click.option("--strict", is_flag=True, help="Fail on any bad value in the table.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@_user_errors
def predict(
    model_json: Path,
    csv: Path,
    out: Path,
    all_rows: bool,
    header: bool,
    strict: bool,
    overwrite: bool,
) -> None:
    """Predict survival days for CSV (validation or training format)."""
    from brats_mtl.conventions import plural
    from brats_mtl.survival import load_model, predict_table, read_survival_csv, write_submission

    _check_free(overwrite, out)
    model = load_model(model_json)
    table = read_survival_csv(csv, strict=strict)
    predictions = predict_table(model, table, all_rows=all_rows)
    write_submission(predictions, out, header=header, overwrite=overwrite)
    days = predictions["predicted_days"]
    click.echo(table.describe())
    click.echo(
        f"predicted {plural(len(predictions), 'case' if all_rows else 'GTR case')} "
        f"({days.min():.0f} to {days.max():.0f} days) with {model.equation()}"
    )
    click.echo(f"wrote {out}")


@command.command()
@click.argument("pred_csv", type=_EXISTING)
@click.argument("truth_csv", type=_EXISTING)
@click.option(
    "--out",
    type=_OUTPUT,
    required=True,
    help="Metrics CSV to write (Accuracy, MSE, medianSE, stdSE, SpearmanR).",
)
@click.option("--per-case", type=_OUTPUT, default=None, help="Also write a per-case CSV.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@_config_options
@_user_errors
def evaluate(
    pred_csv: Path, truth_csv: Path, out: Path, per_case: Path | None, overwrite: bool, config
) -> None:
    """Score a submission against a training table (BraTS online metrics).

    TRUTH_CSV needs an ID and a survival column (age and resection are not used).
    """
    import pandas as pd

    from brats_mtl.survival import evaluate_predictions, read_predictions, read_survival_csv

    _check_free(overwrite, out, per_case)
    predictions = read_predictions(pred_csv)
    truth = read_survival_csv(truth_csv, require=("case_id", "survival"))
    metrics, cases = evaluate_predictions(predictions, truth, config)
    _write_csv(pd.DataFrame([metrics.as_row()]), out, overwrite)
    if per_case is not None:
        _write_csv(cases, per_case, overwrite)
    click.echo(
        f"scored {metrics.n} of {len(predictions)} predictions "
        f"(classes <{config.short_days:g} / {config.short_days:g}-{config.long_days:g} / "
        f">{config.long_days:g} days)"
    )
    click.echo(metrics.summary())
    click.echo(f"wrote {out}")


@command.command()
@click.argument("csv", type=_EXISTING)
@click.option(
    "--out",
    type=_OUTPUT,
    required=True,
    help="Metrics CSV to write: one row per fold and a pooled row 'all'.",
)
@click.option("--folds", type=int, default=None, help="Number of folds [survival.cv_folds: 5].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold shuffle.")
@click.option("--all-resections", is_flag=True, help="Use every resection status, not GTR only.")
@click.option(
    "--per-case",
    type=_OUTPUT,
    default=None,
    help="Also write out-of-fold predictions with their fold.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@_config_options
@_user_errors
def cv(
    csv: Path,
    out: Path,
    folds: int | None,
    seed: int,
    all_resections: bool,
    per_case: Path | None,
    overwrite: bool,
    config,
) -> None:
    """Cross-validated metrics of the age regression on a training table."""
    from brats_mtl.survival import cross_validate, read_survival_csv

    _check_free(overwrite, out, per_case)
    table = read_survival_csv(csv)
    if all_resections:
        config = dataclasses.replace(config, gtr_only=False)
    if folds is not None:
        config = dataclasses.replace(config, cv_folds=folds)
    result = cross_validate(table, config, seed=seed)
    _write_csv(result.table(), out, overwrite)
    if per_case is not None:
        _write_csv(result.per_case, per_case, overwrite)
    click.echo(
        f"{len(result.per_fold)}-fold cross-validation, seed {seed}, "
        f"fold sizes {[m.n for m in result.per_fold]}"
    )
    click.echo(f"pooled out-of-fold: {result.pooled.summary()}")
    click.echo(f"wrote {out}")


@command.command()
@click.argument("model_json", type=_EXISTING)
@click.argument("csv", type=_EXISTING)
@click.option("--out", type=_OUTPUT, required=True, help="Figure file (.png, .pdf, .svg).")
@click.option("--dpi", type=int, default=150, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@_user_errors
def plot(model_json: Path, csv: Path, out: Path, dpi: int, overwrite: bool) -> None:
    """Draw patients, the fitted line and its 95% band (paper Fig 4)."""
    from brats_mtl.figures.common import save_figure
    from brats_mtl.survival import load_model, read_survival_csv
    from brats_mtl.survival.plot import plot_age_regression

    model = load_model(model_json)
    table = read_survival_csv(csv)
    _check_free(overwrite, out)
    save_figure(plot_age_regression(model, table), out, dpi=dpi, overwrite=overwrite)
    click.echo(f"plotted {model.n} patients with {model.equation()}")
    click.echo(f"wrote {out}")
