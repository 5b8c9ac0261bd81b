"""Rules every ``brats-mtl`` subcommand shares: exit status of a missing path, progress
bars only on terminals, outputs of the README's commands ignored by git."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from brats_mtl.cli.main import cli
from brats_mtl.cli.run import progress_bars_wanted

REPO = Path(__file__).resolve().parents[2]

#: Path parameters that name outputs (may not exist yet); every other path parameter is
#: an input and must exist.
OUTPUT_PATHS = {
    ("train", "run_dir"),
    ("train", "cache_dir"),
    ("run", "out_dir"),
    ("demo", "out_dir"),
    ("predict", "output_dir"),
    ("evaluate", "out_path"),
    ("evaluate", "lesions_out"),
    ("evaluate-uncertainty", "out_path"),
    ("evaluate-uncertainty", "curves_path"),
    ("survival fit", "out"),
    ("survival predict", "out"),
    ("survival evaluate", "out"),
    ("survival evaluate", "per_case"),
    ("survival cv", "out"),
    ("survival cv", "per_case"),
    ("survival plot", "out"),
}


def _commands() -> dict[str, click.Command]:
    """Every leaf command by its name after ``brats-mtl`` (``survival fit``, ...)."""
    ctx = click.Context(cli)
    found = {}
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                found[f"{name} {sub}"] = command.get_command(ctx, sub)
        else:
            found[name] = command
    return found


def test_every_input_path_must_exist_and_outputs_need_not():
    seen_outputs = set()
    for name, command in _commands().items():
        for param in command.params:
            if not isinstance(param.type, click.Path):
                continue
            if (name, param.name) in OUTPUT_PATHS:
                seen_outputs.add((name, param.name))
                assert not param.type.exists, (name, param.name)
            else:
                assert param.type.exists, f"{name}: input {param.name} is not checked to exist"
    assert seen_outputs == OUTPUT_PATHS  # the list names real parameters


def _missing_path_cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(what, argv) with one missing input path each, every other path present."""
    d, f, nope = tmp / "dir", tmp / "file.csv", str(tmp / "nope")
    d.mkdir(exist_ok=True)
    f.write_text("x\n")
    d, f, out = str(d), str(f), str(tmp / "out")
    return [
        ("evaluate PRED_DIR", ["evaluate", nope, d, "--out", out]),
        ("evaluate REF_DIR", ["evaluate", d, nope, "--out", out]),
        ("evaluate-uncertainty PRED_DIR", ["evaluate-uncertainty", nope, d, "--out", out]),
        ("evaluate-uncertainty REF_DIR", ["evaluate-uncertainty", d, nope, "--out", out]),
        ("model-summary --config", ["model-summary", "--config", nope]),
        ("train DATA_DIR", ["train", nope, "--out", out]),
        ("train --unlabeled", ["train", d, "--out", out, "--unlabeled", nope]),
        ("train --config", ["train", d, "--out", out, "--config", nope]),
        ("predict RUN_DIR", ["predict", nope, d, out]),
        ("predict INPUT_DIR", ["predict", d, nope, out]),
        ("run DATA_DIR", ["run", nope, "--out", out]),
        ("run --unlabeled", ["run", d, "--out", out, "--unlabeled", nope]),
        ("run --test", ["run", d, "--out", out, "--test", nope]),
        ("run --survival", ["run", d, "--out", out, "--survival", nope]),
        ("run --config", ["run", d, "--out", out, "--config", nope]),
        ("survival fit CSV", ["survival", "fit", nope, "--out", out]),
        ("survival fit --config", ["survival", "fit", f, "--out", out, "--config", nope]),
        ("survival predict MODEL_JSON", ["survival", "predict", nope, f, "--out", out]),
        ("survival predict CSV", ["survival", "predict", f, nope, "--out", out]),
        ("survival evaluate PRED_CSV", ["survival", "evaluate", nope, f, "--out", out]),
        ("survival evaluate TRUTH_CSV", ["survival", "evaluate", f, nope, "--out", out]),
        ("survival cv CSV", ["survival", "cv", nope, "--out", out]),
        ("survival plot MODEL_JSON", ["survival", "plot", nope, f, "--out", out]),
        ("survival plot CSV", ["survival", "plot", f, nope, "--out", out]),
    ]


def test_a_missing_path_exits_2_in_every_subcommand(tmp_path):
    """The rule in the README: a path given on the command line that does not exist is a
    usage error (exit status 2, click's), found before any work; nothing is written."""
    cases = _missing_path_cases(tmp_path)
    commands = {name.split()[0] for name, _ in cases} | {
        " ".join(argv[:2]) for name, argv in cases if argv[0] == "survival"
    }
    # every subcommand with an input path is exercised (demo has none)
    with_inputs = {
        name
        for name, c in _commands().items()
        if any(
            isinstance(p.type, click.Path) and (name, p.name) not in OUTPUT_PATHS for p in c.params
        )
    }
    assert with_inputs <= commands
    for what, argv in cases:
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 2, (what, result.output)
        text = " ".join(result.output.split())
        assert re.search(r"(File|Directory|Path) '[^']*nope' does not exist", text), (what, text)
        assert not (tmp_path / "out").exists(), what


def test_a_bad_setting_on_the_command_line_exits_2_in_every_subcommand(tmp_path):
    """--set (and --config) are option values: what the configuration refuses is a usage
    error in every command that takes them."""
    from brats_mtl.config import Config
    from brats_mtl.workspace.run_dir import RunDir

    run_dir, data, table = tmp_path / "run", tmp_path / "data", tmp_path / "t.csv"
    RunDir(run_dir).save_config(Config(), has_results=False)
    data.mkdir()
    table.write_text("BraTS19ID,Age,Survival,ResectionStatus\nA,50,300,GTR\n")
    out = str(tmp_path / "out")
    bad = ["--set", "nosuch.key=1"]
    for argv in (
        ["model-summary", *bad],
        ["train", str(data), "--out", out, *bad],
        ["run", str(data), "--out", out, *bad],
        ["demo", "--out", out, *bad],
        ["predict", str(run_dir), str(data), out, *bad],
        ["survival", "fit", str(table), "--out", out, *bad],
        ["survival", "cv", str(table), "--out", out, *bad],
        ["survival", "evaluate", str(table), str(table), "--out", out, *bad],
    ):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 2, (argv[:2], result.output)
        assert "nosuch" in result.output, result.output
        assert not (tmp_path / "out").exists(), argv[:2]
    for argv in (
        ["run", str(data), "--out", out, "--folds", "a,b"],
        ["predict", str(run_dir), str(data), out, "--shard", "3/2"],
        ["predict", str(run_dir), str(data), out, "--folds", "7"],  # the run has 5 folds
        ["train", str(data), "--out", out, "--set", "train.devices=two"],
    ):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 2, (argv[:2], result.output)
        assert not (tmp_path / "out").exists(), argv
    result = CliRunner().invoke(cli, ["predict", str(run_dir), str(data), out, "--folds", "7"])
    assert "--folds 7: the run" in result.output and "has 5 folds, 0 to 4" in result.output


def test_an_existing_path_with_bad_content_exits_1(tmp_path):
    """The other half of the rule: a path that exists but holds the wrong thing fails
    when the command reads it (exit status 1)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["predict", str(empty), str(empty), str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a training run folder" in result.output


# --- failed commands leave no output folder --------------------------------------------


@pytest.mark.parametrize("command", ["train", "run"])
def test_a_failed_command_on_an_empty_folder_leaves_no_output_folder(tmp_path, command):
    from brats_mtl.workspace.ownership import OUTPUT_MARKER

    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [command, str(empty), "--out", str(out)])
    assert result.exit_code == 1 and "no BraTS cases found" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing left behind
    # a folder the user made stays, without the marker
    out.mkdir()
    result = CliRunner().invoke(cli, [command, str(empty), "--out", str(out)])
    assert result.exit_code == 1 and out.is_dir() and not any(out.iterdir())
    # a folder left with only a marker (an older version's failed attempt) is cleaned too
    (out / OUTPUT_MARKER).write_text(f"command: {command}\n")
    result = CliRunner().invoke(cli, [command, str(empty), "--out", str(out)])
    assert result.exit_code == 1 and not any(out.iterdir())
    # a folder that held something before is never touched, not even an empty sub-folder
    (out / "notes").mkdir()
    result = CliRunner().invoke(cli, [command, str(empty), "--out", str(out)])
    assert result.exit_code == 1 and sorted(p.name for p in out.iterdir()) == ["notes"]


def test_a_failure_after_something_was_written_keeps_the_folder(tmp_path):
    """What a failed attempt wrote (here a cached case) stays for the retry."""
    from brats_mtl.workspace.ownership import OUTPUT_MARKER, removed_if_unused_on_failure
    from brats_mtl.workspace.run_dir import RunDir

    out = tmp_path / "out"
    with pytest.raises(RuntimeError), removed_if_unused_on_failure(out):
        (out / "cache").mkdir(parents=True)
        (out / OUTPUT_MARKER).write_text("command: train\n")
        (out / "cache" / "case.npz").write_bytes(b"x")
        raise RuntimeError("a bad case")
    assert (out / "cache" / "case.npz").is_file() and (out / OUTPUT_MARKER).is_file()
    with pytest.raises(KeyboardInterrupt), removed_if_unused_on_failure(tmp_path / "new"):
        RunDir(tmp_path / "new" / "run").fold_dir(0).mkdir(parents=True)
        (tmp_path / "new" / OUTPUT_MARKER).write_text("command: run\n")
        (tmp_path / "new" / "run" / OUTPUT_MARKER).write_text("command: train\n")
        raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()
    with removed_if_unused_on_failure(tmp_path / "ok"):  # no failure: nothing removed
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()


# --- progress bars ---------------------------------------------------------------------


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(
    ("stdout_tty", "stderr_tty", "wanted"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_progress_bars_only_when_both_streams_are_terminals(
    monkeypatch, stdout_tty, stderr_tty, wanted
):
    monkeypatch.setattr(sys, "stdout", _Stream(stdout_tty))
    monkeypatch.setattr(sys, "stderr", _Stream(stderr_tty))
    assert progress_bars_wanted(None) is wanted
    assert progress_bars_wanted(True) is True and progress_bars_wanted(False) is False


def test_progress_option_is_shared_and_resolved_by_every_long_command(tmp_path, monkeypatch):
    """train, run, demo and predict take the same --progress/--no-progress; without it
    (CliRunner's streams are not terminals) no bars are drawn."""
    from brats_mtl import pipeline
    from brats_mtl.cli import demo, predict, run, train
    from brats_mtl.training import runner

    for module in (run, demo, train, predict):
        option = {p.name: p for p in module.command.params}["progress"]
        assert option.opts == ["--progress"] and option.secondary_opts == ["--no-progress"]
        assert option.default is None
    seen = []

    def fake_train_folds(*args, **kwargs):
        seen.append(kwargs["enable_progress_bar"])
        return []

    def fake_run_pipeline(data_dir, out_dir, **kwargs):
        seen.append(kwargs["progress"])
        import pandas as pd

        return pipeline.PipelineResult(out_dir, out_dir / "report.md", pd.DataFrame(), None)

    monkeypatch.setattr(runner, "train_folds", fake_train_folds)
    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    data = tmp_path / "data"
    data.mkdir()
    for extra, expected in (([], False), (["--progress"], True), (["--no-progress"], False)):
        for argv in (
            ["train", str(data), "--out", str(tmp_path / "r")],
            ["run", str(data), "--out", str(tmp_path / "o")],
        ):
            result = CliRunner().invoke(cli, [*argv, *extra])
            assert result.exit_code == 0, result.output
            assert seen.pop() is expected, (argv, extra)


# --- git -------------------------------------------------------------------------------


def _readme_output_paths() -> list[str]:
    """The output paths of the README's command examples that are relative (written into
    the folder the commands run from, e.g. the repository)."""
    text = (REPO / "README.md").read_text()
    paths = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip().rstrip("&").strip()
            if not line.startswith("brats-mtl "):
                continue
            words = shlex.split(line)
            for i, word in enumerate(words[:-1]):
                if word == "--out":
                    paths.append(words[i + 1])
            if words[1] == "predict":
                positional = [w for w in words[2:] if not w.startswith("-")]
                paths.append(positional[2])
    return [p for p in paths if not p.startswith(("/", ".."))]


def test_the_readme_outputs_are_ignored_by_git():
    if subprocess.run(["git", "-C", str(REPO), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git work tree")
    paths = _readme_output_paths()
    assert {"runs/mtl", "preds/oof", "preds/val", "oof.csv"} <= set(paths)
    for path in paths:
        probe = f"{path}/x.nii.gz" if "." not in Path(path).name else path
        done = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", probe])
        assert done.returncode == 0, f"{path} (an output of a README command) is not git-ignored"
