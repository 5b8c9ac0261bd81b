import numpy as np
import pytest

from brats_mtl.conventions import (
    BRATS_2019,
    BRATS_2023,
    MSD,
    classes_to_labels,
    labels_to_classes,
)


def test_round_trips():
    internal = np.array([0, 1, 2, 4, 4, 1], dtype=np.uint8)
    for conv in (BRATS_2019, BRATS_2023, MSD):
        assert np.array_equal(conv.to_internal(conv.from_internal(internal)), internal)
    assert BRATS_2023.from_internal(internal).tolist() == [0, 1, 2, 3, 3, 1]
    assert MSD.from_internal(internal).tolist() == [0, 2, 1, 3, 3, 2]
    assert np.array_equal(classes_to_labels(labels_to_classes(internal)), internal)


def test_bad_values():
    with pytest.raises(ValueError, match=r"\[3\]"):
        BRATS_2019.to_internal(np.array([0, 3]))
    with pytest.raises(ValueError):
        labels_to_classes(np.array([5]))
