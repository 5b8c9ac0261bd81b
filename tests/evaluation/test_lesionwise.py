"""Lesion-wise protocol (BraTS 2023-2025): hand-computed cases, the organisers' definition.

Three checks of ``brats_mtl.evaluation.lesionwise`` and the area-weighted surface
distances:

- synthetic multi-lesion masks whose answers are worked out by hand (merging by
  dilation, a false-positive component, a missed lesion, a lesion under the volume
  threshold, empty masks, anisotropic spacing);
- every value equal (1e-6) to ``lesionwise_reference``, a plain step-by-step transcription
  of the BraTS 2023 code, on random multi-lesion cases of every scheme and task;
- the surface distances equal to DeepMind's ``surface_distance`` package itself.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from brats_mtl.evaluation.lesionwise import (
    LESIONWISE_METRICS,
    evaluate_lesionwise,
    lesionwise_columns,
    lesionwise_region,
)
from brats_mtl.evaluation.metrics import robust_hausdorff_mm, surface_distances_mm
from brats_mtl.tasks import (
    BRATS2017,
    BRATS2023,
    GLI_POST,
    LABEL_SCHEMES,
    LESIONWISE_PARAMETERS,
    PED2024,
)
from tests.evaluation.lesionwise_reference import case_scores, robust_hausdorff, surface_distances

GLI = LESIONWISE_PARAMETERS["GLI"]  # d = 3, v = 50
MEN = LESIONWISE_PARAMETERS["MEN"]  # d = 1, v = 50
MET = LESIONWISE_PARAMETERS["MET"]  # d = 1, v = 2
SHAPE = (40, 24, 24)


def _box(lo, size, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))] = True
    return mask


def _cube(lo, side=4, shape=SHAPE) -> np.ndarray:
    return _box(lo, (side, side, side), shape)


# --- hand-computed cases ---------------------------------------------------------------


def test_identical_masks_score_one_and_zero():
    ref = _cube((2, 2, 2)) | _cube((30, 15, 15))
    scores = lesionwise_region(ref, ref, GLI)
    assert (scores.lesionwise_dice, scores.lesionwise_hd95_mm) == (1.0, 0.0)
    assert (scores.dice, scores.hd95_mm) == (1.0, 0.0)
    assert (scores.num_tp, scores.num_fp, scores.num_fn) == (2, 0, 0)


def test_lesions_merged_by_dilation_depend_on_the_task():
    # Two 64-voxel cubes with a 3-voxel gap (x = 6, 7, 8): GLI's 3 dilations join them,
    # MEN's single dilation does not (x = 6 and x = 8 reached, x = 7 not).
    ref = _cube((2, 5, 5)) | _cube((9, 5, 5))
    pred = _cube((2, 5, 5))  # only the first cube predicted
    merged = lesionwise_region(pred, ref, GLI)
    assert len(merged.lesions) == 1 and merged.lesions[0].volume_mm3 == 128.0
    # one lesion of 128 voxels matched by 64 of them: Dice 2 * 64 / (64 + 128)
    assert merged.lesionwise_dice == pytest.approx(2 / 3)
    assert (merged.num_tp, merged.num_fp, merged.num_fn) == (1, 0, 0)
    separate = lesionwise_region(pred, ref, MEN)
    assert [lesion.volume_mm3 for lesion in separate.lesions] == [64.0, 64.0]
    # (1 + 0) / 2 lesions; HD95 (0 + 374) / 2
    assert separate.lesionwise_dice == 0.5
    assert separate.lesionwise_hd95_mm == 187.0
    assert (separate.num_tp, separate.num_fp, separate.num_fn) == (1, 0, 1)


def test_false_positive_component_and_missed_lesion():
    ref = _cube((2, 2, 2))
    fp = lesionwise_region(ref | _cube((30, 15, 15)), ref, GLI)
    assert (fp.lesionwise_dice, fp.lesionwise_hd95_mm) == (0.5, 187.0)  # (1 + 0) / 2, (0 + 374) / 2
    assert (fp.num_tp, fp.num_fp, fp.num_fn) == (1, 1, 0)
    missed = lesionwise_region(ref, ref | _cube((30, 15, 15)), GLI)
    assert (missed.lesionwise_dice, missed.lesionwise_hd95_mm) == (0.5, 187.0)
    assert (missed.num_tp, missed.num_fp, missed.num_fn) == (1, 0, 1)


def test_prediction_near_a_lesion_is_its_match_not_a_false_positive():
    ref = _cube((10, 10, 10))
    pred = _cube((16, 10, 10))  # 2-voxel gap: inside the lesion dilated 3 times, no overlap
    scores = lesionwise_region(pred, ref, GLI)
    assert (scores.num_tp, scores.num_fp, scores.num_fn) == (1, 0, 0)
    assert scores.lesionwise_dice == 0.0
    # every surface point is 2 to 6 mm from the other surface; 374 only when unmatched
    assert 2.0 <= scores.lesionwise_hd95_mm <= 6.0


def test_lesion_at_or_under_the_volume_threshold_is_left_out():
    big, small = _cube((2, 2, 2)), _cube((30, 15, 15), side=3)  # 27 voxels <= 50
    scores = lesionwise_region(big, big | small, GLI)  # the small lesion missed
    assert (scores.lesionwise_dice, scores.lesionwise_hd95_mm) == (1.0, 0.0)
    assert (scores.num_tp, scores.num_fp, scores.num_fn) == (1, 0, 0)
    assert [lesion.counted for lesion in scores.lesions] == [True, False]
    # predicting it is no false positive either
    assert lesionwise_region(big | small, big | small, GLI).num_fp == 0
    # MET keeps lesions above 2 mm^3: the miss counts
    met = lesionwise_region(big, big | small, MET)
    assert (met.lesionwise_dice, met.num_fn) == (0.5, 1)
    # a 50-voxel lesion is "at most 50": left out; 51 voxels count
    for voxels, counted in ((50, False), (51, True)):
        lesion = np.zeros(SHAPE, dtype=bool)
        lesion.flat[np.ravel_multi_index(np.unravel_index(np.arange(voxels), (5, 5, 5)), SHAPE)] = (
            True
        )
        assert lesionwise_region(lesion, lesion, GLI).lesions[0].counted is counted


def test_anisotropic_spacing_volumes_and_distances_in_mm():
    ref = _cube((5, 5, 5))
    shifted = _cube((6, 5, 5))  # one voxel along x
    # HD95 is one voxel along x: 1 mm at 1 mm, 0.5 mm at (0.5, 2, 2) mm
    assert lesionwise_region(shifted, ref, GLI).lesionwise_hd95_mm == 1.0
    aniso = lesionwise_region(shifted, ref, GLI, (0.5, 2.0, 2.0))
    assert aniso.lesionwise_hd95_mm == 0.5 and aniso.hd95_mm == 0.5
    assert aniso.lesionwise_dice == 0.75  # 2 * 48 / 128, spacing-free
    # 27 voxels: 27 mm^3 (left out) at 1 mm, 216 mm^3 (counted) at 2 mm
    small = _cube((5, 5, 5), side=3)
    assert lesionwise_region(np.zeros(SHAPE, bool), small, GLI).num_fn == 0
    at_2mm = lesionwise_region(np.zeros(SHAPE, bool), small, GLI, (2.0, 2.0, 2.0))
    assert at_2mm.lesions[0].volume_mm3 == 216.0
    assert (at_2mm.num_fn, at_2mm.lesionwise_dice, at_2mm.lesionwise_hd95_mm) == (1, 0.0, 374.0)


def test_empty_reference_and_or_prediction():
    empty = np.zeros(SHAPE, dtype=bool)
    lesion = _cube((2, 2, 2))
    both = lesionwise_region(empty, empty, GLI)
    assert (both.lesionwise_dice, both.lesionwise_hd95_mm, both.dice, both.hd95_mm) == (1, 0, 1, 0)
    assert (both.sensitivity, both.specificity) == (1.0, 1.0)
    only_pred = lesionwise_region(lesion, empty, GLI)
    assert (only_pred.lesionwise_dice, only_pred.lesionwise_hd95_mm) == (0.0, 374.0)
    assert (only_pred.dice, only_pred.hd95_mm, only_pred.sensitivity) == (0.0, 374.0, 0.0)
    assert only_pred.num_fp == 1
    only_ref = lesionwise_region(empty, lesion, GLI)
    assert (only_ref.lesionwise_dice, only_ref.lesionwise_hd95_mm, only_ref.num_fn) == (0, 374, 1)
    assert (only_ref.dice, only_ref.hd95_mm, only_ref.specificity) == (0.0, 374.0, 1.0)


def test_case_row_columns_and_regions_of_every_scheme():
    # gli-post: RC (4) is scored alone and kept out of TC and WT
    ref = np.zeros(SHAPE, dtype=np.uint8)
    ref[_cube((2, 2, 2))] = 4
    pred = ref.copy()
    row = evaluate_lesionwise(pred, ref, GLI_POST, GLI)
    assert list(row) == list(lesionwise_columns(GLI_POST))
    assert len(row) == len(LESIONWISE_METRICS) * 6
    assert row["LesionWise_Dice_RC"] == 1.0 and row["Num_TP_RC"] == 1.0
    for region in ("WT", "TC", "ET"):  # empty in both: no lesion
        assert row[f"Num_TP_{region}"] == 0.0 and row[f"LesionWise_Dice_{region}"] == 1.0
    # ped2024: ET is label 1; label 4 (ED) is in WT only
    ped = np.zeros(SHAPE, dtype=np.uint8)
    ped[_cube((2, 2, 2))] = 1
    ped[_cube((30, 15, 15))] = 4
    row = evaluate_lesionwise(ped, ped, PED2024, GLI)
    assert (row["Num_TP_ET"], row["Num_TP_TC"], row["Num_TP_WT"], row["Num_TP_ED"]) == (1, 1, 2, 1)
    # the same values read as brats2023: ET (3) empty
    row = evaluate_lesionwise(ped, ped, BRATS2023, GLI)
    assert row["Num_TP_ET"] == 0.0


def test_per_lesion_table():
    ref = np.zeros(SHAPE, dtype=np.uint8)
    ref[_cube((2, 2, 2))] = 3
    ref[_cube((30, 15, 15), side=3)] = 3
    rows: list[dict] = []
    evaluate_lesionwise(ref, ref, BRATS2023, GLI, case_id="c1", lesions=rows)
    et = [r for r in rows if r["Region"] == "ET"]
    assert [(r["Lesion"], r["Volume_mm3"], r["Counted"]) for r in et] == [
        (1, 64.0, True),
        (2, 27.0, False),
    ]
    assert {r["Label"] for r in rows} == {"c1"}


# --- the organisers' definition, value by value ----------------------------------------


def _random_case(rng, scheme, shape=(30, 26, 22)):
    labels = np.zeros(shape, dtype=np.uint8)
    values = list(scheme.labels)
    for _ in range(int(rng.integers(0, 7))):
        center = rng.integers(0, shape)
        radius = rng.integers(1, 5, 3)
        region = tuple(slice(max(c - r, 0), c + r) for c, r in zip(center, radius, strict=True))
        labels[region] = rng.choice(values)
    return labels


def _imperfect(rng, ref, scheme):
    pred = np.roll(ref, int(rng.integers(-1, 2)), axis=int(rng.integers(0, 3)))
    grown = ndimage.binary_dilation(pred > 0) & (pred == 0) & (rng.random(ref.shape) < 0.3)
    pred[grown] = list(scheme.labels)[0]
    speck = tuple(int(i) for i in rng.integers(0, ref.shape))
    pred[speck] = list(scheme.labels)[-1]  # a one-voxel false positive
    return pred


@pytest.mark.parametrize("seed", range(6))  # covers every scheme and every task
def test_equal_to_the_2023_definition(seed):
    rng = np.random.default_rng(seed)
    scheme = list(LABEL_SCHEMES.values())[seed % len(LABEL_SCHEMES)]
    parameters = list(LESIONWISE_PARAMETERS.values())[seed % len(LESIONWISE_PARAMETERS)]
    ref = _random_case(rng, scheme)
    pred = _imperfect(rng, ref, scheme) if seed % 3 else _random_case(rng, scheme)
    spacing = (
        (1.0, 1.0, 1.0)
        if seed % 2
        else tuple(float(np.float32(s)) for s in rng.uniform(0.6, 2.5, 3))
    )
    got = evaluate_lesionwise(pred, ref, scheme, parameters, spacing)
    want = case_scores(
        pred,
        ref,
        scheme.regions,
        parameters.dilation_iterations,
        parameters.volume_threshold_mm3,
        spacing,
    )
    assert set(got) == set(want)
    for column, value in got.items():
        assert value == pytest.approx(want[column], abs=1e-6), column


@pytest.mark.slow
def test_equal_to_the_2023_definition_on_a_real_case(shared_data):
    from brats_mtl.data import load_label_map

    ref, _, spacing = load_label_map(
        shared_data / "brats" / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz"
    )
    pred = np.roll(ref, (2, -1, 1), axis=(0, 1, 2))
    pred[10:14, 10:14, 10:14] = 4  # a false positive far from the tumour
    got = evaluate_lesionwise(pred, ref, BRATS2017, GLI, spacing)
    want = case_scores(pred, ref, BRATS2017.regions, 3, 50.0, spacing)
    for column, value in got.items():
        assert value == pytest.approx(want[column], abs=1e-6), column


# --- surface distances: DeepMind's package -------------------------------------------


def _random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(6, 20, 3))
    a = ndimage.binary_dilation(rng.random(shape) > 0.96, iterations=int(rng.integers(0, 3)))
    b = ndimage.binary_dilation(rng.random(shape) > 0.96, iterations=int(rng.integers(0, 3)))
    a[tuple(s // 2 for s in shape)] = b[0, 0, 0] = True  # neither empty; b on the border
    spacing = tuple(float(np.float32(s)) for s in rng.uniform(0.5, 3.0, 3))
    return a, b, spacing


@pytest.mark.parametrize("seed", range(6))
def test_surface_distances_equal_deepmind(seed):
    deepmind = pytest.importorskip("surface_distance")
    a, b, spacing = _random_masks(seed)
    with warnings.catch_warnings():  # it calls scipy's deprecated ndimage.filters
        warnings.simplefilter("ignore", DeprecationWarning)
        want = deepmind.compute_surface_distances(a, b, spacing)
    got = surface_distances_mm(a, b, spacing)
    keys = ("distances_gt_to_pred", "surfel_areas_gt", "distances_pred_to_gt", "surfel_areas_pred")
    for value, key in zip(got, keys, strict=True):
        assert np.array_equal(value, want[key]), key  # bit for bit
    assert robust_hausdorff_mm(a, b, spacing) == deepmind.compute_robust_hausdorff(want, 95)
    # and the tests' own transcription agrees with the package too
    assert robust_hausdorff(surface_distances(a, b, spacing)) == robust_hausdorff_mm(a, b, spacing)


def test_surface_distances_of_empty_masks():
    a = _cube((2, 2, 2))
    empty = np.zeros(SHAPE, dtype=bool)
    ref_to_pred, ref_areas, pred_to_ref, pred_areas = surface_distances_mm(a, empty)
    assert np.isinf(ref_to_pred).all() and ref_areas.sum() > 0 and pred_to_ref.size == 0
    assert math.isinf(robust_hausdorff_mm(a, empty))
    assert math.isinf(robust_hausdorff_mm(empty, empty))
    # a single voxel: 8 corner triangles of area sqrt(3) / 8 each (DeepMind's table)
    voxel = np.zeros((3, 3, 3), dtype=bool)
    voxel[1, 1, 1] = True
    _, areas, _, _ = surface_distances_mm(voxel, voxel)
    assert areas.sum() == pytest.approx(math.sqrt(3))
