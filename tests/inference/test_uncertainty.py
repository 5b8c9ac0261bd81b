"""Uncertainty maps during inference: the two estimators on toy predictors whose passes
and folds agree or split on a known box, the pass-by-pass accumulation, maps on disk
(shape, affine, dtype), predictions.csv, resume, and ``predict --uncertainty``."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from brats_mtl.cli.main import cli
from brats_mtl.config import InferenceConfig, apply_overrides, load_config, save_config
from brats_mtl.conventions import uncertainty_map_name
from brats_mtl.data import write_phantom_case
from brats_mtl.inference import Segmenter
from brats_mtl.inference.sliding_window import predict_sliding_window, predict_whole_volume
from brats_mtl.inference.uncertainty import (
    RegionVotes,
    disagreement_map,
    entropy_map,
    mean_uncertainty_in_regions,
)
from brats_mtl.predict import predict_cases
from brats_mtl.preprocessing import Preprocessed
from brats_mtl.presets import tiny_config
from tests.helpers import make_run

SHAPE = (20, 18, 16)  # the crop; windows of 16 with overlap 0.5 blend across it
BOX = (slice(4, 12), slice(5, 11), slice(3, 9))


def entropy_percent(p: float) -> int:
    """100 x the binary entropy of p in bits, rounded: the value the maps must hold."""
    bits = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return round(100 * bits)


def test_entropy_and_disagreement_on_hand_values():
    np.testing.assert_array_equal(
        entropy_map(np.array([0.0, 1.0, 0.5, 0.25, 1.0 + 1e-7])), [0, 0, 100, 81, 0]
    )
    assert entropy_percent(0.25) == 81 and entropy_percent(0.6) == 97
    # 20 predictions: 0, 5, 10, 15 in the region; final label out, out, in, in
    votes = np.array([0, 5, 10, 15, 20])
    final = np.array([False, False, True, True, True])
    np.testing.assert_array_equal(disagreement_map(votes, 20, final), [0, 50, 100, 50, 0])
    # a final label that most predictions contradict is maximally uncertain
    assert disagreement_map(np.array([2]), 20, np.array([True]))[0] == 100
    with pytest.raises(ValueError):
        disagreement_map(votes, 0, final)


def test_region_votes_count_each_region():
    votes = RegionVotes((3, 1, 1))
    votes.add(np.array([0, 1, 3]).reshape(3, 1, 1))  # background, NCR/NET, ET
    votes.add(torch.tensor([2, 1, 0]).reshape(3, 1, 1))  # ED, NCR/NET, background
    assert votes.n_predictions == 2
    np.testing.assert_array_equal(votes.counts["WT"].ravel(), [1, 2, 1])
    np.testing.assert_array_equal(votes.counts["TC"].ravel(), [0, 2, 1])
    np.testing.assert_array_equal(votes.counts["ET"].ravel(), [0, 0, 1])
    with pytest.raises(ValueError, match="shape"):
        votes.add(np.zeros((2, 1, 1), np.int64))


def _ramp_image() -> np.ndarray:
    """Channel 0 rises along X, channel 2 along Y (so a predictor sees which axes are
    mirrored); channel 1 marks BOX; all > 0 (the whole crop is brain)."""
    x, y, _ = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    image = np.ones((4, *SHAPE), np.float32)
    image[0] += x
    image[2] += y
    image[1][BOX] = 5.0
    return image


def _rising(channel: torch.Tensor, dim: int) -> bool:
    """Whether the ramp rises along ``dim`` (zero padding left out)."""
    step = channel.diff(dim=dim)
    n = channel.shape[dim]
    valid = (channel.narrow(dim, 1, n - 1) > 0) & (channel.narrow(dim, 0, n - 1) > 0)
    return bool(step[valid].mean() > 0)


class SplitOnMirror:
    """ET in the marked box when neither X nor Y is mirrored, else background.

    With the 4 mirror passes ((), X, Y, Z) two passes see ET and two do not: a 50/50
    split on the box. In the box the ET passes give p(ET) = ``p_yes``, the others
    ``p_no``; outside it every pass gives background with probability 1.
    """

    def __init__(self, p_yes: float = 0.9, p_no: float = 0.3, always: bool | None = None):
        self.p_yes, self.p_no, self.always = p_yes, p_no, always

    def __call__(self, x: torch.Tensor):
        probs = torch.zeros((x.shape[0], 4, *x.shape[2:]))
        for i in range(x.shape[0]):
            upright = _rising(x[i, 0], 0) and _rising(x[i, 2], 1)
            yes = upright if self.always is None else self.always
            p_et = self.p_yes if yes else self.p_no
            box = x[i, 1] > 2.0
            probs[i, 3] = torch.where(box, p_et, 0.0)
            probs[i, 0] = 1.0 - probs[i, 3]
        return probs, torch.full((x.shape[0],), 0.9)


def _pre(image=None) -> Preprocessed:
    image = _ramp_image() if image is None else image
    box = tuple(slice(0, n) for n in SHAPE)
    return Preprocessed("case", image, None, box, SHAPE)


def _segment(models, estimator, *, tta=4, brain_mask=None):
    config = InferenceConfig(
        tta=tta,
        overlap=0.5,
        device="cpu",
        uncertainty=estimator,
        et_min_voxels=0,
        window_batch_size=3,
    )
    segmenter = Segmenter(models, config, patch_size=16)
    return segmenter.predict_preprocessed(_pre(), brain_mask=brain_mask)


def _box_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[BOX] = True
    return mask


@pytest.mark.parametrize("estimator", ["entropy", "disagreement"])
def test_passes_that_agree_give_zero_everywhere(estimator):
    prediction = _segment({0: SplitOnMirror(p_yes=1.0, always=True)}, estimator)
    assert (prediction.labels[BOX] == 4).all()
    for region in ("WT", "TC", "ET"):
        m = prediction.uncertainty[region]
        assert m.dtype == np.uint8 and m.shape == SHAPE
        np.testing.assert_array_equal(m, 0)


def test_passes_split_50_50_on_a_box():
    box = _box_mask()
    disagreement = _segment({0: SplitOnMirror()}, "disagreement")
    entropy = _segment({0: SplitOnMirror()}, "entropy")
    # mean p(ET) in the box = (0.9 + 0.9 + 0.3 + 0.3) / 4 = 0.6 > 0.4: the final label is ET
    assert (disagreement.labels[box] == 4).all() and (disagreement.labels[~box] == 0).all()
    np.testing.assert_array_equal(entropy.labels, disagreement.labels)
    for region in ("WT", "TC", "ET"):
        d, h = disagreement.uncertainty[region], entropy.uncertainty[region]
        assert (d[box] == 100).all() and (d[~box] == 0).all(), region
        assert (h[box] == entropy_percent(0.6)).all() and (h[~box] == 0).all(), region
    assert entropy_percent(0.6) == 97


def test_folds_that_split_count_like_passes():
    agree, disagree = SplitOnMirror(p_yes=1.0, always=True), SplitOnMirror(p_no=0.0, always=False)
    box = _box_mask()
    d = _segment({0: agree, 1: disagree}, "disagreement", tta=0)
    h = _segment({0: agree, 1: disagree}, "entropy", tta=0)
    # one fold votes ET, one background; the tie goes to the higher mean probability
    # (0.5 each), i.e. the lower class index: background, against which one fold of two
    # disagrees
    assert (d.labels[box] == 0).all()
    assert (d.uncertainty["ET"][box] == 100).all()
    assert (h.uncertainty["WT"][box] == 100).all() and (h.uncertainty["WT"][~box] == 0).all()


def test_maps_are_zero_outside_the_brain_mask():
    brain = np.ones(SHAPE, bool)
    brain[4:8] = False  # cuts through the box
    for estimator in ("entropy", "disagreement"):
        p = _segment({0: SplitOnMirror()}, estimator, brain_mask=brain)
        for region in ("WT", "TC", "ET"):
            assert (p.uncertainty[region][~brain] == 0).all()
            assert (p.uncertainty[region][brain & _box_mask()] > 0).all()
        assert (p.labels[~brain] == 0).all()


def test_pass_by_pass_windows_give_the_same_mean_and_one_map_per_pass():
    image = torch.from_numpy(_ramp_image())
    model = SplitOnMirror()
    plain = predict_sliding_window(image, model, patch_size=16, overlap=0.5, tta=8, batch_size=3)
    maps = []
    counted = predict_sliding_window(
        image, model, patch_size=16, overlap=0.5, tta=8, batch_size=3, on_pass=maps.append
    )
    np.testing.assert_allclose(counted.probs, plain.probs, atol=1e-6)
    np.testing.assert_array_equal(counted.window_et_probabilities, plain.window_et_probabilities)
    assert len(maps) == 8 and all(m.shape == SHAPE for m in maps)
    upright = sum(int((m[BOX] == 3).all()) for m in maps)  # passes without an X or Y flip
    assert upright == 2 and all((m[~_box_mask()] == 0).all() for m in maps)


def test_whole_volume_mode_reports_each_pass():
    def volume_predictor(x, boxes):
        probs, _ = SplitOnMirror()(x)
        return probs, torch.full((len(boxes),), 0.5)

    maps = []
    predict_whole_volume(
        torch.from_numpy(_ramp_image()),
        volume_predictor,
        patch_size=16,
        multiple=16,
        tta=4,
        on_pass=maps.append,
    )
    assert len(maps) == 4 and sum(int((m[BOX] == 3).all()) for m in maps) == 2


def test_mean_uncertainty_in_predicted_regions():
    labels = np.array([0, 2, 1, 4], np.uint8).reshape(4, 1, 1)
    maps = {r: np.array([90, 10, 20, 60], np.uint8).reshape(4, 1, 1) for r in ("WT", "TC", "ET")}
    means = mean_uncertainty_in_regions(labels, maps)
    assert means == {"WT": 30.0, "TC": 40.0, "ET": 60.0}
    assert math.isnan(mean_uncertainty_in_regions(np.zeros((4, 1, 1), np.uint8), maps)["ET"])


class Channel1Box:
    """Phantom cases: ET where the z-scored t1ce is high on the unmirrored passes."""

    def __call__(self, x: torch.Tensor):
        probs = torch.softmax(3.0 * x, 1)
        return probs, torch.full((x.shape[0],), 0.9)


def test_maps_on_disk_keep_geometry_and_fill_the_table(tmp_path):
    files = [
        write_phantom_case(tmp_path / "in", f"BraTS2021_0000{i}", shape=(30, 26, 22), seed=i)
        for i in range(2)
    ]
    out = tmp_path / "out"
    config = InferenceConfig(tta=4, device="cpu", uncertainty="entropy", window_batch_size=4)
    table = predict_cases(files, Segmenter({0: Channel1Box()}, config, patch_size=16), out)
    assert table["status"].tolist() == ["ok", "ok"]
    csv = pd.read_csv(out / "predictions.csv")
    for f in files:
        source = nib.load(f.images["t1"])
        labels = np.asarray(nib.load(out / f"{f.case_id}.nii.gz").dataobj)
        t1 = np.asarray(source.dataobj)
        row = csv.set_index("case_id").loc[f.case_id]
        for region, labels_in in (("WT", (1, 2, 4)), ("TC", (1, 4)), ("ET", (4,))):
            img = nib.load(out / uncertainty_map_name(f.case_id, region))
            assert img.shape == source.shape and img.get_data_dtype() == np.uint8
            np.testing.assert_allclose(img.affine, source.affine)
            data = np.asarray(img.dataobj)
            assert data.max() <= 100 and data.max() > 0
            brain = np.any(
                [np.asarray(nib.load(p).dataobj) != 0 for p in f.images.values()], axis=0
            )
            assert (data[~brain] == 0).all() and brain.sum() < t1.size
            inside = np.isin(labels, labels_in)
            mean = data[inside].mean()  # predictions.csv holds 6 significant digits
            assert row[f"mean_uncertainty_{region}"] == pytest.approx(mean, rel=1e-5)
    settings = json.loads((out / "records" / ".settings.json").read_text())["settings"]
    assert settings["inference.uncertainty"] == "entropy"

    # resume skips finished cases; a missing map makes its case predicted again
    stamp = (out / f"{files[0].case_id}.nii.gz").stat().st_mtime_ns
    (out / uncertainty_map_name(files[1].case_id, "TC")).unlink()
    predict_cases(files, Segmenter({0: Channel1Box()}, config, patch_size=16), out)
    assert (out / f"{files[0].case_id}.nii.gz").stat().st_mtime_ns == stamp
    assert (out / uncertainty_map_name(files[1].case_id, "TC")).is_file()
    # another estimator into the same folder is refused, with the difference named
    other = InferenceConfig(tta=4, device="cpu", uncertainty="disagreement")
    with pytest.raises(FileExistsError, match="inference.uncertainty: entropy -> disagreement"):
        predict_cases(files, Segmenter({0: Channel1Box()}, other, patch_size=16), out)
    none = InferenceConfig(tta=4, device="cpu", window_batch_size=4)
    with pytest.raises(FileExistsError, match="inference.uncertainty: entropy -> none"):
        predict_cases(files, Segmenter({0: Channel1Box()}, none, patch_size=16), out)


def test_a_folder_without_uncertainty_records_no_such_setting(tmp_path):
    files = [write_phantom_case(tmp_path / "in", "BraTS2021_00000", shape=(20, 20, 20))]
    out = tmp_path / "out"
    config = InferenceConfig(tta=0, device="cpu")
    predict_cases(files, Segmenter({0: Channel1Box()}, config, patch_size=16), out)
    settings = json.loads((out / "records" / ".settings.json").read_text())["settings"]
    assert "inference.uncertainty" not in settings  # folders of earlier versions resume
    assert not list(out.glob("*_unc_*"))
    assert pd.read_csv(out / "predictions.csv")["mean_uncertainty_WT"].isna().all()


def test_the_estimator_is_a_checked_config_choice(tmp_path):
    with pytest.raises(ValueError, match="inference.uncertainty"):
        Segmenter({0: Channel1Box()}, InferenceConfig(uncertainty="variance"), patch_size=16)
    with pytest.raises(ValueError, match="is not one of"):
        apply_overrides(tiny_config(), ["inference.uncertainty=variance"])
    config = apply_overrides(tiny_config(), ["inference.uncertainty=disagreement"])
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").inference.uncertainty == "disagreement"


def test_cli_predict_with_uncertainty(tmp_path):
    root = tmp_path / "input"
    ids = ["BraTS2021_00000"]
    write_phantom_case(root, ids[0], shape=(20, 20, 20))  # one 16^3 window per pass
    run = make_run(tmp_path / "run", [*ids, "BraTS2021_00001"])  # two folds need two cases
    out = tmp_path / "out"
    args = [
        "predict",
        str(run),
        str(root),
        str(out),
        "--tta",
        "4",
        "--uncertainty",
        "disagreement",
        "--no-progress",
        "--set",
        "inference.device=cpu",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for case_id in ids:
        for region in ("WT", "TC", "ET"):
            data = np.asarray(nib.load(out / uncertainty_map_name(case_id, region)).dataobj)
            # 2 folds x 4 passes: multiples of 100 * 2/8
            assert set(np.unique(data).tolist()) <= {0, 25, 50, 75, 100}
    table = pd.read_csv(out / "predictions.csv")
    assert {"mean_uncertainty_WT", "mean_uncertainty_TC", "mean_uncertainty_ET"} <= set(table)
