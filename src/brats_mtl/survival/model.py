"""Age-only linear regression of survival, fitted on GTR patients (paper 4.3, Fig. 4).

``survival_days = intercept_days + slope_days_per_year * age_years``, ordinary least
squares (statsmodels ``OLS``). The model is saved as JSON with what is needed to redraw
the 95% confidence band of the mean and to trace the fit back to its input: the
coefficients' covariance, the residual std and degrees of freedom, the source file's
SHA-256 and the fitted case IDs.

Source: paper sections 4.3 and 5.2, Fig. 4; docs/design.md section 7.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from brats_mtl.atomic import write_text_atomic
from brats_mtl.config import SurvivalConfig
from brats_mtl.survival.io import COLUMN_NAMES, SurvivalTable

logger = logging.getLogger(__name__)

MODEL_FORMAT = "brats-mtl/survival-age-ols"
MODEL_VERSION = 1
#: Fewest rows a fit accepts: two coefficients plus one residual degree of freedom.
MIN_FIT_ROWS = 3


@dataclass(frozen=True)
class AgeSurvivalModel:
    """A fitted age-only survival regression.

    Attributes:
        intercept_days: predicted survival at age 0 [days].
        slope_days_per_year: change of predicted survival per year of age [days/year].
        n: number of fitted patients.
        df_resid: residual degrees of freedom, ``n - 2``.
        residual_std_days: sqrt of the residual mean square, ``sqrt(SSR / df_resid)`` [days].
        r_squared: coefficient of determination of the fit.
        cov_params: 2x2 covariance of (intercept, slope), ``residual_std^2 (X^T X)^-1``
            [days^2, days^2/year, days^2/year^2].
        age_mean_years, age_sxx_years2: mean of the fitted ages and ``sum((age - mean)^2)``;
            with ``residual_std_days`` and ``df_resid`` they give the same band as
            ``cov_params`` (closed form).
        age_min_years, age_max_years: range of the fitted ages.
        gtr_only: fitted on GTR rows only (paper 4.3).
        include_censored: censored (``ALIVE``) rows were fitted with their follow-up days.
        n_censored_excluded: censored rows left out of the fit.
        short_days, long_days: survival class boundaries in force when fitted (docs/design.md section 7).
        source_path, source_sha256: the table fitted (empty for fits on bare arrays).
        case_ids: IDs of the fitted patients, in table order.
    """

    intercept_days: float
    slope_days_per_year: float
    n: int
    df_resid: int
    residual_std_days: float
    r_squared: float
    cov_params: tuple[tuple[float, float], tuple[float, float]]
    age_mean_years: float
    age_sxx_years2: float
    age_min_years: float
    age_max_years: float
    gtr_only: bool = True
    include_censored: bool = False
    n_censored_excluded: int = 0
    short_days: float = SurvivalConfig.short_days
    long_days: float = SurvivalConfig.long_days
    source_path: str = ""
    source_sha256: str = ""
    case_ids: tuple[str, ...] = field(default=(), repr=False)

    def predict_days(self, age_years: np.ndarray) -> np.ndarray:
        """Predicted survival for the given ages.

        Args:
            age_years: float array of any shape [years].

        Returns:
            float64 array of the same shape [days]. Not clipped: very old ages can give
            negative days, as the linear model says.
        """
        age = np.asarray(age_years, dtype=np.float64)
        return self.intercept_days + self.slope_days_per_year * age

    def mean_confidence_band(
        self, age_years: np.ndarray, alpha: float = 0.05
    ) -> tuple[np.ndarray, np.ndarray]:
        """Confidence band of the regression mean (not of single patients).

        ``fit(x) -/+ t_{1-alpha/2, df_resid} * sqrt([1, x] C [1, x]^T)`` with C =
        :attr:`cov_params`; equal to statsmodels
        ``get_prediction(...).conf_int(alpha)`` (``mean_ci_lower/upper``).

        Args:
            age_years: float array of any shape [years].
            alpha: 0.05 for the 95% band of Fig. 4.

        Returns:
            (lower, upper), float64 arrays shaped like ``age_years`` [days].

        Raises:
            ValueError: if ``alpha`` is not in (0, 1).

        Source: paper Fig. 4 (95% confidence interval of the fit).
        """
        from scipy import stats

        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        age = np.asarray(age_years, dtype=np.float64)
        cov = np.asarray(self.cov_params, dtype=np.float64)
        var = cov[0, 0] + 2.0 * cov[0, 1] * age + cov[1, 1] * age**2
        half = stats.t.ppf(1.0 - alpha / 2.0, self.df_resid) * np.sqrt(np.maximum(var, 0.0))
        mean = self.predict_days(age)
        return mean - half, mean + half

    def equation(self) -> str:
        """Readable form, e.g. ``survival_days = 1262.5 - 13.18 * age_years``."""
        sign = "-" if self.slope_days_per_year < 0 else "+"
        return (
            f"survival_days = {self.intercept_days:.1f} {sign} "
            f"{abs(self.slope_days_per_year):.2f} * age_years"
        )

    def to_dict(self) -> dict:
        """JSON-ready dict (see :func:`save_model`)."""
        data = asdict(self)
        data["cov_params"] = [list(r) for r in self.cov_params]
        data["case_ids"] = list(self.case_ids)
        data["n_case_ids"] = len(self.case_ids)
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict, where: str = "model") -> AgeSurvivalModel:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: if the format tag is wrong or a field is missing or malformed
                (names ``where``).
        """
        if data.get("format") != MODEL_FORMAT:
            raise ValueError(
                f"{where}: not a survival model (format {data.get('format')!r}, expected "
                f"{MODEL_FORMAT!r}); write one with `brats-mtl survival fit`"
            )
        names = [f.name for f in fields(cls)]
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [f for f in required if f not in data]
        if missing:
            raise ValueError(f"{where}: survival model lacks {', '.join(missing)}")
        try:
            kwargs = {f: data[f] for f in names if f in data}
            cov = np.asarray(kwargs["cov_params"], dtype=np.float64)
            if cov.shape != (2, 2):
                raise ValueError(f"cov_params must be 2x2, got shape {cov.shape}")
            kwargs["cov_params"] = tuple(tuple(float(v) for v in r) for r in cov)
            kwargs["case_ids"] = tuple(str(c) for c in kwargs.get("case_ids", ()))
            for key in ("n", "df_resid", "n_censored_excluded"):
                if key in kwargs:
                    kwargs[key] = int(kwargs[key])
            model = cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: malformed survival model ({err})") from None
        return model


def fit_ols(age_years: np.ndarray, survival_days: np.ndarray) -> AgeSurvivalModel:
    """Ordinary least squares of survival on age, for bare arrays.

    Args:
        age_years: float (N,) [years].
        survival_days: float (N,) [days], same order.

    Returns:
        The model, without provenance (``source_*`` empty, ``case_ids`` empty).

    Raises:
        ValueError: if the arrays differ in length, hold non-finite values, have fewer
            than :data:`MIN_FIT_ROWS` rows, or all ages are equal.

    Source: paper 4.3 (linear regression on age); statsmodels ``OLS``.
    """
    import statsmodels.api as sm

    age = np.asarray(age_years, dtype=np.float64).ravel()
    days = np.asarray(survival_days, dtype=np.float64).ravel()
    if age.shape != days.shape:
        raise ValueError(f"age ({age.size}) and survival ({days.size}) lengths differ")
    if not (np.isfinite(age).all() and np.isfinite(days).all()):
        raise ValueError("age and survival must be finite; drop missing rows first")
    if age.size < MIN_FIT_ROWS:
        raise ValueError(f"a fit needs at least {MIN_FIT_ROWS} rows, got {age.size}")
    if np.ptp(age) == 0:
        raise ValueError(f"all {age.size} fitted ages equal {age[0]:g}; the slope is undefined")
    result = sm.OLS(days, sm.add_constant(age, has_constant="add")).fit()
    intercept, slope = (float(v) for v in result.params)
    cov = result.cov_params()
    return AgeSurvivalModel(
        intercept_days=intercept,
        slope_days_per_year=slope,
        n=int(age.size),
        df_resid=int(round(result.df_resid)),
        residual_std_days=float(math.sqrt(result.mse_resid)),
        r_squared=float(result.rsquared),
        cov_params=((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
        age_mean_years=float(age.mean()),
        age_sxx_years2=float(((age - age.mean()) ** 2).sum()),
        age_min_years=float(age.min()),
        age_max_years=float(age.max()),
    )


def fit_age_model(
    table: SurvivalTable,
    config: SurvivalConfig | None = None,
    *,
    include_censored: bool = False,
) -> AgeSurvivalModel:
    """Fit survival on age over a table's GTR patients with known age and survival.

    Args:
        table: a training table from :func:`~brats_mtl.survival.io.read_survival_csv`.
        config: class boundaries and ``gtr_only`` (False fits every resection status);
            ``SurvivalConfig()`` if None.
        include_censored: fit censored rows with their follow-up days (off: those
            patients outlived the number; they are left out and counted).

    Returns:
        The model with provenance: ``source_path``, ``source_sha256``, ``case_ids``.

    Raises:
        ValueError: if the table has no survival or no age column, or fewer than
            :data:`MIN_FIT_ROWS` usable rows (the message gives the counts and the fix).

    Source: paper 4.3 ("linear regression on patient-age, based on GTR patients only").
    """
    config = config or SurvivalConfig()
    gtr_only = config.gtr_only
    if not table.has_survival:
        raise ValueError(
            f"{table.path}: no survival column (looked for Survival, Survival_days); "
            "a fit needs a training table, not a validation table"
        )
    _require_age(table, "a fit")
    rows = table.usable_rows(gtr_only=gtr_only, include_censored=include_censored)
    censored = table.usable_rows(gtr_only=gtr_only, include_censored=True)
    n_censored = 0 if include_censored else len(censored) - len(rows)
    if len(rows) < MIN_FIT_ROWS:
        r = table.rows
        n_gtr = int((r["resection"] == "GTR").sum())
        hint = (
            " Use all resection statuses (--all-resections, survival.gtr_only=false) if the table "
            "has no GTR rows."
            if gtr_only
            else ""
        )
        raise ValueError(
            f"{table.path}: {len(rows)} usable rows, a fit needs at least {MIN_FIT_ROWS}: "
            f"rows need {'resection GTR, ' if gtr_only else ''}a numeric age and a numeric "
            f"survival ({len(r)} rows, {n_gtr} GTR, {int(r['age_years'].notna().sum())} "
            f"with age, {int(r['survival_days'].notna().sum())} with survival, "
            f"{int(r['censored'].sum())} censored).{hint}"
        )
    if n_censored:
        left_out = censored.loc[censored["censored"]]
        logger.info(
            "%s: %d censored %s kept out of the fit: %s",
            table.path,
            n_censored,
            "row" if n_censored == 1 else "rows",
            ", ".join(
                f"line {ln} {cid} (alive at {d:g} days)"
                for cid, d, ln in zip(
                    left_out["case_id"], left_out["survival_days"], left_out["line"], strict=True
                )
            ),
        )
    bare = fit_ols(rows["age_years"].to_numpy(), rows["survival_days"].to_numpy())
    model = replace(
        bare,
        gtr_only=gtr_only,
        include_censored=include_censored,
        n_censored_excluded=n_censored,
        short_days=float(config.short_days),
        long_days=float(config.long_days),
        source_path=str(table.path.resolve()),
        source_sha256=table.sha256,
        case_ids=tuple(str(c) for c in rows["case_id"]),
    )
    logger.info("%s: %s (n = %d)", table.path, model.equation(), model.n)
    return model


def _require_age(table: SurvivalTable, what: str) -> None:
    """Raise ValueError naming the file when ``table`` has no age column."""
    if not table.has_age:
        raise ValueError(
            f"{table.path}: no age column (looked for {', '.join(COLUMN_NAMES['age'])}); "
            f"{what} needs each patient's age: add an Age column"
        )


def save_model(model: AgeSurvivalModel, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` as indented JSON, atomically.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    text = json.dumps(model.to_dict(), indent=2) + "\n"
    return write_text_atomic(path, text, overwrite=overwrite)


def load_model(path: str | Path) -> AgeSurvivalModel:
    """Read a model written by :func:`save_model`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not JSON or not a survival model (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"survival model {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON file ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return AgeSurvivalModel.from_dict(data, where=str(path))


def predict_table(
    model: AgeSurvivalModel, table: SurvivalTable, *, all_rows: bool = False
) -> pd.DataFrame:
    """Predict survival for a table's patients (validation or training format).

    By default only GTR rows are predicted, as the BraTS 2019/2020 challenge scored only
    GTR patients. Rows without an age cannot be predicted; they are skipped (logged at INFO:
    reading the table already warned about them).

    Args:
        model: a fitted model.
        table: any survival table with ID and age (resection needed unless ``all_rows``).
        all_rows: predict every row with an age, whatever its resection status.

    Returns:
        DataFrame with ``case_id`` (str), ``age_years``, ``resection``,
        ``predicted_days`` (float64), in table order.

    Raises:
        ValueError: if the table has no age column, or ``all_rows`` is False and the
            table has no resection column or no GTR row with an age (the message names the file and the fix).

    Source: BraTS 2019 evaluation page (predictions expected for GTR patients only).
    """
    _require_age(table, "a prediction")
    rows = table.rows
    if not all_rows:
        if not table.has_resection:
            raise ValueError(
                f"{table.path}: no resection column (looked for ResectionStatus, "
                "Extent_of_Resection), so GTR rows cannot be chosen; predict all rows "
                "(--all-rows) instead"
            )
        rows = rows.loc[rows["resection"] == "GTR"]
    no_age = rows.loc[rows["age_years"].isna()]
    if len(no_age):
        # INFO: read_survival_csv already warned once about every row without age
        logger.info(
            "%s: %d rows without age not predicted: %s",
            table.path,
            len(no_age),
            ", ".join(
                f"line {ln} {cid}"
                for cid, ln in zip(no_age["case_id"], no_age["line"], strict=True)
            ),
        )
    rows = rows.loc[rows["age_years"].notna()]
    if rows.empty:
        raise ValueError(
            f"{table.path}: no {'GTR ' if not all_rows else ''}row with an age to predict"
            + ("; predict all resection statuses with --all-rows" if not all_rows else "")
        )
    out = rows[["case_id", "age_years", "resection"]].reset_index(drop=True)
    out["predicted_days"] = model.predict_days(out["age_years"].to_numpy())
    negative = int((out["predicted_days"] < 0).sum())
    if negative:
        logger.warning(
            "%s: %d predictions are negative (ages above %.1f years)",
            table.path,
            negative,
            -model.intercept_days / model.slope_days_per_year,
        )
    return out
