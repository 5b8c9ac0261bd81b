"""``brats-mtl evaluate-uncertainty``: the QU-BraTS score of uncertainty maps.

Writes one row per case (AUC of the filtered Dice, of the filtered true-positive and
true-negative ratios, and the combined score, for WT, TC and ET), then the summary rows,
and prints the means. Source: Mehta et al., MELBA 2022; the organisers' scoring script
(``brats_mtl.evaluation.uncertainty``).
"""

from __future__ import annotations

from pathlib import Path

import click

from brats_mtl.cli.evaluate import SCHEMES


@click.command(name="evaluate-uncertainty")
@click.argument("pred_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("ref_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Result CSV: Label, AUC_Dice_WT, AUC_FTP_WT, AUC_FTN_WT, Score_WT, ... (TC, ET), "
    "then Mean, StdDev, Median, 25quantile, 75quantile.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing result files.")
@click.option(
    "--brain-mask",
    type=click.Choice(["t1", "any", "all"]),
    default="t1",
    show_default=True,
    help="Where true positives and negatives are counted: t1 = T1 > 0 (the QU-BraTS "
    "organisers' rule), any / all = any / all four modalities non-zero.",
)
@click.option(
    "--points",
    "n_points",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Threshold steps from 100 to 0 (the organisers' 40: 100, 97.5, ..., 0).",
)
@click.option(
    "--random-baseline",
    is_flag=True,
    help="Also score uniform random maps on the same cases (an uninformative baseline), "
    "written to <OUT stem>_random.csv.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random maps.")
@click.option(
    "--labels",
    type=click.Choice(SCHEMES),
    default="auto",
    show_default=True,
    help="Label scheme of the references and predictions, as for `evaluate`: WT, TC and ET "
    "are the scheme's regions (e.g. TC = NETC + ET for brats2023); auto: from the layout, "
    "case IDs and values.",
)
@click.option(
    "--curves",
    "curves_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write filtered Dice, FTP and FTN per case, region and threshold to this CSV.",
)
def command(
    pred_dir: Path,
    ref_dir: Path,
    out_path: Path,
    overwrite: bool,
    brain_mask: str,
    n_points: int,
    random_baseline: bool,
    seed: int,
    labels: str,
    curves_path: Path | None,
) -> None:
    """QU-BraTS score of the uncertainty maps in PRED_DIR against the cases in REF_DIR.

    \b
    PRED_DIR holds <ID>.nii.gz label maps with, beside each, the maps written by
    `brats-mtl predict --uncertainty entropy|disagreement`:
      <ID>_unc_whole.nii.gz, <ID>_unc_core.nii.gz, <ID>_unc_enhance.nii.gz
    (values 0 certain to 100 most uncertain, the QU-BraTS format). REF_DIR holds
    the labeled cases with their images (the brain mask comes from them), in any
    supported layout.

    Uncertain voxels (uncertainty > threshold) are filtered at thresholds from 100
    down to 0; the score per region is (AUC_Dice + (1 - AUC_FTP) + (1 - AUC_FTN)) / 3,
    in [0, 1], higher is better.
    """
    from brats_mtl.evaluation.uncertainty import (
        CURVE_COLUMNS,
        UNCERTAINTY_REGIONS,
        evaluate_uncertainty_folders,
        mean_scores,
        write_uncertainty_csv,
    )

    random_path = out_path.with_name(f"{out_path.stem}_random{out_path.suffix or '.csv'}")
    targets = (
        [out_path]
        + ([random_path] if random_baseline else [])
        + ([curves_path] if curves_path is not None else [])
    )
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise click.ClickException(
            f"{', '.join(existing)} already exist(s); choose another --out or pass --overwrite"
        )
    try:
        results = evaluate_uncertainty_folders(
            pred_dir,
            ref_dir,
            brain_mask=brain_mask,
            n_points=n_points,
            random_seed=seed if random_baseline else None,
            labels=None if labels == "auto" else labels,
        )
        write_uncertainty_csv(results.per_case, out_path, overwrite=True)
        if results.random is not None:
            write_uncertainty_csv(results.random, random_path, overwrite=True)
        if curves_path is not None:
            from brats_mtl.atomic import atomic_output

            with atomic_output(curves_path, overwrite=True) as tmp:
                results.curves.loc[:, list(CURVE_COLUMNS)].to_csv(tmp, index=False)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from error

    from brats_mtl.conventions import plural

    click.echo(f"Scored {plural(len(results.per_case), 'case')}; results written to {out_path}")
    rows = [("maps", mean_scores(results.per_case))]
    if results.random is not None:
        rows.append(("random", mean_scores(results.random)))
        click.echo(f"Random-map baseline written to {random_path}")
    rows.append(("zero", mean_scores(results.zero)))
    click.echo(f"{'region':<8}{'':<8}{'AUC Dice':>10}{'AUC FTP':>10}{'AUC FTN':>10}{'score':>10}")
    for region in UNCERTAINTY_REGIONS:
        for name, means in rows:
            click.echo(
                f"{region:<8}{name:<8}"
                + "".join(
                    f"{means[f'{m}_{region}']:>10.4f}"
                    for m in ("AUC_Dice", "AUC_FTP", "AUC_FTN", "Score")
                )
            )
    click.echo("(zero: maps of 0 everywhere, the score of a segmentation without uncertainty)")
    for side, what in (
        ("predictions", "Reference cases without prediction"),
        ("maps", "Predicted cases without their three uncertainty maps"),
        ("references", "Predictions without a labeled reference case"),
    ):
        if results.missing[side]:
            click.echo(
                f"{what} ({len(results.missing[side])}, not scored): "
                + ", ".join(results.missing[side])
            )
