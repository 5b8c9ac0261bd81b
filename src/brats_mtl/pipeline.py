"""The whole chain: train the fold models, predict, evaluate, survival, figures, report.

``run_pipeline`` is what ``brats-mtl run`` and ``brats-mtl demo`` call. The output folder:

```
OUT/
  run/                      training run: config.yaml, splits.json, fold_K/ (checkpoints,
                            metrics.csv, validation.csv, training_curves.png), cache/
  predictions/out_of_fold/  each fold's model on its held-out cases (<ID>.nii.gz)
  predictions/test/         the fold ensemble on the test cases (when a test folder is given)
  tables/                   online-system CSVs per case, table3.csv, table4.csv
  figures/                  fig1_preprocessing.png, fig3_best.png, fig3_worst.png, fig4_survival.png
  survival/                 model.json, predictions.csv (when a survival table is given)
  report.md                 the tables and links to everything above
```

Interrupted work resumes: training continues from each fold's last checkpoint and
prediction skips cases already written; tables, figures and the report are derived files
and are written again.

Source: paper sections 4-5 (Tables 3 and 4, Figs. 1, 3, 4); DESIGN.md sections 4-8.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from brats_mtl.atomic import write_text_atomic
from brats_mtl.config import Config, InferenceConfig, ModelConfig, TrainConfig
from brats_mtl.conventions import REGION_ORDER

logger = logging.getLogger(__name__)

#: Column order of the paper's Table 3 (mean over cases, online-system definitions).
TABLE3_COLUMNS = tuple(f"Dice_{r}" for r in REGION_ORDER) + tuple(
    f"Hausdorff95_{r}" for r in REGION_ORDER
)
#: Column order of the paper's Table 4.
TABLE4_COLUMNS = ("Accuracy", "MSE", "medianSE", "stdSE", "SpearmanR")


def cpu_config(base: Config | None = None) -> Config:
    """The CPU-sized preset for real BraTS data on a machine without a GPU.

    The paper's architecture with widths (8, 16, 32, 64, 128) instead of (28, ..., 448), 64^3
    patches taken at random from each case, and a fixed step budget. Fits a 2-core laptop:
    one fold of a few cases trains in minutes. Not the paper's network: its numbers are not
    the paper's. Inference uses 4 mirror passes, as the paper.
    """
    base = base or Config()
    return replace(
        base,
        model=replace(
            base.model,
            widths=(8, 16, 32, 64, 128),
            vae_hidden_channels=32,
            latent_channels=16,
            classifier_channels=(32, 16),
            classifier_hidden=16,
            patch_size=64,
        ),
        train=replace(
            base.train,
            patch_sampling="random",
            random_patches_per_case=4,
            max_epochs=1000,
            max_steps=300,
            val_every_n_epochs=10,
        ),
    )


def demo_config() -> Config:
    """The demo's preset: a tiny network (widths 8..32) on 32^3 patches, a short schedule.

    Sized so that the whole demo (5 folds) trains, predicts and reports in a few minutes
    on 2 CPU cores.
    """
    return Config(
        model=ModelConfig(
            widths=(8, 12, 16, 24, 32),
            vae_hidden_channels=8,
            latent_channels=4,
            classifier_channels=(16, 8),
            classifier_hidden=8,
            patch_size=32,
        ),
        train=TrainConfig(
            lr=3e-3,
            max_epochs=1000,
            max_steps=160,
            patch_sampling="random",
            random_patches_per_case=4,
            val_every_n_epochs=5,
            log_every_n_steps=5,
        ),
        inference=InferenceConfig(tta=4, et_min_voxels=50, window_batch_size=4),
    )


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
    data_dir: str | Path,
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
) -> PipelineResult:
    """Train, predict out-of-fold (and on a test folder), evaluate, fit survival, report.

    Args:
        data_dir: labeled BraTS cohort in any supported layout (cross-validated).
        out_dir: output folder (layout in the module docstring).
        config: configuration; default the paper's.
        unlabeled_dirs: folders of unlabeled cases for the VAE branch.
        test_dir: optional cohort predicted by the fold ensemble (majority vote) and, when
            labeled, evaluated as the paper's validation/test rows.
        survival_csv: optional BraTS survival table for the age regression (Table 4, Fig. 4).
        folds: folds to train and use; default all ``config.train.n_folds``.
        resume: continue in an existing output folder.
        overwrite: delete an existing output folder first.
        progress: progress bars.

    Returns:
        A :class:`PipelineResult`.

    Raises:
        FileExistsError: if ``out_dir`` is a non-empty folder and neither ``resume`` nor
            ``overwrite`` is set.
        FileNotFoundError, ValueError: from the stages (bad data, bad configuration).

    Source: paper sections 4-5; DESIGN.md sections 4-8.
    """
    from brats_mtl.evaluation import evaluate_folders, write_results_csv
    from brats_mtl.inference import predict_cohort
    from brats_mtl.training import train_folds

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise FileExistsError(
                f"output folder {out} is not empty; pass resume (--resume) to continue the "
                "work there or overwrite (--overwrite) to start again"
            )
    config = config or Config()
    run_dir = out / "run"
    tables = out / "tables"
    figures = out / "figures"
    fold_list = tuple(range(config.train.n_folds)) if folds is None else tuple(folds)

    logger.info("training folds %s in %s", fold_list, run_dir)
    has_checkpoint = {
        f: (run_dir / f"fold_{f}" / "checkpoints" / "last.ckpt").exists() for f in fold_list
    }
    for fold in fold_list:
        train_folds(
            data_dir, run_dir, folds=[fold], config=config, unlabeled_dirs=tuple(unlabeled_dirs),
            resume=has_checkpoint[fold], enable_progress_bar=progress,
        )

    logger.info("out-of-fold prediction")
    oof_dir = out / "predictions" / "out_of_fold"
    predict_cohort(
        run_dir, data_dir, oof_dir, config=config, folds=list(fold_list), out_of_fold=True,
        progress=progress,
    )
    oof_cases, missing = evaluate_folders(oof_dir, data_dir)
    _report_missing("out-of-fold", missing)
    write_results_csv(oof_cases, tables / "train_set_out_of_fold.csv", overwrite=True)
    rows = {"Train set (out-of-fold)": oof_cases}

    if test_dir is not None:
        logger.info("fold-ensemble prediction of %s", test_dir)
        test_pred = out / "predictions" / "test"
        predict_cohort(
            run_dir, test_dir, test_pred, config=config, folds=list(fold_list), progress=progress
        )
        if _has_labels(test_dir):
            test_cases, missing = evaluate_folders(test_pred, test_dir)
            _report_missing("test", missing)
            write_results_csv(test_cases, tables / "test_set_ensemble.csv", overwrite=True)
            rows["Test set (fold ensemble)"] = test_cases

    table3 = table3_layout(rows)
    table3.to_csv(tables / "table3.csv", float_format="%.4f")

    figure_paths = _segmentation_figures(data_dir, oof_dir, oof_cases, run_dir, figures)
    table4 = None
    if survival_csv is not None:
        table4, fig4 = _survival(survival_csv, out / "survival", config)
        table4.to_csv(tables / "table4.csv", float_format="%.4f")
        figure_paths["fig4_survival"] = fig4

    report = write_report(out, table3, table4, figure_paths, config, oof_cases)
    return PipelineResult(out, report, table3, table4, figure_paths)


def table3_layout(per_case: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The paper's Table 3: mean Dice and HD95 (mm) per region, one row per data set.

    Args:
        per_case: data-set name -> per-case online-system table (``evaluate_folders``).

    Returns:
        DataFrame indexed by data set, columns ``TABLE3_COLUMNS`` plus ``n_cases``.
    """
    rows = {}
    for name, cases in per_case.items():
        row = {c: float(pd.to_numeric(cases[c]).mean()) for c in TABLE3_COLUMNS}
        row["n_cases"] = len(cases)
        rows[name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "Dataset"
    return frame


def _has_labels(folder: str | Path) -> bool:
    from brats_mtl.data import discover_cases

    return any(c.labeled for c in discover_cases(folder))


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
) -> dict[str, Path]:
    """Fig. 1 on the first case; Fig. 3 on the best and worst out-of-fold cases."""
    from brats_mtl.data import discover_cases, load_case, load_label_map
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

    first = load_case(cases[str(best["Label"])])
    pre = preprocess_case(first)
    t2 = 2  # channel index of t2 in (t1, t1ce, t2, flair): the paper's Fig. 1 shows T2
    patch_size = _patch_size(run_dir)
    grid = patch_grid(pre.image.shape[1:], patch_size)
    fig = preprocessing_figure(first.image[t2], pre.box, pre.image[t2], grid[0], modality="t2")
    paths["fig1_preprocessing"] = save_figure(fig, figures / "fig1_preprocessing.png", overwrite=True)

    for name, row in (("fig3_best", best), ("fig3_worst", worst)):
        case = load_case(cases[str(row["Label"])])
        pred, _, _ = load_label_map(oof_dir / f"{case.case_id}.nii.gz")
        title = (
            f"{case.case_id}: Dice ET {float(row['Dice_ET']):.2f}, WT {float(row['Dice_WT']):.2f}, "
            f"TC {float(row['Dice_TC']):.2f}"
        )
        flair = case.image[3]
        fig = segmentation_figure(flair, case.labels, pred, title=title)
        paths[name] = save_figure(fig, figures / f"{name}.png", overwrite=True)
    for curve in sorted(run_dir.glob("fold_*/training_curves.png")):
        paths[f"training_curves_{curve.parent.name}"] = curve
    return paths


def _patch_size(run_dir: Path) -> int:
    from brats_mtl.config import load_config

    return load_config(run_dir / "config.yaml").model.patch_size


def _survival(csv: str | Path, out: Path, config: Config) -> tuple[pd.DataFrame, Path]:
    """Fit the GTR age regression, score it on its training rows and by k-fold CV."""
    from brats_mtl.figures.common import save_figure
    from brats_mtl.survival import (
        cross_validate,
        evaluate_predictions,
        fit_age_model,
        predict_table,
        read_survival_csv,
        save_model,
    )
    from brats_mtl.survival.plot import plot_age_regression

    table = read_survival_csv(csv)
    model = fit_age_model(table, config.survival)
    save_model(model, out / "model.json", overwrite=True)
    train, _ = evaluate_predictions(predict_table(model, table), table, config.survival)
    cv = cross_validate(table, config.survival, folds=config.survival.cv_folds, seed=0)
    table4 = pd.DataFrame(
        {"Train set (fitted rows)": train.as_row(), f"{config.survival.cv_folds}-fold CV": cv.pooled.as_row()}
    ).T[list(TABLE4_COLUMNS)]
    table4.index.name = "Dataset"
    fig = save_figure(plot_age_regression(model, table), out.parent / "figures" / "fig4_survival.png", overwrite=True)
    return table4, fig


def _markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    cols = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in frame.iterrows():
        cells = [
            str(int(v)) if col == "n_cases" else f"{v:.{digits}f}" if isinstance(v, float) else str(v)
            for col, v in zip(frame.columns, row.tolist(), strict=True)
        ]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)


def write_report(
    out: Path,
    table3: pd.DataFrame,
    table4: pd.DataFrame | None,
    figures: dict[str, Path],
    config: Config,
    oof_cases: pd.DataFrame,
) -> Path:
    """Write ``OUT/report.md``: Tables 3 and 4, per-case results, links to figures and files."""
    per_case = oof_cases.set_index("Label")[list(TABLE3_COLUMNS)].apply(pd.to_numeric)
    per_case.index.name = "case"
    m = config.model
    lines = [
        "# brats-mtl report",
        "",
        f"Network widths {tuple(m.widths)}, patch {m.patch_size}^3, "
        f"{config.train.n_folds}-fold CV, TTA {config.inference.tta} passes, "
        f"ET suppression below p={config.inference.et_probability_threshold} and "
        f"{config.inference.et_min_voxels} voxels. Metrics as the BraTS online system "
        "(Dice: both empty = 1; HD95 in mm: both empty = 0, one empty = 373.13).",
        "",
        "## Segmentation (layout of the paper's Table 3; means over cases)",
        "",
        _markdown_table(table3),
        "",
        "Out-of-fold, per case:",
        "",
        _markdown_table(per_case),
        "",
        "Files: `tables/train_set_out_of_fold.csv` (online-system CSV), "
        "`predictions/out_of_fold/` (label maps), `predictions/out_of_fold/predictions.csv` "
        "(ET probability, suppression, volumes in mL).",
        "",
    ]
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


@dataclass(frozen=True)
class DemoCohort:
    """Folders and files of the synthetic demo cohort (``make_demo_cohort``)."""

    train_dir: Path
    unlabeled_dir: Path
    test_dir: Path
    survival_csv: Path


def make_demo_cohort(
    root: str | Path,
    *,
    n_train: int = 10,
    n_unlabeled: int = 2,
    n_test: int = 3,
    n_survival: int = 60,
    shape: tuple[int, int, int] = (48, 48, 48),
    seed: int = 0,
) -> DemoCohort:
    """Write a synthetic cohort: labeled training cases, unlabeled cases, labeled test
    cases (BraTS 2021 layout, phantoms), and a BraTS 2019-style survival table.

    The survival table follows the paper's fitted line (1262 - 13.2 * age days) with
    noise, mixes GTR, STR and NA resections, and holds one censored entry and one ``NA``
    survival, as the real table does.

    Args:
        root: folder to create (``train/``, ``unlabeled/``, ``test/``, ``survival.csv``).
        n_train, n_unlabeled, n_test: case counts.
        n_survival: rows of the survival table (patients need no images for the age
            regression).
        shape: volume shape of every case.
        seed: everything is drawn from this seed.

    Returns:
        A :class:`DemoCohort`.
    """
    from brats_mtl.data import write_phantom_case

    root = Path(root)
    train, unlabeled, test = root / "train", root / "unlabeled", root / "test"
    rng = np.random.default_rng(seed)
    for i in range(n_train + n_unlabeled + n_test):
        folder = train if i < n_train else unlabeled if i < n_train + n_unlabeled else test
        write_phantom_case(
            folder, f"BraTS2021_{i:05d}", layout="brats2021", shape=shape,
            labeled=folder is not unlabeled, with_et=(i % 4 != 3), seed=seed * 1000 + i,
            overwrite=True,
        )
    lines = ["BraTS19ID,Age,Survival,ResectionStatus"]
    for i in range(n_survival):
        age = float(rng.uniform(30, 80))
        days = max(30.0, 1262.0 - 13.2 * age + float(rng.normal(0, 250)))
        resection = ("GTR", "GTR", "STR", "NA")[i % 4]
        survival = f"{days:.0f}"
        if i == 5:
            survival = f"ALIVE ({days:.0f} days later)"
        elif i == 9:
            survival = "NA"
        lines.append(f"BraTS2021_{i:05d},{age:.3f},{survival},{resection}")
    survival_csv = write_text_atomic(root / "survival.csv", "\n".join(lines) + "\n", overwrite=True)
    return DemoCohort(train, unlabeled, test, survival_csv)
