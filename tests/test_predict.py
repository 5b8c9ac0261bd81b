"""Cases and cohorts on disk: output geometry and label convention, resume, failures,
shards, probability maps, the brain mask, precision, out-of-fold prediction and the
``brats-mtl predict`` command.

Phantom cases are written to ``tmp_path``; models are toy predictors or a tiny random
``MultiTaskNet`` saved in a run folder as the training code saves one.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import threading
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from brats_mtl.cli.main import cli
from brats_mtl.config import InferenceConfig
from brats_mtl.conventions import BRATS_2019, BRATS_2023, classes_to_labels
from brats_mtl.data import load_case, write_phantom_case
from brats_mtl.inference.segmenter import Segmenter, WindowProgress, check_inference_config
from brats_mtl.model import MultiTaskNet
from brats_mtl.predict import (
    discover_prediction_cases,
    parse_shard,
    predict_cases,
    predict_cohort,
    select_shard,
    threshold_cases,
)
from brats_mtl.preprocessing import brain_mask, crop, preprocess_case, uncrop
from brats_mtl.presets import tiny_config
from brats_mtl.workspace.prediction_dir import CSV_COLUMNS, PredictionDir
from tests.helpers import make_run

SHAPE = (36, 30, 26)
CONFIG = InferenceConfig(tta=4, overlap=0.5, window_batch_size=4, device="cpu")


class ChannelArgmax:
    """Pointwise toy model: class probabilities = softmax(3 * channels); counts its calls.

    The argmax of the z-scored channels picks all four classes somewhere in a phantom,
    so ET is present and the label convention on output is visible.
    """

    def __init__(self, et_probability: float = 0.9) -> None:
        self.calls = 0
        self.et_probability = et_probability

    def __call__(self, x: torch.Tensor):
        self.calls += 1
        return torch.softmax(3.0 * x, 1), torch.full((x.shape[0],), self.et_probability)


def expected_labels(case) -> np.ndarray:
    pre = preprocess_case(case)
    classes = torch.softmax(3.0 * torch.from_numpy(pre.image), 0).argmax(0).numpy()
    return uncrop(classes_to_labels(classes), pre.box, pre.original_shape)


@pytest.fixture
def cohort(tmp_path):
    root = tmp_path / "input"
    files = [write_phantom_case(root, f"BraTS2021_0000{i}", shape=SHAPE, seed=i) for i in range(3)]
    return root, files


@pytest.mark.parametrize(
    ("layout", "case_id", "convention"),
    [
        ("brats2021", "BraTS2021_00007", BRATS_2019),
        ("brats2023", "BraTS-GLI-00007-000", BRATS_2023),
    ],
)
def test_output_keeps_grid_header_and_label_convention(tmp_path, layout, case_id, convention):
    files = write_phantom_case(tmp_path / "in", case_id, layout=layout, shape=SHAPE, seed=3)
    out = tmp_path / "out"
    table = predict_cases([files], Segmenter({0: ChannelArgmax()}, CONFIG, patch_size=16), out)
    assert table["status"].tolist() == ["ok"]
    written = nib.load(out / f"{case_id}.nii.gz")
    source = nib.load(files.images["t1"])
    assert written.shape == source.shape == SHAPE
    np.testing.assert_allclose(written.affine, source.affine)
    assert written.get_data_dtype() == np.uint8
    raw = np.asarray(written.dataobj)
    expected = expected_labels(load_case(files, load_labels=False))
    assert set(np.unique(expected)) == {0, 1, 2, 4}
    np.testing.assert_array_equal(raw, convention.from_internal(expected))
    row = pd.read_csv(out / "predictions.csv").iloc[0]
    assert list(pd.read_csv(out / "predictions.csv").columns) == list(CSV_COLUMNS)
    assert row["et_probability"] == pytest.approx(0.9)
    assert not row["et_suppressed"]
    spacing = np.prod(source.header.get_zooms()[:3])
    assert row["volume_ET_ml"] == pytest.approx(np.count_nonzero(expected == 4) * spacing / 1000)
    assert row["volume_WT_ml"] == pytest.approx(np.count_nonzero(expected > 0) * spacing / 1000)


def test_low_et_probability_suppresses_small_et(tmp_path, cohort):
    _, files = cohort
    config = InferenceConfig(tta=0, et_probability_threshold=0.5, et_min_voxels=10**6, device="cpu")
    out = tmp_path / "out"
    predict_cases(files[:1], Segmenter({0: ChannelArgmax(0.1)}, config, patch_size=16), out)
    labels = np.asarray(nib.load(out / f"{files[0].case_id}.nii.gz").dataobj)
    expected = expected_labels(load_case(files[0], load_labels=False))
    assert not (labels == 4).any()
    np.testing.assert_array_equal(labels > 0, expected > 0)  # WT unchanged
    row = pd.read_csv(out / "predictions.csv").iloc[0]
    assert row["et_suppressed"] and row["volume_ET_ml"] == 0


def test_rerun_skips_finished_cases_and_keeps_their_rows(tmp_path, cohort):
    _, files = cohort
    out = tmp_path / "out"
    model = ChannelArgmax()
    predict_cases(files[:2], Segmenter({0: model}, CONFIG, patch_size=16), out)
    calls, first = model.calls, pd.read_csv(out / "predictions.csv")
    mtime = (out / f"{files[0].case_id}.nii.gz").stat().st_mtime_ns
    # as if interrupted between its label map and its record: its origin is not
    # recorded, so it is predicted again (with the third case); the first is skipped
    (out / "records" / f"{files[1].case_id}.json").unlink()
    table = predict_cases(files, Segmenter({0: model}, CONFIG, patch_size=16), out)
    assert (out / f"{files[0].case_id}.nii.gz").stat().st_mtime_ns == mtime
    assert model.calls - calls == calls  # two of the three cases were predicted
    merged = pd.read_csv(out / "predictions.csv")
    assert merged["case_id"].tolist() == [f.case_id for f in files]
    assert (table["status"] == "ok").all()
    kept = merged.set_index("case_id").loc[files[0].case_id]
    assert kept["seconds"] == pytest.approx(
        first.set_index("case_id").loc[files[0].case_id, "seconds"]
    )
    redone = merged.set_index("case_id").loc[files[1].case_id]
    assert redone["et_probability"] == pytest.approx(0.9) and redone["volume_WT_ml"] > 0
    again = predict_cases(
        files[:1], Segmenter({0: model}, CONFIG, patch_size=16), out, overwrite=True
    )
    assert again["status"].tolist() == ["ok"]
    assert (out / f"{files[0].case_id}.nii.gz").stat().st_mtime_ns != mtime


def test_a_bad_case_is_reported_and_the_others_go_on(tmp_path, cohort):
    _, files = cohort
    t1 = files[1].images["t1"]
    t1.write_bytes(t1.read_bytes()[:200])  # truncated file
    out = tmp_path / "out"
    table = predict_cases(files, Segmenter({0: ChannelArgmax()}, CONFIG, patch_size=16), out)
    assert table["status"].tolist() == ["ok", "error", "ok"]
    assert str(t1.name) in table.loc[1, "error"]
    assert not (out / f"{files[1].case_id}.nii.gz").exists()
    csv = pd.read_csv(out / "predictions.csv")
    assert csv["status"].tolist() == ["ok", "error", "ok"]


def test_shards_partition_the_cohort(tmp_path, cohort):
    ids = [f"case_{i:02d}" for i in range(11)]
    shards = [select_shard(ids[::-1], i, 3) for i in range(3)]
    assert sorted(sum(shards, [])) == ids
    assert [len(s) for s in shards] == [4, 4, 3]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    # two shards into one folder end with one complete table
    _, files = cohort
    out = tmp_path / "out"
    by_id = {f.case_id: f for f in files}
    for index in range(2):
        part = [by_id[c] for c in select_shard(list(by_id), index, 2)]
        predict_cases(part, Segmenter({0: ChannelArgmax()}, CONFIG, patch_size=16), out)
    assert pd.read_csv(out / "predictions.csv")["case_id"].tolist() == sorted(by_id)


def test_probability_maps_and_fold_ensemble(tmp_path, cohort):
    _, files = cohort
    out = tmp_path / "out"
    models = {0: ChannelArgmax(0.2), 3: ChannelArgmax(0.6)}
    table = predict_cases(
        files[:1], Segmenter(models, CONFIG, patch_size=16), out, save_probabilities=True
    )
    assert table.loc[0, "folds"] == "0,3"
    assert table.loc[0, "et_probability"] == pytest.approx(0.4)
    img = nib.load(out / "probabilities" / f"{files[0].case_id}.nii.gz")
    assert img.shape == (*SHAPE, 4) and img.get_data_dtype() == np.uint8
    probs = img.get_fdata()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=4 / 255)
    case = load_case(files[0], load_labels=False)
    pre = preprocess_case(case)
    expected = torch.softmax(3.0 * torch.from_numpy(pre.image), 0).numpy()
    outside_brain = ~brain_mask(crop(case.image, pre.box))
    assert outside_brain.any()
    expected[:, outside_brain] = [[1.0], [0.0], [0.0], [0.0]]  # masked (mask_outside_brain)
    np.testing.assert_allclose(
        np.moveaxis(probs, -1, 0)[(slice(None), *pre.box)], expected, atol=0.5 / 255 + 1e-6
    )
    outside = np.ones(SHAPE, bool)
    outside[pre.box] = False
    np.testing.assert_allclose(probs[outside, 0], 1.0, atol=1e-6)


def test_threshold_cases_pair_unsuppressed_predictions_with_references(tmp_path, cohort):
    from brats_mtl.inference import select_et_min_voxels

    root, files = cohort
    out = tmp_path / "out"
    config = InferenceConfig(tta=0, et_min_voxels=0, device="cpu")
    predict_cases(files, Segmenter({0: ChannelArgmax(0.1)}, config, patch_size=16), out)
    pairs = list(threshold_cases(out, root))
    assert len(pairs) == 3
    for (labels, probability, reference), files_ in zip(pairs, files, strict=True):
        case = load_case(files_)
        np.testing.assert_array_equal(labels, expected_labels(case))
        np.testing.assert_array_equal(reference, case.labels)
        assert probability == pytest.approx(0.1)
    best, table = select_et_min_voxels(pairs, [0, 10**7])
    assert len(table) == 2 and best in (0, 10**7)
    suppressed = tmp_path / "suppressed"
    config = InferenceConfig(tta=0, et_min_voxels=10**7, device="cpu")
    predict_cases(files[:1], Segmenter({0: ChannelArgmax(0.1)}, config, patch_size=16), suppressed)
    with pytest.raises(ValueError, match="et_min_voxels=0"):
        list(threshold_cases(suppressed, root))


# --- run folders and the command line ---------------------------------------------------


def test_cli_predicts_resumes_and_fails_loudly(tmp_path, cohort):
    root, files = cohort
    run = make_run(tmp_path / "run", [f.case_id for f in files])
    out = tmp_path / "out"
    runner = CliRunner()
    args = [
        "predict",
        str(run),
        str(root),
        str(out),
        "--tta",
        "0",
        "--no-progress",
        "--set",
        "inference.device=cpu",
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "predictions.csv")
    assert table["status"].tolist() == ["ok"] * 3 and set(table["folds"]) == {"0,1"}
    assert all(0 <= p <= 1 for p in table["et_probability"])
    # whole-volume mode on the same run (one fold), into another folder
    whole_args = ["--tta", "4", "--mode", "whole", "--folds", "1", "--no-progress"]
    whole = runner.invoke(cli, [*args[:3], str(tmp_path / "whole"), *whole_args])
    assert whole.exit_code == 0, whole.output
    # one bad case: non-zero exit, the others still written
    bad = root / files[2].case_id / files[2].images["t2"].name
    bad.write_bytes(b"not a nifti")
    result = runner.invoke(
        cli, [*args[:3], str(tmp_path / "out2"), "--tta", "0", "--mode", "whole", "--no-progress"]
    )
    assert result.exit_code != 0
    assert files[2].case_id in result.output
    assert (tmp_path / "out2" / f"{files[0].case_id}.nii.gz").exists()


def test_out_of_fold_uses_each_case_s_own_fold(tmp_path, cohort):
    from brats_mtl.training import read_run_config, read_splits

    root, files = cohort
    run = make_run(tmp_path / "run", [f.case_id for f in files])
    out = tmp_path / "oof"
    # the run's settings, with one pass per case (tta=0, whole volume) to stay fast
    config = dataclasses.replace(
        read_run_config(run), inference=InferenceConfig(tta=0, mode="whole", device="cpu")
    )
    table = predict_cohort(run, root, out, config=config, out_of_fold=True)
    splits = read_splits(run)
    own = {c: str(k) for k in range(splits.n_folds) for c in splits.val_ids(k)}
    assert dict(zip(table["case_id"], table["folds"].astype(str), strict=True)) == own
    record = json.loads((out / "records" / f"{files[0].case_id}.json").read_text())
    assert record["status"] == "ok"


@pytest.mark.slow
@pytest.mark.data
def test_real_case_in_2023_naming_keeps_geometry(tmp_path, shared_data):
    """A real 240 x 240 x 155 case, renamed to the BraTS 2023 layout, round trips."""
    source = shared_data / "brats" / "BraTS2021_00000"
    case_dir = tmp_path / "in" / "BraTS-GLI-00000-000"
    case_dir.mkdir(parents=True)
    names = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
    for old, new in names.items():
        (case_dir / f"BraTS-GLI-00000-000-{new}.nii.gz").symlink_to(
            source / f"BraTS2021_00000_{old}.nii.gz"
        )
    torch.manual_seed(0)
    net = MultiTaskNet(tiny_config(patch_size=128).model)
    config = InferenceConfig(tta=0, mode="whole", device="cpu", et_min_voxels=0)
    out = tmp_path / "out"
    from brats_mtl.data import discover_cases

    table = predict_cases(
        discover_cases(tmp_path / "in"), Segmenter.from_models({0: net}, config), out
    )
    assert table["status"].tolist() == ["ok"]
    written = nib.load(out / "BraTS-GLI-00000-000.nii.gz")
    reference = nib.load(source / "BraTS2021_00000_t1.nii.gz")
    assert written.shape == reference.shape == (240, 240, 155)
    np.testing.assert_allclose(written.affine, reference.affine)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3}


# --- brain mask, precision, broken case folders, lock ------------------------------------


def always_et(x: torch.Tensor):
    """Toy model labelling every voxel ET (an under-trained model at its worst)."""
    probs = torch.zeros_like(x)
    probs[:, 3] = 1.0
    return probs, torch.full((x.shape[0],), 0.9)


def always_et_net() -> MultiTaskNet:
    """A tiny MultiTaskNet whose segmentation head says ET everywhere."""
    torch.manual_seed(0)
    net = MultiTaskNet(tiny_config(patch_size=16).model)
    with torch.no_grad():
        net.seg_decoder.head.weight.zero_()
        net.seg_decoder.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 20.0]))
    return net


@pytest.mark.parametrize("mode", ["window", "whole"])
def test_voxels_outside_the_brain_are_background(tmp_path, cohort, mode):
    _, files = cohort
    case = load_case(files[0], load_labels=False)
    pre = preprocess_case(case)
    brain = brain_mask(case.image)
    in_box = np.zeros(SHAPE, bool)
    in_box[pre.box] = True
    assert (in_box & ~brain).any()  # the box has corners outside the brain

    def make_segmenter(config: InferenceConfig) -> Segmenter:
        if mode == "window":
            return Segmenter({0: always_et}, config, patch_size=16)
        return Segmenter.from_models({0: always_et_net()}, config)

    spacing_ml = float(np.prod(case.spacing_mm)) / 1000
    for masked in (True, False):
        config = InferenceConfig(
            tta=0, mode=mode, et_min_voxels=0, device="cpu", mask_outside_brain=masked
        )
        out = tmp_path / f"{mode}_{masked}"
        table = predict_cases(files[:1], make_segmenter(config), out, save_probabilities=True)
        labels = np.asarray(nib.load(out / f"{files[0].case_id}.nii.gz").dataobj)
        et_region = brain if masked else in_box
        np.testing.assert_array_equal(labels, np.where(et_region, 4, 0))
        assert table.loc[0, "volume_ET_ml"] == pytest.approx(et_region.sum() * spacing_ml)
        probs = nib.load(out / "probabilities" / f"{files[0].case_id}.nii.gz").get_fdata()
        np.testing.assert_allclose(probs[..., 0], np.where(et_region, 0.0, 1.0), atol=1e-6)
        np.testing.assert_allclose(probs[..., 3], np.where(et_region, 1.0, 0.0), atol=1e-6)
    # predict_case (in memory) masks the same way
    config = InferenceConfig(tta=0, mode=mode, et_min_voxels=0, device="cpu")
    direct = make_segmenter(config)
    np.testing.assert_array_equal(direct.predict_case(case).labels, np.where(brain, 4, 0))


def test_precision_comes_from_the_config():
    assert InferenceConfig().precision == "auto"  # bf16 on CPUs with AMX, else 32
    config = InferenceConfig(precision="bf16", device="cpu")
    assert Segmenter({0: always_et}, config, patch_size=16).precision == "bf16"
    as_32 = dataclasses.replace(config, precision="32")
    assert Segmenter({0: always_et}, as_32, patch_size=16).precision == "32"
    with pytest.raises(ValueError, match="inference.precision='16'"):
        check_inference_config(InferenceConfig(precision="16"))
    with pytest.raises(ValueError, match="inference.precision='fp8'"):
        Segmenter({0: always_et}, dataclasses.replace(config, precision="fp8"), patch_size=16)


def test_cli_precision_defaults_to_the_config(tmp_path, cohort, monkeypatch):
    import brats_mtl.predict as predict_module

    root, files = cohort
    run = make_run(tmp_path / "run", [f.case_id for f in files])
    seen = []

    class Spy(predict_module.Segmenter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.precision)
            raise ValueError("stop after building the segmenter")

    monkeypatch.setattr(predict_module, "Segmenter", Spy)
    args = ["predict", str(run), str(root), str(tmp_path / "out"), "--no-progress"]
    runner = CliRunner()
    for extra, expected in [
        ([], InferenceConfig().precision),
        (["--precision", "auto"], "auto"),
        (["--set", "inference.precision=bf16"], "bf16"),
        (["--set", "inference.precision=bf16", "--precision", "32"], "32"),
    ]:
        result = runner.invoke(cli, [*args, "--set", "inference.device=cpu", *extra])
        assert "stop after building" in result.output, result.output
        assert seen[-1] == expected
    result = runner.invoke(cli, [*args, "--set", "inference.precision=16"])
    assert result.exit_code != 0 and "inference.precision" in result.output


def test_a_case_folder_without_a_modality_fails_alone(tmp_path, cohort):
    root, files = cohort
    flair = files[1].images["flair"]
    flair.unlink()
    run = make_run(tmp_path / "run", [f.case_id for f in files])
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            str(run),
            str(root),
            str(out),
            "--tta",
            "0",
            "--mode",
            "whole",
            "--folds",
            "0",
            "--no-progress",
            "--set",
            "inference.device=cpu",
        ],
    )
    assert result.exit_code == 1, result.output
    assert f"FAILED {files[1].case_id}" in result.output and "flair" in result.output
    table = pd.read_csv(out / "predictions.csv")
    assert table["case_id"].tolist() == [f.case_id for f in files]
    assert table["status"].tolist() == ["ok", "error", "ok"]
    assert "lacks modality flair" in table.loc[1, "error"]
    record = json.loads((out / "records" / f"{files[1].case_id}.json").read_text())
    assert record["status"] == "error" and "flair" in record["error"]
    # only outputs in OUTPUT_DIR: no lock file, no temporary file
    assert sorted(os.listdir(out)) == [
        f"{files[0].case_id}.nii.gz",
        f"{files[2].case_id}.nii.gz",
        "predictions.csv",
        "records",
    ]
    assert sorted(os.listdir(out / "records")) == [
        ".lock",
        ".settings.json",
        *(f"{f.case_id}.json" for f in files),
    ]


def test_discovery_for_prediction_keeps_readable_cases(tmp_path, cohort):
    root, files = cohort
    assert discover_prediction_cases(root) == (files, {})
    # a flat folder holding two cases, one of them without its t1ce file
    flat = tmp_path / "flat" / "all"
    flat.mkdir(parents=True)
    for f in files[:2]:
        for path in f.images.values():
            shutil.move(path, flat / path.name)
    (flat / files[0].images["t1ce"].name).unlink()
    cases, unreadable = discover_prediction_cases(tmp_path / "flat")
    assert [c.case_id for c in cases] == [files[1].case_id]
    assert list(unreadable) == [files[0].case_id]
    assert "lacks modality t1ce" in unreadable[files[0].case_id]
    # problems of the cohort as a whole still stop it: one ID in two places, no case
    for copy in ("copy_a", "copy_b"):
        shutil.copytree(files[2].images["t1"].parent, tmp_path / "flat" / copy / "case")
    with pytest.raises(ValueError, match="twice"):
        discover_prediction_cases(tmp_path / "flat")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no BraTS cases"):
        discover_prediction_cases(tmp_path / "empty")


def test_merge_waits_for_the_lock_in_records(tmp_path):
    out = tmp_path / "out"
    (out / "records").mkdir(parents=True)
    (out / "records" / "case_a.json").write_text(json.dumps({"case_id": "case_a"}))
    with open(out / "records" / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another shard merging
        merger = threading.Thread(target=PredictionDir(out).merge_records)
        merger.start()
        time.sleep(0.3)
        assert merger.is_alive() and not (out / "predictions.csv").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    merger.join(timeout=10)
    assert pd.read_csv(out / "predictions.csv")["case_id"].tolist() == ["case_a"]
    assert sorted(os.listdir(out)) == ["predictions.csv", "records"]


def test_progress_inside_a_case_counts_every_window_of_every_fold(tmp_path, cohort):
    _, files = cohort
    case = load_case(files[0], load_labels=False)
    calls: list[tuple[int, int]] = []
    segmenter = Segmenter({0: ChannelArgmax(), 1: ChannelArgmax()}, CONFIG, patch_size=16)
    pre = preprocess_case(case)
    n_windows = len(segmenter._runners[0](pre.image).windows)
    segmenter.predict_preprocessed(pre, progress=lambda d, t: calls.append((d, t)))
    total = 2 * 4 * n_windows  # folds x mirrors x windows
    assert calls[-1] == (total, total)
    assert {t for _, t in calls} == {total}
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)  # never goes back
    # batches of 4 items: fold 0 reports 4, 8, ..., then fold 1 continues from its total
    assert calls[0] == (4, total)
    assert (total // 2, total) in calls

    clock = iter([0.0, 10.0, 20.0, 45.0, 50.0, 60.0])
    lines = WindowProgress("BraTS2021_00000", bar=False, every_s=30.0, clock=lambda: next(clock))
    import logging

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    log = logging.getLogger("brats_mtl.inference.segmenter")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        for done in (8, 16, 24, 32, 40):  # at 10, 20, 45, 50, 60 s
            lines(done, 40)
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    # the first batch, the first one 30 s after it, and the last
    assert records == [
        "BraTS2021_00000: windows 8/40 (20%), 10 s, about 40 s left",
        "BraTS2021_00000: windows 24/40 (60%), 45 s, about 30 s left",
        "BraTS2021_00000: windows 40/40 (100%), 60 s, about 0 s left",
    ]


def test_cli_predict_logs_windows_of_each_case_without_a_terminal(tmp_path, cohort, caplog):
    root, files = cohort
    run_dir = tmp_path / "run"
    make_run(run_dir, [f.case_id for f in files])
    out = tmp_path / "preds"
    args = ["predict", str(run_dir), str(root), str(out), "--tta", "0", "--folds", "0"]
    with caplog.at_level("INFO", logger="brats_mtl.inference.segmenter"):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [r.getMessage() for r in caplog.records if ": windows " in r.getMessage()]
    assert lines[0].startswith(f"{files[0].case_id}: windows ")
    done, total = lines[-1].split("windows ")[1].split(" ")[0].split("/")
    assert done == total  # the last line says all windows are done
