"""Fig. 4 of the paper: survival against age of GTR patients, the fit and its 95% band.

Matplotlib is imported inside the functions (Agg backend), so importing this module is
cheap and needs no display.

Source: paper section 5.2, Fig. 4.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from brats_mtl.figures.common import pyplot as _pyplot
from brats_mtl.survival.io import SurvivalTable
from brats_mtl.survival.model import AgeSurvivalModel

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def plot_age_regression(
    model: AgeSurvivalModel,
    table: SurvivalTable,
    *,
    alpha: float = 0.05,
    show_censored: bool = True,
    show_classes: bool = True,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Patients as dots, the fitted line and the confidence band of the mean.

    Dots are the rows the model was fitted on (GTR patients with age and survival when
    ``model.gtr_only``); censored patients of the same selection are drawn as open
    triangles at their follow-up days, and the class boundaries as dotted lines.

    Args:
        model: the fitted model.
        table: the training table it was fitted on (or another one to overlay).
        alpha: 0.05 draws the 95% band of Fig. 4.
        show_censored: draw censored (``ALIVE``) patients.
        show_classes: draw the short/long boundaries (``model.short_days``, ``long_days``).
        title: axes title; default names the table and n.
        ax: axes to draw into; a new 6.4 x 5.6 inch figure if None.

    Returns:
        The matplotlib Figure (the first collection of the axes holds the dots; axes
        labelled ``Age [years]`` and ``Survival [days]``).

    Raises:
        ValueError: if the table has no survival column or no row to draw.

    Source: paper 5.2, Fig. 4.
    """
    plt = _pyplot()
    if not table.has_survival:
        raise ValueError(f"{table.path}: no survival column to plot; use a training table")
    rows = table.usable_rows(gtr_only=model.gtr_only, include_censored=model.include_censored)
    if rows.empty:
        raise ValueError(
            f"{table.path}: no {'GTR ' if model.gtr_only else ''}row with age and survival to plot"
        )
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 5.6))
    else:
        fig = ax.figure
    who = "GTR patients" if model.gtr_only else "patients"
    ax.scatter(
        rows["age_years"],
        rows["survival_days"],
        s=16,
        color="tab:blue",
        alpha=0.8,
        label=f"{who} (n = {len(rows)})",
        zorder=3,
    )
    ages = [rows["age_years"].min(), rows["age_years"].max()]
    if show_censored and not model.include_censored:
        censored = table.usable_rows(gtr_only=model.gtr_only, include_censored=True)
        censored = censored.loc[censored["censored"]]
        if len(censored):
            ax.scatter(
                censored["age_years"],
                censored["survival_days"],
                s=28,
                marker="^",
                facecolors="none",
                edgecolors="tab:gray",
                zorder=3,
                label=f"alive at follow-up, not fitted (n = {len(censored)})",
            )
            ages += [censored["age_years"].min(), censored["age_years"].max()]
    lo, hi = min(ages + [model.age_min_years]), max(ages + [model.age_max_years])
    pad = 0.03 * (hi - lo)
    x = np.linspace(lo - pad, hi + pad, 200)
    lower, upper = model.mean_confidence_band(x, alpha)
    ax.fill_between(
        x,
        lower,
        upper,
        color="tab:orange",
        alpha=0.25,
        linewidth=0,
        label=f"{100 * (1 - alpha):g}% confidence band of the mean",
    )
    ax.plot(
        x,
        model.predict_days(x),
        color="tab:orange",
        linewidth=2,
        label=f"fit: {model.intercept_days:.0f} {'-' if model.slope_days_per_year < 0 else '+'} "
        f"{abs(model.slope_days_per_year):.2f} x age",
    )
    if show_classes:
        for days in (model.short_days, model.long_days):
            ax.axhline(days, color="gray", linestyle=":", linewidth=1)
        ax.plot(
            [],
            [],
            color="gray",
            linestyle=":",
            linewidth=1,
            label=f"class boundaries ({model.short_days:g}, {model.long_days:g} days)",
        )
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(bottom=min(0.0, float(np.min(lower))))
    ax.set_xlabel("Age [years]")
    ax.set_ylabel("Survival [days]")
    ax.set_title(
        title if title is not None else f"Survival vs age, {table.path.name} (n = {model.n})",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    # below the axes: inside, it would hide patients (the long survivors top right)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    fig.tight_layout()
    return fig
