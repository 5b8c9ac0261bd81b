"""Training curves of one fold: each loss term and the validation Dice against steps.

Reads the fold's ``metrics.csv`` (Lightning CSV log: ``step``, ``train/loss``,
``train/dice``, ``train/l2``, ``train/kl``, ``train/ce``, ``val/dice_ET``, ``val/dice_WT``,
``val/dice_TC``, ``val/dice_mean``). matplotlib is imported when a function runs; the
figure is a bare ``Figure`` (no pyplot, no GUI backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: Loss terms plotted (name in metrics.csv -> legend label).
LOSS_CURVES = {
    "train/loss": "total L",
    "train/dice": "Dice loss",
    "train/l2": "L2 (VAE)",
    "train/kl": "KL (VAE)",
    "train/ce": "CE (ET classifier)",
}
#: Validation curves (name in metrics.csv -> legend label).
DICE_CURVES = {
    "val/dice_ET": "ET",
    "val/dice_WT": "WT",
    "val/dice_TC": "TC",
    "val/dice_mean": "mean",
}


def plot_training_curves(metrics: str | Path | pd.DataFrame, *, title: str | None = None) -> Figure:
    """Loss terms (log scale) and validation Dice per region against optimizer steps.

    Args:
        metrics: path of a fold's ``metrics.csv`` or its DataFrame.
        title: figure title; default the folder name of ``metrics``.

    Returns:
        A matplotlib Figure with two panels (losses; validation Dice in [0, 1]).

    Raises:
        FileNotFoundError: if the CSV file does not exist.
        ValueError: if it has no ``step`` column or none of the known curves.

    Source: paper, Training Procedure (loss weights 0.1 L2 + 0.1 KL + 0.1 CE + 1 Dice).
    """
    import pandas as pd
    from matplotlib.figure import Figure

    if isinstance(metrics, str | Path):
        path = Path(metrics)
        if not path.is_file():
            raise FileNotFoundError(f"metrics file {path} does not exist (train the fold first)")
        frame = pd.read_csv(path)
        title = title if title is not None else path.parent.name
    else:
        frame = metrics
    if "step" not in frame.columns:
        raise ValueError("metrics have no 'step' column; expected a Lightning CSV log")
    known = [c for c in (*LOSS_CURVES, *DICE_CURVES) if c in frame.columns]
    if not known:
        raise ValueError(f"metrics hold none of the curves {list(LOSS_CURVES) + list(DICE_CURVES)}")

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_dice = fig.subplots(1, 2, sharex=True)
    for column, label in LOSS_CURVES.items():
        if column in frame.columns:
            series = frame[["step", column]].dropna()
            series = series[series[column] > 0]
            if not series.empty:
                ax_loss.plot(series["step"], series[column], label=label, lw=1.2)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("training loss term")
    ax_loss.set_title("training losses")
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)
    for column, label in DICE_CURVES.items():
        if column in frame.columns:
            series = frame[["step", column]].dropna()
            if not series.empty:
                style = {"color": "black", "lw": 2} if column == "val/dice_mean" else {"lw": 1.2}
                ax_dice.plot(series["step"], series[column], marker="o", ms=3, label=label, **style)
    ax_dice.set_ylim(0, 1)
    ax_dice.set_xlabel("training step")
    ax_dice.set_ylabel("Dice (held-out cases)")
    ax_dice.set_title("validation Dice")
    if ax_dice.lines:
        ax_dice.legend(fontsize=8)
    else:
        ax_dice.text(
            0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax_dice.transAxes
        )
    if title:
        fig.suptitle(title)
    return fig


def save_training_curves(metrics_csv: str | Path, out_png: str | Path, *, dpi: int = 120) -> Path:
    """Plot a fold's ``metrics.csv`` and save the PNG atomically, replacing ``out_png``.

    The figure is closed once saved (:func:`~brats_mtl.figures.common.save_figure`).

    Returns:
        ``out_png``.

    Raises:
        As :func:`plot_training_curves`.
    """
    from brats_mtl.figures.common import save_figure

    return save_figure(plot_training_curves(metrics_csv), out_png, dpi=dpi, overwrite=True)
