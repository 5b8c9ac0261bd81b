"""Age-based survival prediction (paper 4.3, 5.2, Table 4, Fig. 4; docs/design.md section 7).

- :mod:`~brats_mtl.survival.io`: read the BraTS survival tables of 2017-2020 (training and
  validation), write and read submission CSVs;
- :mod:`~brats_mtl.survival.model`: OLS of survival days on age over GTR patients, saved
  as JSON;
- :mod:`~brats_mtl.survival.metrics`: Accuracy, MSE, medianSE, stdSE, SpearmanR as the
  BraTS online system, and k-fold cross-validation;
- :mod:`~brats_mtl.survival.plot`: Fig. 4 (matplotlib imported lazily).
"""

from brats_mtl.survival.io import (
    SurvivalTable,
    SurvivalTableError,
    read_predictions,
    read_survival_csv,
    write_submission,
)
from brats_mtl.survival.metrics import (
    CrossValidation,
    SurvivalMetrics,
    cross_validate,
    evaluate_predictions,
    kfold_assignment,
    survival_class,
    survival_metrics,
)
from brats_mtl.survival.model import (
    AgeSurvivalModel,
    fit_age_model,
    fit_ols,
    load_model,
    predict_table,
    save_model,
)

__all__ = [
    "AgeSurvivalModel",
    "CrossValidation",
    "SurvivalMetrics",
    "SurvivalTable",
    "SurvivalTableError",
    "cross_validate",
    "evaluate_predictions",
    "fit_age_model",
    "fit_ols",
    "kfold_assignment",
    "load_model",
    "predict_table",
    "read_predictions",
    "read_survival_csv",
    "save_model",
    "survival_class",
    "survival_metrics",
    "write_submission",
]
