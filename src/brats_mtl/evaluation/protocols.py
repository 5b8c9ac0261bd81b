"""Scoring one case under a protocol and label scheme; the result table of any protocol.

Protocols (``brats-mtl evaluate --protocol``):

==========  ===============================================  ==============================
protocol    what                                             columns (then ``_<region>``)
==========  ===============================================  ==============================
legacy      BraTS 2017-2021 online system (CaPTk rules)      Dice, Sensitivity,
                                                             Specificity, Hausdorff95
lesionwise  BraTS 2023-2025 lesion-wise metrics              ``lesionwise.LESIONWISE_METRICS``
panoptica   BraTS 2026 evaluator ``brats-evaluation``        ``panoptica.PANOPTICA_METRICS``
==========  ===============================================  ==============================

Regions are those of the case's label scheme (``brats_mtl.tasks``): ET, WT, TC for the
three-region schemes, plus the single-label regions of gli-post and ped2024. Every table
is the online system's layout: a ``Label`` column (case ID), one row per case, then the
summary rows Mean, StdDev, Median, 25quantile, 75quantile.

Source: BraTS 2017-2020 online evaluation, BraTS 2023 lesion-wise metrics code, BraTS 2026
``brats-evaluation`` package.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brats_mtl.atomic import atomic_output
from brats_mtl.conventions import BRATS_2019, BRATS_2023, LabelConvention
from brats_mtl.evaluation.grid import NOTE_COLUMN, onto_reference_grid
from brats_mtl.tasks import (
    LabelScheme,
    check_scheme_for_case,
    check_supported_case,
    check_values,
    get_label_scheme,
    infer_label_scheme,
    lesionwise_parameters,
)

logger = logging.getLogger(__name__)

#: The protocols of ``brats-mtl evaluate --protocol``.
PROTOCOLS: tuple[str, ...] = ("legacy", "lesionwise", "panoptica")
#: Summary rows of every result table, in order (as the online systems).
SUMMARY_ROWS: tuple[str, ...] = ("Mean", "StdDev", "Median", "25quantile", "75quantile")


def protocol_columns(protocol: str, scheme: LabelScheme) -> tuple[str, ...]:
    """Metric columns of a protocol for a scheme's regions (``Label`` not included).

    Raises:
        ValueError: on an unknown protocol.
    """
    if protocol == "legacy":
        from brats_mtl.evaluation.metrics import scheme_metric_columns

        return scheme_metric_columns(scheme.region_names)
    if protocol == "lesionwise":
        from brats_mtl.evaluation.lesionwise import lesionwise_columns

        return lesionwise_columns(scheme)
    if protocol == "panoptica":
        from brats_mtl.evaluation.panoptica import panoptica_columns

        return panoptica_columns(scheme)
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def score_case(
    pred_path: str | Path | None,
    ref_path: str | Path,
    *,
    case_id: str,
    protocol: str = "lesionwise",
    labels: LabelScheme | str | None = None,
    layout_convention: LabelConvention | None = None,
    pred_convention: LabelConvention | None = None,
    task: str | None = None,
    lesions: list[dict[str, object]] | None = None,
    infer_pred_convention: bool | None = None,
) -> dict[str, str | float]:
    """One case's result row under ``protocol``, in its label scheme.

    The scheme is ``labels`` when given, else inferred from the layout, the case ID and
    the reference's values (``tasks.infer_label_scheme``). A scheme of the other era than
    the case ID's style (BraTS 2017-2021 against 2023+) and any value outside the scheme
    are refused. Predictions are read in the same scheme, unless ``pred_convention`` says
    they are written in another three-region convention.

    Args:
        pred_path: predicted label map; None scores an empty prediction.
        ref_path: reference label map.
        case_id: the ``Label`` of the row; also names the task (``BraTS-MET-...``).
        protocol: one of ``PROTOCOLS``.
        labels: the label scheme (or its name); None infers it.
        layout_convention: the convention the reference's folder layout implies
            (``data.LabelFile.label_convention``), or None.
        pred_convention: the predictions' three-region convention when it differs from
            the scheme's; None: the scheme's values.
        task: lesion-wise / panoptica task (``GLI``, ``MET``, ...); None: from the ID.
        lesions: lesionwise only: per-lesion rows are appended to it.
        infer_pred_convention: with no ``pred_convention``, read a prediction for a BraTS
            2017-2021 or 2023+ three-region reference in whichever of the two conventions
            its values fit (as ``--pred-convention auto``); default: only when ``labels``
            is None.

    Returns:
        ``{"Label": case_id, <protocol_columns>...}``; HD95 in mm on the reference's voxel
        spacing; plus ``"Note"`` (``grid.NOTE_COLUMN``), e.g. ``"prediction reoriented
        LPS -> RAS"``, when the prediction was reoriented onto the reference grid.

    Raises:
        FileNotFoundError: if a file does not exist.
        ValueError: if the scheme cannot be inferred or does not fit the case, a file
            holds values outside it, or the prediction is not on the reference's voxel
            grid up to an axis permutation or flip (``grid.onto_reference_grid``; each
            message names the file); for an unsupported task; for ``panoptica`` when the
            extra is not installed.

    Source: BraTS label tables (``brats_mtl.tasks``) and the protocols' definitions.
    """
    from brats_mtl.data import load_raw_label_map

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    ref_path = Path(ref_path)
    check_supported_case(case_id, [ref_path.name])
    ref_values, ref_affine, spacing_mm = load_raw_label_map(ref_path)
    present = present_values(ref_values)
    scheme = (
        get_label_scheme(labels)
        if labels is not None
        else infer_label_scheme(case_id, layout_convention, present)
    )
    check_scheme_for_case(scheme, case_id, ref_path)
    check_values(scheme, present, ref_path, "reference")

    note = ""
    if pred_path is None:
        pred_values = np.zeros_like(ref_values)
    else:
        pred_path = Path(pred_path)
        pred_values, pred_affine, _ = load_raw_label_map(pred_path)
        pred_values = in_scheme(
            pred_values,
            pred_path,
            scheme,
            pred_convention,
            infer=labels is None if infer_pred_convention is None else infer_pred_convention,
        )
        # the one grid rule of every protocol: same grid, or reoriented with a note
        pred_values, note = onto_reference_grid(
            pred_values, pred_affine, pred_path, ref_values.shape, ref_affine, ref_path
        )

    row: dict[str, str | float] = {"Label": case_id}
    if protocol == "legacy":
        row.update(_legacy(pred_values, ref_values, scheme, spacing_mm))
    elif protocol == "lesionwise":
        from brats_mtl.evaluation.lesionwise import evaluate_lesionwise

        parameters = lesionwise_parameters(case_id, task)
        row.update(
            evaluate_lesionwise(
                pred_values,
                ref_values,
                scheme,
                parameters,
                spacing_mm,
                case_id=case_id,
                lesions=lesions,
            )
        )
    else:
        from brats_mtl.evaluation.panoptica import evaluate_panoptica

        row.update(
            evaluate_panoptica(
                pred_values, ref_values, scheme, ref_affine, case_id=case_id, task=task
            )
        )
    if note:
        row[NOTE_COLUMN] = note
    return row


def _legacy(pred: np.ndarray, ref: np.ndarray, scheme: LabelScheme, spacing_mm) -> dict:
    from brats_mtl.evaluation.metrics import evaluate_labels, evaluate_region_labels

    if scheme.convention is not None:  # the online system's own computation, unchanged
        return evaluate_labels(
            scheme.convention.to_internal(pred), scheme.convention.to_internal(ref), spacing_mm
        )
    return evaluate_region_labels(pred, ref, dict(scheme.regions), spacing_mm)


def in_scheme(
    values: np.ndarray,
    path: Path,
    scheme: LabelScheme,
    convention: LabelConvention | None,
    *,
    infer: bool = False,
) -> np.ndarray:
    """A prediction's values in ``scheme``: checked, or converted from ``convention``.

    With ``infer`` (no scheme stated), a prediction for a BraTS 2017-2021 or 2023+
    three-region reference may be in either of these conventions, told by its values as
    ``--pred-convention auto`` always did: {0, 1, 2, 4} is BraTS 2017-2021, a 3 and no 4
    BraTS 2023+ (MSD references keep MSD predictions).
    """
    if infer and convention is None and scheme.convention in (BRATS_2019, BRATS_2023):
        present = set(present_values(values))
        if not present <= set(scheme.values):
            for candidate in (BRATS_2019, BRATS_2023):
                if present <= set(candidate.values):
                    convention = candidate
                    break
    if convention is None or convention is scheme.convention:
        check_values(scheme, present_values(values), path, "prediction")
        return values
    if scheme.convention is None:
        raise ValueError(
            f"prediction {path}: --pred-convention {convention.name} cannot be converted to "
            f"the {scheme.describe()} scheme of its reference (it has more than three "
            "tumour labels); write the predictions in that scheme's values"
        )
    try:
        internal = convention.to_internal(values)
    except ValueError as error:
        raise ValueError(f"prediction {path}: {error}") from error
    return scheme.convention.from_internal(internal)


def present_values(values: np.ndarray) -> list[int]:
    """The distinct values of an integer label map in [0, 255], ascending."""
    return np.flatnonzero(np.bincount(values.ravel(), minlength=256)).tolist()


def table_columns(rows: Sequence[dict]) -> list[str]:
    """The column order of a table of ``rows``.

    ``Label``, then every other key of the rows in order of first appearance, and
    ``Note`` (``grid.NOTE_COLUMN``) last when some row has one.
    """
    columns: dict[str, None] = {"Label": None}
    for row in rows:
        columns.update(dict.fromkeys(row))
    if NOTE_COLUMN in columns:
        del columns[NOTE_COLUMN]
        columns[NOTE_COLUMN] = None
    return list(columns)


def summary_table(per_case: pd.DataFrame, *, ddof: int = 1) -> pd.DataFrame:
    """Per-case rows, then Mean, StdDev, Median, 25quantile, 75quantile of each column.

    NaN cells (a region a case's scheme does not have, or a NaN metric) are left out of
    that column's statistics; a column with no value gives NaN. A ``Note`` column
    (``grid.NOTE_COLUMN``) is kept last, empty in the summary rows.

    Args:
        per_case: a ``Label`` column and numeric metric columns.
        ddof: delta degrees of freedom of StdDev (1: sample standard deviation).

    Returns:
        DataFrame with the columns of ``per_case``.

    Source: the BraTS online systems' result CSV (per-case rows, then summary rows).
    """
    metrics = [c for c in per_case.columns if c not in ("Label", NOTE_COLUMN)]
    values = per_case.loc[:, metrics].to_numpy(dtype=np.float64)
    stats = np.full((len(SUMMARY_ROWS), len(metrics)), np.nan)
    for j in range(len(metrics)):
        column = values[:, j][~np.isnan(values[:, j])]
        if column.size == 0:
            continue
        stats[0, j] = column.mean()
        stats[1, j] = column.std(ddof=ddof) if column.size > ddof else np.nan
        stats[2, j] = np.median(column)
        stats[3, j] = np.percentile(column, 25)
        stats[4, j] = np.percentile(column, 75)
    summary = pd.DataFrame(stats, columns=metrics)
    summary.insert(0, "Label", list(SUMMARY_ROWS))
    if NOTE_COLUMN in per_case:
        summary[NOTE_COLUMN] = ""
    return pd.concat([per_case, summary], ignore_index=True).loc[:, list(per_case.columns)]


def write_table_csv(
    table: pd.DataFrame, path: str | Path, *, overwrite: bool = False, summary: bool = True
) -> Path:
    """Write a result table (with its summary rows when ``summary``) atomically.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"results file {path} already exists; choose another path or pass --overwrite "
            "(overwrite=True) to replace it"
        )
    out = summary_table(table) if summary else table
    with atomic_output(path, overwrite=True) as tmp:
        out.to_csv(tmp, index=False)
    logger.info("wrote %d rows to %s", len(table), path)
    return path
