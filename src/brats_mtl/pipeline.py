"""The whole chain: train the fold models, predict, evaluate, survival, figures, report.

``run_pipeline`` is what ``brats-mtl run`` and ``brats-mtl demo`` call. The output folder:

```
OUT/
  run/                      training run: config.yaml, splits.json, fold_K/ (checkpoints,
                            metrics.csv, validation.csv, training_curves.png), cache/
  predictions/out_of_fold/  each fold's model on its held-out cases (<ID>.nii.gz)
  predictions/test/         the fold ensemble on the test cases (when a test folder is given)
  tables/                   online-system CSVs per case (legacy and lesion-wise), table3.csv,
                            table4.csv, uncertainty_*.csv (with inference.uncertainty)
  figures/                  fig1_preprocessing.png, fig3_best.png, fig3_worst.png, fig4_survival.png,
                            uncertainty_best.png (with inference.uncertainty)
  survival/                 model.json, predictions.csv (when a survival table is given)
  report.md                 the tables and links to everything above
  .brats-mtl-output         marker: brats-mtl created this folder (version, command, the
                            run's inputs: --resume reuses those not given again)
```

Interrupted work resumes: training continues from each fold's last checkpoint and
prediction skips cases already written; tables, figures and the report are derived files
and are written again.

Overwriting is bounded by the marker
(:func:`~brats_mtl.workspace.ownership.prepare_output_dir`): ``overwrite`` removes only the
entries listed above, and only in a folder that holds the marker, i.e. one that
brats-mtl created; a non-empty folder without it (a home or data folder given as
``--out`` by mistake) is refused. Inputs inside the output folder are refused too.

Source: paper sections 4-5 (Tables 3 and 4, Figs. 1, 3, 4); docs/design.md sections 4-8.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from brats_mtl.atomic import atomic_output, write_text_atomic
from brats_mtl.config import Config
from brats_mtl.conventions import REGION_ORDER
from brats_mtl.workspace.ownership import (
    OUTPUT_MARKER,
    RunInputs,
    prepare_output_dir,
    record_run_inputs,
    remove_derived_outputs,
    removed_if_unused_on_failure,
    resolve_run_inputs,
)
from brats_mtl.workspace.run_dir import RunDir

if TYPE_CHECKING:  # numpy and pandas are imported where used: the CLI reads the presets
    import pandas as pd

logger = logging.getLogger(__name__)

#: Column order of the paper's Table 3 (mean over cases, online-system definitions).
TABLE3_COLUMNS = tuple(f"Dice_{r}" for r in REGION_ORDER) + tuple(
    f"Hausdorff95_{r}" for r in REGION_ORDER
)


def table3_columns(scheme: str | None = None) -> tuple[str, ...]:
    """Table 3 columns of a label scheme: Dice then HD95 of each of its regions.

    The three-label schemes (and None) give :data:`TABLE3_COLUMNS`; ``gli-post`` and
    ``ped2024`` add their single-label regions (NETC, SNFH, RC; NET, CC, ED) after ET,
    WT, TC (``brats_mtl.tasks``).
    """
    from brats_mtl.tasks import network_classes

    regions = network_classes(scheme).regions
    if tuple(regions) == REGION_ORDER or scheme is None:
        return TABLE3_COLUMNS
    return tuple(f"Dice_{r}" for r in regions) + tuple(f"Hausdorff95_{r}" for r in regions)


#: Column order of the paper's Table 4.
TABLE4_COLUMNS = ("Accuracy", "MSE", "medianSE", "stdSE", "SpearmanR")


@dataclass
class PipelineResult:
    """What ``run_pipeline`` produced.

    Attributes:
        out_dir: the output folder.
        report: ``OUT/report.md``.
        table3: the paper's Table 3 layout (rows: data sets; columns: TABLE3_COLUMNS).
        table4: the paper's Table 4 layout, or None without a survival table.
        figures: name -> PNG path.
    """

    out_dir: Path
    report: Path
    table3: pd.DataFrame
    table4: pd.DataFrame | None
    figures: dict[str, Path] = field(default_factory=dict)


def run_pipeline(
    data_dir: str | Path | None,
    out_dir: str | Path,
    *,
    config: Config | None = None,
    unlabeled_dirs: tuple[str | Path, ...] = (),
    test_dir: str | Path | None = None,
    survival_csv: str | Path | None = None,
    folds: tuple[int, ...] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    command_line: str | None = None,
    without: Collection[str] = (),
    report_note: str | None = None,
) -> PipelineResult:
    """Train, predict out-of-fold (and on a test folder), evaluate, fit survival, report.

    The label scheme of the data (``tasks``; ``config.train.labels`` or inferred when
    training) decides the network's classes, the values written and the regions of the
    tables and the report (ET, WT, TC, then e.g. NETC, SNFH, RC for ``gli-post``).

    Args:
        data_dir: labeled BraTS cohort in any supported layout (cross-validated); None
            with ``resume``: the one recorded when the run started.
        out_dir: output folder (layout in the module docstring).
        config: configuration; default the paper's.
        unlabeled_dirs: folders of unlabeled cases for the VAE branch.
        test_dir: optional cohort predicted by the fold ensemble (majority vote) and, when
            labeled, evaluated as the paper's validation/test rows.
        survival_csv: optional BraTS survival table for the age regression (Table 4, Fig. 4).
        folds: folds to train and use; default all ``config.train.n_folds``.
        resume: continue in an existing output folder; ``unlabeled_dirs``, ``test_dir``
            and ``survival_csv`` not given are those recorded when the run started (see
            :func:`~brats_mtl.workspace.ownership.resolve_run_inputs`), so the tables and
            report keep their rows.
        overwrite: start again: remove what an earlier run wrote in ``out_dir`` (only in a
            folder brats-mtl created; see
            :func:`~brats_mtl.workspace.ownership.prepare_output_dir`).
        progress: progress bars.
        command_line: recorded in the output folder's marker file.
        without: with ``resume``, recorded inputs not to reuse: ``"test_dir"`` (no
            test-set row), ``"survival_csv"`` (no survival section); what the run derived
            from them (``tables/test_set_ensemble.csv``; ``survival/``,
            ``tables/table4.csv``, ``figures/fig4_survival.png``) is removed, the test
            predictions are kept.
        report_note: a paragraph placed right under the report's title (the demo says
            there that its cohort is synthetic).

    Returns:
        A :class:`PipelineResult`.

    Raises:
        FileExistsError: if ``out_dir`` is a non-empty folder and neither ``resume`` nor
            ``overwrite`` is set, or ``overwrite`` is set for a non-empty folder that
            brats-mtl did not create (see
            :func:`~brats_mtl.workspace.ownership.prepare_output_dir`).
        ValueError: if an input lies inside ``out_dir``; if no ``data_dir`` is given and
            none is recorded; if ``without`` names an input that is given; from the
            stages (bad data, bad configuration, a survival table with bad ages).
        FileNotFoundError: on ``resume``, if a recorded input not given again no longer
            exists; from the stages.
        brats_mtl.signals.Terminated: on SIGTERM during training (exit status 143).

    A command that fails before it writes anything (e.g. a DATA_DIR without cases)
    leaves no output folder behind
    (:func:`~brats_mtl.workspace.ownership.removed_if_unused_on_failure`).

    Source: paper sections 4-5; docs/design.md sections 4-8.
    """
    with removed_if_unused_on_failure(out_dir):
        return _run_pipeline(
            data_dir,
            out_dir,
            config=config,
            unlabeled_dirs=unlabeled_dirs,
            test_dir=test_dir,
            survival_csv=survival_csv,
            folds=folds,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            command_line=command_line,
            without=without,
            report_note=report_note,
        )


def _run_pipeline(
    data_dir: str | Path | None,
    out_dir: str | Path,
    *,
    config: Config | None,
    unlabeled_dirs: tuple[str | Path, ...],
    test_dir: str | Path | None,
    survival_csv: str | Path | None,
    folds: tuple[int, ...] | None,
    resume: bool,
    overwrite: bool,
    progress: bool,
    command_line: str | None,
    without: Collection[str],
    report_note: str | None,
) -> PipelineResult:
    """:func:`run_pipeline` inside its clean-up on failure."""
    from brats_mtl.evaluation import evaluate_folders, write_results_csv
    from brats_mtl.predict import predict_cohort
    from brats_mtl.survival import read_survival_csv
    from brats_mtl.training import train_folds

    out = Path(out_dir)
    run_inputs = resolve_run_inputs(
        out,
        RunInputs(
            None if data_dir is None else Path(data_dir),
            tuple(Path(u) for u in unlabeled_dirs),
            None if test_dir is None else Path(test_dir),
            None if survival_csv is None else Path(survival_csv),
        ),
        resume=resume and not overwrite,
        without=without,
    )
    if run_inputs.data_dir is None:
        raise ValueError(
            f"no DATA_DIR given and none recorded in {out / OUTPUT_MARKER}: give the "
            "labeled cohort (DATA_DIR)"
            + ("" if resume else "; --resume takes the one a run recorded")
        )
    data_dir, unlabeled_dirs = run_inputs.data_dir, run_inputs.unlabeled_dirs
    test_dir, survival_csv = run_inputs.test_dir, run_inputs.survival_csv
    # read the survival table first: a bad table fails before hours of training
    survival_table = read_survival_csv(survival_csv) if survival_csv is not None else None
    prepare_output_dir(
        out,
        "run",
        resume=resume,
        overwrite=overwrite,
        inputs=run_inputs.as_inputs(),
        command_line=command_line,
    )
    record_run_inputs(out, run_inputs)  # what --resume reuses when not given again
    if resume and not overwrite:
        remove_derived_outputs(out, without)
    config = config or Config()
    run_dir = out / "run"
    tables = out / "tables"
    figures = out / "figures"
    fold_list = tuple(range(config.train.n_folds)) if folds is None else tuple(folds)

    logger.info("training folds %s in %s", fold_list, run_dir)
    has_checkpoint = {f: RunDir(run_dir).checkpoint(f, "last").exists() for f in fold_list}
    for fold in fold_list:
        train_folds(
            data_dir,
            run_dir,
            folds=[fold],
            config=config,
            unlabeled_dirs=tuple(unlabeled_dirs),
            resume=has_checkpoint[fold],
            enable_progress_bar=progress,
            command_line=command_line,
        )

    scheme = RunDir(run_dir).read_config().train.labels  # None: the paper's classes
    # A fold whose training ended before its first validation has no best.ckpt;
    # predict_cohort then uses its last.ckpt, with a WARNING, fold by fold.
    logger.info("out-of-fold prediction")
    oof_dir = out / "predictions" / "out_of_fold"
    predict_cohort(  # each fold predicts its own held-out cases
        run_dir,
        data_dir,
        oof_dir,
        config=config,
        which="best",
        out_of_fold=True,
        folds=list(fold_list),
        progress=progress,
    )
    oof_cases, missing = evaluate_folders(oof_dir, data_dir, labels=scheme)
    _report_missing("out-of-fold", missing)
    write_results_csv(oof_cases, tables / "train_set_out_of_fold.csv", overwrite=True)
    oof_lesionwise = _lesionwise_table(oof_dir, data_dir, tables, scheme)
    rows = {"Train set (out-of-fold)": oof_cases}

    if test_dir is not None:
        logger.info("fold-ensemble prediction of %s", test_dir)
        test_pred = out / "predictions" / "test"
        predict_cohort(
            run_dir,
            test_dir,
            test_pred,
            config=config,
            folds=list(fold_list),
            which="best",
            progress=progress,
        )
        if _has_labels(test_dir):
            test_cases, missing = evaluate_folders(test_pred, test_dir, labels=scheme)
            _report_missing("test", missing)
            write_results_csv(test_cases, tables / "test_set_ensemble.csv", overwrite=True)
            rows["Test set (fold ensemble)"] = test_cases

    table3 = table3_layout(rows, table3_columns(scheme))
    with atomic_output(tables / "table3.csv", overwrite=True) as tmp:
        table3.to_csv(tmp, float_format="%.4f")

    figure_paths = _segmentation_figures(data_dir, oof_dir, oof_cases, run_dir, figures, scheme)
    uncertainty = None  # QU-BraTS scores of the out-of-fold maps (inference.uncertainty)
    if config.inference.uncertainty != "none" and not oof_cases.empty:
        uncertainty = _uncertainty_outputs(
            data_dir, oof_dir, oof_cases, tables, figures, labels=scheme
        )
        figure_paths.update(uncertainty.figures)
    table4 = None
    if survival_table is not None:
        table4, fig4 = _survival(survival_table, out / "survival", config)
        with atomic_output(tables / "table4.csv", overwrite=True) as tmp:
            table4.to_csv(tmp, float_format="%.4f")
        figure_paths["fig4_survival"] = fig4

    report = write_report(
        out,
        table3,
        table4,
        figure_paths,
        config,
        oof_cases,
        lesionwise=oof_lesionwise,
        note=report_note,
        uncertainty=None if uncertainty is None else uncertainty.summary,
        test_cases=rows.get("Test set (fold ensemble)"),
    )
    return PipelineResult(out, report, table3, table4, figure_paths)


def _lesionwise_table(
    pred_dir: Path, data_dir: Path, tables: Path, scheme: str | None = None
) -> pd.DataFrame:
    """Out-of-fold lesion-wise table (BraTS 2023-2025 protocol), also written as a CSV."""
    from brats_mtl.evaluation import evaluate_folders
    from brats_mtl.evaluation.protocols import write_table_csv

    per_case, _ = evaluate_folders(pred_dir, data_dir, protocol="lesionwise", labels=scheme)
    write_table_csv(per_case, tables / "train_set_out_of_fold_lesionwise.csv", overwrite=True)
    return per_case


def lesionwise_summary(per_case: pd.DataFrame) -> pd.DataFrame:
    """Per region: mean lesion-wise Dice and HD95 (mm), summed lesion counts.

    Args:
        per_case: a lesion-wise table (``evaluate_folders(..., protocol="lesionwise")``).

    Returns:
        DataFrame indexed by region (ET, WT, TC, ...), columns ``LesionWise_Dice``,
        ``LesionWise_Hausdorff95``, ``Num_TP``, ``Num_FP``, ``Num_FN``.

    Source: BraTS 2023-2025 lesion-wise ranking metrics.
    """
    import pandas as pd

    prefix = "LesionWise_Dice_"
    regions = [c.removeprefix(prefix) for c in per_case.columns if c.startswith(prefix)]
    rows = {}
    for region in regions:
        rows[region] = {
            "LesionWise_Dice": per_case[f"LesionWise_Dice_{region}"].mean(),
            "LesionWise_Hausdorff95": per_case[f"LesionWise_Hausdorff95_{region}"].mean(),
            **{n: per_case[f"{n}_{region}"].sum() for n in ("Num_TP", "Num_FP", "Num_FN")},
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "region"
    return table


def table3_layout(
    per_case: dict[str, pd.DataFrame], columns: tuple[str, ...] = TABLE3_COLUMNS
) -> pd.DataFrame:
    """The paper's Table 3: mean Dice and HD95 (mm) per region, one row per data set.

    Args:
        per_case: data-set name -> per-case online-system table (``evaluate_folders``).
        columns: the metric columns (:func:`table3_columns` of the data's label scheme).

    Returns:
        DataFrame indexed by data set, columns ``columns`` plus ``n_cases``.
    """
    import pandas as pd

    rows = {}
    for name, cases in per_case.items():
        row = {c: float(pd.to_numeric(cases[c]).mean()) for c in columns}
        row["n_cases"] = len(cases)
        rows[name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "Dataset"
    return frame


def _has_labels(folder: str | Path) -> bool:
    from brats_mtl.data import discover_cases

    # a broken case folder was already reported by prediction: do not stop here
    return any(c.labeled for c in discover_cases(folder, invalid=[]))


def _report_missing(what: str, missing: dict[str, list[str]]) -> None:
    for side, ids in missing.items():
        if ids:
            logger.warning("%s evaluation: %d %s missing: %s", what, len(ids), side, ", ".join(ids))


def _segmentation_figures(
    data_dir: str | Path,
    oof_dir: Path,
    oof_cases: pd.DataFrame,
    run_dir: Path,
    figures: Path,
    scheme: str | None = None,
) -> dict[str, Path]:
    """Fig. 1 on the first case; Fig. 3 on the best and worst out-of-fold cases.

    Fig. 3 is drawn in the colours of every label of the data's ``scheme``.
    """
    import pandas as pd

    from brats_mtl.data import discover_cases, load_case, load_label_map, load_raw_label_map
    from brats_mtl.figures.common import save_figure
    from brats_mtl.figures.slices import preprocessing_figure, segmentation_figure
    from brats_mtl.preprocessing import patch_grid, preprocess_case

    cases = {c.case_id: c for c in discover_cases(data_dir) if c.labeled}
    paths: dict[str, Path] = {}
    if oof_cases.empty:
        return paths
    dice = oof_cases[[f"Dice_{r}" for r in REGION_ORDER]].apply(pd.to_numeric).mean(axis=1)
    order = oof_cases.assign(mean_dice=dice.to_numpy()).sort_values("mean_dice")
    best, worst = order.iloc[-1], order.iloc[0]

    first = load_case(cases[str(best["Label"])], scheme=scheme)
    pre = preprocess_case(first)
    t2 = 2  # channel index of t2 in (t1, t1ce, t2, flair): the paper's Fig. 1 shows T2
    patch_size = _patch_size(run_dir)
    grid = patch_grid(pre.image.shape[1:], patch_size)
    fig = preprocessing_figure(
        first.image[t2], pre.box, pre.image[t2], grid[0], modality="t2", affine=first.affine
    )
    paths["fig1_preprocessing"] = save_figure(
        fig, figures / "fig1_preprocessing.png", overwrite=True
    )

    for name, row in (("fig3_best", best), ("fig3_worst", worst)):
        case = load_case(cases[str(row["Label"])], scheme=scheme)
        written = oof_dir / f"{case.case_id}.nii.gz"
        four_labels = scheme is not None and table3_columns(scheme) != TABLE3_COLUMNS
        pred, _, _ = load_raw_label_map(written) if four_labels else load_label_map(written)
        title = (
            f"{case.case_id}: Dice ET {float(row['Dice_ET']):.2f}, WT {float(row['Dice_WT']):.2f}, "
            f"TC {float(row['Dice_TC']):.2f}"
        )
        flair = case.image[3]
        fig = segmentation_figure(
            flair, case.labels, pred, title=title, affine=case.affine, scheme=scheme
        )
        paths[name] = save_figure(fig, figures / f"{name}.png", overwrite=True)
    for curve in RunDir(run_dir).training_curves():
        paths[f"training_curves_{curve.parent.name}"] = curve
    return paths


@dataclass(frozen=True)
class _UncertaintyOutputs:
    summary: pd.DataFrame  # rows: the maps and the random baseline; columns: mean scores
    figures: dict[str, Path]


def _uncertainty_outputs(
    data_dir: str | Path,
    oof_dir: Path,
    oof_cases: pd.DataFrame,
    tables: Path,
    figures: Path,
    *,
    labels: str | None = None,
) -> _UncertaintyOutputs:
    """QU-BraTS scores of the out-of-fold uncertainty maps beside random maps.

    Scored in the run's label scheme (``labels``; None: inferred per case). Also draws
    the map figure of the best out-of-fold case.
    """
    import pandas as pd

    from brats_mtl.data import discover_cases, load_case, load_label_map
    from brats_mtl.evaluation.uncertainty import (
        UNCERTAINTY_COLUMNS,
        evaluate_uncertainty_folders,
        mean_scores,
        read_uncertainty_map,
        uncertainty_map_paths,
        write_uncertainty_csv,
    )
    from brats_mtl.figures.common import save_figure
    from brats_mtl.figures.uncertainty import uncertainty_figure

    results = evaluate_uncertainty_folders(oof_dir, data_dir, random_seed=0, labels=labels)
    write_uncertainty_csv(results.per_case, tables / "uncertainty_out_of_fold.csv", overwrite=True)
    write_uncertainty_csv(
        results.random, tables / "uncertainty_random_out_of_fold.csv", overwrite=True
    )
    means = {
        "predicted maps": results.per_case,
        "random maps": results.random,
        "maps of 0 (all certain)": results.zero,
    }
    summary = pd.DataFrame({k: mean_scores(v) for k, v in means.items()}).T
    summary = summary[[c for c in UNCERTAINTY_COLUMNS if c.startswith("Score")]]
    summary.index.name = "Maps"
    dice = oof_cases[[f"Dice_{r}" for r in REGION_ORDER]].apply(pd.to_numeric).mean(axis=1)
    order = oof_cases.assign(mean_dice=dice.to_numpy()).sort_values("mean_dice")
    best = str(order.iloc[-1]["Label"])
    paths: dict[str, Path] = {}
    if best in set(results.per_case["Label"]):
        case = load_case({c.case_id: c for c in discover_cases(data_dir, invalid=[])}[best])
        labels, _, _ = load_label_map(oof_dir / f"{best}.nii.gz")
        maps = {
            r: read_uncertainty_map(path, labels.shape)
            for r, path in uncertainty_map_paths(oof_dir, best).items()
        }
        fig = uncertainty_figure(case.image[3], labels, maps, title=f"{best}: uncertainty maps")
        paths["uncertainty_best"] = save_figure(
            fig, figures / "uncertainty_best.png", overwrite=True
        )
    return _UncertaintyOutputs(summary, paths)


def _patch_size(run_dir: Path) -> int:
    return RunDir(run_dir).read_config().model.patch_size


def _survival(table, out: Path, config: Config) -> tuple[pd.DataFrame, Path]:
    """Fit the GTR age regression on a ``SurvivalTable``.

    The model is scored on its training rows and by k-fold CV.
    """
    import pandas as pd

    from brats_mtl.figures.common import save_figure
    from brats_mtl.survival import (
        cross_validate,
        evaluate_predictions,
        fit_age_model,
        predict_table,
        save_model,
    )
    from brats_mtl.survival.plot import plot_age_regression

    model = fit_age_model(table, config.survival)
    save_model(model, out / "model.json", overwrite=True)
    train, _ = evaluate_predictions(predict_table(model, table), table, config.survival)
    cv = cross_validate(table, config.survival, seed=0)
    table4 = pd.DataFrame(
        {
            "Train set (fitted rows)": train.as_row(),
            f"{config.survival.cv_folds}-fold CV": cv.pooled.as_row(),
        }
    ).T[list(TABLE4_COLUMNS)]
    table4.index.name = "Dataset"
    fig = save_figure(
        plot_age_regression(model, table),
        out.parent / "figures" / "fig4_survival.png",
        overwrite=True,
    )
    return table4, fig


def _markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    cols = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in frame.iterrows():
        cells = [
            str(int(v))
            if col == "n_cases"
            else f"{v:.{digits}f}"
            if isinstance(v, float)
            else str(v)
            for col, v in zip(frame.columns, row.tolist(), strict=True)
        ]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)


def _per_case_table(cases: pd.DataFrame, columns: list[str], predictions_csv: Path) -> pd.DataFrame:
    """Per-case Dice and HD95 with the case's ET probability and whether ET suppression fired.

    The last two come from ``predictions.csv`` of ``predict``; the columns are left out
    without it.
    """
    import pandas as pd

    table = cases.set_index("Label")[columns].apply(pd.to_numeric)
    table.index.name = "case"
    if predictions_csv.is_file():
        predicted = pd.read_csv(predictions_csv, dtype={"case_id": str}).set_index("case_id")
        table["ET_probability"] = pd.to_numeric(
            predicted["et_probability"].reindex(table.index), errors="coerce"
        )
        fired = predicted["et_suppressed"].reindex(table.index).astype(str).str.lower()
        table["ET_suppressed"] = fired.map({"true": "yes", "false": "no"}).fillna("")
    return table


def write_report(
    out: Path,
    table3: pd.DataFrame,
    table4: pd.DataFrame | None,
    figures: dict[str, Path],
    config: Config,
    oof_cases: pd.DataFrame,
    *,
    lesionwise: pd.DataFrame | None = None,
    note: str | None = None,
    uncertainty: pd.DataFrame | None = None,
    test_cases: pd.DataFrame | None = None,
) -> Path:
    """Write ``OUT/report.md``: Tables 3 and 4, per-case results, links to figures and files.

    The per-case results show each case's ET probability and whether ET suppression fired.

    ``lesionwise``: the out-of-fold lesion-wise table, summarised per region when given.
    ``note``, when given, is the paragraph right under the title (e.g. the demo's
    "synthetic cohort" notice).
    ``uncertainty``: mean QU-BraTS scores of the out-of-fold uncertainty maps and of
    random maps (:func:`_uncertainty_outputs`), shown when given.
    ``test_cases``: the test set's per-case scores (fold ensemble), listed when given.
    """
    columns = [c for c in table3.columns if c != "n_cases"]
    predictions = out / "predictions"
    per_case = _per_case_table(oof_cases, columns, predictions / "out_of_fold" / "predictions.csv")
    m = config.model
    lines = [
        "# brats-mtl report",
        "",
        *([note, ""] if note else []),
        f"Network widths {tuple(m.widths)}, patch {m.patch_size}^3, "
        f"{config.train.n_folds}-fold CV, TTA {config.inference.tta} passes, "
        f"ET suppression below p={config.inference.et_probability_threshold} and "
        f"{config.inference.et_min_voxels} voxels. Metrics as the BraTS online system "
        "(Dice: both empty = 1; HD95 in mm: both empty = 0, one empty = 373.128664).",
        "",
        "## Segmentation (layout of the paper's Table 3; means over cases)",
        "",
        _markdown_table(table3),
        "",
        "Out-of-fold, per case (ET_probability: the ET classifier's; ET_suppressed: ET "
        "relabeled NCR/NET because the classifier said no ET and few ET voxels were "
        "predicted):",
        "",
        _markdown_table(per_case),
        "",
        "Files: `tables/train_set_out_of_fold.csv` (online-system CSV), "
        "`predictions/out_of_fold/` (label maps), `predictions/out_of_fold/predictions.csv` "
        "(ET probability, suppression, volumes in mL).",
        "",
    ]
    if lesionwise is not None and len(lesionwise):
        lines += [
            "## Lesion-wise (BraTS 2023-2025 protocol; out-of-fold)",
            "",
            "Lesion-wise Dice and HD95 (mm) averaged over cases, lesion counts summed "
            "(missed lesions and false-positive components score 0 and 374 mm).",
            "",
            _markdown_table(lesionwise_summary(lesionwise)),
            "",
            "File: `tables/train_set_out_of_fold_lesionwise.csv`.",
            "",
        ]
    if uncertainty is not None:
        lines += [
            f"## Uncertainty ({config.inference.uncertainty} maps, QU-BraTS score; means "
            "over the out-of-fold cases)",
            "",
            _markdown_table(uncertainty),
            "",
            "Score = (AUC_Dice + (1 - AUC_FTP) + (1 - AUC_FTN)) / 3 of the filtered Dice, "
            "true-positive and true-negative ratios over thresholds 100 to 0 (Mehta et al., "
            "MELBA 2022), brain mask T1 > 0. Baselines: uniform random maps, and maps of 0 "
            "everywhere (nothing filtered: (Dice + 2) / 3), which helpful maps must beat. "
            "Files: `tables/uncertainty_out_of_fold.csv`, "
            "`tables/uncertainty_random_out_of_fold.csv`, "
            "`predictions/out_of_fold/<ID>_unc_{whole,core,enhance}.nii.gz`.",
            "",
        ]
    if test_cases is not None:
        test_table = _per_case_table(test_cases, columns, predictions / "test" / "predictions.csv")
        lines += ["Test set (fold ensemble), per case:", "", _markdown_table(test_table), ""]
    if table4 is not None:
        lines += [
            "## Survival (layout of the paper's Table 4)",
            "",
            _markdown_table(table4, digits=3),
            "",
            "Model: `survival/model.json`.",
            "",
        ]
    lines += ["## Figures", ""]
    for name, path in figures.items():
        rel = Path(path).resolve().relative_to(out.resolve())
        lines += [f"### {name}", "", f"![{name}]({rel.as_posix()})", ""]
    return write_text_atomic(out / "report.md", "\n".join(lines), overwrite=True)
