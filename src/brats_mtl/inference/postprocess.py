"""ET suppression and the choice of its volume threshold on out-of-fold predictions.

The rule (paper, Inference; docs/design.md section 5): when the ET classifier says "no ET" (its
probability below ``et_probability_threshold``) and the segmentation holds fewer than
``et_min_voxels`` ET voxels, those voxels are relabeled NCR/NET (label 1). ET voxels are
inside the tumor core and the whole tumor, and NCR/NET is too, so TC and WT do not change;
only ET does. This matters because BraTS scores a case without ET whose prediction has a
single ET voxel with Dice 0 (and HD95 373.128664 mm), so a few false-positive voxels cost as
much as missing a whole tumor.

The same rule holds on every label scheme (``brats_mtl.tasks.NetworkClasses``): ET is
relabeled to the scheme's non-enhancing core (NETC for brats2023 and gli-post, NET for
ped2024, whose ET is label 1), which lies in TC and WT as ET does; the resection cavity
(RC) and the cyst (CC) are never touched.

``select_et_min_voxels`` picks the volume threshold that maximises the mean ET Dice over
out-of-fold cases, as nnU-Net chose its BraTS postprocessing (Isensee et al. 2021,
"nnU-Net for brain tumor segmentation", which relabels small ET to NCR with a threshold
tuned on cross-validation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from brats_mtl.conventions import ET, NCR_NET, REGIONS
from brats_mtl.evaluation.metrics import dice, region_mask


def suppress_et(
    labels: np.ndarray,
    et_probability: float,
    *,
    probability_threshold: float = 0.5,
    min_voxels: int = 500,
    et_label: int = ET,
    core_label: int = NCR_NET,
) -> tuple[np.ndarray, bool]:
    """Relabel ET as NCR/NET when the classifier and the volume both say "no ET".

    ET becomes the scheme's non-enhancing core (``tasks.NetworkClasses.core_label``:
    NCR/NET for brats2017, NETC for brats2023 and gli-post, NET for ped2024), a label of
    both TC and WT, so neither region changes; other labels (the resection cavity RC,
    the cyst CC, edema) are never touched.

    Args:
        labels: uint8, (X, Y, Z), internal labels {0, 1, 2, 4} (a four-label scheme's
            values with ``et_label`` and ``core_label`` set).
        et_probability: the case's ET probability from the classifier, in [0, 1]; NaN
            (no classifier output) never suppresses.
        probability_threshold: "no ET" means ``et_probability < probability_threshold``.
        min_voxels: suppress only when the ET voxel count is ``< min_voxels``.
        et_label: internal label of ET (4; 3 for gli-post, 1 for ped2024).
        core_label: the label ET becomes (1; 1 NETC for gli-post, 2 NET for ped2024).

    Returns:
        ``(labels_out, suppressed)``: ``labels_out`` is a relabeled copy when the rule
        fired, else ``labels`` itself; ``suppressed`` is True when the rule fired and at
        least one voxel changed.

    Source: paper, Inference; docs/design.md section 5 (``inference.et_probability_threshold``,
    ``inference.et_min_voxels``).
    """
    labels = np.asarray(labels)
    et_mask = labels == et_label
    n_et = int(np.count_nonzero(et_mask))
    fires = (
        not math.isnan(et_probability)
        and et_probability < probability_threshold
        and n_et < min_voxels
    )
    if not fires or n_et == 0:
        return labels, False
    out = labels.copy()
    out[et_mask] = core_label
    return out, True


def et_dice(predicted_labels: np.ndarray, reference_labels: np.ndarray) -> float:
    """Dice of the ET region with the BraTS conventions for empty masks.

    Args:
        predicted_labels: uint8 (X, Y, Z), internal labels.
        reference_labels: uint8 (X, Y, Z), internal labels, same shape.

    Returns:
        2|P∩R| / (|P| + |R|); 1.0 when both are empty, 0.0 when exactly one is
        (``evaluation.metrics.dice``).

    Raises:
        ValueError: if the shapes differ.

    Source: docs/design.md section 6 (BraTS online system).
    """
    return dice(
        region_mask(predicted_labels, REGIONS["ET"]), region_mask(reference_labels, REGIONS["ET"])
    )


def select_et_min_voxels(
    cases: Iterable[tuple[np.ndarray, float, np.ndarray]],
    candidates: Sequence[int],
    *,
    probability_threshold: float = 0.5,
) -> tuple[int, pd.DataFrame]:
    """Choose ``et_min_voxels`` by the mean ET Dice over out-of-fold predictions.

    Args:
        cases: per case ``(labels, et_probability, reference_labels)``: the predicted
            internal labels **before** suppression (uint8 (X, Y, Z)), the case's ET
            probability, and the reference internal labels (same shape).
        candidates: thresholds to try (voxels), e.g. ``[0, 100, 200, 500, 1000]``; 0
            means "never suppress".
        probability_threshold: the classifier threshold used with every candidate.

    Returns:
        ``(best, table)``: ``best`` is the candidate with the highest mean ET Dice (the
        smallest such candidate on a tie: the least change to the network's output);
        ``table`` has one row per candidate, in the given order, with columns
        ``et_min_voxels``, ``mean_et_dice``, ``n_suppressed`` (cases whose ET is
        relabeled) and ``n_cases``.

    Raises:
        ValueError: if ``candidates`` or ``cases`` is empty, a candidate is negative, or
            a case's label maps differ in shape.

    Source: docs/design.md section 5; nnU-Net's BraTS postprocessing (threshold chosen on the
    cross-validation).
    """
    candidates = [int(c) for c in candidates]
    if not candidates or min(candidates) < 0:
        raise ValueError(f"candidates must be non-negative voxel counts, got {candidates}")
    # Per case: ET voxel count, ET probability, Dice as predicted, Dice once suppressed.
    rows = []
    for labels, probability, reference in cases:
        labels, reference = np.asarray(labels), np.asarray(reference)
        if labels.shape != reference.shape:
            raise ValueError(
                f"prediction of shape {labels.shape} and reference of shape "
                f"{reference.shape} differ"
            )
        n_et = int(np.count_nonzero(labels == ET))
        kept = et_dice(labels, reference)
        suppressed = et_dice(np.where(labels == ET, NCR_NET, labels), reference)
        rows.append((n_et, float(probability), kept, suppressed))
    if not rows:
        raise ValueError("no cases to choose et_min_voxels on")
    n_et, prob, kept, dropped = (np.array(col) for col in zip(*rows, strict=True))
    no_et_said = np.where(np.isnan(prob), False, prob < probability_threshold)

    table_rows = []
    for candidate in candidates:
        fires = no_et_said & (n_et < candidate) & (n_et > 0)
        dice = np.where(fires, dropped, kept)
        table_rows.append(
            {
                "et_min_voxels": candidate,
                "mean_et_dice": float(dice.mean()),
                "n_suppressed": int(fires.sum()),
                "n_cases": len(rows),
            }
        )
    table = pd.DataFrame(table_rows)
    best_dice = table["mean_et_dice"].max()
    best = int(table.loc[table["mean_et_dice"] == best_dice, "et_min_voxels"].min())
    return best, table


def region_volumes_ml(
    labels: np.ndarray,
    spacing_mm: Sequence[float],
    regions: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, float]:
    """Volumes of WT, TC and ET (or of every region of a scheme) in millilitres.

    Args:
        labels: uint8 (X, Y, Z), internal labels.
        spacing_mm: voxel size along X, Y, Z in mm.
        regions: region name -> internal labels (``tasks.NetworkClasses.regions``);
            default the three BraTS regions of the internal {0, 1, 2, 4} labels.

    Returns:
        ``{"WT": ml, "TC": ml, "ET": ml}`` (1 ml = 1000 mm^3), or one entry per region
        of ``regions``.

    Source: docs/design.md section 1 (regions).
    """
    voxel_ml = float(np.prod([float(s) for s in spacing_mm])) / 1000.0
    counts = np.bincount(np.asarray(labels).ravel(), minlength=256)
    return {
        region: float(sum(counts[v] for v in values)) * voxel_ml
        for region, values in (REGIONS if regions is None else regions).items()
    }
