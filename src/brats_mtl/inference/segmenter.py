"""Segment one case: preprocessing, fold predictors, ensemble, brain mask, ET suppression.

For one case (:class:`Segmenter`): crop and z-score (docs/design.md section 2); each
selected fold predicts the crop (sliding windows or the whole volume, mirror TTA); the
fold ensemble votes (paper 5.1); voxels outside the brain mask (non-zero in no modality,
the mask the crop is cut around) become background (``inference.mask_outside_brain``, on
by default; not in the paper: nnU-Net's BraTS convention, which keeps an under-trained
model from labelling the empty corners of the crop box as tumor); ET suppression runs on
the masked ensemble (paper, Inference); the label map is un-cropped to the input grid.

Degenerate inputs go on, as users of nnU-Net expect: a case whose four modalities are 0
everywhere (an empty brain mask) gets an all-background label map without running a model
(every voxel is outside the brain), status "empty"; a modality constant inside the brain
(a blank scan) is 0 after normalisation (nnU-Net's ``max(std, 1e-8)``) and the case is
predicted from the others, status "degraded" (:func:`degenerate_status`). Training
refuses both (``training.cache``).

Nothing here reads or writes folders: the prediction folder is
``brats_mtl.workspace.prediction_dir``, cohorts are ``brats_mtl.predict``.

Source: paper, Inference and section 5.1; docs/design.md sections 2 and 5.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brats_mtl.config import InferenceConfig, choices
from brats_mtl.conventions import Box
from brats_mtl.data import Case
from brats_mtl.inference.ensemble import ENSEMBLE_METHODS, FoldEnsemble
from brats_mtl.inference.network import (
    PRECISIONS,
    network_predictor,
    network_volume_predictor,
    resolve_device,
)
from brats_mtl.inference.postprocess import suppress_et
from brats_mtl.inference.sliding_window import (
    Predictor,
    VolumePrediction,
    VolumePredictor,
    predict_sliding_window,
    predict_whole_volume,
    window_starts,
)
from brats_mtl.inference.tta import mirror_axes
from brats_mtl.inference.uncertainty import (
    MAP_REGIONS,
    RegionVotes,
    check_estimator,
    uncertainty_maps,
)
from brats_mtl.preprocessing import Preprocessed, crop, preprocess_case, uncrop
from brats_mtl.preprocessing import brain_mask as nonzero_mask
from brats_mtl.tasks import NetworkClasses, network_classes

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = choices("inference.mode")


def check_inference_config(config: InferenceConfig) -> None:
    """Reject inference settings that cannot run, naming the ``inference.*`` key.

    Args:
        config: the ``inference`` section.

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
    if config.precision not in PRECISIONS:
        raise ValueError(
            f"inference.precision={config.precision!r} is not one of {list(PRECISIONS)}; use "
            "auto (bf16 on CPUs with AMX, else 32), 32 (float32) or bf16 (bfloat16 autocast)"
        )
    check_estimator(config.uncertainty)


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


@dataclass(frozen=True)
class WholeVolumePredictor:
    """A fold predictor for ``inference.mode=whole``: one pass over the whole crop.

    Attributes:
        predict: ``brats_mtl.inference.sliding_window.VolumePredictor``, e.g.
            ``network.network_volume_predictor`` of a ``MultiTaskNet``.
        multiple: the padded crop's edges are multiples of this (``2 ** depth`` of the
            encoder, so that every downsampling halves an integer size).
    """

    predict: VolumePredictor
    multiple: int


_Runner = Callable[..., VolumePrediction]


class Segmenter:
    """Fold predictors plus inference settings: segments one case at a time.

    Each case is cropped to its brain box and z-scored; every selected fold predicts the
    crop; the folds are combined (``config.ensemble``); with ``config.mask_outside_brain``
    (default) the voxels of the box outside the brain mask (zero in every modality,
    ``preprocessing.brain_mask``) become background, in the label map and in the mean
    probabilities (background 1), in both modes; then ET suppression runs and the labels
    are un-cropped (background outside the box).

    Build it from trained networks with :meth:`from_models`; the constructor takes
    predictors (callables), e.g. toy functions in tests.

    Args:
        predictors: fold number -> predictor: a windowed ``Predictor`` callable
            (``brats_mtl.inference.sliding_window``) for ``inference.mode=window``, a
            :class:`WholeVolumePredictor` for ``inference.mode=whole``.
        config: the ``inference`` section (TTA, overlap, batch, ET suppression, ensemble,
            mode, channels_last, device, precision, mask_outside_brain, uncertainty).
        patch_size: window edge in voxels (``model.patch_size`` of the run).
        classes: the network classes of the run's label scheme
            (``tasks.network_classes``): class -> internal label, ET and the label ET
            suppression relabels it to. Default: the paper's (brats2017).
        models: fold number -> what :attr:`fingerprints` identifies (the fold models
            behind the predictors); default the predictors themselves.

    Raises:
        ValueError: on invalid settings, no predictors, or a predictor of the other mode.

    Source: paper, Inference and 5.1; docs/design.md section 5; brain mask: nnU-Net's BraTS
    convention (not in the paper).
    """

    def __init__(
        self,
        predictors: Mapping[int, Predictor | WholeVolumePredictor],
        config: InferenceConfig,
        *,
        patch_size: int,
        classes: NetworkClasses | None = None,
        models: Mapping[int, Any] | None = None,
    ) -> None:
        """Check the settings and wrap each predictor in its mode's runner (see the class)."""
        check_inference_config(config)
        if not predictors:
            raise ValueError("no fold models to predict with")
        self.config = config
        self.classes = network_classes() if classes is None else classes
        self.precision = config.precision
        self.device = resolve_device(config.device)
        self.patch_size = int(patch_size)
        self._models = dict(sorted((models or predictors).items()))
        self._fingerprints: dict[int, str] | None = None
        self._runners: dict[int, _Runner] = {}
        for fold, predictor in sorted(predictors.items()):
            whole = isinstance(predictor, WholeVolumePredictor)
            if config.mode == "whole" and not whole:
                raise ValueError(
                    f"fold {fold}: inference.mode=whole needs a MultiTaskNet "
                    f"(Segmenter.from_models), got {type(predictor).__name__}; use "
                    "inference.mode=window"
                )
            if config.mode == "window" and whole:
                raise ValueError(
                    f"fold {fold}: a WholeVolumePredictor runs only with inference.mode=whole"
                )
            self._runners[fold] = (
                self._whole_runner(predictor) if whole else self._window_runner(predictor)
            )

    @classmethod
    def from_models(
        cls,
        models: Mapping[int, Any],
        config: InferenceConfig,
        *,
        classes: NetworkClasses | None = None,
    ) -> Segmenter:
        """A segmenter of trained fold networks.

        Each network is put in eval mode on ``config.device`` (in place) and runs in
        ``config.precision`` and ``config.channels_last``; windowed or whole-volume as
        ``config.mode`` says. Its weights are what :attr:`fingerprints` hashes.

        Args:
            models: fold number -> ``brats_mtl.model.MultiTaskNet`` (e.g. from
                ``training.load_fold_model``), all of one patch size.
            config: the ``inference`` section (see the class).
            classes: the network classes of the run's label scheme (see the class).

        Returns:
            The :class:`Segmenter`, with ``patch_size`` the models' ``config.patch_size``.

        Raises:
            TypeError: if a model is not a ``MultiTaskNet``.
            ValueError: on invalid settings, no models, or models of several patch sizes.
        """
        from brats_mtl.model import MultiTaskNet

        check_inference_config(config)
        for fold, model in models.items():
            if not isinstance(model, MultiTaskNet):
                raise TypeError(
                    f"fold {fold}: Segmenter.from_models needs MultiTaskNet models, got "
                    f"{type(model).__name__}; give callables to Segmenter(predictors, config, "
                    "patch_size=...)"
                )
        sizes = {int(m.config.patch_size) for m in models.values()}
        if len(sizes) > 1:
            raise ValueError(
                f"patch sizes {sorted(sizes)}: use the fold models of one run (one patch size)"
            )
        if not sizes:
            raise ValueError("no fold models to predict with")
        device = resolve_device(config.device)
        options = dict(
            device=device, channels_last=config.channels_last, precision=config.precision
        )
        predictors: dict[int, Predictor | WholeVolumePredictor] = {
            fold: (
                WholeVolumePredictor(network_volume_predictor(model, **options), 2**model.depth)
                if config.mode == "whole"
                else network_predictor(model, **options)
            )
            for fold, model in models.items()
        }
        return cls(predictors, config, patch_size=sizes.pop(), classes=classes, models=models)

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

    def _window_runner(self, predictor: Predictor) -> _Runner:
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

    def _whole_runner(self, predictor: WholeVolumePredictor) -> _Runner:
        cfg = self.config

        def run(image: np.ndarray, progress=None, on_pass=None) -> VolumePrediction:
            prediction = predict_whole_volume(
                image,
                predictor.predict,
                patch_size=self.patch_size,
                multiple=predictor.multiple,
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
        """Segment one loaded case: crop, z-score, then :meth:`predict_preprocessed`.

        The case's exact brain mask is used. An empty brain (every voxel 0) gives an
        all-background label map and a modality constant inside the brain is 0 after
        normalisation, each with a WARNING naming the case or the file
        (:func:`degenerate_status`).

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

    Args:
        case: a loaded case.

    Returns:
        The same case with ``image`` a read-only zero-stride array of its shape and dtype.
    """
    placeholder = np.broadcast_to(np.zeros((), dtype=case.image.dtype), case.image.shape)
    return dataclasses.replace(case, image=placeholder)


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
        """Start the clock of the case (see the class)."""
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
