"""The Lightning module and data module of semi-supervised multi-task training.

Training step: the multi-task network with its VAE branch on every batch, the paper's
weighted loss ``0.1 L2 + 0.1 KL + 0.1 CE + 1 Dice`` (unlabeled patches: L2 and KL only),
Adam with learning rate 1e-4 and weight decay 1e-5 (paper, Training Procedure).

Validation: each held-out case is segmented whole by prediction's own sliding windows
(``inference.predict_sliding_window``: windows of P^3 placed as nnU-Net places them,
``inference.overlap``, Gaussian blending; no TTA), and scored with
``evaluation.metrics``' region Dice (both empty = 1, one empty = 0; docs/design.md
section 6), so the best checkpoint is chosen under the windowing it is used with.
The score is computed on the cropped grid: voxels outside the brain box are background in
both the prediction (uncropping fills 0) and, for BraTS data, the reference.

Source: paper, Training Procedure; docs/design.md sections 3, 4 and 6.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from brats_mtl.config import Config, from_dict, to_dict
from brats_mtl.conventions import REGION_ORDER
from brats_mtl.evaluation.metrics import dice, region_masks
from brats_mtl.inference.network import network_predictor
from brats_mtl.inference.sliding_window import predict_sliding_window
from brats_mtl.losses import multitask_loss
from brats_mtl.model import MultiTaskNet
from brats_mtl.tasks import network_classes
from brats_mtl.training.cache import CachedCase
from brats_mtl.training.csvio import read_csv, write_csv
from brats_mtl.training.datasets import (
    CaseDataset,
    PatchDataset,
    PatchSampler,
    RankSlice,
    ResumableLoader,
    worker_init,
)

logger = logging.getLogger(__name__)


def _defer_lightning_logging_to_root() -> None:
    """Print each Lightning log line once.

    ``import lightning`` gives the ``lightning`` logger its own stderr handler and leaves
    it propagating, so under a configured root handler (the ``brats-mtl`` CLI's, or an
    embedding program's) every Lightning line appears twice. Lightning's own handler is
    dropped then; without a root handler it stays, as Lightning intends.
    """
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)


_defer_lightning_logging_to_root()

#: Loss terms logged as ``train/<name>`` every step.
LOSS_TERMS = ("loss", "dice", "l2", "kl", "ce")


class MultiTaskModule(L.LightningModule):
    """The multi-task network with its loss, optimizer and validation by whole cases.

    Args:
        config: the whole configuration (or its dict form, as stored in checkpoints).
        val_case_ids: IDs of the validation cases, in the order of the validation
            dataset, to name the per-case rows.

    Attributes:
        net: the :class:`~brats_mtl.model.MultiTaskNet`.
        validation_rows: per-case rows of the latest validation (all processes merged):
            ``epoch, step, case_id, dice_ET, dice_WT, dice_TC, dice_mean``.

    Logged: ``train/loss``, ``train/dice``, ``train/l2``, ``train/kl``, ``train/ce`` every
    step; ``val/dice_ET``, ``val/dice_WT``, ``val/dice_TC``, ``val/dice_mean`` (means over
    the held-out cases) after each validation.

    Batches without any labeled patch (over all processes) leave the segmentation decoder
    and the classifier untouched: their gradients are dropped before the optimizer step,
    so neither Adam's moments nor the weight decay move them. Only L2 and KL apply to an
    unlabeled patch (docs/design.md section 3); with plain Adam the weight decay alone would
    shift every unused weight by about the learning rate per step.

    For an exact resume the module stores the torch random state (dropout, VAE sampling)
    in each checkpoint and restores it before the first batch after loading.
    """

    def __init__(self, config: Config | dict, val_case_ids: Sequence[str] = ()) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = from_dict(config)
        self.config = config
        self.save_hyperparameters({"config": to_dict(config)})
        self.net = MultiTaskNet(config.model)
        self._memory_format = (
            torch.channels_last_3d if config.train.channels_last else torch.contiguous_format
        )
        self.net = self.net.to(memory_format=self._memory_format)
        self.val_case_ids = list(val_case_ids)
        self.validation_rows: list[dict[str, Any]] = []
        self._epoch_rows: list[dict[str, Any]] = []
        self._rng_to_restore: dict[str, Any] | None = None
        self._batch_has_labels = True

    # --- training ---------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One step on a batch of patches (VAE branch on); logs every loss term."""
        image = batch["image"].contiguous(memory_format=self._memory_format)  # (B, 4, P, P, P)
        labeled = batch["labeled"]  # (B,)
        output = self.net(image, with_vae=True)
        terms = multitask_loss(
            output, image, batch["class_targets"], batch["et_target"], labeled, self.config.loss
        )
        for name in LOSS_TERMS:
            self.log(
                f"train/{name}",
                terms[name].detach(),
                on_step=True,
                on_epoch=False,
                batch_size=image.shape[0],
                prog_bar=name == "loss",
            )
        if self.trainer.world_size > 1:
            flag = torch.tensor(float(self._batch_has_labels), device=self.device)
            self._batch_has_labels = bool(self.trainer.strategy.reduce(flag, reduce_op="sum") > 0)
        return terms["loss"]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Note whether a training batch holds a labeled patch (on the CPU: no device sync)."""
        if self.trainer.training and isinstance(batch, dict) and "labeled" in batch:
            self._batch_has_labels = bool(batch["labeled"].any())
        return batch

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the segmentation decoder's and classifier's gradients on unlabeled batches."""
        if self._batch_has_labels:
            return
        for module in (self.net.seg_decoder, self.net.classifier):
            for p in module.parameters():
                p.grad = None

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Adam's parameter groups: one rate for the whole network, or one per part.

        With ``train.decoder_lr_scale`` and ``train.classifier_lr_scale`` both 1 (the
        paper: one rate) there is one group at ``train.lr``. Otherwise there are three: the
        shared encoder at ``train.lr``, the segmentation and VAE decoders at ``train.lr *
        train.decoder_lr_scale``, the ET classifier at ``train.lr *
        train.classifier_lr_scale``.

        Why the rates can differ: a convolution followed by GroupNorm is scale-invariant,
        so an Adam step of about ``lr`` per weight changes it by about ``lr / |w|``, and
        ``|w|`` shrinks with the fan-in (PyTorch's default init). The demo once trained
        everything at 3e-3: in its deep encoder stages (fan-in 648) that is a relative
        step 10x the paper's 1e-4 on its own network, and within 20 steps their output
        stopped depending on the input (across patches the bottleneck varied by 0.1-0.3 %
        of its spread). The segmentation decoder, fed by the shallow skip connections,
        still learned, but the ET classifier on the bottleneck could only learn the ET
        prior: one probability for every case of a fold, so ET suppression never fired.
        The classifier's own GroupNorm convolutions did the same at 3e-3 on an
        informative bottleneck. Measured on the demo's cohort: encoder 1e-4, decoders
        3e-3, classifier 1e-3 (see ``presets.demo_config``).

        Returns:
            Groups for ``torch.optim.Adam``, each ``{"params": [...], "lr": float}``.

        Raises:
            ValueError: if a scale is not positive.
        """
        t = self.config.train
        for name in ("decoder_lr_scale", "classifier_lr_scale"):
            if not getattr(t, name) > 0:
                raise ValueError(f"train.{name}={getattr(t, name)} must be positive")
        if t.decoder_lr_scale == 1 and t.classifier_lr_scale == 1:
            return [{"params": list(self.parameters()), "lr": t.lr}]
        net = self.net
        decoders = [*net.seg_decoder.parameters(), *net.vae_decoder.parameters()]
        groups = [
            {"params": list(net.encoder.parameters()), "lr": t.lr},
            {"params": decoders, "lr": t.lr * t.decoder_lr_scale},
            {"params": list(net.classifier.parameters()), "lr": t.lr * t.classifier_lr_scale},
        ]
        grouped = {id(p) for g in groups for p in g["params"]}
        if any(id(p) not in grouped for p in self.parameters()):  # a part added to the net
            raise RuntimeError("parameter_groups: a network parameter is in no group")
        return groups

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam at ``train.lr`` with weight decay ``train.weight_decay`` (paper).

        The decoders and the classifier are optionally faster (:meth:`parameter_groups`).
        """
        return torch.optim.Adam(
            self.parameter_groups(),
            lr=self.config.train.lr,
            weight_decay=self.config.train.weight_decay,
        )

    def on_train_start(self) -> None:
        """Align the logging step with the optimizer step after a resume.

        Lightning logs at ``_batches_that_stepped``, which it increments after the
        end-of-step validation; resuming from a checkpoint written by that validation
        leaves it one behind ``global_step`` (one optimizer step per batch here, so the
        two are equal in an uninterrupted run).
        """
        epoch_loop = self.trainer.fit_loop.epoch_loop
        if getattr(epoch_loop, "_batches_that_stepped", None) not in (None, self.global_step):
            epoch_loop._batches_that_stepped = self.global_step

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Restore the random state saved with the checkpoint this run resumed from."""
        if self._rng_to_restore is not None:
            torch.set_rng_state(self._rng_to_restore["torch"])
            cuda_states = self._rng_to_restore.get("cuda")
            if cuda_states and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(cuda_states)
            self._rng_to_restore = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Ask for a last validation when ``max_steps`` ends training inside an epoch."""
        max_steps = self.trainer.max_steps
        if max_steps is not None and 0 <= max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the torch random state (CPU and CUDA) for an exact resume."""
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the saved random state until the first training batch.

        Raises:
            ValueError: if the checkpoint's optimizer has another number of parameter
                groups than the configuration asks for (``train.decoder_lr_scale`` and
                ``train.classifier_lr_scale`` changed from both 1 to anything else, or
                back, since the checkpoint was written).
        """
        self._rng_to_restore = checkpoint.get("rng_states")
        states = checkpoint.get("optimizer_states") or []
        if states:
            t = self.config.train
            saved = len(states[0].get("param_groups", []))
            wanted = 1 if t.decoder_lr_scale == 1 and t.classifier_lr_scale == 1 else 3
            if saved != wanted:
                raise ValueError(
                    f"the checkpoint's optimizer has {saved} parameter group(s) but "
                    f"train.decoder_lr_scale={t.decoder_lr_scale} and "
                    f"train.classifier_lr_scale={t.classifier_lr_scale} need {wanted}: "
                    "resume with the learning-rate scales the fold was trained with"
                )

    # --- validation -------------------------------------------------------------------

    def predict_classes(self, image: torch.Tensor) -> torch.Tensor:
        """Class map of whole cropped cases by sliding windows (no TTA, no VAE).

        The windows are prediction's (``inference.predict_sliding_window``, as the
        ``Segmenter`` calls it): placed as nnU-Net places them with at least
        ``inference.overlap`` between neighbours, ``inference.window_batch_size`` at a
        time, blended with a Gaussian importance map; only the mirror TTA is left out.
        So the best checkpoint is chosen under the windowing it is used with.

        Args:
            image: float32 (B, 4, x, y, z), z-scored cropped cases.

        Returns:
            int64 (B, x, y, z), class indices 0..n_classes-1 (argmax of the blended
            softmax probabilities), on the CPU.
        """
        inference = self.config.inference
        # precision "32": the forward runs in the trainer's own precision (its autocast)
        predictor = network_predictor(
            self.net, device=self.device, channels_last=self.config.train.channels_last
        )
        classes = [
            predict_sliding_window(
                case,
                predictor,
                patch_size=self.config.model.patch_size,
                overlap=inference.overlap,
                tta=0,
                batch_size=inference.window_batch_size,
                device=self.device,
            ).probs.argmax(0)
            for case in image
        ]  # [(x, y, z)] * B
        return torch.from_numpy(np.stack(classes))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Segment one held-out case whole and score its region Dice.

        Dice and the region masks are ``evaluation.metrics``' (both empty = 1, one empty
        = 0), on the internal labels of the run's scheme (``train.labels``).
        """
        network = network_classes(self.config.train.labels)
        class_labels = np.asarray(network.labels)  # class index -> internal label
        predicted = class_labels[self.predict_classes(batch["image"]).numpy()]  # (B, x, y, z)
        reference = batch["labels"].cpu().numpy()  # (B, x, y, z) internal labels
        for i in range(predicted.shape[0]):
            index = int(batch["case_index"][i])
            row: dict[str, Any] = {
                "case_id": self.val_case_ids[index] if self.val_case_ids else str(index)
            }
            ours = region_masks(predicted[i], network.regions)
            theirs = region_masks(reference[i], network.regions)
            for region in REGION_ORDER:
                row[f"dice_{region}"] = dice(ours[region], theirs[region])
            row["dice_mean"] = sum(row[f"dice_{r}"] for r in REGION_ORDER) / len(REGION_ORDER)
            self._epoch_rows.append(row)

    def on_validation_epoch_start(self) -> None:
        """Start collecting per-case rows."""
        self._epoch_rows = []

    def on_validation_epoch_end(self) -> None:
        """Merge the rows of all processes and log the mean Dice per region."""
        rows = self._epoch_rows
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[list[dict[str, Any]]] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        rows = sorted({row["case_id"]: row for row in rows}.values(), key=lambda r: r["case_id"])
        self._epoch_rows = []
        if not rows:
            return
        for row in rows:
            row["epoch"] = int(self.current_epoch)
            row["step"] = int(self.global_step)
        self.validation_rows = rows
        for key in [f"dice_{r}" for r in REGION_ORDER] + ["dice_mean"]:
            mean = sum(row[key] for row in rows) / len(rows)
            # every process holds the same merged rows, so no further reduction is needed
            self.log(f"val/{key}", mean, prog_bar=key == "dice_mean", sync_dist=False)


class PatchDataModule(L.LightningDataModule):
    """Training patches and validation cases of one fold, as Lightning data.

    Args:
        config: the configuration (patch size, batch size, sampling, workers, seed).
        train_cases: cached training cases (labeled and unlabeled).
        val_cases: cached held-out cases (labeled); may be empty.

    The loaders are built when Lightning asks for them, so each process knows its rank:
    training patches are split over processes by :class:`PatchSampler`, validation cases
    by :class:`RankSlice` (Lightning's own distributed sampler is turned off).
    """

    def __init__(
        self,
        config: Config,
        train_cases: Sequence[CachedCase],
        val_cases: Sequence[CachedCase] = (),
    ) -> None:
        super().__init__()
        self.config = config
        t = config.train
        self.train_dataset = PatchDataset(
            train_cases,
            config.model.patch_size,
            sampling=t.patch_sampling,
            patches_per_case=t.random_patches_per_case,
            classes=network_classes(t.labels),
        )
        self.val_dataset = CaseDataset(val_cases) if val_cases else None

    def _loader_options(self) -> dict[str, Any]:
        workers = self.config.train.num_workers
        return {
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": torch.cuda.is_available(),
            "worker_init_fn": worker_init if workers > 0 else None,
        }

    def train_dataloader(self) -> ResumableLoader:
        """Shuffled patches of this process, batch ``train.batch_size``."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        sampler = PatchSampler(
            len(self.train_dataset), seed=self.config.train.seed, rank=rank, world_size=world
        )
        generator = torch.Generator().manual_seed(self.config.train.seed)

        def batches_done() -> int:
            return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

        return ResumableLoader(
            self.train_dataset,
            sampler,
            batches_done if trainer else None,
            batch_size=self.config.train.batch_size,
            # the loader's own generator: creating an iterator must not draw from the
            # global torch random state that dropout and VAE sampling use
            generator=generator,
            **self._loader_options(),
        )

    def val_dataloader(self) -> DataLoader | list:
        """Whole held-out cases, one per batch, split over processes."""
        if self.val_dataset is None:
            return []
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        options = self._loader_options()
        options["persistent_workers"] = False
        return DataLoader(
            self.val_dataset,
            batch_size=1,
            sampler=RankSlice(len(self.val_dataset), rank, world),
            generator=torch.Generator().manual_seed(self.config.train.seed),  # see above
            **options,
        )


#: Columns of ``fold_K/validation.csv``.
VALIDATION_COLUMNS = ("epoch", "step", "case_id", "dice_ET", "dice_WT", "dice_TC", "dice_mean")


class ValidationCsvWriter(L.Callback):
    """Write the per-case rows of every validation so far to a CSV file (process 0).

    On a resumed fit, rows of the earlier attempt up to the checkpoint's step are kept;
    on a fresh fit the file is started over.

    Args:
        path: e.g. ``RUN_DIR/fold_K/validation.csv``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Load the rows of the interrupted attempt when resuming (the step is restored)."""
        start = trainer.global_step
        # the rows of the checkpoint's own step (a validation before saving) stay valid
        self.rows = [r for r in read_csv(self.path) if int(r["step"]) <= start] if start else []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Append the latest validation's rows and rewrite the file."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        new = [
            r for r in getattr(pl_module, "validation_rows", []) if r["step"] == trainer.global_step
        ]
        if not new:
            return
        self.rows += [dict(r) for r in new]
        write_csv(self.path, self.rows, VALIDATION_COLUMNS)


class LastCheckpoint(L.Callback):
    """Keep ``last.ckpt`` current.

    It is saved every ``every_n_steps`` steps, at the final step, after every validation,
    and when SIGTERM stops training.

    Unlike ``ModelCheckpoint(save_last=True)``, nothing is saved when training ends or an
    epoch closes: a fit stopped by ``max_steps`` inside an epoch leaves a checkpoint of that
    point in the epoch, so resuming with a larger ``max_steps`` continues the same epoch
    with the same batches as an uninterrupted run. The file is written under a temporary
    name and renamed.

    On SIGTERM Lightning's loops raise ``SIGTERMException`` once the training step in
    progress is done; that point is a step boundary like the periodic saves, so it is
    saved too (not when the signal stopped a validation, which is not a resume point).

    Args:
        path: e.g. ``RUN_DIR/fold_K/checkpoints/last.ckpt``.
        every_n_steps: save period in optimizer steps (0: only final step and validations).
    """

    def __init__(self, path: str | Path, every_n_steps: int = 100) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps

    def _save(self, trainer: L.Trainer) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # all processes call; rank 0 writes
        if trainer.is_global_zero:
            tmp.replace(self.path)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        """Save every ``every_n_steps`` steps and at ``max_steps``."""
        step = trainer.global_step
        final = 0 <= trainer.max_steps <= step
        if final or (self.every_n_steps > 0 and step % self.every_n_steps == 0):
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save after each validation (the best-model bookkeeping is then current)."""
        if not trainer.sanity_checking:
            self._save(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Save the last finished training step when SIGTERM stops the fit."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and trainer.training and trainer.global_step > 0:
            self._save(trainer)
            logger.info("SIGTERM: saved step %d in %s", trainer.global_step, self.path)
