"""Degenerate inputs, through the API and the CLI.

An empty brain and a modality constant inside the brain are predicted (all background;
the channel 0 after normalisation, as nnU-Net) and refused by training; NaN/inf voxels
are refused in memory as on loading; a modality on another grid is named as the odd one
out; cases of a fold's training split are marked; ``predictions.csv`` floats are rounded.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from brats_mtl.cli.main import cli
from brats_mtl.config import InferenceConfig, apply_overrides
from brats_mtl.conventions import BRATS_2019, MODALITIES, classes_to_labels
from brats_mtl.data import (
    Case,
    CaseDataError,
    CaseFiles,
    load_case,
    make_phantom,
    write_phantom_case,
)
from brats_mtl.inference.segmenter import Segmenter
from brats_mtl.predict import predict_cases
from brats_mtl.preprocessing import (
    MIN_STD,
    ConstantChannelError,
    NonFiniteImageError,
    brain_mask,
    preprocess_case,
    uncrop,
    zscore_in_mask,
)
from brats_mtl.presets import tiny_config
from brats_mtl.workspace.prediction_dir import PredictionDir
from tests.helpers import make_run

SHAPE = (24, 20, 18)
TOY_CONFIG = InferenceConfig(tta=0, et_min_voxels=0, device="cpu", precision="32")
FAST = ["--tta", "0", "--mode", "whole", "--no-progress", "--set", "inference.device=cpu"]


def toy(x: torch.Tensor):
    """Pointwise toy model: class probabilities = softmax(3 * channels), ET probability 0.9."""
    return torch.softmax(3.0 * x, 1), torch.full((x.shape[0],), 0.9)


def toy_segmenter() -> Segmenter:
    return Segmenter({0: toy}, TOY_CONFIG, patch_size=16)


def in_memory_case(image: np.ndarray, layout: str = "brats2021") -> Case:
    files = CaseFiles(
        case_id="P1",
        layout=layout,
        images={m: f"/data/P1/P1_{m}.nii.gz" for m in MODALITIES},
        seg=None,
        grade=None,
        label_convention=BRATS_2019,
    )
    return Case(files, image, None, np.eye(4), None, (1.0, 1.0, 1.0))


def rewrite(path, change) -> None:
    """Replace a NIfTI file's voxels by ``change(voxels as float32)``, same grid, float32."""
    img = nib.load(path)
    data = np.asarray(change(np.asarray(img.dataobj, dtype=np.float32).copy()), np.float32)
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    nib.save(nib.Nifti1Image(data, img.affine, header), path)


def make_empty(files: CaseFiles) -> None:
    for path in files.images.values():
        rewrite(path, np.zeros_like)


def make_constant(files: CaseFiles, modality: str, value: float = 0.0) -> None:
    rewrite(files.images[modality], lambda data: np.full_like(data, value))


@pytest.fixture
def cohort(tmp_path):
    root = tmp_path / "input"
    files = [write_phantom_case(root, f"BraTS2021_0000{i}", shape=SHAPE, seed=i) for i in range(3)]
    return root, files


# --- NaN and inf in memory ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused_in_memory_as_on_loading(tmp_path, bad):
    image, _ = make_phantom(SHAPE, seed=1)
    image[1, 0, 0, 0] = bad  # a background corner: a NaN there would widen the brain box
    expected = (
        "modality t1ce holds 1 NaN/inf voxels; BraTS images must be finite (background 0): "
        "fix or re-export the file"
    )
    for call in (
        lambda: brain_mask(image),
        lambda: zscore_in_mask(image, np.ones(SHAPE, bool)),
        lambda: preprocess_case(in_memory_case(image), allow_degenerate=True),
    ):
        with pytest.raises(NonFiniteImageError) as error:
            call()
        assert error.value.channel == "t1ce" and error.value.n_bad == 1
        assert "constant" not in str(error.value)
    with pytest.raises(NonFiniteImageError) as error:
        brain_mask(image)
    assert str(error.value) == expected
    # the same words as loading the file: a loaded case names the file it came from
    files = write_phantom_case(tmp_path, "BraTS2021_00001", shape=SHAPE, seed=1)
    case = load_case(files, load_labels=False)
    image = case.image.copy()
    image[1, 0, 0, 0] = bad
    with pytest.raises(NonFiniteImageError) as in_memory:
        preprocess_case(dataclasses.replace(case, image=image))
    rewrite(files.images["t1ce"], lambda data: image[1])
    with pytest.raises(CaseDataError) as on_loading:
        load_case(files)
    assert str(in_memory.value) == str(on_loading.value)
    assert str(files.images["t1ce"]) in str(in_memory.value)
    # an MSD case names the channel of its 4-D file, as loading does
    msd = in_memory_case(image, layout="msd")
    msd = dataclasses.replace(
        msd, files=dataclasses.replace(msd.files, images=dict.fromkeys(MODALITIES, "/d/P1.nii"))
    )
    with pytest.raises(NonFiniteImageError, match=r"^/d/P1.nii \(channel t1ce\) holds 1 NaN"):
        preprocess_case(msd)


# --- empty brain, constant modality: preprocessing ----------------------------------------


def test_an_empty_brain_is_a_zero_size_crop_for_prediction_only():
    case = in_memory_case(np.zeros((4, *SHAPE), np.float32))
    with pytest.raises(ValueError, match=r"P1_t1.nii.gz.*is 0; no brain to crop"):
        preprocess_case(case)
    pre = preprocess_case(case, allow_degenerate=True)
    assert pre.empty and pre.image.shape == (4, 0, 0, 0) and pre.original_shape == SHAPE
    assert pre.constant_channels == ()
    back = uncrop(np.zeros((0, 0, 0), np.uint8), pre.box, SHAPE, fill=0)
    assert back.shape == SHAPE and not back.any()


def test_a_constant_modality_is_zero_after_normalisation_for_prediction_only():
    image, _ = make_phantom(SHAPE, seed=4)
    mask = brain_mask(image)
    image[2][mask] = 0.0  # t2 blank inside the brain (the other three keep the mask)
    with pytest.raises(ConstantChannelError, match="modality t2 is constant"):
        preprocess_case(in_memory_case(image))
    pre = preprocess_case(in_memory_case(image), allow_degenerate=True)
    assert pre.constant_channels == ("t2",) and not pre.empty
    assert not pre.image[2].any()
    # the other channels as nnU-Net's ZScoreNormalization: (x - mean) / max(std, 1e-8)
    cropped = image[(slice(None), *pre.box)]
    inside = brain_mask(image)[pre.box]
    for c in (0, 1, 3):
        values = cropped[c][inside].astype(np.float64)
        reference = (values - values.mean()) / max(values.std(), MIN_STD)
        np.testing.assert_allclose(pre.image[c][inside], reference, atol=1e-5)
        assert not pre.image[c][~inside].any()
    out = zscore_in_mask(image, mask, allow_constant=True)
    np.testing.assert_array_equal(out[2], 0)


# --- empty brain, constant modality: prediction --------------------------------------------


def test_segmenter_predicts_degenerate_cases(cohort, caplog):
    _, files = cohort
    make_empty(files[0])
    make_constant(files[1], "t1ce")
    segmenter = toy_segmenter()
    with caplog.at_level(logging.WARNING, logger="brats_mtl"):
        empty = segmenter.predict_case(load_case(files[0], load_labels=False))
        degraded_case = load_case(files[1], load_labels=False)
        degraded = segmenter.predict_case(degraded_case)
    assert empty.labels.shape == SHAPE and not empty.labels.any()
    assert np.isnan(empty.et_probability) and not empty.et_suppressed
    # the toy model on the case with t1ce 0: the argmax of the z-scored channels
    pre = preprocess_case(degraded_case, allow_degenerate=True)
    classes = torch.softmax(3.0 * torch.from_numpy(pre.image), 0).argmax(0).numpy()
    inside = brain_mask(degraded_case.image)
    expected = np.where(inside, uncrop(classes_to_labels(classes), pre.box, SHAPE), 0)
    np.testing.assert_array_equal(degraded.labels, expected)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0].startswith(f"{files[0].case_id}: every voxel of its four modalities")
    assert warnings[1].startswith(
        f"{files[1].case_id}: {files[1].images['t1ce']} (t1ce) is constant"
    )


def test_predict_cases_writes_and_records_degenerate_cases(tmp_path, cohort, caplog):
    _, files = cohort
    make_empty(files[0])
    make_constant(files[1], "t1ce", value=7.0)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="brats_mtl"):
        table = predict_cases(files, toy_segmenter(), out, save_probabilities=True)
    assert table["status"].tolist() == ["empty", "degraded", "ok"]
    written = nib.load(out / f"{files[0].case_id}.nii.gz")
    source = nib.load(files[0].images["t1"])
    assert written.shape == SHAPE and not np.asarray(written.dataobj).any()
    np.testing.assert_allclose(written.affine, source.affine)
    probabilities = np.asarray(
        nib.load(out / "probabilities" / f"{files[0].case_id}.nii.gz").get_fdata()
    )
    np.testing.assert_allclose(probabilities[..., 0], 1.0)
    np.testing.assert_allclose(probabilities[..., 1:], 0.0)
    csv = pd.read_csv(out / "predictions.csv").set_index("case_id")
    assert csv["status"].tolist() == ["empty", "degraded", "ok"]
    empty = csv.loc[files[0].case_id]
    assert empty["volume_WT_ml"] == 0 and pd.isna(empty["et_probability"])
    assert "empty brain mask" in empty["warning"] and pd.isna(empty["error"])
    degraded = csv.loc[files[1].case_id]
    assert degraded["warning"].startswith(f"{files[1].images['t1ce']} (t1ce) is constant")
    assert degraded["volume_WT_ml"] > 0 and pd.isna(csv.loc[files[2].case_id, "warning"])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert files[0].case_id in logged and str(files[1].images["t1ce"]) in logged
    # empty and degraded cases are finished: a re-run skips them
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="brats_mtl"):
        again = predict_cases(files, toy_segmenter(), out, save_probabilities=True)
    assert again["status"].tolist() == ["empty", "degraded", "ok"]
    assert "0 cases predicted, 3 skipped" in "\n".join(r.getMessage() for r in caplog.records)


def test_cli_predicts_degenerate_cases_and_refuses_nan(tmp_path, cohort):
    root, files = cohort
    make_empty(files[0])
    make_constant(files[1], "flair")
    rewrite(files[2].images["t2"], lambda data: np.where(data > 0, np.nan, data))
    run = make_run(tmp_path / "run", [f.case_id for f in files])
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["predict", str(run), str(root), str(out), "--folds", "0", *FAST]
    )
    # empty and degraded cases are segmented; the NaN case alone fails
    assert result.exit_code == 1, result.output
    assert "2 of 3 cases segmented into" in result.output
    assert f"EMPTY {files[0].case_id}: every voxel" in result.output
    assert f"DEGRADED {files[1].case_id}: {files[1].images['flair']} (flair)" in result.output
    assert f"FAILED {files[2].case_id}: {files[2].images['t2']} holds " in result.output
    table = pd.read_csv(out / "predictions.csv").set_index("case_id")
    assert table["status"].tolist() == ["empty", "degraded", "error"]
    assert "NaN/inf voxels" in table.loc[files[2].case_id, "error"]
    assert not np.asarray(nib.load(out / f"{files[0].case_id}.nii.gz").dataobj).any()
    assert (out / f"{files[1].case_id}.nii.gz").exists()


def test_training_refuses_empty_and_constant_cases_up_front(tmp_path):
    from brats_mtl.training.cache import UnusableCasesError
    from brats_mtl.training.runner import prepare_run

    root = tmp_path / "data"
    files = [write_phantom_case(root, f"BraTS2021_0000{i}", shape=SHAPE, seed=i) for i in range(3)]
    make_empty(files[0])
    make_constant(files[1], "t2", value=3.0)
    config = apply_overrides(tiny_config(16), ["train.n_folds=2", "train.cache_workers=0"])
    with pytest.raises(UnusableCasesError) as error:
        prepare_run(root, tmp_path / "run", config)
    problems = dict(error.value.problems)
    assert sorted(problems) == [files[0].case_id, files[1].case_id]
    assert "is 0; no brain to crop" in problems[files[0].case_id]
    assert problems[files[1].case_id].startswith(
        f"{files[1].images['t2']}: modality t2 is constant"
    )


# --- cases of a fold's training split -----------------------------------------------------


def test_cases_of_a_training_split_are_marked_and_warned_about(tmp_path, cohort, caplog):
    from brats_mtl.training import read_splits

    root, files = cohort
    ids = [f.case_id for f in files]
    run = make_run(tmp_path / "run", ids)
    splits = read_splits(run)
    with caplog.at_level(logging.WARNING, logger="brats_mtl"):
        result = CliRunner().invoke(
            cli, ["predict", str(run), str(root), str(tmp_path / "fold0"), "--folds", "0", *FAST]
        )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "fold0" / "predictions.csv", dtype={"train_folds": str})
    marked = {c for c, f in zip(table["case_id"], table["train_folds"], strict=True) if f == "0"}
    assert marked == set(splits.train_ids(0)) == {ids[0]}  # this split: one case
    assert table["train_folds"].isna().sum() == len(splits.val_ids(0)) == 2
    warning = [r.getMessage() for r in caplog.records if "training split" in r.getMessage()]
    assert warning == [
        f"1 of 3 cases was in the training split of a fold model predicting it (column "
        f"train_folds of predictions.csv), e.g. {ids[0]} (fold 0): scores on it are not "
        "held-out results; for cross-validation scores predict with --out-of-fold"
    ]
    # both folds: every case is held out by one of them, so the other one trained on it
    train_splits = {k: splits.train_ids(k) for k in range(2)}
    both = Segmenter({0: toy, 1: toy}, TOY_CONFIG, patch_size=16)
    table = predict_cases(files, both, tmp_path / "both", train_splits=train_splits)
    expected = [",".join(str(k) for k in range(2) if c in splits.train_ids(k)) for c in ids]
    assert table["train_folds"].tolist() == expected and sorted(expected) == ["0", "1", "1"]
    # out of fold: each case by the fold that held it out, nothing marked or warned about
    caplog.clear()
    own = {c: [k] for k in range(2) for c in splits.val_ids(k)}
    with caplog.at_level(logging.WARNING, logger="brats_mtl"):
        table = predict_cases(
            files, both, tmp_path / "oof", case_folds=own, train_splits=train_splits
        )
    assert table["train_folds"].tolist() == ["", "", ""]
    assert not [r for r in caplog.records if "training split" in r.getMessage()]


# --- a modality on another grid -------------------------------------------------------------


def test_the_odd_modality_out_is_named(tmp_path):
    files = write_phantom_case(tmp_path / "a", "BraTS2021_00000", shape=SHAPE, seed=0)
    rewrite(files.images["t1"], lambda data: data[:, :, :-2])  # t1 cut
    with pytest.raises(CaseDataError) as error:
        load_case(files)
    message = str(error.value)
    assert message.startswith(
        f"{files.images['t1']} (t1) has shape (24, 20, 16), but the other "
        "modalities (t1ce, t2, flair, e.g. "
    )
    assert f"{files.images['t1ce']}) have (24, 20, 18)" in message
    # another affine for t1: named, on one line
    files = write_phantom_case(tmp_path / "b", "BraTS2021_00000", shape=SHAPE, seed=0)
    img = nib.load(files.images["t1"])
    shifted = img.affine.copy()
    shifted[0, 3] += 10
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted, img.header), files.images["t1"])
    with pytest.raises(CaseDataError) as error:
        load_case(files)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"{files.images['t1']} (t1) has affine [[-1, 0, 0, 10], [0, -1, 0, 19]"
    )
    assert "but the other modalities (t1ce, t2, flair" in message
    # two against two: no majority, all four are listed
    for modality in ("t1", "t1ce"):
        rewrite(files.images[modality], lambda data: data[:-1])
    with pytest.raises(CaseDataError) as error:
        load_case(files)
    message = str(error.value)
    assert message.startswith("the modalities differ in shape, with no majority: ")
    for modality in MODALITIES:
        assert f"{files.images[modality]} ({modality}): " in message


def test_an_affine_error_is_one_line_in_the_csv(tmp_path, cohort):
    _, files = cohort
    img = nib.load(files[0].images["t2"])
    shifted = img.affine.copy()
    shifted[1, 3] -= 2.5
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted, img.header), files[0].images["t2"])
    out = tmp_path / "out"
    predict_cases(files[:1], toy_segmenter(), out)
    text = (out / "predictions.csv").read_text()
    assert len(text.splitlines()) == 2  # the header and the one case
    error = pd.read_csv(out / "predictions.csv").loc[0, "error"]
    assert error.startswith(
        f"{files[0].images['t2']} (t2) has affine [[-1, 0, 0, 0], [0, -1, 0, 16.5]"
    )


# --- predictions.csv floats, and the order of checks ---------------------------------------


def test_csv_floats_carry_no_binary_noise(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    row = {
        "case_id": "A",
        "folds": "0",
        "train_folds": "",
        "et_probability": 0.7587123456789,
        "et_suppressed": False,
        "volume_WT_ml": 62.431000000000004,
        "volume_TC_ml": 0.1 + 0.2,
        "volume_ET_ml": 0.0,
        "seconds": 12.3456789,
        "status": "ok",
        "warning": "",
        "error": "",
    }
    (records / "A.json").write_text(json.dumps(row))
    PredictionDir(tmp_path).merge_records()
    line = (tmp_path / "predictions.csv").read_text().splitlines()[1]
    # the three mean_uncertainty columns are empty: no maps
    assert line == "A,0,,0.758712,False,62.431,0.3,0,,,,12.3457,ok,,"


def test_a_missing_input_is_named_before_checkpoint_warnings(tmp_path):
    # folds stopped before their first validation: last.ckpt only
    run = make_run(tmp_path / "run", ["A", "B"], names=("last", "last"))
    result = CliRunner().invoke(
        cli, ["predict", str(run), str(tmp_path / "nowhere"), str(tmp_path / "out"), *FAST]
    )
    assert result.exit_code != 0
    assert "nowhere" in result.output and "does not exist" in result.output
    assert "best.ckpt" not in result.output
