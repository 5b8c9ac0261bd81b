"""``brats-mtl train``: semi-supervised multi-task training, one model per fold."""

from __future__ import annotations

from pathlib import Path

import click

from brats_mtl.cli.options import preset_option, resolve_config
from brats_mtl.cli.run import command_line, labels_option, progress_bars_wanted, progress_option


@click.command("train")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder: config.yaml, splits.json, fold_K/ (checkpoints, metrics, curves).",
)
@click.option(
    "--unlabeled",
    "unlabeled_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of extra cases used unlabeled (VAE branch only); repeatable.",
)
@click.option("--fold", type=int, default=None, help="Train this fold only (0-based).")
@click.option("--all-folds", is_flag=True, help="Train every fold (the default).")
@preset_option(
    default=None,
    extra_help=" Default: the run's config.yaml if present, else paper. A preset given is "
    "the base of --config and --set instead of the run's config.yaml.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML configuration applied over the preset; default: the run's config.yaml if "
    "present and no --preset is given.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one setting, e.g. --set train.max_steps=1000 --set train.devices=2.",
)
@click.option("--resume", is_flag=True, help="Continue interrupted folds from last.ckpt.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Train the folds anew: remove what training wrote in their fold folders (only in a "
    "run folder brats-mtl created; other files are kept).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of preprocessed cases (default RUN_DIR/cache); can be shared by runs.",
)
@click.option(
    "--cache-workers",
    type=click.IntRange(min=0),
    default=None,
    help="Processes preprocessing cases in parallel when the cache is built "
    "[train.cache_workers: 0].",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=None,
    help="Also save last.ckpt every this many steps (0: only at validations and the end) "
    "[train.checkpoint_every_n_steps: 100].",
)
@labels_option("DATA_DIR's segmentations")
@progress_option()
def command(
    data_dir: Path,
    run_dir: Path,
    unlabeled_dirs: tuple[Path, ...],
    fold: int | None,
    all_folds: bool,
    preset: str | None,
    config_file: Path | None,
    overrides: tuple[str, ...],
    resume: bool,
    overwrite: bool,
    cache_dir: Path | None,
    cache_workers: int | None,
    checkpoint_every: int | None,
    labels: str | None,
    progress: bool | None,
) -> None:
    """Train fold models on DATA_DIR with stratified k-fold cross-validation.

    Labeled cases of DATA_DIR are split into train.n_folds stratified folds (by grade,
    else ET presence; saved in RUN_DIR/splits.json and reused); cases without a
    segmentation, and those under --unlabeled, train the VAE branch in every fold.
    Paper: batch 2, Adam, lr 1e-4, weight decay 1e-5, loss 0.1 L2 + 0.1 KL + 0.1 CE + Dice.

    Settings come from --preset (as `brats-mtl run --preset`), then --config, then --set,
    then the flags --cache-workers, --checkpoint-every and --labels (each the same as its
    --set key); the result is saved as RUN_DIR/config.yaml. Without --preset and --config, RUN_DIR/config.yaml is the base
    if present, else the paper's defaults. A run folder whose folds have no checkpoint
    yet (e.g. a first attempt that failed) takes a changed configuration on the next
    attempt; once a fold has a checkpoint, model and loss settings are fixed for the run.

    RUN_DIR must be new, empty or a brats-mtl run folder (marked by a .brats-mtl-output
    file, or a config.yaml and splits.json of an older run), and apart from DATA_DIR and
    the --unlabeled folders; another non-empty folder is refused, with or without
    --overwrite.

    SIGTERM stops training after the step in progress, saves it in last.ckpt and exits
    with status 143; --resume continues.
    """
    if fold is not None and all_folds:
        raise click.UsageError("--fold and --all-folds exclude each other; choose one")
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other; choose one")
    config = resolve_config(
        preset=preset,
        config_file=config_file,
        overrides=overrides,
        flags={
            "--cache-workers": cache_workers,
            "--checkpoint-every": checkpoint_every,
            "--labels": labels,
        },
        saved_run=run_dir,
    )

    from brats_mtl.signals import stop_on_sigterm
    from brats_mtl.training.runner import train_folds

    folds = [fold] if fold is not None else None
    with stop_on_sigterm():
        try:
            results = train_folds(
                data_dir,
                run_dir,
                folds,
                config=config,
                unlabeled_dirs=unlabeled_dirs,
                resume=resume,
                overwrite=overwrite,
                cache_dir=cache_dir,
                enable_progress_bar=progress_bars_wanted(progress),
                command_line=command_line(),
            )
        except (FileExistsError, FileNotFoundError, ValueError) as err:
            raise click.ClickException(str(err)) from None
    for r in results:
        if r.already_done:
            click.echo(
                f"fold {r.fold}: already at train.max_steps ({r.global_step} steps), "
                f"nothing trained; {r.fold_dir}"
            )
            continue
        dice = r.val_metrics
        summary = "  ".join(f"{k}={v:.3f}" for k, v in dice.items()) if dice else "no validation"
        click.echo(f"fold {r.fold}: {r.global_step} steps, {summary}; {r.fold_dir}")
