"""k-fold training runs: cache, splits, one Lightning fit per fold, in a run folder.

The run folder's layout: :mod:`brats_mtl.workspace.run_dir`.

SIGTERM handling: :mod:`brats_mtl.signals`.

Source: paper, Training Procedure; docs/design.md section 4.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pickle
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brats_mtl.config import Config, ModelConfig, parse_devices
from brats_mtl.data import CaseFiles, discover_cases
from brats_mtl.data.io import case_label_scheme
from brats_mtl.data.splits import (
    Splits,
    case_stratum,
    check_enough_cases,
    load_or_create_splits,
)
from brats_mtl.signals import Terminated, sigterm_deferred
from brats_mtl.tasks import get_label_scheme, network_classes, patient_id, pick_training_scheme
from brats_mtl.training.cache import CachedCase, UnusableCasesError, build_cache
from brats_mtl.training.csvio import read_csv, write_csv
from brats_mtl.workspace.ownership import (
    clear_fold_dir,
    prepare_run_dir,
    removed_if_unused_on_failure,
)
from brats_mtl.workspace.run_dir import FoldDir, RunDir, is_launch_rank_zero

logger = logging.getLogger(__name__)


def _lightning_warning_filters() -> None:
    """Hide the known Lightning warnings that no call of ours causes.

    Call it inside ``warnings.catch_warnings``.
    """
    # Source: lightning/pytorch/utilities/_pytree.py:21 (Lightning 2.6, used by its
    # CombinedLoader in every fit) builds torch.utils._pytree.LeafSpec(), which torch
    # (2.13 here) marks deprecated with a FutureWarning. No argument of our Trainer call
    # leads there; the fix belongs in Lightning.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    # Source: lightning/pytorch/callbacks/model_checkpoint.py (ModelCheckpoint.
    # __warn_if_dir_not_empty, Lightning 2.6) warns whenever the checkpoint folder holds a
    # file, i.e. on every resume; our checkpoints/ holds only last.ckpt and best.ckpt,
    # which are meant to be found there.
    warnings.filterwarnings(
        "ignore", message=r"Checkpoint directory .* exists and is not empty", category=UserWarning
    )
    # Source: lightning/pytorch/trainer/connectors/data_connector.py (Lightning 2.6) warns
    # when both the LightningModule and the LightningDataModule could define
    # on_before_batch_transfer; ours is defined on the module on purpose (it records
    # whether a batch holds a labeled patch, MultiTaskModule.on_before_batch_transfer),
    # and the data module has none, so the module's is the one that should run.
    warnings.filterwarnings(
        "ignore",
        message=r"You have overridden `on_before_batch_transfer` in `LightningModule`",
        category=UserWarning,
    )


@dataclass(frozen=True)
class FoldResult:
    """What one fold's training produced.

    Attributes:
        fold: the fold number.
        fold_dir: ``RUN_DIR/fold_K``.
        last_checkpoint: ``checkpoints/last.ckpt`` (None if training saved nothing).
        best_checkpoint: ``checkpoints/best.ckpt`` (None without validation).
        global_step: optimizer steps done.
        val_metrics: mean ``dice_ET``, ``dice_WT``, ``dice_TC``, ``dice_mean`` of the last
            validation (empty without validation).
        best_dice_mean: highest validation ``dice_mean`` (None without validation).
        already_done: True when a resumed fold's ``last.ckpt`` was already at
            ``train.max_steps`` and nothing was trained (``val_metrics`` is then empty and
            ``best_dice_mean`` None).
    """

    fold: int
    fold_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    global_step: int
    val_metrics: dict[str, float]
    best_dice_mean: float | None
    already_done: bool = False


@dataclass(frozen=True)
class RunData:
    """Cached cases and splits of a run.

    Attributes:
        labeled: case ID -> cached labeled case (the cross-validated cases).
        unlabeled: cached unlabeled cases (join every fold's training set).
        splits: the run's folds.
        config: the configuration with the label scheme resolved (``train.labels`` and
            ``model.n_classes`` set from the data; see :func:`resolve_label_scheme`).
    """

    labeled: dict[str, CachedCase]
    unlabeled: list[CachedCase]
    splits: Splits
    config: Config | None = None

    def fold_cases(self, fold: int) -> tuple[list[CachedCase], list[CachedCase]]:
        """(training cases, held-out cases) of ``fold``; unlabeled cases train in every fold."""
        train = [self.labeled[c] for c in self.splits.train_ids(fold)] + list(self.unlabeled)
        val = [self.labeled[c] for c in self.splits.val_ids(fold)]
        return train, val


# --- data ----------------------------------------------------------------------------


def prepare_run(
    data_dir: str | Path,
    run_dir: str | Path,
    config: Config,
    *,
    unlabeled_dirs: Sequence[str | Path] = (),
    cache_dir: str | Path | None = None,
) -> RunData:
    """Find the cases, cache them, load or make the splits and save the configuration.

    A run's results are its fold checkpoints (``RUN_DIR/fold_*/checkpoints/*.ckpt``);
    ``config.yaml`` and ``splits.json`` describe them. The rule, as users of nnU-Net
    (whose fold folders are what a run produced) and Lightning (where a checkpoint, not a
    log folder, is what resumes) expect:

    - no checkpoint anywhere in the run (a first attempt, or one that stopped before its
      first checkpoint, e.g. on a bad case or setting once training began):
      ``config.yaml`` is replaced by ``config`` and a ``splits.json`` that no longer fits
      (other cases, folds or seed) is made again, each with a WARNING naming what
      changed. A retry then needs no ``--overwrite``.
    - some fold holds a checkpoint: the run has results. A ``config`` whose ``model`` or
      ``loss`` differs is refused (the folds of one run form one ensemble of one
      network); changed ``train``/``inference``/``survival`` values (e.g. a larger
      ``train.max_steps`` to resume longer) are saved. Splits must match (see
      :func:`~brats_mtl.data.splits.load_or_create_splits`).
    - a ``config`` equal to the saved one is always accepted.

    ``config.yaml`` is written once the cases are cached and the splits are settled, so
    an attempt refused on its data or splits leaves the saved configuration as it was.

    Every case is checked before training: a case folder that cannot be read as a case
    (a missing modality) and a case whose files cannot be read or preprocessed (a
    truncated file, labels outside the convention, NaN voxels, shapes that differ) are
    collected over all folders, and one :class:`~brats_mtl.training.cache.UnusableCasesError`
    lists them all; the readable cases are cached first, so the retry reuses them.

    Args:
        data_dir: dataset folder (any supported layout); labeled cases are
            cross-validated, unlabeled ones (no segmentation) join every training set.
        run_dir: the run folder (created).
        config: the resolved configuration.
        unlabeled_dirs: further folders whose cases are used unlabeled (a segmentation
            there is ignored).
        cache_dir: folder of preprocessed cases; default ``RUN_DIR/cache``. May be shared
            by runs on the same data. ``config.train.cache_workers`` processes
            preprocess the cases (0: this process).

    Returns:
        The :class:`RunData`.

    Raises:
        UnusableCasesError: (a ``ValueError``) if some cases cannot be used (see above).
        FileNotFoundError, ValueError: no cases found, duplicate case IDs (from
            ``brats_mtl.data``); in a run with results, a changed model or loss or splits
            that do not match; fewer labeled cases than folds.

    Source: docs/design.md section 4 (splits saved and reused).
    """
    run = RunDir(run_dir)
    # every case is checked before training: broken case folders (a missing modality)
    # from discovery, unreadable files from caching; all of them are reported at once
    invalid: list[tuple[str, str]] = []
    consequence = "it cannot be used for training"
    cases = list(discover_cases(data_dir, invalid=invalid, consequence=consequence))
    flags = [c.labeled for c in cases]
    for folder in unlabeled_dirs:
        extra = discover_cases(folder, invalid=invalid, consequence=consequence)
        cases += extra
        flags += [False] * len(extra)
    labeled_files = [c for c, f in zip(cases, flags, strict=True) if f]
    config = resolve_label_scheme(config, labeled_files)
    has_results = run.check_config(config)
    # too few cases for the folds: said before any case is preprocessed
    ids = [c.case_id for c in labeled_files]
    check_enough_cases(ids, config.train.n_folds, {cid: patient_id(cid) for cid in ids})
    n_cases = len(cases) + len(invalid)
    try:
        cached = build_cache(
            cases,
            Path(cache_dir) if cache_dir is not None else run.cache,
            use_labels=flags,
            num_workers=config.train.cache_workers,
            scheme=config.train.labels,
        )
    except UnusableCasesError as error:
        raise UnusableCasesError(invalid + error.problems, n_cases) from None
    if invalid:
        raise UnusableCasesError(invalid, n_cases)
    labeled = {c.case_id: c for c in cached if c.labeled}
    unlabeled = [c for c in cached if not c.labeled]
    strata = {cid: case_stratum(c.grade, c.has_et) for cid, c in labeled.items()}
    splits = load_or_create_splits(
        run.splits_file,
        strata,
        config.train.n_folds,
        config.train.seed,
        unlabeled_ids=[c.case_id for c in unlabeled],
        replace_mismatched=not has_results,
        patients={cid: patient_id(cid) for cid in labeled},
    )
    run.save_config(config, has_results)
    logger.info(
        "%d labeled cases in %d folds, %d unlabeled cases",
        len(labeled),
        splits.n_folds,
        len(unlabeled),
    )
    return RunData(labeled=labeled, unlabeled=unlabeled, splits=splits, config=config)


def resolve_label_scheme(config: Config, labeled_cases: Sequence[CaseFiles]) -> Config:
    """``config`` with the training label scheme and the class count it implies.

    The scheme is ``train.labels`` when set (``--labels``), else the one every labeled
    case's segmentation is in (``data.case_label_scheme``; unlabeled cases join any
    scheme). ``model.n_classes`` becomes the scheme's class count (4 for brats2017, msd
    and brats2023: the paper's network; 5 for gli-post and ped2024). An inferred
    three-label scheme leaves ``config`` as it is (``train.labels`` None means the
    paper's four classes, whichever of the three files the cases are in), so the run
    folder of the paper's configuration on the paper's data is the same as ever.

    Raises:
        ValueError: on an unknown ``train.labels``; labeled cases whose schemes disagree
            (lists the cases per scheme); a ``model.n_classes`` set to another count than
            the default 4 or the scheme's.
        CaseDataError: a segmentation whose values name no scheme.

    Source: BraTS label tables (``brats_mtl.tasks``); paper section 4.2 (softmax over
    the classes, background first).
    """
    explicit = config.train.labels
    if explicit is not None:
        scheme = get_label_scheme(explicit)
    else:
        schemes = {}
        for files in labeled_cases:
            try:
                schemes[files.case_id] = case_label_scheme(files)
            except (ValueError, OSError):  # unreadable: caching reports it with the others
                continue
        scheme = pick_training_scheme(schemes)
    n_classes = network_classes(scheme).n_classes
    if config.model.n_classes not in (ModelConfig().n_classes, n_classes):
        raise ValueError(
            f"model.n_classes={config.model.n_classes} does not fit the {scheme.describe()} "
            f"label scheme ({n_classes} classes, background included); leave model.n_classes "
            "unset: the label scheme decides it"
        )
    if explicit is None and scheme.convention is not None:
        return config
    return dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, labels=scheme.name),
        model=dataclasses.replace(config.model, n_classes=n_classes),
    )


# --- Lightning -----------------------------------------------------------------------


def _uses_gpu(config: Config) -> bool:
    import torch

    accelerator = config.train.accelerator
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def _before_resume(row: dict[str, str], first_step: int) -> bool:
    step = int(row["step"])
    trained = any(v not in ("", None) for k, v in row.items() if k.startswith("train/"))
    return step < first_step or (step == first_step and not trained)


def merge_metrics(fold_path: Path) -> Path | None:
    """Merge the CSV logs of every attempt of a fold into ``fold_K/metrics.csv``.

    A resumed attempt starts at the step of its checkpoint; rows that earlier attempts
    logged from that step on (training done again after the interruption) are dropped,
    except a validation logged at exactly that step (it scored the checkpoint itself).

    Returns:
        The merged file, or None when there are no logs.
    """
    fold = FoldDir(Path(fold_path))
    merged: list[dict[str, str]] = []
    columns: list[str] = []
    for path in fold.attempt_logs():
        rows = read_csv(path)
        if not rows:
            continue
        first = min(int(r["step"]) for r in rows if r.get("step"))
        merged = [r for r in merged if _before_resume(r, first)] + rows
        columns += [c for c in rows[0] if c not in columns]
    if not merged:
        return None
    out = fold.metrics_csv
    write_csv(out, merged, columns)
    return out


def train_on_cases(
    config: Config,
    train_cases: Sequence[CachedCase],
    val_cases: Sequence[CachedCase],
    out_dir: str | Path,
    *,
    resume: bool = False,
    enable_progress_bar: bool = True,
    figure: bool = True,
    name: str | None = None,
) -> FoldResult:
    """Fit the multi-task network on cached cases with Lightning; write a fold folder.

    With ``resume``, a ``last.ckpt`` already at ``train.max_steps`` trains nothing: an
    INFO says so ("fold K already reached train.max_steps=N; nothing to train (raise
    train.max_steps to continue)"), no pre-training warning is given and the result has
    ``already_done=True``.

    ``last.ckpt`` is saved every ``train.checkpoint_every_n_steps`` optimizer steps too
    (besides every validation), bounding the work lost to an interruption. Deterministic
    algorithms follow ``train.deterministic``; when that is None, on the CPU only (several
    CUDA kernels of 3-D upsampling have no deterministic backward pass).

    Args:
        config: the configuration (network, loss, training settings).
        train_cases: training cases, labeled and unlabeled.
        val_cases: held-out labeled cases (may be empty: no validation, no best.ckpt).
        out_dir: the fold folder (``checkpoints/``, ``logs/``, ``metrics.csv``,
            ``validation.csv``, ``training_curves.png``).
        resume: continue from ``checkpoints/last.ckpt`` when it exists.
        enable_progress_bar: Lightning's progress bar; without it, plain INFO lines
            (:class:`~brats_mtl.training.progress.ProgressLog`: the first and last steps,
            one line every 30 s, one per validation).
        figure: save ``training_curves.png``.
        name: what messages call the fold (e.g. "fold 0"); default ``out_dir``.

    Returns:
        The :class:`FoldResult`.

    Raises:
        ValueError: if there are no training cases.
        Terminated: on SIGTERM during the fit (after saving the step in progress in
            ``last.ckpt``; see the module docstring).
    """
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from brats_mtl.training.checkpoints import BestCheckpoint
    from brats_mtl.training.module import (
        LastCheckpoint,
        MultiTaskModule,
        PatchDataModule,
        ValidationCsvWriter,
    )

    if not train_cases:
        raise ValueError("no training cases: the data folders hold no case for this fold")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fold = FoldDir(out)
    last, best = fold.checkpoint("last"), fold.checkpoint("best")
    t = config.train
    done = _resumed_at_max_steps(last, t.max_steps, resume)
    if done is not None:
        logger.info(
            "%s already reached train.max_steps=%d; nothing to train "
            "(raise train.max_steps to continue)",
            name or out,
            t.max_steps,
        )
        return FoldResult(
            fold=-1,
            fold_dir=out,
            last_checkpoint=last,
            best_checkpoint=best if best.is_file() else None,
            global_step=done,
            val_metrics={},
            best_dice_mean=None,
            already_done=True,
        )
    L.seed_everything(t.seed, workers=True, verbose=False)
    module = MultiTaskModule(config, val_case_ids=[c.case_id for c in val_cases])
    data = PatchDataModule(config, train_cases, val_cases)
    ckpt_dir = fold.checkpoint_dir
    has_val = bool(val_cases)
    # last.ckpt every N steps, at the final step and after each validation (never at
    # train end, see LastCheckpoint); best.ckpt at the validation with the highest mean Dice
    callbacks: list[Any] = [
        LastCheckpoint(last, t.checkpoint_every_n_steps),
        ValidationCsvWriter(fold.validation_csv),
    ]
    if not enable_progress_bar:  # plain log lines instead (logs that are files)
        from brats_mtl.training.progress import ProgressLog

        callbacks.append(ProgressLog(name or str(out)))
    best_cb = None
    if has_val:
        best_cb = BestCheckpoint(
            dirpath=ckpt_dir,
            filename=best.stem,
            monitor="val/dice_mean",
            mode="max",
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        callbacks.append(best_cb)
    gpu = _uses_gpu(config)
    deterministic = not gpu if t.deterministic is None else t.deterministic
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=parse_devices(t.devices),
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        check_val_every_n_epoch=t.val_every_n_epochs,
        limit_val_batches=1.0 if has_val else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps,
        # flush often: rows not yet flushed are lost when the process is killed
        logger=CSVLogger(
            save_dir=out, name=fold.logs_dir.name, flush_logs_every_n_steps=t.log_every_n_steps
        ),
        callbacks=callbacks,
        default_root_dir=out,
        deterministic=deterministic,
        benchmark=gpu and not deterministic,
        use_distributed_sampler=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
    )
    steps_per_epoch = _steps_per_epoch(len(data.train_dataset), t.batch_size, trainer.world_size)
    # Lightning warns on every fit whose epoch is shorter than the logging interval
    trainer.log_every_n_steps = max(1, min(t.log_every_n_steps, steps_per_epoch))
    if has_val:
        _warn_if_no_validation(t, steps_per_epoch, out)
    ckpt_path = str(last) if resume and last.is_file() else None
    if resume and ckpt_path is None:
        logger.info("no checkpoint in %s to resume from; training fold from scratch", ckpt_dir)
    terminated = False
    with sigterm_deferred() as sigterm:
        try:
            with warnings.catch_warnings():
                _lightning_warning_filters()
                trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        except SIGTERMException:
            terminated = True  # raised by Lightning's loops after the step; LastCheckpoint saved it
    # a SIGTERM during the last step or the final validation ends the fit normally
    terminated = terminated or trainer.received_sigterm or sigterm.received

    best_score = None
    if best_cb is not None and best_cb.best_model_score is not None:
        best_score = float(best_cb.best_model_score)
    if trainer.is_global_zero:
        merge_metrics(out)
    if terminated:
        raise Terminated(
            f"stopped by SIGTERM at step {trainer.global_step} of {out}; "
            f"{last if last.is_file() else 'no checkpoint'} holds the last saved step; "
            "run the command again with --resume to continue"
        )
    if trainer.is_global_zero:
        if figure and fold.metrics_csv.is_file():
            from brats_mtl.figures.training_curves import save_training_curves

            save_training_curves(fold.metrics_csv, fold.curves_png)
    rows = module.validation_rows
    val_metrics = {}
    if rows:
        for key in ("dice_ET", "dice_WT", "dice_TC", "dice_mean"):
            val_metrics[key] = sum(r[key] for r in rows) / len(rows)
    return FoldResult(
        fold=-1,
        fold_dir=out,
        last_checkpoint=last if last.is_file() else None,
        best_checkpoint=best if best.is_file() else None,
        global_step=int(trainer.global_step),
        val_metrics=val_metrics,
        best_dice_mean=best_score,
    )


def _resumed_at_max_steps(last: Path, max_steps: int, resume: bool) -> int | None:
    """The step of ``last`` when resuming from it would train nothing, else None.

    Resuming trains nothing when ``last`` is at or past ``max_steps``. None also when not
    resuming, without a checkpoint, or with ``max_steps`` < 0 (the epoch limit decides).
    """
    if not resume or max_steps < 0 or not last.is_file():
        return None
    import torch

    try:
        checkpoint = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        step = int(checkpoint["global_step"])
    except (RuntimeError, OSError, KeyError, ValueError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"checkpoint {last} cannot be read ({type(error).__name__}: {error}); it is damaged "
            "or not a brats-mtl checkpoint: delete it to resume from scratch, or train with "
            "--overwrite"
        ) from None
    return step if step >= max_steps else None


def _steps_per_epoch(n_patches: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps in one epoch of each process.

    :class:`PatchSampler` splits the patches over processes; the last batch may be short.
    """
    per_process = math.ceil(n_patches / max(world_size, 1))
    return max(1, math.ceil(per_process / batch_size))


def first_validation_step(train: Any, steps_per_epoch: int) -> int:
    """The optimizer step of the first validation when training runs long enough.

    That is ``val_every_n_epochs`` epochs of ``steps_per_epoch`` steps (Lightning's
    ``check_val_every_n_epoch``).
    """
    return train.val_every_n_epochs * steps_per_epoch


def _warn_if_no_validation(train: Any, steps_per_epoch: int, out: Path) -> None:
    """Log a WARNING when ``train.max_steps`` ends the fit before its first validation.

    The warning names the settings that would give one.

    Lightning validates at the end of every ``val_every_n_epochs``-th epoch, and
    :class:`~brats_mtl.training.module.MultiTaskModule` asks for a validation where
    ``max_steps`` stops training inside such an epoch; so a fit validates exactly when
    the epochs its steps reach, ``ceil(max_steps / steps_per_epoch)``, are at least
    ``val_every_n_epochs``.
    """
    max_steps = train.max_steps
    if max_steps < 0:
        max_steps = train.max_epochs * steps_per_epoch
    epochs = math.ceil(max_steps / steps_per_epoch)
    if epochs >= train.val_every_n_epochs:
        return
    first = first_validation_step(train, steps_per_epoch)
    logger.warning(
        "%s: training stops at step %d, before the first validation at step %d "
        "(train.val_every_n_epochs=%d x %d steps per epoch): no best.ckpt will be "
        "written and last.ckpt will be used; to validate, pass --set "
        "train.val_every_n_epochs=%d (a validation where training stops, in epoch %d) or "
        "--set train.max_steps=%d",
        out,
        max_steps,
        first,
        train.val_every_n_epochs,
        steps_per_epoch,
        max(epochs, 1),
        max(epochs, 1),
        first,
    )


def _prepare_fold_dir(path: Path, *, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: choose one")
    checkpoints = FoldDir(path).checkpoints()
    if overwrite:
        if path.exists() and is_launch_rank_zero():
            clear_fold_dir(path)
        return
    if checkpoints and not resume and is_launch_rank_zero():
        raise FileExistsError(
            f"{path} already holds checkpoints ({', '.join(p.name for p in checkpoints)}): "
            "pass --resume to continue training this fold or --overwrite to start it over"
        )


def train_fold(
    data_dir: str | Path,
    run_dir: str | Path,
    fold: int,
    *,
    config: Config | None = None,
    unlabeled_dirs: Sequence[str | Path] = (),
    resume: bool = False,
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
    enable_progress_bar: bool = True,
    command_line: str | None = None,
) -> FoldResult:
    """Train the model of one fold of a stratified k-fold cross-validation.

    The run folder must be new, empty or a brats-mtl run folder, and apart from the
    data folders (:func:`brats_mtl.workspace.ownership.prepare_run_dir`); ``overwrite``
    removes only what training wrote in the fold folder
    (:func:`brats_mtl.workspace.ownership.clear_fold_dir`).

    A run folder that this call created (or found empty) and in which nothing was
    written when it fails, e.g. on a DATA_DIR without cases, is removed again
    (:func:`brats_mtl.workspace.ownership.removed_if_unused_on_failure`).

    Args:
        data_dir: dataset folder; its labeled cases are split into folds.
        run_dir: the run folder (see the module docstring for its layout).
        fold: fold number, 0 .. ``train.n_folds - 1``.
        config: the configuration, every training setting included (e.g.
            ``train.cache_workers``, ``train.checkpoint_every_n_steps``,
            ``train.deterministic``; see :func:`train_on_cases`); None reuses
            ``RUN_DIR/config.yaml`` if present, else the paper's defaults. It is saved in
            ``config.yaml``, so that the file describes the run.
        unlabeled_dirs: further folders of cases used unlabeled (VAE branch only).
        resume: continue an interrupted fold from ``checkpoints/last.ckpt``.
        overwrite: delete the fold's folder and train it from scratch.
        cache_dir: folder of preprocessed cases (default ``RUN_DIR/cache``).
        enable_progress_bar: Lightning's progress bar (without it, plain log lines).
        command_line: recorded in the run folder's marker file when it is created.

    Returns:
        The :class:`FoldResult`.

    Raises:
        FileExistsError: if the fold already holds checkpoints and neither ``resume`` nor
            ``overwrite`` is set; if ``run_dir`` is a non-empty folder that brats-mtl did
            not create (with or without ``overwrite``).
        ValueError: bad fold number, mismatched run configuration or splits, too few
            labeled cases for the folds; ``run_dir`` and a data folder equal or nested.

    Source: paper, Training Procedure; docs/design.md section 4.
    """
    run_dir = Path(run_dir)
    if config is None:
        config = RunDir(run_dir).config_or(Config())
    if not 0 <= fold < config.train.n_folds:
        raise ValueError(
            f"fold {fold} does not exist: train.n_folds={config.train.n_folds} gives folds "
            f"0 to {config.train.n_folds - 1}"
        )
    rank_zero = is_launch_rank_zero()
    # a first attempt that fails before writing anything (no cases in DATA_DIR, a bad
    # setting) leaves no marked, empty run folder behind
    with removed_if_unused_on_failure(run_dir, enabled=rank_zero):
        if rank_zero:  # other ranks start once rank 0 has claimed the folder
            inputs = [("DATA_DIR", data_dir), *(("--unlabeled folder", u) for u in unlabeled_dirs)]
            prepare_run_dir(run_dir, overwrite=overwrite, inputs=inputs, command_line=command_line)
        path = RunDir(run_dir).fold_dir(fold)
        _prepare_fold_dir(path, resume=resume, overwrite=overwrite)
        run = prepare_run(
            data_dir,
            run_dir,
            config,
            unlabeled_dirs=unlabeled_dirs,
            cache_dir=cache_dir,
        )
        train_cases, val_cases = run.fold_cases(fold)
        config = run.config or config
        logger.info(
            "fold %d: %d training cases (%d unlabeled), %d held out",
            fold,
            len(train_cases),
            len(run.unlabeled),
            len(val_cases),
        )
        result = train_on_cases(
            config,
            train_cases,
            val_cases,
            path,
            resume=resume,
            enable_progress_bar=enable_progress_bar,
            name=f"fold {fold}",
        )
    return dataclasses.replace(result, fold=fold)


def train_folds(
    data_dir: str | Path,
    run_dir: str | Path,
    folds: Iterable[int] | None = None,
    **kwargs: Any,
) -> list[FoldResult]:
    """Train several folds one after the other (all of them by default).

    Args:
        data_dir: dataset folder.
        run_dir: the run folder.
        folds: fold numbers; None trains 0 .. ``train.n_folds - 1``.
        **kwargs: as :func:`train_fold` (``config``, ``unlabeled_dirs``, ``resume``, ...).

    Returns:
        One :class:`FoldResult` per fold, in order.
    """
    config = kwargs.pop("config", None)
    run_dir = Path(run_dir)
    if config is None:
        config = RunDir(run_dir).config_or(Config())
    folds = list(range(config.train.n_folds)) if folds is None else list(folds)
    return [train_fold(data_dir, run_dir, k, config=config, **kwargs) for k in folds]
