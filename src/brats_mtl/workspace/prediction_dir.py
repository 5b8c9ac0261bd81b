"""A prediction folder: its layout, records, recorded settings and resume rule.

In ``OUTPUT_DIR`` (:class:`PredictionDir`):

- ``<ID>.nii.gz``: integer labels on the input grid, with the input's affine and header,
  in the input's label convention (ET = 3 for BraTS 2023+ input).
- ``<ID>_unc_whole.nii.gz``, ``<ID>_unc_core.nii.gz``, ``<ID>_unc_enhance.nii.gz``
  (``inference.uncertainty``, not "none"): QU-BraTS uncertainty maps of WT, TC, ET, uint8
  in [0, 100] on the input grid, 0 outside the brain (:mod:`~brats_mtl.inference.
  uncertainty`), written before the label map.
- ``records/<ID>.json``: that case's row of the cohort table, written after the label map,
  with a key of the settings and weights that made it.
- ``records/.settings.json``: the run folder (resolved path, checkpoint files with size
  and modification time), a hash of each fold model's weights and the settings that
  change label maps (:data:`LABEL_SETTINGS`, precision, patch size, folds, out-of-fold),
  written before the first case (:meth:`PredictionDir.claim`).
- ``predictions.csv``: all records merged (columns :data:`CSV_COLUMNS`, floats to 6
  significant digits), rewritten at the end of every run under a file lock
  (``records/.lock``), so shards running at the same time (``--shard``) and interrupted
  runs that are started again all end with one complete table.
- ``probabilities/<ID>.nii.gz`` (``save_probabilities``): the fold-mean class
  probabilities before ET suppression, 4-D (X, Y, Z, 4), channel k = class k of
  ``conventions.CLASS_LABELS`` (background, NCR/NET, ED, ET, whatever the input's label
  convention), stored as uint8 with NIfTI scaling ``scl_slope = 1/255`` so that nibabel,
  ITK and FSL read probabilities in [0, 1] (quantised to 1/255; 36 MB uncompressed for a
  240 x 240 x 155 case instead of 143 MB as float32). Outside the brain crop, and
  outside the brain mask when ``inference.mask_outside_brain`` is on, the background
  channel is 1 and the others 0, as in the label map.

Resuming: a re-run into a folder whose recorded run folder, weights or settings differ,
or that holds predictions without recorded settings, is refused with the differences
listed (old -> new), unless ``overwrite``: resuming would silently keep label maps of
other models. With the same weights and settings, a case whose label map exists and
whose record carries this run's settings key is finished (:meth:`PredictionDir.
finished_record`), so an interrupted cohort (or shard) resumes where it stopped; a label
map without such a record (interrupted between the two files, or left by an earlier
``overwrite`` run that was interrupted) is predicted again. Files of cases not predicted
by a run are never deleted; ``predictions.csv`` lists only the cases of the current input.

Every file is written atomically (``brats_mtl.atomic``).

Source: the resume rule of ``brats-mtl predict`` (not in the paper); docs/design.md
section 5.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brats_mtl.atomic import atomic_output, locked, write_text_atomic
from brats_mtl.conventions import CLASS_LABELS, plural, uncertainty_map_name
from brats_mtl.data import Case, save_nifti
from brats_mtl.inference.network import resolve_precision
from brats_mtl.inference.segmenter import CasePrediction, Segmenter
from brats_mtl.inference.uncertainty import MAP_REGIONS
from brats_mtl.preprocessing import uncrop

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Columns of ``predictions.csv``: ``folds`` the fold models used; ``train_folds`` those
#: of them whose training split held the case (its scores are then not held-out results);
#: ``status`` "ok", "empty" (no brain: all background), "degraded" (a modality constant
#: inside the brain, predicted from the others) or "error"; ``warning`` why a case is
#: empty or degraded; ``error`` the message of a failed case, on one line.
CSV_COLUMNS: tuple[str, ...] = (
    "case_id",
    "folds",
    "train_folds",
    "et_probability",
    "et_suppressed",
    "volume_WT_ml",
    "volume_TC_ml",
    "volume_ET_ml",
    "mean_uncertainty_WT",
    "mean_uncertainty_TC",
    "mean_uncertainty_ET",
    "seconds",
    "status",
    "warning",
    "error",
)
CSV_NAME = "predictions.csv"
#: Floats of ``predictions.csv`` keep 6 significant digits (volumes: 0.001 ml up to
#: 999 ml), so binary noise such as ``62.431000000000004`` is not written.
CSV_FLOAT_FORMAT = "%.6g"
RECORDS_DIR = "records"
#: Lock file of :meth:`PredictionDir.merge_records`, inside ``records/`` so that no stray
#: file is left among the outputs.
LOCK_NAME = ".lock"
#: The run folder, weights and settings that made the folder's label maps, inside
#: ``records/`` (a dot-name: never a case ID). See :meth:`PredictionDir.claim`.
SETTINGS_NAME = ".settings.json"
PROBABILITIES_DIR = "probabilities"
#: ``inference`` settings that change the label maps: recorded, and compared on a
#: re-run into the same folder. ``device``, ``window_batch_size`` and ``channels_last``
#: change only floating-point rounding and may differ between shards and resumes.
LABEL_SETTINGS: tuple[str, ...] = (
    "tta",
    "overlap",
    "mode",
    "ensemble",
    "et_probability_threshold",
    "et_min_voxels",
    "mask_outside_brain",
)
#: Statuses of a case whose label map was written.
FINISHED: tuple[str, ...] = ("ok", "empty", "degraded")

_CHOOSE_ANOTHER_FOLDER = (
    "Choose a new output folder, or pass --overwrite to predict every case of this "
    "input again with the new settings (files of other cases are left alone)."
)


def csv_columns(rows: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """The columns of a ``predictions.csv`` holding ``rows``.

    Args:
        rows: case records (:func:`case_record`).

    Returns:
        :data:`CSV_COLUMNS`, with the volume of every further region of a label scheme
        found in ``rows`` (``volume_NETC_ml``, ``volume_RC_ml``, ...) after
        ``volume_ET_ml``.
    """
    extra: list[str] = []
    for row in rows:
        extra += [
            k for k in row if k.startswith("volume_") and k not in CSV_COLUMNS and k not in extra
        ]
    at = CSV_COLUMNS.index("volume_ET_ml") + 1
    return [*CSV_COLUMNS[:at], *extra, *CSV_COLUMNS[at:]]


def case_record(
    case_id: str,
    folds: Sequence[int],
    *,
    train_folds: Sequence[int] = (),
    et_probability: float = float("nan"),
    et_suppressed: bool | None = None,
    volumes_ml: Mapping[str, float] | None = None,
    seconds: float = float("nan"),
    status: str = "ok",
    warning: str = "",
    error: str = "",
    settings_key: str = "",
    mean_uncertainty: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One case's record: its row of ``predictions.csv`` plus the key of its settings.

    Args:
        case_id: the case ID.
        folds: the fold models that predicted it.
        train_folds: those of ``folds`` whose training split held the case.
        et_probability: the case's ET probability (NaN: none).
        et_suppressed: whether ET suppression fired (None: not predicted).
        volumes_ml: region -> volume in ml (WT, TC, ET and any further region).
        seconds: wall time of the case.
        status: "ok", "empty", "degraded" or "error".
        warning: why a case is empty or degraded.
        error: the message of a failed case (written on one line).
        settings_key: :func:`case_settings_key` of the settings that made the label map.
        mean_uncertainty: region -> mean uncertainty inside the predicted region.

    Returns:
        JSON-ready dict with the :func:`csv_columns` keys and ``settings_key``.
    """
    volumes_ml = volumes_ml or {}
    mean_uncertainty = mean_uncertainty or {}
    return {
        "case_id": case_id,
        "folds": ",".join(map(str, folds)),
        "train_folds": ",".join(map(str, train_folds)),
        "et_probability": et_probability,
        "et_suppressed": et_suppressed,
        "volume_WT_ml": volumes_ml.get("WT", float("nan")),
        "volume_TC_ml": volumes_ml.get("TC", float("nan")),
        "volume_ET_ml": volumes_ml.get("ET", float("nan")),
        # regions of a four-label scheme beyond WT, TC, ET (e.g. volume_RC_ml)
        **{
            f"volume_{region}_ml": value
            for region, value in volumes_ml.items()
            if region not in ("WT", "TC", "ET")
        },
        **{f"mean_uncertainty_{r}": mean_uncertainty.get(r, float("nan")) for r in MAP_REGIONS},
        "seconds": seconds,
        "status": status,
        "warning": warning,
        # one line per CSV cell, whatever the message (e.g. an affine) held
        "error": " ".join(line.strip() for line in error.splitlines()),
        # not a CSV column: which settings made the label map (case_settings_key)
        "settings_key": settings_key,
    }


# --- what made a prediction folder ------------------------------------------------------


def prediction_settings(
    segmenter: Segmenter,
    *,
    out_of_fold: bool = False,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What makes the label maps of a prediction folder: recorded in ``records/.settings.json``.

    Args:
        segmenter: the fold models and inference settings.
        out_of_fold: each case is predicted by its own fold's model only.
        source: where the models come from, shown in messages: ``run_dir`` (resolved
            path), ``which`` and ``checkpoints`` (fold -> ``file``, ``bytes``,
            ``modified``), as ``brats_mtl.predict.predict_cohort`` gives it. None for
            models given in memory.

    Returns:
        JSON-ready dict: ``settings`` (the :data:`LABEL_SETTINGS` of ``inference`` with
        the segmenter's precision as it runs, "32" or "bf16", the patch size, the folds,
        ``out_of_fold``, the label convention of the output), ``weights`` (fold ->
        ``inference.segmenter.model_fingerprint``), ``source`` and the package version.

    Source: the resume rule of this module (not in the paper).
    """
    from brats_mtl import __version__

    cfg = segmenter.config
    settings: dict[str, Any] = {f"inference.{k}": getattr(cfg, k) for k in LABEL_SETTINGS}
    # "auto" is recorded as what it runs in here (bf16 or 32): shards on other machines
    # may differ
    settings["inference.precision"] = resolve_precision(segmenter.precision, segmenter.device)
    settings["patch_size"] = segmenter.patch_size
    settings["folds"] = list(segmenter.folds)
    settings["out_of_fold"] = bool(out_of_fold)
    if cfg.uncertainty != "none":  # recorded only when on: folders without it still resume
        settings["inference.uncertainty"] = cfg.uncertainty
    # label maps are written in the input's convention (docs/design.md section 1)
    settings["label_convention"] = "input"
    document = {
        "settings": settings,
        "weights": {str(k): v for k, v in segmenter.fingerprints.items()},
        "source": dict(source or {}),
        "brats_mtl_version": __version__,
    }
    return json.loads(json.dumps(document))  # as read back from the file


def case_settings_key(document: Mapping[str, Any], folds: Sequence[int]) -> str:
    """A short hash of what makes one case's label map: settings and its folds' weights.

    Args:
        document: :func:`prediction_settings` (as recorded).
        folds: the folds predicting the case.

    Returns:
        16 hex digits; the same for the same settings (folds and out-of-fold aside),
        folds and weights.
    """
    settings = {k: v for k, v in document["settings"].items() if k not in ("folds", "out_of_fold")}
    weights = [document["weights"].get(str(k)) for k in folds]
    payload = {"settings": settings, "folds": list(folds), "weights": weights}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _show(key: str, value: Any) -> str:
    if value is None:
        return "none" if key == "inference.uncertainty" else "(not recorded)"
    if key == "folds":
        return ",".join(map(str, value))
    return str(value)


def _describe_weights(document: Mapping[str, Any], fold: str) -> str:
    identity = document["weights"][fold]
    short = identity[:19] if identity.startswith("sha256:") else identity
    checkpoint = document.get("source", {}).get("checkpoints", {}).get(fold)
    if not checkpoint:
        return short
    return (
        f"{checkpoint['file']} ({checkpoint['bytes']} bytes, modified "
        f"{checkpoint['modified']}, {short})"
    )


def settings_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The differences between two :func:`prediction_settings` that change label maps.

    Args:
        old: the settings recorded in a prediction folder.
        new: the settings of a new run into it.

    Returns:
        One ``"<name>: <old> -> <new>"`` line per difference: a setting, or a fold whose
        weights differ (named by its checkpoint file, size, modification time and hash);
        preceded by ``"run folder: <old> -> <new>"`` when the run folders differ too.
        Empty when the label maps would be the same: a moved or copied run folder with
        the same weights, other devices or batch sizes, and, for out-of-fold
        prediction, other folds (each case keeps its own fold) are no difference.
    """
    old_settings, new_settings = old.get("settings", {}), new["settings"]
    both_out_of_fold = bool(old_settings.get("out_of_fold") and new_settings.get("out_of_fold"))
    lines = []
    for key in [*new_settings, *(k for k in old_settings if k not in new_settings)]:
        if key == "folds" and both_out_of_fold:
            continue
        before, after = old_settings.get(key), new_settings.get(key)
        if before != after:
            lines.append(f"{key}: {_show(key, before)} -> {_show(key, after)}")
    old_weights, new_weights = old.get("weights", {}), new["weights"]
    for fold in sorted(set(old_weights) & set(new_weights), key=int):
        if old_weights[fold] != new_weights[fold]:
            lines.append(
                f"fold {fold} weights: {_describe_weights(old, fold)} -> "
                f"{_describe_weights(new, fold)}"
            )
    old_run = old.get("source", {}).get("run_dir")
    new_run = new.get("source", {}).get("run_dir")
    if lines and old_run != new_run:
        in_memory = "(models given in memory)"
        lines.insert(0, f"run folder: {old_run or in_memory} -> {new_run or in_memory}")
    return lines


def _merged_settings(old: Mapping[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``; for out-of-fold prediction with other folds, the folds of both."""
    if not (old["settings"].get("out_of_fold") and new["settings"]["out_of_fold"]):
        return new
    merged = json.loads(json.dumps(new))
    folds = set(old["settings"].get("folds", [])) | set(new["settings"]["folds"])
    merged["settings"]["folds"] = sorted(folds)
    merged["weights"] = {**old.get("weights", {}), **new["weights"]}
    checkpoints = {
        **old.get("source", {}).get("checkpoints", {}),
        **new["source"].get("checkpoints", {}),
    }
    if checkpoints:
        merged["source"]["checkpoints"] = checkpoints
    return merged


def _json_text(data: Mapping[str, Any]) -> str:
    # NaN (no value) is written as null: standard JSON, read back as NaN by pandas
    clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in data.items()}
    return json.dumps(clean, indent=1)


def _read_json(path: Path) -> Any:
    """The JSON document at ``path``; None (logged) when missing or unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("%s is unreadable (%s)", path, exc)
        return None


class PredictionDir:
    """The prediction folder ``OUTPUT_DIR``: file paths, records, settings, resume.

    The layout and the resume rule are in this module's docstring. Creating the object
    touches nothing on disk.

    Args:
        path: the folder (need not exist yet).
    """

    def __init__(self, path: str | Path) -> None:
        """Name the folder (see the class)."""
        self.path = Path(path)

    def __repr__(self) -> str:
        """``PredictionDir('<path>')``."""
        return f"PredictionDir({str(self.path)!r})"

    # --- layout ---------------------------------------------------------------------

    def label_map(self, case_id: str) -> Path:
        """``OUTPUT_DIR/<ID>.nii.gz``: the case's label map."""
        return self.path / f"{case_id}.nii.gz"

    def probabilities(self, case_id: str) -> Path:
        """``OUTPUT_DIR/probabilities/<ID>.nii.gz``: the case's class probabilities."""
        return self.path / PROBABILITIES_DIR / f"{case_id}.nii.gz"

    def uncertainty_maps(self, case_id: str) -> list[Path]:
        """The case's QU-BraTS uncertainty maps, WT, TC, ET (``<ID>_unc_whole.nii.gz``, ...)."""
        return [self.path / uncertainty_map_name(case_id, r) for r in MAP_REGIONS]

    @property
    def table(self) -> Path:
        """``OUTPUT_DIR/predictions.csv``: the merged records."""
        return self.path / CSV_NAME

    @property
    def records_dir(self) -> Path:
        """``OUTPUT_DIR/records``: one JSON record per case, the settings and the lock."""
        return self.path / RECORDS_DIR

    @property
    def settings_path(self) -> Path:
        """``OUTPUT_DIR/records/.settings.json``: what made the folder's label maps."""
        return self.records_dir / SETTINGS_NAME

    def record_path(self, case_id: str) -> Path:
        """``OUTPUT_DIR/records/<ID>.json``: the case's record."""
        return self.records_dir / f"{case_id}.json"

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.records_dir / LOCK_NAME)

    # --- files ----------------------------------------------------------------------

    def write_probabilities(
        self, prediction: CasePrediction, case: Case, *, overwrite: bool = False
    ) -> Path:
        """Write the class probabilities on the input grid as a scaled uint8 4-D NIfTI.

        Args:
            prediction: from ``Segmenter.predict_case`` (or ``predict_preprocessed``) of
                ``case``.
            case: the loaded case (affine and header of the output).
            overwrite: replace an existing file.

        Returns:
            :meth:`probabilities` of the case. The image is (X, Y, Z, C) uint8 with
            ``scl_slope = 1/255``, ``scl_inter = 0``; channel k = class
            ``CLASS_LABELS[k]``; background channel 1 outside the brain crop and
            (``mask_outside_brain``) outside the brain mask.

        Raises:
            FileExistsError: if the file exists and ``overwrite`` is False.
        """
        import nibabel as nib

        shape = tuple(case.image.shape[1:])
        n_classes = len(prediction.probabilities)
        data = np.empty((*shape, n_classes), dtype=np.uint8)
        for k in range(n_classes):
            full = uncrop(
                prediction.probabilities[k], prediction.box, shape, fill=1.0 if k == 0 else 0.0
            )
            data[..., k] = np.rint(np.clip(full, 0.0, 1.0) * 255.0).astype(np.uint8)
        header = case.header.copy()
        header.set_data_dtype(np.uint8)
        img = nib.Nifti1Image(data, case.affine, header)
        img.header.set_slope_inter(1.0 / 255.0, 0.0)
        img.header["cal_min"], img.header["cal_max"] = 0.0, 1.0
        img.header["descrip"] = (
            b"class probs: background, NCR/NET, ED, ET"
            if n_classes == len(CLASS_LABELS)
            else f"class probs: {n_classes} classes".encode()
        )
        return save_nifti(img, self.probabilities(prediction.case_id), overwrite=overwrite)

    def write_record(self, record: Mapping[str, Any]) -> Path:
        """Write a :func:`case_record` to ``records/<ID>.json`` (atomically, replacing)."""
        path = self.record_path(record["case_id"])
        return write_text_atomic(path, _json_text(record), overwrite=True)

    def read_record(self, case_id: str) -> dict | None:
        """The case's record; None when it is missing or unreadable (logged)."""
        path = self.record_path(case_id)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            logger.warning("%s is unreadable; the case will be predicted again", path)
            return None

    def read_settings(self) -> dict | None:
        """The recorded :func:`prediction_settings`; None when missing or unreadable."""
        document = _read_json(self.settings_path)
        return document if isinstance(document, dict) else None

    def merge_records(self, case_ids: Collection[str] | None = None) -> pd.DataFrame:
        """Merge the ``records/<ID>.json`` files into ``predictions.csv`` (atomically, locked).

        Safe to call from several processes at once (``--shard``): the last one to finish
        writes the complete table. The lock is ``records/.lock`` (an empty file kept
        there), so the output folder itself holds only outputs.

        Args:
            case_ids: the case IDs of the whole input (every shard, readable or not).
                Records of other cases (removed from the input since they were predicted)
                are left out of the table, with an INFO log naming them; their label maps
                and records are kept. None: every record is merged.

        Returns:
            The table, one row per merged record, sorted by ``case_id``; columns
            :func:`csv_columns`.
        """
        import pandas as pd

        with self._lock():
            rows = []
            # dot-files (the lock, the settings record, temporary files) are not records
            for path in sorted(self.records_dir.glob("[!.]*.json")):
                try:
                    rows.append(json.loads(path.read_text()))
                except (OSError, json.JSONDecodeError):
                    logger.warning("skipping unreadable record %s", path)
            if case_ids is not None:
                wanted = set(case_ids)
                stale = sorted(
                    str(r.get("case_id")) for r in rows if r.get("case_id") not in wanted
                )
                if stale:
                    logger.info(
                        "%s: left out %d row(s) of cases no longer in the input: %s%s (their "
                        "label maps and records are kept)",
                        self.table,
                        len(stale),
                        ", ".join(stale[:10]),
                        ", ..." if len(stale) > 10 else "",
                    )
                rows = [r for r in rows if r.get("case_id") in wanted]
            table = pd.DataFrame(rows, columns=csv_columns(rows))
            table = table.sort_values("case_id", kind="stable").reset_index(drop=True)
            with atomic_output(self.table, overwrite=True) as tmp:
                table.to_csv(tmp, index=False, float_format=CSV_FLOAT_FORMAT)
        return table

    # --- ownership and resume -------------------------------------------------------

    def check_outside(self, input_dir: str | Path) -> None:
        """Refuse this folder when it is the input folder, lies inside it, or contains it.

        Label maps, ``predictions.csv`` and ``records/`` written among the input images
        would mix outputs with inputs, and the next discovery of the input would read
        them. Paths are compared after resolving symbolic links and ``..``.

        Args:
            input_dir: the folder of the cases to predict.

        Raises:
            ValueError: naming both folders and how they overlap.
        """
        source, target = Path(input_dir).resolve(), self.path.resolve()
        if target == source:
            how = "is the input folder"
        elif target.is_relative_to(source):
            how = "lies inside the input folder"
        elif source.is_relative_to(target):
            how = "contains the input folder"
        else:
            return
        raise ValueError(
            f"output folder {self.path} {how} {input_dir}: label maps, {CSV_NAME} and "
            f"{RECORDS_DIR}/ would be written among the input images. Choose an OUTPUT_DIR "
            f"outside INPUT_DIR that does not contain it, e.g. "
            f"{source.parent / (source.name + '_predictions')}"
        )

    def claim(
        self,
        settings: dict[str, Any],
        *,
        case_ids: Collection[str] = (),
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """Check that the folder was made with ``settings``, then record them.

        Under the lock of :meth:`merge_records`, so that shards starting together agree.
        A folder without ``records/.settings.json`` is new when it holds no record and no
        label map of ``case_ids``; else its predictions are of unknown origin.

        Args:
            settings: from :func:`prediction_settings`.
            case_ids: the case IDs of the whole input, to find label maps of unknown
                origin.
            overwrite: record ``settings`` whatever the folder holds (every case of the
                run is then predicted again; the caller does that).

        Returns:
            The settings now recorded: ``settings``, or for out-of-fold prediction with
            other folds than before, both runs' folds.

        Raises:
            FileExistsError: without ``overwrite``, when the recorded settings differ
                (:func:`settings_differences`: names the folder and lists each
                difference, old -> new) or the folder holds predictions without recorded
                settings; the message says to choose a new output folder or pass
                ``--overwrite``.

        Source: the resume rule of this module (not in the paper).
        """
        if not overwrite and not self.records_dir.exists():
            # checked before records/ (and its lock) is created, so that a refused folder
            # is left as it was; safe without the lock: a run records its settings before
            # it writes any label map, so label maps without records/ are not a running
            # shard's
            self._refuse_unknown_predictions(case_ids)
        with self._lock():
            old = self.read_settings()
            if old is None:
                if not overwrite:
                    self._refuse_unknown_predictions(case_ids)
                recorded = settings
            else:
                recorded = self._resumed_settings(old, settings, overwrite=overwrite)
            write_text_atomic(self.settings_path, _json_text(recorded), overwrite=True)
        return recorded

    def _resumed_settings(
        self, old: dict[str, Any], settings: dict[str, Any], *, overwrite: bool
    ) -> dict[str, Any]:
        """The settings to record over ``old``; raises when they differ (see :meth:`claim`)."""
        differences = settings_differences(old, settings)
        if differences and not overwrite:
            raise FileExistsError(
                f"{self.path} holds predictions made by another run folder or with other "
                f"settings (recorded in {self.settings_path}):\n  "
                + "\n  ".join(differences)
                + f"\nResuming would mix both in one folder. {_CHOOSE_ANOTHER_FOLDER}"
            )
        if differences:
            logger.warning(
                "%s: --overwrite: replacing the recorded settings; every case of this "
                "run is predicted again (%s)",
                self.path,
                "; ".join(differences),
            )
            return settings
        old_run = old.get("source", {}).get("run_dir")
        new_run = settings["source"].get("run_dir")
        if old_run and new_run and old_run != new_run:
            logger.info(
                "%s was predicted with %s; %s holds the same weights, resuming",
                self.path,
                old_run,
                new_run,
            )
        return _merged_settings(old, settings)

    def _refuse_unknown_predictions(self, case_ids: Collection[str]) -> None:
        """Raise FileExistsError if a folder without recorded settings holds predictions.

        Predictions: per-case records, label maps of ``case_ids``, or a table of the
        name ``predict`` writes (``predictions.csv``: another tool's, or a user's, which
        ``predict`` would replace).
        """
        records = [p.stem for p in self.records_dir.glob("[!.]*.json")]
        maps = [c for c in case_ids if self.label_map(c).exists()]
        found = sorted(set(records) | set(maps))
        if not found and self.table.exists():
            raise FileExistsError(
                f"{self.path} already holds {self.table.name} but no record of a brats-mtl "
                f"prediction ({self.settings_path}): it is not a table predict wrote and "
                f"would be replaced. {_CHOOSE_ANOTHER_FOLDER}"
            )
        if found:
            raise FileExistsError(
                f"{self.path} already holds predictions ({plural(len(found), 'case')}, e.g. "
                f"{', '.join(found[:3])}) but no readable record of the run folder and "
                f"settings that made them ({self.settings_path}); they may come from "
                f"another run or other settings. {_CHOOSE_ANOTHER_FOLDER}"
            )

    def finished_record(
        self,
        case_id: str,
        key: str,
        *,
        save_probabilities: bool = False,
        uncertainty: bool = False,
    ) -> dict | None:
        """The record of a case finished with these settings, else None (logged).

        Finished: its label map exists, its record has a finished status (:data:`FINISHED`)
        and carries ``key``, and (``uncertainty``) its three uncertainty maps exist. A
        missing probability map (``save_probabilities``) only warns: ``--overwrite``
        predicts the case again.

        Args:
            case_id: the case ID.
            key: :func:`case_settings_key` of this run for the case.
            save_probabilities: this run writes probability maps.
            uncertainty: this run writes uncertainty maps.

        Returns:
            The record read back, or None when the case must be predicted (again).
        """
        seg_path = self.label_map(case_id)
        if not seg_path.exists():
            return None
        record = self.read_record(case_id)
        if record is None or record.get("status") not in FINISHED:
            logger.info(
                "%s: %s exists without a record of its prediction; predicting it again",
                case_id,
                seg_path,
            )
            return None
        if record.get("settings_key") != key:
            logger.info(
                "%s: %s was made with other settings or weights than this run's; predicting "
                "it again",
                case_id,
                seg_path,
            )
            return None
        if uncertainty and not all(p.is_file() for p in self.uncertainty_maps(case_id)):
            logger.info("%s: an uncertainty map is missing; predicting it again", case_id)
            return None
        logger.info("%s: %s exists, skipped", case_id, seg_path)
        if save_probabilities and not self.probabilities(case_id).exists():
            logger.warning(
                "%s: label map exists but its probability map does not; use --overwrite to "
                "predict it again with --save-probabilities",
                case_id,
            )
        return record
