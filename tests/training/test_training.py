"""Training: cache, patch datasets, Lightning fits (loss falls, exact resume,
unlabeled-only), run-folder rules, CLI with two-process DDP on the CPU."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from brats_mtl.config import apply_overrides
from brats_mtl.conventions import ET
from brats_mtl.data import discover_cases, load_case, write_phantom_case, write_phantom_cohort
from brats_mtl.preprocessing import pad_to_size, patch_grid, preprocess_case
from brats_mtl.presets import tiny_config
from brats_mtl.training import read_splits
from brats_mtl.training.cache import build_cache, cache_case
from brats_mtl.training.datasets import PatchDataset, PatchSampler, RankSlice, ResumableLoader
from brats_mtl.workspace.run_dir import RunDir

PATCH = 16
SHAPE = (26, 22, 20)  # phantom volume; its brain crops to less than 2 tiles per axis


def _config(*overrides: str):
    return apply_overrides(
        tiny_config(PATCH),
        [
            "train.accelerator=cpu",
            "train.devices=1",
            "train.n_folds=2",
            "train.log_every_n_steps=1",
            "inference.overlap=0.25",
            *overrides,
        ],
    )


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these networks are tiny, and on a busy two-core machine two
    spinning OpenMP threads slow each step down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    write_phantom_cohort(root, n_labeled=4, n_unlabeled=1, shape=SHAPE, seed=3)
    return root


@pytest.fixture(scope="module")
def cached(cohort, tmp_path_factory):
    return build_cache(discover_cases(cohort), tmp_path_factory.mktemp("cache"))


# --- cache and datasets ------------------------------------------------------------------


def test_cache_holds_the_preprocessed_case_and_rebuilds_when_inputs_change(cohort, tmp_path):
    files = discover_cases(cohort)[0]
    entry = cache_case(files, tmp_path)
    reference = preprocess_case(load_case(files))
    np.testing.assert_array_equal(entry.image(), reference.image)
    np.testing.assert_array_equal(entry.labels(), reference.labels)
    assert isinstance(entry.image(), np.memmap)
    assert entry.box == reference.box and entry.original_shape == SHAPE
    assert entry.has_et == bool((reference.labels == ET).any())
    stamp = entry.image_path.stat().st_mtime_ns
    assert cache_case(files, tmp_path) == entry
    assert entry.image_path.stat().st_mtime_ns == stamp  # reused, not rewritten
    t1 = files.images["t1"]
    os.utime(t1, ns=(t1.stat().st_atime_ns, t1.stat().st_mtime_ns + 10**9))
    cache_case(files, tmp_path)
    assert entry.image_path.stat().st_mtime_ns != stamp  # input changed: rebuilt
    unlabeled = cache_case(files, tmp_path / "u", use_labels=False)
    assert not unlabeled.labeled and unlabeled.labels() is None


@pytest.mark.slow
def test_parallel_cache_build_equals_serial(cohort, tmp_path):
    cases = discover_cases(cohort)
    serial = build_cache(cases, tmp_path / "serial")
    parallel = build_cache(cases, tmp_path / "parallel", num_workers=2)
    for a, b in zip(serial, parallel, strict=True):
        assert (a.case_id, a.shape, a.box, a.has_et) == (b.case_id, b.shape, b.box, b.has_et)
        np.testing.assert_array_equal(a.image(), b.image())
    with pytest.raises(ValueError, match="occurs twice"):
        build_cache(cases + cases[:1], tmp_path / "dup")


def test_grid_patches_cover_each_case_with_targets(cached):
    dataset = PatchDataset(cached, PATCH)
    assert len(dataset) == sum(len(patch_grid(c.shape, PATCH)) for c in cached)
    for index in range(len(dataset)):
        item = dataset[index]
        case = cached[int(item["case_index"])]
        _, box = dataset.items[index]
        assert item["image"].shape == (4, PATCH, PATCH, PATCH)
        assert item["image"].dtype == torch.float32
        assert item["class_targets"].dtype == torch.int64
        expected = pad_to_size(np.asarray(case.image()), (PATCH,) * 3)[(..., *box)]
        np.testing.assert_array_equal(item["image"].numpy(), expected)
        assert bool(item["labeled"]) == case.labeled
        if case.labeled:
            labels = pad_to_size(np.asarray(case.labels()), (PATCH,) * 3)[box]
            assert int(item["et_target"]) == int((labels == ET).any())
            assert int(item["class_targets"].max()) <= 3
        else:
            assert int(item["class_targets"].abs().sum()) == 0 and int(item["et_target"]) == 0


def test_small_case_is_zero_padded(cached):
    dataset = PatchDataset(cached, 32)  # every cropped axis is below 32
    item = dataset[0]
    shape = cached[0].shape
    assert item["image"].shape == (4, 32, 32, 32)
    np.testing.assert_array_equal(
        item["image"][:, : shape[0], : shape[1], : shape[2]].numpy(), cached[0].image()
    )
    assert float(item["image"][:, shape[0] :].abs().sum()) == 0


def test_random_patches_are_seeded_per_epoch(cached):
    dataset = PatchDataset(cached, PATCH, sampling="random", patches_per_case=3)
    assert len(dataset) == 3 * len(cached)
    sampler = PatchSampler(len(dataset), seed=5)
    epoch0 = list(sampler)
    assert sorted(i for i, _ in epoch0) == list(range(len(dataset)))
    assert list(PatchSampler(len(dataset), seed=5)) == epoch0
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    a, b = dataset[epoch0[0]], dataset[epoch0[0]]
    assert torch.equal(a["image"], b["image"])
    boxes = {str(dataset.random_box(cached[0].shape, s)) for _, s in epoch0 + epoch1}
    assert len(boxes) > 1
    with pytest.raises(ValueError, match="patch_sampling"):
        PatchDataset(cached, PATCH, sampling="sliding")


def test_sampler_splits_over_processes_and_skips_on_resume():
    parts = [list(PatchSampler(11, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 4]
    assert {i for p in parts for i, _ in p} == set(range(11))
    sampler = PatchSampler(11, seed=0)
    full = list(sampler)
    loader = ResumableLoader(list(range(11)), sampler, lambda: 2, batch_size=2)
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches_done": 2}
    loader.load_state_dict(state)
    assert list(sampler) == full[4:]  # skipped once ...
    assert list(sampler) == full  # ... then whole epochs again
    loader.load_state_dict({"epoch": 0, "batches_done": 6})  # finished epoch 0
    assert sampler.epoch == 1 and list(sampler) == sampler.entries(1)
    assert [list(RankSlice(3, r, 2)) for r in range(2)] == [[0, 2], [1, 0]]


# --- Lightning -----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [None, "gli-post"])
def test_validation_dice_is_evaluation_metrics_dice(scheme, monkeypatch):
    """Validation scores with evaluation.metrics: regions of the scheme, both empty = 1."""
    from brats_mtl.evaluation.metrics import evaluate_region_labels
    from brats_mtl.tasks import network_classes
    from brats_mtl.training.module import MultiTaskModule

    config = _config() if scheme is None else _config(f"train.labels={scheme}")
    network = network_classes(scheme)
    module = MultiTaskModule(config, ["case_a"])
    rng = np.random.default_rng(0)
    classes = rng.integers(0, network.n_classes - 1, size=(1, 6, 5, 4))  # no last class
    reference = np.asarray(network.labels, np.uint8)[rng.integers(0, 3, size=(6, 5, 4))]
    classes[0, 0, 0, 0] = network.labels.index(network.et_label)  # ET predicted once
    reference[reference == network.et_label] = 0  # ... and absent from the reference
    monkeypatch.setattr(module, "predict_classes", lambda image: torch.from_numpy(classes))
    batch = {
        "image": torch.zeros(1, 4, 6, 5, 4),
        "labels": torch.from_numpy(reference[None]),
        "case_index": torch.tensor([0]),
    }
    module.on_validation_epoch_start()
    module.validation_step(batch, 0)
    (row,) = module._epoch_rows
    predicted = np.asarray(network.labels)[classes[0]]
    expected = evaluate_region_labels(predicted, reference, dict(network.regions))
    for region in ("ET", "WT", "TC"):
        assert row[f"dice_{region}"] == expected[f"Dice_{region}"]
    assert row["dice_ET"] == 0.0  # one voxel predicted, none in the reference
    assert row["case_id"] == "case_a"
    # both empty is 1 (BraTS): a prediction of background on a background reference
    monkeypatch.setattr(
        module, "predict_classes", lambda image: torch.zeros(1, 6, 5, 4, dtype=torch.int64)
    )
    batch["labels"] = torch.zeros(1, 6, 5, 4, dtype=torch.uint8)
    module.validation_step(batch, 0)
    assert module._epoch_rows[-1]["dice_mean"] == 1.0


def test_validation_windows_are_prediction_windows():
    """Validation calls prediction's own sliding window with the inference settings."""
    import brats_mtl.training.module as module_code
    from brats_mtl.inference import network_predictor, predict_sliding_window
    from brats_mtl.training.module import MultiTaskModule

    assert module_code.predict_sliding_window is predict_sliding_window  # not a copy
    config = _config("inference.window_batch_size=3")
    torch.manual_seed(0)
    module = MultiTaskModule(config).eval()
    image = torch.from_numpy(np.random.default_rng(1).normal(size=(4, 27, 18, 13)))
    image = image.float()
    with torch.inference_mode():
        classes = module.predict_classes(image[None])
        expected = predict_sliding_window(
            image,
            network_predictor(module.net),
            patch_size=PATCH,
            overlap=0.25,  # inference.overlap in _config
            tta=0,
            batch_size=3,
        )
    assert classes.shape == (1, 27, 18, 13) and classes.dtype == torch.int64
    assert torch.equal(classes[0], torch.from_numpy(expected.probs.argmax(0)))
    assert len(expected.windows) == 2 * 2 * 1  # windows placed as prediction places them


def _params(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_loss_falls_on_a_phantom(cached, tmp_path):
    import pandas as pd

    from brats_mtl.training.runner import train_on_cases

    labeled = [c for c in cached if c.labeled]
    config = _config("train.lr=0.01", "train.max_steps=40")
    result = train_on_cases(
        config, labeled[:2], [], tmp_path, enable_progress_bar=False, figure=False
    )
    assert result.global_step == 40 and result.best_checkpoint is None
    metrics = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["train/loss"])
    assert set(metrics.columns) >= {f"train/{t}" for t in ("loss", "dice", "l2", "kl", "ce")}
    loss = metrics["train/loss"].to_numpy()
    assert len(loss) == 40
    assert loss[-8:].mean() < 0.8 * loss[:8].mean()


def test_unlabeled_only_training_touches_neither_decoder_nor_classifier(cached, tmp_path):
    import pandas as pd

    from brats_mtl.training.runner import train_on_cases

    unlabeled = [c for c in cached if not c.labeled]
    import lightning as L

    from brats_mtl.training.module import MultiTaskModule

    config = _config("train.max_steps=4")
    L.seed_everything(config.train.seed, verbose=False)
    initial = _params(MultiTaskModule(config).net)  # the fit below starts from these
    result = train_on_cases(
        config, unlabeled, [], tmp_path, enable_progress_bar=False, figure=False
    )
    checkpoint = torch.load(result.last_checkpoint, weights_only=True)
    trained = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()}
    for name, before in initial.items():
        if name.startswith(("seg_decoder.", "classifier.")):
            assert torch.equal(before, trained[name]), name
    assert any(not torch.equal(initial[k], trained[k]) for k in initial if k.startswith("encoder."))
    assert any(
        not torch.equal(initial[k], trained[k]) for k in initial if k.startswith("vae_decoder.")
    )
    metrics = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["train/loss"])
    assert (metrics["train/dice"] == 0).all() and (metrics["train/ce"] == 0).all()
    assert (metrics["train/l2"] > 0).all()


def test_one_learning_rate_by_default_and_one_per_part_on_request():
    from brats_mtl.training.module import MultiTaskModule

    module = MultiTaskModule(_config("train.lr=0.001"))
    (group,) = module.parameter_groups()  # the paper: one rate for the whole network
    assert group["lr"] == 0.001 and len(group["params"]) == len(list(module.parameters()))

    module = MultiTaskModule(
        _config("train.lr=0.001", "train.decoder_lr_scale=30", "train.classifier_lr_scale=10")
    )
    net = module.net
    encoder, decoders, classifier = module.parameter_groups()
    assert (encoder["lr"], decoders["lr"], classifier["lr"]) == pytest.approx((0.001, 0.03, 0.01))

    def ids(params):
        return {id(p) for p in params}

    assert ids(encoder["params"]) == ids(net.encoder.parameters())
    assert ids(decoders["params"]) == ids(
        [*net.seg_decoder.parameters(), *net.vae_decoder.parameters()]
    )
    assert ids(classifier["params"]) == ids(net.classifier.parameters())
    optimizer = module.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.001, 0.03, 0.01])

    with pytest.raises(ValueError, match="train.classifier_lr_scale=0.0 must be positive"):
        MultiTaskModule(_config("train.classifier_lr_scale=0")).parameter_groups()
    # a fold trained with one group cannot resume with three (and the reverse)
    saved = {"optimizer_states": [{"param_groups": [{}]}]}
    with pytest.raises(ValueError, match="has 1 parameter group.*need 3"):
        module.on_load_checkpoint(saved)
    MultiTaskModule(_config()).on_load_checkpoint(saved)


@pytest.mark.slow
def test_demo_trained_classifier_separates_et_from_no_et_patches(tmp_path):
    """The demo's network and schedule (320 steps) on two phantoms with ET and two
    without, all with an enhancing vessel: every ET patch is called ET, every other
    patch not. With one learning rate of 3e-3 for the whole network (the demo before) the
    classifier gave one probability for every patch."""
    from brats_mtl.model import MultiTaskNet
    from brats_mtl.presets import demo_config
    from brats_mtl.training.runner import train_on_cases

    root = tmp_path / "cohort"
    for i in range(4):
        write_phantom_case(
            root,
            f"BraTS2021_{i:05d}",
            shape=(48, 48, 48),
            with_et=i % 2 == 0,
            seed=i,
            enhancing_vessel=True,
        )
    cached = build_cache(discover_cases(root), tmp_path / "cache")
    config = apply_overrides(demo_config(), ["train.accelerator=cpu", "train.devices=1"])
    result = train_on_cases(
        config, cached, [], tmp_path / "fold", enable_progress_bar=False, figure=False
    )
    state = torch.load(result.last_checkpoint, weights_only=True)["state_dict"]
    net = MultiTaskNet(config.model)
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    net.eval()
    p = config.model.patch_size
    probabilities = {}
    with torch.inference_mode():
        for case in cached:
            patches = PatchDataset([case], p, sampling="random", patches_per_case=8)
            items = [patches[(i, 1000 + i)] for i in range(8)]
            assert all(int(item["et_target"]) == case.has_et for item in items)
            logits = net(torch.stack([item["image"] for item in items])).cls_logits
            probabilities[case.has_et] = [
                *probabilities.get(case.has_et, []),
                *torch.softmax(logits, 1)[:, 1].tolist(),
            ]
    assert min(probabilities[True]) > 0.9 and max(probabilities[False]) < 0.1, probabilities


def test_interrupted_and_resumed_fold_equals_uninterrupted(cohort, tmp_path):
    import pandas as pd

    from brats_mtl.training import (
        available_folds,
        checkpoint_path,
        load_fold_model,
        read_run_config,
    )
    from brats_mtl.training.runner import train_fold

    def run(out, max_steps, **kwargs):
        return train_fold(
            cohort,
            out,
            0,
            config=_config(f"train.max_steps={max_steps}", "train.checkpoint_every_n_steps=1000"),
            cache_dir=tmp_path / "cache",
            enable_progress_bar=False,
            **kwargs,
        )

    full = run(tmp_path / "full", 11)
    first = run(tmp_path / "cut", 3)
    assert first.global_step == 3
    with pytest.raises(FileExistsError, match="--resume"):
        run(tmp_path / "cut", 11)
    resumed = run(tmp_path / "cut", 11, resume=True)
    assert resumed.global_step == full.global_step == 11
    a = torch.load(checkpoint_path(tmp_path / "full", 0, "last"), weights_only=True)
    b = torch.load(checkpoint_path(tmp_path / "cut", 0, "last"), weights_only=True)
    assert a["global_step"] == b["global_step"] == 11
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key

    # run folder: config, splits, merged metrics, per-case validation rows, curves
    run_dir = tmp_path / "cut"
    assert (run_dir / "config.yaml").is_file()
    # the keyword argument is saved with the run
    assert read_run_config(run_dir).train.checkpoint_every_n_steps == 1000
    assert read_splits(run_dir).n_folds == 2
    metrics = pd.read_csv(run_dir / "fold_0" / "metrics.csv")
    steps = metrics.dropna(subset=["train/loss"])["step"].tolist()
    assert steps == list(range(11))  # every step once, across both attempts
    val = pd.read_csv(run_dir / "fold_0" / "validation.csv")
    assert set(val["case_id"]) == set(read_splits(run_dir).val_ids(0))
    assert val["dice_mean"].between(0, 1).all() and 3 in set(val["step"])
    assert (run_dir / "fold_0" / "training_curves.png").stat().st_size > 0
    assert available_folds(run_dir) == [0]
    net = load_fold_model(run_dir, 0, "last")
    assert not net.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, b["state_dict"]["net." + key]), key
    with pytest.raises(FileNotFoundError) as error:
        load_fold_model(run_dir, 1)
    assert str(error.value) == (
        f"fold 1 of {run_dir} was not trained (no fold_1/checkpoints/best.ckpt or last.ckpt); "
        "trained folds: [0]"
    )
    with pytest.raises(ValueError, match="model configuration"):
        train_fold(
            cohort, run_dir, 1, config=_config("model.norm_groups=2"), cache_dir=tmp_path / "cache"
        )
    again = run(tmp_path / "cut", 2, overwrite=True)
    assert again.global_step == 2


def test_parse_devices():
    from brats_mtl.config import apply_overrides, parse_devices
    from brats_mtl.presets import tiny_config

    assert parse_devices("auto") == "auto"
    assert parse_devices("2") == 2
    assert parse_devices("0,1") == [0, 1]
    assert parse_devices("[1, 3]") == [1, 3]
    with pytest.raises(ValueError, match="train.devices"):
        parse_devices("two")
    # refused when the configuration is built, before any case is cached
    with pytest.raises(ValueError, match="train.devices='two'"):
        apply_overrides(tiny_config(), ["train.devices=two"])


def test_training_curves_figure(tmp_path):
    import pandas as pd

    from brats_mtl.figures.training_curves import plot_training_curves, save_training_curves

    frame = pd.DataFrame(
        {
            "step": list(range(6)) + [5],
            "train/loss": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, None],
            "train/l2": [0.5] * 6 + [None],
            "val/dice_mean": [None] * 6 + [0.4],
        }
    )
    fig = plot_training_curves(frame, title="fold 0")
    loss_ax, dice_ax = fig.axes
    assert len(loss_ax.lines) == 2 and len(dice_ax.lines) == 1
    np.testing.assert_array_equal(loss_ax.lines[0].get_ydata(), frame["train/loss"].dropna())
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    assert save_training_curves(tmp_path / "metrics.csv", tmp_path / "c.png").stat().st_size > 0
    with pytest.raises(FileNotFoundError):
        plot_training_curves(tmp_path / "missing.csv")


def _run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for name in ("LOCAL_RANK", "RANK", "NODE_RANK", "WORLD_SIZE"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "brats_mtl.cli.main", "train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.slow
def test_cli_trains_one_fold_with_two_process_ddp_on_cpu(cohort, tmp_path):
    out = tmp_path / "run"
    result = _run_cli(
        [
            str(cohort),
            "--out",
            str(out),
            "--fold",
            "1",
            "--set",
            "model.widths=[4,8,16,32,64]",
            "--set",
            "model.vae_hidden_channels=8",
            "--set",
            "model.latent_channels=4",
            "--set",
            "model.classifier_channels=[16,8]",
            "--set",
            "model.classifier_hidden=8",
            "--set",
            f"model.patch_size={PATCH}",
            "--set",
            "train.n_folds=2",
            "--set",
            "train.max_steps=3",
            "--set",
            "train.accelerator=cpu",
            "--set",
            "train.devices=2",
            "--set",
            "train.strategy=ddp",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(out / "fold_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert sorted(p.name for p in (out / "fold_1" / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]
    assert "fold 1: 3 steps" in result.stdout
    rows = (out / "fold_1" / "validation.csv").read_text().splitlines()[1:]
    # each process validated one held-out case; the rows of both were merged
    assert sorted(r.split(",")[2] for r in rows) == read_splits(out).val_ids(1)
    again = _run_cli([str(cohort), "--out", str(out), "--fold", "1"])
    assert again.returncode != 0 and "--resume" in again.stderr


def test_cli_reports_user_errors(cohort, tmp_path):
    from click.testing import CliRunner

    from brats_mtl.cli.main import cli

    runner = CliRunner()
    out = str(tmp_path / "run")
    result = runner.invoke(cli, ["train", str(cohort), "--out", out, "--fold", "0", "--all-folds"])
    assert result.exit_code == 2 and "exclude each other" in result.output
    result = runner.invoke(cli, ["train", str(cohort), "--out", out, "--set", "train.lr=fast"])
    assert result.exit_code == 2 and "train.lr" in result.output
    # the paper's five folds need five labeled cases; the phantom cohort has four
    result = runner.invoke(cli, ["train", str(cohort), "--out", out, "--fold", "0"])
    assert result.exit_code == 1
    assert "4 labeled cases cannot be split into 5 folds" in result.output
    assert "train.n_folds=4" in result.output
    assert not (tmp_path / "run" / "cache").exists()  # said before any case is cached


def test_every_bad_case_is_reported_at_once_and_good_ones_stay_cached(tmp_path):
    """A missing modality (found by discovery), a truncated file, labels outside the
    convention and NaN voxels (found by caching) are listed in one error; the readable
    cases are cached, and the retry after removing the bad ones preprocesses nothing."""

    import nibabel as nib
    from click.testing import CliRunner

    from brats_mtl.cli.main import cli
    from brats_mtl.training.cache import UnusableCasesError
    from brats_mtl.training.runner import prepare_run

    root = tmp_path / "data"
    write_phantom_cohort(root, n_labeled=7, n_unlabeled=0, shape=SHAPE, seed=3)
    ids = sorted(p.name for p in root.iterdir())
    (root / ids[1] / f"{ids[1]}_flair.nii.gz").unlink()
    t1 = root / ids[2] / f"{ids[2]}_t1.nii.gz"
    t1.write_bytes(t1.read_bytes()[: t1.stat().st_size // 2])
    seg = root / ids[3] / f"{ids[3]}_seg.nii.gz"
    img = nib.load(seg)
    labels = np.asarray(img.dataobj).copy()
    labels[labels == 1] = 3
    nib.save(nib.Nifti1Image(labels, img.affine, img.header), seg)
    t2 = root / ids[4] / f"{ids[4]}_t2.nii.gz"
    img = nib.load(t2)
    image = np.asarray(img.dataobj, dtype=np.float32).copy()
    image[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(image, img.affine), t2)

    run, cache = tmp_path / "run", tmp_path / "cache"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            str(root),
            "--out",
            str(run),
            "--fold",
            "0",
            "--cache-dir",
            str(cache),
            "--set",
            "train.n_folds=2",
        ],
    )
    assert result.exit_code == 1
    assert "4 of 7 cases cannot be used for training:" in result.output
    assert "fix or remove them and run again (cases already cached are kept)" in result.output
    with pytest.raises(UnusableCasesError) as error:
        prepare_run(root, run, _config(), cache_dir=cache)
    assert [case_id for case_id, _ in error.value.problems] == ids[1:5]
    lines = str(error.value).splitlines()
    assert len(lines) == 6 and all(
        line.startswith(f"  {c}: ") for c, line in zip(ids[1:5], lines[1:5], strict=True)
    )
    problems = dict(error.value.problems)
    assert "flair" in problems[ids[1]] and str(t1) in problems[ids[2]]
    assert str(seg) in problems[ids[3]] and str(t2) in problems[ids[4]]
    good = [ids[0], *ids[5:]]
    assert sorted(p.stem for p in cache.glob("*.json")) == good
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    for case_id in ids[1:5]:
        shutil.rmtree(root / case_id)
    data = prepare_run(root, run, _config(), cache_dir=cache)
    assert sorted(data.labeled) == good
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps  # reused


def test_bad_cases_are_all_reported_with_parallel_workers(cohort, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(cohort, root)
    cases = discover_cases(root)
    for files in cases[:2]:
        path = files.images["t1ce"]
        path.write_bytes(path.read_bytes()[:100])
    from brats_mtl.training.cache import UnusableCasesError

    with pytest.raises(UnusableCasesError) as error:
        build_cache(cases, tmp_path / "cache", num_workers=2)
    assert [c for c, _ in error.value.problems] == [c.case_id for c in cases[:2]]
    assert str(error.value).startswith(f"2 of {len(cases)} cases cannot be used for training:")
    assert len(list((tmp_path / "cache").glob("*.json"))) == len(cases) - 2


# --- run folder rules ------------------------------------------------------------------


def test_failed_attempt_is_retried_without_overwrite(cohort, tmp_path):
    """A fold that failed after config.yaml and splits.json were written (here on a strategy
    Lightning does not know, as it would on a bad case) leaves no checkpoint: the retry may change
    the network and the folds without --overwrite."""
    import yaml
    from click.testing import CliRunner

    from brats_mtl.cli.main import cli

    out = tmp_path / "run"
    base = [
        str(cohort),
        "--out",
        str(out),
        "--fold",
        "0",
        "--cache-dir",
        str(tmp_path / "c"),
        "--set",
        "model.widths=[4,8,16,32,64]",
        "--set",
        "train.n_folds=2",
        "--set",
        "train.strategy=nosuch",
    ]
    first = CliRunner().invoke(cli, ["train", *base])
    assert first.exit_code == 1 and "nosuch" in first.output, first.output
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["norm_groups"] == 4
    assert read_splits(out).n_folds == 2
    # the retry with another network and fold count gets past the run-folder checks to
    # the same strategy error, and its configuration and folds are the ones saved
    other = ["--set", "model.norm_groups=2", "--set", "train.n_folds=3"]
    retry = CliRunner().invoke(cli, ["train", *base, *other])
    assert retry.exit_code == 1 and "nosuch" in retry.output, retry.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["norm_groups"] == 2 and saved["train"]["n_folds"] == 3
    assert read_splits(out).n_folds == 3


def test_run_config_rule_protects_runs_with_checkpoints(cohort, tmp_path):
    from brats_mtl.config import load_config
    from brats_mtl.training import run_checkpoints
    from brats_mtl.training.runner import prepare_run

    run_dir, cache = tmp_path / "run", tmp_path / "cache"

    def prepare(config):
        return prepare_run(cohort, run_dir, config, cache_dir=cache)

    prepare(_config())
    assert read_splits(run_dir).n_folds == 2
    # no checkpoint yet: another network, fold count and seed replace config and splits
    second = _config("model.norm_groups=2", "train.n_folds=3", "train.seed=5")
    run = prepare(second)
    assert load_config(run_dir / "config.yaml") == second
    assert run.splits.n_folds == 3 and read_splits(run_dir).seed == 5
    # a checkpoint makes it a run with results
    ckpt = RunDir(run_dir).checkpoint(1, "last")
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    assert run_checkpoints(run_dir) == [ckpt]
    with pytest.raises(ValueError, match=r"model configuration \(changed: model.norm_groups\)"):
        prepare(_config("train.n_folds=3", "train.seed=5"))
    with pytest.raises(ValueError, match=r"loss configuration \(changed: loss.w_kl\)"):
        prepare(apply_overrides(second, ["loss.w_kl=0.5"]))
    with pytest.raises(ValueError, match="holds 3 folds but train.n_folds is 2"):
        prepare(apply_overrides(second, ["train.n_folds=2"]))
    assert load_config(run_dir / "config.yaml") == second  # refused changes are not saved
    longer = apply_overrides(second, ["train.max_steps=50"])  # train settings may change
    prepare(longer)
    assert load_config(run_dir / "config.yaml") == longer
    assert read_splits(run_dir).n_folds == 3


def test_train_flags_override_the_config_and_are_saved_with_the_run(cohort, tmp_path):
    import yaml
    from click.testing import CliRunner

    from brats_mtl.cli.main import cli

    out = tmp_path / "run"
    base = [
        str(cohort),
        "--out",
        str(out),
        "--fold",
        "0",
        "--cache-dir",
        str(tmp_path / "c"),
        "--set",
        "model.widths=[4,8,16,32,64]",
        "--set",
        "train.n_folds=2",
        "--set",
        "train.strategy=nosuch",
    ]  # fails after the run folder is set up (Lightning refuses the strategy)
    flags = [
        "--set",
        "train.cache_workers=3",
        "--cache-workers",
        "1",
        "--checkpoint-every",
        "7",
        "--set",
        "train.deterministic=true",
    ]
    result = CliRunner().invoke(cli, ["train", *base, *flags])
    assert result.exit_code == 1 and "nosuch" in result.output, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert saved["cache_workers"] == 1  # the flag wins over --set
    assert saved["checkpoint_every_n_steps"] == 7 and saved["deterministic"] is True
    # the next attempt without flags reads them back from the run's config.yaml
    CliRunner().invoke(cli, ["train", *base])
    again = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert again["cache_workers"] == 1 and again["checkpoint_every_n_steps"] == 7


# --- SIGTERM ---------------------------------------------------------------------------


def _sigterm_during_step(monkeypatch, step: int) -> None:
    """Send this process SIGTERM from inside training step ``step`` (1-based)."""
    import signal

    from brats_mtl.training.module import MultiTaskModule

    original = MultiTaskModule.training_step

    def training_step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        if self.global_step == step - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(MultiTaskModule, "training_step", training_step)


def test_sigterm_saves_the_step_in_progress_and_resume_equals_uninterrupted(
    cohort, tmp_path, monkeypatch
):
    from brats_mtl.signals import Terminated, stop_on_sigterm
    from brats_mtl.training import checkpoint_path
    from brats_mtl.training.runner import train_fold

    def run(out, **kwargs):
        return train_fold(
            cohort,
            out,
            0,
            config=_config("train.max_steps=8", "train.checkpoint_every_n_steps=1000"),
            cache_dir=tmp_path / "cache",
            enable_progress_bar=False,
            **kwargs,
        )

    full = run(tmp_path / "full")
    with monkeypatch.context() as patch:
        _sigterm_during_step(patch, 3)
        with stop_on_sigterm(), pytest.raises(Terminated) as stopped:
            run(tmp_path / "cut")
    assert stopped.value.code == 143
    assert "stopped by SIGTERM at step 3" in str(stopped.value) and "--resume" in str(stopped.value)
    saved = torch.load(checkpoint_path(tmp_path / "cut", 0, "last"), weights_only=True)
    assert saved["global_step"] == 3  # the step in progress finished and was saved
    assert (tmp_path / "cut" / "fold_0" / "metrics.csv").is_file()
    resumed = run(tmp_path / "cut", resume=True)
    assert resumed.global_step == full.global_step == 8
    a = torch.load(checkpoint_path(tmp_path / "full", 0, "last"), weights_only=True)
    b = torch.load(checkpoint_path(tmp_path / "cut", 0, "last"), weights_only=True)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_sigterm_in_the_last_step_still_stops(cohort, tmp_path, monkeypatch):
    """Lightning lets a SIGTERM during the last step end the fit normally; the command
    must stop anyway instead of going on to the next fold."""
    from brats_mtl.signals import Terminated, stop_on_sigterm
    from brats_mtl.training import checkpoint_path
    from brats_mtl.training.runner import train_folds

    _sigterm_during_step(monkeypatch, 2)
    with stop_on_sigterm(), pytest.raises(Terminated, match="step 2"):
        train_folds(
            cohort,
            tmp_path / "run",
            [0, 1],
            config=_config("train.max_steps=2"),
            cache_dir=tmp_path / "cache",
            enable_progress_bar=False,
        )
    assert (
        torch.load(checkpoint_path(tmp_path / "run", 0, "last"), weights_only=True)["global_step"]
        == 2
    )
    assert not (tmp_path / "run" / "fold_1").exists()  # the next fold never started


def test_sigterm_outside_training_stops_the_cli_at_once(cohort, tmp_path, monkeypatch, caplog):
    import signal

    from click.testing import CliRunner

    from brats_mtl.cli.main import cli
    from brats_mtl.training import runner

    def prepare_run(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(runner, "prepare_run", prepare_run)
    before = signal.getsignal(signal.SIGTERM)
    with caplog.at_level("ERROR", logger="brats_mtl.signals"):
        result = CliRunner().invoke(
            cli, ["train", str(cohort), "--out", str(tmp_path / "run"), "--set", "train.n_folds=2"]
        )
    assert result.exit_code == 143, result.output
    assert "stopped by SIGTERM" in caplog.text and "--resume" in caplog.text
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


def test_known_lightning_deprecation_warning_is_not_shown(cohort, tmp_path):
    """torch deprecates LeafSpec, which Lightning's own _pytree module builds in every fit;
    Lightning also warns that our module (not the data module) defines
    on_before_batch_transfer, which is intended."""
    import warnings

    from brats_mtl.training.runner import train_fold

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_fold(
            cohort,
            tmp_path / "run",
            0,
            config=_config("train.max_steps=1"),
            cache_dir=tmp_path / "cache",
            enable_progress_bar=False,
        )
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "LeafSpec" in m], messages
    assert not [m for m in messages if "on_before_batch_transfer" in m], messages


def test_resume_and_short_epochs_show_no_lightning_noise(cohort, tmp_path, caplog):
    """ModelCheckpoint's "Checkpoint directory ... exists and is not empty" on a resume,
    and the fit loop's "smaller than the logging interval" on short epochs, are not shown;
    a max_steps before the first validation gives one WARNING."""
    import warnings

    from brats_mtl.training.runner import train_fold

    def run(max_steps, **kwargs):
        config = _config(
            f"train.max_steps={max_steps}",
            "train.log_every_n_steps=50",
            "train.val_every_n_epochs=20",
        )
        return train_fold(
            cohort,
            tmp_path / "run",
            0,
            config=config,
            cache_dir=tmp_path / "cache",
            enable_progress_bar=False,
            **kwargs,
        )

    with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING"):
        warnings.simplefilter("always")
        run(1)
        result = run(2, resume=True)
    assert result.global_step == 2 and result.best_checkpoint is None
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "exists and is not empty" in m], messages
    assert not [m for m in messages if "logging interval" in m], messages
    assert caplog.text.count("no best.ckpt will be written and last.ckpt will be used") == 2
    # resumed again at the same max_steps: nothing to train, said once, no warning
    caplog.clear()
    with caplog.at_level("INFO", logger="brats_mtl.training.runner"):
        again = run(2, resume=True)
    assert again.already_done and again.global_step == 2 and again.val_metrics == {}
    assert (
        "fold 0 already reached train.max_steps=2; nothing to train "
        "(raise train.max_steps to continue)"
    ) in caplog.messages
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text


def test_train_refuses_a_folder_it_did_not_create(cohort, tmp_path):
    """An nnU-Net results folder given as --out is left alone, with or without --overwrite."""
    from click.testing import CliRunner

    from brats_mtl.cli.main import cli

    foreign = tmp_path / "nnUNet_results"
    (foreign / "fold_0").mkdir(parents=True)
    (foreign / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights")
    (foreign / "plans.json").write_text("{}")
    for extra in ([], ["--overwrite"], ["--resume"]):
        result = CliRunner().invoke(
            cli, ["train", str(cohort), "--out", str(foreign), "--fold", "0", *extra]
        )
        assert result.exit_code == 1, result.output
        assert ".brats-mtl-output" in result.output and "did not create" in result.output
        assert ("refusing to --overwrite" in result.output) == (extra == ["--overwrite"])
    assert sorted(p.relative_to(foreign).as_posix() for p in foreign.rglob("*")) == [
        "fold_0",
        "fold_0/checkpoint_final.pth",
        "plans.json",
    ]
    # the output of `brats-mtl run` is not a train run folder either
    run_out = tmp_path / "run_out"
    run_out.mkdir()
    (run_out / ".brats-mtl-output").write_text("command: run\n")
    (run_out / "report.md").write_text("x")
    result = CliRunner().invoke(cli, ["train", str(cohort), "--out", str(run_out)])
    assert result.exit_code == 1 and "holds the output of `brats-mtl run`" in result.output


def test_train_refuses_nested_data_and_run_folders(cohort, tmp_path):
    from click.testing import CliRunner

    from brats_mtl.cli.main import cli

    inner = cohort / "results"
    cases = sorted(p.name for p in cohort.iterdir())
    for out, extra, message in (
        (cohort, [], "is inside the output folder"),
        (inner, [], "the output folder .* is inside DATA_DIR"),
        (tmp_path / "run", ["--unlabeled", str(cohort)], "is inside DATA_DIR|is inside --unl"),
    ):
        data = tmp_path if extra else cohort
        result = CliRunner().invoke(cli, ["train", str(data), "--out", str(out), *extra])
        assert result.exit_code == 1, result.output
        assert re.search(message, " ".join(result.output.split())), result.output
    assert sorted(p.name for p in cohort.iterdir()) == cases  # nothing written into the data


def test_overwrite_removes_only_what_training_wrote_in_a_fold(tmp_path, caplog):
    from brats_mtl.workspace.ownership import OUTPUT_MARKER, clear_fold_dir, prepare_run_dir
    from brats_mtl.workspace.run_dir import FOLD_OUTPUTS

    run = tmp_path / "run"
    assert prepare_run_dir(run) is False and (run / OUTPUT_MARKER).is_file()
    fold = RunDir(run).fold_dir(0)
    for name in FOLD_OUTPUTS:
        (fold / name).mkdir(parents=True) if "." not in name else (fold / name).write_text("x")
    assert prepare_run_dir(run, overwrite=True) is True  # a marked run folder is accepted
    (fold / "notes.txt").write_text("mine")
    with caplog.at_level("WARNING", logger="brats_mtl.workspace.ownership"):
        clear_fold_dir(fold)
    assert sorted(p.name for p in fold.iterdir()) == ["notes.txt"]
    assert "kept notes.txt" in caplog.text and "removing checkpoints" in caplog.text
    (fold / "notes.txt").unlink()
    RunDir(run).fold(0).checkpoint_dir.mkdir()
    clear_fold_dir(fold)
    assert not fold.exists()
    # a run folder written before markers existed: brats-mtl config.yaml + splits.json
    old = RunDir(tmp_path / "old")
    old.save_config(_config(), has_results=False)
    old.splits_file.write_text("{}")
    assert prepare_run_dir(old.path, overwrite=True) is True
    old.splits_file.unlink()  # a config.yaml alone is not enough
    with pytest.raises(FileExistsError, match="did not create"):
        prepare_run_dir(old.path)


def test_train_has_the_shared_progress_option():  # see also tests/cli/test_rules.py
    from brats_mtl.cli import demo, run, train

    for command in (run.command, demo.command, train.command):
        option = {p.name: p for p in command.params}["progress"]
        assert option.opts == ["--progress"] and option.secondary_opts == ["--no-progress"]


def test_a_damaged_last_checkpoint_on_resume_is_named(tmp_path):
    from brats_mtl.training.runner import _resumed_at_max_steps

    last = tmp_path / "last.ckpt"
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"last\.ckpt cannot be read .*--overwrite"):
        _resumed_at_max_steps(last, max_steps=10, resume=True)
    assert _resumed_at_max_steps(last, max_steps=10, resume=False) is None


# --- the first validation: warning and fix; plain progress lines --------------------------


@pytest.mark.parametrize(
    ("max_steps", "max_epochs", "every", "steps_per_epoch", "fix"),
    [
        (
            5,
            1000,
            2,
            6,
            "--set train.val_every_n_epochs=1 (a validation where training "
            "stops, in epoch 1) or --set train.max_steps=12",
        ),
        (
            13,
            1000,
            5,
            6,
            "--set train.val_every_n_epochs=3 (a validation where training "
            "stops, in epoch 3) or --set train.max_steps=30",
        ),
        (
            -1,
            3,
            5,
            4,
            "--set train.val_every_n_epochs=3 (a validation where training "
            "stops, in epoch 3) or --set train.max_steps=20",
        ),
        (8, 1000, 2, 6, None),  # stops inside epoch 2: validated there
        (12, 1000, 2, 6, None),
    ],
)
def test_no_validation_warning_says_the_fix(
    caplog, max_steps, max_epochs, every, steps_per_epoch, fix
):
    from types import SimpleNamespace

    from brats_mtl.training.runner import _warn_if_no_validation

    train = SimpleNamespace(max_steps=max_steps, max_epochs=max_epochs, val_every_n_epochs=every)
    with caplog.at_level("WARNING", logger="brats_mtl.training.runner"):
        _warn_if_no_validation(train, steps_per_epoch, Path("run/fold_0"))
    if fix is None:
        assert not caplog.records
    else:
        (message,) = caplog.messages
        assert "no best.ckpt will be written and last.ckpt will be used; to validate, pass " + fix
        assert message.endswith(fix), message


def test_a_fit_ending_inside_a_validation_epoch_validates_and_logs_plain_lines(
    cohort, tmp_path, caplog
):
    """max_steps inside the epoch of the first validation: the fit validates where it
    stops (so no warning), and without a progress bar it logs plain lines."""
    from brats_mtl.training.module import PatchDataModule
    from brats_mtl.training.runner import _steps_per_epoch, prepare_run, train_fold

    config = _config("train.val_every_n_epochs=2")
    run = prepare_run(cohort, tmp_path / "probe", config, cache_dir=tmp_path / "cache")
    train_cases, val_cases = run.fold_cases(0)
    per_epoch = _steps_per_epoch(
        len(PatchDataModule(config, train_cases, val_cases).train_dataset),
        config.train.batch_size,
        1,
    )
    max_steps = per_epoch + 2  # in epoch 2 of 2 epochs between validations
    config = apply_overrides(config, [f"train.max_steps={max_steps}"])
    with caplog.at_level("INFO"):
        result = train_fold(
            cohort,
            tmp_path / "run",
            0,
            config=config,
            cache_dir=tmp_path / "cache",
            enable_progress_bar=False,
        )
    assert result.global_step == max_steps and result.best_checkpoint is not None
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    lines = [r.getMessage() for r in caplog.records if r.name == "brats_mtl.training.progress"]
    assert re.fullmatch(
        r"fold 0: step 1/\d+, loss \d+\.\d{4}, \d+\.\d\d s/step, about .+ left", lines[0]
    ), lines
    assert re.fullmatch(
        rf"fold 0: step {max_steps}/{max_steps}, loss \d+\.\d{{4}}, "
        r"\d+\.\d\d s/step",
        lines[-2],
    ), lines
    assert re.fullmatch(
        rf"fold 0: validation at step {max_steps}: Dice ET \d\.\d{{3}}, "
        r"WT \d\.\d{3}, TC \d\.\d{3} \(mean \d\.\d{3}\)",
        lines[-1],
    ), lines
    assert len(lines) <= 2 + 1 + max_steps // 2  # a line at most every few seconds


def test_progress_log_writes_a_line_every_interval():
    """Steps of 10 s, a line every 30 s: steps 1, 4, 7, 10 (the last always)."""
    from types import SimpleNamespace

    from brats_mtl.training.progress import ProgressLog

    now = [0.0]
    log = ProgressLog("fold 3", every_s=30, clock=lambda: now[0])
    trainer = SimpleNamespace(
        is_global_zero=True, global_step=0, max_steps=10, sanity_checking=False, callback_metrics={}
    )
    log.on_train_start(trainer, None)
    records = []
    handler = _ListHandler(records)
    logger = __import__("logging").getLogger("brats_mtl.training.progress")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel("INFO")
    try:
        for step in range(1, 11):
            now[0] += 10.0
            trainer.global_step = step
            log.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.0 / step)}, None, 0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert records == [
        "fold 3: step 1/10, loss 1.0000, 10.00 s/step, about 90 s left",
        "fold 3: step 4/10, loss 0.2500, 10.00 s/step, about 60 s left",
        "fold 3: step 7/10, loss 0.1429, 10.00 s/step, about 30 s left",
        "fold 3: step 10/10, loss 0.1000, 10.00 s/step",
    ]


class _ListHandler(__import__("logging").Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record) -> None:
        self.records.append(record.getMessage())
