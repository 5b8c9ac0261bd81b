"""``brats-mtl predict``: segment a cohort with the fold models of a training run.

Writes ``OUTPUT_DIR/<ID>.nii.gz`` (labels on the input grid, input's label convention),
``OUTPUT_DIR/predictions.csv`` (folds, the folds that trained on the case, ET
probability, suppression, WT/TC/ET volumes in ml, seconds, status, warning, error per
case) and, with ``--save-probabilities``, ``OUTPUT_DIR/probabilities/<ID>.nii.gz``.
Cases already written with the same run and settings are skipped, so an interrupted run
resumes (Ctrl-C exits with status 130 and prints the command that resumes); an OUTPUT_DIR
filled by another run folder or other settings is refused unless ``--overwrite``;
``--shard I/N`` splits the cohort across processes or machines. Source: paper, Inference and 5.1; docs/design.md section 5.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from brats_mtl.cli.options import resolve_config
from brats_mtl.cli.run import labels_option, progress_bars_wanted, progress_option
from brats_mtl.config import choices


@click.command(name="predict")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--folds",
    default=None,
    help="Comma-separated fold models to use, e.g. 0,1,2 [default: every fold with a checkpoint].",
)
@click.option(
    "--which",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="Checkpoint of each fold; with best, a fold without best.ckpt (stopped before its "
    "first validation) uses its last.ckpt, with a warning.",
)
@click.option(
    "--tta",
    type=click.Choice([str(n) for n in choices("inference.tta")]),
    default=None,
    help="Mirror TTA passes: 0 off, 4 identity + 3 single-axis flips (paper), 8 all "
    "combinations [default: inference.tta of the run, 4].",
)
@click.option(
    "--mode",
    type=click.Choice(choices("inference.mode")),
    default=None,
    help="window: sliding windows of the run's model.patch_size (128^3 in the paper); "
    "whole: one pass over the cropped brain, "
    "3-5x faster on a CPU but not a substitute (Dice 0.6-0.9 against windows with "
    "trained models, see the README) [default: inference.mode, window].",
)
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N [default: auto].")
@click.option(
    "--precision",
    type=click.Choice(choices("inference.precision")),
    default=None,
    help="auto: bf16 on CPUs with AMX (Xeon 4th gen+), else 32; 32: float32; bf16: "
    "bfloat16 autocast, 2-3x faster on CPUs with AMX, slower elsewhere [default: "
    "inference.precision of the run, auto].",
)
@click.option(
    "--shard",
    default="0/1",
    show_default=True,
    help="Predict shard I of N (0 <= I < N): every N-th case of the sorted IDs from I.",
)
@click.option(
    "--out-of-fold",
    is_flag=True,
    help="Each fold's model predicts only its held-out cases (splits.json): the paper's "
    "'train set' row of Table 3.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Predict every case again, also into an OUTPUT_DIR filled by another run folder "
    "or other settings (files of cases not in INPUT_DIR are left alone).",
)
@click.option(
    "--save-probabilities",
    is_flag=True,
    help="Also write OUTPUT_DIR/probabilities/<ID>.nii.gz: 4-D class probabilities, "
    "one volume per class of the run (background first; background, NCR/NET, ED, ET for "
    "the paper's four classes) as uint8 scaled by 1/255.",
)
@click.option(
    "--uncertainty",
    type=click.Choice(choices("inference.uncertainty")),
    default=None,
    help="Also write QU-BraTS uncertainty maps <ID>_unc_whole/core/enhance.nii.gz (uint8, "
    "0 certain to 100): entropy of the mean probability over passes and folds, or "
    "disagreement of the passes' and folds' region maps with the final label "
    "[default: inference.uncertainty of the run, none].",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override an inference setting, e.g. --set inference.overlap=0.25 (repeatable); "
    "model and training settings are the run's and cannot be changed here.",
)
@labels_option("INPUT_DIR's label maps and of the maps written")
@progress_option()
def command(
    run_dir: Path,
    input_dir: Path,
    output_dir: Path,
    folds: str | None,
    which: str,
    tta: str | None,
    mode: str | None,
    device: str | None,
    precision: str | None,
    shard: str,
    out_of_fold: bool,
    overwrite: bool,
    save_probabilities: bool,
    uncertainty: str | None,
    overrides: tuple[str, ...],
    labels: str | None,
    progress: bool | None,
) -> None:
    """Segment every case of INPUT_DIR with the fold models in RUN_DIR into OUTPUT_DIR.

    RUN_DIR is a training run (config.yaml, splits.json, fold_K/checkpoints); INPUT_DIR
    a cohort in any supported layout (BraTS 2018-2025, MSD); OUTPUT_DIR must not be
    INPUT_DIR, lie inside it or contain it. The fold models' label maps
    are combined by majority vote; voxels outside the brain (zero in every modality) are
    background (inference.mask_outside_brain); ET is relabeled NCR/NET when the
    classifier says "no ET" and fewer than inference.et_min_voxels ET voxels are
    predicted. A case that cannot be read or predicted (e.g. a case folder without its
    flair file) is listed as FAILED with status "error" in predictions.csv, the others
    are written, and the command exits with status 1. A case whose modalities are all 0
    gets an all-background label map (status "empty"); a modality constant inside the
    brain is 0 after normalisation (status "degraded"); both are listed with a warning.
    Cases in the training split of a fold used are marked in the train_folds column, with
    a warning: their scores are not held-out results (use --out-of-fold).

    Running the same command again resumes: finished cases are skipped. OUTPUT_DIR
    records the run folder, its weights and the settings that change labels
    (records/.settings.json); another run folder or other settings into the same
    OUTPUT_DIR are refused with the differences listed, unless --overwrite. Ctrl-C stops
    without partial files, says how many cases remain and exits with status 130.
    """
    from brats_mtl.conventions import plural
    from brats_mtl.predict import (
        PredictionInterrupted,
        parse_shard,
        predict_cohort,
    )
    from brats_mtl.workspace.prediction_dir import PredictionDir

    not_inference = [o for o in overrides if not o.strip().startswith("inference.")]
    if not_inference:
        raise click.UsageError(
            f"--set {not_inference[0]}: predict takes inference.* settings only; the "
            "model and training settings are those the run was trained with",
            ctx=click.get_current_context(),
        )
    try:  # option values the command line got wrong: exit status 2
        fold_list = None if folds is None else _parse_folds(folds)
        shard_index = parse_shard(shard)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    config = resolve_config(  # the run's saved configuration, then --set, then the flags
        overrides=overrides,
        flags={
            "--tta": tta,
            "--mode": mode,
            "--device": device,
            "--precision": precision,
            "--uncertainty": uncertainty,
        },
        saved_run=run_dir,
        default_preset=None,
    )
    n_folds = config.train.n_folds
    if fold_list is not None and max(fold_list) >= n_folds:
        raise click.UsageError(
            f"--folds {folds}: the run {run_dir} has {n_folds} folds, 0 to {n_folds - 1}"
        )
    try:
        table = predict_cohort(
            run_dir,
            input_dir,
            output_dir,
            config=config,
            folds=fold_list,
            which=which,
            out_of_fold=out_of_fold,
            shard=shard_index,
            overwrite=overwrite,
            save_probabilities=save_probabilities,
            progress=progress_bars_wanted(progress),
            labels=labels,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    except KeyboardInterrupt as interrupt:
        context = click.get_current_context()
        if isinstance(interrupt, PredictionInterrupted):
            click.echo(
                f"Interrupted: {interrupt.finished} of {plural(interrupt.total, 'case')} finished, "
                f"{interrupt.failed} failed, {interrupt.remaining} remain; no partial file "
                f"is left in {output_dir}.",
                err=True,
            )
        else:
            click.echo(f"Interrupted before any case was predicted into {output_dir}.", err=True)
        click.echo(
            "To resume, run this command (finished cases are skipped):\n  "
            + resume_command(context),
            err=True,
        )
        context.exit(130)

    failed = table[table["status"] == "error"]
    click.echo(
        f"{len(table) - len(failed)} of {plural(len(table), 'case')} segmented into "
        f"{output_dir}; table: {PredictionDir(output_dir).table}"
    )
    for _, row in table[table["status"].isin(["empty", "degraded"])].iterrows():
        click.echo(f"  {row['status'].upper()} {row['case_id']}: {row['warning']}", err=True)
    if len(failed):
        for _, row in failed.iterrows():
            click.echo(f"  FAILED {row['case_id']}: {row['error']}", err=True)
        raise click.ClickException(
            f"{plural(len(failed), 'case')} failed; fix {'it' if len(failed) == 1 else 'them'} "
            "and run the same command again (finished cases are skipped)"
        )


def resume_command(context: click.Context) -> str:
    """The ``predict`` command line that resumes the run of ``context``, shell-quoted.

    The same arguments and options, without ``--overwrite`` (which would predict the
    cases finished so far again). Options left at their defaults are omitted.
    """
    params = context.params
    words = [
        *context.command_path.split(),
        str(params["run_dir"]),
        str(params["input_dir"]),
        str(params["output_dir"]),
    ]
    for name, flag in (
        ("folds", "--folds"),
        ("tta", "--tta"),
        ("mode", "--mode"),
        ("device", "--device"),
        ("precision", "--precision"),
        ("uncertainty", "--uncertainty"),
    ):
        if params.get(name) is not None:
            words += [flag, str(params[name])]
    if params.get("which", "best") != "best":
        words += ["--which", params["which"]]
    if params.get("shard", "0/1") != "0/1":
        words += ["--shard", params["shard"]]
    if params.get("out_of_fold"):
        words.append("--out-of-fold")
    if params.get("save_probabilities"):
        words.append("--save-probabilities")
    for override in params.get("overrides", ()):
        words += ["--set", override]
    if params.get("progress") is not None:
        words.append("--progress" if params["progress"] else "--no-progress")
    return shlex.join(words)


def _parse_folds(text: str) -> list[int]:
    try:
        folds = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(
            f"--folds {text!r}: expected comma-separated integers, e.g. 0,1,2"
        ) from None
    if not folds or min(folds) < 0:
        raise ValueError(f"--folds {text!r}: expected non-negative fold numbers, e.g. 0,1,2")
    return folds
