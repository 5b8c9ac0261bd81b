"""Voxel-wise uncertainty of WT, TC and ET from the mirror passes and the fold models.

Every case is predicted by ``passes x folds`` networks (4 mirror passes x 5 folds in the
paper's protocol); their spread is an estimate of where the segmentation is unreliable.
Two estimators (``inference.uncertainty``), both giving maps on the QU-BraTS scale, uint8
in [0, 100] (0 certain, 100 most uncertain):

- ``"entropy"``: the binary entropy of the region's mean probability, ``p_R`` = the sum
  of the region's class probabilities averaged over passes and folds (the fold
  ensemble's mean probabilities), ``100 * H(p_R) / ln 2``: 0 where ``p_R`` is 0 or 1,
  100 where it is 0.5. The predictive entropy of a test-time-augmented ensemble (Wang
  et al., Neurocomputing 2019; Lakshminarayanan et al., NeurIPS 2017), taken per region
  as the QU-BraTS maps are (Mehta et al., MELBA 2022). It needs nothing beyond the mean
  probabilities the ensemble already holds.
- ``"disagreement"``: the share ``s`` of the ``passes x folds`` binary region maps (each
  pass's argmax label, in or out of the region) that disagree with the final label,
  scaled so that an even split is 100: ``round(100 * min(1, 2 s))``. All predictions
  agreeing gives 0; half of them against the final label gives 100; a final label that
  most predictions contradict (e.g. ET relabeled by ET suppression) is also 100. The
  vote-based spread of an ensemble (the "variation ratio", Gal, PhD thesis 2016)
  measured against the label written.

Memory: the mean probabilities exist anyway; the disagreement estimator adds one uint8
count per region and voxel (:class:`RegionVotes`), and in the windowed mode one more
float32 class accumulator of the crop, because each mirror pass is then blended over all
windows before the next one starts (``sliding_window.predict_sliding_window``'s
``on_pass``). No pass's probabilities are kept.

Outside the brain mask every map is 0 (the labels are background there with
``inference.mask_outside_brain``, the default).

Source: Mehta et al., MELBA 2022 (QU-BraTS format and scale); the estimators' sources
above; not in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import entr

from brats_mtl.config import check_choice, choices
from brats_mtl.conventions import (
    CLASS_LABELS,
    REGIONS,
    UNCERTAINTY_MAP_WORDS,
    Box,
    uncertainty_map_name,
)

if TYPE_CHECKING:
    from brats_mtl.data import Case
    from brats_mtl.tasks import NetworkClasses

#: Accepted ``inference.uncertainty`` values: those of its ``Literal`` type in the config.
UNCERTAINTY_ESTIMATORS: tuple[str, ...] = choices("inference.uncertainty")
#: Regions that get a map, in the QU-BraTS order (whole, core, enhance).
MAP_REGIONS: tuple[str, ...] = tuple(UNCERTAINTY_MAP_WORDS)
#: region -> bool (n_classes,): which network classes (``CLASS_LABELS``) lie in it.
REGION_CLASSES: dict[str, np.ndarray] = {
    region: np.isin(np.asarray(CLASS_LABELS), REGIONS[region]) for region in MAP_REGIONS
}


def _regions(classes: NetworkClasses | None) -> Mapping[str, tuple[int, ...]]:
    """Region -> internal labels: the label scheme's (``classes``), else BraTS 2017's."""
    return REGIONS if classes is None else classes.regions


def _region_classes(classes: NetworkClasses | None) -> dict[str, np.ndarray]:
    """Region -> bool (n_classes,): which network classes lie in it.

    :data:`REGION_CLASSES` for BraTS 2017's classes (``classes`` None).
    """
    if classes is None:
        return REGION_CLASSES
    labels = np.asarray(classes.labels)
    return {region: np.isin(labels, classes.regions[region]) for region in MAP_REGIONS}


def check_estimator(name: str) -> None:
    """Raise ValueError unless ``name`` is one of :data:`UNCERTAINTY_ESTIMATORS`."""
    check_choice("inference.uncertainty", name)


def entropy_map(region_probability: np.ndarray) -> np.ndarray:
    """``round(100 * H(p) / ln 2)`` with ``H`` the binary entropy in nats.

    Args:
        region_probability: float (...), the region's mean probability ``p`` in [0, 1]
            (values a little outside, from float rounding, are clipped).

    Returns:
        uint8 (...) in [0, 100]: 0 at ``p`` = 0 or 1, 100 at 0.5 (e.g. 81 at 0.25).

    Source: Shannon entropy of a Bernoulli variable, in bits, times 100.
    """
    # float32 throughout: a brain crop is ~4 M voxels, and the map is rounded to integers
    p = np.clip(np.asarray(region_probability, dtype=np.float32), 0.0, 1.0)
    percent = entr(p)
    percent += entr(1.0 - p)
    percent *= np.float32(100.0 / math.log(2.0))
    return np.rint(percent, out=percent).astype(np.uint8)


def disagreement_map(votes_in: np.ndarray, n_predictions: int, final_in: np.ndarray) -> np.ndarray:
    """``round(100 * min(1, 2 s))``, ``s`` the share of predictions against the final label.

    Args:
        votes_in: integer (...), how many of the predictions put the voxel in the region.
        n_predictions: how many predictions voted (passes x folds), >= 1.
        final_in: bool (...), whether the final label is in the region.

    Returns:
        uint8 (...) in [0, 100].

    Raises:
        ValueError: if ``n_predictions`` is below 1.
    """
    if n_predictions < 1:
        raise ValueError("no prediction voted: the disagreement needs at least one")
    votes = np.asarray(votes_in, dtype=np.float32)
    against = np.where(np.asarray(final_in, dtype=bool), n_predictions - votes, votes)
    against *= np.float32(200.0 / n_predictions)
    return np.rint(np.minimum(against, 100.0, out=against), out=against).astype(np.uint8)


class RegionVotes:
    """Counts, per region and voxel, how many predictions put the voxel in the region.

    One prediction is one mirror pass of one fold model: its class map (argmax of the
    pass's probabilities) is added with :meth:`add`, so only one uint8 per region and
    voxel is kept, whatever the number of passes.

    Args:
        shape: (x, y, z) of the class maps (the cropped grid).

    Example:
        >>> votes = RegionVotes((4, 4, 4))
        >>> votes.add(np.zeros((4, 4, 4), dtype=np.int64))
        >>> votes.n_predictions
        1
    """

    #: The most predictions a uint8 count holds.
    MAX_PREDICTIONS = 255

    def __init__(self, shape: tuple[int, int, int], classes: NetworkClasses | None = None) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.regions = _regions(classes)
        self.region_classes = _region_classes(classes)
        self.counts = {r: np.zeros(self.shape, dtype=np.uint8) for r in MAP_REGIONS}
        self.n_predictions = 0

    def add(self, classes) -> None:
        """Count one prediction.

        Args:
            classes: integer (x, y, z) class indices ``0 .. len(CLASS_LABELS) - 1``
                (numpy array or torch tensor on any device).

        Raises:
            ValueError: on a shape other than :attr:`shape`, or past
                :attr:`MAX_PREDICTIONS` predictions.
        """
        if hasattr(classes, "detach"):  # a torch tensor, possibly on a GPU
            classes = classes.detach().to("cpu").numpy()
        classes = np.asarray(classes)
        if classes.shape != self.shape:
            raise ValueError(f"class map of shape {classes.shape}; expected {self.shape}")
        if self.n_predictions >= self.MAX_PREDICTIONS:
            raise ValueError(f"more than {self.MAX_PREDICTIONS} predictions to count")
        for region, inside in self.region_classes.items():
            self.counts[region] += inside[classes]
        self.n_predictions += 1

    def maps(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """:func:`disagreement_map` of every region against final internal labels.

        Args:
            labels: uint8 (x, y, z) internal labels {0, 1, 2, 4}, the labels written.

        Returns:
            region -> uint8 (x, y, z) in [0, 100].
        """
        return {
            region: disagreement_map(
                self.counts[region], self.n_predictions, np.isin(labels, self.regions[region])
            )
            for region in MAP_REGIONS
        }


def uncertainty_maps(
    estimator: str,
    *,
    probabilities: np.ndarray,
    labels: np.ndarray,
    inside: np.ndarray | None = None,
    votes: RegionVotes | None = None,
    classes: NetworkClasses | None = None,
) -> dict[str, np.ndarray] | None:
    """The maps of one case on the cropped grid, 0 outside the brain.

    Args:
        estimator: one of :data:`UNCERTAINTY_ESTIMATORS`.
        probabilities: float32 (n_classes, x, y, z), mean over passes and folds.
        labels: uint8 (x, y, z) final internal labels.
        inside: bool (x, y, z), the brain mask; None: everywhere.
        votes: the counts of the passes and folds (needed for "disagreement").
        classes: the network's classes and regions (``tasks.network_classes``); None:
            BraTS 2017's.

    Returns:
        region ("WT", "TC", "ET") -> uint8 (x, y, z); None for "none".

    Raises:
        ValueError: on an unknown estimator, or "disagreement" without ``votes``.
    """
    check_estimator(estimator)
    if estimator == "none":
        return None
    if estimator == "entropy":
        maps = {}
        for region in MAP_REGIONS:  # the region's probability, one class channel at a time
            p = sum(probabilities[k] for k in np.flatnonzero(_region_classes(classes)[region]))
            maps[region] = entropy_map(p)
    else:
        if votes is None or votes.n_predictions == 0:
            raise ValueError("the disagreement estimator needs the passes' class maps")
        maps = votes.maps(labels)
    if inside is not None:
        for region in maps:
            maps[region][~np.asarray(inside, dtype=bool)] = 0
    return maps


def mean_uncertainty_in_regions(
    labels: np.ndarray,
    maps: Mapping[str, np.ndarray] | None,
    classes: NetworkClasses | None = None,
) -> dict[str, float]:
    """Mean of each region's map over the voxels predicted in that region.

    Args:
        labels: uint8 (x, y, z) final internal labels, on the maps' grid.
        maps: region -> uint8 (x, y, z), or None.
        classes: the network's regions (``tasks.network_classes``); None: BraTS 2017's.

    Returns:
        region -> mean on the 0-100 scale; NaN for an empty predicted region or without
        maps.
    """
    out = {}
    for region in MAP_REGIONS:
        inside = np.isin(labels, _regions(classes)[region])
        if maps is None or not inside.any():
            out[region] = float("nan")
        else:
            out[region] = float(maps[region][inside].mean(dtype=np.float64))
    return out


def write_uncertainty_maps(
    maps: Mapping[str, np.ndarray],
    box: Box,
    reference: Case,
    output_dir: str | Path,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write a case's maps beside its label map, on the input grid, atomically.

    Args:
        maps: region -> uint8 (x, y, z) on the cropped grid (:func:`uncertainty_maps`).
        box: the crop box in the input grid (``CasePrediction.box``).
        reference: the loaded ``data.Case`` (shape, affine and header of the output).
        output_dir: the prediction folder.
        overwrite: replace existing files.

    Returns:
        The paths written, ``OUTPUT_DIR/<ID>_unc_{whole,core,enhance}.nii.gz``: uint8
        (X, Y, Z) in [0, 100], 0 outside the crop box, the input's affine and qform/sform
        codes, no intensity scaling.

    Raises:
        FileExistsError: if a file exists and ``overwrite`` is False.

    Source: QU-BraTS submission format (Mehta et al., MELBA 2022).
    """
    import nibabel as nib

    from brats_mtl.data import save_nifti
    from brats_mtl.preprocessing import uncrop

    shape = tuple(reference.image.shape[1:])
    if reference.header is None:  # a Case built in memory: a fresh header, codes 1
        base = nib.Nifti1Header()
        base["qform_code"], base["sform_code"] = 1, 1
    else:
        base = reference.header
    written = []
    for region in MAP_REGIONS:
        data = uncrop(np.asarray(maps[region], dtype=np.uint8), box, shape, fill=0)
        header = base.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(None, None)  # stored values are the uncertainties
        header["cal_min"], header["cal_max"] = 0, 100
        img = nib.Nifti1Image(data, reference.affine, header)
        img.set_qform(reference.affine, code=int(base["qform_code"]))
        img.set_sform(reference.affine, code=int(base["sform_code"]))
        img.header["descrip"] = f"{region} uncertainty 0-100 (QU-BraTS)".encode()
        path = Path(output_dir) / uncertainty_map_name(reference.case_id, region)
        written.append(save_nifti(img, path, overwrite=overwrite))
    return written
