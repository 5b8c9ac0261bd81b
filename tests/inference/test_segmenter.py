"""How a Segmenter is built: from predictor callables, or from fold networks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from brats_mtl.config import InferenceConfig
from brats_mtl.data import load_case, write_phantom_case
from brats_mtl.inference.network import network_predictor, network_volume_predictor
from brats_mtl.inference.segmenter import Segmenter, WholeVolumePredictor, model_fingerprint
from brats_mtl.model import MultiTaskNet
from brats_mtl.presets import tiny_config

SHAPE = (24, 20, 18)
WINDOW = InferenceConfig(tta=0, et_min_voxels=0, device="cpu", precision="32")
WHOLE = dataclasses.replace(WINDOW, mode="whole")


def toy(x: torch.Tensor):
    """Pointwise toy predictor: softmax(3 * channels), ET probability 0.9."""
    return torch.softmax(3.0 * x, 1), torch.full((x.shape[0],), 0.9)


def tiny_net(seed: int = 0, patch_size: int = 16) -> MultiTaskNet:
    """A seeded tiny MultiTaskNet of the given patch size."""
    torch.manual_seed(seed)
    return MultiTaskNet(tiny_config(patch_size=patch_size).model)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """One loaded phantom case."""
    root = tmp_path_factory.mktemp("cases")
    return load_case(write_phantom_case(root, "BraTS2021_00000", shape=SHAPE, seed=0))


def test_predictors_run_in_window_mode_with_the_given_patch_size(case):
    """Callables are windowed predictors, named by their fingerprints."""
    segmenter = Segmenter({2: toy, 0: toy}, WINDOW, patch_size=16)
    assert segmenter.folds == (0, 2) and segmenter.patch_size == 16
    assert segmenter.precision == "32" and str(segmenter.device) == "cpu"
    assert segmenter.fingerprints == {0: f"callable {__name__}.toy", 2: f"callable {__name__}.toy"}
    prediction = segmenter.predict_case(case)
    assert prediction.labels.shape == SHAPE and prediction.folds == (0, 2)
    assert prediction.et_probability == pytest.approx(0.9)


def test_a_predictor_of_the_other_mode_is_refused():
    """A callable in whole mode, a whole-volume predictor in window mode: refused."""
    with pytest.raises(ValueError, match="fold 0: inference.mode=whole needs a MultiTaskNet"):
        Segmenter({0: toy}, WHOLE, patch_size=16)
    whole = WholeVolumePredictor(network_volume_predictor(tiny_net(), device="cpu"), 16)
    with pytest.raises(ValueError, match="runs only with inference.mode=whole"):
        Segmenter({0: whole}, WINDOW, patch_size=16)
    with pytest.raises(ValueError, match="no fold models"):
        Segmenter({}, WINDOW, patch_size=16)
    with pytest.raises(ValueError, match="inference.mode='sideways'"):
        Segmenter({0: toy}, dataclasses.replace(WINDOW, mode="sideways"), patch_size=16)


@pytest.mark.parametrize("config", [WINDOW, WHOLE], ids=["window", "whole"])
def test_from_models_equals_the_predictors_it_builds(case, config):
    """from_models gives the labels of the network predictors built by hand."""
    net = tiny_net()
    built = Segmenter.from_models({0: net}, config)
    assert built.patch_size == net.config.patch_size == 16
    assert built.fingerprints == {0: model_fingerprint(net)}
    assert built.fingerprints[0].startswith("sha256:")
    if config.mode == "window":
        predictor = network_predictor(net, device="cpu", precision="32")
    else:
        volume = network_volume_predictor(net, device="cpu", precision="32")
        predictor = WholeVolumePredictor(volume, 2**net.depth)
    by_hand = Segmenter({0: predictor}, config, patch_size=16)
    ours, theirs = built.predict_case(case), by_hand.predict_case(case)
    np.testing.assert_array_equal(ours.labels, theirs.labels)
    assert ours.et_probability == pytest.approx(theirs.et_probability)


def test_from_models_needs_networks_of_one_patch_size():
    """from_models refuses callables, mixed patch sizes and no models."""
    with pytest.raises(TypeError, match="fold 0: Segmenter.from_models needs MultiTaskNet"):
        Segmenter.from_models({0: toy}, WINDOW)
    with pytest.raises(ValueError, match=r"patch sizes \[16, 32\]"):
        Segmenter.from_models({0: tiny_net(0, 16), 1: tiny_net(1, 32)}, WINDOW)
    with pytest.raises(ValueError, match="no fold models"):
        Segmenter.from_models({}, WINDOW)
