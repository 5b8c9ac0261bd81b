"""Predict cases and cohorts: preprocessing, fold models, ensemble, ET suppression, output.

For one case (:class:`Segmenter`): crop and z-score (docs/design.md section 2); each selected fold
model predicts the crop (sliding windows or the whole volume, mirror TTA); the fold
ensemble votes (paper 5.1); voxels outside the brain mask (non-zero in no modality, the
mask the crop is cut around) become background (``inference.mask_outside_brain``, on by
default; not in the paper: nnU-Net's BraTS convention, which keeps an under-trained
model from labelling the empty corners of the crop box as tumor); ET suppression runs on
the masked ensemble (paper, Inference); the label map is un-cropped to the input grid.

For a cohort (:func:`predict_cases`, :func:`predict_cohort`), in ``OUTPUT_DIR``:

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
  written before the first case (:func:`claim_output_dir`).
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
whose record carries this run's settings key is skipped, so an interrupted cohort (or
shard) resumes where it stopped; a label map without such a record (interrupted between
the two files, or left by an earlier ``overwrite`` run that was interrupted) is predicted
again; ``overwrite`` predicts every case again. Files of cases not predicted by the run
are never deleted; ``predictions.csv`` lists only the cases of the current input. Ctrl-C
stops at once, leaves no partial file, merges the table and raises
:class:`PredictionInterrupted`. A case that fails (unreadable or missing files, a case
folder without one of its modalities, NaN voxels) is logged and recorded with status
"error" and its message, and the others go on.

Degenerate inputs go on, as users of nnU-Net expect: a case whose four modalities are 0
everywhere (an empty brain mask) gets an all-background label map without running a model
(every voxel is outside the brain) and status "empty"; a modality constant inside the
brain (a blank scan) is 0 after normalisation (nnU-Net's ``max(std, 1e-8)``) and the case
is predicted from the others, status "degraded"; both with a WARNING naming the case or
the file, repeated in the ``warning`` column. Training refuses both (``training.cache``).

Source: paper, Inference and section 5.1; docs/design.md sections 2 and 5.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brats_mtl.config import Config, InferenceConfig, choices
from brats_mtl.conventions import CLASS_LABELS, uncertainty_map_name
from brats_mtl.data import (
    Case,
    CaseFiles,
    discover_cases,
    load_case,
    load_label_map,
    save_nifti,
    write_segmentation,
)
from brats_mtl.inference.ensemble import ENSEMBLE_METHODS, FoldEnsemble
from brats_mtl.inference.network import PRECISIONS, resolve_precision
from brats_mtl.inference.postprocess import region_volumes_ml, suppress_et
from brats_mtl.inference.sliding_window import (
    VolumePrediction,
    predict_sliding_window,
    predict_whole_volume,
    window_starts,
)
from brats_mtl.inference.tta import mirror_axes
from brats_mtl.inference.uncertainty import (
    MAP_REGIONS,
    RegionVotes,
    check_estimator,
    mean_uncertainty_in_regions,
    uncertainty_maps,
    write_uncertainty_maps,
)
from brats_mtl.preprocessing import Box, Preprocessed, crop, preprocess_case, uncrop
from brats_mtl.preprocessing import brain_mask as nonzero_mask
from brats_mtl.tasks import (
    LabelScheme,
    NetworkClasses,
    check_run_scheme,
    check_scheme_for_case,
    network_classes,
)

if TYPE_CHECKING:
    import pandas as pd

    from brats_mtl.training.splits import Splits

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


def csv_columns(rows: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """:data:`CSV_COLUMNS`, with the volume of every further region of a label scheme
    found in ``rows`` (``volume_NETC_ml``, ``volume_RC_ml``, ...) after ``volume_ET_ml``."""
    extra: list[str] = []
    for row in rows:
        extra += [
            k for k in row if k.startswith("volume_") and k not in CSV_COLUMNS and k not in extra
        ]
    at = CSV_COLUMNS.index("volume_ET_ml") + 1
    return [*CSV_COLUMNS[:at], *extra, *CSV_COLUMNS[at:]]


#: Floats of ``predictions.csv`` keep 6 significant digits (volumes: 0.001 ml up to
#: 999 ml), so binary noise such as ``62.431000000000004`` is not written.
CSV_FLOAT_FORMAT = "%.6g"
RECORDS_DIR = "records"
#: Lock file of :func:`merge_records`, inside ``records/`` so that no stray file is left
#: among the outputs.
LOCK_NAME = ".lock"
#: The run folder, weights and settings that made the folder's label maps, inside
#: ``records/`` (a dot-name: never a case ID). See :func:`claim_output_dir`.
SETTINGS_NAME = ".settings.json"
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
PROBABILITIES_DIR = "probabilities"
MODES: tuple[str, ...] = choices("inference.mode")


def check_inference_config(config: InferenceConfig) -> None:
    """Reject inference settings that cannot run, naming the ``inference.*`` key.

    Raises:
        ValueError: on an unknown ``tta``, ``mode``, ``ensemble`` or ``precision``, an
            ``overlap`` outside [0, 1), a ``window_batch_size`` below 1, an
            ``et_probability_threshold`` outside [0, 1] or a negative ``et_min_voxels``.
    """
    mirror_axes(config.tta)
    window_starts(1, 1, config.overlap)
    if config.mode not in MODES:
        raise ValueError(
            f"inference.mode={config.mode!r} is not one of {list(MODES)}; use window "
            "(sliding windows, the paper) or whole (one pass over the cropped brain, faster)"
        )
    if config.ensemble not in ENSEMBLE_METHODS:
        raise ValueError(
            f"inference.ensemble={config.ensemble!r} is not one of {list(ENSEMBLE_METHODS)}"
        )
    if config.window_batch_size < 1:
        raise ValueError(f"inference.window_batch_size={config.window_batch_size} must be >= 1")
    if not 0.0 <= config.et_probability_threshold <= 1.0:
        raise ValueError(
            f"inference.et_probability_threshold={config.et_probability_threshold} must be "
            "in [0, 1]"
        )
    if config.et_min_voxels < 0:
        raise ValueError(f"inference.et_min_voxels={config.et_min_voxels} must be >= 0")
    _check_precision(config.precision, "inference.precision")
    check_estimator(config.uncertainty)


def _check_precision(precision: str, name: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(
            f"{name}={precision!r} is not one of {list(PRECISIONS)}; use auto (bf16 on "
            "CPUs with AMX, else 32), 32 (float32) or bf16 (bfloat16 autocast)"
        )


@dataclass(frozen=True, eq=False)
class CasePrediction:
    """The prediction of one case.

    Attributes:
        case_id: the case ID.
        labels: uint8, (X, Y, Z) on the input grid: internal labels {0, 1, 2, 4} after
            the ensemble, the brain mask and ET suppression; 0 outside the crop box.
        probabilities: float32, (4, x, y, z) on the cropped grid: mean class
            probabilities of the folds (before suppression), class order
            ``conventions.CLASS_LABELS``; (1, 0, 0, 0) outside the brain mask when
            ``mask_outside_brain`` is on.
        box: the crop box in the input grid.
        et_probability: the case's ET probability (mean over folds).
        et_suppressed: True if ET suppression relabeled ET voxels as NCR/NET.
        folds: the fold models used.
        fold_et_probabilities: each fold's ET probability, in ``folds`` order.
        uncertainty: region ("WT", "TC", "ET") -> uint8 (x, y, z) map in [0, 100] on the
            cropped grid (``config.uncertainty``), 0 outside the brain mask; None when
            the estimator is "none".
    """

    case_id: str
    labels: np.ndarray
    probabilities: np.ndarray
    box: Box
    et_probability: float
    et_suppressed: bool
    folds: tuple[int, ...]
    fold_et_probabilities: tuple[float, ...]
    uncertainty: dict[str, np.ndarray] | None = None


class Segmenter:
    """Fold models plus inference settings: segments one case at a time.

    Each case is cropped to its brain box and z-scored; every selected fold model
    predicts the crop; the folds are combined (``config.ensemble``); with
    ``config.mask_outside_brain`` (default) the voxels of the box outside the brain mask
    (zero in every modality, ``preprocessing.brain_mask``) become background, in the
    label map and in the mean probabilities (background 1), in both modes; then ET
    suppression runs and the labels are un-cropped (background outside the box).

    Args:
        models: fold number -> model. A model is a ``MultiTaskNet`` (any mode) or, for
            the windowed mode, a ``Predictor`` callable (``brats_mtl.inference.
            sliding_window``), e.g. a toy function in tests.
        config: the ``inference`` section (TTA, overlap, batch, ET suppression, ensemble,
            mode, channels_last, device, precision, mask_outside_brain, uncertainty).
        patch_size: window edge; default: the models' ``config.patch_size`` (required for
            callables).
        precision: "auto" (bf16 on CPUs with AMX, else 32; ``network.
            resolve_precision``), "32" (float32) or "bf16" (bfloat16 autocast); default
            ``config.precision``. Not used by callables.
        classes: the network classes of the run's label scheme
            (``tasks.network_classes``): class -> internal label, ET and the label ET
            suppression relabels it to. Default: the paper's (brats2017).

    Raises:
        ValueError: on invalid settings, no models, mixed patch sizes, or a callable in
            whole-volume mode.

    Source: paper, Inference and 5.1; docs/design.md section 5; brain mask: nnU-Net's BraTS
    convention (not in the paper).
    """

    def __init__(
        self,
        models: Mapping[int, Any],
        config: InferenceConfig | None = None,
        *,
        patch_size: int | None = None,
        precision: str | None = None,
        classes: NetworkClasses | None = None,
    ) -> None:
        from brats_mtl.inference.network import (
            network_predictor,
            network_volume_predictor,
            resolve_device,
        )

        self.config = config = config or InferenceConfig()
        self.classes = network_classes() if classes is None else classes
        check_inference_config(config)
        if precision is None:
            precision = config.precision
        _check_precision(precision, "precision")
        self.precision = precision
        if not models:
            raise ValueError("no fold models to predict with")
        self.device = resolve_device(config.device)
        sizes = {int(m.config.patch_size) for m in models.values() if hasattr(m, "config")} | (
            {int(patch_size)} if patch_size else set()
        )
        if len(sizes) != 1:
            raise ValueError(
                f"patch sizes {sorted(sizes)}: give patch_size for callables, and use "
                "models of one run (one patch size)"
            )
        self.patch_size = sizes.pop()
        self._models = dict(sorted(models.items()))
        self._fingerprints: dict[int, str] | None = None
        self._runners: dict[int, Callable[[np.ndarray], VolumePrediction]] = {}
        for fold, model in sorted(models.items()):
            is_module = hasattr(model, "encode")
            if config.mode == "whole":
                if not is_module:
                    raise ValueError(
                        f"fold {fold}: inference.mode=whole needs a MultiTaskNet, got "
                        f"{type(model).__name__}; use inference.mode=window"
                    )
                volume_predictor = network_volume_predictor(
                    model,
                    device=self.device,
                    channels_last=config.channels_last,
                    precision=precision,
                )
                self._runners[fold] = self._whole_runner(volume_predictor, 2**model.depth)
            else:
                predictor = (
                    network_predictor(
                        model,
                        device=self.device,
                        channels_last=config.channels_last,
                        precision=precision,
                    )
                    if is_module
                    else model
                )
                self._runners[fold] = self._window_runner(predictor)

    @property
    def folds(self) -> tuple[int, ...]:
        """The fold numbers of the models, sorted."""
        return tuple(self._runners)

    @property
    def fingerprints(self) -> dict[int, str]:
        """Fold number -> identity of its model, computed once (:func:`model_fingerprint`).

        Recorded in a prediction folder so that a re-run with other weights is refused.
        """
        if self._fingerprints is None:
            self._fingerprints = {k: model_fingerprint(m) for k, m in self._models.items()}
        return dict(self._fingerprints)

    def _window_runner(self, predictor) -> Callable[[np.ndarray], VolumePrediction]:
        cfg = self.config

        def run(image: np.ndarray, progress=None, on_pass=None) -> VolumePrediction:
            return predict_sliding_window(
                image,
                predictor,
                patch_size=self.patch_size,
                overlap=cfg.overlap,
                tta=cfg.tta,
                batch_size=cfg.window_batch_size,
                device=self.device,
                progress=progress,
                on_pass=on_pass,
            )

        return run

    def _whole_runner(self, volume_predictor, multiple: int):
        cfg = self.config

        def run(image: np.ndarray, progress=None, on_pass=None) -> VolumePrediction:
            prediction = predict_whole_volume(
                image,
                volume_predictor,
                patch_size=self.patch_size,
                multiple=multiple,
                overlap=cfg.overlap,
                tta=cfg.tta,
                device=self.device,
                on_pass=on_pass,
            )
            if progress is not None:  # one pass per mirror: reported when all are done
                progress(1, 1)
            return prediction

        return run

    def predict_case(self, case: Case, *, folds: Sequence[int] | None = None) -> CasePrediction:
        """Segment one loaded case: crop and z-score, then :meth:`predict_preprocessed`
        with the case's exact brain mask.

        An empty brain (every voxel 0) gives an all-background label map and a modality
        constant inside the brain is 0 after normalisation, each with a WARNING naming
        the case or the file (:func:`degenerate_status`).

        Args:
            case: from ``brats_mtl.data.load_case`` (labels are not used).
            folds: the fold models to use (out-of-fold prediction: the case's own fold);
                default all.

        Returns:
            :class:`CasePrediction` on the input grid.

        Raises:
            ValueError: if a requested fold has no model, or preprocessing fails (NaN or
                inf voxels; names the case's file).
        """
        pre = preprocess_case(case, allow_degenerate=True)
        degenerate_status(case, pre)
        mask = nonzero_mask(crop(case.image, pre.box))
        return self.predict_preprocessed(pre, folds=folds, brain_mask=mask)

    def predict_preprocessed(
        self,
        pre: Preprocessed,
        *,
        folds: Sequence[int] | None = None,
        brain_mask: np.ndarray | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CasePrediction:
        """Segment one preprocessed case (``preprocessing.preprocess_case``).

        Args:
            pre: the cropped, z-scored case.
            folds: the fold models to use; default all.
            brain_mask: bool, (x, y, z) on the cropped grid: True where any raw modality
                is non-zero, i.e. ``preprocessing.brain_mask`` of the cropped raw image.
                Default: where any channel of ``pre.image`` is non-zero (the z-scored
                image is exactly 0 outside the brain; inside, all four channels are 0
                together only where every raw value equals its modality's mean). Used
                only with ``config.mask_outside_brain``.
            progress: called as windows finish with (done, total) over all folds, a unit
                being one window in one mirror pass of one fold (whole-volume mode: one
                fold); for progress bars.

        Returns:
            :class:`CasePrediction` on the input grid (``pre.original_shape``). For an
            empty brain (``pre.empty``) no model runs: all background, probabilities of
            shape (4, 0, 0, 0), ET probability NaN, uncertainty maps (when on) all 0.

        Raises:
            ValueError: if a requested fold has no model, or ``brain_mask`` does not
                have the crop's shape.
        """
        folds = self.folds if folds is None else tuple(folds)
        missing = [f for f in folds if f not in self._runners]
        if missing or not folds:
            raise ValueError(
                f"case {pre.case_id}: folds {list(missing) or list(folds)} have no model; "
                f"loaded folds: {list(self.folds)}"
            )
        if brain_mask is not None and np.shape(brain_mask) != pre.image.shape[1:]:
            raise ValueError(
                f"case {pre.case_id}: brain mask of shape {np.shape(brain_mask)} does not "
                f"match the cropped image {pre.image.shape[1:]}"
            )
        if pre.empty:  # no brain: every voxel is outside it, so background
            crop_shape = tuple(s.stop - s.start for s in pre.box)
            return CasePrediction(
                case_id=pre.case_id,
                labels=np.zeros(pre.original_shape, dtype=np.uint8),
                probabilities=np.zeros((self.classes.n_classes, 0, 0, 0), dtype=np.float32),
                box=pre.box,
                et_probability=float("nan"),
                et_suppressed=False,
                folds=folds,
                fold_et_probabilities=(float("nan"),) * len(folds),
                # maps of 0 (outside the brain), so that a resumed run finds them
                uncertainty=None
                if self.config.uncertainty == "none"
                else {r: np.zeros(crop_shape, dtype=np.uint8) for r in MAP_REGIONS},
            )
        ensemble = FoldEnsemble()
        # the disagreement estimator counts every pass of every fold (inference.uncertainty)
        counting = self.config.uncertainty == "disagreement"
        votes = RegionVotes(pre.image.shape[1:], self.classes) if counting else None
        for index, fold in enumerate(folds):
            fold_progress = None
            if progress is not None:

                def fold_progress(done: int, total: int, index: int = index) -> None:
                    progress(index * total + done, len(folds) * total)

            on_pass = None if votes is None else votes.add
            prediction = self._runners[fold](pre.image, fold_progress, on_pass=on_pass)
            ensemble.add(prediction.probs, prediction.et_probability)
            logger.debug(
                "case %s fold %d: ET probability %.3f over %d windows",
                pre.case_id,
                fold,
                prediction.et_probability,
                len(prediction.windows),
            )
            del prediction
        cfg = self.config
        et_probability = ensemble.et_probability()
        labels = self.classes.to_labels(ensemble.classes(cfg.ensemble))
        probabilities = ensemble.mean_probabilities()
        if cfg.mask_outside_brain:
            inside = nonzero_mask(pre.image) if brain_mask is None else brain_mask
            inside = np.asarray(inside, dtype=bool)
            labels = np.where(inside, labels, np.uint8(0))
            probabilities *= inside  # a new array: the ensemble's sum is untouched
            probabilities[0][~inside] = 1.0
        labels, suppressed = suppress_et(
            labels,
            et_probability,
            probability_threshold=cfg.et_probability_threshold,
            min_voxels=cfg.et_min_voxels,
            et_label=self.classes.et_label,
            core_label=self.classes.core_label,
        )
        unc_maps = None
        if cfg.uncertainty != "none":  # QU-BraTS maps, 0 outside the brain
            unc_maps = uncertainty_maps(
                cfg.uncertainty,
                probabilities=probabilities,
                labels=labels,
                inside=nonzero_mask(pre.image) if brain_mask is None else brain_mask,
                votes=votes,
                classes=self.classes,
            )
        return CasePrediction(
            case_id=pre.case_id,
            labels=uncrop(labels, pre.box, pre.original_shape, fill=0),
            probabilities=probabilities,
            box=pre.box,
            et_probability=et_probability,
            et_suppressed=suppressed,
            folds=folds,
            fold_et_probabilities=ensemble.et_probabilities,
            uncertainty=unc_maps,
        )


def degenerate_status(case: Case, pre: Preprocessed) -> tuple[str, str]:
    """Whether a case preprocessed with ``allow_degenerate`` is empty or degraded.

    Logs a WARNING naming the case (empty) or the modality's file (degraded).

    Args:
        case: the loaded case.
        pre: ``preprocessing.preprocess_case(case, allow_degenerate=True)``.

    Returns:
        ``(status, warning)``: ("empty", why) when every voxel of every modality is 0
        (the label map is all background); ("degraded", why) when a modality is constant
        inside the brain (0 after normalisation, the case is predicted from the others);
        else ("ok", "").

    Source: the rule of this module for degenerate inputs; the constant channel as
    nnU-Net's ``ZScoreNormalization``.
    """
    if pre.empty:
        files = sorted({str(Path(p).parent) for p in case.files.images.values()})
        warning = (
            f"every voxel of its four modalities ({', '.join(files)}) is 0, an empty brain "
            "mask: the segmentation is all background"
        )
    elif pre.constant_channels:
        named = [f"{case.files.images.get(m, case.case_id)} ({m})" for m in pre.constant_channels]
        verb = "is" if len(named) == 1 else "are"
        warning = (
            f"{', '.join(named)} {verb} constant inside the brain mask (blank or damaged?): "
            "0 after normalisation, so the case is predicted from the other modalities "
            "and may be poor; check the file"
        )
    else:
        return "ok", ""
    logger.warning("%s: %s", case.case_id, warning)
    return ("empty" if pre.empty else "degraded"), warning


def model_fingerprint(model: Any) -> str:
    """The identity of a fold model: a hash of its weights, or the name of a callable.

    Args:
        model: a ``MultiTaskNet`` (anything with ``state_dict()``) or a predictor callable.

    Returns:
        ``"sha256:<64 hex digits>"`` over every tensor of the state dict (name, dtype,
        shape, bytes), so the same weights saved again give the same value; for a
        callable without weights, ``"callable <module>.<name>"``. Hashing the 21 M
        float32 weights of the paper's network takes about 0.2 s on one CPU core.
    """
    if not hasattr(model, "state_dict"):
        named = model if hasattr(model, "__qualname__") else type(model)
        return f"callable {named.__module__}.{named.__qualname__}"
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return f"sha256:{digest.hexdigest()}"


def release_image(case: Case) -> Case:
    """The case with its raw image replaced by a zero-stride placeholder of the same shape.

    Writing results needs only the image's shape, affine and header; once the case is
    preprocessed, dropping the raw (4, 240, 240, 155) float32 array frees 143 MB for the
    network's peak. The placeholder reads as zeros and cannot be written to.
    """
    placeholder = np.broadcast_to(np.zeros((), dtype=case.image.dtype), case.image.shape)
    return dataclasses.replace(case, image=placeholder)


# --- files ------------------------------------------------------------------------------


def segmentation_path(output_dir: str | Path, case_id: str) -> Path:
    """``OUTPUT_DIR/<ID>.nii.gz``."""
    return Path(output_dir) / f"{case_id}.nii.gz"


def probabilities_path(output_dir: str | Path, case_id: str) -> Path:
    """``OUTPUT_DIR/probabilities/<ID>.nii.gz``."""
    return Path(output_dir) / PROBABILITIES_DIR / f"{case_id}.nii.gz"


def write_probabilities(
    prediction: CasePrediction, case: Case, path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write the class probabilities on the input grid as a scaled uint8 4-D NIfTI.

    Args:
        prediction: from :meth:`Segmenter.predict_case` for ``case``.
        case: the loaded case (affine and header of the output).
        path: output file (``.nii.gz`` or ``.nii``).
        overwrite: replace an existing file.

    Returns:
        ``path``. The image is (X, Y, Z, 4) uint8 with ``scl_slope = 1/255``,
        ``scl_inter = 0``; channel k = class ``CLASS_LABELS[k]``; background channel 1
        outside the brain crop and (``mask_outside_brain``) outside the brain mask.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
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
    return save_nifti(img, path, overwrite=overwrite)


def _write_json_atomic(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # NaN (no value) is written as null: standard JSON, read back as NaN by pandas
        clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in data.items()}
        tmp.write_text(json.dumps(clean, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _record_path(output_dir: Path, case_id: str) -> Path:
    return output_dir / RECORDS_DIR / f"{case_id}.json"


def _read_record(output_dir: Path, case_id: str) -> dict | None:
    path = _record_path(output_dir, case_id)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        logger.warning("%s is unreadable; the case will be predicted again", path)
        return None


def _record(
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
) -> dict:
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
        # not a CSV column: which settings made the label map (_case_key)
        "settings_key": settings_key,
    }


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX ``flock``; no lock elsewhere).

    The file is created empty if needed and kept: removing a lock file while another
    process waits on it would let a third process lock a new file at the same path.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def merge_records(output_dir: str | Path, case_ids: Collection[str] | None = None) -> pd.DataFrame:
    """Merge the ``records/<ID>.json`` files into ``predictions.csv`` (atomically, locked).

    Safe to call from several processes at once (``--shard``): the last one to finish
    writes the complete table. The lock is ``records/.lock`` (an empty file kept there),
    so the output folder itself holds only outputs.

    Args:
        output_dir: a prediction folder.
        case_ids: the case IDs of the whole input (every shard, readable or not). Records
            of other cases (removed from the input since they were predicted) are left
            out of the table, with an INFO log naming them; their label maps and records
            are kept. None: every record is merged.

    Returns:
        The table, one row per merged record, sorted by ``case_id``; columns
        :data:`CSV_COLUMNS`.
    """
    import pandas as pd

    output_dir = Path(output_dir)
    with _locked(output_dir / RECORDS_DIR / LOCK_NAME):
        rows = []
        # dot-files (the lock, the settings record, temporary files) are not case records
        for path in sorted((output_dir / RECORDS_DIR).glob("[!.]*.json")):
            try:
                rows.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError):
                logger.warning("skipping unreadable record %s", path)
        if case_ids is not None:
            wanted = set(case_ids)
            stale = sorted(str(r.get("case_id")) for r in rows if r.get("case_id") not in wanted)
            if stale:
                logger.info(
                    "%s: left out %d row(s) of cases no longer in the input: %s%s (their "
                    "label maps and records are kept)",
                    output_dir / CSV_NAME,
                    len(stale),
                    ", ".join(stale[:10]),
                    ", ..." if len(stale) > 10 else "",
                )
            rows = [r for r in rows if r.get("case_id") in wanted]
        table = pd.DataFrame(rows, columns=csv_columns(rows))
        table = table.sort_values("case_id", kind="stable").reset_index(drop=True)
        target = output_dir / CSV_NAME
        tmp = target.with_name(f".{CSV_NAME}.{uuid.uuid4().hex}.tmp")
        try:
            table.to_csv(tmp, index=False, float_format=CSV_FLOAT_FORMAT)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return table


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
            ``modified``), as :func:`predict_cohort` gives it. None for models given in
            memory.

    Returns:
        JSON-ready dict: ``settings`` (the :data:`LABEL_SETTINGS` of ``inference`` with
        the segmenter's precision as it runs, "32" or "bf16", the patch size, the folds, ``out_of_fold``, the label
        convention of the output), ``weights`` (fold -> :func:`model_fingerprint`),
        ``source`` and the package version.

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


def _settings_path(output_dir: Path) -> Path:
    return output_dir / RECORDS_DIR / SETTINGS_NAME


def _read_settings(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("%s is unreadable (%s)", path, exc)
        return None
    return document if isinstance(document, dict) else None


def _case_key(document: Mapping[str, Any], folds: Sequence[int]) -> str:
    """A short hash of what makes one case's label map: settings and its folds' weights."""
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


def claim_output_dir(
    output_dir: str | Path,
    settings: dict[str, Any],
    *,
    case_ids: Collection[str] = (),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Check that a prediction folder was made with ``settings``, then record them.

    Under the lock of :func:`merge_records`, so that shards starting together agree.
    A folder without ``records/.settings.json`` is new when it holds no record and no
    label map of ``case_ids``; else its predictions are of unknown origin.

    Args:
        output_dir: the prediction folder (created if needed).
        settings: from :func:`prediction_settings`.
        case_ids: the case IDs of the whole input, to find label maps of unknown origin.
        overwrite: record ``settings`` whatever the folder holds (every case of the run
            is then predicted again; the caller does that).

    Returns:
        The settings now recorded: ``settings``, or for out-of-fold prediction with
        other folds than before, both runs' folds.

    Raises:
        FileExistsError: without ``overwrite``, when the recorded settings differ
            (:func:`settings_differences`: names the folder and lists each difference,
            old -> new) or the folder holds predictions without recorded settings; the
            message says to choose a new output folder or pass ``--overwrite``.

    Source: the resume rule of this module (not in the paper).
    """
    output_dir = Path(output_dir)
    path = _settings_path(output_dir)
    if not overwrite and not (output_dir / RECORDS_DIR).exists():
        # checked before records/ (and its lock) is created, so that a refused folder is
        # left as it was; safe without the lock: a run records its settings before it
        # writes any label map, so label maps without records/ are not a running shard's
        _refuse_unknown_predictions(output_dir, case_ids)
    with _locked(output_dir / RECORDS_DIR / LOCK_NAME):
        old = _read_settings(path)
        if old is None:
            if not overwrite:
                _refuse_unknown_predictions(output_dir, case_ids)
            recorded = settings
        else:
            differences = settings_differences(old, settings)
            if differences and not overwrite:
                raise FileExistsError(
                    f"{output_dir} holds predictions made by another run folder or with other "
                    f"settings (recorded in {path}):\n  "
                    + "\n  ".join(differences)
                    + f"\nResuming would mix both in one folder. {_CHOOSE_ANOTHER_FOLDER}"
                )
            if differences:
                logger.warning(
                    "%s: --overwrite: replacing the recorded settings; every case of this "
                    "run is predicted again (%s)",
                    output_dir,
                    "; ".join(differences),
                )
                recorded = settings
            else:
                recorded = _merged_settings(old, settings)
                old_run = old.get("source", {}).get("run_dir")
                new_run = settings["source"].get("run_dir")
                if old_run and new_run and old_run != new_run:
                    logger.info(
                        "%s was predicted with %s; %s holds the same weights, resuming",
                        output_dir,
                        old_run,
                        new_run,
                    )
        _write_json_atomic(recorded, path)
    return recorded


_CHOOSE_ANOTHER_FOLDER = (
    "Choose a new output folder, or pass --overwrite to predict every case of this "
    "input again with the new settings (files of other cases are left alone)."
)


def _refuse_unknown_predictions(output_dir: Path, case_ids: Collection[str]) -> None:
    """Raise FileExistsError if a folder without recorded settings holds predictions."""
    records = [p.stem for p in (output_dir / RECORDS_DIR).glob("[!.]*.json")]
    maps = [c for c in case_ids if segmentation_path(output_dir, c).exists()]
    found = sorted(set(records) | set(maps))
    if found:
        raise FileExistsError(
            f"{output_dir} already holds predictions ({plural(len(found), 'case')}, e.g. "
            f"{', '.join(found[:3])}) but no readable record of the run folder and "
            f"settings that made them ({_settings_path(output_dir)}); they may come from "
            f"another run or other settings. {_CHOOSE_ANOTHER_FOLDER}"
        )


def plural(count: int, noun: str) -> str:
    """``"1 case"``, ``"2 cases"``: a count with its noun in the right number."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def check_output_outside_input(input_dir: str | Path, output_dir: str | Path) -> None:
    """Refuse an output folder that is the input folder, lies inside it, or contains it.

    Label maps, ``predictions.csv`` and ``records/`` written among the input images
    would mix outputs with inputs, and the next discovery of the input would read them.
    Paths are compared after resolving symbolic links and ``..``.

    Raises:
        ValueError: naming both folders and how they overlap.
    """
    source, target = Path(input_dir).resolve(), Path(output_dir).resolve()
    if target == source:
        how = "is the input folder"
    elif target.is_relative_to(source):
        how = "lies inside the input folder"
    elif source.is_relative_to(target):
        how = "contains the input folder"
    else:
        return
    raise ValueError(
        f"output folder {output_dir} {how} {input_dir}: label maps, {CSV_NAME} and "
        f"{RECORDS_DIR}/ would be written among the input images. Choose an OUTPUT_DIR "
        f"outside INPUT_DIR that does not contain it, e.g. "
        f"{source.parent / (source.name + '_predictions')}"
    )


# --- cohorts ----------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``.

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
        self.output_dir = Path(output_dir)
        self.total, self.finished, self.failed = total, finished, failed
        self.remaining = total - finished - failed
        super().__init__(
            f"prediction into {output_dir} interrupted: {finished} of "
            f"{plural(total, 'case')} finished, {failed} failed, {self.remaining} remain"
        )


class WindowProgress:
    """Progress inside one case, fed by :meth:`Segmenter.predict_preprocessed`.

    On a terminal (``bar=True``) a tqdm bar of windows (windows done / total, rate and
    time left) under the cohort's bar of cases; otherwise plain log lines: the first
    batch, then at most one line every ``every_s`` seconds, then the last, each with the
    windows done / total, the seconds so far and an estimate of the seconds left (the
    mean time per window so far times the windows left).

    Args:
        case_id: named in every line.
        bar: draw a tqdm bar (stdout and stderr are terminals) instead of log lines.
        every_s: seconds between two log lines.
        clock: seconds, monotonic (tests pass a fake clock).
    """

    def __init__(
        self,
        case_id: str,
        *,
        bar: bool,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.case_id = case_id
        self.every_s = every_s
        self._clock = clock
        self._use_bar = bar
        self._bar = None
        self._start = clock()
        self._last_line: float | None = None

    def __call__(self, done: int, total: int) -> None:
        """Record that ``done`` of ``total`` windows (x mirrors x folds) are finished."""
        if self._use_bar:
            from tqdm.auto import tqdm

            if self._bar is None:
                self._bar = tqdm(
                    total=total, desc=self.case_id, unit="window", position=1, leave=False
                )
            self._bar.update(done - self._bar.n)
            return
        now = self._clock()
        due = self._last_line is None or now - self._last_line >= self.every_s
        if not (due or done == total):
            return
        self._last_line = now
        elapsed = now - self._start
        left = elapsed / done * (total - done) if done else float("nan")
        logger.info(
            "%s: windows %d/%d (%.0f%%), %.0f s, about %.0f s left",
            self.case_id,
            done,
            total,
            100.0 * done / total,
            elapsed,
            left,
        )

    def close(self) -> None:
        """Remove the bar (the cohort's bar of cases stays)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


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

    First the folder's recorded settings are checked (:func:`claim_output_dir`): a
    folder filled by other models or with settings that change the label maps is
    refused unless ``overwrite``. Then a case is skipped when its label map exists and
    its record says it was made with these settings and weights; other cases are
    predicted (again).

    Args:
        cases: the cases (e.g. one shard of :func:`discover_prediction_cases`).
        segmenter: the fold models and settings.
        output_dir: created if needed; layout in the module docstring.
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
            left about every 30 s (:class:`WindowProgress`).
        cohort_ids: every case ID of the whole input (all shards, readable or not):
            ``predictions.csv`` lists only these (:func:`merge_records`). None: the
            table keeps every record, e.g. of other shards called with other lists.
        source: where the models come from (:func:`prediction_settings`).
        train_splits: fold -> the case IDs of its training split (``splits.json``). A
            case predicted by a fold that trained on it gets those folds in
            ``train_folds``, and one WARNING lists such cases: their scores are not
            held-out results. None: ``train_folds`` stays empty.

    Returns:
        One row per case of ``cases`` (predicted now, skipped, or failed), in order,
        then one per ``unreadable`` case; columns :data:`CSV_COLUMNS`; ``status`` is
        "ok", "empty" (every voxel 0: an all-background label map), "degraded" (a
        modality constant inside the brain: predicted with it 0 after normalisation;
        ``warning`` names the file) or "error" (with the message in ``error``).

    Raises:
        FileExistsError: the folder holds predictions of other models or settings, and
            ``overwrite`` is False (see :func:`claim_output_dir`).
        PredictionInterrupted: on Ctrl-C (a ``KeyboardInterrupt``), after clean-up.

    Source: docs/design.md section 5.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    unreadable = dict(unreadable or {})
    known_ids = [f.case_id for f in cases] + list(unreadable)
    recorded = claim_output_dir(
        output_dir,
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
        record = _record(
            case_id,
            folds_of(case_id),
            train_folds=train_folds_of(case_id),
            status="error",
            error=error,
        )
        _write_json_atomic(record, _record_path(output_dir, case_id))
        unreadable_rows.append(record)
    n_failed += len(unreadable_rows)
    bar = tqdm(cases, desc="predict", unit="case", disable=not progress)
    partial: Path | None = None  # a probability map written before its label map
    partial_maps: list[Path] = []  # uncertainty maps written before their label map
    try:
        for files in bar:
            bar.set_postfix_str(files.case_id)
            folds = folds_of(files.case_id)
            key = _case_key(recorded, folds)
            if not overwrite:
                record = _finished_record(
                    output_dir,
                    files.case_id,
                    key,
                    save_probabilities,
                    uncertainty=segmenter.config.uncertainty != "none",
                )
                if record is not None:
                    rows.append(record)
                    n_skipped += 1
                    continue
            start = time.perf_counter()
            try:
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
                    # a probability map without its label map is what an interrupted run
                    # leaves behind: this run's own output, replaced.
                    partial = probabilities_path(output_dir, files.case_id)
                    write_probabilities(prediction, case, partial, overwrite=True)
                if prediction.uncertainty is not None:  # replaced as the probabilities are
                    partial_maps = write_uncertainty_maps(
                        prediction.uncertainty, prediction.box, case, output_dir, overwrite=True
                    )
                # an existing label map here is this folder's own, made with other
                # settings (or overwrite was asked): replaced
                write_segmentation(
                    prediction.labels,
                    case,
                    segmentation_path(output_dir, files.case_id),
                    overwrite=True,
                    scheme=segmenter.classes.scheme,
                )
                partial = None
                partial_maps = []
                record = _record(
                    files.case_id,
                    folds,
                    train_folds=train_folds_of(files.case_id),
                    et_probability=prediction.et_probability,
                    et_suppressed=prediction.et_suppressed,
                    volumes_ml=region_volumes_ml(
                        prediction.labels, case.spacing_mm, segmenter.classes.regions
                    ),
                    seconds=time.perf_counter() - start,
                    status=status,
                    warning=warning,
                    settings_key=key,
                    mean_uncertainty=mean_uncertainty_in_regions(
                        crop(prediction.labels, prediction.box),
                        prediction.uncertainty,
                        segmenter.classes,
                    ),
                )
                n_done += 1
                logger.info(
                    "%s: ET probability %.3f%s, %.1f s",
                    files.case_id,
                    prediction.et_probability,
                    " (ET suppressed)" if prediction.et_suppressed else "",
                    record["seconds"],
                )
                del case, prediction
            except Exception as exc:  # one bad case must not stop the cohort
                partial = None
                partial_maps = []
                n_failed += 1
                logger.error("%s failed: %s", files.case_id, exc)
                logger.debug("traceback of %s", files.case_id, exc_info=True)
                record = _record(
                    files.case_id,
                    folds,
                    train_folds=train_folds_of(files.case_id),
                    seconds=time.perf_counter() - start,
                    status="error",
                    error=str(exc) or type(exc).__name__,
                )
            _write_json_atomic(record, _record_path(output_dir, files.case_id))
            rows.append(record)
    except KeyboardInterrupt:
        if partial is not None:
            partial.unlink(missing_ok=True)
        for path in partial_maps:
            path.unlink(missing_ok=True)
        merge_records(output_dir, cohort_ids)
        interrupted = PredictionInterrupted(
            output_dir, len(cases) + len(unreadable_rows), n_done + n_skipped, n_failed
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
            output_dir / CSV_NAME,
        )
        raise interrupted from None
    except SystemExit:  # SIGTERM (training.runner.Terminated): the same clean-up, then exit
        if partial is not None:
            partial.unlink(missing_ok=True)
        for path in partial_maps:
            path.unlink(missing_ok=True)
        merge_records(output_dir, cohort_ids)
        raise
    finally:
        bar.close()
    rows.extend(unreadable_rows)
    merge_records(output_dir, cohort_ids)
    logger.info(
        "%s predicted, %d skipped (already written), %d failed; table in %s",
        plural(n_done, "case"),
        n_skipped,
        n_failed,
        output_dir / CSV_NAME,
    )
    return pd.DataFrame(rows, columns=csv_columns(rows))


# statuses of a case whose label map was written
_FINISHED = ("ok", "empty", "degraded")


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


def _finished_record(
    output_dir: Path,
    case_id: str,
    key: str,
    save_probabilities: bool,
    *,
    uncertainty: bool = False,
) -> dict | None:
    """The record of a case finished with these settings (``key``), else None (logged)."""
    seg_path = segmentation_path(output_dir, case_id)
    if not seg_path.exists():
        return None
    record = _read_record(output_dir, case_id)
    if record is None or record.get("status") not in _FINISHED:
        logger.info(
            "%s: %s exists without a record of its prediction; predicting it again",
            case_id,
            seg_path,
        )
        return None
    if record.get("settings_key") != key:
        logger.info(
            "%s: %s was made with other settings or weights than this run's; predicting it again",
            case_id,
            seg_path,
        )
        return None
    if uncertainty and not all(
        (output_dir / uncertainty_map_name(case_id, r)).is_file() for r in MAP_REGIONS
    ):
        logger.info("%s: an uncertainty map is missing; predicting it again", case_id)
        return None
    logger.info("%s: %s exists, skipped", case_id, seg_path)
    if save_probabilities and not probabilities_path(output_dir, case_id).exists():
        logger.warning(
            "%s: label map exists but its probability map does not; use --overwrite to "
            "predict it again with --save-probabilities",
            case_id,
        )
    return record


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
    precision: str | None = None,
    progress: bool = False,
    labels: LabelScheme | str | None = None,
) -> pd.DataFrame:
    """Segment every case of ``input_dir`` with the fold models of a training run.

    The run's label scheme (``train.labels`` of its ``config.yaml``; none recorded: the
    paper's four classes) decides the classes, ET suppression, the values written and
    the regions of ``predictions.csv``; the input must be of a scheme with the same
    classes (:func:`check_input_schemes`).

    A case folder that cannot be read (a modality missing, two files for one modality)
    fails alone: it is recorded with status "error" and the others are predicted
    (:func:`discover_prediction_cases`).

    Args:
        run_dir: the training run (``config.yaml``, ``splits.json``,
            ``fold_K/checkpoints/{best,last}.ckpt``).
        input_dir: a dataset folder in any supported layout (``data.discover_cases``).
        output_dir: where the label maps, records and ``predictions.csv`` go.
        config: settings (the ``inference`` section is used); default: the run's
            ``config.yaml``.
        folds: fold models to use; default: every fold with a ``which`` checkpoint
            (for "best": with best.ckpt or last.ckpt).
        which: "best" or "last" checkpoint. A fold without best.ckpt (stopped before
            its first validation) is predicted with its last.ckpt, with a warning
            (:func:`resolve_checkpoint`); the settings record names the file loaded.
        out_of_fold: predict each case held out by a fold with that fold's model only
            (the paper's Table 3 "train set" row, docs/design.md section 4); cases held out by no
            selected fold are skipped with a warning. Without it, cases in the training
            split (``splits.json``) of a fold used are warned about and marked in
            ``train_folds``: scores on them are not held-out results.
        shard: ``(I, N)``: predict only shard I of N (:func:`select_shard`); every
            shard writes into the same ``output_dir`` with the same settings.
        overwrite: predict cases whose label map exists again, also into a folder
            filled by other models or settings (:func:`claim_output_dir`).
        save_probabilities: also write probability maps.
        precision: "32" or "bf16" (see :class:`Segmenter`); default
            ``config.inference.precision``.
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
            (:func:`check_output_outside_input`), when the input folder as a whole
            cannot be read (see :func:`discover_prediction_cases`), or when its label
            scheme differs from the run's (names both).
        PredictionInterrupted: on Ctrl-C, after clean-up (see :func:`predict_cases`).

    Source: paper, Inference, 5.1 and Table 3; docs/design.md sections 4 and 5.
    """
    from brats_mtl import training

    check_output_outside_input(input_dir, output_dir)
    config = config or training.read_run_config(run_dir)
    check_inference_config(config.inference)
    # the input first: a missing INPUT_DIR is named before any checkpoint warning
    cases, unreadable = discover_prediction_cases(input_dir)
    classes = network_classes(training.read_run_config(run_dir).train.labels)
    check_input_schemes(cases, classes, run_dir, labels)
    if folds is None:
        folds = training.available_folds(run_dir, which)
        if which == "best":
            folds = sorted(set(folds) | set(training.available_folds(run_dir, "last")))
        if not folds:
            names = "best.ckpt or last.ckpt" if which == "best" else "last.ckpt"
            raise ValueError(
                f"no fold of {run_dir} has a checkpoint (fold_K/checkpoints/{names}); train first"
            )
    folds = sorted(set(int(f) for f in folds))
    checkpoints = {k: resolve_checkpoint(run_dir, k, which) for k in folds}
    by_id = {c.case_id: c for c in cases}
    all_ids = sorted(set(by_id) | set(unreadable))
    case_folds: dict[str, list[int]] | None = None
    splits = _read_splits_if_any(run_dir, required=out_of_fold)
    if out_of_fold:
        case_folds = {cid: [k] for k in folds for cid in splits.val_ids(k)}
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
        ids = [cid for cid in all_ids if cid in case_folds]
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
    segmenter = Segmenter(models, config.inference, precision=precision, classes=classes)
    logger.info(
        "precision %s on %s",
        resolve_precision(segmenter.precision, segmenter.device),
        segmenter.device,
    )
    source = {
        "run_dir": str(Path(run_dir).resolve()),
        "which": which,
        # the files actually loaded (last.ckpt where best.ckpt was missing)
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
    """``splits.json`` of the run; None (logged) when it is missing and not ``required``."""
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

    ``best.ckpt`` is written at a fold's first validation, so a fold stopped before it
    has only ``last.ckpt``; that one is used then, with a WARNING naming the fold and
    the file.

    Args:
        run_dir: the training run folder.
        fold: the fold number.
        which: "best" or "last", as asked.

    Returns:
        "best" or "last".

    Raises:
        FileNotFoundError: if the fold has neither checkpoint: "fold K of RUN was not
            trained (no fold_K/checkpoints/best.ckpt or last.ckpt); trained folds: [...]"
            (``training.runner.check_fold_trained``).
    """
    from brats_mtl import training
    from brats_mtl.training.runner import check_fold_trained

    check_fold_trained(run_dir, fold)
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
    import datetime

    stat = path.stat()
    modified = datetime.datetime.fromtimestamp(stat.st_mtime).isoformat(timespec="seconds")
    return {"file": str(path.resolve()), "bytes": stat.st_size, "modified": modified}


def with_inference_overrides(config: Config, **values: Any) -> Config:
    """``config`` with ``inference`` fields replaced (None values are ignored)."""
    changes = {k: v for k, v in values.items() if v is not None}
    if not changes:
        return config
    return dataclasses.replace(config, inference=dataclasses.replace(config.inference, **changes))


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

    pred_dir = Path(pred_dir)
    csv = pred_dir / CSV_NAME
    if not csv.is_file():
        raise FileNotFoundError(f"{csv} does not exist; run brats-mtl predict into {pred_dir}")
    table = pd.read_csv(csv).set_index("case_id")
    from brats_mtl.data.discovery import discover_label_maps

    references = discover_label_maps(ref_dir)
    for case_id, row in table.iterrows():
        if case_id not in references or row["status"] != "ok" or pd.isna(row["et_probability"]):
            continue
        if str(row["et_suppressed"]).lower() == "true":
            raise ValueError(
                f"{csv}: case {case_id} was predicted with ET suppression; predict again "
                "with --set inference.et_min_voxels=0 to choose the threshold"
            )
        labels, _, _ = load_label_map(segmentation_path(pred_dir, str(case_id)))
        ref = references[case_id]
        reference, _, _ = load_label_map(ref.path, ref.label_convention)
        yield labels, float(row["et_probability"]), reference
