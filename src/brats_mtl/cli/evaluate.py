"""``brats-mtl evaluate``: score a folder of predictions as the BraTS 2017-2020 online system.

Writes the online system's CSV (per-case rows, then Mean, StdDev, Median, 25quantile,
75quantile) and prints mean Dice and HD95 per region and the cases missing on either side.
Source: DESIGN.md section 6.
"""

from __future__ import annotations

from pathlib import Path

import click

_CONVENTIONS = ("auto", "brats2019", "brats2023", "msd")


@click.command(name="evaluate")
@click.argument("pred_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("ref_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Result CSV (online-system columns: Label, Dice_ET, ..., Hausdorff95_TC).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing result CSV.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes evaluating cases in parallel.",
)
@click.option(
    "--missing-as-empty",
    is_flag=True,
    help="Score reference cases without a prediction as empty predictions (as the online "
    "system did) instead of excluding them.",
)
@click.option(
    "--pred-convention",
    type=click.Choice(_CONVENTIONS),
    default="auto",
    show_default=True,
    help="Label values of the predictions; auto: {0,1,2,4} = BraTS 2017-2021, 3 without 4 "
    "= BraTS 2023+ (MSD for an MSD reference cohort).",
)
def command(
    pred_dir: Path,
    ref_dir: Path,
    out_path: Path,
    overwrite: bool,
    workers: int,
    missing_as_empty: bool,
    pred_convention: str,
) -> None:
    """Dice, HD95, sensitivity, specificity of PRED_DIR against the references in REF_DIR.

    PRED_DIR holds <case ID>.nii.gz (or .nii) label files, or a case layout whose
    segmentation files are the predictions; REF_DIR is a labeled cohort in any supported
    layout (BraTS 2018-2023, MSD).
    """
    from brats_mtl.conventions import REGION_ORDER
    from brats_mtl.evaluation import evaluate_folders, write_results_csv

    if out_path.exists() and not overwrite:
        raise click.ClickException(
            f"results file {out_path} already exists; choose another --out or pass --overwrite"
        )
    try:
        per_case, missing = evaluate_folders(
            pred_dir,
            ref_dir,
            workers=workers,
            missing_as_empty=missing_as_empty,
            pred_convention=None if pred_convention == "auto" else pred_convention,
        )
        write_results_csv(per_case, out_path, overwrite=overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from error

    click.echo(f"Evaluated {len(per_case)} case(s); results written to {out_path}")
    click.echo(f"{'region':<8}{'mean Dice':>12}{'mean HD95 (mm)':>17}")
    for region in REGION_ORDER:
        click.echo(
            f"{region:<8}{per_case[f'Dice_{region}'].mean():>12.4f}"
            f"{per_case[f'Hausdorff95_{region}'].mean():>17.2f}"
        )
    if missing["predictions"]:
        how = "scored as empty" if missing_as_empty else "excluded; --missing-as-empty scores them"
        click.echo(
            f"Reference cases without prediction ({len(missing['predictions'])}, {how}): "
            + ", ".join(missing["predictions"])
        )
    if missing["references"]:
        click.echo(
            f"Predictions without labeled reference ({len(missing['references'])}, not "
            "scored): " + ", ".join(missing["references"])
        )
