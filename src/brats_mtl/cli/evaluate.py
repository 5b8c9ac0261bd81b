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
@click.argument("pred_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("ref_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
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
@click.option(
    "--ref-convention",
    type=click.Choice(_CONVENTIONS),
    default="auto",
    show_default=True,
    help="Label values of the references; auto: from the layout (BraTS 2017-2021 or 2023+ "
    "image names in a case folder, msd in labelsTr/labelsTs), else from the values as for "
    "--pred-convention. nnU-Net's BraTS label files (1 edema, 2 non-enhancing, 3 "
    "enhancing) outside a labelsTr folder need msd.",
)
def command(
    pred_dir: Path,
    ref_dir: Path,
    out_path: Path,
    overwrite: bool,
    workers: int,
    missing_as_empty: bool,
    pred_convention: str,
    ref_convention: str,
) -> None:
    """Dice, HD95, sensitivity, specificity of PRED_DIR against the references in REF_DIR.

    PRED_DIR holds <case ID>.nii.gz (or .nii) label files, or a case layout whose
    segmentation files are the predictions.

    \b
    REF_DIR holds the reference label maps, found by case ID; image files are
    never needed nor read (.nii or .nii.gz, layouts may be mixed):
      case folders      BraTS2021_00000/BraTS2021_00000_seg.nii.gz, with or
                        without the images (HGG/LGG sub-folders too; BraTS 2023+:
                        BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz)
      flat label files  BraTS2021_00000_seg.nii.gz or BraTS2021_00000.nii.gz in
                        one folder (online-system / nnU-Net gt_segmentations)
      MSD task folder   Task01_BrainTumour/labelsTr/BRATS_001.nii.gz (or the
                        labelsTr folder itself)
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
            ref_convention=None if ref_convention == "auto" else ref_convention,
        )
        write_results_csv(per_case, out_path, overwrite=overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from error

    n_cases = len(per_case)
    click.echo(
        f"Evaluated {n_cases} case{'' if n_cases == 1 else 's'}; results written to {out_path}"
    )
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
            f"Predictions without reference label map ({len(missing['references'])}, not "
            "scored): " + ", ".join(missing["references"])
        )
