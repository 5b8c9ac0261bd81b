"""Metrics with BraTS rules: empty cases, analytic values, equality with medpy's hd95."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from brats_mtl.conventions import HD95_ONE_EMPTY_MM
from brats_mtl.evaluation import (
    METRIC_COLUMNS,
    dice,
    evaluate_labels,
    hd95_mm,
    sensitivity,
    specificity,
)

medpy_binary = pytest.importorskip("medpy.metric.binary")

SHAPE = (12, 13, 14)


def _cube(lo: tuple[int, int, int], size: int, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return mask


def _sphere(shape, center, radius_mm, spacing_mm=(1.0, 1.0, 1.0)) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    dist2 = sum(((grid[i] - center[i]) * spacing_mm[i]) ** 2 for i in range(3))
    return dist2 <= radius_mm**2


EMPTY = np.zeros(SHAPE, dtype=bool)
FULL_CUBE = _cube((3, 3, 3), 4)


# --- empty / non-empty combinations ---------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "ref", "want_dice", "want_hd95", "want_sens"),
    [
        (EMPTY, EMPTY, 1.0, 0.0, 1.0),
        (FULL_CUBE, EMPTY, 0.0, HD95_ONE_EMPTY_MM, 0.0),
        (EMPTY, FULL_CUBE, 0.0, HD95_ONE_EMPTY_MM, 0.0),
        (FULL_CUBE, FULL_CUBE, 1.0, 0.0, 1.0),
    ],
    ids=["both-empty", "pred-only", "ref-only", "both-equal"],
)
def test_empty_rules(pred, ref, want_dice, want_hd95, want_sens):
    assert dice(pred, ref) == want_dice
    assert hd95_mm(pred, ref, (1.0, 0.7, 2.5)) == want_hd95
    assert sensitivity(pred, ref) == want_sens


def test_specificity_counts_whole_volume():
    n = EMPTY.size
    assert specificity(EMPTY, EMPTY) == 1.0
    assert specificity(FULL_CUBE, EMPTY) == pytest.approx((n - 64) / n)
    assert specificity(EMPTY, FULL_CUBE) == 1.0
    full = np.ones(SHAPE, dtype=bool)
    assert specificity(full, full) == 0.0  # no reference negatives


def test_dice_sensitivity_partial_overlap():
    pred = _cube((2, 2, 2), 4)  # 64 voxels
    ref = _cube((3, 2, 2), 4)  # overlap 3 * 16 = 48
    assert dice(pred, ref) == pytest.approx(2 * 48 / 128)
    assert sensitivity(pred, ref) == pytest.approx(48 / 64)
    assert dice(pred, ref) == pytest.approx(medpy_binary.dc(pred, ref))
    assert specificity(pred, ref) == pytest.approx(medpy_binary.specificity(pred, ref))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same 3-D grid"):
        dice(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool))
    with pytest.raises(ValueError, match="spacing_mm"):
        hd95_mm(FULL_CUBE, FULL_CUBE, (1.0, 1.0))


# --- analytic HD95 --------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_cubes_one_voxel_apart(axis):
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = 2.0
    pred = _cube((3, 3, 3), 5)
    ref = np.roll(pred, 1, axis=axis)
    # Every boundary voxel is either on the shared boundary (0) or one step (2 mm) away;
    # the 95th percentile falls among the 2 mm ones.
    assert hd95_mm(pred, ref, spacing) == 2.0


def test_single_voxels_diagonal():
    pred = np.zeros(SHAPE, dtype=bool)
    ref = np.zeros(SHAPE, dtype=bool)
    pred[2, 2, 2] = True
    ref[3, 3, 3] = True
    assert hd95_mm(pred, ref) == pytest.approx(np.sqrt(3.0))
    assert hd95_mm(pred, ref, (1.0, 0.7, 2.5)) == pytest.approx(np.sqrt(1 + 0.49 + 6.25))


def test_two_spheres_offset():
    """MONAI-style: spheres of radius 6 whose centres differ by 1 voxel on each axis."""
    shape = (32, 32, 32)
    pred = _sphere(shape, (15, 15, 15), 6)
    ref = _sphere(shape, (16, 16, 16), 6)
    want = medpy_binary.hd95(pred, ref)
    assert hd95_mm(pred, ref) == pytest.approx(want, abs=1e-6)
    assert hd95_mm(pred, ref) == pytest.approx(np.sqrt(3.0), abs=0.3)


def test_symmetric():
    rng = np.random.default_rng(1)
    pred = rng.random(SHAPE) < 0.3
    ref = rng.random(SHAPE) < 0.2
    spacing = (1.0, 0.7, 2.5)
    assert hd95_mm(pred, ref, spacing) == hd95_mm(ref, pred, spacing)
    assert dice(pred, ref) == dice(ref, pred)


# --- equality with medpy --------------------------------------------------------------


def _random_pairs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        shape = tuple(int(s) for s in rng.integers(3, 28, size=3))
        density = rng.uniform(0.02, 0.9)
        pred = rng.random(shape) < density
        ref = rng.random(shape) < rng.uniform(0.02, 0.9)
        if rng.random() < 0.5:  # blobs rather than noise
            pred = ndimage.binary_opening(pred)
            ref = ndimage.binary_closing(ref)
        spacing = tuple(float(s) for s in rng.uniform(0.4, 3.0, size=3))
        yield pred, ref, spacing


@pytest.mark.parametrize("seed", range(4))
def test_hd95_equals_medpy_random(seed):
    for pred, ref, spacing in _random_pairs(15, seed):
        if not pred.any() or not ref.any():
            continue
        want = medpy_binary.hd95(pred, ref, voxelspacing=spacing)
        assert abs(hd95_mm(pred, ref, spacing) - want) <= 1e-6


def _shell(shape, center, r_in, r_out, spacing):
    return _sphere(shape, center, r_out, spacing) & ~_sphere(shape, center, r_in, spacing)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 0.7, 2.5)])
@pytest.mark.parametrize(
    "name",
    ["cubes", "cube-touching-border", "spheres", "shells", "sphere-in-shell", "small-far"],
)
def test_hd95_equals_medpy_structured(name, spacing):
    shape = (30, 34, 20)
    if name == "cubes":
        pred, ref = _cube((4, 5, 3), 8, shape), _cube((7, 9, 5), 10, shape)
    elif name == "cube-touching-border":
        pred = _cube((0, 0, 0), 9, shape)
        ref = np.zeros(shape, bool)
        ref[20:, 25:, 12:] = True  # touches the far faces of the array
    elif name == "spheres":
        pred = _sphere(shape, (14, 16, 9), 7.3, spacing)
        ref = _sphere(shape, (16, 15, 11), 8.1, spacing)
    elif name == "shells":
        pred = _shell(shape, (15, 17, 10), 4.0, 9.0, spacing)
        ref = _shell(shape, (14, 16, 9), 3.0, 8.5, spacing)
    elif name == "sphere-in-shell":
        pred = _sphere(shape, (15, 17, 10), 3.0, spacing)
        ref = _shell(shape, (15, 17, 10), 5.0, 9.0, spacing)
    else:  # two tiny objects on opposite corners
        pred = _cube((0, 0, 0), 2, shape)
        ref = _cube((27, 31, 17), 3, shape)
    want = medpy_binary.hd95(pred, ref, voxelspacing=spacing)
    assert abs(hd95_mm(pred, ref, spacing) - want) <= 1e-6


def test_mask_filling_the_array():
    """Foreground on every face of the array: the array border counts as boundary."""
    shape = (6, 7, 8)
    pred = np.ones(shape, bool)
    ref = np.zeros(shape, bool)
    ref[1:5, 1:6, 1:7] = True
    spacing = (1.0, 0.7, 2.5)
    want = medpy_binary.hd95(pred, ref, voxelspacing=spacing)
    assert abs(hd95_mm(pred, ref, spacing) - want) <= 1e-6


# --- evaluate_labels ------------------------------------------------------------------


def _label_pair(seed: int, shape=(24, 26, 22)):
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, np.uint8)
    ref[_sphere(shape, (12, 13, 11), 8)] = 2
    ref[_sphere(shape, (12, 13, 11), 5)] = 1
    ref[_shell(shape, (12, 13, 11), 3, 5, (1, 1, 1))] = 4
    pred = np.roll(ref, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 3)))
    noise = rng.random(shape) < 0.02
    pred[noise] = rng.choice(np.array([0, 1, 2, 4], np.uint8), size=int(noise.sum()))
    return pred, ref


@pytest.mark.parametrize("seed", range(3))
def test_evaluate_labels_matches_medpy(seed):
    pred, ref = _label_pair(seed)
    spacing = (1.0, 0.7, 2.5)
    got = evaluate_labels(pred, ref, spacing)
    assert tuple(got) == METRIC_COLUMNS
    regions = {"ET": (4,), "WT": (1, 2, 4), "TC": (1, 4)}
    for region, labels in regions.items():
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        assert got[f"Dice_{region}"] == pytest.approx(medpy_binary.dc(p, r), abs=1e-12)
        assert got[f"Sensitivity_{region}"] == pytest.approx(medpy_binary.sensitivity(p, r))
        assert got[f"Specificity_{region}"] == pytest.approx(medpy_binary.specificity(p, r))
        want = medpy_binary.hd95(p, r, voxelspacing=spacing)
        assert abs(got[f"Hausdorff95_{region}"] - want) <= 1e-6


def test_evaluate_labels_no_et_anywhere():
    pred, ref = _label_pair(0)
    pred[pred == 4] = 1
    ref[ref == 4] = 1
    got = evaluate_labels(pred, ref)
    assert got["Dice_ET"] == 1.0
    assert got["Hausdorff95_ET"] == 0.0
    assert got["Sensitivity_ET"] == 1.0
    assert got["Specificity_ET"] == 1.0


def test_evaluate_labels_all_background():
    zeros = np.zeros((5, 6, 7), np.uint8)
    got = evaluate_labels(zeros, zeros)
    assert all(got[f"Dice_{r}"] == 1.0 for r in ("ET", "WT", "TC"))
    assert all(got[f"Hausdorff95_{r}"] == 0.0 for r in ("ET", "WT", "TC"))


def test_evaluate_labels_missed_et():
    pred, ref = _label_pair(0)
    pred[pred == 4] = 1
    got = evaluate_labels(pred, ref)
    assert got["Dice_ET"] == 0.0
    assert got["Hausdorff95_ET"] == HD95_ONE_EMPTY_MM
    assert got["Sensitivity_ET"] == 0.0


def test_evaluate_labels_rejects_foreign_values():
    pred, ref = _label_pair(0)
    pred[pred == 4] = 3
    with pytest.raises(ValueError, match=r"values \[3\]"):
        evaluate_labels(pred, ref)
    with pytest.raises(ValueError, match="same 3-D grid"):
        evaluate_labels(pred[:-1], ref)


def test_region_masks_are_the_brats_regions():
    from brats_mtl.evaluation.metrics import region_masks

    labels = np.array([0, 1, 2, 4], np.uint8)
    masks = region_masks(labels)
    assert list(masks) == ["ET", "WT", "TC"]
    assert masks["WT"].tolist() == [False, True, True, True]
    assert masks["TC"].tolist() == [False, True, False, True]
    assert masks["ET"].tolist() == [False, False, False, True]
    # another scheme's regions (gli-post: RC = 4 is in no tumour region)
    rc = region_masks(labels, {"TC": (1, 3), "RC": (4,)})
    assert rc["TC"].tolist() == [False, True, False, False]
    assert rc["RC"].tolist() == [False, False, False, True]


def test_region_dice_agrees_with_evaluate_labels():
    """Dice of region_masks is evaluate_labels' Dice, case by case (one implementation)."""
    from brats_mtl.evaluation.metrics import region_masks
    from brats_mtl.inference.postprocess import et_dice

    for seed in range(3):
        pred, ref = _label_pair(seed)
        expected = evaluate_labels(pred, ref)
        ours, theirs = region_masks(pred), region_masks(ref)
        for region in ("ET", "WT", "TC"):
            assert dice(ours[region], theirs[region]) == expected[f"Dice_{region}"]
        assert et_dice(pred, ref) == expected["Dice_ET"]
