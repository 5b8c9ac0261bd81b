"""Plain log lines of a training fit, for logs that are not a terminal.

A progress bar redraws itself many times a second; written into a file (a batch job's
log, ``make demo > demo.log``) each redraw is kept, and a short demo produced a log of
hundreds of kilobytes. Without a bar, :class:`ProgressLog` writes one INFO line at the
first step, then at most one every ``every_s`` seconds, one at the last step, and one per
validation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L

logger = logging.getLogger(__name__)

#: Seconds between two step lines of :class:`ProgressLog` (the first and last steps are
#: always logged).
LOG_EVERY_S = 30.0


class ProgressLog(L.Callback):
    """Log a fit's progress as plain lines (process 0 only).

    Lines look like ``fold 0: step 40/160, loss 0.8123, 0.21 s/step, about 25 s left``
    and ``fold 0: validation at step 40: Dice ET 0.512, WT 0.833, TC 0.601 (mean 0.649)``.

    Args:
        name: what the lines call the fit, e.g. ``"fold 0"``.
        every_s: seconds between two step lines (the first and the last step are always
            logged; 0 logs every step).
        clock: seconds of a monotonic clock (tests pass their own).
    """

    def __init__(
        self, name: str, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.every_s = every_s
        self.clock = clock
        self._start: tuple[float, int] = (0.0, 0)
        self._last_line: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start timing at the first step of this attempt (a resume starts later)."""
        self._start = (self.clock(), int(trainer.global_step))
        self._last_line = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        """One line at the first step, every ``every_s`` seconds and at the last step."""
        if not trainer.is_global_zero:
            return
        now, step, total = self.clock(), int(trainer.global_step), _total_steps(trainer)
        last = total is not None and step >= total
        due = self._last_line is None or now - self._last_line >= self.every_s
        if not (due or last):
            return
        self._last_line = now
        start_time, start_step = self._start
        done = step - start_step
        seconds_per_step = (now - start_time) / done if done > 0 else math.nan
        parts = [f"step {step}" + (f"/{total}" if total is not None else "")]
        loss = _loss(outputs)
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if done > 0:
            parts.append(f"{seconds_per_step:.2f} s/step")
            if total is not None and not last:
                parts.append(f"about {_duration((total - step) * seconds_per_step)} left")
        logger.info("%s: %s", self.name, ", ".join(parts))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """One line with the validation's mean Dice per region."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        values = {k: metrics.get(f"val/dice_{k}") for k in ("ET", "WT", "TC", "mean")}
        if any(v is None for v in values.values()):
            return
        dice = {k: float(v) for k, v in values.items()}
        logger.info(
            "%s: validation at step %d: Dice ET %.3f, WT %.3f, TC %.3f (mean %.3f)",
            self.name,
            trainer.global_step,
            dice["ET"],
            dice["WT"],
            dice["TC"],
            dice["mean"],
        )


def _total_steps(trainer: L.Trainer) -> int | None:
    """``max_steps``, else ``max_epochs`` x batches per epoch when known, else None."""
    if trainer.max_steps is not None and trainer.max_steps >= 0:
        return int(trainer.max_steps)
    batches = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs >= 0 and math.isfinite(batches):
        return int(trainer.max_epochs * batches)
    return None


def _loss(outputs: Any) -> float | None:
    """The training step's loss from what Lightning passes to ``on_train_batch_end``."""
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    try:
        return float(outputs)
    except (TypeError, ValueError, RuntimeError):
        return None


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
