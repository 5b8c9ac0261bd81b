"""Survival metrics of the BraTS online system, and k-fold cross-validation.

Metrics (paper Table 4; docs/design.md section 7), over the N scored patients:

- ``Accuracy``: fraction of patients whose predicted and true survival fall in the same
  class. Classes (BraTS: short < 10 months, mid 10-15 months, long > 15 months, in days):
  **short** ``days < short_days`` (300), **mid** ``short_days <= days <= long_days``
  (300 and 450 themselves are mid), **long** ``days > long_days`` (450).
- ``MSE``: mean of the squared errors ``(predicted - true)^2`` [days^2].
- ``medianSE``: median of the squared errors [days^2].
- ``stdSE``: standard deviation of the squared errors, population form (``ddof=0``, as
  ``numpy.std``) [days^2]. Evidence: the fit of paper 4.3 on the 101 GTR patients of the
  BraTS 2019 training table, scored with ``ddof=0``, gives the paper's Table 4 train row
  exactly (Accuracy 0.485, MSE 88822, medianSE 21135, stdSE 181864, SpearmanR 0.48);
  ``ddof=1`` would give 182771.
- ``SpearmanR``: Spearman rank correlation of predicted and true days
  (``scipy.stats.spearmanr``; ties get their average rank). NaN when fewer than 2
  patients or either side is constant.

Source: BraTS 2019 evaluation page (classes in months), paper Table 4.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brats_mtl.config import SurvivalConfig
from brats_mtl.survival.io import SurvivalTable, id_key
from brats_mtl.survival.model import MIN_FIT_ROWS, fit_ols

logger = logging.getLogger(__name__)

SHORT, MID, LONG = 0, 1, 2
CLASS_NAMES = ("short", "mid", "long")
#: Column names of the metrics table, as the online system printed them (paper Table 4).
METRIC_COLUMNS = ("Accuracy", "MSE", "medianSE", "stdSE", "SpearmanR")


def survival_class(
    days: np.ndarray,
    short_days: float = SurvivalConfig.short_days,
    long_days: float = SurvivalConfig.long_days,
) -> np.ndarray:
    """Survival class of each value: 0 short, 1 mid, 2 long.

    Args:
        days: float array of any shape [days].
        short_days: below this, short survivor (300 = 10 months).
        long_days: above this, long survivor (450 = 15 months). Both boundaries are mid.

    Returns:
        int8 array shaped like ``days``.

    Raises:
        ValueError: if ``short_days > long_days`` or ``days`` holds NaN.

    Source: BraTS 2019 evaluation page; docs/design.md section 7.
    """
    if short_days > long_days:
        raise ValueError(f"short_days ({short_days}) must not exceed long_days ({long_days})")
    days = np.asarray(days, dtype=np.float64)
    if np.isnan(days).any():
        raise ValueError("survival days hold NaN; drop missing rows first")
    out = np.full(days.shape, MID, dtype=np.int8)
    out[days < short_days] = SHORT
    out[days > long_days] = LONG
    return out


@dataclass(frozen=True)
class SurvivalMetrics:
    """The five survival metrics of the BraTS online system and the number scored.

    Attributes:
        accuracy: fraction of patients in the right class, in [0, 1].
        mse_days2: mean squared error [days^2].
        median_se_days2: median squared error [days^2].
        std_se_days2: std (ddof=0) of the squared errors [days^2].
        spearman_r: Spearman rank correlation, in [-1, 1] or NaN.
        n: patients scored.
    """

    accuracy: float
    mse_days2: float
    median_se_days2: float
    std_se_days2: float
    spearman_r: float
    n: int

    def as_row(self) -> dict[str, float]:
        """``{"Accuracy": ..., "MSE": ..., "medianSE": ..., "stdSE": ..., "SpearmanR": ...}``."""
        values = (
            self.accuracy,
            self.mse_days2,
            self.median_se_days2,
            self.std_se_days2,
            self.spearman_r,
        )
        return dict(zip(METRIC_COLUMNS, values, strict=True))

    def summary(self) -> str:
        """One line in the style of paper Table 4."""
        return (
            f"n={self.n} Accuracy={self.accuracy:.3f} MSE={self.mse_days2:.0f} "
            f"medianSE={self.median_se_days2:.0f} stdSE={self.std_se_days2:.0f} "
            f"SpearmanR={self.spearman_r:.3f}"
        )


def survival_metrics(
    predicted_days: np.ndarray,
    true_days: np.ndarray,
    short_days: float = SurvivalConfig.short_days,
    long_days: float = SurvivalConfig.long_days,
) -> SurvivalMetrics:
    """Accuracy, MSE, medianSE, stdSE and SpearmanR of predictions against truth.

    Args:
        predicted_days: float (N,) [days].
        true_days: float (N,) [days], same order.
        short_days: below this, short survivor (see :func:`survival_class`).
        long_days: above this, long survivor (see :func:`survival_class`).

    Returns:
        :class:`SurvivalMetrics`.

    Raises:
        ValueError: if the lengths differ, N is 0, or a value is not finite.

    Source: paper Table 4 (the BraTS online system's survival metrics); see the module
    docstring for the class boundaries and ``ddof``.
    """
    from scipy import stats

    pred = np.asarray(predicted_days, dtype=np.float64).ravel()
    true = np.asarray(true_days, dtype=np.float64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"{pred.size} predictions but {true.size} true values")
    if pred.size == 0:
        raise ValueError("no patient to score")
    if not (np.isfinite(pred).all() and np.isfinite(true).all()):
        raise ValueError("predicted and true days must be finite")
    se = (pred - true) ** 2
    accuracy = float(
        np.mean(
            survival_class(pred, short_days, long_days)
            == survival_class(true, short_days, long_days)
        )
    )
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        rho = math.nan  # Spearman is undefined; scipy would warn and return NaN
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            rho = float(stats.spearmanr(pred, true).statistic)
    return SurvivalMetrics(
        accuracy=accuracy,
        mse_days2=float(se.mean()),
        median_se_days2=float(np.median(se)),
        std_se_days2=float(se.std(ddof=0)),
        spearman_r=rho,
        n=int(pred.size),
    )


def evaluate_predictions(
    predictions: pd.DataFrame,
    truth: SurvivalTable,
    config: SurvivalConfig | None = None,
) -> tuple[SurvivalMetrics, pd.DataFrame]:
    """Score predictions against a training table, as the online system did.

    Patients are matched by case ID (stripped, case folded). Scored: every predicted
    patient whose truth row has a numeric, uncensored survival. Predictions without a
    truth row, and truth rows that are censored or lack survival, are not scored and are
    logged (WARNING).

    Args:
        predictions: columns ``case_id`` and ``predicted_days`` (from
            :func:`~brats_mtl.survival.io.read_predictions` or
            :func:`~brats_mtl.survival.model.predict_table`).
        truth: a table with ID and survival columns; age and resection are not used
            (read it with ``read_survival_csv(path, require=("case_id", "survival"))``
            when it has no age column).
        config: class boundaries; ``SurvivalConfig()`` if None.

    Returns:
        (metrics, per-case table) with columns ``case_id``, ``predicted_days``,
        ``true_days``, ``predicted_class``, ``true_class`` (``short``/``mid``/``long``),
        ``squared_error_days2``, in prediction order.

    Raises:
        ValueError: if ``truth`` has no survival column or no prediction can be scored
            (names the truth file).

    Source: paper Table 4; docs/design.md section 7.
    """
    config = config or SurvivalConfig()
    if not truth.has_survival:
        raise ValueError(
            f"{truth.path}: no survival column (looked for Survival, Survival_days); "
            "evaluate against a training table"
        )
    by_key = {id_key(c): i for i, c in enumerate(truth.rows["case_id"])}
    matched, unknown, unscored = [], [], []
    for cid, days in zip(predictions["case_id"], predictions["predicted_days"], strict=True):
        i = by_key.get(id_key(cid))
        if i is None:
            unknown.append(str(cid))
            continue
        row = truth.rows.iloc[i]
        if row["censored"] or math.isnan(row["survival_days"]):
            unscored.append(f"{cid} ({'censored' if row['censored'] else 'no survival'})")
            continue
        matched.append((str(cid), float(days), float(row["survival_days"])))
    if unknown:
        logger.warning(
            "%d predicted cases are not in %s and are not scored: %s",
            len(unknown),
            truth.path,
            ", ".join(unknown),
        )
    if unscored:
        logger.warning(
            "%d predicted cases have no usable truth in %s: %s",
            len(unscored),
            truth.path,
            ", ".join(unscored),
        )
    if not matched:
        raise ValueError(
            f"{truth.path}: none of the {len(predictions)} predicted case IDs has a numeric "
            "survival in this table; check that predictions and truth are the same cohort"
        )
    per_case = pd.DataFrame(matched, columns=["case_id", "predicted_days", "true_days"])
    metrics = survival_metrics(
        per_case["predicted_days"], per_case["true_days"], config.short_days, config.long_days
    )
    return metrics, _per_case_columns(per_case, config)


def _per_case_columns(per_case: pd.DataFrame, config: SurvivalConfig) -> pd.DataFrame:
    names = np.asarray(CLASS_NAMES)
    out = per_case.copy()
    out["predicted_class"] = names[
        survival_class(out["predicted_days"], config.short_days, config.long_days)
    ]
    out["true_class"] = names[survival_class(out["true_days"], config.short_days, config.long_days)]
    out["squared_error_days2"] = (out["predicted_days"] - out["true_days"]) ** 2
    return out


def kfold_assignment(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index of each of ``n`` rows: a seeded shuffle cut into ``folds`` near-equal parts.

    ``order = numpy.random.default_rng(seed).permutation(n)``; ``numpy.array_split(order,
    folds)`` gives the folds, so the first ``n % folds`` folds hold one row more (the
    sizes of scikit-learn's ``KFold``; not its row assignment).

    Args:
        n: number of rows.
        folds: number of folds, 2 <= folds <= n.
        seed: seed of the shuffle; the same seed gives the same folds.

    Returns:
        int64 (n,), values in ``[0, folds)``.

    Raises:
        ValueError: if ``folds`` is out of range.
    """
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and the number of rows ({n}), got {folds}")
    order = np.random.default_rng(seed).permutation(n)
    fold_of = np.empty(n, dtype=np.int64)
    for k, part in enumerate(np.array_split(order, folds)):
        fold_of[part] = k
    return fold_of


@dataclass(frozen=True)
class CrossValidation:
    """Result of :func:`cross_validate`.

    Attributes:
        pooled: metrics over all out-of-fold predictions together.
        per_fold: metrics of each held-out fold, in fold order.
        per_case: the per-case table of :func:`evaluate_predictions` plus ``fold`` and
            ``age_years``, in table order.
        seed: the shuffle seed.
    """

    pooled: SurvivalMetrics
    per_fold: tuple[SurvivalMetrics, ...]
    per_case: pd.DataFrame
    seed: int

    def table(self) -> pd.DataFrame:
        """One row per fold and a last row ``all`` (pooled): ``fold, n`` + metric columns."""
        rows = [{"fold": str(k), "n": m.n, **m.as_row()} for k, m in enumerate(self.per_fold)]
        rows.append({"fold": "all", "n": self.pooled.n, **self.pooled.as_row()})
        return pd.DataFrame(rows)


def cross_validate(
    table: SurvivalTable,
    config: SurvivalConfig | None = None,
    *,
    seed: int = 0,
    include_censored: bool = False,
) -> CrossValidation:
    """k-fold cross-validated metrics of the age regression on a training table.

    The usable rows (as for :func:`~brats_mtl.survival.model.fit_age_model`) are assigned
    to folds by :func:`kfold_assignment`; each fold is predicted by a model fitted on the
    other folds. Metrics are reported pooled over all out-of-fold predictions (like one
    submission of the whole training set) and per fold.

    Args:
        table: training table.
        config: class boundaries, ``gtr_only`` and the number of folds ``cv_folds``;
            ``SurvivalConfig()`` if None.
        seed: seed of the fold shuffle.
        include_censored: also use censored rows (with their follow-up days).

    Returns:
        :class:`CrossValidation`.

    Raises:
        ValueError: if the table has no survival column, or too few usable rows for the
            folds (each training part needs :data:`MIN_FIT_ROWS` rows).
    """
    config = config or SurvivalConfig()
    folds, gtr_only = config.cv_folds, config.gtr_only
    if not table.has_survival:
        raise ValueError(
            f"{table.path}: no survival column; cross-validation needs a training table"
        )
    rows = table.usable_rows(gtr_only=gtr_only, include_censored=include_censored)
    n = len(rows)
    if n < folds or n - math.ceil(n / max(folds, 1)) < MIN_FIT_ROWS:
        raise ValueError(
            f"{table.path}: {n} usable {'GTR ' if gtr_only else ''}rows are too few for "
            f"{folds} folds (each training part needs {MIN_FIT_ROWS} rows)"
        )
    fold_of = kfold_assignment(n, folds, seed)
    age = rows["age_years"].to_numpy()
    days = rows["survival_days"].to_numpy()
    predicted = np.empty(n, dtype=np.float64)
    for k in range(folds):
        held = fold_of == k
        model = fit_ols(age[~held], days[~held])
        predicted[held] = model.predict_days(age[held])
    per_case = pd.DataFrame(
        {"case_id": rows["case_id"], "predicted_days": predicted, "true_days": days}
    )
    per_case = _per_case_columns(per_case, config)
    per_case.insert(1, "fold", fold_of)
    per_case.insert(2, "age_years", age)
    per_fold = tuple(
        survival_metrics(
            predicted[fold_of == k], days[fold_of == k], config.short_days, config.long_days
        )
        for k in range(folds)
    )
    pooled = survival_metrics(predicted, days, config.short_days, config.long_days)
    logger.info("%s: %d-fold CV (seed %d): %s", table.path, folds, seed, pooled.summary())
    return CrossValidation(pooled=pooled, per_fold=per_fold, per_case=per_case, seed=seed)
