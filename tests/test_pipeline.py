"""The whole chain on a tiny synthetic cohort (issue: main job end to end)."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brats_mtl import demo as demo_module
from brats_mtl.config import apply_overrides
from brats_mtl.demo import make_demo_cohort
from brats_mtl.pipeline import TABLE3_COLUMNS, TABLE4_COLUMNS, run_pipeline
from brats_mtl.presets import demo_config
from brats_mtl.workspace import ownership
from brats_mtl.workspace.run_dir import RunDir


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import torch

    # one intra-op thread: the networks are tiny, and on a busy two-core machine spinning
    # OpenMP threads slow each step down several times over
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _tiny_run(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    cohort = make_demo_cohort(
        root / "data", n_train=4, n_unlabeled=1, n_test=1, n_survival=20, shape=(32, 32, 32)
    )
    config = apply_overrides(
        demo_config(),
        [
            "train.n_folds=2",
            "train.max_steps=4",
            "train.val_every_n_epochs=1",
            "inference.tta=0",
            "inference.uncertainty=entropy",
        ],
    )
    result = run_pipeline(
        cohort.train_dir,
        root / "out",
        config=config,
        unlabeled_dirs=(cohort.unlabeled_dir,),
        test_dir=cohort.test_dir,
        survival_csv=cohort.survival_csv,
        progress=False,
    )
    return cohort, config, result


def test_chain_writes_tables_figures_and_report(tiny_run):
    cohort, _, result = tiny_run
    out = result.out_dir
    assert list(result.table3.index) == ["Train set (out-of-fold)", "Test set (fold ensemble)"]
    assert list(result.table3.columns) == [*TABLE3_COLUMNS, "n_cases"]
    assert result.table3.loc["Train set (out-of-fold)", "n_cases"] == 4
    dice = result.table3[[c for c in TABLE3_COLUMNS if c.startswith("Dice")]].to_numpy()
    assert ((dice >= 0) & (dice <= 1)).all()
    # the online-system CSV: 4 cases then the five summary rows
    csv = pd.read_csv(out / "tables" / "train_set_out_of_fold.csv")
    assert list(csv["Label"])[-5:] == ["Mean", "StdDev", "Median", "25quantile", "75quantile"]
    assert float(csv.loc[csv["Label"] == "Mean", "Dice_WT"].iloc[0]) == pytest.approx(
        result.table3.loc["Train set (out-of-fold)", "Dice_WT"]
    )
    assert list(result.table4.columns) == list(TABLE4_COLUMNS)
    for path in result.figures.values():
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert {"fig1_preprocessing", "fig3_best", "fig3_worst", "fig4_survival"} <= set(result.figures)
    report = result.report.read_text()
    assert "Table 3" in report and "figures/fig3_best.png" in report
    # inference.uncertainty=entropy: maps, their QU-BraTS scores beside random maps, a figure
    scores = pd.read_csv(out / "tables" / "uncertainty_out_of_fold.csv")
    assert list(scores["Label"])[:4] == sorted(d.name for d in cohort.train_dir.iterdir())
    assert ((scores["Score_WT"] >= 0) & (scores["Score_WT"] <= 1)).all()
    assert (out / "tables" / "uncertainty_random_out_of_fold.csv").is_file()
    assert "## Uncertainty (entropy maps" in report and "random maps" in report
    assert "figures/uncertainty_best.png" in report
    # the lesion-wise table: its CSV, and its per-region summary in the report
    lesionwise = pd.read_csv(out / "tables" / "train_set_out_of_fold_lesionwise.csv")
    assert list(lesionwise["Label"])[:-5] == list(csv["Label"])[:-5]
    assert (lesionwise["Dice_WT"] == csv["Dice_WT"]).all()  # the same whole-region Dice
    assert "## Lesion-wise" in report and "LesionWise_Dice" in report
    # every out-of-fold label map keeps its input's grid
    for case_dir in sorted(cohort.train_dir.iterdir()):
        pred = nib.load(out / "predictions" / "out_of_fold" / f"{case_dir.name}.nii.gz")
        ref = nib.load(next(case_dir.glob("*_seg.nii.gz")))
        assert pred.shape == ref.shape
        np.testing.assert_allclose(pred.affine, ref.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 4}


def test_existing_output_needs_resume_or_overwrite(tiny_run):
    cohort, config, result = tiny_run
    with pytest.raises(FileExistsError, match="--resume"):
        run_pipeline(cohort.train_dir, result.out_dir, config=config)


def test_resume_does_not_retrain(tiny_run, caplog):
    cohort, config, result = tiny_run
    ckpt = result.out_dir / "run" / "fold_0" / "checkpoints" / "last.ckpt"
    before = ckpt.stat().st_mtime_ns
    oof = result.out_dir / "predictions" / "out_of_fold" / "BraTS2021_90000.nii.gz"
    oof_before = oof.stat().st_mtime_ns
    with caplog.at_level("INFO", logger="brats_mtl.workspace.ownership"):
        again = run_pipeline(  # without test_dir and survival_csv: the recorded ones
            cohort.train_dir,
            result.out_dir,
            config=config,
            resume=True,
            progress=False,
        )
    assert ckpt.stat().st_mtime_ns == before
    assert oof.stat().st_mtime_ns == oof_before
    pd.testing.assert_frame_equal(again.table3, result.table3)
    pd.testing.assert_frame_equal(again.table4, result.table4)
    table3 = pd.read_csv(result.out_dir / "tables" / "table3.csv", index_col=0)
    assert list(table3.index) == ["Train set (out-of-fold)", "Test set (fold ensemble)"]
    assert (result.out_dir / "tables" / "table4.csv").is_file()
    report = again.report.read_text()
    assert "Test set (fold ensemble)" in report and "## Survival" in report
    assert "figures/fig4_survival.png" in report
    reused = [r.getMessage() for r in caplog.records if "reusing the inputs" in r.getMessage()]
    assert len(reused) == 1 and all(
        str(p.resolve()) in reused[0]
        for p in (cohort.unlabeled_dir, cohort.test_dir, cohort.survival_csv)
    )
    assert "DATA_DIR" not in reused[0]  # given again, not reused
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "--resume" in r.message]


def _recorded_run(tmp_path):
    """A run folder whose marker records all four inputs (no training)."""
    from brats_mtl.workspace.ownership import RunInputs, prepare_output_dir, record_run_inputs

    cohort = make_demo_cohort(
        tmp_path / "data", n_train=2, n_unlabeled=1, n_test=1, n_survival=4, shape=(16, 16, 16)
    )
    inputs = RunInputs(
        cohort.train_dir, (cohort.unlabeled_dir,), cohort.test_dir, cohort.survival_csv
    )
    out = tmp_path / "out"
    prepare_output_dir(out, "run", inputs=inputs.as_inputs())
    record_run_inputs(out, inputs)
    (out / "run").mkdir()  # not empty: --resume reuses it
    return cohort, inputs, out


def test_run_inputs_are_recorded_in_the_marker(tmp_path):
    from brats_mtl.workspace.ownership import (
        OUTPUT_MARKER,
        RunInputs,
        read_output_marker,
        read_run_inputs,
        resolve_run_inputs,
    )

    cohort, inputs, out = _recorded_run(tmp_path)
    assert read_run_inputs(out) == inputs.resolved()
    assert read_output_marker(out)["command"] == "run"  # the other fields are kept
    assert "inputs" not in read_output_marker(out)
    assert not [p for p in out.iterdir() if p.name.startswith(f"{OUTPUT_MARKER}.")]  # no temp
    # only what is not given is taken from the record; nothing without --resume
    given = RunInputs(cohort.train_dir)
    assert resolve_run_inputs(out, given, resume=False) == given
    resolved = resolve_run_inputs(out, given, resume=True)
    assert resolved.data_dir == cohort.train_dir
    assert resolved.unlabeled_dirs == (cohort.unlabeled_dir.resolve(),)
    assert resolved.test_dir == cohort.test_dir.resolve()
    assert resolved.survival_csv == cohort.survival_csv.resolve()
    # a folder without recorded inputs (older version, another command): given as it is
    assert read_run_inputs(tmp_path / "nowhere") is None
    assert resolve_run_inputs(tmp_path / "nowhere", given, resume=True) == given


def test_resume_with_a_different_input_warns_old_to_new(tmp_path, caplog):
    from brats_mtl.workspace.ownership import RunInputs, resolve_run_inputs

    cohort, inputs, out = _recorded_run(tmp_path)
    other = tmp_path / "other.csv"
    other.write_text(cohort.survival_csv.read_text())
    with caplog.at_level("INFO", logger="brats_mtl.workspace.ownership"):
        resolved = resolve_run_inputs(
            out, RunInputs(cohort.train_dir, survival_csv=other), resume=True
        )
    assert resolved.survival_csv == other
    assert resolved.test_dir == cohort.test_dir.resolve()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"--resume: --survival differs from the one recorded in {out / '.brats-mtl-output'}: "
        f"{cohort.survival_csv.resolve()} -> {other.resolve()} (the new one is used and recorded)"
    ]
    info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert info == [
        f"--resume: reusing the inputs recorded in {out / '.brats-mtl-output'}: "
        f"--unlabeled {cohort.unlabeled_dir.resolve()}; --test {cohort.test_dir.resolve()}"
    ]


def test_resume_fails_when_a_recorded_input_is_gone(tmp_path):
    import shutil

    from click.testing import CliRunner

    from brats_mtl.cli.main import cli
    from brats_mtl.workspace.ownership import RunInputs, resolve_run_inputs

    cohort, inputs, out = _recorded_run(tmp_path)
    moved = tmp_path / "moved_test"
    shutil.move(cohort.test_dir, moved)
    with pytest.raises(FileNotFoundError, match=r"--test .*test recorded in .* no longer exists"):
        resolve_run_inputs(out, RunInputs(cohort.train_dir), resume=True)
    # given again (where it is now): used, no error
    assert (
        resolve_run_inputs(out, RunInputs(cohort.train_dir, test_dir=moved), resume=True).test_dir
        == moved
    )
    # the command line: a clear error before any training, nothing written
    before = sorted(p.name for p in out.iterdir())
    result = CliRunner().invoke(cli, ["run", str(cohort.train_dir), "--out", str(out), "--resume"])
    assert result.exit_code == 1, result.output
    assert (
        f"--test {cohort.test_dir.resolve()} recorded in {out / '.brats-mtl-output'} for this "
        "run no longer exists; pass --test again (where it is now), or start again with "
        "--overwrite"
    ) in " ".join(result.output.split())
    assert sorted(p.name for p in out.iterdir()) == before


# --- output folder: marker, overwrite, inputs --------------------------------------------


def test_run_output_folder_has_a_marker(tiny_run):
    from brats_mtl import __version__
    from brats_mtl.workspace.ownership import OUTPUT_MARKER, read_output_marker

    _, _, result = tiny_run
    assert (result.out_dir / OUTPUT_MARKER).is_file()
    marker = read_output_marker(result.out_dir)
    assert marker["command"] == "run" and marker["brats_mtl_version"] == __version__


def test_overwrite_refuses_a_folder_brats_mtl_did_not_create(tmp_path):
    from click.testing import CliRunner

    from brats_mtl.cli.main import cli

    data = tmp_path / "data"
    make_demo_cohort(data, n_train=2, n_unlabeled=0, n_test=0, n_survival=4, shape=(16, 16, 16))
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    (home / "thesis.tex").write_text("years of work")
    RunDir(home / "run").config_file.write_text("model: {}\n")  # looks like an old output
    for command in (
        ["run", str(data / "train"), "--out", str(home), "--overwrite"],
        ["demo", "--out", str(home), "--overwrite"],
    ):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1, result.output
        assert f"refusing to --overwrite {home}" in result.output
        assert ".brats-mtl-output" in result.output and "did not create" in result.output
        assert (home / "thesis.tex").read_text() == "years of work"
    # without --overwrite the demo does not write into it either
    result = CliRunner().invoke(cli, ["demo", "--out", str(home)])
    assert result.exit_code == 1 and "new or empty --out folder" in result.output
    assert sorted(p.name for p in home.iterdir()) == ["run", "thesis.tex"]


def test_overwrite_removes_only_what_brats_mtl_wrote(tmp_path, caplog):
    from brats_mtl.workspace.ownership import OUTPUT_MARKER, RUN_OUTPUTS, prepare_output_dir

    out = tmp_path / "out"
    assert prepare_output_dir(out, "run") is False
    for name in RUN_OUTPUTS:
        (out / name).mkdir() if "." not in name else (out / name).write_text("x")
    RunDir(out / "run").fold_dir(0).mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--resume"):
        prepare_output_dir(out, "run")
    assert prepare_output_dir(out, "run", resume=True) is True
    with caplog.at_level("WARNING", logger="brats_mtl.workspace.ownership"):
        assert prepare_output_dir(out, "run", overwrite=True) is False
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "notes.txt"]
    assert "kept notes.txt" in caplog.text
    # another command's folder is refused
    with pytest.raises(FileExistsError, match="holds the output of `brats-mtl run`"):
        prepare_output_dir(out, "demo", overwrite=True)
    with pytest.raises(FileExistsError, match="is a file"):
        prepare_output_dir(out / "notes.txt", "run")


def test_output_of_a_version_without_markers_can_be_resumed_not_overwritten(tmp_path):
    from brats_mtl.workspace.ownership import OUTPUT_MARKER, prepare_output_dir

    old = tmp_path / "old"
    (old / "run").mkdir(parents=True)
    RunDir(old / "run").config_file.write_text("model: {}\n")
    with pytest.raises(FileExistsError, match="older brats-mtl run: pass --resume"):
        prepare_output_dir(old, "run")
    with pytest.raises(FileExistsError, match="refusing to --overwrite"):
        prepare_output_dir(old, "run", overwrite=True)
    assert prepare_output_dir(old, "run", resume=True) is True
    assert not (old / OUTPUT_MARKER).exists()  # still not known to be brats-mtl's alone
    # an older demo folder (demo_output/results/run/config.yaml) is reused by the demo
    demo = tmp_path / "demo_output"
    (demo / "results" / "run").mkdir(parents=True)
    RunDir(demo / "results" / "run").config_file.write_text("model: {}\n")
    assert prepare_output_dir(demo, "demo", resume=True) is True
    with pytest.raises(FileExistsError, match="new or empty --out folder"):
        prepare_output_dir(old, "demo", resume=True)


def test_inputs_inside_the_output_folder_are_refused(tmp_path):
    from brats_mtl.workspace.ownership import prepare_output_dir

    out = tmp_path / "out"
    make_demo_cohort(
        out / "data", n_train=2, n_unlabeled=0, n_test=0, n_survival=4, shape=(16, 16, 16)
    )
    for inputs in (
        [("DATA_DIR", out / "data" / "train")],
        [("DATA_DIR", out)],
        [("DATA_DIR", tmp_path), ("--survival table", out / "data" / "survival.csv")],
    ):
        with pytest.raises(ValueError, match="is inside the output folder"):
            prepare_output_dir(out, "run", overwrite=True, inputs=inputs)
    with pytest.raises(ValueError, match=r"DATA_DIR .* is inside the output folder"):
        run_pipeline(out / "data" / "train", out, overwrite=True)
    assert (out / "data" / "train").is_dir()
    # the output folder may lie inside the data folder's parent, beside the data
    assert prepare_output_dir(tmp_path / "results", "run", inputs=[("DATA_DIR", out)]) is False


def test_a_bad_survival_table_fails_before_training(tmp_path):
    data = tmp_path / "data"
    cohort = make_demo_cohort(
        data, n_train=2, n_unlabeled=0, n_test=0, n_survival=4, shape=(16, 16, 16)
    )
    bad = tmp_path / "clinical.csv"
    bad.write_text("BraTS19ID,Age,Survival,ResectionStatus\nA,abc,300,GTR\n")
    with pytest.raises(ValueError, match=r"line 2 \(A\): age 'abc' is not a number"):
        run_pipeline(cohort.train_dir, tmp_path / "out", survival_csv=bad)
    assert not (tmp_path / "out").exists()
    # a folder left with only the marker (an attempt that failed at once) counts as empty
    from brats_mtl.workspace.ownership import prepare_output_dir

    prepare_output_dir(tmp_path / "out", "run")
    assert prepare_output_dir(tmp_path / "out", "run") is False


# --- demo ----------------------------------------------------------------------------------


def test_demo_reuses_its_folder_and_overwrite_starts_again(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from brats_mtl import pipeline
    from brats_mtl.cli.main import cli

    calls = []

    def fake_run_pipeline(data_dir, out_dir, **kwargs):
        calls.append((data_dir, out_dir, kwargs["resume"]))
        frame = pd.DataFrame({"Dice_WT": [1.0]})
        return pipeline.PipelineResult(out_dir, out_dir / "report.md", frame, None)

    monkeypatch.setattr(demo_module, "make_demo_cohort", _small_cohort)
    monkeypatch.setattr(demo_module, "run_pipeline", fake_run_pipeline)
    out = tmp_path / "demo_output"
    assert CliRunner().invoke(cli, ["demo", "--out", str(out)]).exit_code == 0
    survival = out / "data" / "survival.csv"
    written = survival.stat().st_mtime_ns
    assert ownership.read_output_marker(out)["command"] == "demo"
    again = CliRunner().invoke(cli, ["demo", "--out", str(out)])  # a second `make demo`
    assert again.exit_code == 0, again.output
    assert survival.stat().st_mtime_ns == written  # the cohort is reused, not written again
    assert calls == [(out / "data" / "train", out / "results", True)] * 2
    (out / "results" / "run").mkdir(parents=True)
    (out / "results" / "report.md").write_text("x")
    (out / "results" / "my_notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert survival.stat().st_mtime_ns != written
    # inside results/ only what `run` writes goes; the user's file stays
    assert sorted(p.name for p in (out / "results").iterdir()) == ["my_notes.txt"]
    assert not list(out.glob(".data.*"))  # no temporary cohort folder left
    (out / "results" / "my_notes.txt").unlink()
    (out / "results" / "tables").mkdir()
    assert CliRunner().invoke(cli, ["demo", "--out", str(out), "--overwrite"]).exit_code == 0
    assert not (out / "results").exists()  # nothing of the user's: results/ goes too


def _small_cohort(root, seed=0):
    return make_demo_cohort(
        root, n_train=2, n_unlabeled=1, n_test=1, n_survival=4, shape=(16, 16, 16), seed=seed
    )


def test_demo_config_validates_at_least_three_times_per_fold():
    """The demo's training curves need several validation points: count the epochs of
    the demo cohort (make_demo_cohort's defaults) and the validations they give."""
    import inspect

    config = demo_config()
    defaults = inspect.signature(make_demo_cohort).parameters
    n_train, n_unlabeled = defaults["n_train"].default, defaults["n_unlabeled"].default
    t = config.train
    train_cases = n_train - n_train // t.n_folds + n_unlabeled
    steps_per_epoch = train_cases * t.random_patches_per_case // t.batch_size
    epochs = t.max_steps // steps_per_epoch
    assert t.max_steps % steps_per_epoch == 0
    assert epochs // t.val_every_n_epochs >= 3
    assert epochs % t.val_every_n_epochs == 0  # the final model is validated too


# --- presets ---------------------------------------------------------------------------


def test_train_and_run_share_the_preset_option(tmp_path):
    import yaml
    from click.testing import CliRunner

    from brats_mtl.cli import run, train
    from brats_mtl.cli.main import cli
    from brats_mtl.presets import PRESET_HELP, PRESET_NAMES, cpu_config, preset_config

    options = {c.name: {p.name: p for p in c.params} for c in (run.command, train.command)}
    for name in ("run", "train"):
        preset = options[name]["preset"]
        assert tuple(preset.type.choices) == PRESET_NAMES and preset.help.startswith(PRESET_HELP)
    assert preset_config("cpu") == cpu_config()
    with pytest.raises(ValueError, match="unknown preset 'gpu'"):
        preset_config("gpu")

    data = tmp_path / "data"
    make_demo_cohort(data, n_train=2, n_unlabeled=0, n_test=0, n_survival=4, shape=(16, 16, 16))
    out = tmp_path / "run"
    # an unknown Lightning strategy fails once the run folder and its config.yaml are
    # written (the configuration does not know Lightning's strategies; Lightning refuses it)
    base = [
        "train",
        str(data / "train"),
        "--out",
        str(out),
        "--fold",
        "0",
        "--set",
        "train.n_folds=2",
        "--set",
        "train.strategy=nosuch",
    ]

    def saved():
        return yaml.safe_load((out / "config.yaml").read_text())

    result = CliRunner().invoke(cli, [*base, "--preset", "cpu"])
    assert result.exit_code == 1 and "nosuch" in result.output, result.output
    assert saved()["model"]["widths"] == list(cpu_config().model.widths)
    assert saved()["train"]["max_steps"] == cpu_config().train.max_steps
    # without --preset the run's config.yaml is the base; with one, the preset is
    CliRunner().invoke(cli, [*base, "--set", "train.lr=0.01"])
    assert saved()["model"]["widths"] == list(cpu_config().model.widths)
    assert saved()["train"]["lr"] == 0.01
    CliRunner().invoke(cli, [*base, "--preset", "paper"])
    assert saved()["model"]["widths"] == [28, 56, 112, 224, 448]


def test_run_resume_continues_with_the_saved_configuration(tmp_path, monkeypatch):
    """--resume without --preset/--config/--set uses OUT/run/config.yaml (a cpu-preset
    run is not rebuilt from the paper preset); the demo does the same without --set."""
    from click.testing import CliRunner

    from brats_mtl import pipeline
    from brats_mtl.cli.main import cli
    from brats_mtl.presets import cpu_config

    configs = []

    def fake_run_pipeline(data_dir, out_dir, **kwargs):
        configs.append(kwargs["config"])
        frame = pd.DataFrame({"Dice_WT": [1.0]})
        return pipeline.PipelineResult(out_dir, out_dir / "report.md", frame, None)

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    saved = apply_overrides(cpu_config(), ["train.max_steps=7"])
    RunDir(out / "run").save_config(saved, has_results=False)
    for args, expected in (
        ([], saved),
        (["--set", "train.lr=0.5"], None),
        (["--preset", "cpu"], cpu_config()),
    ):
        result = CliRunner().invoke(cli, ["run", str(data), "--out", str(out), "--resume", *args])
        assert result.exit_code == 0, result.output
        if expected is not None:
            assert configs[-1] == expected
    assert configs[1].model.widths == (28, 56, 112, 224, 448)  # explicit: today's rule
    # without --resume a first run starts from the paper preset
    CliRunner().invoke(cli, ["run", str(data), "--out", str(tmp_path / "new")])
    assert configs[-1].model == pipeline.Config().model

    demo = tmp_path / "demo"
    RunDir(demo / "results" / "run").save_config(saved, has_results=False)
    monkeypatch.setattr(
        demo_module,
        "run_demo",
        lambda out_dir, config, **kw: fake_run_pipeline(None, out_dir, config=config),
    )
    assert CliRunner().invoke(cli, ["demo", "--out", str(demo)]).exit_code == 0
    assert configs[-1] == saved
    assert (
        CliRunner().invoke(cli, ["demo", "--out", str(demo), "--set", "train.lr=0.5"]).exit_code
        == 0
    )
    assert configs[-1].model == demo_config().model and configs[-1].train.lr == 0.5


def test_changed_preset_error_names_the_run_preset(tmp_path):
    from brats_mtl.config import Config, save_config
    from brats_mtl.presets import cpu_config
    from brats_mtl.workspace.run_dir import RunDir

    run = RunDir(tmp_path / "run")
    run.checkpoint(0, "last").parent.mkdir(parents=True)
    run.checkpoint(0, "last").write_bytes(b"")
    save_config(cpu_config(), run.config_file)
    with pytest.raises(
        ValueError,
        match=r"the run was made with --preset cpu and this "
        r"configuration is --preset paper: pass --preset cpu",
    ):
        run.check_config(Config())
    save_config(demo_config(), run.config_file)  # matches no preset
    with pytest.raises(ValueError, match="pass the same --preset"):
        run.check_config(Config())
    save_config(cpu_config(), run.config_file)  # a --set change: drop it
    with pytest.raises(ValueError, match="drop the changed settings"):
        run.check_config(apply_overrides(cpu_config(), ["model.norm_groups=2"]))


def test_short_run_predicts_with_last_checkpoints(tmp_path, caplog):
    """train.max_steps below the first validation: no best.ckpt; the chain still ends."""
    import torch

    cohort = make_demo_cohort(
        tmp_path / "data", n_train=4, n_unlabeled=0, n_test=1, n_survival=4, shape=(24, 24, 24)
    )
    config = apply_overrides(
        demo_config(),
        ["train.n_folds=2", "train.max_steps=1", "train.val_every_n_epochs=5", "inference.tta=0"],
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with caplog.at_level("WARNING"):
            result = run_pipeline(
                cohort.train_dir,
                tmp_path / "out",
                config=config,
                test_dir=cohort.test_dir,
                progress=False,
            )
    finally:
        torch.set_num_threads(threads)
    assert result.table3.loc["Train set (out-of-fold)", "n_cases"] == 4
    assert not list((tmp_path / "out" / "run").glob("fold_*/checkpoints/best.ckpt"))
    text = caplog.text
    assert text.count("no best.ckpt will be written and last.ckpt will be used") == 2
    assert "fold 0 has no best.ckpt" in text and "fold 1 has no best.ckpt" in text


# --- resume without DATA_DIR; leaving recorded inputs out ---------------------------------


def test_run_resume_takes_the_recorded_data_dir(tmp_path, monkeypatch):
    """`run --resume` without DATA_DIR uses the recorded one; without --resume, or with
    nothing recorded, DATA_DIR is a missing argument (exit status 2)."""
    from click.testing import CliRunner

    from brats_mtl import training
    from brats_mtl.cli.main import cli

    cohort, inputs, out = _recorded_run(tmp_path)
    seen = []

    def stop_at_training(data_dir, run_dir, **kwargs):
        seen.append((data_dir, kwargs["unlabeled_dirs"]))
        raise ValueError("stopped before training")

    monkeypatch.setattr(training, "train_folds", stop_at_training)
    result = CliRunner().invoke(cli, ["run", "--out", str(out), "--resume"])
    assert result.exit_code == 1 and "stopped before training" in result.output, result.output
    assert seen == [(cohort.train_dir.resolve(), (cohort.unlabeled_dir.resolve(),))]
    for argv, message in (
        (["run", "--out", str(out)], "only --resume may leave it out"),
        (["run", "--out", str(tmp_path / "new"), "--resume"], "records no DATA_DIR"),
    ):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 2, result.output
        assert "Missing argument 'DATA_DIR'" in result.output and message in result.output
    # the API says the same
    with pytest.raises(ValueError, match="no DATA_DIR given and none recorded"):
        run_pipeline(None, tmp_path / "new2")
    assert not (tmp_path / "new2").exists()
    # --test and --no-test exclude each other
    result = CliRunner().invoke(
        cli, ["run", "--out", str(out), "--resume", "--no-test", "--test", str(cohort.test_dir)]
    )
    assert result.exit_code == 2 and "--test and --no-test exclude each other" in result.output


def test_resume_can_leave_out_a_recorded_test_folder_and_survival_table(tiny_run, tmp_path):
    """--no-test / --no-survival on a resumed run: no test row, no survival section; the
    tables and figures derived from them go, the test predictions stay."""
    import shutil

    from brats_mtl.workspace.ownership import read_run_inputs

    cohort, config, result = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(result.out_dir, out)
    again = run_pipeline(
        None,
        out,
        config=config,
        resume=True,
        progress=False,
        without=("test_dir", "survival_csv"),
        report_note="A note on the first lines.",
    )
    assert list(again.table3.index) == ["Train set (out-of-fold)"] and again.table4 is None
    pd.testing.assert_frame_equal(again.table3, result.table3.iloc[:1])
    for gone in (
        "tables/table4.csv",
        "tables/test_set_ensemble.csv",
        "survival",
        "figures/fig4_survival.png",
    ):
        assert not (out / gone).exists(), gone
    assert (out / "predictions" / "test" / "predictions.csv").is_file()  # kept
    report = again.report.read_text()
    assert report.splitlines()[:3] == ["# brats-mtl report", "", "A note on the first lines."]
    assert "## Survival" not in report and "Test set" not in report
    recorded = read_run_inputs(out)
    assert recorded.test_dir is None and recorded.survival_csv is None
    assert recorded.data_dir == cohort.train_dir.resolve()
    with pytest.raises(ValueError, match="only 'test_dir', 'survival_csv' can be left out"):
        run_pipeline(None, out, config=config, resume=True, without=("unlabeled_dirs",))


def test_demo_report_says_its_cohort_is_synthetic(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from brats_mtl import pipeline
    from brats_mtl.cli.main import cli

    notes = []

    def fake_run_pipeline(data_dir, out_dir, **kwargs):
        notes.append(kwargs["report_note"])
        return pipeline.PipelineResult(
            out_dir, out_dir / "report.md", pd.DataFrame({"Dice_WT": [1.0]}), None
        )

    monkeypatch.setattr(demo_module, "make_demo_cohort", _small_cohort)
    monkeypatch.setattr(demo_module, "run_pipeline", fake_run_pipeline)
    assert CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo")]).exit_code == 0
    (note,) = notes
    assert note.startswith("**Synthetic cohort: no patient data.**")
    assert "(2 labeled, 1 unlabeled and 1 test cases" in note  # _small_cohort's counts
    assert "BraTS2021_90000 and up" in note and "not BraTS 2021 cases" in note
