"""Per-case and summary tables of the BraTS 2017-2020 online evaluation system.

The online system returned one CSV: a header ``Label, Dice_ET, Dice_WT, Dice_TC,
Sensitivity_ET, ..., Hausdorff95_TC``, one row per case (``Label`` = case ID), then five
summary rows ``Mean``, ``StdDev``, ``Median``, ``25quantile``, ``75quantile``. This module
builds the same table from a folder of predictions and a folder of references.

Source: docs/design.md section 6; paper Table 3.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from brats_mtl.atomic import atomic_output
from brats_mtl.conventions import (
    BRATS_2019,
    BRATS_2023,
    LABEL_CONVENTIONS,
    MSD,
    UNCERTAINTY_MAP_WORDS,
    LabelConvention,
    get_label_convention,
)
from brats_mtl.evaluation.grid import NOTE_COLUMN, onto_reference_grid
from brats_mtl.evaluation.metrics import METRIC_COLUMNS, evaluate_labels

logger = logging.getLogger(__name__)

#: Summary rows of the online system, in its order.
SUMMARY_ROWS: tuple[str, ...] = ("Mean", "StdDev", "Median", "25quantile", "75quantile")
#: Columns of the result CSV: the case ID, then ``METRIC_COLUMNS``.
RESULT_COLUMNS: tuple[str, ...] = ("Label", *METRIC_COLUMNS)

_NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
#: ``<ID>_unc_whole.nii.gz`` and its siblings: uncertainty maps, not label maps.
_UNCERTAINTY_MAP_RE = re.compile(
    r"_unc_(" + "|".join(UNCERTAINTY_MAP_WORDS.values()) + r")\.nii(\.gz)?$"
)

#: Conventions a label file without a stated convention is read in (inferred from values).
INFERRED_CONVENTIONS: tuple[LabelConvention, ...] = (BRATS_2019, BRATS_2023)
_CONVENTION_ORIGIN: dict[str, str] = {
    "brats2019": "BraTS 2017-2021",
    "brats2023": "BraTS 2023+",
    "msd": "MSD Task01",
}


def evaluate_case(
    pred_path: str | Path | None,
    ref_path: str | Path,
    *,
    case_id: str | None = None,
    ref_convention: LabelConvention | str | None = None,
    pred_convention: LabelConvention | str | None = None,
) -> dict[str, str | float]:
    """Evaluate one predicted label file against its reference.

    The two files must lie on one voxel grid (shape and affine equal within
    ``brats_mtl.data.io.AFFINE_TOLERANCE``). A prediction on the same grid stored under
    another axis order or direction (e.g. the reference saved in RAS through
    ``nibabel.as_closest_canonical``, the prediction in the BraTS files' LPS) is reoriented
    onto the reference grid with ``nibabel.orientations``, with a warning and a ``Note``;
    any other difference is refused, never scored.

    Args:
        pred_path: predicted label map (NIfTI); None scores an empty prediction (all
            background), as the online system did for a case without a prediction.
        ref_path: reference label map (NIfTI).
        case_id: value of the ``Label`` column; default: the reference file name without
            its suffix.
        ref_convention: label convention of the reference (a ``LabelConvention`` or its
            name); None infers it from the values ({0, 1, 2, 4}: BraTS 2017-2021; a 3 and
            no 4: BraTS 2023+).
        pred_convention: label convention of the prediction, as ``ref_convention``.

    Returns:
        ``{"Label": case_id, "Dice_ET": ..., ..., "Hausdorff95_TC": ...}`` (HD95 in mm, on
        the reference's voxel spacing), plus ``"Note"`` (:data:`NOTE_COLUMN`), e.g.
        ``"prediction reoriented LPS -> RAS"``, when the prediction was reoriented.

    Raises:
        ValueError: if the two label maps lie on different grids (the message names both
            files, their shapes, orientations (``nibabel.aff2axcodes``), origins and
            spacings, and what differs), or a file holds values outside its convention
            (see ``read_label_map``) or is damaged.
        FileNotFoundError: if a file does not exist.

    Source: BraTS label maps are submitted on the grid of the provided scans; the
    reorientation is ``nibabel.orientations`` (``io_orientation``, ``ornt_transform``,
    ``apply_orientation``, ``inv_ornt_aff``); metrics as paper Table 3.
    """
    row = _score_case(pred_path, ref_path, case_id, ref_convention, pred_convention)
    if row.get(NOTE_COLUMN):
        logger.warning(
            "%s: %s onto the grid of reference %s", pred_path, row[NOTE_COLUMN], ref_path
        )
    return row


def _score_case(
    pred_path: str | Path | None,
    ref_path: str | Path,
    case_id: str | None,
    ref_convention: LabelConvention | str | None,
    pred_convention: LabelConvention | str | None,
) -> dict[str, str | float]:
    """``evaluate_case`` without its log line (it also runs in worker processes)."""
    ref_path = Path(ref_path)
    if case_id is None:
        case_id = _strip_nifti_suffix(ref_path.name)
    ref_labels, ref_affine, ref_spacing_mm = _read_label_file(
        ref_path, _convention(ref_convention), "reference"
    )
    note = ""
    if pred_path is None:
        pred_labels = np.zeros_like(ref_labels)
    else:
        pred_path = Path(pred_path)
        pred_labels, pred_affine, _ = _read_label_file(
            pred_path, _convention(pred_convention), "prediction"
        )
        pred_labels, note = onto_reference_grid(
            pred_labels, pred_affine, pred_path, ref_labels.shape, ref_affine, ref_path
        )
    row: dict[str, str | float] = {"Label": case_id}
    row.update(evaluate_labels(pred_labels, ref_labels, ref_spacing_mm))
    if note:
        row[NOTE_COLUMN] = note
    return row


def read_label_map(
    path: str | Path,
    convention: LabelConvention | None = None,
    *,
    role: str = "label file",
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a label file as internal labels: ``(uint8 (X, Y, Z) in {0, 1, 2, 4}, spacing_mm)``.

    The one place evaluation reads files; it defers to ``brats_mtl.data.load_label_map``.

    Args:
        path: a 3-D NIfTI label map.
        convention: its label convention; None infers BraTS 2017-2021 or BraTS 2023+ from
            the values (``INFERRED_CONVENTIONS``).
        role: what the file is, for messages: ``"prediction"``, ``"reference"`` or any
            other word. Only for a prediction does a message suggest ``--pred-convention``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a 3-D label map, or holds values outside the
            convention(s) in play. That message names the file, the offending values and
            the values each convention in play allows; for a prediction whose values all
            fit another known convention it names that convention and the option to pass.
    """
    labels, _affine, spacing_mm = _read_label_file(Path(path), convention, role)
    return labels, spacing_mm


def _read_label_file(
    path: Path, convention: LabelConvention | None, role: str
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """``read_label_map`` with the affine: ``(labels, float64 (4, 4) affine, spacing_mm)``."""
    from brats_mtl.data import CaseDataError, load_label_map

    if not path.is_file():
        raise FileNotFoundError(f"label file {path} does not exist")
    try:
        labels, affine, spacing_mm = load_label_map(path, convention)
    except CaseDataError as error:
        message = _label_value_message(path, convention, role)
        if message is None:  # not a value problem (shape, dtype, damaged file): as raised
            raise
        raise CaseDataError(message) from error
    return labels, affine, (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]))


def _label_value_message(path: Path, convention: LabelConvention | None, role: str) -> str | None:
    """The message for a label file whose values fit no convention in play, else None.

    Runs only after ``load_label_map`` failed, so the file is read a second time here
    rather than slowing down every good file.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        if len(img.shape) < 3 or any(s != 1 for s in img.shape[3:]):
            return None
        values = np.unique(np.asarray(img.dataobj))
    except Exception:  # noqa: BLE001 - any read problem keeps the loader's own message
        return None
    if values.dtype.kind not in "iubf" or not np.isfinite(values).all():
        return None
    if not np.array_equal(values, np.round(values)) or values.min() < 0:
        return None
    present = {int(v) for v in values}
    in_play = (convention,) if convention is not None else INFERRED_CONVENTIONS
    if any(present <= set(c.values) for c in in_play):
        return None
    allowed = set().union(*(c.values for c in in_play))
    offending = sorted(present - allowed)
    if offending:
        nobody = (
            "its convention does not allow"
            if len(in_play) == 1
            else ("no inferred convention allows")
        )
        what = f"label values {_short_list(offending)} that {nobody}"
    else:  # each value fits some convention, but no one convention holds them all
        shared = set.intersection(*(set(c.values) for c in in_play))
        what = f"label values {sorted(present - shared)} together, which no single convention holds"
    sets = ", ".join(
        f"{c.name} ({_CONVENTION_ORIGIN.get(c.name, c.name)}) allows {sorted(c.values)}"
        for c in in_play
    )
    message = f"{role} {path} holds {what} (values found: {_short_list(sorted(present))}); {sets}"
    others = [
        c for c in LABEL_CONVENTIONS.values() if c not in in_play and present <= set(c.values)
    ]
    if role == "prediction" and others:
        names = " or ".join(c.name for c in others)
        message += (
            f". Its values fit the {names} convention: if it was written in that convention, "
            f"pass --pred-convention {others[0].name} (pred_convention={others[0].name!r})"
        )
    elif role == "reference" and others:
        message += (
            ". A reference's convention follows its folder layout (BraTS 2023+ names read "
            "as brats2023, MSD imagesTr/labelsTr as msd); its values fit the "
            f"{' or '.join(c.name for c in others)} convention: fix the layout, or pass "
            f"--ref-convention {others[0].name}"
        )
    else:
        message += ". Each voxel must hold one of these values: fix or re-export the file"
    return message


def _short_list(values: list[int], limit: int = 12) -> str:
    """``[1, 2, 3]``, or the first ``limit`` values and a count for long lists."""
    if len(values) <= limit:
        return str(values)
    return f"[{', '.join(map(str, values[:limit]))}, ... ({len(values)} values)]"


def summary_rows(
    per_case: pd.DataFrame, *, ddof: int = 1, columns: Sequence[str] = METRIC_COLUMNS
) -> pd.DataFrame:
    """The online system's summary rows over cases: Mean, StdDev, Median, 25/75 quantile.

    Args:
        per_case: one row per case with the ``columns`` (other columns, such as
            ``Label``, are ignored).
        ddof: delta degrees of freedom of StdDev. No public description of the online
            system says which it used; the default 1 is the sample standard deviation (as
            pandas' ``std`` and R's ``sd``); pass 0 for the population one.
        columns: the metric columns summarised; default ``METRIC_COLUMNS``.

    Returns:
        DataFrame of 5 rows with columns ``Label`` and ``columns`` (``RESULT_COLUMNS`` by
        default); ``Label`` holds the row names of ``SUMMARY_ROWS``. Quantiles and median
        use linear interpolation (``numpy.percentile`` default). NaN where there are no
        cases.

    Source: BraTS 2017-2020 online evaluation output (docs/design.md section 6).
    """
    columns = list(columns)
    values = per_case.loc[:, columns].to_numpy(dtype=np.float64)
    if values.shape[0] == 0:
        stats = np.full((len(SUMMARY_ROWS), len(columns)), np.nan)
    else:
        std = (
            np.std(values, axis=0, ddof=ddof)
            if values.shape[0] > ddof
            else np.full(values.shape[1], np.nan)
        )
        stats = np.vstack(
            [
                np.mean(values, axis=0),
                std,
                np.median(values, axis=0),
                np.percentile(values, 25, axis=0),
                np.percentile(values, 75, axis=0),
            ]
        )
    table = pd.DataFrame(stats, columns=columns)
    table.insert(0, "Label", list(SUMMARY_ROWS))
    return table


def results_table(per_case: pd.DataFrame, *, ddof: int = 1) -> pd.DataFrame:
    """Per-case rows followed by the five summary rows, columns ``RESULT_COLUMNS``.

    A ``Note`` column (:data:`NOTE_COLUMN`) of ``per_case`` is kept last; it is empty in
    the summary rows.

    Args:
        per_case: as returned by ``evaluate_folders``.
        ddof: see ``summary_rows``.

    Raises:
        ValueError: if a column of ``RESULT_COLUMNS`` is missing.
    """
    missing = [c for c in RESULT_COLUMNS if c not in per_case.columns]
    if missing:
        raise ValueError(f"per-case table lacks the columns {missing}")
    columns = list(RESULT_COLUMNS) + ([NOTE_COLUMN] if NOTE_COLUMN in per_case else [])
    cases = per_case.loc[:, columns]
    return pd.concat([cases, summary_rows(per_case, ddof=ddof)], ignore_index=True)


def write_results_csv(
    per_case: pd.DataFrame, path: str | Path, *, overwrite: bool = False, ddof: int = 1
) -> Path:
    """Write the online system's CSV (per-case rows, then summary rows) atomically.

    Args:
        per_case: as returned by ``evaluate_folders``.
        path: output ``.csv`` file; its folder is created if needed.
        overwrite: replace an existing file.
        ddof: see ``summary_rows``.

    Returns:
        The path written.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"results file {path} already exists; choose another path or pass --overwrite "
            "(overwrite=True) to replace it"
        )
    table = results_table(per_case, ddof=ddof)
    with atomic_output(path, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    logger.info("wrote %d cases and %d summary rows to %s", len(per_case), len(SUMMARY_ROWS), path)
    return path


def find_predictions(pred_dir: str | Path) -> dict[str, Path]:
    """Predicted label files of a folder, by case ID.

    Either ``<case ID>.nii.gz`` / ``<case ID>.nii`` files directly in ``pred_dir`` (the
    online system's submission format, and what ``brats-mtl predict`` writes), or, when the
    folder holds no such file, a case layout read by ``brats_mtl.data.discover_cases``
    whose segmentation files are the predictions. QU-BraTS uncertainty maps beside the
    label maps (``<ID>_unc_whole.nii.gz``, ``_unc_core``, ``_unc_enhance``) are not label
    maps and are left out.

    Args:
        pred_dir: folder of predictions.

    Returns:
        ``{case_id: path}``.

    Raises:
        FileNotFoundError: if ``pred_dir`` is not a folder.
        ValueError: if a case ID has both a ``.nii`` and a ``.nii.gz`` file, or the folder
            holds no prediction.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {pred_dir} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(pred_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if not path.name.endswith(_NIFTI_SUFFIXES) or _UNCERTAINTY_MAP_RE.search(path.name):
            continue  # QU-BraTS uncertainty maps lie beside the label maps
        case_id = _strip_nifti_suffix(path.name)
        if case_id in found:
            raise ValueError(
                f"prediction folder {pred_dir} holds both {found[case_id].name} and "
                f"{path.name} for case {case_id}; keep one of them"
            )
        found[case_id] = path
    if found:
        return found
    from brats_mtl.data import discover_cases

    try:
        cases = discover_cases(pred_dir)
    except (FileNotFoundError, ValueError) as error:
        # the case-layout detail only helps when the folder holds case folders
        has_folders = any(p.is_dir() for p in Path(pred_dir).iterdir())
        raise ValueError(
            f"prediction folder {pred_dir} holds no label map: expected <case ID>.nii.gz "
            "(or .nii) files, as `brats-mtl predict` writes them, or case folders with "
            "segmentation files" + (f" ({error})" if has_folders else "")
        ) from error
    found = {case.case_id: case.seg for case in cases if case.seg is not None}
    if not found:
        raise ValueError(
            f"prediction folder {pred_dir} holds no <case ID>.nii.gz / .nii file and its "
            "cases have no segmentation file"
        )
    return found


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    *,
    workers: int = 1,
    missing_as_empty: bool = False,
    pred_convention: LabelConvention | str | None = None,
    ref_convention: LabelConvention | str | None = None,
    protocol: str = "legacy",
    labels: str | None = None,
    task: str | None = None,
    lesion_rows: list[dict] | None = None,
    failed: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Evaluate every labeled reference case that has a prediction.

    Each case is scored on its reference's grid (see ``evaluate_case``: a prediction on
    the same grid under another axis order is reoriented, with a warning and a ``Note``;
    any other geometry is refused). A case that cannot be scored (an unreadable or
    truncated file, label values outside the convention, another grid) does not stop the
    others.

    Args:
        pred_dir: predictions, see ``find_predictions``.
        ref_dir: reference label maps, found by case ID with
            ``brats_mtl.data.discovery.discover_label_maps``: case folders with or
            without their images (``<ID>/<ID>_seg.nii.gz``, BraTS 2017-2023 layouts),
            flat folders of ``<ID>_seg.nii.gz`` or ``<ID>.nii.gz`` label files, MSD
            ``labelsTr``. Image files are never needed nor read.
        workers: processes evaluating cases in parallel (1: in this process).
        missing_as_empty: score a reference case without prediction as an empty prediction
            (Dice 0 and HD95 373.128664 where the reference region is non-empty), as the online
            system effectively did. Default: report and exclude it.
        pred_convention: label convention of the predictions; None infers it per file
            ({0, 1, 2, 4}: BraTS 2017-2021, a 3 and no 4: BraTS 2023+), except for an MSD
            reference cohort, whose predictions are read as MSD (the package writes
            predictions in the input's convention, and MSD's {0, 1, 2, 3} cannot be told
            from BraTS 2023 by its values).
        ref_convention: label convention of every reference; None: from the layout
            (BraTS 2017-2021 or 2023+ case folders by their image names, MSD for
            ``labelsTr``/``labelsTs``), else inferred from the values per file.
        protocol: ``"legacy"`` (BraTS 2017-2021 online system), ``"lesionwise"`` (BraTS
            2023-2025) or ``"panoptica"`` (BraTS 2026 ``brats-evaluation``); see
            ``evaluation.protocols``.
        labels: the label scheme of every reference (``brats_mtl.tasks.LABEL_SCHEMES``);
            None: per case from the layout, ID and values (``tasks.infer_label_scheme``).
        task: lesion-wise / panoptica task (``GLI``, ``MET``, ...); None: from the IDs.
        lesion_rows: lesionwise only: when a list, the per-lesion rows
            (``lesionwise.LESION_COLUMNS``) of every case are appended to it.
        failed: where cases that cannot be scored go: a dict receives case ID -> error
            message (naming the file) and the others are returned, as ``brats-mtl
            evaluate`` does; None (default): after trying every case, raise ValueError
            listing each such case and its error.

    Returns:
        ``(per_case, missing)``: ``per_case`` has columns ``RESULT_COLUMNS`` (those of
        ``protocols.table_columns`` for cases scored by label scheme: any protocol but
        legacy, a stated ``labels``, BraTS 2023+ references), and :data:`NOTE_COLUMN`
        last when some prediction was reoriented; one row per
        scored case sorted by case ID; ``missing["predictions"]`` lists reference cases
        without prediction (scored as empty when ``missing_as_empty``, else excluded),
        ``missing["references"]`` lists predictions without a labeled reference case
        (never scored). Both are also logged as warnings.

    Raises:
        FileNotFoundError: if a folder does not exist.
        ValueError: if a folder holds no label map, a case has two reference label maps,
            or no prediction matches a reference case; with ``failed=None``, if some case
            cannot be scored (lists every such case).

    Source: docs/design.md section 6.
    """
    from brats_mtl.data.discovery import discover_label_maps

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    pred_convention = _convention(pred_convention)
    ref_convention = _convention(ref_convention)
    references = discover_label_maps(ref_dir)
    predictions = find_predictions(pred_dir)
    missing = {
        "predictions": sorted(set(references) - set(predictions)),
        "references": sorted(set(predictions) - set(references)),
    }
    if missing["predictions"]:
        logger.warning(
            "%d of the reference cases %s no prediction in %s (%s): %s",
            len(missing["predictions"]),
            "has" if len(missing["predictions"]) == 1 else "have",
            pred_dir,
            "scored as empty predictions" if missing_as_empty else "excluded",
            ", ".join(missing["predictions"]),
        )
    if missing["references"]:
        logger.warning(
            "%d of the predictions %s no reference label map in %s (not scored): %s",
            len(missing["references"]),
            "has" if len(missing["references"]) == 1 else "have",
            ref_dir,
            ", ".join(missing["references"]),
        )
    case_ids = sorted(set(references) if missing_as_empty else set(references) & set(predictions))
    if not case_ids:
        raise ValueError(
            f"no prediction in {pred_dir} matches a labeled case of {ref_dir}; predictions "
            f"must be named <case ID>.nii.gz with reference IDs such as "
            f"{', '.join(sorted(references)[:3])}"
        )
    tasks = []
    for case_id in case_ids:
        ref = references[case_id]
        case_ref_convention = ref_convention or ref.label_convention
        case_pred_convention = pred_convention
        if case_pred_convention is None and case_ref_convention == MSD:
            case_pred_convention = MSD
        if _scored_by_scheme(protocol, labels, case_id, ref.label_convention):
            tasks.append(
                _SchemeTask(
                    predictions.get(case_id),
                    ref.path,
                    case_id,
                    protocol,
                    labels or (None if ref_convention is None else ref_convention.name),
                    ref.label_convention,
                    pred_convention,
                    task,
                    lesion_rows is not None,
                    infer_pred_convention=labels is None,
                )
            )
            continue
        tasks.append(
            (predictions.get(case_id), ref.path, case_id, case_ref_convention, case_pred_convention)
        )
    if workers == 1 or len(tasks) == 1:
        results = [_evaluate_task(task) for task in tasks]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            results = list(pool.map(_evaluate_task, tasks))
    rows, errors = [], {}
    for (pred_path, ref_path, case_id, *_), (row, lesions, error) in zip(
        tasks, results, strict=True
    ):
        if error is not None:
            errors[case_id] = error
            continue
        if row.get(NOTE_COLUMN):
            logger.warning(
                "%s: %s onto the grid of reference %s", pred_path, row[NOTE_COLUMN], ref_path
            )
        if lesion_rows is not None:
            lesion_rows.extend(lesions)
        rows.append(row)
    if errors:
        if failed is None:
            raise ValueError(
                f"{len(errors)} of {len(tasks)} cases could not be scored (failed={{}} collects "
                "them and returns the others):\n"
                + "\n".join(f"  {case_id}: {error}" for case_id, error in errors.items())
            )
        # the caller reports the messages
        logger.warning(
            "%d of %d cases could not be scored: %s", len(errors), len(tasks), ", ".join(errors)
        )
        failed.update(errors)
    if any(isinstance(task, _SchemeTask) for task in tasks):  # scored by label scheme
        from brats_mtl.evaluation.protocols import table_columns

        columns = table_columns(rows)
    else:
        columns = list(RESULT_COLUMNS)
        if any(NOTE_COLUMN in row for row in rows):
            columns.append(NOTE_COLUMN)
    per_case = pd.DataFrame(rows, columns=columns)
    if NOTE_COLUMN in per_case:
        per_case[NOTE_COLUMN] = per_case[NOTE_COLUMN].fillna("")
    return per_case, missing


class _SchemeTask(NamedTuple):
    """A case scored through its label scheme (``protocols.score_case``)."""

    pred_path: Path | None
    ref_path: Path
    case_id: str
    protocol: str
    labels: str | None
    layout_convention: LabelConvention | None
    pred_convention: LabelConvention | None
    task: str | None
    want_lesions: bool
    infer_pred_convention: bool = True


def _scored_by_scheme(
    protocol: str, labels: str | None, case_id: str, layout: LabelConvention | None
) -> bool:
    """Whether a case is scored by label scheme (``protocols.score_case``).

    Every protocol but legacy, a stated scheme, and BraTS 2023+ references (whose scheme
    may be post-treatment or pediatric) go through ``protocols.score_case``.
    """
    from brats_mtl.tasks import case_id_era

    return (
        protocol != "legacy"
        or labels is not None
        or layout is BRATS_2023
        or case_id_era(case_id) == "2023+"
    )


def _score_scheme_task(task: _SchemeTask) -> tuple[dict[str, str | float], list[dict]]:
    from brats_mtl.evaluation.protocols import score_case

    lesions: list[dict] = []
    row = score_case(
        task.pred_path,
        task.ref_path,
        case_id=task.case_id,
        protocol=task.protocol,
        labels=task.labels,
        layout_convention=task.layout_convention,
        pred_convention=task.pred_convention,
        task=task.task,
        lesions=lesions if task.want_lesions else None,
        infer_pred_convention=task.infer_pred_convention,
    )
    return row, lesions


def _evaluate_task(
    task: Sequence,
) -> tuple[dict[str, str | float] | None, list[dict], str | None]:
    """Score one case's task, catching the errors of a case that cannot be scored.

    Returns:
        ``(row, lesion rows, None)`` for a scored case, ``(None, [], message)`` for one
        that cannot be (the same for both paths, legacy and by label scheme).
    """
    logger.debug("evaluating %s", task[2])
    try:
        if isinstance(task, _SchemeTask):
            row, lesions = _score_scheme_task(task)
            return row, lesions, None
        pred_path, ref_path, case_id, ref_convention, pred_convention = task
        row = _score_case(pred_path, ref_path, case_id, ref_convention, pred_convention)
        return row, [], None
    except (ValueError, OSError) as error:  # unreadable, bad values, other grid, scheme
        return None, [], str(error) or type(error).__name__


def _convention(convention: LabelConvention | str | None) -> LabelConvention | None:
    return None if convention is None else get_label_convention(convention)


def _strip_nifti_suffix(name: str) -> str:
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
