"""Model summary beside Tables 1 and 2, and its command."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from brats_mtl.cli.model_summary import command
from brats_mtl.config import Config
from brats_mtl.model import MultiTaskNet, model_summary, summary_rows
from brats_mtl.presets import tiny_config


def test_paper_rows_read_like_tables_1_and_2():
    rows = summary_rows(Config())
    by_part: dict[str, list] = {}
    for row in rows:
        by_part.setdefault(row.part, []).append(row)
    vae = {r.name: r for r in by_part["VAE decoder"]}
    assert list(vae) == [
        "DownStage3",
        "Mean",
        "Std",
        "Sample",
        "DC4",
        "Up3",
        "DC3",
        "Up2",
        "DC2",
        "Up1",
        "DC1",
        "VAEOut",
    ]
    # Table 1 (as read in docs/design.md section 3): output channels x edge
    table1 = {
        "DownStage3": (100, 16),
        "Mean": (50, 16),
        "Std": (50, 16),
        "Sample": (100, 16),
        "DC4": (224, 16),
        "Up3": (224, 32),
        "DC3": (112, 32),
        "Up2": (112, 64),
        "DC2": (56, 64),
        "Up1": (56, 128),
        "DC1": (28, 128),
        "VAEOut": (4, 128),
    }
    assert {n: (r.output_shape[0], r.output_shape[1]) for n, r in vae.items()} == table1
    assert vae["DownStage3"].input_shape == (224, 16, 16, 16)
    cls = {r.name: r for r in by_part["classifier"]}
    assert list(cls) == ["Bottleneck", "Reduced", "Dense1", "Dropout", "Dense2", "Softmax"]
    assert cls["Bottleneck"].input_shape == (448, 8, 8, 8)
    assert cls["Reduced"].output_shape == (128, 8, 8, 8)
    assert cls["Dense1"].input_shape == (128 * 8**3,) and cls["Dense1"].output_shape == (32,)
    assert cls["Dense2"].output_shape == (2,)
    assert by_part["encoder"][-1].output_shape == (448, 8, 8, 8)
    assert by_part["segmentation decoder"][-1].output_shape == (4, 128, 128, 128)
    # the rows account for every parameter of each part
    with torch.device("meta"):
        net = MultiTaskNet(Config().model)
    parts = {
        "encoder": net.encoder,
        "segmentation decoder": net.seg_decoder,
        "VAE decoder": net.vae_decoder,
        "classifier": net.classifier,
    }
    for part, module in parts.items():
        assert sum(r.params for r in by_part[part]) == sum(p.numel() for p in module.parameters())


def test_text_summary_has_part_totals():
    text = model_summary(tiny_config(48))
    assert "encoder (" in text and "VAE decoder (" in text and "total:" in text
    assert "DC1" in text and "4 x 48^3" in text


def test_command(tmp_path):
    runner = CliRunner()
    tiny = ["--set", "model.widths=[4,8,16,32,64]", "--set", "model.vae_hidden_channels=8"]
    result = runner.invoke(command, [*tiny, "--patch", "32"])
    assert result.exit_code == 0, result.output
    assert "VAEOut" in result.output and "Dense1" in result.output
    bad = runner.invoke(command, ["--patch", "100"])
    assert bad.exit_code == 2 and "96 or 112" in bad.output
    missing = runner.invoke(command, ["--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "nope.yaml" in missing.output


def test_command_takes_the_presets_of_train_and_run():
    from brats_mtl.presets import PRESET_NAMES, preset_config

    option = {p.name: p for p in command.params}["preset"]
    assert tuple(option.type.choices) == PRESET_NAMES and option.default == "paper"
    for name in PRESET_NAMES:
        result = CliRunner().invoke(command, ["--preset", name])
        assert result.exit_code == 0, result.output
        with torch.device("meta"):
            net = MultiTaskNet(preset_config(name).model)
        total = sum(p.numel() for p in net.parameters())
        assert result.output.rstrip().endswith(f"total: {total:,} parameters")
    # --set applies over the preset
    result = CliRunner().invoke(command, ["--preset", "cpu", "--set", "model.patch_size=32"])
    assert result.exit_code == 0 and "4 x 32^3" in result.output
