"""``brats-mtl evaluate``: score a folder of predictions as the BraTS online systems.

Protocols: ``legacy`` (the BraTS 2017-2021 online system), ``lesionwise`` (BraTS
2023-2025) and ``panoptica`` (the BraTS 2026 evaluator, an optional extra). Writes the
result CSV (per-case rows, then Mean, StdDev, Median, 25quantile, 75quantile) and prints
mean Dice and HD95 per region and the cases missing on either side.
A case that cannot be scored (unreadable file, bad label values, another voxel grid, a
label scheme that does not fit) is listed as FAILED, the others are written, and the
command exits with status 1, under every protocol.
Source: BraTS online evaluation; BraTS 2023 lesion-wise metrics code; brats-evaluation.
"""

from __future__ import annotations

from pathlib import Path

import click

# brats2017 and brats2019 name the same values (1 NCR/NET, 2 ED, 4 ET, BraTS 2017-2021):
# brats2017 as in --labels, brats2019 as the label convention of the paper's data
_CONVENTIONS = ("auto", "brats2017", "brats2019", "brats2023", "msd")
# Kept literal so that --help does not import the package; pinned to the registries by
# tests/evaluation/test_protocols.py. SCHEMES is shared with evaluate-uncertainty.
_PROTOCOLS = ("legacy", "lesionwise", "panoptica")
SCHEMES = ("auto", "brats2017", "msd", "brats2023", "gli-post", "ped2024")
_TASKS = ("auto", "GLI", "SSA", "MEN", "MET", "PED", "GoAT")


@click.command(name="evaluate")
@click.argument("pred_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("ref_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Result CSV (columns per --protocol; legacy: Label, Dice_ET, ..., Hausdorff95_TC).",
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
    help="Label values of the predictions (brats2017 = brats2019: 1 NCR/NET, 2 ED, 4 ET); "
    "auto: {0,1,2,4} = BraTS 2017-2021, 3 without 4 = BraTS 2023+ (MSD for an MSD "
    "reference cohort).",
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
@click.option(
    "--protocol",
    type=click.Choice(_PROTOCOLS),
    default="legacy",
    show_default=True,
    help="legacy: BraTS 2017-2021 online system (Dice, HD95 as medpy). lesionwise: BraTS "
    "2023-2025 lesion-wise Dice and HD95 (plus whole-region scores, lesion counts). "
    'panoptica: BraTS 2026 evaluator (needs pip install "brats-mtl[brats2026]").',
)
@click.option(
    "--labels",
    type=click.Choice(SCHEMES),
    default="auto",
    show_default=True,
    help="Label scheme of the references (and predictions): brats2017 (1 NCR/NET, 2 ED, "
    "4 ET), msd, brats2023 (1 NETC, 2 SNFH, 3 ET), gli-post (+ 4 RC), ped2024 (1 ET, 2 NET, "
    "3 CC, 4 ED); auto: from the layout, case IDs and values.",
)
@click.option(
    "--task",
    type=click.Choice(_TASKS, case_sensitive=False),
    default="auto",
    show_default=True,
    help="BraTS task of the lesion-wise parameters (dilation, volume threshold) and of the "
    "panoptica config; auto: from BraTS-<TASK>-... case IDs (GLI otherwise).",
)
@click.option(
    "--lesions-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="lesionwise: also write one row per reference lesion and region to this CSV.",
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
    protocol: str = "legacy",
    labels: str = "auto",
    task: str = "auto",
    lesions_out: Path | None = None,
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

    Each prediction must lie on its reference's voxel grid (shape and affine). One
    stored under another axis order or direction (e.g. LPS against a reference saved
    in RAS) is reoriented onto it, with a warning and a Note column in the CSV; any other
    difference (a shifted origin, another spacing or shape) is refused. A case that
    cannot be scored (that, an unreadable or truncated file, label values outside the
    convention or label scheme) is listed as FAILED, the others are written, and the
    command exits with status 1; so under every --protocol.
    """
    from brats_mtl.evaluation import evaluate_folders
    from brats_mtl.evaluation.grid import NOTE_COLUMN

    if out_path.exists() and not overwrite:
        raise click.ClickException(
            f"results file {out_path} already exists; choose another --out or pass --overwrite"
        )
    _check_protocol_options(protocol, labels, ref_convention, lesions_out, overwrite)
    lesion_rows: list[dict] | None = [] if lesions_out is not None else None
    failed: dict[str, str] = {}
    try:
        per_case, missing = evaluate_folders(
            pred_dir,
            ref_dir,
            workers=workers,
            missing_as_empty=missing_as_empty,
            pred_convention=_convention(pred_convention),
            ref_convention=_convention(ref_convention),
            protocol=protocol,
            labels=None if labels == "auto" else labels,
            task=None if task == "auto" else task,
            lesion_rows=lesion_rows,
            failed=failed,
        )
        if len(per_case):
            _write_tables(per_case, out_path, overwrite, lesion_rows, lesions_out)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from error

    n_cases = len(per_case)
    if n_cases:
        if protocol == "legacy" and _is_legacy_table(per_case):
            _echo_legacy_summary(per_case, out_path)
        else:
            _echo_protocol_summary(per_case, out_path, protocol)
    if NOTE_COLUMN in per_case:
        notes = per_case[per_case[NOTE_COLUMN] != ""]
        click.echo(
            f"Predictions reoriented onto the reference grid ({len(notes)}, noted in the "
            f"{NOTE_COLUMN} column): "
            + ", ".join(f"{row.Label} ({row.Note})" for row in notes.itertuples())
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
    if failed:
        from brats_mtl.conventions import plural

        for case_id, error in failed.items():
            click.echo(f"  FAILED {case_id}: {error}", err=True)
        n_failed = len(failed)
        them = "it" if n_failed == 1 else "them"
        written = (
            f"the others are scored in {out_path}"
            if n_cases
            else f"no case scored, {out_path} not written"
        )
        raise click.ClickException(
            f"{plural(n_failed, 'case')} could not be scored ({written}); "
            f"fix {them} and run the same command again" + (" with --overwrite" if n_cases else "")
        )


def _convention(name: str) -> str | None:
    """The label convention's name of a ``--pred-convention``/``--ref-convention`` value."""
    return None if name == "auto" else "brats2019" if name == "brats2017" else name


def _check_protocol_options(
    protocol: str, labels: str, ref_convention: str, lesions_out: Path | None, overwrite: bool
) -> None:
    if labels != "auto" and ref_convention != "auto":
        raise click.UsageError("pass --labels or --ref-convention, not both")
    if lesions_out is not None and protocol != "lesionwise":
        raise click.UsageError("--lesions-out needs --protocol lesionwise")
    if lesions_out is not None and lesions_out.exists() and not overwrite:
        raise click.ClickException(
            f"lesion table {lesions_out} already exists; choose another --lesions-out or "
            "pass --overwrite"
        )
    if protocol == "panoptica":
        from brats_mtl.evaluation.panoptica import panoptica_available

        if not panoptica_available():
            raise click.ClickException(
                "--protocol panoptica needs the optional BraTS 2026 evaluator: "
                'pip install "brats-mtl[brats2026]" (brats-evaluation and panoptica)'
            )


def _is_legacy_table(per_case) -> bool:
    """The online system's columns (and a Note column when some case was reoriented)."""
    from brats_mtl.evaluation import RESULT_COLUMNS
    from brats_mtl.evaluation.grid import NOTE_COLUMN

    return [c for c in per_case.columns if c != NOTE_COLUMN] == list(RESULT_COLUMNS)


def _write_tables(per_case, out_path: Path, overwrite: bool, lesion_rows, lesions_out) -> None:
    """The legacy CSV as the online system wrote it; any other table with its summary."""
    import pandas as pd

    from brats_mtl.evaluation import write_results_csv
    from brats_mtl.evaluation.lesionwise import LESION_COLUMNS
    from brats_mtl.evaluation.protocols import write_table_csv

    if _is_legacy_table(per_case):
        write_results_csv(per_case, out_path, overwrite=overwrite)
    else:
        write_table_csv(per_case, out_path, overwrite=overwrite)
    if lesions_out is not None:
        table = pd.DataFrame(lesion_rows, columns=list(LESION_COLUMNS))
        write_table_csv(table, lesions_out, overwrite=overwrite, summary=False)


def _echo_legacy_summary(per_case, out_path: Path) -> None:
    from brats_mtl.conventions import REGION_ORDER, plural

    click.echo(f"Evaluated {plural(len(per_case), 'case')}; results written to {out_path}")
    click.echo(f"{'region':<8}{'mean Dice':>12}{'mean HD95 (mm)':>17}")
    for region in REGION_ORDER:
        click.echo(
            f"{region:<8}{per_case[f'Dice_{region}'].mean():>12.4f}"
            f"{per_case[f'Hausdorff95_{region}'].mean():>17.2f}"
        )


def _echo_protocol_summary(per_case, out_path: Path, protocol: str) -> None:
    from brats_mtl.conventions import plural

    click.echo(
        f"Evaluated {plural(len(per_case), 'case')} ({protocol}); results written to {out_path}"
    )
    lesionwise = protocol != "legacy"
    dice = "LesionWise_Dice" if lesionwise else "Dice"
    hd95 = "LesionWise_Hausdorff95" if lesionwise else "Hausdorff95"
    regions = [c[len(dice) + 1 :] for c in per_case.columns if c.startswith(f"{dice}_")]
    what = "lesion-wise " if lesionwise else ""
    click.echo(f"{'region':<8}{f'mean {what}Dice':>24}{f'mean {what}HD95 (mm)':>28}")
    for region in regions:
        click.echo(
            f"{region:<8}{per_case[f'{dice}_{region}'].mean():>24.4f}"
            f"{per_case[f'{hd95}_{region}'].mean():>28.2f}"
        )
