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


# --- option vocabularies and ranges (check_config) -------------------------------------


def _literal_keys():
    """Every setting typed Literal[...], as section.name."""
    import dataclasses

    from brats_mtl.config import choices

    keys = []
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            key = f"{section.name}.{f.name}"
            try:
                choices(key)
            except ValueError:
                continue
            keys.append(key)
    return keys


def test_the_option_vocabularies_are_literal_fields():
    assert set(_literal_keys()) == {
        "model.classifier_kernel_size",
        "train.patch_sampling",
        "train.precision",
        "train.accelerator",
        "train.labels",
        "inference.tta",
        "inference.ensemble",
        "inference.mode",
        "inference.precision",
        "inference.uncertainty",
    }


def test_the_modules_read_their_vocabularies_from_the_config():
    from brats_mtl.config import choices
    from brats_mtl.inference.ensemble import ENSEMBLE_METHODS
    from brats_mtl.inference.network import PRECISIONS
    from brats_mtl.inference.segmenter import MODES
    from brats_mtl.inference.tta import TTA_CHOICES
    from brats_mtl.inference.uncertainty import UNCERTAINTY_ESTIMATORS
    from brats_mtl.training.datasets import PATCH_SAMPLING

    assert ENSEMBLE_METHODS == choices("inference.ensemble") == ("vote", "mean")
    assert PRECISIONS == choices("inference.precision") == ("auto", "32", "bf16")
    assert MODES == choices("inference.mode") == ("window", "whole")
    assert TTA_CHOICES == choices("inference.tta") == (0, 4, 8)
    assert UNCERTAINTY_ESTIMATORS == ("none", "entropy", "disagreement")
    assert PATCH_SAMPLING == choices("train.patch_sampling") == ("grid", "random")
    assert choices("model.classifier_kernel_size") == (1, 3)
    with pytest.raises(ValueError, match="'train.lr' is not a setting with a fixed set"):
        choices("train.lr")
    with pytest.raises(ValueError, match="no.such"):
        choices("no.such")


def test_the_label_schemes_are_those_of_tasks():
    from brats_mtl.config import choices
    from brats_mtl.conventions import LABEL_CONVENTIONS
    from brats_mtl.tasks import LABEL_SCHEMES, get_label_scheme

    named = set(choices("train.labels")) - {None}
    assert named == set(LABEL_SCHEMES) | set(LABEL_CONVENTIONS)
    assert None in choices("train.labels")  # inferred from the data
    for name in named:
        get_label_scheme(name)  # each one is a scheme tasks resolves


def test_the_lightning_settings_are_lightnings_own():
    import typing

    from lightning.fabric.plugins.precision.precision import (
        _PRECISION_INPUT_STR,
        _PRECISION_INPUT_STR_ALIAS,
    )
    from lightning.pytorch.accelerators import AcceleratorRegistry

    from brats_mtl.config import choices

    lightning = typing.get_args(_PRECISION_INPUT_STR) + typing.get_args(_PRECISION_INPUT_STR_ALIAS)
    assert set(choices("train.precision")) == set(lightning)
    accelerators = set(AcceleratorRegistry.available_accelerators()) | {"auto", "gpu"}
    assert set(choices("train.accelerator")) == accelerators


@pytest.mark.parametrize("key", _literal_keys())
def test_every_literal_field_refuses_a_bad_value_naming_key_value_and_choices(key, tmp_path):
    from brats_mtl.config import choices

    allowed = ", ".join(map(repr, choices(key)))
    expected = f"{key}='nope' is not one of {allowed}"
    with pytest.raises(ValueError) as error:
        apply_overrides(Config(), [f"{key}=nope"])
    assert str(error.value).startswith(expected), str(error.value)
    # the same from a file (named) and from Python
    section, name = key.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {name}: nope\n")
    with pytest.raises(ValueError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: {expected}"), str(error.value)
    import dataclasses

    with pytest.raises(ValueError, match=f"^{key}='nope' is not one of"):
        dataclasses.replace(getattr(Config(), section), **{name: "nope"})
    # each accepted value passes, spelled as on the command line
    for value in choices(key):
        written = "null" if value is None else value
        config = apply_overrides(Config(), [f"{key}={written}"])
        assert getattr(getattr(config, section), name) == value


def test_the_message_says_what_the_values_mean():
    with pytest.raises(ValueError) as error:
        apply_overrides(Config(), ["inference.precision=fp64"])
    assert str(error.value) == (
        "inference.precision='fp64' is not one of 'auto', '32', 'bf16' (auto: bf16 on CPUs "
        "with AMX, else 32; 32: float32; bf16: bfloat16 autocast)"
    )


def test_values_are_read_as_the_type_of_their_choices(tmp_path):
    # YAML reads 32 as a number and "4" as text: both become the setting's own type
    c = apply_overrides(Config(), ["inference.precision=32", 'inference.tta="0"'])
    assert (c.inference.precision, c.inference.tta) == ("32", 0)
    assert apply_overrides(Config(), ["train.precision=16"]).train.precision == "16"
    with pytest.raises(ValueError, match=r"^inference.tta=4.5 is not one of 0, 4, 8"):
        apply_overrides(Config(), ["inference.tta=4.5"])
    with pytest.raises(ValueError, match=r"^inference.tta=True is not one of"):
        apply_overrides(Config(), ["inference.tta=true"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inference.overlap=1", "inference.overlap=1.0 must be in [0, 1)"),
        ("inference.overlap=-0.1", "inference.overlap=-0.1 must be in [0, 1)"),
        (
            "inference.et_probability_threshold=1.5",
            "et_probability_threshold=1.5 must be in [0, 1]",
        ),
        ("inference.et_min_voxels=-1", "inference.et_min_voxels=-1 must be >= 0"),
        ("inference.window_batch_size=0", "inference.window_batch_size=0 must be >= 1"),
        ("train.decoder_lr_scale=0", "train.decoder_lr_scale=0.0 must be positive"),
        ("train.classifier_lr_scale=-1", "train.classifier_lr_scale=-1.0 must be positive"),
        ("train.n_folds=1", "train.n_folds=1 must be at least 2"),
        ("train.cache_workers=-1", "train.cache_workers=-1 must be >= 0"),
        ("train.checkpoint_every_n_steps=-5", "train.checkpoint_every_n_steps=-5 must be >= 0"),
        ("train.max_steps=0", "train.max_steps=0 must be >= 1, or -1"),
        ("train.max_steps=-3", "train.max_steps=-3 must be >= 1, or -1"),
        ("train.batch_size=0", "train.batch_size=0 must be >= 1"),
        ("train.val_every_n_epochs=0", "train.val_every_n_epochs=0 must be >= 1"),
        ("train.lr=-1", "train.lr=-1.0 must be positive"),
        ("train.num_workers=-2", "train.num_workers=-2 must be >= 0"),
        ("train.max_epochs=0", "train.max_epochs=0 must be >= 1"),
        ("train.weight_decay=-0.1", "train.weight_decay=-0.1 must be >= 0"),
        ("train.log_every_n_steps=0", "train.log_every_n_steps=0 must be >= 1"),
        ("train.num_nodes=0", "train.num_nodes=0 must be >= 1"),
        ("train.devices=two", "train.devices='two'"),
        ("inference.device=gpu", "inference.device='gpu' is not a device name"),
    ],
)
def test_numeric_ranges_are_checked_when_the_config_is_built(override, message):
    with pytest.raises(ValueError) as error:
        apply_overrides(Config(), [override])
    assert message in str(error.value)


def test_range_edges_are_accepted():
    c = apply_overrides(
        Config(),
        [
            "inference.overlap=0",
            "inference.et_probability_threshold=1",
            "inference.et_min_voxels=0",
            "train.n_folds=2",
            "train.cache_workers=0",
            "train.max_steps=1",
            "train.weight_decay=0",
            "inference.device=cuda:1",
        ],
    )
    assert apply_overrides(Config(), ["train.max_steps=-1"]).train.max_steps == -1
    assert (c.inference.overlap, c.inference.et_probability_threshold) == (0.0, 1.0)
    # patches per case matter only when sampling at random
    assert apply_overrides(Config(), ["train.random_patches_per_case=0"]).train.patch_sampling
    with pytest.raises(ValueError, match="random_patches_per_case=0 must be at least 1"):
        apply_overrides(
            Config(), ["train.patch_sampling=random", "train.random_patches_per_case=0"]
        )


def test_check_config_takes_the_tree_or_a_section():
    from brats_mtl.config import InferenceConfig, check_config

    check_config(Config())
    check_config(tiny_config())
    check_config(InferenceConfig())
    # a section built around the check (object.__setattr__) is still caught by the tree
    bad = InferenceConfig()
    object.__setattr__(bad, "mode", "sideways")
    with pytest.raises(ValueError, match="^inference.mode='sideways' is not one of"):
        check_config(Config(inference=bad))
    with pytest.raises(ValueError, match="^inference.overlap='half' must be a number"):
        InferenceConfig(overlap="half")
