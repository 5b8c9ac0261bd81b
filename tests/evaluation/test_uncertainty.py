"""The QU-BraTS score: threshold grid, filtered Dice / FTP / FTN on hand-made masks, AUCs,
empty masks, a loop implementation of the definitions, phantoms, folders and the CLI."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import ndimage

from brats_mtl.cli.main import cli
from brats_mtl.conventions import REGIONS, uncertainty_map_name
from brats_mtl.data import load_case, make_phantom, write_phantom_case
from brats_mtl.evaluation.tables import find_predictions
from brats_mtl.evaluation.uncertainty import (
    RATIO_EPS,
    UNCERTAINTY_COLUMNS,
    brain_mask_of,
    curve_auc,
    evaluate_uncertainty_folders,
    filtered_curves,
    qubrats_score,
    qubrats_thresholds,
    random_uncertainty_maps,
    region_curves,
    uncertainty_table,
)

EPS = float(np.finfo(np.float32).eps)


def test_threshold_grid_is_the_organisers():
    grid = qubrats_thresholds()
    assert grid.shape == (41,)
    assert grid[0] == 100.0 and grid[1] == 97.5 and grid[-2] == 2.5 and grid[-1] == 0.0
    np.testing.assert_array_equal(grid, [100.0 - 2.5 * k for k in range(41)])
    np.testing.assert_array_equal(qubrats_thresholds(4), [100.0, 75.0, 50.0, 25.0, 0.0])
    assert RATIO_EPS == pytest.approx(1.1920929e-07, rel=1e-7)
    with pytest.raises(ValueError, match=">= 1"):
        qubrats_thresholds(0)


def _hand_case():
    """Ten voxels in a row: reference 0-3, prediction 1-4, brain 0-7.

    TP = {1, 2, 3}, FP = {4}, FN = {0}, TN in the brain = {5, 6, 7}; 8 and 9 outside.
    """
    ref = np.zeros((10, 1, 1), bool)
    ref[0:4] = True
    pred = np.zeros((10, 1, 1), bool)
    pred[1:5] = True
    brain = np.zeros((10, 1, 1), bool)
    brain[0:8] = True
    unc = np.array([10, 0, 0, 60, 90, 30, 0, 0, 0, 0], dtype=np.uint8).reshape(10, 1, 1)
    return ref, pred, unc, brain


def test_filtered_curves_on_hand_made_masks():
    ref, pred, unc, brain = _hand_case()
    c = filtered_curves(ref, pred, unc, brain, qubrats_thresholds(4))
    third = 1.0 / (3.0 + EPS)
    # t=100: nothing filtered; 75: voxel 4 (90) out; 50: 3 (60) out too; 25: 5 (30) out
    # too; 0: 0 (10) out too.
    np.testing.assert_allclose(c.dice, [6 / 8, 6 / 7, 4 / 5, 4 / 5, 1.0], rtol=1e-12)
    np.testing.assert_allclose(c.ftp, [0.0, 0.0, third, third, third], rtol=1e-12)
    np.testing.assert_allclose(c.ftn, [0.0, 0.0, 0.0, third, third], rtol=1e-12)
    # trapezoids of width 25 over thresholds 0, 25, 50, 75, 100, divided by 100
    auc_dice = 12.5 * ((1 + 0.8) + (0.8 + 0.8) + (0.8 + 6 / 7) + (6 / 7 + 0.75)) / 100
    auc_ftp = 12.5 * (2 * third + 2 * third + third) / 100
    auc_ftn = 12.5 * (2 * third + third) / 100
    assert c.auc_dice == pytest.approx(auc_dice, rel=1e-12)
    assert c.auc_ftp == pytest.approx(auc_ftp, rel=1e-12)
    assert c.auc_ftn == pytest.approx(auc_ftn, rel=1e-12)
    assert c.auc_dice == pytest.approx(0.833035714, abs=1e-9)
    expected = (auc_dice + (1 - auc_ftp) + (1 - auc_ftn)) / 3
    assert c.score == pytest.approx(expected, rel=1e-12)
    assert c.score == pytest.approx(0.8332341, abs=1e-6)


def test_uncertainty_equal_to_the_threshold_is_kept():
    ref = np.ones((2, 1, 1), bool)
    pred = np.ones((2, 1, 1), bool)
    brain = np.ones((2, 1, 1), bool)
    unc = np.array([50.0, 50.5]).reshape(2, 1, 1)
    c = filtered_curves(ref, pred, unc, brain, np.array([100.0, 50.0, 0.0]))
    # at t=50 the voxel of 50 is kept, the one of 50.5 filtered
    np.testing.assert_allclose(c.ftp, [0.0, 1 / (2 + EPS), 2 / (2 + EPS)])


def test_empty_masks_follow_the_organisers():
    empty = np.zeros((4, 4, 4), bool)
    brain = np.ones((4, 4, 4), bool)
    unc = np.full((4, 4, 4), 100, np.uint8)  # everything filtered below 100
    c = filtered_curves(empty, empty, unc, brain)
    np.testing.assert_array_equal(c.dice, 1.0)  # both empty: Dice 1
    np.testing.assert_array_equal(c.ftp, 0.0)  # no true positive: 0 / (0 + eps)
    # every true negative is filtered at each threshold below 100
    np.testing.assert_allclose(c.ftn, [0.0] + [64 / (64 + EPS)] * 40)
    assert c.auc_ftn == pytest.approx(0.975 * 64 / (64 + EPS) + 0.0125 * 64 / (64 + EPS))
    # filtering every tumour voxel gives Dice 1 (the ratios are what penalise it)
    ref = empty.copy()
    ref[1, 1, 1] = True
    c = filtered_curves(ref, empty, unc, brain)
    assert c.dice[0] == 0.0 and (c.dice[1:] == 1.0).all()


def test_a_map_of_zeros_scores_a_third_of_dice_plus_two():
    ref, pred, _, brain = _hand_case()
    c = filtered_curves(ref, pred, np.zeros(ref.shape, np.uint8), brain)
    np.testing.assert_array_equal(c.dice, 0.75)  # nothing is ever filtered
    assert c.auc_ftp == 0.0 and c.auc_ftn == 0.0
    assert c.score == pytest.approx((0.75 + 2) / 3, rel=1e-12)


def _loop_reference(ref, pred, unc, brain, thresholds):
    """The definitions written as one mask per threshold (a slow reading of the paper)."""
    dice, ftp, ftn = [], [], []
    tp = ref & pred & brain
    tn = ~ref & ~pred & brain
    for t in thresholds:
        keep = unc <= t
        r, p = ref & keep, pred & keep
        denom = r.sum() + p.sum()
        dice.append(1.0 if denom == 0 else 2.0 * (r & p).sum() / denom)
        ftp.append((tp.sum() - (tp & keep).sum()) / (tp.sum() + EPS))
        ftn.append((tn.sum() - (tn & keep).sum()) / (tn.sum() + EPS))
    return np.array(dice), np.array(ftp), np.array(ftn)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sorted_counting_equals_one_mask_per_threshold(seed):
    rng = np.random.default_rng(seed)
    shape = (12, 10, 8)
    ref = rng.random(shape) < 0.3
    pred = rng.random(shape) < 0.3
    brain = rng.random(shape) < 0.8
    unc = rng.integers(0, 101, size=shape).astype(np.float64)
    unc[rng.random(shape) < 0.2] = 97.5  # on the grid: kept at 97.5
    grid = qubrats_thresholds()
    c = filtered_curves(ref, pred, unc, brain, grid)
    dice, ftp, ftn = _loop_reference(ref, pred, unc, brain, grid)
    np.testing.assert_allclose(c.dice, dice, rtol=1e-12)
    np.testing.assert_allclose(c.ftp, ftp, rtol=1e-12)
    np.testing.assert_allclose(c.ftn, ftn, rtol=1e-12)


def test_auc_is_positive_in_either_direction_and_rejects_bad_grids():
    grid = qubrats_thresholds(4)
    values = np.array([1.0, 0.5, 0.5, 0.0, 0.0])
    assert curve_auc(grid, values) == curve_auc(grid[::-1], values[::-1]) == 0.375
    with pytest.raises(ValueError, match="monotonic"):
        curve_auc(np.array([0.0, 50.0, 25.0]), np.zeros(3))
    assert qubrats_score(1.0, 0.0, 0.0) == 1.0 and qubrats_score(0.0, 1.0, 1.0) == 0.0


def test_values_outside_0_100_are_refused():
    m = np.ones((2, 2, 2), bool)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        filtered_curves(m, m, np.full((2, 2, 2), 101.0), m)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        filtered_curves(m, m, np.full((2, 2, 2), np.nan), m)


def test_brain_mask_rules():
    image = np.zeros((4, 3, 1, 1), np.float32)
    image[:, 0] = 1.0  # all four modalities
    image[1, 1] = 1.0  # only t1ce
    image[0, 2] = 5.0  # only t1
    np.testing.assert_array_equal(brain_mask_of(image, "t1").ravel(), [True, False, True])
    np.testing.assert_array_equal(brain_mask_of(image, "any").ravel(), [True, True, True])
    np.testing.assert_array_equal(brain_mask_of(image, "all").ravel(), [True, False, False])
    with pytest.raises(ValueError, match="t1"):
        brain_mask_of(image, "flair")


def _phantom_prediction(ref_labels):
    """A prediction wrong along the tumour's borders: WT grown, TC shrunk, ET grown."""
    ref = {r: np.isin(ref_labels, labels) for r, labels in REGIONS.items()}
    wt = ndimage.binary_dilation(ref["WT"], iterations=2)
    tc = ndimage.binary_erosion(ref["TC"])
    et = ndimage.binary_dilation(ref["ET"]) & tc
    pred = np.zeros_like(ref_labels)
    pred[wt], pred[tc], pred[et] = 2, 1, 4
    return pred


def _border_maps(pred_labels):
    """Informative maps: 100 on a region's predicted border, decaying away from it."""
    maps = {}
    for region, labels in REGIONS.items():
        mask = np.isin(pred_labels, labels)
        border = mask ^ ndimage.binary_erosion(mask)
        distance = ndimage.distance_transform_edt(~border)
        maps[region] = np.rint(100 * np.exp(-distance / 1.5)).astype(np.uint8)
    return maps


def test_informative_maps_beat_random_maps_on_a_phantom():
    image, ref = make_phantom((64, 64, 64), seed=3)
    pred = _phantom_prediction(ref)
    brain = brain_mask_of(image)
    informative = region_curves(pred, ref, _border_maps(pred), brain)
    random = region_curves(pred, ref, random_uncertainty_maps(ref.shape, 0), brain)
    for region in ("WT", "TC", "ET"):
        good, bad = informative[region].score, random[region].score
        assert 0.0 <= bad < good <= 1.0, region
    # filtering the uncertain border (the grown WT's false positives) raises Dice
    assert informative["WT"].auc_dice > informative["WT"].dice[0] + 0.1


def _write_map(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data, np.uint8), affine), str(path))


def test_folders_cli_and_table(tmp_path):
    data = tmp_path / "data"
    preds = tmp_path / "preds"
    preds.mkdir()
    ids, files_by_id = [], []
    for i in range(2):
        files = write_phantom_case(data, f"BraTS2021_{i:05d}", shape=(32, 32, 32), seed=i)
        files_by_id.append(files)
        case = load_case(files)
        pred = _phantom_prediction(case.labels)
        nib.save(nib.Nifti1Image(pred, case.affine), str(preds / f"{case.case_id}.nii.gz"))
        for region, m in _border_maps(pred).items():
            _write_map(preds / uncertainty_map_name(case.case_id, region), m, case.affine)
        ids.append(case.case_id)
    # a third prediction without maps is reported, not scored
    nib.save(
        nib.Nifti1Image(np.zeros((32, 32, 32), np.uint8), case.affine),
        str(preds / "BraTS2021_99999.nii.gz"),
    )
    assert set(find_predictions(preds)) == {*ids, "BraTS2021_99999"}  # maps are no labels

    results = evaluate_uncertainty_folders(preds, data, random_seed=0)
    assert list(results.per_case["Label"]) == ids
    assert results.missing["references"] == ["BraTS2021_99999"]
    scores = results.per_case[[c for c in UNCERTAINTY_COLUMNS if c.startswith("Score")]]
    assert ((scores > 0) & (scores <= 1)).all().all()
    # on these small phantoms only WT has a wide error band for the maps to find
    assert (results.per_case["Score_WT"] > results.random["Score_WT"] + 0.2).all()
    # maps of 0 filter nothing: (Dice + 2) / 3 of the unfiltered Dice
    for _, row in results.zero.iterrows():
        case_id = row["Label"]
        ref = np.isin(
            load_case(next(f for f in files_by_id if f.case_id == case_id)).labels, REGIONS["WT"]
        )
        pred = np.isin(np.asarray(nib.load(preds / f"{case_id}.nii.gz").dataobj), REGIONS["WT"])
        dice = 2 * (ref & pred).sum() / (ref.sum() + pred.sum())
        assert row["Score_WT"] == pytest.approx((dice + 2) / 3, rel=1e-12)
    assert len(results.curves) == 2 * 3 * 41
    table = uncertainty_table(results.per_case)
    assert list(table["Label"])[-5:] == ["Mean", "StdDev", "Median", "25quantile", "75quantile"]

    out = tmp_path / "unc.csv"
    run = CliRunner().invoke(
        cli,
        [
            "evaluate-uncertainty",
            str(preds),
            str(data),
            "--out",
            str(out),
            "--random-baseline",
            "--curves",
            str(tmp_path / "curves.csv"),
        ],
    )
    assert run.exit_code == 0, run.output
    written = pd.read_csv(out)
    assert list(written.columns) == ["Label", *UNCERTAINTY_COLUMNS]
    np.testing.assert_allclose(
        written.iloc[:2][list(UNCERTAINTY_COLUMNS)].to_numpy(dtype=float),
        results.per_case[list(UNCERTAINTY_COLUMNS)].to_numpy(dtype=float),
        rtol=1e-9,
    )
    assert (tmp_path / "unc_random.csv").is_file()
    assert len(pd.read_csv(tmp_path / "curves.csv")) == 2 * 3 * 41
    assert "WT" in run.output and "random" in run.output and "zero" in run.output
    again = CliRunner().invoke(
        cli, ["evaluate-uncertainty", str(preds), str(data), "--out", str(out)]
    )
    assert again.exit_code != 0 and "--overwrite" in again.output


def test_a_map_of_the_wrong_shape_names_the_file(tmp_path):
    data, preds = tmp_path / "data", tmp_path / "preds"
    files = write_phantom_case(data, "BraTS2021_00000", shape=(24, 24, 24), seed=0)
    case = load_case(files)
    preds.mkdir()
    nib.save(nib.Nifti1Image(case.labels, case.affine), str(preds / f"{case.case_id}.nii.gz"))
    for region in ("WT", "TC", "ET"):
        _write_map(
            preds / uncertainty_map_name(case.case_id, region), np.zeros((24, 24, 23)), case.affine
        )
    with pytest.raises(ValueError, match=r"_unc_whole\.nii\.gz has shape"):
        evaluate_uncertainty_folders(preds, data)


def _zero_maps(pred_dir, case_id, shape, affine):
    for region in ("WT", "TC", "ET"):
        _write_map(pred_dir / uncertainty_map_name(case_id, region), np.zeros(shape), affine)


@pytest.mark.parametrize(
    ("case_id", "scheme", "changed"),
    [
        # BraTS 2023+: ET (3) predicted as NETC (1) leaves TC = NETC + ET and WT as they are
        ("BraTS-GLI-00001-000", "brats2023", {3: 1}),
        # post-treatment: the resection cavity (4) is in no region; dropping it changes none
        ("BraTS-GLI-00002-100", "gli-post", {4: 0}),
    ],
)
def test_folders_score_each_scheme_in_its_own_regions(tmp_path, case_id, scheme, changed):
    """A prediction in the scheme's file values is scored on the scheme's WT, TC and ET;
    with all-zero maps the score is (Dice + 2) / 3 of those regions. A reoriented copy
    (RAS) of the prediction and its maps scores the same."""
    from brats_mtl.tasks import get_label_scheme

    data = tmp_path / "data"
    files = write_phantom_case(
        data,
        case_id,
        layout="brats2023",
        shape=(32, 32, 32),
        seed=4,
        labels=scheme if scheme == "gli-post" else None,
    )
    seg = nib.load(files.seg)
    ref = np.asarray(seg.dataobj).astype(np.uint8)
    assert set(changed) <= set(np.unique(ref).tolist())  # the phantom holds the label
    pred = ref.copy()
    for old, new in changed.items():
        pred[ref == old] = new
    regions = get_label_scheme(scheme).regions

    def expected(region):
        r, p = np.isin(ref, regions[region]), np.isin(pred, regions[region])
        dice = 2 * (r & p).sum() / (r.sum() + p.sum())
        return (dice + 2) / 3

    scores = {}
    for name, orient in (("same", None), ("ras", True)):
        preds = tmp_path / f"preds_{name}"
        preds.mkdir()
        image = nib.Nifti1Image(pred, seg.affine)
        if orient:
            image = nib.as_closest_canonical(image)
        nib.save(image, str(preds / f"{case_id}.nii.gz"))
        _zero_maps(preds, case_id, image.shape, image.affine)
        results = evaluate_uncertainty_folders(preds, data, labels=scheme if orient else None)
        scores[name] = results.per_case.iloc[0]
    for region in ("WT", "TC", "ET"):
        assert scores["same"][f"Score_{region}"] == pytest.approx(expected(region), abs=1e-12)
        assert scores["ras"][f"Score_{region}"] == pytest.approx(expected(region), abs=1e-12)
    # the changed label moved between regions only where the scheme says so
    assert scores["same"]["Score_WT"] == pytest.approx(1.0)
    assert scores["same"]["Score_TC"] == pytest.approx(1.0)


def test_a_map_on_another_grid_than_the_reference_is_refused(tmp_path):
    """A map of the right shape whose affine puts it elsewhere is not scored as if aligned."""
    data, preds = tmp_path / "data", tmp_path / "preds"
    files = write_phantom_case(data, "BraTS2021_00000", shape=(24, 24, 24), seed=0)
    case = load_case(files)
    preds.mkdir()
    nib.save(nib.Nifti1Image(case.labels, case.affine), str(preds / f"{case.case_id}.nii.gz"))
    shifted = case.affine.copy()
    shifted[:3, 3] += 10.0  # 10 mm away
    for region in ("WT", "TC", "ET"):
        affine = shifted if region == "TC" else case.affine
        _write_map(preds / uncertainty_map_name(case.case_id, region), np.zeros((24,) * 3), affine)
    with pytest.raises(ValueError, match=r"_unc_core\.nii\.gz"):
        evaluate_uncertainty_folders(preds, data)
