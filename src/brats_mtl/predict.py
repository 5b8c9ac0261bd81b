"""Predict cohorts: discovery, shards, out-of-fold prediction, resume, per-case failures.

:func:`predict_cohort` segments every case of a dataset folder with the fold models of a
training run; :func:`predict_cases` predicts given cases with an
``inference.segmenter.Segmenter``. Both fill a prediction folder
(``workspace.prediction_dir``: its layout, records, recorded settings and resume rule):
a run started again skips the finished cases. Ctrl-C stops at once, leaves no partial
file, merges the table and raises :class:`PredictionInterrupted`. A case that fails
(unreadable or missing files, a case folder without one of its modalities, NaN voxels)
is logged and recorded with status "error" and its message, and the others go on;
degenerate inputs are predicted with status "empty" or "degraded"
(``inference.segmenter.degenerate_status``), the WARNING repeated in ``warning``.

Source: paper, Inference, section 5.1 and Table 3; docs/design.md sections 4 and 5.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brats_mtl.config import Config
from brats_mtl.conventions import plural
from brats_mtl.data import CaseFiles, discover_cases, load_case, load_label_map, write_segmentation
from brats_mtl.inference.network import resolve_precision
from brats_mtl.inference.postprocess import region_volumes_ml
from brats_mtl.inference.segmenter import (
    CasePrediction,
    Segmenter,
    WindowProgress,
    check_inference_config,
    degenerate_status,
    release_image,
)
from brats_mtl.inference.uncertainty import mean_uncertainty_in_regions, write_uncertainty_maps
from brats_mtl.preprocessing import brain_mask as nonzero_mask
from brats_mtl.preprocessing import crop, preprocess_case
from brats_mtl.tasks import (
    LabelScheme,
    NetworkClasses,
    check_run_scheme,
    check_scheme_for_case,
    network_classes,
)
from brats_mtl.workspace.prediction_dir import (
    CSV_NAME,
    PredictionDir,
    case_record,
    case_settings_key,
    csv_columns,
    prediction_settings,
)

if TYPE_CHECKING:
    import pandas as pd

    from brats_mtl.data.splits import Splits

logger = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``.

    Args:
        text: the ``--shard`` value.

    Returns:
        ``(index, count)``.

    Raises:
        ValueError: if the text is not two integers ``I/N`` with ``0 <= I < N``.
    """
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/4 (shards 0 to N-1)") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: need 0 <= I < N (shards are numbered 0 to N-1)")
    return index, count


def select_shard(case_ids: Sequence[str], index: int, count: int) -> list[str]:
    """Every ``count``-th of the sorted IDs, starting at ``index``.

    The ``count`` shards partition the cohort (each ID in exactly one shard), the same
    way on every machine, and sizes differ by at most one.

    Args:
        case_ids: the IDs of the whole cohort.
        index: this shard, 0 to ``count - 1``.
        count: the number of shards.

    Returns:
        This shard's IDs, sorted.

    Raises:
        ValueError: unless ``0 <= index < count``.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= index < count")
    return sorted(case_ids)[index::count]


def discover_prediction_cases(input_dir: str | Path) -> tuple[list[CaseFiles], dict[str, str]]:
    """The cases of a cohort to predict, and the case folders that cannot be read.

    ``data.discover_cases`` with ``invalid`` collected: a broken case folder (a modality
    missing, two files for one modality) fails alone instead of stopping the cohort.

    Args:
        input_dir: a dataset folder in any supported layout.

    Returns:
        ``(cases, unreadable)``: the readable cases sorted by ID, and case ID -> the
        message (naming the folder, the missing modality and the files found) for each
        broken case.

    Raises:
        FileNotFoundError: if ``input_dir`` does not exist or is a file.
        ValueError: on a problem that is not one case's: no case folder at all, one case
            ID in two places (broken or not), a broken MSD task folder (as
            ``discover_cases``).

    Source: docs/design.md section 1 (layouts); the per-case failure rule of this module.
    """
    invalid: list[tuple[str, str]] = []
    cases = discover_cases(input_dir, invalid=invalid)
    return cases, dict(invalid)


class PredictionInterrupted(KeyboardInterrupt):
    """Ctrl-C (KeyboardInterrupt) during :func:`predict_cases`, after clean-up.

    Raised once the case being predicted was abandoned (no partial file left: label maps
    and records are written atomically, a probability map without its label map is
    removed) and ``predictions.csv`` was merged with the finished cases. Running the same
    prediction again skips the finished cases.

    Attributes:
        output_dir: the prediction folder.
        total: cases of this run (this shard's cases, readable or not).
        finished: cases with a label map (predicted now or already written).
        failed: cases recorded as failed.
        remaining: cases not reached (``total - finished - failed``).
    """

    def __init__(self, output_dir: Path, total: int, finished: int, failed: int) -> None:
        """Count the cases of the interrupted run (see the class)."""
        self.output_dir = Path(output_dir)
        self.total, self.finished, self.failed = total, finished, failed
        self.remaining = total - finished - failed
        super().__init__(
            f"prediction into {output_dir} interrupted: {finished} of "
            f"{plural(total, 'case')} finished, {failed} failed, {self.remaining} remain"
        )


def predict_cases(
    cases: Sequence[CaseFiles],
    segmenter: Segmenter,
    output_dir: str | Path,
    *,
    case_folds: Mapping[str, Sequence[int]] | None = None,
    unreadable: Mapping[str, str] | None = None,
    overwrite: bool = False,
    save_probabilities: bool = False,
    progress: bool = False,
    cohort_ids: Collection[str] | None = None,
    source: Mapping[str, Any] | None = None,
    train_splits: Mapping[int, Collection[str]] | None = None,
) -> pd.DataFrame:
    """Predict cases into ``output_dir`` and merge ``predictions.csv``.

    First the folder's recorded settings are checked (``PredictionDir.claim``): a folder
    filled by other models or with settings that change the label maps is refused unless
    ``overwrite``. Then a case is skipped when its label map exists and its record says
    it was made with these settings and weights (``PredictionDir.finished_record``);
    other cases are predicted (again).

    Args:
        cases: the cases (e.g. one shard of :func:`discover_prediction_cases`).
        segmenter: the fold models and settings.
        output_dir: created if needed; layout in ``workspace.prediction_dir``.
        case_folds: case ID -> the folds predicting it (out-of-fold prediction); cases
            without an entry use all folds. None: all folds for every case.
        unreadable: case ID -> error, for cases whose files could not even be listed
            (e.g. a case folder without its flair file, from
            :func:`discover_prediction_cases`); each is logged and recorded as failed.
        overwrite: predict cases whose label map exists again, and replace the folder's
            recorded settings (files of other cases are left alone).
        save_probabilities: also write ``probabilities/<ID>.nii.gz``.
        progress: show tqdm progress bars (cases, and windows inside a case); when
            False, each case logs its windows done / total and an estimate of the time
            left about every 30 s (``inference.segmenter.WindowProgress``).
        cohort_ids: every case ID of the whole input (all shards, readable or not):
            ``predictions.csv`` lists only these (``PredictionDir.merge_records``). None:
            the table keeps every record, e.g. of other shards called with other lists.
        source: where the models come from (``prediction_dir.prediction_settings``).
        train_splits: fold -> the case IDs of its training split (the run's splits). A
            case predicted by a fold that trained on it gets those folds in
            ``train_folds``, and one WARNING lists such cases: their scores are not
            held-out results. None: ``train_folds`` stays empty.

    Returns:
        One row per case of ``cases`` (predicted now, skipped, or failed), in order,
        then one per ``unreadable`` case; columns ``prediction_dir.CSV_COLUMNS``;
        ``status`` is "ok", "empty" (every voxel 0: an all-background label map),
        "degraded" (a modality constant inside the brain: predicted with it 0 after
        normalisation; ``warning`` names the file) or "error" (with the message in
        ``error``).

    Raises:
        FileExistsError: the folder holds predictions of other models or settings, and
            ``overwrite`` is False (see ``PredictionDir.claim``).
        PredictionInterrupted: on Ctrl-C (a ``KeyboardInterrupt``), after clean-up.

    Source: docs/design.md section 5.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    out = PredictionDir(output_dir)
    out.path.mkdir(parents=True, exist_ok=True)
    unreadable = dict(unreadable or {})
    known_ids = [f.case_id for f in cases] + list(unreadable)
    recorded = out.claim(
        prediction_settings(segmenter, out_of_fold=case_folds is not None, source=source),
        case_ids=known_ids if cohort_ids is None else cohort_ids,
        overwrite=overwrite,
    )

    def folds_of(case_id: str) -> tuple[int, ...]:
        return tuple((case_folds or {}).get(case_id, segmenter.folds))

    trained_on = {k: set(ids) for k, ids in (train_splits or {}).items()}

    def train_folds_of(case_id: str) -> tuple[int, ...]:
        return tuple(k for k in folds_of(case_id) if case_id in trained_on.get(k, ()))

    _warn_about_training_cases(known_ids, train_folds_of)
    rows, n_done, n_skipped, n_failed = [], 0, 0, 0
    unreadable_rows = []
    for case_id, error in sorted(unreadable.items()):
        logger.error("%s failed: %s", case_id, error)
        record = case_record(
            case_id,
            folds_of(case_id),
            train_folds=train_folds_of(case_id),
            status="error",
            error=error,
        )
        out.write_record(record)
        unreadable_rows.append(record)
    n_failed += len(unreadable_rows)
    bar = tqdm(cases, desc="predict", unit="case", disable=not progress)
    # files written before their label map: removed when the run stops before it
    partial: list[Path] = []
    try:
        for files in bar:
            bar.set_postfix_str(files.case_id)
            folds = folds_of(files.case_id)
            key = case_settings_key(recorded, folds)
            if not overwrite:
                record = out.finished_record(
                    files.case_id,
                    key,
                    save_probabilities=save_probabilities,
                    uncertainty=segmenter.config.uncertainty != "none",
                )
                if record is not None:
                    rows.append(record)
                    n_skipped += 1
                    continue
            start = time.perf_counter()
            try:
                record, prediction = _predict_one(
                    files,
                    segmenter,
                    out,
                    folds=folds,
                    train_folds=train_folds_of(files.case_id),
                    key=key,
                    start=start,
                    save_probabilities=save_probabilities,
                    progress=progress,
                    partial=partial,
                )
                n_done += 1
                logger.info(
                    "%s: ET probability %.3f%s, %.1f s",
                    files.case_id,
                    prediction.et_probability,
                    " (ET suppressed)" if prediction.et_suppressed else "",
                    record["seconds"],
                )
                del prediction
            except Exception as exc:  # one bad case must not stop the cohort
                partial.clear()  # a failed case's files are this folder's own: kept
                n_failed += 1
                logger.error("%s failed: %s", files.case_id, exc)
                logger.debug("traceback of %s", files.case_id, exc_info=True)
                record = case_record(
                    files.case_id,
                    folds,
                    train_folds=train_folds_of(files.case_id),
                    seconds=time.perf_counter() - start,
                    status="error",
                    error=str(exc) or type(exc).__name__,
                )
            out.write_record(record)
            rows.append(record)
    except KeyboardInterrupt:
        _remove(partial)
        out.merge_records(cohort_ids)
        interrupted = PredictionInterrupted(
            out.path, len(cases) + len(unreadable_rows), n_done + n_skipped, n_failed
        )
        logger.warning(
            "interrupted: %d of %s finished (%d predicted now, %d already written), "
            "%d failed, %d remain; %s lists the finished cases",
            interrupted.finished,
            plural(interrupted.total, "case"),
            n_done,
            n_skipped,
            n_failed,
            interrupted.remaining,
            out.table,
        )
        raise interrupted from None
    except SystemExit:  # SIGTERM (Terminated, a SystemExit): the same clean-up, then exit
        _remove(partial)
        out.merge_records(cohort_ids)
        raise
    finally:
        bar.close()
    rows.extend(unreadable_rows)
    out.merge_records(cohort_ids)
    logger.info(
        "%s predicted, %d skipped (already written), %d failed; table in %s",
        plural(n_done, "case"),
        n_skipped,
        n_failed,
        out.table,
    )
    return pd.DataFrame(rows, columns=csv_columns(rows))


def _predict_one(
    files: CaseFiles,
    segmenter: Segmenter,
    out: PredictionDir,
    *,
    folds: tuple[int, ...],
    train_folds: tuple[int, ...],
    key: str,
    start: float,
    save_probabilities: bool,
    progress: bool,
    partial: list[Path],
) -> tuple[dict[str, Any], CasePrediction]:
    """Load, predict and write one case: its record and its prediction.

    ``start`` is the ``time.perf_counter()`` at which the case began (its ``seconds``).

    ``partial`` holds the files written before the label map while it is not written yet
    (the caller removes them on Ctrl-C) and is emptied once the label map is written.
    """
    case = load_case(files, load_labels=False)
    pre = preprocess_case(case, allow_degenerate=True)
    status, warning = degenerate_status(case, pre)
    mask = nonzero_mask(crop(case.image, pre.box))
    case = release_image(case)
    window_progress = WindowProgress(files.case_id, bar=progress)
    try:
        prediction = segmenter.predict_preprocessed(
            pre, folds=folds, brain_mask=mask, progress=window_progress
        )
    finally:
        window_progress.close()
    del pre, mask
    if save_probabilities:
        # a probability map without its label map is what an interrupted run leaves
        # behind: this run's own output, replaced.
        partial.append(out.probabilities(files.case_id))
        out.write_probabilities(prediction, case, overwrite=True)
    if prediction.uncertainty is not None:  # replaced as the probabilities are
        partial.extend(out.uncertainty_maps(files.case_id))
        write_uncertainty_maps(
            prediction.uncertainty, prediction.box, case, out.path, overwrite=True
        )
    # an existing label map here is this folder's own, made with other settings (or
    # overwrite was asked): replaced
    write_segmentation(
        prediction.labels,
        case,
        out.label_map(files.case_id),
        overwrite=True,
        scheme=segmenter.classes.scheme,
    )
    partial.clear()
    record = case_record(
        files.case_id,
        folds,
        train_folds=train_folds,
        et_probability=prediction.et_probability,
        et_suppressed=prediction.et_suppressed,
        volumes_ml=region_volumes_ml(prediction.labels, case.spacing_mm, segmenter.classes.regions),
        seconds=time.perf_counter() - start,
        status=status,
        warning=warning,
        settings_key=key,
        mean_uncertainty=mean_uncertainty_in_regions(
            crop(prediction.labels, prediction.box), prediction.uncertainty, segmenter.classes
        ),
    )
    return record, prediction


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _warn_about_training_cases(
    case_ids: Sequence[str], train_folds_of: Callable[[str], tuple[int, ...]]
) -> None:
    """One WARNING listing the cases predicted by a fold that trained on them."""
    seen = {cid: train_folds_of(cid) for cid in case_ids}
    seen = {cid: folds for cid, folds in seen.items() if folds}
    if not seen:
        return
    examples = ", ".join(
        f"{cid} (fold{'s' if len(f) > 1 else ''} {','.join(map(str, f))})"
        for cid, f in list(seen.items())[:5]
    )
    logger.warning(
        "%s of %s %s in the training split of a fold model predicting %s (column "
        "train_folds of %s), e.g. %s%s: scores on %s are not held-out results; for "
        "cross-validation scores predict with --out-of-fold",
        len(seen),
        plural(len(case_ids), "case"),
        "was" if len(seen) == 1 else "were",
        "it" if len(seen) == 1 else "them",
        CSV_NAME,
        examples,
        ", ..." if len(seen) > 5 else "",
        "it" if len(seen) == 1 else "them",
    )


def predict_cohort(
    run_dir: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    config: Config | None = None,
    folds: Sequence[int] | None = None,
    which: str = "best",
    out_of_fold: bool = False,
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
    save_probabilities: bool = False,
    progress: bool = False,
    labels: LabelScheme | str | None = None,
) -> pd.DataFrame:
    """Segment every case of ``input_dir`` with the fold models of a training run.

    The run's label scheme (``train.labels`` of its saved config; none recorded: the
    paper's four classes) decides the classes, ET suppression, the values written and
    the regions of ``predictions.csv``; the input must be of a scheme with the same
    classes (:func:`check_input_schemes`).

    A case folder that cannot be read (a modality missing, two files for one modality)
    fails alone: it is recorded with status "error" and the others are predicted
    (:func:`discover_prediction_cases`).

    Args:
        run_dir: the training run folder (``brats-mtl train --out``).
        input_dir: a dataset folder in any supported layout (``data.discover_cases``).
        output_dir: where the label maps, records and ``predictions.csv`` go.
        config: settings (the ``inference`` section is used, precision included);
            default: the run's saved config.
        folds: fold models to use; default: every fold with a ``which`` checkpoint
            (for "best": with a best or a last checkpoint).
        which: "best" or "last" checkpoint. A fold without a best checkpoint (stopped
            before its first validation) is predicted with its last one, with a warning
            (:func:`resolve_checkpoint`); the settings record names the file loaded.
        out_of_fold: predict each case held out by a fold with that fold's model only
            (the paper's Table 3 "train set" row, docs/design.md section 4); cases held
            out by no selected fold are skipped with a warning. Without it, cases in the
            training split of a fold used are warned about and marked in
            ``train_folds``: scores on them are not held-out results.
        shard: ``(I, N)``: predict only shard I of N (:func:`select_shard`); every
            shard writes into the same ``output_dir`` with the same settings.
        overwrite: predict cases whose label map exists again, also into a folder
            filled by other models or settings (``PredictionDir.claim``).
        save_probabilities: also write probability maps.
        progress: show a progress bar.
        labels: the input's label scheme (``--labels``); default: inferred per case.

    Returns:
        This shard's rows (see :func:`predict_cases`); ``predictions.csv`` lists the
        cases of the whole input (all shards), not those removed from it since.

    Raises:
        FileNotFoundError: if the run or the input folder is missing, or a requested fold
            has no checkpoint.
        FileExistsError: if ``output_dir`` holds predictions of another run folder, other
            weights or other settings and ``overwrite`` is False (lists the differences).
        ValueError: on invalid settings, when no fold has a checkpoint, when
            ``output_dir`` is, lies inside or contains ``input_dir``
            (``PredictionDir.check_outside``), when the input folder as a whole cannot
            be read (see :func:`discover_prediction_cases`), or when its label scheme
            differs from the run's (names both).
        PredictionInterrupted: on Ctrl-C, after clean-up (see :func:`predict_cases`).

    Source: paper, Inference, 5.1 and Table 3; docs/design.md sections 4 and 5.
    """
    from brats_mtl import training

    PredictionDir(output_dir).check_outside(input_dir)
    config = config or training.read_run_config(run_dir)
    check_inference_config(config.inference)
    # the input first: a missing INPUT_DIR is named before any checkpoint warning
    cases, unreadable = discover_prediction_cases(input_dir)
    classes = network_classes(training.read_run_config(run_dir).train.labels)
    check_input_schemes(cases, classes, run_dir, labels)
    folds = _folds_to_predict(run_dir, folds, which)
    checkpoints = {k: resolve_checkpoint(run_dir, k, which) for k in folds}
    by_id = {c.case_id: c for c in cases}
    all_ids = sorted(set(by_id) | set(unreadable))
    case_folds: dict[str, list[int]] | None = None
    splits = _read_splits_if_any(run_dir, required=out_of_fold)
    if out_of_fold:
        case_folds = {cid: [k] for k in folds for cid in splits.val_ids(k)}
        ids = _out_of_fold_ids(case_folds, all_ids, folds, input_dir)
    else:
        ids = all_ids
    shard_ids = select_shard(ids, *shard)
    selected = [by_id[cid] for cid in shard_ids if cid in by_id]
    shard_unreadable = {cid: unreadable[cid] for cid in shard_ids if cid in unreadable}
    scope = (
        f"predicting {plural(len(ids), 'case')}"
        if shard[1] == 1
        else f"shard {shard[0]}/{shard[1]}: {len(shard_ids)} of {plural(len(ids), 'case')}"
    )
    logger.info(
        "%s (%d unreadable, reported as failed); folds %s; mode %s, TTA %d",
        scope,
        len(shard_unreadable),
        folds,
        config.inference.mode,
        config.inference.tta,
    )
    models = {k: training.load_fold_model(run_dir, k, checkpoints[k]) for k in folds}
    segmenter = Segmenter.from_models(models, config.inference, classes=classes)
    logger.info(
        "precision %s on %s",
        resolve_precision(segmenter.precision, segmenter.device),
        segmenter.device,
    )
    source = {
        "run_dir": str(Path(run_dir).resolve()),
        "which": which,
        # the files actually loaded (last where best was missing)
        "checkpoints": {
            str(k): _file_identity(training.checkpoint_path(run_dir, k, checkpoints[k]))
            for k in folds
        },
    }
    return predict_cases(
        selected,
        segmenter,
        output_dir,
        case_folds=case_folds,
        unreadable=shard_unreadable,
        overwrite=overwrite,
        save_probabilities=save_probabilities,
        progress=progress,
        cohort_ids=all_ids,
        source=source,
        train_splits=None
        if splits is None
        else {k: splits.train_ids(k) for k in folds if k < splits.n_folds},
    )


def _folds_to_predict(run_dir: str | Path, folds: Sequence[int] | None, which: str) -> list[int]:
    """``folds`` sorted; default every fold with a ``which`` (or, for best, a last) checkpoint."""
    from brats_mtl import training

    if folds is None:
        folds = training.available_folds(run_dir, which)
        if which == "best":
            folds = sorted(set(folds) | set(training.available_folds(run_dir, "last")))
        if not folds:
            names = "best.ckpt or last.ckpt" if which == "best" else "last.ckpt"
            raise ValueError(
                f"no fold of {run_dir} has a checkpoint (fold_K/checkpoints/{names}); train first"
            )
    return sorted(set(int(f) for f in folds))


def _out_of_fold_ids(
    case_folds: Mapping[str, Sequence[int]],
    all_ids: Sequence[str],
    folds: Sequence[int],
    input_dir: str | Path,
) -> list[str]:
    """The input's cases held out by one of ``folds``; warns about the others."""
    absent = sorted(set(case_folds) - set(all_ids))
    if absent:
        logger.warning(
            "%s held out by the folds are not in %s: %s",
            plural(len(absent), "case"),
            input_dir,
            absent[:10],
        )
    unassigned = sorted(set(all_ids) - set(case_folds))
    if unassigned:
        logger.warning(
            "%s of %s held out by none of folds %s and skipped: %s",
            plural(len(unassigned), "case"),
            input_dir,
            folds,
            unassigned[:10],
        )
    return [cid for cid in all_ids if cid in case_folds]


def check_input_schemes(
    cases: Sequence[CaseFiles],
    classes: NetworkClasses,
    run_dir: str | Path,
    labels: LabelScheme | str | None = None,
) -> None:
    """Refuse input cases whose label scheme has other classes than the run's.

    A case's scheme is ``labels`` when given, else inferred from its segmentation (when
    it has one), layout and ID (``data.case_label_scheme``). A case without a
    segmentation and a run on a four-label scheme must at least agree in era (a BraTS
    2017-2021 ID is never written with 2023+ values, ``tasks.check_scheme_for_case``).

    Args:
        cases: the input's cases.
        classes: the run's network classes.
        run_dir: the run folder (named in messages).
        labels: the input's label scheme (``--labels``); default: inferred per case.

    Raises:
        ValueError: naming the run, both schemes and the first case that disagrees.
    """
    from brats_mtl.data.io import case_label_scheme

    for files in cases:
        if labels is None and files.seg is None:
            if classes.key != "internal":
                check_scheme_for_case(classes.scheme, files.case_id, files.images["t1"])
            continue
        try:
            scheme = case_label_scheme(files, labels)
        except (ValueError, OSError):  # an unreadable reference: prediction never reads it
            continue
        try:
            check_run_scheme(classes.scheme, scheme, run_dir)
        except ValueError as exc:
            raise ValueError(f"case {files.case_id}: {exc}") from None


def _read_splits_if_any(run_dir: str | Path, *, required: bool) -> Splits | None:
    """The run's splits; None (logged) when they are missing and not ``required``."""
    from brats_mtl import training

    try:
        return training.read_splits(run_dir)
    except (FileNotFoundError, ValueError) as exc:
        if required:
            raise
        logger.warning(
            "%s; cases of the folds' training splits cannot be marked in %s", exc, CSV_NAME
        )
        return None


def resolve_checkpoint(run_dir: str | Path, fold: int, which: str = "best") -> str:
    """The checkpoint a fold is predicted with: ``which``, or "last" when "best" is missing.

    The best checkpoint is written at a fold's first validation, so a fold stopped
    before it has only its last one; that one is used then, with a WARNING naming the
    fold and the file.

    Args:
        run_dir: the training run folder.
        fold: the fold number.
        which: "best" or "last", as asked.

    Returns:
        "best" or "last".

    Raises:
        FileNotFoundError: if the fold has neither checkpoint: "fold K of RUN was not
            trained (...); trained folds: [...]" (``training.check_fold_trained``).
    """
    from brats_mtl import training

    training.check_fold_trained(run_dir, fold)
    if which != "best" or training.checkpoint_path(run_dir, fold, "best").is_file():
        return which
    last = training.checkpoint_path(run_dir, fold, "last")  # exists: check_fold_trained
    logger.warning(
        "fold %d has no best.ckpt (its training stopped before the first validation); "
        "predicting with %s",
        fold,
        last,
    )
    return "last"


def _file_identity(path: Path) -> dict[str, Any]:
    """Resolved path, size and modification time of a checkpoint, for messages."""
    stat = path.stat()
    modified = datetime.datetime.fromtimestamp(stat.st_mtime).isoformat(timespec="seconds")
    return {"file": str(path.resolve()), "bytes": stat.st_size, "modified": modified}


def threshold_cases(
    pred_dir: str | Path, ref_dir: str | Path
) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
    """Out-of-fold predictions paired with references, for ``select_et_min_voxels``.

    The predictions must be made **without** ET suppression, e.g.
    ``brats-mtl predict RUN DATA OOF --out-of-fold --set inference.et_min_voxels=0``.
    Cases are yielded one at a time, so a cohort of any size fits in memory.

    Args:
        pred_dir: a prediction folder (``<ID>.nii.gz`` and ``predictions.csv``).
        ref_dir: the reference label maps (any layout of
            ``data.discovery.discover_label_maps``; images not needed).

    Yields:
        ``(labels, et_probability, reference_labels)`` per case present on both sides
        with an ET probability: uint8 (X, Y, Z) internal labels, float, uint8 (X, Y, Z).

    Raises:
        FileNotFoundError: if ``pred_dir`` has no ``predictions.csv``.
        ValueError: if a case was predicted with ET suppression (``et_suppressed``).

    Source: docs/design.md section 5; nnU-Net's BraTS postprocessing.
    """
    import pandas as pd

    from brats_mtl.data.discovery import discover_label_maps

    predictions = PredictionDir(pred_dir)
    csv = predictions.table
    if not csv.is_file():
        raise FileNotFoundError(f"{csv} does not exist; run brats-mtl predict into {pred_dir}")
    table = pd.read_csv(csv).set_index("case_id")
    references = discover_label_maps(ref_dir)
    for case_id, row in table.iterrows():
        if case_id not in references or row["status"] != "ok" or pd.isna(row["et_probability"]):
            continue
        if str(row["et_suppressed"]).lower() == "true":
            raise ValueError(
                f"{csv}: case {case_id} was predicted with ET suppression; predict again "
                "with --set inference.et_min_voxels=0 to choose the threshold"
            )
        labels, _, _ = load_label_map(predictions.label_map(str(case_id)))
        ref = references[case_id]
        reference, _, _ = load_label_map(ref.path, ref.label_convention)
        yield labels, float(row["et_probability"]), reference
