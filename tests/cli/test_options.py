"""How the commands build their configuration (``brats_mtl.cli.options``).

The commands' library calls are replaced by spies that record the configuration they
get, so each test runs the command line only: no training, no prediction.
"""

import dataclasses
import re

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from brats_mtl import demo, pipeline
from brats_mtl.cli.main import cli
from brats_mtl.cli.options import FLAG_KEYS, flag_overrides, resolve_config
from brats_mtl.config import Config, apply_overrides, choices
from brats_mtl.presets import cpu_config, demo_config
from brats_mtl.workspace.run_dir import RunDir


@pytest.fixture
def seen(monkeypatch):
    """The configurations the commands passed on, in order (library calls replaced)."""
    import brats_mtl.model.summary as summary_module
    import brats_mtl.predict as predict_module
    import brats_mtl.training.runner as runner

    configs = []

    def result(out_dir):
        return pipeline.PipelineResult(out_dir, out_dir / "report.md", pd.DataFrame(), None)

    def fake_run(data_dir, out_dir, **kwargs):
        configs.append(kwargs["config"])
        return result(out_dir)

    def fake_demo(out_dir, config, **kwargs):
        configs.append(config)
        return result(out_dir)

    def fake_train(data_dir, run_dir, folds, **kwargs):
        configs.append(kwargs["config"])
        return []

    def fake_predict(run_dir, input_dir, output_dir, **kwargs):
        configs.append(kwargs["config"])
        return pd.DataFrame({"case_id": [], "status": [], "warning": [], "error": []})

    def fake_summary(model_config, patch_size=None):
        assert patch_size is None  # the patch arrives in the configuration
        configs.append(Config(model=model_config))
        return "summary"

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run)
    monkeypatch.setattr(demo, "run_demo", fake_demo)
    monkeypatch.setattr(runner, "train_folds", fake_train)
    monkeypatch.setattr(predict_module, "predict_cohort", fake_predict)
    monkeypatch.setattr(summary_module, "model_summary", fake_summary)
    return configs


@pytest.fixture
def folders(tmp_path):
    """A data folder, a run folder with a saved cpu-preset configuration, an output."""
    data = tmp_path / "data"
    data.mkdir()
    run = tmp_path / "run"
    saved = apply_overrides(cpu_config(), ["train.max_steps=7", "inference.tta=8"])
    RunDir(run).save_config(saved, has_results=False)
    return data, run, saved, tmp_path / "out"


def invoke(*argv):
    """The command's result and its output on one line (click wraps long lines)."""
    result = CliRunner().invoke(cli, [str(a) for a in argv])
    return result, " ".join(result.output.split())


def test_precedence_is_preset_then_file_then_set_then_flags(tmp_path, seen, folders):
    """Each source overrides the ones before it, in the order the help texts give."""
    data, _, _, out = folders
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  lr: 0.25\n  cache_workers: 2\n  checkpoint_every_n_steps: 9\n")
    sets = ["--set", "train.cache_workers=3", "--set", "train.seed=11"]
    argv = ["train", data, "--out", tmp_path / "new", "--preset", "cpu", "--config", file]
    result, text = invoke(*argv, *sets, "--cache-workers", 4)
    assert result.exit_code == 0, text
    config = seen[-1]
    assert config.model == cpu_config().model  # the preset, untouched by the others
    assert config.train.lr == 0.25  # the file over the preset (1e-3)
    assert config.train.checkpoint_every_n_steps == 9  # the file
    assert config.train.seed == 11  # --set
    assert config.train.cache_workers == 4  # the flag over --set over the file
    # the same through the function the commands call
    direct = resolve_config(
        preset="cpu",
        config_file=file,
        overrides=["train.cache_workers=3", "train.seed=11"],
        flags={"--cache-workers": 4, "--checkpoint-every": None},
    )
    assert direct == config
    # later --set values win over earlier ones
    again = resolve_config(overrides=["train.seed=1", "train.seed=2"])
    assert again.train.seed == 2 and again.model == Config().model


# (command, flag, value, --set value): each flag against its --set spelling
FLAG_CASES = [
    ("predict", "--tta", "0", "0"),
    ("predict", "--mode", "whole", "whole"),
    ("predict", "--device", "cpu", "cpu"),
    ("predict", "--precision", "32", "32"),
    ("predict", "--uncertainty", "entropy", "entropy"),
    ("train", "--cache-workers", "2", "2"),
    ("train", "--checkpoint-every", "0", "0"),
    ("train", "--labels", "gli-post", "gli-post"),
    ("run", "--labels", "ped2024", "ped2024"),
    ("model-summary", "--patch", "48", "48"),
]


def _argv(command, data, run, out):
    return {
        "predict": ["predict", run, data, out],
        "train": ["train", data, "--out", run],
        "run": ["run", data, "--out", out],
        "model-summary": ["model-summary"],
    }[command]


@pytest.mark.parametrize(("command", "flag", "value", "set_value"), FLAG_CASES)
def test_a_flag_is_its_set_key(command, flag, value, set_value, seen, folders):
    """A flag and its --set spelling give the same configuration."""
    data, run, _, out = folders
    argv = _argv(command, data, run, out)
    by_flag, text = invoke(*argv, flag, value)
    assert by_flag.exit_code == 0, text
    by_set, text = invoke(*argv, "--set", f"{FLAG_KEYS[flag]}={set_value}")
    assert by_set.exit_code == 0, text
    assert seen[-2] == seen[-1]
    section, name = FLAG_KEYS[flag].split(".")
    changed = getattr(getattr(seen[-1], section), name)
    assert str(changed) == value
    # the flag is an option of that command, and its help names the key or the setting
    params = {p.opts[0]: p for p in cli.get_command(click.Context(cli), command).params}
    assert flag in params


def test_every_flag_key_is_tested_and_is_a_setting():
    """FLAG_KEYS names real settings, and every flag is exercised above."""
    assert {flag for _, flag, _, _ in FLAG_CASES} == set(FLAG_KEYS)
    for key in FLAG_KEYS.values():
        section, name = key.split(".")
        assert name in {f.name for f in dataclasses.fields(getattr(Config(), section))}
    assert flag_overrides({"--tta": "0", "--mode": None}) == ['inference.tta="0"']


def test_train_continues_from_the_saved_configuration_unless_a_preset_or_file(
    tmp_path, seen, folders
):
    """train: RUN_DIR/config.yaml is the base without --preset and --config."""
    data, run, saved, _ = folders
    assert invoke("train", data, "--out", run)[0].exit_code == 0
    assert seen[-1] == saved
    # --set and the flags apply over the saved configuration
    invoke("train", data, "--out", run, "--set", "train.lr=0.5", "--cache-workers", 1)
    assert seen[-1] == apply_overrides(saved, ["train.lr=0.5", "train.cache_workers=1"])
    # --preset or --config: the preset is the base (paper without --preset)
    invoke("train", data, "--out", run, "--preset", "paper")
    assert seen[-1] == Config()
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  lr: 0.5\n")
    invoke("train", data, "--out", run, "--config", file)
    assert seen[-1] == apply_overrides(Config(), ["train.lr=0.5"])
    # a new run folder starts from the paper's defaults
    invoke("train", data, "--out", tmp_path / "new")
    assert seen[-1] == Config()


def test_run_resumes_with_the_saved_configuration_only_without_preset_file_and_set(
    tmp_path, seen, folders
):
    """run: OUT/run/config.yaml with --resume and none of --preset, --config, --set."""
    data, _, saved, out = folders
    RunDir(out / "run").save_config(saved, has_results=False)
    invoke("run", data, "--out", out, "--resume")
    assert seen[-1] == saved
    invoke("run", data, "--out", out, "--resume", "--labels", "brats2023")
    assert seen[-1] == apply_overrides(saved, ["train.labels=brats2023"])  # a flag keeps it
    invoke("run", data, "--out", out, "--resume", "--set", "train.lr=0.5")
    assert seen[-1] == apply_overrides(Config(), ["train.lr=0.5"])  # as a first run
    invoke("run", data, "--out", out, "--resume", "--preset", "cpu")
    assert seen[-1] == cpu_config()
    invoke("run", data, "--out", out)  # without --resume: the preset
    assert seen[-1] == Config()


def test_demo_continues_with_the_saved_configuration_unless_set_or_overwrite(seen, folders):
    """demo: its saved configuration without --set and --overwrite, else the demo preset."""
    _, _, saved, out = folders
    RunDir(out / "results" / "run").save_config(saved, has_results=False)
    assert invoke("demo", "--out", out)[0].exit_code == 0
    assert seen[-1] == saved
    invoke("demo", "--out", out, "--set", "train.lr=0.5")
    assert seen[-1] == apply_overrides(demo_config(), ["train.lr=0.5"])
    invoke("demo", "--out", out, "--overwrite")
    assert seen[-1] == demo_config()


def test_predict_takes_the_run_configuration_then_set_then_flags(tmp_path, seen, folders):
    """predict: the run's config.yaml (required), then --set, then the flags."""
    data, run, saved, out = folders
    invoke("predict", run, data, out)
    assert seen[-1] == saved
    invoke("predict", run, data, out, "--set", "inference.tta=0", "--tta", 4)
    assert seen[-1] == apply_overrides(saved, ["inference.tta=4"])
    # the model and training settings are the run's: refused, not silently ignored
    calls = len(seen)
    for key in ("model.patch_size=48", "train.devices=2"):
        result, text = invoke("predict", run, data, out, "--set", key)
        assert result.exit_code == 2 and "inference.* settings only" in text, text
    assert len(seen) == calls
    empty = tmp_path / "empty"
    empty.mkdir()
    result, text = invoke("predict", empty, data, out)
    assert result.exit_code == 1 and "is not a training run folder" in text


def test_a_bad_saved_configuration_exits_1_naming_the_file(tmp_path, seen, folders):
    """A saved config.yaml is not an option value: its errors exit 1 and name it."""
    data, run, _, out = folders
    RunDir(run).config_file.write_text("inference:\n  tta: 3\n")
    (out / "run").mkdir(parents=True)
    RunDir(out / "run").config_file.write_text("inference:\n  tta: 3\n")
    for argv in (
        ["train", data, "--out", run],
        ["predict", run, data, out],
        ["run", data, "--out", out, "--resume"],
    ):
        result, text = invoke(*argv)
        assert result.exit_code == 1, (argv[0], text)
        assert "config.yaml: inference.tta=3 is not one of 0, 4, 8" in text, text
    assert seen == []


def _literal_keys():
    keys = []
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            try:
                choices(f"{section.name}.{f.name}")
            except ValueError:
                continue
            keys.append(f"{section.name}.{f.name}")
    return keys


@pytest.mark.parametrize("key", _literal_keys())
def test_every_literal_setting_is_refused_on_the_command_line(key, seen):
    """--set with a value outside a Literal: exit 2, key, value and choices named."""
    result, text = invoke("model-summary", "--set", f"{key}=nope")
    assert result.exit_code == 2, text
    allowed = ", ".join(map(repr, choices(key)))
    assert "Invalid value for --set" in text, text
    assert f"{key}='nope' is not one of {allowed}" in text, text
    assert seen == []


def test_a_bad_flag_value_names_the_flag(seen, folders):
    """The usage error names the flag or option that brought the bad value."""
    data, run, _, out = folders
    result, text = invoke("predict", run, data, out, "--tta", "3")
    assert result.exit_code == 2 and "--tta" in text  # click's own choice check
    with pytest.raises(click.BadParameter, match="inference.tta=3") as error:
        resolve_config(flags={"--tta": 3})
    assert error.value.param_hint == "--tta"
    with pytest.raises(click.BadParameter) as error:
        resolve_config(overrides=["inference.mode=sideways"])
    assert error.value.param_hint == "--set"
    assert re.search(r"inference.mode='sideways' is not one of 'window', 'whole'", str(error.value))
