"""Sliding windows, mirror TTA, whole-volume mode, ensemble and ET suppression.

Toy predictors with known outputs: a pointwise function of the four channels (so any
correct tiling, blending and flipping reproduces the whole-volume result exactly) and an
asymmetric one (a shift), which a wrong flip-back would betray.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from brats_mtl.conventions import ED, ET, NCR_NET, REGIONS
from brats_mtl.inference import (
    FoldEnsemble,
    majority_vote,
    mirror_axes,
    network_predictor,
    network_volume_predictor,
    predict_sliding_window,
    predict_whole_volume,
    resolve_precision,
    select_et_min_voxels,
    sliding_window_boxes,
    suppress_et,
    window_starts,
)
from brats_mtl.model import MultiTaskNet
from brats_mtl.presets import tiny_config

_MIX = torch.tensor(
    [[1.0, -0.5, 0.3, 0.2], [0.4, 1.2, -0.7, 0.1], [-0.3, 0.2, 0.9, -0.6], [0.5, 0.1, -0.2, 1.1]]
)


def pointwise_logits(x: torch.Tensor) -> torch.Tensor:
    """(B, 4, ...) -> (B, 4, ...): a fixed per-voxel linear map of the channels."""
    return torch.einsum("kc,bc...->bk...", _MIX, x) + torch.tensor([0.1, -0.2, 0.3, 0.0]).view(
        1, 4, *([1] * (x.dim() - 2))
    )


def pointwise_predictor(x: torch.Tensor):
    """Flip-equivariant toy: softmax of per-voxel logits; ET = sigmoid of the mean of t1."""
    return torch.softmax(pointwise_logits(x), 1), torch.sigmoid(x[:, 0].mean(dim=(1, 2, 3)))


def shifted_predictor(x: torch.Tensor):
    """Asymmetric toy: the output at voxel i reads the input at i - 1 along X and Y."""
    shifted = torch.roll(x, shifts=(1, 1), dims=(2, 3))
    return torch.softmax(pointwise_logits(shifted), 1), torch.sigmoid(
        shifted[:, 1, :4].mean(dim=(1, 2, 3))
    )


def _image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(4, *shape)).astype(np.float32)


# --- windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "patch", "overlap", "expected"),
    [
        (5, 8, 0.5, [0]),
        (8, 8, 0.5, [0]),
        (12, 8, 0.5, [0, 4]),
        (20, 8, 0.5, [0, 4, 8, 12]),
        (20, 8, 0.0, [0, 6, 12]),
        (140, 128, 0.5, [0, 12]),
        (170, 128, 0.5, [0, 42]),
    ],
)
def test_window_starts_cover_evenly(size, patch, overlap, expected):
    starts = window_starts(size, patch, overlap)
    assert starts == expected
    covered = np.zeros(max(size, patch), bool)
    for s in starts:
        covered[s : s + patch] = True
        assert s + patch <= max(size, patch)
    assert covered.all()
    steps = np.diff(starts)
    assert (steps <= patch * (1 - overlap) + 1).all()


def test_window_starts_reject_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        window_starts(10, 4, 1.0)


def test_boxes_snap_to_the_bottleneck_grid():
    boxes = sliding_window_boxes((48, 32, 16), 16, 0.5, multiple=16)
    starts = sorted({b[0].start for b in boxes})
    assert starts == [0, 16, 32]
    assert all(b[i].start % 16 == 0 for b in boxes for i in range(3))


def test_mirror_axes():
    assert mirror_axes(0) == [()]
    assert mirror_axes(4) == [(), (0,), (1,), (2,)]
    eight = mirror_axes(8)
    assert len(eight) == len(set(eight)) == 8 and eight[0] == ()
    with pytest.raises(ValueError, match="0 \\(off\\), 4"):
        mirror_axes(2)


# --- exactness with a pointwise predictor ------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "overlap", "tta", "batch"),
    [
        ((5, 7, 6), 0.5, 4, 2),  # smaller than a window on every axis
        ((8, 8, 8), 0.5, 0, 1),  # exactly one window
        ((20, 13, 9), 0.5, 8, 3),  # several windows, borders on every axis
        ((17, 8, 30), 0.0, 4, 5),  # no overlap, one axis exactly P
        ((11, 19, 5), 0.25, 4, 2),  # one axis shorter than P, the others not
    ],
)
def test_pointwise_predictor_is_reproduced_exactly(shape, overlap, tta, batch):
    image = _image(shape)
    result = predict_sliding_window(
        image, pointwise_predictor, patch_size=8, overlap=overlap, tta=tta, batch_size=batch
    )
    expected = torch.softmax(pointwise_logits(torch.from_numpy(image)[None]), 1)[0].numpy()
    assert result.probs.shape == (4, *shape)
    assert result.probs.dtype == np.float32
    np.testing.assert_allclose(result.probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.probs.sum(0), 1.0, atol=1e-5)
    assert len(result.window_et_probabilities) == len(result.windows)


def test_a_lone_last_item_is_sent_as_a_pair_and_progress_counts_items():
    image = _image((12, 8, 8))  # 2 windows of 8^3 at overlap 0.5, x 4 mirrors = 8 items
    sizes: list[int] = []
    calls: list[tuple[int, int]] = []

    def recording_predictor(x):
        sizes.append(x.shape[0])
        return pointwise_predictor(x)

    result = predict_sliding_window(
        image,
        recording_predictor,
        patch_size=8,
        overlap=0.5,
        tta=4,
        batch_size=3,
        progress=lambda done, total: calls.append((done, total)),
    )
    n_items = 4 * len(result.windows)
    assert n_items % 3 == 2  # the last batch holds two items: sent as they are
    assert sizes == [3] * (n_items // 3) + [2]
    assert calls == [(3 * (i + 1), n_items) for i in range(n_items // 3)] + [(n_items, n_items)]

    sizes.clear()
    one = predict_sliding_window(
        image, recording_predictor, patch_size=8, overlap=0.5, tta=4, batch_size=7
    )
    assert sizes == [7, 2]  # 8 items: the lone eighth is sent with its copy
    np.testing.assert_array_equal(one.probs, result.probs)
    np.testing.assert_array_equal(one.window_et_probabilities, result.window_et_probabilities)
    sizes.clear()
    predict_sliding_window(image, recording_predictor, patch_size=8, overlap=0.5, tta=4,
                           batch_size=1)  # fmt: skip
    assert sizes == [1] * n_items  # batch size 1 asked for: never padded


def test_case_et_probability_is_max_over_windows_of_tta_mean():
    image = np.zeros((4, 24, 8, 8), np.float32)
    image[0, 18:, :, :] = 3.0  # only the last window sees bright t1
    result = predict_sliding_window(image, pointwise_predictor, patch_size=8, overlap=0.5, tta=4)
    assert result.windows[0][0] == slice(0, 8)
    expected = [torch.sigmoid(torch.tensor(image[0][b].mean())).item() for b in result.windows]
    np.testing.assert_allclose(result.window_et_probabilities, expected, rtol=1e-6)
    assert result.et_probability == pytest.approx(max(expected))
    assert result.et_probability > 0.8 > result.window_et_probabilities[0]


# --- flip-back with an asymmetric predictor ----------------------------------------------


def _explicit_flip(t: torch.Tensor, axes) -> torch.Tensor:
    # written out here so the test does not reuse the code under test
    dims = [t.dim() - 3 + a for a in axes]
    return torch.flip(t, dims) if dims else t


def test_flipped_outputs_are_flipped_back_single_window():
    image = _image((8, 8, 8), seed=1)
    x = torch.from_numpy(image)[None]
    expected = (
        sum(
            _explicit_flip(shifted_predictor(_explicit_flip(x, axes))[0], axes)
            for axes in [(), (0,), (1,), (2,)]
        )
        / 4
    )
    result = predict_sliding_window(image, shifted_predictor, patch_size=8, tta=4)
    np.testing.assert_allclose(result.probs, expected[0].numpy(), rtol=1e-5, atol=1e-6)
    # a predictor that is not flip-equivariant gives something else without TTA
    plain = predict_sliding_window(image, shifted_predictor, patch_size=8, tta=0)
    assert np.abs(plain.probs - result.probs).max() > 1e-2


@pytest.mark.parametrize("tta", [4, 8])
def test_tta_is_the_mean_of_mirror_conjugated_predictors(tta):
    """Blending is linear: TTA over windows = mean over flips of windowed flip(f(flip))."""
    image = _image((19, 12, 10), seed=2)
    flips = {
        4: [(), (0,), (1,), (2,)],
        8: [c for r in range(4) for c in itertools.combinations((0, 1, 2), r)],
    }[tta]
    result = predict_sliding_window(image, shifted_predictor, patch_size=8, tta=tta, batch_size=3)
    parts = []
    for axes in flips:

        def conjugated(x, axes=axes):
            seg, et = shifted_predictor(_explicit_flip(x, axes))
            return _explicit_flip(seg, axes), et

        parts.append(predict_sliding_window(image, conjugated, patch_size=8, tta=0))
    np.testing.assert_allclose(
        result.probs, np.mean([p.probs for p in parts], axis=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        result.window_et_probabilities,
        np.mean([p.window_et_probabilities for p in parts], axis=0),
        rtol=1e-6,
    )


# --- whole-volume mode ------------------------------------------------------------------


def _window_mean_t1(x: torch.Tensor, boxes):
    return torch.stack([x[0, 0][b].mean() for b in boxes]).sigmoid()


def pointwise_volume_predictor(x: torch.Tensor, boxes):
    return torch.softmax(pointwise_logits(x), 1), _window_mean_t1(x, boxes)


@pytest.mark.parametrize("tta", [0, 4, 8])
def test_whole_volume_mode_matches_windows_for_a_pointwise_predictor(tta):
    image = _image((48, 32, 9), seed=3)
    image[0, 36:] += 2.0  # asymmetric content: a wrong window mirror changes the ET values
    windowed = predict_sliding_window(
        image, pointwise_predictor, patch_size=16, overlap=0.0, tta=tta
    )
    whole = predict_whole_volume(
        image, pointwise_volume_predictor, patch_size=16, multiple=16, overlap=0.0, tta=tta
    )
    np.testing.assert_allclose(whole.probs, windowed.probs, rtol=1e-5, atol=1e-6)
    # windows: Z padded to 16 -> starts 0/16/32 x 0/16 x 0 in both modes
    assert [b for b in whole.windows] == [b for b in windowed.windows]
    np.testing.assert_allclose(
        whole.window_et_probabilities, windowed.window_et_probabilities, rtol=1e-5
    )


# --- the network wrappers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_net() -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(tiny_config(patch_size=16).model).eval()


def test_network_predictor_gives_softmax_outputs(tiny_net):
    x = torch.randn(2, 4, 16, 16, 16)
    seg, et = network_predictor(tiny_net, channels_last=False)(x)
    with torch.no_grad():
        out = tiny_net(x)
    torch.testing.assert_close(seg, torch.softmax(out.seg_logits, 1))
    torch.testing.assert_close(et, torch.softmax(out.cls_logits, 1)[:, 1])
    seg_cl, et_cl = network_predictor(tiny_net, channels_last=True)(x)
    torch.testing.assert_close(seg_cl, seg, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(et_cl, et, rtol=1e-4, atol=1e-5)


def test_network_predictor_feeds_a_cast_model_its_own_dtype(tiny_net):
    """A model cast to bfloat16 (a Lightning ``bf16-true`` trainer's, in validation)."""
    import copy

    x = torch.randn(2, 4, 16, 16, 16)
    seg, _ = network_predictor(tiny_net, channels_last=False)(x)
    seg_bf16, et_bf16 = network_predictor(
        copy.deepcopy(tiny_net).to(torch.bfloat16), channels_last=False
    )(x)
    assert seg_bf16.dtype == torch.float32 and et_bf16.shape == (2,)
    torch.testing.assert_close(seg_bf16, seg, atol=0.05, rtol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_volume_predictor_on_one_patch_equals_the_forward_pass(tiny_net, channels_last):
    """Also checks the memory-lean decoder against the model's own forward."""
    x = torch.randn(1, 4, 16, 16, 16)
    seg, et = network_predictor(tiny_net, channels_last=False)(x)
    box = (slice(0, 16),) * 3
    predictor = network_volume_predictor(tiny_net, channels_last=channels_last)
    seg_v, et_v = predictor(x, [box, box])
    torch.testing.assert_close(seg_v, seg, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(et_v, et.repeat(2), rtol=1e-4, atol=1e-5)


def test_volume_predictor_reads_the_bottleneck_under_each_window(tiny_net):
    x = torch.randn(1, 4, 32, 16, 16)
    boxes = [
        (slice(0, 16), slice(0, 16), slice(0, 16)),
        (slice(16, 32), slice(0, 16), slice(0, 16)),
    ]
    _, et = network_volume_predictor(tiny_net, channels_last=False)(x, boxes)
    with torch.no_grad():
        bottleneck = tiny_net.encode(x)[-1]  # (1, 64, 2, 1, 1)
        expected = torch.softmax(tiny_net.classifier(bottleneck.split(1, dim=2)[1]), 1)[:, 1]
    torch.testing.assert_close(et[1:], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="bottleneck grid"):
        network_volume_predictor(tiny_net, channels_last=False)(
            x, [(slice(8, 24), slice(0, 16), slice(0, 16))]
        )


def test_network_sliding_window_runs_with_tta(tiny_net):
    image = _image((20, 18, 16), seed=4)
    result = predict_sliding_window(
        image, network_predictor(tiny_net), patch_size=16, overlap=0.5, tta=4, batch_size=4
    )
    assert result.probs.shape == (4, 20, 18, 16)
    np.testing.assert_allclose(result.probs.sum(0), 1.0, atol=1e-5)
    assert 0.0 <= result.et_probability <= 1.0


# --- ensemble ---------------------------------------------------------------------------


def test_majority_vote_and_tie_break_on_hand_made_maps():
    # four voxels, three folds: clear majority, three-way tie, two-way tie, unanimity
    class_maps = np.array([[0, 1, 2, 3], [0, 2, 2, 3], [1, 3, 1, 3]])[:, :, None, None]
    mean_probs = np.zeros((4, 4, 1, 1), np.float32)
    mean_probs[:, 0, 0, 0] = [0.2, 0.7, 0.05, 0.05]  # 0 wins 2-1 despite class 1's prob
    mean_probs[:, 1, 0, 0] = [0.1, 0.2, 0.3, 0.4]  # 1-1-1 tie among 1, 2, 3 -> 3
    mean_probs[:, 2, 0, 0] = [0.0, 0.6, 0.4, 0.0]  # 2 wins 2-1 although 1 is likelier
    mean_probs[:, 3, 0, 0] = [0.4, 0.3, 0.2, 0.1]  # 3 unanimous although least likely
    assert majority_vote(class_maps, mean_probs).ravel().tolist() == [0, 3, 2, 3]
    # two folds disagree: the tied class with the higher mean probability wins
    two = np.array([[1, 2], [2, 1]])[:, :, None, None]
    probs = np.zeros((4, 2, 1, 1), np.float32)
    probs[:, 0, 0, 0] = [0.0, 0.45, 0.55, 0.0]
    probs[:, 1, 0, 0] = [0.0, 0.55, 0.45, 0.0]
    assert majority_vote(two, probs).ravel().tolist() == [2, 1]


def test_fold_ensemble_vote_mean_and_et_probability():
    def probs(*columns):
        return np.array(columns, np.float32).T[:, :, None, None]  # (4, n, 1, 1)

    ens = FoldEnsemble()
    ens.add(probs([0.1, 0.5, 0.0, 0.4], [0.6, 0.0, 0.4, 0.0]), 0.2)
    ens.add(probs([0.1, 0.45, 0.0, 0.45], [0.0, 0.0, 0.55, 0.45]), 0.4)
    ens.add(probs([0.0, 0.0, 0.1, 0.9], [0.0, 0.0, 0.45, 0.55]), float("nan"))
    # voxel 0: votes 1, 1, 3 -> NCR/NET (1); mean probs favour ET
    # voxel 1: votes 0, 2, 3 -> tie, mean probs (0.2, 0, 0.467, 0.333) -> ED (2)
    assert ens.labels("vote").ravel().tolist() == [NCR_NET, ED]
    assert ens.labels("mean").ravel().tolist() == [ET, ED]
    assert ens.et_probability() == pytest.approx(0.3)  # NaN fold left out
    with pytest.raises(ValueError, match="ensemble"):
        ens.labels("median")


# --- ET suppression ---------------------------------------------------------------------


def _tumor(n_et: int) -> np.ndarray:
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:18, 2:18, 2:18] = ED
    labels[5:15, 5:15, 5:15] = NCR_NET
    labels.reshape(-1)[np.flatnonzero(labels.reshape(-1) == NCR_NET)[:n_et]] = ET
    return labels


@pytest.mark.parametrize(
    ("probability", "n_et", "fires"),
    [
        (0.2, 100, True),  # both conditions
        (0.7, 100, False),  # classifier says ET
        (0.2, 600, False),  # too many ET voxels
        (0.5, 100, False),  # probability at the threshold is not "below"
        (0.2, 500, False),  # volume at the threshold is not "below"
        (float("nan"), 100, False),  # no classifier output
        (0.2, 0, False),  # nothing to relabel
    ],
)
def test_et_suppression_fires_only_when_both_conditions_hold(probability, n_et, fires):
    labels = _tumor(n_et)
    out, suppressed = suppress_et(labels, probability, probability_threshold=0.5, min_voxels=500)
    assert suppressed is fires
    for region in ("WT", "TC"):  # never change
        np.testing.assert_array_equal(
            np.isin(out, REGIONS[region]), np.isin(labels, REGIONS[region])
        )
    assert np.count_nonzero(out == ET) == (0 if fires else n_et)
    assert np.count_nonzero(labels == ET) == n_et  # the input is not modified


def test_threshold_selection_on_a_hand_made_example():
    empty = np.zeros((10, 10, 10), np.uint8)

    def with_et(n):
        labels = empty.copy()
        labels.reshape(-1)[:n] = ET
        return labels

    cases = [
        (with_et(50), 0.2, empty),  # false positive ET: suppression helps from 51 voxels
        (with_et(300), 0.3, with_et(300)),  # classifier wrong, ET right: hurts from 301
        (with_et(700), 0.1, empty),  # large false positive: helps from 701
        (with_et(40), 0.9, empty),  # classifier says ET: never suppressed
    ]
    best, table = select_et_min_voxels(cases, [0, 100, 500, 1000], probability_threshold=0.5)
    assert table["et_min_voxels"].tolist() == [0, 100, 500, 1000]
    np.testing.assert_allclose(table["mean_et_dice"], [1 / 4, 2 / 4, 1 / 4, 2 / 4])
    assert table["n_suppressed"].tolist() == [0, 1, 2, 3]
    assert best == 100  # tie with 1000: the smaller threshold changes less
    best, _ = select_et_min_voxels(cases[:1] + cases[2:], [0, 100, 1000])
    assert best == 1000


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_takes_bf16_only_on_a_cpu_with_amx(monkeypatch, amx):
    from brats_mtl.inference import network

    monkeypatch.setattr(network, "cpu_has_amx_bf16", lambda: amx)
    assert resolve_precision("auto", "cpu") == ("bf16" if amx else "32")
    assert resolve_precision("32", "cpu") == "32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_precision("auto", "cuda")


def test_unknown_precision_names_the_accepted_values():
    with pytest.raises(ValueError, match=r"'16'.*auto.*32.*bf16"):
        resolve_precision("16", "cpu")


def test_amx_probe_answers_a_bool():
    from brats_mtl.inference.network import cpu_has_amx_bf16

    assert isinstance(cpu_has_amx_bf16(), bool)
