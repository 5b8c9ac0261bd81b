"""Conventions of the BraTS challenge: modalities, label sets per year, regions, constants.

Sources: BraTS 2017-2020 data descriptions (Menze et al. 2015, Bakas et al. 2017), BraTS
2021/2023 (Baid et al. 2021), the Medical Segmentation Decathlon Task01 ``dataset.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Internal channel order of every image array, ``(4, X, Y, Z)``.
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: Internal label values (the BraTS 2017-2021 set).
BACKGROUND, NCR_NET, ED, ET = 0, 1, 2, 4
INTERNAL_LABELS: tuple[int, ...] = (BACKGROUND, NCR_NET, ED, ET)

#: Evaluation regions as sets of internal labels (BraTS: WT, TC, ET).
REGIONS: dict[str, tuple[int, ...]] = {
    "ET": (ET,),
    "WT": (NCR_NET, ED, ET),
    "TC": (NCR_NET, ET),
}
#: Region order of the online system's result columns (Dice_ET, Dice_WT, Dice_TC, ...).
REGION_ORDER: tuple[str, ...] = ("ET", "WT", "TC")

#: Regions of the QU-BraTS uncertainty maps and the word naming each file,
#: ``<ID>_unc_whole.nii.gz``, ``<ID>_unc_core.nii.gz``, ``<ID>_unc_enhance.nii.gz``, in the
#: organisers' order (BraTS 2019-2020 uncertainty task; Mehta et al., MELBA 2022).
UNCERTAINTY_MAP_WORDS: dict[str, str] = {"WT": "whole", "TC": "core", "ET": "enhance"}


def uncertainty_map_name(case_id: str, region: str) -> str:
    """File name of a case's QU-BraTS uncertainty map, e.g. ``BraTS2021_00000_unc_core.nii.gz``.

    Args:
        case_id: the case ID (the label map beside it is ``<ID>.nii.gz``).
        region: "WT", "TC" or "ET".

    Raises:
        ValueError: on another region.

    Source: QU-BraTS submission format (BraTS 2019-2020 uncertainty task).
    """
    if region not in UNCERTAINTY_MAP_WORDS:
        raise ValueError(
            f"QU-BraTS uncertainty maps exist for {list(UNCERTAINTY_MAP_WORDS)}, not {region!r}"
        )
    return f"{case_id}_unc_{UNCERTAINTY_MAP_WORDS[region]}.nii.gz"


#: Shape of the BraTS grid (SRI24 atlas space, 1 mm).
BRATS_GRID_SHAPE: tuple[int, int, int] = (240, 240, 155)
#: HD95 in mm when exactly one of prediction and reference is empty: the diagonal of the
#: 240 x 240 x 155 BraTS grid at 1 mm, sqrt(240^2 + 240^2 + 155^2) = 373.128664... mm,
#: unrounded (the BraTS 2017-2020 online system printed it as 373.13).
HD95_ONE_EMPTY_MM: float = math.sqrt(sum(n * n for n in BRATS_GRID_SHAPE))


@dataclass(frozen=True)
class LabelConvention:
    """How one dataset family encodes the three tumor sub-regions.

    Attributes:
        name: identifier, e.g. ``"brats2019"``.
        ncr_net: file value of necrosis / non-enhancing tumor core (NCR/NET, NETC).
        ed: file value of peritumoral edema (ED, SNFH).
        et: file value of enhancing tumor (ET).
    """

    name: str
    ncr_net: int
    ed: int
    et: int

    @property
    def values(self) -> tuple[int, ...]:
        """All label values of the convention, background included."""
        return (0, self.ncr_net, self.ed, self.et)

    def to_internal(self, labels: np.ndarray) -> np.ndarray:
        """Map a label map in this convention to the internal {0, 1, 2, 4} set.

        Args:
            labels: integer array of any shape with values in ``self.values``.

        Returns:
            uint8 array of the same shape with values in {0, 1, 2, 4}.

        Raises:
            ValueError: if ``labels`` holds a value outside ``self.values``.
        """
        return _remap(labels, {0: 0, self.ncr_net: NCR_NET, self.ed: ED, self.et: ET}, self.name)

    def from_internal(self, labels: np.ndarray) -> np.ndarray:
        """Map an internal {0, 1, 2, 4} label map to this convention (uint8, same shape).

        Raises:
            ValueError: if ``labels`` holds a value outside {0, 1, 2, 4}.
        """
        return _remap(labels, {0: 0, NCR_NET: self.ncr_net, ED: self.ed, ET: self.et}, "internal")


def _remap(labels: np.ndarray, mapping: dict[int, int], source: str) -> np.ndarray:
    lut = np.full(256, 255, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    arr = np.asarray(labels)
    found = np.unique(arr)
    bad = [v for v in found.tolist() if v not in mapping]
    if bad:
        raise ValueError(
            f"label values {bad} are not in the {source} convention (expected {sorted(mapping)})"
        )
    return lut[arr.astype(np.intp, copy=False)]


#: BraTS 2017-2021: 1 NCR/NET, 2 ED, 4 ET.
BRATS_2019 = LabelConvention("brats2019", ncr_net=1, ed=2, et=4)
#: BraTS 2023 and later: 1 NETC, 2 SNFH, 3 ET.
BRATS_2023 = LabelConvention("brats2023", ncr_net=1, ed=2, et=3)
#: Medical Segmentation Decathlon Task01_BrainTumour: 1 edema, 2 non-enhancing, 3 enhancing.
MSD = LabelConvention("msd", ncr_net=2, ed=1, et=3)

LABEL_CONVENTIONS: dict[str, LabelConvention] = {c.name: c for c in (BRATS_2019, BRATS_2023, MSD)}

#: Network output channel k predicts internal label CLASS_LABELS[k] (softmax over 4 classes).
CLASS_LABELS: tuple[int, ...] = (BACKGROUND, NCR_NET, ED, ET)
#: Index of the ET channel in the network's output.
ET_CLASS: int = CLASS_LABELS.index(ET)


def labels_to_classes(labels: np.ndarray) -> np.ndarray:
    """Internal labels {0, 1, 2, 4} -> class indices {0, 1, 2, 3} (int64, same shape).

    Raises:
        ValueError: if ``labels`` holds a value outside {0, 1, 2, 4}.
    """
    lut = np.full(256, -1, dtype=np.int64)
    lut[list(CLASS_LABELS)] = np.arange(len(CLASS_LABELS))
    classes = lut[np.asarray(labels).astype(np.intp, copy=False)]
    if (classes < 0).any():
        raise ValueError(f"labels must be in {CLASS_LABELS}, found {np.unique(labels).tolist()}")
    return classes


def classes_to_labels(classes: np.ndarray) -> np.ndarray:
    """Class indices {0, 1, 2, 3} -> internal labels {0, 1, 2, 4} (uint8, same shape)."""
    return np.asarray(CLASS_LABELS, dtype=np.uint8)[np.asarray(classes)]


def get_label_convention(convention: LabelConvention | str) -> LabelConvention:
    """A ``LabelConvention`` from itself or its name (``"brats2019"``, ``"brats2023"``, ``"msd"``).

    Raises:
        ValueError: on an unknown name (lists the known ones).
    """
    if isinstance(convention, LabelConvention):
        return convention
    try:
        return LABEL_CONVENTIONS[convention]
    except KeyError:
        raise ValueError(
            f"unknown label convention {convention!r}; choose one of {sorted(LABEL_CONVENTIONS)}"
        ) from None


#: A box of a 3-D volume: one slice per spatial axis, e.g. the brain's bounding box
#: (``preprocessing.crop_to_brain``) or a sliding window; index an (X, Y, Z) array with
#: it, or a (C, X, Y, Z) one with ``(slice(None), *box)``.
Box = tuple[slice, slice, slice]


def plural(count: int, noun: str) -> str:
    """``"1 case"``, ``"2 cases"``: a count with its noun in the right number (English -s)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
