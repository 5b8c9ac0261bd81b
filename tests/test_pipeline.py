"""The whole chain on a tiny synthetic cohort (issue: main job end to end)."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brats_mtl.config import apply_overrides
from brats_mtl.pipeline import (
    TABLE3_COLUMNS,
    TABLE4_COLUMNS,
    demo_config,
    make_demo_cohort,
    run_pipeline,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    cohort = make_demo_cohort(
        root / "data", n_train=4, n_unlabeled=1, n_test=1, n_survival=20, shape=(32, 32, 32)
    )
    config = apply_overrides(
        demo_config(), ["train.n_folds=2", "train.max_steps=4", "train.val_every_n_epochs=1",
                        "inference.tta=0"]
    )
    result = run_pipeline(
        cohort.train_dir, root / "out", config=config, unlabeled_dirs=(cohort.unlabeled_dir,),
        test_dir=cohort.test_dir, survival_csv=cohort.survival_csv, progress=False,
    )
    return cohort, config, result


def test_chain_writes_tables_figures_and_report(tiny_run):
    cohort, _, result = tiny_run
    out = result.out_dir
    assert list(result.table3.index) == ["Train set (out-of-fold)", "Test set (fold ensemble)"]
    assert list(result.table3.columns) == [*TABLE3_COLUMNS, "n_cases"]
    assert result.table3.loc["Train set (out-of-fold)", "n_cases"] == 4
    dice = result.table3[[c for c in TABLE3_COLUMNS if c.startswith("Dice")]].to_numpy()
    assert ((dice >= 0) & (dice <= 1)).all()
    # the online-system CSV: 4 cases then the five summary rows
    csv = pd.read_csv(out / "tables" / "train_set_out_of_fold.csv")
    assert list(csv["Label"])[-5:] == ["Mean", "StdDev", "Median", "25quantile", "75quantile"]
    assert float(csv.loc[csv["Label"] == "Mean", "Dice_WT"].iloc[0]) == pytest.approx(
        result.table3.loc["Train set (out-of-fold)", "Dice_WT"]
    )
    assert list(result.table4.columns) == list(TABLE4_COLUMNS)
    for path in result.figures.values():
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert {"fig1_preprocessing", "fig3_best", "fig3_worst", "fig4_survival"} <= set(result.figures)
    report = result.report.read_text()
    assert "Table 3" in report and "figures/fig3_best.png" in report
    # every out-of-fold label map keeps its input's grid
    for case_dir in sorted(cohort.train_dir.iterdir()):
        pred = nib.load(out / "predictions" / "out_of_fold" / f"{case_dir.name}.nii.gz")
        ref = nib.load(next(case_dir.glob("*_seg.nii.gz")))
        assert pred.shape == ref.shape
        np.testing.assert_allclose(pred.affine, ref.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 4}


def test_existing_output_needs_resume_or_overwrite(tiny_run):
    cohort, config, result = tiny_run
    with pytest.raises(FileExistsError, match="--resume"):
        run_pipeline(cohort.train_dir, result.out_dir, config=config)


def test_resume_does_not_retrain(tiny_run):
    cohort, config, result = tiny_run
    ckpt = result.out_dir / "run" / "fold_0" / "checkpoints" / "last.ckpt"
    before = ckpt.stat().st_mtime_ns
    oof = result.out_dir / "predictions" / "out_of_fold" / "BraTS2021_00000.nii.gz"
    oof_before = oof.stat().st_mtime_ns
    again = run_pipeline(
        cohort.train_dir, result.out_dir, config=config, unlabeled_dirs=(cohort.unlabeled_dir,),
        resume=True, progress=False,
    )
    assert ckpt.stat().st_mtime_ns == before
    assert oof.stat().st_mtime_ns == oof_before
    pd.testing.assert_series_equal(
        again.table3.loc["Train set (out-of-fold)"], result.table3.loc["Train set (out-of-fold)"]
    )
