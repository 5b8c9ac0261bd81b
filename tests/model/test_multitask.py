"""The multi-task network: shapes, parameter counts, gradients reaching each branch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from brats_mtl.config import Config, LossConfig, ModelConfig
from brats_mtl.losses import multitask_loss
from brats_mtl.model import MultiTaskNet, MultiTaskOutput, nearest_valid_sizes
from brats_mtl.presets import tiny_config

PAPER = ModelConfig()
TINY = tiny_config().model  # widths (4, 8, 16, 32, 64), patch 32


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_meta_net() -> MultiTaskNet:
    with torch.device("meta"):
        return MultiTaskNet(PAPER)


def _tiny_batch(seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 4, 32, 32, 32, generator=g)
    class_targets = torch.randint(0, 4, (batch, 32, 32, 32), generator=g)
    et_targets = (class_targets == 3).flatten(1).any(1).long()
    return image, class_targets, et_targets


# --- shapes -----------------------------------------------------------------------------


def test_paper_shapes_on_meta(paper_meta_net):
    x = torch.empty(2, 4, 128, 128, 128, device="meta")
    out = paper_meta_net(x, with_vae=True)
    assert out.seg_logits.shape == (2, 4, 128, 128, 128)
    assert out.cls_logits.shape == (2, 2)
    assert out.recon.shape == (2, 4, 128, 128, 128)
    assert (
        out.mu.shape == out.logvar.shape == (2, 50, 16, 16, 16)
    )  # Table 1 read as docs/design.md section 3
    features = paper_meta_net.encode(x)
    assert [tuple(f.shape[1:]) for f in features] == [
        (28, 128, 128, 128),
        (56, 64, 64, 64),
        (112, 32, 32, 32),
        (224, 16, 16, 16),
        (448, 8, 8, 8),
    ]


def test_output_record_has_the_same_fields_in_every_mode():
    net = MultiTaskNet(TINY)
    x = torch.randn(2, 4, 32, 32, 32)  # batch 2: PyTorch picks oneDNN, much faster here
    fields = [f.name for f in dataclasses.fields(MultiTaskOutput)]
    assert fields == ["seg_logits", "cls_logits", "recon", "mu", "logvar"]
    for train in (True, False):
        net.train(train)
        off = net(x)
        on = net(x, with_vae=True)
        assert off.recon is None and off.mu is None and off.logvar is None
        assert on.recon.shape == x.shape and on.mu.shape == (2, 4, 4, 4, 4)
        assert type(off) is type(on) is MultiTaskOutput


@pytest.mark.parametrize("widths", [(4, 8), (4, 8, 16), (8, 8, 8, 8, 8, 8)])
def test_other_depths_and_patch_sizes(widths):
    depth = len(widths) - 1
    patch = max(2**depth, 16)
    config = dataclasses.replace(TINY, widths=widths, patch_size=patch)
    net = MultiTaskNet(config)
    out = net(torch.randn(2, 4, patch, patch, patch), with_vae=True)
    assert out.seg_logits.shape == (2, 4, patch, patch, patch)
    assert out.recon.shape == (2, 4, patch, patch, patch)
    assert out.mu.shape == (2, 4) + (patch // 2 ** (depth - 1),) * 3
    assert out.cls_logits.shape == (2, 2)


def test_forward_segmentation_runs_on_any_multiple_of_16():
    net = MultiTaskNet(TINY).eval()
    x = torch.randn(2, 4, 48, 32, 16)
    with torch.inference_mode():
        seg = net.forward_segmentation(x)
        assert seg.shape == (2, 4, 48, 32, 16)
        # at the patch size it is exactly the full forward's segmentation
        patch = torch.randn(2, 4, 32, 32, 32)
        torch.testing.assert_close(net.forward_segmentation(patch), net(patch).seg_logits)


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    net = MultiTaskNet(TINY).eval()
    x = torch.randn(2, 4, 32, 32, 32)
    with torch.inference_mode():
        ref = net(x, with_vae=True)
        net_cl = net.to(memory_format=torch.channels_last_3d)
        out = net_cl(x.to(memory_format=torch.channels_last_3d), with_vae=True)
    for name in ("seg_logits", "cls_logits", "recon", "mu"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_lean_decode_equals_the_plain_decode(channels_last):
    """The memory-lean decode (whole-volume inference) is the decoder's own arithmetic."""
    torch.manual_seed(0)
    net = MultiTaskNet(TINY).eval()
    x = torch.randn(1, 4, 48, 32, 16)
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        plain = net.seg_decoder(net.encode(x))
        features = net.encode(x)
        lean = net.seg_decoder(features, lean=True)
    assert features == []  # consumed, so that each skip can be freed
    assert lean.shape == plain.shape == (1, 4, 48, 32, 16)
    # the same operations on the same values: equal up to the convolutions' summation order
    torch.testing.assert_close(lean, plain, rtol=1e-5, atol=1e-6)
    if not channels_last:
        assert torch.equal(lean, plain)


def test_lean_decode_gives_the_same_gradients():
    torch.manual_seed(0)
    net = MultiTaskNet(TINY)
    x = torch.randn(1, 4, 32, 32, 32)
    grads = []
    for lean in (False, True):
        net.zero_grad()
        net.seg_decoder(net.encode(x), lean=lean).square().mean().backward()
        grads.append([p.grad.clone() for p in net.seg_decoder.parameters()])
    for plain, lean in zip(*grads, strict=True):
        torch.testing.assert_close(lean, plain)


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "expected"), [(100, "96 or 112"), (130, "128 or 144"), (8, "use 16$")]
)
def test_invalid_patch_size_names_nearest_valid_sizes(patch, expected):
    with pytest.raises(ValueError, match=rf"model.patch_size={patch} .*multiple of 16.*{expected}"):
        MultiTaskNet(dataclasses.replace(PAPER, patch_size=patch))


def test_nearest_valid_sizes():
    assert nearest_valid_sizes(100, 16) == [96, 112]
    assert nearest_valid_sizes(128, 16) == [128]
    assert nearest_valid_sizes(3, 16) == [16]


def test_bad_channel_counts_are_rejected():
    with pytest.raises(ValueError, match="model.widths.*norm_groups=4"):
        MultiTaskNet(dataclasses.replace(TINY, widths=(4, 8, 18, 32, 64)))
    with pytest.raises(ValueError, match="model.vae_hidden_channels"):
        MultiTaskNet(dataclasses.replace(TINY, vae_hidden_channels=10))
    with pytest.raises(ValueError, match="at least two stages"):
        MultiTaskNet(dataclasses.replace(TINY, widths=(4,)))


def test_wrong_input_sizes_are_rejected():
    net = MultiTaskNet(TINY)
    with pytest.raises(ValueError, match=r"forward needs \(32, 32, 32\).*forward_segmentation"):
        net(torch.zeros(1, 4, 48, 32, 32))
    with pytest.raises(ValueError, match=r"expected \(B, 4, X, Y, Z\)"):
        net(torch.zeros(1, 3, 32, 32, 32))
    with pytest.raises(ValueError, match=r"multiple of 16.*40 -> 32 or 48"):
        net.forward_segmentation(torch.zeros(1, 4, 40, 32, 32))


# --- parameters -------------------------------------------------------------------------


def _hand_counts(c: ModelConfig) -> dict[str, int]:
    """Parameter counts from the layer formulas (conv k^3 ci co [+ co], GN 2c, linear)."""
    w, n_in = c.widths, c.in_channels

    def conv(ci, co, k, bias=True):
        return k**3 * ci * co + (co if bias else 0)

    def conv_gn(ci, co, k=3):  # U-Net block: bias-free conv + GroupNorm
        return conv(ci, co, k, bias=False) + 2 * co

    encoder = sum(
        conv_gn(ci, co) + conv_gn(co, co) for ci, co in zip((n_in, *w[:-1]), w, strict=True)
    )
    seg = sum(
        conv(w[i + 1], w[i], 2) + conv_gn(2 * w[i], w[i]) + conv_gn(w[i], w[i])
        for i in range(len(w) - 1)
    ) + conv(w[0], c.n_classes, 1)
    h, lat, top = c.vae_hidden_channels, c.latent_channels, len(w) - 2
    vae = conv(w[top], h, 1) + 2 * conv(h, lat, 1) + conv(lat, h, 1)
    vae += 2 * h + conv(h, w[top], 3)  # DC4
    vae += sum(conv(w[k], w[k], 1) + 2 * w[k] + conv(w[k], w[k - 1], 3) for k in range(top, 0, -1))
    vae += conv(w[0], n_in, 1)
    cc, s = c.classifier_channels, c.patch_size // 2 ** (len(w) - 1)
    cls = conv_gn(w[-1], cc[0], 1) + conv_gn(cc[0], cc[1], 1)
    cls += cc[1] * s**3 * c.classifier_hidden + c.classifier_hidden + c.classifier_hidden * 2 + 2
    return {"encoder": encoder, "seg_decoder": seg, "vae_decoder": vae, "classifier": cls}


def test_paper_parameter_counts(paper_meta_net):
    counts = {name: _params(m) for name, m in paper_meta_net.named_children()}
    pinned = {
        "encoder": 10_823_344,
        "seg_decoder": 6_466_296,
        "vae_decoder": 1_599_324,
        "classifier": 2_245_474,
    }
    assert counts == pinned == _hand_counts(PAPER)
    assert _params(paper_meta_net) == 21_134_438
    # Table 2: Dense1 maps 128 x 8^3 features to 32
    assert paper_meta_net.classifier.dense1.in_features == 128 * 8**3


def test_tiny_parameter_counts_follow_the_formulas():
    net = MultiTaskNet(TINY)
    assert {name: _params(m) for name, m in net.named_children()} == _hand_counts(TINY)


def test_classifier_kernel_size_comes_from_the_config():
    three = dataclasses.replace(TINY, classifier_kernel_size=3)
    net = MultiTaskNet(three)
    cc = TINY.classifier_channels
    extra = (TINY.widths[-1] * cc[0] + cc[0] * cc[1]) * (27 - 1)  # conv weights only
    assert _params(net.classifier) == _params(MultiTaskNet(TINY).classifier) + extra
    with pytest.raises(ValueError, match="classifier_kernel_size=2"):
        MultiTaskNet(dataclasses.replace(TINY, classifier_kernel_size=2))


def test_vae_has_its_own_weights():
    net = MultiTaskNet(TINY)
    seg = {id(p) for p in net.seg_decoder.parameters()}
    assert seg.isdisjoint(id(p) for p in net.vae_decoder.parameters())


# --- gradients --------------------------------------------------------------------------


def test_backward_reaches_every_parameter_in_train_mode():
    torch.manual_seed(0)
    net = MultiTaskNet(TINY).train()
    image, class_targets, et_targets = _tiny_batch()
    out = net(image, with_vae=True)
    terms = multitask_loss(
        out, image, class_targets, et_targets, torch.tensor([True, True]), LossConfig()
    )
    terms["loss"].backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_unlabeled_batch_trains_only_encoder_and_vae():
    torch.manual_seed(0)
    net = MultiTaskNet(TINY).train()
    image, _, _ = _tiny_batch()
    garbage = torch.full((2, 32, 32, 32), 255)  # unlabeled targets are never read
    out = net(image, with_vae=True)
    terms = multitask_loss(
        out, image, garbage, torch.tensor([-1, -1]), torch.tensor([False, False]), LossConfig()
    )
    assert terms["dice"].item() == 0.0 and terms["ce"].item() == 0.0
    assert terms["l2"].item() > 0 and terms["kl"].item() > 0
    terms["loss"].backward()
    for part in (net.seg_decoder, net.classifier, net.encoder.stages[-1]):
        for p in part.parameters():
            assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p.grad))
    # the bottleneck stage feeds only the segmentation decoder and the classifier; every
    # stage above it and every VAE parameter receive a gradient
    for part in (*net.encoder.stages[:-1], net.vae_decoder):
        for name, p in part.named_parameters():
            assert p.grad is not None and p.grad.any() and torch.isfinite(p.grad).all(), name


def test_vae_sampling_is_seeded_and_eval_uses_the_mean():
    net = MultiTaskNet(TINY)
    x = torch.randn(2, 4, 32, 32, 32)
    net.train()
    a = net(x, with_vae=True, generator=torch.Generator().manual_seed(1)).recon
    b = net(x, with_vae=True, generator=torch.Generator().manual_seed(1)).recon
    c = net(x, with_vae=True, generator=torch.Generator().manual_seed(2)).recon
    assert torch.equal(a, b) and not torch.equal(a, c)
    net.eval()
    with torch.no_grad():
        d = net(x, with_vae=True, generator=torch.Generator().manual_seed(1)).recon
        e = net(x, with_vae=True, generator=torch.Generator().manual_seed(2)).recon
        # z = mu: the same as decoding the mean by hand
        features = net.encode(x)
        mu = net.vae_decoder.mean(net.vae_decoder.down_stage(features[-2]))
        h = net.vae_decoder.sample(mu)
        for block in net.vae_decoder.blocks.values():
            h = block(h)
        manual = net.vae_decoder.out(h)
    assert torch.equal(d, e)
    torch.testing.assert_close(d, manual)


@pytest.mark.slow
def test_paper_size_forward_on_cpu():
    """A real forward of the paper's network on one 128^3 patch (about 10-20 s on CPU)."""
    torch.manual_seed(0)
    net = MultiTaskNet(Config().model).eval().to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 4, 128, 128, 128).to(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        out = net(x, with_vae=True)
    assert out.seg_logits.shape == (1, 4, 128, 128, 128)
    assert out.recon.shape == (1, 4, 128, 128, 128)
    assert torch.isfinite(out.seg_logits).all() and torch.isfinite(out.cls_logits).all()
