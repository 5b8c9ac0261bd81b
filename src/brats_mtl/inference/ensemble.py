"""Fold ensemble: per-voxel majority vote of the fold models' label maps (paper 5.1).

Each fold model gives TTA-averaged probabilities on the cropped grid; its label map is
their argmax. The ensemble's label is the class most folds voted for; a tie (e.g. 2-2-1
with five folds, or 1-1 with two) goes to the tied class with the highest mean
probability over the folds. Probability averaging (argmax of the mean) is the option
``inference.ensemble="mean"``. The ensemble's ET probability is the mean of the folds'.

ET suppression is applied after the ensemble, once, with the ensemble's ET probability
and ET volume: the mean probability of five classifiers is the better "no ET" signal, and
suppressing inside each fold before voting would let the rule act on single-model volumes
that the vote then mixes (a fold could lose its ET votes to NCR/NET while the others keep
ET, making the ensemble's ET smaller without any rule having looked at it).

Fold maps are held as uint8 class indices and the probabilities as one float32 running
sum, so memory grows by one byte per voxel and fold.

Source: paper section 5.1 (ensemble of the five fold models by majority vote);
docs/design.md section 5.
"""

from __future__ import annotations

import math

import numpy as np

from brats_mtl.config import check_choice, choices
from brats_mtl.conventions import classes_to_labels

#: Accepted ``inference.ensemble`` values.
ENSEMBLE_METHODS: tuple[str, ...] = choices("inference.ensemble")


def majority_vote(class_maps: np.ndarray, mean_probs: np.ndarray) -> np.ndarray:
    """Per-voxel majority vote with ties broken by the mean probability.

    Args:
        class_maps: integer, (F, X, Y, Z): each fold's class index per voxel, in
            ``0 .. C-1``.
        mean_probs: float, (C, X, Y, Z): the folds' mean class probabilities.

    Returns:
        int64, (X, Y, Z): the class with the most votes; among classes with equally many
        votes, the one with the highest ``mean_probs`` (an exact probability tie goes to
        the lower class index).

    Raises:
        ValueError: if the shapes disagree or a class index is out of range.

    Source: paper section 5.1; docs/design.md section 5.
    """
    class_maps = np.asarray(class_maps)
    mean_probs = np.asarray(mean_probs)
    n_classes = mean_probs.shape[0]
    if class_maps.ndim != mean_probs.ndim or class_maps.shape[1:] != mean_probs.shape[1:]:
        raise ValueError(
            f"class maps of shape {class_maps.shape} do not match probabilities of shape "
            f"{mean_probs.shape}; expected (F, X, Y, Z) and (C, X, Y, Z)"
        )
    if class_maps.size and (class_maps.min() < 0 or class_maps.max() >= n_classes):
        raise ValueError(f"class indices must be in 0..{n_classes - 1}")
    counts = np.zeros(mean_probs.shape, dtype=np.uint8)
    for k in range(n_classes):
        counts[k] = (class_maps == k).sum(axis=0)
    top = counts.max(axis=0)
    # Only classes with the top count compete; -1 puts every other class out of reach.
    contenders = np.where(counts == top, mean_probs, np.float32(-1.0))
    return contenders.argmax(axis=0)


class FoldEnsemble:
    """Accumulates fold predictions of one case and combines them.

    Example:
        >>> ens = FoldEnsemble()
        >>> for prediction in fold_predictions:      # VolumePrediction per fold
        ...     ens.add(prediction.probs, prediction.et_probability)
        >>> labels = ens.labels("vote")               # uint8 internal labels
    """

    def __init__(self) -> None:
        self._prob_sum: np.ndarray | None = None
        self._class_maps: list[np.ndarray] = []
        self._et_probabilities: list[float] = []

    @property
    def n_folds(self) -> int:
        """Number of fold predictions added."""
        return len(self._class_maps)

    @property
    def et_probabilities(self) -> tuple[float, ...]:
        """Each fold's ET probability, in the order added."""
        return tuple(self._et_probabilities)

    def add(self, probs: np.ndarray, et_probability: float) -> None:
        """Add one fold's prediction.

        Args:
            probs: float32, (C, X, Y, Z): the fold's TTA-averaged probabilities.
            et_probability: the fold's ET probability for the case.

        Raises:
            ValueError: if ``probs`` differs in shape from the folds added before.
        """
        probs = np.asarray(probs, dtype=np.float32)
        if self._prob_sum is None:
            self._prob_sum = probs.copy()
        elif probs.shape != self._prob_sum.shape:
            raise ValueError(
                f"fold prediction of shape {probs.shape} differs from earlier folds' "
                f"{self._prob_sum.shape}"
            )
        else:
            self._prob_sum += probs
        self._class_maps.append(probs.argmax(axis=0).astype(np.uint8))
        self._et_probabilities.append(float(et_probability))

    def mean_probabilities(self) -> np.ndarray:
        """float32, (C, X, Y, Z): mean of the folds' probabilities.

        Raises:
            ValueError: if no fold was added.
        """
        self._check_nonempty()
        return self._prob_sum / np.float32(self.n_folds)

    def et_probability(self) -> float:
        """Mean of the folds' ET probabilities (folds without one, NaN, are left out)."""
        values = [p for p in self._et_probabilities if not math.isnan(p)]
        return float(np.mean(values)) if values else float("nan")

    def classes(self, method: str = "vote") -> np.ndarray:
        """Class indices (X, Y, Z), int64: majority vote or argmax of the mean probabilities.

        Raises:
            ValueError: on an unknown ``method`` or when no fold was added.
        """
        check_choice("inference.ensemble", method)
        mean = self.mean_probabilities()
        if method == "mean" or self.n_folds == 1:
            return mean.argmax(axis=0)
        return majority_vote(np.stack(self._class_maps), mean)

    def labels(self, method: str = "vote") -> np.ndarray:
        """Internal labels {0, 1, 2, 4} (uint8, (X, Y, Z)) of :meth:`classes`."""
        return classes_to_labels(self.classes(method))

    def _check_nonempty(self) -> None:
        if self._prob_sum is None:
            raise ValueError("no fold prediction was added to the ensemble")
