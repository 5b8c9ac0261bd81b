"""Training and prediction on every BraTS label scheme (issue 14)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brats_mtl.config import apply_overrides
from brats_mtl.data import discover_cases, load_case, make_phantom, write_phantom_cohort
from brats_mtl.data.io import case_label_scheme, write_segmentation
from brats_mtl.data.splits import Splits, stratified_folds
from brats_mtl.evaluation.tables import evaluate_folders
from brats_mtl.inference.postprocess import region_volumes_ml, suppress_et
from brats_mtl.presets import tiny_config
from brats_mtl.tasks import LABEL_SCHEMES, network_classes, patient_id, pick_training_scheme


def _chain(tmp_path, scheme, steps=2):
    import torch

    from brats_mtl.predict import predict_cohort
    from brats_mtl.training.runner import train_fold

    data = tmp_path / "data"
    write_phantom_cohort(data, n_labeled=4, n_unlabeled=0, shape=(32, 32, 32), labels=scheme)
    config = apply_overrides(
        tiny_config(32),
        [
            "train.n_folds=2",
            f"train.max_steps={steps}",
            "train.accelerator=cpu",
            "train.devices=1",
            "inference.tta=0",
            "inference.device=cpu",
            "inference.precision=32",
        ],
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_fold(data, tmp_path / "run", 0, config=config, enable_progress_bar=False)
        table = predict_cohort(tmp_path / "run", data, tmp_path / "pred")
    finally:
        torch.set_num_threads(threads)
    return data, table


# --- classes per scheme -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "n_classes", "et", "core"),
    [
        ("brats2017", 4, 4, 1),
        ("msd", 4, 4, 1),
        ("brats2023", 4, 4, 1),
        ("gli-post", 5, 3, 1),
        ("ped2024", 5, 1, 2),
    ],
)
def test_network_classes_per_scheme(scheme, n_classes, et, core):
    classes = network_classes(scheme)
    assert classes.n_classes == n_classes and classes.labels[0] == 0
    assert (classes.et_label, classes.core_label) == (et, core)
    # ET suppression keeps TC and WT: the core label is in both, as ET is
    for region in ("TC", "WT"):
        assert et in classes.regions[region] and core in classes.regions[region]
    labels = np.array(classes.labels, dtype=np.uint8)
    np.testing.assert_array_equal(classes.to_labels(classes.to_classes(labels)), labels)


def test_parameter_count_per_scheme():
    """The paper's network keeps 21,134,438 parameters; a fifth class adds one output
    channel to the 1x1x1 head (28 weights + 1 bias)."""
    import dataclasses

    from brats_mtl.config import ModelConfig
    from brats_mtl.model import MultiTaskNet

    counts = {}
    for name in LABEL_SCHEMES:
        model = dataclasses.replace(ModelConfig(), n_classes=network_classes(name).n_classes)
        counts[name] = sum(p.numel() for p in MultiTaskNet(model).parameters())
    assert counts["brats2017"] == counts["msd"] == counts["brats2023"] == 21_134_438
    assert counts["gli-post"] == counts["ped2024"] == 21_134_438 + 28 + 1


def test_resection_cavity_is_in_no_tumour_region():
    regions = network_classes("gli-post").regions
    assert all(4 not in regions[r] for r in ("ET", "TC", "WT")) and regions["RC"] == (4,)


# --- the paper's method on each scheme, on hand-made maps --------------------------------


def _hand_made(scheme):
    """A 1 x 1 x 8 map holding every label of the scheme once, ET twice."""
    values = network_classes(scheme).labels
    et = network_classes(scheme).et_label
    return np.array([[[*values, et, 0, 0, 0][:8]]], dtype=np.uint8)


@pytest.mark.parametrize("scheme", ["brats2017", "gli-post", "ped2024"])
def test_classifier_target_is_the_scheme_et(tmp_path, scheme):
    """et_target is 1 for a patch holding the scheme's ET, 0 for one holding every other
    label (label 4 is ET for brats2017 but RC for gli-post and ED for ped2024)."""
    from brats_mtl.training.cache import CachedCase
    from brats_mtl.training.datasets import PatchDataset

    classes = network_classes(scheme)
    with_et = _hand_made(scheme)
    without = np.where(with_et == classes.et_label, classes.core_label, with_et)
    cases = []
    for name, labels in (("a", with_et), ("b", without)):
        np.save(tmp_path / f"{name}.image.npy", np.zeros((4, *labels.shape), np.float32))
        np.save(tmp_path / f"{name}.labels.npy", labels)
        cases.append(
            CachedCase(
                name,
                tmp_path / f"{name}.image.npy",
                tmp_path / f"{name}.labels.npy",
                labels.shape,
                tuple(slice(0, n) for n in labels.shape),
                labels.shape,
                True,
                None,
            )
        )
    dataset = PatchDataset(cases, 8, classes=classes)
    first, second = dataset[0], dataset[1]
    assert int(first["et_target"]) == 1 and int(second["et_target"]) == 0
    expected = classes.to_classes(np.pad(with_et, ((0, 7), (0, 7), (0, 0))))
    np.testing.assert_array_equal(first["class_targets"].numpy(), expected)
    assert int(second["class_targets"].max()) <= classes.n_classes - 1
    if scheme != "brats2017":  # label 4 alone is not ET
        assert 4 in without


@pytest.mark.parametrize("scheme", ["brats2017", "gli-post", "ped2024"])
def test_et_suppression_per_scheme_keeps_tc_wt_and_rc(scheme):
    classes = network_classes(scheme)
    labels = _hand_made(scheme)
    out, suppressed = suppress_et(
        labels, 0.1, min_voxels=500, et_label=classes.et_label, core_label=classes.core_label
    )
    assert suppressed and not (out == classes.et_label).any()
    changed = labels != out
    np.testing.assert_array_equal(labels[changed], classes.et_label)
    np.testing.assert_array_equal(out[changed], classes.core_label)
    before = region_volumes_ml(labels, (1, 1, 1), classes.regions)
    after = region_volumes_ml(out, (1, 1, 1), classes.regions)
    for region in ("TC", "WT"):
        assert after[region] == before[region]
    assert after["ET"] == 0.0 and before["ET"] == pytest.approx(0.002)
    if scheme == "gli-post":
        assert after["RC"] == before["RC"] == pytest.approx(0.001)


def test_hand_made_map_of_gli_post():
    labels = _hand_made("gli-post")
    np.testing.assert_array_equal(labels.ravel(), [0, 1, 2, 3, 4, 3, 0, 0])
    classes = network_classes("gli-post")
    np.testing.assert_array_equal(classes.to_classes(labels).ravel(), [0, 1, 2, 3, 4, 3, 0, 0])


# --- patients, not scans -----------------------------------------------------------------


def test_patient_id_strips_the_timepoint_only():
    assert patient_id("BraTS-GLI-00000-000") == patient_id("BraTS-GLI-00000-100")
    assert patient_id("BraTS-GLI-00000-100") == "BraTS-GLI-00000"
    assert patient_id("BraTS2021_00000") == "BraTS2021_00000"
    assert patient_id("BraTS-PED-00001") == "BraTS-PED-00001"


@pytest.mark.parametrize("seed", range(8))
def test_group_k_fold_never_splits_a_patient(seed):
    ids = [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(7) for t in (0, 100, 101)[: 1 + p % 3]]
    strata = {c: "ET" if i % 3 else "noET" for i, c in enumerate(ids)}
    patients = {c: patient_id(c) for c in ids}
    splits = stratified_folds(strata, 3, seed, patients)
    fold_of = {c: k for k in range(3) for c in splits.val_ids(k)}
    assert sorted(fold_of) == sorted(ids)
    for patient in set(patients.values()):
        scans = [c for c in ids if patients[c] == patient]
        assert len({fold_of[c] for c in scans}) == 1
    assert all(splits.val_ids(k) for k in range(3))
    # splits.json records the patients; a file written without them still loads
    document = splits.to_json()
    assert document["patients"]["BraTS-GLI-00002-101"] == "BraTS-GLI-00002"
    again = Splits.from_json(json.loads(json.dumps(document)))
    assert again == splits
    del document["patients"]
    old = Splits.from_json(document)
    assert old.folds == splits.folds and old.patients == {}


def test_one_scan_per_patient_gives_the_case_wise_folds():
    ids = [f"BraTS2021_{i:05d}" for i in range(11)]
    strata = {c: "ET" if i % 4 else "noET" for i, c in enumerate(ids)}
    grouped = stratified_folds(strata, 5, 3, {c: patient_id(c) for c in ids})
    assert grouped.folds == stratified_folds(strata, 5, 3).folds


# --- mixed folders -----------------------------------------------------------------------


def test_mixed_scheme_folder_is_refused_listing_the_cases(tmp_path):
    write_phantom_cohort(tmp_path, n_labeled=2, n_unlabeled=1, shape=(16, 16, 16))
    write_phantom_cohort(
        tmp_path, n_labeled=2, n_unlabeled=0, shape=(16, 16, 16), labels="gli-post"
    )
    cases = discover_cases(tmp_path)
    schemes = {c.case_id: case_label_scheme(c) for c in cases if c.labeled}
    with pytest.raises(ValueError) as info:
        pick_training_scheme(schemes)
    message = str(info.value)
    assert "brats2017 (2 cases): BraTS2021_00000, BraTS2021_00001" in message
    assert "gli-post (2 cases): BraTS-GLI-00000-100, BraTS-GLI-00001-100" in message
    assert "--labels" in message
    assert pick_training_scheme(schemes, "gli-post").name == "gli-post"
    # unlabeled cases join any scheme; three-label schemes share the paper's classes
    assert pick_training_scheme({}).name == "brats2017"
    assert (
        pick_training_scheme(
            {"a": LABEL_SCHEMES["brats2017"], "b": LABEL_SCHEMES["brats2023"]}
        ).name
        == "brats2017"
    )


def test_training_on_a_mixed_folder_fails_before_caching(tmp_path):
    from brats_mtl.training.runner import prepare_run

    write_phantom_cohort(tmp_path / "d", n_labeled=1, n_unlabeled=0, shape=(16, 16, 16))
    write_phantom_cohort(
        tmp_path / "d", n_labeled=1, n_unlabeled=0, shape=(16, 16, 16), labels="ped2024"
    )
    with pytest.raises(ValueError, match=r"ped2024 \(1 cases\): BraTS-PED-00000-000"):
        prepare_run(tmp_path / "d", tmp_path / "run", tiny_config(16))
    assert not (tmp_path / "run" / "cache").exists()


# --- outputs: written in the input's scheme, read back identically -----------------------


@pytest.mark.parametrize("scheme", ["brats2017", "brats2023", "msd", "gli-post", "ped2024"])
def test_write_read_round_trip_per_scheme(tmp_path, scheme):
    layout = {"brats2017": "brats2021", "msd": "msd"}.get(scheme, "brats2023")
    (files,) = write_phantom_cohort(
        tmp_path / "in",
        n_labeled=1,
        n_unlabeled=0,
        shape=(24, 20, 16),
        layout=layout,
        labels=scheme,
    )
    inferred = case_label_scheme(files)
    assert inferred.name == scheme
    case = load_case(files, scheme=inferred)
    out = write_segmentation(case.labels, case, tmp_path / "out.nii.gz", scheme=inferred)
    written, stored = nib.load(out), nib.load(files.seg)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(stored.dataobj))
    np.testing.assert_allclose(written.affine, stored.affine)
    assert written.shape == stored.shape and written.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(written.dataobj))) <= set(LABEL_SCHEMES[scheme].values)


def test_four_label_phantoms_hold_every_label():
    for scheme in ("gli-post", "ped2024"):
        _, labels = make_phantom((40, 40, 40), labels=scheme)
        assert set(np.unique(labels)) == set(LABEL_SCHEMES[scheme].values)
    image, labels = make_phantom((32, 32, 32))
    image_again, labels_again = make_phantom((32, 32, 32), labels="brats2017")
    np.testing.assert_array_equal(labels, labels_again)
    np.testing.assert_array_equal(image, image_again)


def test_prediction_with_a_run_of_another_scheme_names_both():
    from brats_mtl.tasks import check_run_scheme

    with pytest.raises(ValueError, match=r"gli-post.*ped2024"):
        check_run_scheme("gli-post", "ped2024", "RUN")
    check_run_scheme("brats2017", "brats2023", "RUN")  # the paper's classes: accepted


# --- the whole chain ---------------------------------------------------------------------


def _check_chain(tmp_path, scheme, data, table):
    regions = network_classes(scheme).regions
    assert (table["status"] == "ok").all()
    for region in regions:
        assert table[f"volume_{region}_ml"].notna().all()
    for files in discover_cases(data):
        pred = nib.load(tmp_path / "pred" / f"{files.case_id}.nii.gz")
        ref = nib.load(files.seg)
        assert pred.shape == ref.shape
        np.testing.assert_allclose(pred.affine, ref.affine)
        values = set(np.unique(np.asarray(pred.dataobj)).tolist())
        assert values <= set(LABEL_SCHEMES[scheme].values)
        ml = region_volumes_ml(np.asarray(pred.dataobj), (1, 1, 1), regions)
        row = table.set_index("case_id").loc[files.case_id]
        for region, value in ml.items():
            assert row[f"volume_{region}_ml"] == pytest.approx(value)
    per_case, _ = evaluate_folders(tmp_path / "pred", data, protocol="lesionwise")
    assert len(per_case) == 4
    for region in regions:
        dice = pd.to_numeric(per_case[f"LesionWise_Dice_{region}"])
        assert ((dice >= 0) & (dice <= 1)).all()


def test_chain_on_gli_post(tmp_path):
    data, table = _chain(tmp_path, "gli-post")
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["labels"] == "gli-post" and saved["model"]["n_classes"] == 5
    _check_chain(tmp_path, "gli-post", data, table)
    # data of another scheme is refused before any model is loaded, naming both
    from brats_mtl.predict import predict_cohort

    other = tmp_path / "other"
    write_phantom_cohort(other, n_labeled=1, n_unlabeled=1, shape=(16, 16, 16))
    with pytest.raises(ValueError, match=r"BraTS2021_00000.*gli-post.*brats2017"):
        predict_cohort(tmp_path / "run", other, tmp_path / "pred_other")
    (other / "BraTS2021_00000").rename(tmp_path / "moved")  # only the unlabeled case left
    with pytest.raises(ValueError, match=r"BraTS2021_00001.*2017-2021.*gli-post"):
        predict_cohort(tmp_path / "run", other, tmp_path / "pred_other")
    assert not (tmp_path / "pred_other").exists()


@pytest.mark.slow
def test_chain_on_ped2024(tmp_path):
    data, table = _chain(tmp_path, "ped2024")
    _check_chain(tmp_path, "ped2024", data, table)


@pytest.mark.slow
def test_brats_mtl_run_on_a_2024_layout_cohort_reports_the_scheme_regions(tmp_path):
    """`brats-mtl run` on post-treatment glioma phantoms: the tables, the report and
    Fig. 3 use the gli-post regions (RC its own, never in TC or WT)."""
    import torch
    from click.testing import CliRunner

    from brats_mtl.cli.main import cli
    from brats_mtl.config import save_config
    from brats_mtl.pipeline import table3_columns
    from brats_mtl.presets import demo_config

    data = tmp_path / "data"
    write_phantom_cohort(data, n_labeled=4, n_unlabeled=0, shape=(24, 24, 24), labels="gli-post")
    config = apply_overrides(
        demo_config(),
        ["train.n_folds=2", "train.max_steps=1", "train.val_every_n_epochs=5", "inference.tta=0"],
    )
    save_config(config, tmp_path / "config.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(
            cli,
            [
                "run",
                str(data),
                "--out",
                str(tmp_path / "out"),
                "--config",
                str(tmp_path / "config.yaml"),
                "--no-progress",
            ],
        )
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    columns = table3_columns("gli-post")
    assert columns[:6] == ("Dice_ET", "Dice_WT", "Dice_TC", "Dice_NETC", "Dice_SNFH", "Dice_RC")
    table3 = pd.read_csv(tmp_path / "out" / "tables" / "table3.csv", index_col=0)
    assert list(table3.columns) == [*columns, "n_cases"]
    report = (tmp_path / "out" / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| Dataset"))
    assert header == "| Dataset | " + " | ".join(columns) + " | n_cases |"
    assert "| RC |" in report and "| NETC |" in report  # lesion-wise regions
    volumes = pd.read_csv(tmp_path / "out" / "predictions" / "out_of_fold" / "predictions.csv")
    assert {"volume_NETC_ml", "volume_SNFH_ml", "volume_RC_ml"} <= set(volumes.columns)
    assert (tmp_path / "out" / "figures" / "fig3_best.png").read_bytes()[:4] == b"\x89PNG"


def test_fig3_colours_every_label_of_each_scheme():
    from brats_mtl.figures.slices import LABEL_COLOURS, overlay_rgba, scheme_colours

    assert {v: c for v, (c, _) in scheme_colours("brats2017").items()} == LABEL_COLOURS
    for scheme in ("gli-post", "ped2024"):
        colours = scheme_colours(scheme)
        assert sorted(colours) == [1, 2, 3, 4]
        assert len({c for c, _ in colours.values()}) == 4  # four labels, four colours
        rgba = overlay_rgba(np.array([[0, 1, 2, 3, 4]], dtype=np.uint8), scheme)
        assert rgba[0, 0, 3] == 0 and (rgba[0, 1:, 3] > 0).all()
    names = [name for _, name in scheme_colours("gli-post").values()]
    assert names[-1] == "RC (resection cavity)"
    assert [name for _, name in scheme_colours("ped2024").values()][2] == "CC (cyst)"
