import pytest

from brats_mtl.config import Config, apply_overrides, load_config, save_config
from brats_mtl.presets import tiny_config


def test_paper_defaults():
    c = Config()
    assert c.model.widths == (28, 56, 112, 224, 448)
    assert c.model.latent_channels == 50
    assert c.model.patch_size == 128
    assert (c.loss.w_l2, c.loss.w_kl, c.loss.w_ce, c.loss.w_dice) == (0.1, 0.1, 0.1, 1.0)
    assert (c.train.batch_size, c.train.lr, c.train.weight_decay) == (2, 1e-4, 1e-5)


def test_overrides_and_round_trip(tmp_path):
    c = apply_overrides(
        tiny_config(),
        ["model.widths=[2,4,8,16,32]", "train.max_steps=7", "inference.channels_last=false"],
    )
    assert c.model.widths == (2, 4, 8, 16, 32)
    assert c.train.max_steps == 7
    assert c.inference.channels_last is False
    save_config(c, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == c


@pytest.mark.parametrize("bad", ["model.nope=1", "train.lr=abc", "nosection.x=1", "train.lr"])
def test_bad_overrides(bad):
    with pytest.raises(ValueError):
        apply_overrides(Config(), [bad])


def test_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  widthz: [1]\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(p)


def test_file_merges_over_base(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  max_steps: 9\n")
    c = load_config(p, ["train.lr=0.5"], base=tiny_config(16))
    assert c.model == tiny_config(16).model
    assert (c.train.max_steps, c.train.lr) == (9, 0.5)


def test_atomic_output_has_usual_permissions(tmp_path):
    import os

    from brats_mtl.atomic import write_text_atomic

    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "x.txt", "a")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(FileExistsError):
        write_text_atomic(path, "b")
    assert path.read_text() == "a"


def test_invalid_yaml_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match=r"config\.yaml is not valid YAML"):
        load_config(path)
