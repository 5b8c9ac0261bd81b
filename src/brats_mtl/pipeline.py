"""The whole chain: train the fold models, predict, evaluate, survival, figures, report.

``run_pipeline`` is what ``brats-mtl run`` and ``brats-mtl demo`` call. The output folder:

```
OUT/
  run/                      training run: config.yaml, splits.json, fold_K/ (checkpoints,
                            metrics.csv, validation.csv, training_curves.png), cache/
  predictions/out_of_fold/  each fold's model on its held-out cases (<ID>.nii.gz)
  predictions/test/         the fold ensemble on the test cases (when a test folder is given)
  tables/                   online-system CSVs per case (legacy and lesion-wise), table3.csv,
                            table4.csv, uncertainty_*.csv (with inference.uncertainty)
  figures/                  fig1_preprocessing.png, fig3_best.png, fig3_worst.png, fig4_survival.png,
                            uncertainty_best.png (with inference.uncertainty)
  survival/                 model.json, predictions.csv (when a survival table is given)
  report.md                 the tables and links to everything above
  .brats-mtl-output         marker: brats-mtl created this folder (version, command, the
                            run's inputs: --resume reuses those not given again)
```

Interrupted work resumes: training continues from each fold's last checkpoint and
prediction skips cases already written; tables, figures and the report are derived files
and are written again.

Overwriting is bounded by the marker (:func:`prepare_output_dir`): ``overwrite`` removes
only the entries listed above, and only in a folder that holds the marker, i.e. one that
brats-mtl created; a non-empty folder without it (a home or data folder given as
``--out`` by mistake) is refused. Inputs inside the output folder are refused too.

Source: paper sections 4-5 (Tables 3 and 4, Figs. 1, 3, 4); docs/design.md sections 4-8.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from brats_mtl import __version__
from brats_mtl.atomic import write_text_atomic
from brats_mtl.config import Config, InferenceConfig, LossConfig, ModelConfig, TrainConfig
from brats_mtl.conventions import REGION_ORDER

if TYPE_CHECKING:  # numpy and pandas are imported where used: the CLI reads the presets
    import pandas as pd

logger = logging.getLogger(__name__)

#: Column order of the paper's Table 3 (mean over cases, online-system definitions).
TABLE3_COLUMNS = tuple(f"Dice_{r}" for r in REGION_ORDER) + tuple(
    f"Hausdorff95_{r}" for r in REGION_ORDER
)


def table3_columns(scheme: str | None = None) -> tuple[str, ...]:
    """Table 3 columns of a label scheme: Dice then HD95 of each of its regions.

    The three-label schemes (and None) give :data:`TABLE3_COLUMNS`; ``gli-post`` and
    ``ped2024`` add their single-label regions (NETC, SNFH, RC; NET, CC, ED) after ET,
    WT, TC (``brats_mtl.tasks``).
    """
    from brats_mtl.tasks import network_classes

    regions = network_classes(scheme).regions
    if tuple(regions) == REGION_ORDER or scheme is None:
        return TABLE3_COLUMNS
    return tuple(f"Dice_{r}" for r in regions) + tuple(f"Hausdorff95_{r}" for r in regions)


#: Column order of the paper's Table 4.
TABLE4_COLUMNS = ("Accuracy", "MSE", "medianSE", "stdSE", "SpearmanR")

#: File that marks a folder created by brats-mtl (``run``/``demo`` output folders).
OUTPUT_MARKER = ".brats-mtl-output"
#: What ``brats-mtl run`` writes in its output folder (all that ``overwrite`` removes).
RUN_OUTPUTS = ("run", "predictions", "tables", "figures", "survival", "report.md")
#: What ``brats-mtl demo`` writes in its output folder: ``data/`` (the cohort it generated)
#: and ``results/``, where ``overwrite`` removes only what ``run`` writes
#: (:data:`RUN_OUTPUTS`) and keeps other files.
DEMO_OUTPUTS = ("data", "results")
#: What ``brats-mtl train`` writes in a fold folder ``RUN_DIR/fold_K`` (all that
#: ``train --overwrite`` removes there).
FOLD_OUTPUTS = ("checkpoints", "logs", "metrics.csv", "validation.csv", "training_curves.png")
#: Output entries per command, entries removed only in part (name -> what is removed
#: inside), and the files that show an output folder written before the marker existed
#: (such a folder may be resumed, never overwritten).
_OUTPUTS = {
    "run": (RUN_OUTPUTS, {}, (Path("run") / "config.yaml",)),
    "demo": (DEMO_OUTPUTS, {"results": RUN_OUTPUTS}, (Path("results") / "run" / "config.yaml",)),
    "train": (
        ("config.yaml", "splits.json", "cache", "fold_K"),
        {},
        (Path("config.yaml"), Path("splits.json")),
    ),
}

#: Names accepted by :func:`preset_config` (``--preset`` of ``run`` and ``train``).
PRESET_NAMES = ("paper", "cpu")
#: The ``--preset`` help shared by the commands that take it.
PRESET_HELP = (
    "paper: the paper's network (GPU); cpu: a quarter-width network on 64^3 patches that "
    "trains on a CPU in minutes."
)


def cpu_config(base: Config | None = None) -> Config:
    """The CPU-sized preset for real BraTS data on a machine without a GPU.

    The paper's architecture with widths (8, 16, 32, 64, 128) instead of (28, ..., 448), 64^3
    patches taken at random from each case, a fixed step budget and a learning rate of
    1e-3 (the paper's 1e-4 barely moves this network in 300 steps; 1e-3 reached held-out
    Dice WT/TC/ET of about 0.7-0.8 on the five sample cases, see the README's real-data
    run). Fits a 2-core laptop. Not the paper's network: its numbers are not the paper's.
    Inference uses 4 mirror passes, as the paper, 8 windows per forward pass: PyTorch
    runs a 3-D convolution of a single narrow sample on its slow native path rather
    than oneDNN (its ``use_mkldnn`` rule), which made one window at a time about 3x
    slower per window at these widths (``benchmarks/bench_inference.py --configs cpu``).
    Validation during training uses the same batch.
    """
    base = base or Config()
    return replace(
        base,
        model=replace(
            base.model,
            widths=(8, 16, 32, 64, 128),
            vae_hidden_channels=32,
            latent_channels=16,
            classifier_channels=(32, 16),
            classifier_hidden=16,
            patch_size=64,
        ),
        train=replace(
            base.train,
            patch_sampling="random",
            random_patches_per_case=4,
            max_epochs=1000,
            lr=1e-3,
            max_steps=300,
            val_every_n_epochs=10,
        ),
        inference=replace(base.inference, window_batch_size=8),
    )


def demo_config() -> Config:
    """The demo's preset: a tiny network (widths 8..32) on 32^3 patches, a short schedule.

    Sized so that the whole demo (5 folds) trains, predicts and reports in a few minutes
    on 2 CPU cores. Where it departs from the paper to make the ET classifier work in 320
    steps instead of the paper's 300 epochs (measured with the demo's training step on its
    cohort, five folds):

    - learning rates: the shared encoder at the paper's 1e-4, the decoders at 3e-3, the
      classifier at 1e-3. With 3e-3 everywhere the deep encoder stages stopped depending
      on the input within 20 steps and the classifier gave one probability for every
      case of a fold (0.68-0.94), so ET suppression never fired
      (``MultiTaskModule.parameter_groups``);
    - CE weight 1 instead of the paper's 0.1: with 0.1 the shared encoder's bottleneck
      did not learn ET presence within the schedule (the classifier stayed at the prior
      in 2 of 5 folds after 320 steps; with 1, in none);
    - Dense1 of the classifier at Table 2's 32 units (with dropout 0.5 an 8-unit layer
      keeps 4 on average).
    """
    return Config(
        model=ModelConfig(
            widths=(8, 12, 16, 24, 32),
            vae_hidden_channels=8,
            latent_channels=4,
            classifier_channels=(16, 8),
            classifier_hidden=32,
            patch_size=32,
        ),
        loss=LossConfig(w_ce=1.0),
        train=TrainConfig(
            lr=1e-4,
            decoder_lr_scale=30.0,
            classifier_lr_scale=10.0,
            max_epochs=1000,
            max_steps=320,
            patch_sampling="random",
            random_patches_per_case=4,
            # 20 steps an epoch (10 cases x 4 patches / batch 2): validations at steps 80,
            # 160, 240, 320, four points on each fold's curve
            val_every_n_epochs=4,
            log_every_n_steps=5,
        ),
        inference=InferenceConfig(tta=4, et_min_voxels=50, window_batch_size=4),
    )


def preset_config(name: str) -> Config:
    """The configuration of a ``--preset`` name (see :data:`PRESET_HELP`).

    Args:
        name: ``"paper"`` (the paper's defaults, ``Config()``) or ``"cpu"``
            (:func:`cpu_config`).

    Raises:
        ValueError: on another name (lists the known ones).
    """
    if name == "paper":
        return Config()
    if name == "cpu":
        return cpu_config()
    raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")


def _load_marker(out_dir: str | Path) -> dict | None:
    """The marker's YAML mapping as written (None without a marker, {} when unreadable)."""
    import yaml

    path = Path(out_dir) / OUTPUT_MARKER
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_output_marker(out_dir: str | Path) -> dict[str, str] | None:
    """The marker of a folder that brats-mtl created, or None when it has none.

    Returns:
        The marker's fields (``brats_mtl_version``, ``command``, ``command_line``,
        ``created``) as strings; an unreadable marker gives an empty dict (still a
        marker). The recorded inputs of a ``run`` are read by :func:`read_run_inputs`.
    """
    data = _load_marker(out_dir)
    if data is None:
        return None
    return {str(k): str(v) for k, v in data.items() if k != "inputs"}


def write_output_marker(
    out_dir: str | Path,
    command: str,
    command_line: str | None = None,
    inputs: RunInputs | None = None,
) -> Path:
    """Write ``OUT/.brats-mtl-output``: this folder was created by brats-mtl ``command``.

    Args:
        out_dir: the output folder (exists).
        command: ``"run"``, ``"demo"`` or ``"train"``.
        command_line: the command as typed, for the record (default: the command name).
        inputs: the inputs of a ``run`` (see :func:`record_run_inputs`).

    Returns:
        The marker's path.
    """
    fields = {
        "brats_mtl_version": __version__,
        "command": command,
        "command_line": command_line or f"brats-mtl {command}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return _write_marker(Path(out_dir), fields, inputs)


def _write_marker(out: Path, fields: dict, inputs: RunInputs | None) -> Path:
    """Write the marker atomically: ``fields`` (``command`` among them) and ``inputs``."""
    import yaml

    command = fields["command"]
    entries = ", ".join(_OUTPUTS[command][0])
    fields = {k: v for k, v in fields.items() if k != "inputs"}
    if inputs is not None:
        fields["inputs"] = inputs.as_record()
    text = (
        f"# brats-mtl {command} created this folder. --overwrite removes only what it writes\n"
        f"# here ({entries}); other files are kept.\n" + yaml.safe_dump(fields, sort_keys=False)
    )
    return write_text_atomic(out / OUTPUT_MARKER, text, overwrite=True)


@dataclass(frozen=True)
class RunInputs:
    """The inputs of a ``brats-mtl run``, recorded in its output folder's marker so that
    ``--resume`` continues with them (:func:`resolve_run_inputs`).

    Attributes:
        data_dir: the labeled cohort (``DATA_DIR``); None when not given (``--resume``
            then takes the recorded one).
        unlabeled_dirs: the ``--unlabeled`` folders (empty: none).
        test_dir: the ``--test`` folder, or None.
        survival_csv: the ``--survival`` table, or None.
    """

    data_dir: Path | None
    unlabeled_dirs: tuple[Path, ...] = ()
    test_dir: Path | None = None
    survival_csv: Path | None = None

    def resolved(self) -> RunInputs:
        """The same inputs as absolute paths with symbolic links resolved."""
        return RunInputs(
            None if self.data_dir is None else Path(self.data_dir).resolve(),
            tuple(Path(u).resolve() for u in self.unlabeled_dirs),
            None if self.test_dir is None else Path(self.test_dir).resolve(),
            None if self.survival_csv is None else Path(self.survival_csv).resolve(),
        )

    def as_record(self) -> dict:
        """The marker's ``inputs`` mapping (strings; None for an input not given)."""
        return {
            "data_dir": None if self.data_dir is None else str(self.data_dir),
            "unlabeled_dirs": [str(u) for u in self.unlabeled_dirs],
            "test_dir": None if self.test_dir is None else str(self.test_dir),
            "survival_csv": None if self.survival_csv is None else str(self.survival_csv),
        }

    def as_inputs(self) -> list[tuple[str, Path]]:
        """``(what, path)`` of each input given, as :func:`prepare_output_dir` takes them."""
        inputs = [("--unlabeled folder", u) for u in self.unlabeled_dirs]
        if self.data_dir is not None:
            inputs.insert(0, ("DATA_DIR", self.data_dir))
        if self.test_dir is not None:
            inputs.append(("--test folder", self.test_dir))
        if self.survival_csv is not None:
            inputs.append(("--survival table", self.survival_csv))
        return inputs


def read_run_inputs(out_dir: str | Path) -> RunInputs | None:
    """The inputs recorded in the marker of a ``brats-mtl run`` output folder.

    Returns:
        The recorded :class:`RunInputs` (resolved paths), or None when ``out_dir`` has no
        marker, holds another command's output, or its marker predates recorded inputs
        (or cannot be read).
    """
    data = _load_marker(out_dir)
    if not data or data.get("command") != "run" or not isinstance(data.get("inputs"), dict):
        return None
    record = data["inputs"]
    if not record.get("data_dir"):
        return None
    unlabeled = record.get("unlabeled_dirs") or []
    if isinstance(unlabeled, str):
        unlabeled = [unlabeled]
    return RunInputs(
        Path(str(record["data_dir"])),
        tuple(Path(str(u)) for u in unlabeled),
        Path(str(record["test_dir"])) if record.get("test_dir") else None,
        Path(str(record["survival_csv"])) if record.get("survival_csv") else None,
    )


def record_run_inputs(out_dir: str | Path, inputs: RunInputs) -> None:
    """Record ``inputs`` in the marker of the ``run`` output folder ``out_dir`` (atomic
    rewrite; the marker's other fields are kept). A folder without a ``run`` marker (an
    output of a version without markers) is left as it is: writing one would let
    ``--overwrite`` remove files there.

    Source: docs/design.md section 8 (outputs); the README's rules on outputs.
    """
    out = Path(out_dir)
    data = _load_marker(out)
    if data is None or data.get("command") != "run":
        return
    fields = {"brats_mtl_version": __version__, "command": "run", **data}
    _write_marker(out, fields, inputs.resolved())


#: Option name and :class:`RunInputs` field of each input that ``--resume`` may reuse.
_RESUMABLE = (
    ("DATA_DIR", "data_dir"),
    ("--unlabeled", "unlabeled_dirs"),
    ("--test", "test_dir"),
    ("--survival", "survival_csv"),
)


def resolve_run_inputs(
    out_dir: str | Path, given: RunInputs, *, resume: bool, without: Collection[str] = ()
) -> RunInputs:
    """The inputs a ``run`` uses: on ``resume``, those recorded in ``out_dir``'s marker for
    any not given (``data_dir`` None, ``unlabeled_dirs`` empty, ``test_dir``/
    ``survival_csv`` None), with one INFO line naming them; a given input that differs
    from the recorded one wins, with a WARNING naming old -> new. An input named in
    ``without`` is not reused (``run --no-test``, ``--no-survival``), with an INFO line
    naming the recorded one.

    Without ``resume``, or without recorded inputs (a new folder, an output of an older
    version), ``given`` is returned as it is.

    Args:
        out_dir: the ``run`` output folder.
        given: the inputs given on the command line.
        resume: ``--resume``.
        without: recorded inputs not to reuse: ``"test_dir"``, ``"survival_csv"``
            (:data:`DROPPABLE_INPUTS`).

    Returns:
        The :class:`RunInputs` to use.

    Raises:
        FileNotFoundError: if a recorded input that is not given again no longer exists
            (the message names it and says to pass it again or to use ``--overwrite``).
        ValueError: if ``without`` names another input, or one that ``given`` holds.

    Source: the README's rules on outputs (a resumed run reports what its first run reported).
    """
    for name in without:
        if name not in DROPPABLE_INPUTS:
            raise ValueError(
                f"without={name!r}: only {', '.join(map(repr, DROPPABLE_INPUTS))} can be left out"
            )
        if getattr(given, name) is not None:
            option, no_option = _DROP_OPTIONS[name]
            raise ValueError(f"{option} and {no_option} exclude each other; choose one")
    recorded = read_run_inputs(out_dir) if resume else None
    if recorded is None:
        return given
    marker = Path(out_dir) / OUTPUT_MARKER
    new = given.resolved()
    chosen: dict[str, object] = {}
    reused: list[str] = []
    for option, name in _RESUMABLE:
        old, now = _paths(getattr(recorded, name)), _paths(getattr(new, name))
        if name in without:
            chosen[name] = None
            if old:
                logger.info(
                    "--resume: not reusing %s %s recorded in %s (%s)",
                    option,
                    " ".join(map(str, old)),
                    marker,
                    _DROP_OPTIONS[name][1],
                )
            continue
        if not now:  # not given: the recorded one, which must still be there
            chosen[name] = getattr(recorded, name)
            for path in old:
                if not path.exists():
                    raise FileNotFoundError(
                        f"{option} {path} recorded in {marker} for this run no longer exists; "
                        f"pass {option} again (where it is now), or start again with --overwrite"
                    )
            if old:
                reused.append(f"{option} {' '.join(map(str, old))}")
            continue
        chosen[name] = getattr(given, name)
        if old and old != now:
            logger.warning(
                "--resume: %s differs from the one recorded in %s: %s -> %s (the new one is "
                "used and recorded)",
                option,
                marker,
                " ".join(map(str, old)),
                " ".join(map(str, now)),
            )
    if reused:
        logger.info("--resume: reusing the inputs recorded in %s: %s", marker, "; ".join(reused))
    return RunInputs(**chosen)


#: Recorded inputs that a resumed ``run`` may leave out (``without``).
DROPPABLE_INPUTS = ("test_dir", "survival_csv")
#: The option giving each droppable input, and the one leaving it out.
_DROP_OPTIONS = {
    "test_dir": ("--test", "--no-test"),
    "survival_csv": ("--survival", "--no-survival"),
}
#: Files of ``run``'s output folder derived from each droppable input: removed when a
#: resumed run leaves that input out, so no table or figure outlives the report's rows.
#: (The test predictions, ``predictions/test``, are kept: they are costly to make again.)
_DERIVED_OUTPUTS = {
    "test_dir": ("tables/test_set_ensemble.csv",),
    "survival_csv": ("survival", "tables/table4.csv", "figures/fig4_survival.png"),
}


def _remove_derived_outputs(out: Path, without: Collection[str]) -> None:
    """Remove what ``run`` derived from the inputs in ``without`` (a resumed run that
    leaves them out), in a folder that ``run`` marked as its own."""
    marker = read_output_marker(out)
    if marker is None or marker.get("command") != "run":
        return
    for name in without:
        for rel in _DERIVED_OUTPUTS[name]:
            path = out / rel
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            logger.info(
                "%s: removed %s (derived from the input left out)", _DROP_OPTIONS[name][1], path
            )


def _paths(value: Path | tuple[Path, ...] | None) -> tuple[Path, ...]:
    return () if value is None else value if isinstance(value, tuple) else (value,)


def _check_inputs_outside(out: Path, inputs: Iterable[tuple[str, str | Path]]) -> None:
    """Refuse inputs equal to or inside the output folder, and an output folder inside an
    input folder (see :func:`prepare_output_dir`)."""
    out_real = out.resolve()
    inputs = [(what, Path(path), Path(path).resolve()) for what, path in inputs]
    for what, path, real in inputs:
        if real == out_real or out_real in real.parents:
            raise ValueError(
                f"{what} {path} is inside the output folder {out}: brats-mtl keeps its outputs "
                "apart from its inputs so that --overwrite can never delete input data; "
                f"choose an --out folder outside {path}"
            )
    for what, path, real in inputs:
        if real in out_real.parents:
            raise ValueError(
                f"the output folder {out} is inside {what} {path}: brats-mtl keeps its outputs "
                "apart from its inputs (its files there would be read as input data); "
                f"choose an --out folder outside {path}"
            )


def _remove_outputs(
    folder: Path, entries: Iterable[str], nested: dict[str, tuple[str, ...]], what: str
) -> list[str]:
    """Remove ``entries`` of ``folder`` (for a name in ``nested``, only the entries listed
    there inside it); log a WARNING naming what is removed and what is kept.

    Returns:
        The names kept (relative to ``folder``).
    """
    entries = tuple(entries)
    present = [name for name in entries if (folder / name).exists() or (folder / name).is_symlink()]
    whole = [
        name
        for name in present
        if name not in nested or (folder / name).is_symlink() or not (folder / name).is_dir()
    ]
    if whole:
        logger.warning("--overwrite: removing %s from %s", ", ".join(whole), folder)
    kept: list[str] = []
    for name in present:
        path = folder / name
        if name in whole:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            continue
        inner = _remove_outputs(path, nested[name], {}, what)
        if not [p for p in path.iterdir() if p.name != OUTPUT_MARKER]:
            shutil.rmtree(path)  # nothing of the user's left: the folder goes too
        kept += [f"{name}/{k}" for k in inner]
    others = sorted(p.name for p in folder.iterdir() if p.name not in (*entries, OUTPUT_MARKER))
    if others:
        logger.warning(
            "--overwrite: kept %s in %s (not written by %s)", ", ".join(others), folder, what
        )
    return kept + others


def _claim_folder(
    out: Path,
    command: str,
    *,
    overwrite: bool,
    inputs: Iterable[tuple[str, str | Path]],
    command_line: str | None,
) -> str:
    """Check the inputs and tell whose folder ``out`` is; create it when new.

    Returns:
        ``"new"`` (absent or empty: created, marker written), ``"ours"`` (marker of
        ``command``) or ``"legacy"`` (no marker, but the files of an older output of
        ``command``).

    Raises:
        ValueError: if an input and ``out`` are nested.
        FileExistsError: if ``out`` is a file, holds another command's output, or is a
            non-empty folder that is neither ours nor legacy.
    """
    _check_inputs_outside(out, inputs)
    if out.exists() and not out.is_dir():
        raise FileExistsError(
            f"--out {out} is a file; give a folder (new or empty) for the outputs"
        )
    _, _, legacy = _OUTPUTS[command]
    if not out.exists() or not [p for p in out.iterdir() if p.name != OUTPUT_MARKER]:
        # absent, empty, or left with only the marker by an attempt that failed at once
        out.mkdir(parents=True, exist_ok=True)
        write_output_marker(out, command, command_line)
        return "new"
    marker = read_output_marker(out)
    if marker is None:
        why = _not_created_by_us(out)
        if all((out / path).is_file() for path in legacy) and _is_brats_mtl_config(out / legacy[0]):
            return "legacy"  # an output of a version without markers
        if overwrite:
            raise FileExistsError(_refuse_overwrite(out))
        raise FileExistsError(f"{why}; give a new or empty --out folder")
    made_by = marker.get("command", command)
    if made_by != command:
        hint = " (its training run is the run/ folder inside it)" if command == "train" else ""
        raise FileExistsError(
            f"{out} holds the output of `brats-mtl {made_by}` ({out / OUTPUT_MARKER}); give "
            f"`brats-mtl {command}` another --out folder{hint}"
        )
    return "ours"


def _not_created_by_us(out: Path) -> str:
    return (
        f"{out} is not empty and has no {OUTPUT_MARKER} file, so brats-mtl did not create "
        "it and cannot tell its own files from yours"
    )


def _refuse_overwrite(out: Path) -> str:
    return (
        f"refusing to --overwrite {out}: {_not_created_by_us(out)}. Give a new or empty --out "
        "folder, or delete the folder yourself if it holds nothing else"
    )


def _is_brats_mtl_config(path: Path) -> bool:
    """True when ``path`` reads as a brats-mtl configuration (known sections and keys)."""
    from brats_mtl.config import load_config

    try:
        load_config(path)
    except (OSError, ValueError, TypeError):
        return False
    return True


def prepare_run_dir(
    run_dir: str | Path,
    *,
    overwrite: bool = False,
    inputs: Iterable[tuple[str, str | Path]] = (),
    command_line: str | None = None,
) -> bool:
    """Create or accept the run folder of ``brats-mtl train`` (also ``OUT/run`` of ``run``).

    - absent or empty folder: created, and the marker :data:`OUTPUT_MARKER` written;
    - a folder with the marker of ``train``, or (runs written before markers existed) a
      brats-mtl ``config.yaml`` and a ``splits.json``: accepted (``overwrite`` then
      applies fold by fold: see :func:`clear_fold_dir`);
    - any other non-empty folder (e.g. an nnU-Net results folder): refused, with or
      without ``overwrite``.

    Args:
        run_dir: the run folder.
        overwrite: only changes the message of a refusal.
        inputs: ``(what, path)`` of every input folder; ``run_dir`` and each must not be
            equal or nested.
        command_line: recorded in the marker.

    Returns:
        True when the folder already held a run, False when it starts empty.

    Raises:
        ValueError: if ``run_dir`` and an input are equal or nested.
        FileExistsError: if ``run_dir`` is a file, holds another command's output or is
            a non-empty folder that brats-mtl did not create.

    Source: the README's rules on outputs (never overwrite inputs; refuse to overwrite without a
    flag).
    """
    state = _claim_folder(
        Path(run_dir), "train", overwrite=overwrite, inputs=inputs, command_line=command_line
    )
    return state != "new"


def clear_fold_dir(fold_path: str | Path) -> None:
    """``train --overwrite`` of one fold: remove what training wrote in ``RUN_DIR/fold_K``
    (:data:`FOLD_OUTPUTS`), keeping other files with a WARNING; the folder goes when
    nothing else is left.

    Source: the README's rules on outputs.
    """
    path = Path(fold_path)
    if not path.is_dir():
        return
    _remove_outputs(path, FOLD_OUTPUTS, {}, "brats-mtl train")
    if not any(path.iterdir()):
        path.rmdir()


def prepare_output_dir(
    out_dir: str | Path,
    command: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    inputs: Iterable[tuple[str, str | Path]] = (),
    command_line: str | None = None,
) -> bool:
    """Create, reuse or clear the output folder of ``brats-mtl run`` / ``demo``.

    - absent or empty folder (or one holding only the marker): created, and the marker
      :data:`OUTPUT_MARKER` written;
    - a folder with the marker of ``command``: ``resume`` reuses it; ``overwrite`` removes
      only what ``command`` writes there (:data:`RUN_OUTPUTS`; for the demo ``data/`` and,
      inside ``results/``, :data:`RUN_OUTPUTS`), keeps any other file (with a WARNING),
      and writes the marker again;
    - a non-empty folder without the marker: refused with ``overwrite`` (brats-mtl did
      not create it, so it may hold anything); ``resume`` is allowed only when it looks
      like an output of ``command`` written before the marker existed (a ``run/config.yaml``
      is there); otherwise refused.

    Args:
        out_dir: the output folder.
        command: ``"run"`` or ``"demo"``.
        resume: continue the work in an existing output folder.
        overwrite: start again (see above for what is removed).
        inputs: ``(what, path)`` of every input (e.g. ``("DATA_DIR", data_dir)``); each must
            lie outside ``out_dir``, and ``out_dir`` outside each.
        command_line: recorded in the marker.

    Returns:
        True when an existing output was reused (resume), False when the folder starts
        empty.

    Raises:
        ValueError: if an input is ``out_dir`` or inside it (or ``out_dir`` inside an
            input folder), if both ``resume`` and ``overwrite`` are set, or on an unknown
            ``command``.
        FileExistsError: if ``out_dir`` is a file, holds another command's output, is a
            non-empty folder without the marker (the message names the folder and why),
            or is a non-empty output folder and neither ``resume`` nor ``overwrite`` is set.

    Source: the README's rules on outputs (never overwrite inputs; refuse to overwrite without a
    flag).
    """
    if command not in ("run", "demo"):
        raise ValueError(f"unknown command {command!r}; choose one of ['demo', 'run']")
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other; choose one")
    out = Path(out_dir)
    state = _claim_folder(
        out, command, overwrite=overwrite, inputs=inputs, command_line=command_line
    )
    if state == "new":
        return False
    if state == "legacy":  # may be resumed, never overwritten: it may hold anything else
        if overwrite:
            raise FileExistsError(_refuse_overwrite(out))
        if resume:
            logger.info("resuming in %s (written before %s files existed)", out, OUTPUT_MARKER)
            return True
        raise FileExistsError(
            f"{_not_created_by_us(out)}. It looks like the output of an older brats-mtl "
            f"{command}: pass --resume to continue it, or give a new or empty --out folder"
        )
    if overwrite:
        entries, nested, _ = _OUTPUTS[command]
        _remove_outputs(out, entries, nested, f"brats-mtl {command}")
        write_output_marker(out, command, command_line)
        return False
    if not resume:
        raise FileExistsError(
            f"output folder {out} is not empty; pass resume (--resume) to continue the work "
            "there or overwrite (--overwrite) to start again"
        )
    return True


@contextlib.contextmanager
def removed_if_unused_on_failure(folder: str | Path, *, enabled: bool = True) -> Iterator[None]:
    """Within the block, a command that fails before writing anything leaves no output
    folder behind.

    Only a folder that was absent, empty or held only the marker before the block is
    touched. When the block raises (an error, Ctrl-C or SIGTERM) and such a folder holds
    nothing but :data:`OUTPUT_MARKER` files and empty folders (e.g. the data folder held
    no case, so nothing was written after the folder was claimed), those are removed, and
    the folder itself when it did not exist before. A folder holding any other file is
    left as it is: a retry reuses what it holds (e.g. the cases cached so far).

    Args:
        folder: the output folder the block claims (``--out``).
        enabled: False leaves everything as it is (processes other than rank 0 of a
            distributed launch, which do not claim the folder).
    """
    folder = Path(folder)
    existed = folder.exists() or folder.is_symlink()
    fresh = not existed or (
        folder.is_dir()
        and not folder.is_symlink()
        and all(p.name == OUTPUT_MARKER for p in folder.iterdir())
    )
    try:
        yield
    except BaseException:
        if enabled and fresh:
            _remove_if_unused(folder, keep_folder=existed)
        raise


def _remove_if_unused(folder: Path, *, keep_folder: bool) -> None:
    """Remove ``folder``'s markers and empty sub-folders when that is all it holds."""
    if folder.is_symlink() or not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        if any(name != OUTPUT_MARKER for name in files) or any(
            (Path(root) / name).is_symlink() for name in dirs
        ):
            return  # something was written: kept for the retry
    try:
        for root, dirs, files in os.walk(folder, topdown=False):
            for name in files:
                (Path(root) / name).unlink()
            for name in dirs:
                (Path(root) / name).rmdir()
        if not keep_folder:
            folder.rmdir()
    except OSError as err:  # the command's own error matters more than this clean-up
        logger.debug("could not remove the unused output folder %s: %s", folder, err)
        return
    logger.debug("removed the unused output folder %s", folder)


@dataclass
class PipelineResult:
    """What ``run_pipeline`` produced.

    Attributes:
        out_dir: the output folder.
        report: ``OUT/report.md``.
        table3: the paper's Table 3 layout (rows: data sets; columns: TABLE3_COLUMNS).
        table4: the paper's Table 4 layout, or None without a survival table.
        figures: name -> PNG path.
    """

    out_dir: Path
    report: Path
    table3: pd.DataFrame
    table4: pd.DataFrame | None
    figures: dict[str, Path] = field(default_factory=dict)


def run_pipeline(
    data_dir: str | Path | None,
    out_dir: str | Path,
    *,
    config: Config | None = None,
    unlabeled_dirs: tuple[str | Path, ...] = (),
    test_dir: str | Path | None = None,
    survival_csv: str | Path | None = None,
    folds: tuple[int, ...] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    command_line: str | None = None,
    labels: str | None = None,
    without: Collection[str] = (),
    report_note: str | None = None,
) -> PipelineResult:
    """Train, predict out-of-fold (and on a test folder), evaluate, fit survival, report.

    The label scheme of the data (``tasks``; ``labels`` or inferred when training)
    decides the network's classes, the values written and the regions of the tables and
    the report (ET, WT, TC, then e.g. NETC, SNFH, RC for ``gli-post``).

    Args:
        data_dir: labeled BraTS cohort in any supported layout (cross-validated); None
            with ``resume``: the one recorded when the run started.
        out_dir: output folder (layout in the module docstring).
        config: configuration; default the paper's.
        unlabeled_dirs: folders of unlabeled cases for the VAE branch.
        test_dir: optional cohort predicted by the fold ensemble (majority vote) and, when
            labeled, evaluated as the paper's validation/test rows.
        survival_csv: optional BraTS survival table for the age regression (Table 4, Fig. 4).
        folds: folds to train and use; default all ``config.train.n_folds``.
        resume: continue in an existing output folder; ``unlabeled_dirs``, ``test_dir``
            and ``survival_csv`` not given are those recorded when the run started (see
            :func:`resolve_run_inputs`), so the tables and report keep their rows.
        overwrite: start again: remove what an earlier run wrote in ``out_dir`` (only in a
            folder brats-mtl created; see :func:`prepare_output_dir`).
        progress: progress bars.
        command_line: recorded in the output folder's marker file.
        labels: the data's label scheme (``--labels``); default: inferred from the data.
        without: with ``resume``, recorded inputs not to reuse: ``"test_dir"`` (no
            test-set row), ``"survival_csv"`` (no survival section); what the run derived
            from them (``tables/test_set_ensemble.csv``; ``survival/``,
            ``tables/table4.csv``, ``figures/fig4_survival.png``) is removed, the test
            predictions are kept.
        report_note: a paragraph placed right under the report's title (the demo says
            there that its cohort is synthetic).

    Returns:
        A :class:`PipelineResult`.

    Raises:
        FileExistsError: if ``out_dir`` is a non-empty folder and neither ``resume`` nor
            ``overwrite`` is set, or ``overwrite`` is set for a non-empty folder that
            brats-mtl did not create (see :func:`prepare_output_dir`).
        ValueError: if an input lies inside ``out_dir``; if no ``data_dir`` is given and
            none is recorded; if ``without`` names an input that is given; from the
            stages (bad data, bad configuration, a survival table with bad ages).
        FileNotFoundError: on ``resume``, if a recorded input not given again no longer
            exists; from the stages.
        brats_mtl.training.runner.Terminated: on SIGTERM during training (exit status 143).

    A command that fails before it writes anything (e.g. a DATA_DIR without cases)
    leaves no output folder behind (:func:`removed_if_unused_on_failure`).

    Source: paper sections 4-5; docs/design.md sections 4-8.
    """
    with removed_if_unused_on_failure(out_dir):
        return _run_pipeline(
            data_dir,
            out_dir,
            config=config,
            unlabeled_dirs=unlabeled_dirs,
            test_dir=test_dir,
            survival_csv=survival_csv,
            folds=folds,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            command_line=command_line,
            without=without,
            report_note=report_note,
            labels=labels,
        )


def _run_pipeline(
    data_dir: str | Path | None,
    out_dir: str | Path,
    *,
    config: Config | None,
    unlabeled_dirs: tuple[str | Path, ...],
    test_dir: str | Path | None,
    survival_csv: str | Path | None,
    folds: tuple[int, ...] | None,
    resume: bool,
    overwrite: bool,
    progress: bool,
    command_line: str | None,
    without: Collection[str],
    report_note: str | None,
    labels: str | None,
) -> PipelineResult:
    """:func:`run_pipeline` inside its clean-up on failure."""
    from brats_mtl.evaluation import evaluate_folders, write_results_csv
    from brats_mtl.predict import predict_cohort
    from brats_mtl.survival import read_survival_csv
    from brats_mtl.training import train_folds

    out = Path(out_dir)
    run_inputs = resolve_run_inputs(
        out,
        RunInputs(
            None if data_dir is None else Path(data_dir),
            tuple(Path(u) for u in unlabeled_dirs),
            None if test_dir is None else Path(test_dir),
            None if survival_csv is None else Path(survival_csv),
        ),
        resume=resume and not overwrite,
        without=without,
    )
    if run_inputs.data_dir is None:
        raise ValueError(
            f"no DATA_DIR given and none recorded in {out / OUTPUT_MARKER}: give the "
            "labeled cohort (DATA_DIR)"
            + ("" if resume else "; --resume takes the one a run recorded")
        )
    data_dir, unlabeled_dirs = run_inputs.data_dir, run_inputs.unlabeled_dirs
    test_dir, survival_csv = run_inputs.test_dir, run_inputs.survival_csv
    # read the survival table first: a bad table fails before hours of training
    survival_table = read_survival_csv(survival_csv) if survival_csv is not None else None
    prepare_output_dir(
        out,
        "run",
        resume=resume,
        overwrite=overwrite,
        inputs=run_inputs.as_inputs(),
        command_line=command_line,
    )
    record_run_inputs(out, run_inputs)  # what --resume reuses when not given again
    if resume and not overwrite:
        _remove_derived_outputs(out, without)
    config = config or Config()
    if labels is not None:
        config = replace(config, train=replace(config.train, labels=labels))
    run_dir = out / "run"
    tables = out / "tables"
    figures = out / "figures"
    fold_list = tuple(range(config.train.n_folds)) if folds is None else tuple(folds)

    logger.info("training folds %s in %s", fold_list, run_dir)
    has_checkpoint = {
        f: (run_dir / f"fold_{f}" / "checkpoints" / "last.ckpt").exists() for f in fold_list
    }
    for fold in fold_list:
        train_folds(
            data_dir,
            run_dir,
            folds=[fold],
            config=config,
            unlabeled_dirs=tuple(unlabeled_dirs),
            resume=has_checkpoint[fold],
            enable_progress_bar=progress,
            command_line=command_line,
        )

    from brats_mtl.training import read_run_config

    scheme = read_run_config(run_dir).train.labels  # None: the paper's classes
    # A fold whose training ended before its first validation has no best.ckpt;
    # predict_cohort then uses its last.ckpt, with a WARNING, fold by fold.
    logger.info("out-of-fold prediction")
    oof_dir = out / "predictions" / "out_of_fold"
    predict_cohort(  # each fold predicts its own held-out cases
        run_dir,
        data_dir,
        oof_dir,
        config=config,
        which="best",
        out_of_fold=True,
        folds=list(fold_list),
        progress=progress,
    )
    oof_cases, missing = evaluate_folders(oof_dir, data_dir, labels=scheme)
    _report_missing("out-of-fold", missing)
    write_results_csv(oof_cases, tables / "train_set_out_of_fold.csv", overwrite=True)
    oof_lesionwise = _lesionwise_table(oof_dir, data_dir, tables, scheme)
    rows = {"Train set (out-of-fold)": oof_cases}

    if test_dir is not None:
        logger.info("fold-ensemble prediction of %s", test_dir)
        test_pred = out / "predictions" / "test"
        predict_cohort(
            run_dir,
            test_dir,
            test_pred,
            config=config,
            folds=list(fold_list),
            which="best",
            progress=progress,
        )
        if _has_labels(test_dir):
            test_cases, missing = evaluate_folders(test_pred, test_dir, labels=scheme)
            _report_missing("test", missing)
            write_results_csv(test_cases, tables / "test_set_ensemble.csv", overwrite=True)
            rows["Test set (fold ensemble)"] = test_cases

    table3 = table3_layout(rows, table3_columns(scheme))
    table3.to_csv(tables / "table3.csv", float_format="%.4f")

    figure_paths = _segmentation_figures(data_dir, oof_dir, oof_cases, run_dir, figures, scheme)
    uncertainty = None  # QU-BraTS scores of the out-of-fold maps (inference.uncertainty)
    if config.inference.uncertainty != "none" and not oof_cases.empty:
        uncertainty = _uncertainty_outputs(data_dir, oof_dir, oof_cases, tables, figures)
        figure_paths.update(uncertainty.figures)
    table4 = None
    if survival_table is not None:
        table4, fig4 = _survival(survival_table, out / "survival", config)
        table4.to_csv(tables / "table4.csv", float_format="%.4f")
        figure_paths["fig4_survival"] = fig4

    report = write_report(
        out,
        table3,
        table4,
        figure_paths,
        config,
        oof_cases,
        lesionwise=oof_lesionwise,
        note=report_note,
        uncertainty=None if uncertainty is None else uncertainty.summary,
        test_cases=rows.get("Test set (fold ensemble)"),
    )
    return PipelineResult(out, report, table3, table4, figure_paths)


def _lesionwise_table(
    pred_dir: Path, data_dir: Path, tables: Path, scheme: str | None = None
) -> pd.DataFrame:
    """Out-of-fold lesion-wise table (BraTS 2023-2025 protocol), also written as a CSV."""
    from brats_mtl.evaluation import evaluate_folders
    from brats_mtl.evaluation.protocols import write_table_csv

    per_case, _ = evaluate_folders(pred_dir, data_dir, protocol="lesionwise", labels=scheme)
    write_table_csv(per_case, tables / "train_set_out_of_fold_lesionwise.csv", overwrite=True)
    return per_case


def lesionwise_summary(per_case: pd.DataFrame) -> pd.DataFrame:
    """Per region: mean lesion-wise Dice and HD95 (mm), summed lesion counts.

    Args:
        per_case: a lesion-wise table (``evaluate_folders(..., protocol="lesionwise")``).

    Returns:
        DataFrame indexed by region (ET, WT, TC, ...), columns ``LesionWise_Dice``,
        ``LesionWise_Hausdorff95``, ``Num_TP``, ``Num_FP``, ``Num_FN``.

    Source: BraTS 2023-2025 lesion-wise ranking metrics.
    """
    import pandas as pd

    prefix = "LesionWise_Dice_"
    regions = [c.removeprefix(prefix) for c in per_case.columns if c.startswith(prefix)]
    rows = {}
    for region in regions:
        rows[region] = {
            "LesionWise_Dice": per_case[f"LesionWise_Dice_{region}"].mean(),
            "LesionWise_Hausdorff95": per_case[f"LesionWise_Hausdorff95_{region}"].mean(),
            **{n: per_case[f"{n}_{region}"].sum() for n in ("Num_TP", "Num_FP", "Num_FN")},
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "region"
    return table


def table3_layout(
    per_case: dict[str, pd.DataFrame], columns: tuple[str, ...] = TABLE3_COLUMNS
) -> pd.DataFrame:
    """The paper's Table 3: mean Dice and HD95 (mm) per region, one row per data set.

    Args:
        per_case: data-set name -> per-case online-system table (``evaluate_folders``).
        columns: the metric columns (:func:`table3_columns` of the data's label scheme).

    Returns:
        DataFrame indexed by data set, columns ``columns`` plus ``n_cases``.
    """
    import pandas as pd

    rows = {}
    for name, cases in per_case.items():
        row = {c: float(pd.to_numeric(cases[c]).mean()) for c in columns}
        row["n_cases"] = len(cases)
        rows[name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "Dataset"
    return frame


def _has_labels(folder: str | Path) -> bool:
    from brats_mtl.data import discover_cases

    # a broken case folder was already reported by prediction: do not stop here
    return any(c.labeled for c in discover_cases(folder, invalid=[]))


def _report_missing(what: str, missing: dict[str, list[str]]) -> None:
    for side, ids in missing.items():
        if ids:
            logger.warning("%s evaluation: %d %s missing: %s", what, len(ids), side, ", ".join(ids))


def _segmentation_figures(
    data_dir: str | Path,
    oof_dir: Path,
    oof_cases: pd.DataFrame,
    run_dir: Path,
    figures: Path,
    scheme: str | None = None,
) -> dict[str, Path]:
    """Fig. 1 on the first case; Fig. 3 on the best and worst out-of-fold cases, in the
    colours of every label of the data's ``scheme``."""
    import pandas as pd

    from brats_mtl.data import discover_cases, load_case, load_label_map, load_raw_label_map
    from brats_mtl.figures.common import save_figure
    from brats_mtl.figures.slices import preprocessing_figure, segmentation_figure
    from brats_mtl.preprocessing import patch_grid, preprocess_case

    cases = {c.case_id: c for c in discover_cases(data_dir) if c.labeled}
    paths: dict[str, Path] = {}
    if oof_cases.empty:
        return paths
    dice = oof_cases[[f"Dice_{r}" for r in REGION_ORDER]].apply(pd.to_numeric).mean(axis=1)
    order = oof_cases.assign(mean_dice=dice.to_numpy()).sort_values("mean_dice")
    best, worst = order.iloc[-1], order.iloc[0]

    first = load_case(cases[str(best["Label"])], scheme=scheme)
    pre = preprocess_case(first)
    t2 = 2  # channel index of t2 in (t1, t1ce, t2, flair): the paper's Fig. 1 shows T2
    patch_size = _patch_size(run_dir)
    grid = patch_grid(pre.image.shape[1:], patch_size)
    fig = preprocessing_figure(
        first.image[t2], pre.box, pre.image[t2], grid[0], modality="t2", affine=first.affine
    )
    paths["fig1_preprocessing"] = save_figure(
        fig, figures / "fig1_preprocessing.png", overwrite=True
    )

    for name, row in (("fig3_best", best), ("fig3_worst", worst)):
        case = load_case(cases[str(row["Label"])], scheme=scheme)
        written = oof_dir / f"{case.case_id}.nii.gz"
        four_labels = scheme is not None and table3_columns(scheme) != TABLE3_COLUMNS
        pred, _, _ = load_raw_label_map(written) if four_labels else load_label_map(written)
        title = (
            f"{case.case_id}: Dice ET {float(row['Dice_ET']):.2f}, WT {float(row['Dice_WT']):.2f}, "
            f"TC {float(row['Dice_TC']):.2f}"
        )
        flair = case.image[3]
        fig = segmentation_figure(
            flair, case.labels, pred, title=title, affine=case.affine, scheme=scheme
        )
        paths[name] = save_figure(fig, figures / f"{name}.png", overwrite=True)
    for curve in sorted(run_dir.glob("fold_*/training_curves.png")):
        paths[f"training_curves_{curve.parent.name}"] = curve
    return paths


@dataclass(frozen=True)
class _UncertaintyOutputs:
    summary: pd.DataFrame  # rows: the maps and the random baseline; columns: mean scores
    figures: dict[str, Path]


def _uncertainty_outputs(
    data_dir: str | Path, oof_dir: Path, oof_cases: pd.DataFrame, tables: Path, figures: Path
) -> _UncertaintyOutputs:
    """QU-BraTS scores of the out-of-fold maps beside random maps, and the map figure of
    the best out-of-fold case."""
    import pandas as pd

    from brats_mtl.data import discover_cases, load_case, load_label_map
    from brats_mtl.evaluation.uncertainty import (
        UNCERTAINTY_COLUMNS,
        evaluate_uncertainty_folders,
        mean_scores,
        read_uncertainty_map,
        uncertainty_map_paths,
        write_uncertainty_csv,
    )
    from brats_mtl.figures.common import save_figure
    from brats_mtl.figures.uncertainty import uncertainty_figure

    results = evaluate_uncertainty_folders(oof_dir, data_dir, random_seed=0)
    write_uncertainty_csv(results.per_case, tables / "uncertainty_out_of_fold.csv", overwrite=True)
    write_uncertainty_csv(
        results.random, tables / "uncertainty_random_out_of_fold.csv", overwrite=True
    )
    means = {
        "predicted maps": results.per_case,
        "random maps": results.random,
        "maps of 0 (all certain)": results.zero,
    }
    summary = pd.DataFrame({k: mean_scores(v) for k, v in means.items()}).T
    summary = summary[[c for c in UNCERTAINTY_COLUMNS if c.startswith("Score")]]
    summary.index.name = "Maps"
    dice = oof_cases[[f"Dice_{r}" for r in REGION_ORDER]].apply(pd.to_numeric).mean(axis=1)
    order = oof_cases.assign(mean_dice=dice.to_numpy()).sort_values("mean_dice")
    best = str(order.iloc[-1]["Label"])
    paths: dict[str, Path] = {}
    if best in set(results.per_case["Label"]):
        case = load_case({c.case_id: c for c in discover_cases(data_dir, invalid=[])}[best])
        labels, _, _ = load_label_map(oof_dir / f"{best}.nii.gz")
        maps = {
            r: read_uncertainty_map(path, labels.shape)
            for r, path in uncertainty_map_paths(oof_dir, best).items()
        }
        fig = uncertainty_figure(case.image[3], labels, maps, title=f"{best}: uncertainty maps")
        paths["uncertainty_best"] = save_figure(
            fig, figures / "uncertainty_best.png", overwrite=True
        )
    return _UncertaintyOutputs(summary, paths)


def _patch_size(run_dir: Path) -> int:
    from brats_mtl.config import load_config

    return load_config(run_dir / "config.yaml").model.patch_size


def _survival(table, out: Path, config: Config) -> tuple[pd.DataFrame, Path]:
    """Fit the GTR age regression on a ``SurvivalTable``, score it on its training rows
    and by k-fold CV."""
    import pandas as pd

    from brats_mtl.figures.common import save_figure
    from brats_mtl.survival import (
        cross_validate,
        evaluate_predictions,
        fit_age_model,
        predict_table,
        save_model,
    )
    from brats_mtl.survival.plot import plot_age_regression

    model = fit_age_model(table, config.survival)
    save_model(model, out / "model.json", overwrite=True)
    train, _ = evaluate_predictions(predict_table(model, table), table, config.survival)
    cv = cross_validate(table, config.survival, folds=config.survival.cv_folds, seed=0)
    table4 = pd.DataFrame(
        {
            "Train set (fitted rows)": train.as_row(),
            f"{config.survival.cv_folds}-fold CV": cv.pooled.as_row(),
        }
    ).T[list(TABLE4_COLUMNS)]
    table4.index.name = "Dataset"
    fig = save_figure(
        plot_age_regression(model, table),
        out.parent / "figures" / "fig4_survival.png",
        overwrite=True,
    )
    return table4, fig


def _markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    cols = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in frame.iterrows():
        cells = [
            str(int(v))
            if col == "n_cases"
            else f"{v:.{digits}f}"
            if isinstance(v, float)
            else str(v)
            for col, v in zip(frame.columns, row.tolist(), strict=True)
        ]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)


def _per_case_table(cases: pd.DataFrame, columns: list[str], predictions_csv: Path) -> pd.DataFrame:
    """Per-case Dice and HD95 with the case's ET probability and whether ET suppression
    fired (``predictions.csv`` of ``predict``; the columns are left out without it)."""
    import pandas as pd

    table = cases.set_index("Label")[columns].apply(pd.to_numeric)
    table.index.name = "case"
    if predictions_csv.is_file():
        predicted = pd.read_csv(predictions_csv, dtype={"case_id": str}).set_index("case_id")
        table["ET_probability"] = pd.to_numeric(
            predicted["et_probability"].reindex(table.index), errors="coerce"
        )
        fired = predicted["et_suppressed"].reindex(table.index).astype(str).str.lower()
        table["ET_suppressed"] = fired.map({"true": "yes", "false": "no"}).fillna("")
    return table


def write_report(
    out: Path,
    table3: pd.DataFrame,
    table4: pd.DataFrame | None,
    figures: dict[str, Path],
    config: Config,
    oof_cases: pd.DataFrame,
    *,
    lesionwise: pd.DataFrame | None = None,
    note: str | None = None,
    uncertainty: pd.DataFrame | None = None,
    test_cases: pd.DataFrame | None = None,
) -> Path:
    """Write ``OUT/report.md``: Tables 3 and 4, per-case results (with each case's ET
    probability and whether ET suppression fired), links to figures and files.

    ``lesionwise``: the out-of-fold lesion-wise table, summarised per region when given.
    ``note``, when given, is the paragraph right under the title (e.g. the demo's
    "synthetic cohort" notice).
    ``uncertainty``: mean QU-BraTS scores of the out-of-fold uncertainty maps and of
    random maps (:func:`_uncertainty_outputs`), shown when given.
    ``test_cases``: the test set's per-case scores (fold ensemble), listed when given.
    """
    columns = [c for c in table3.columns if c != "n_cases"]
    predictions = out / "predictions"
    per_case = _per_case_table(oof_cases, columns, predictions / "out_of_fold" / "predictions.csv")
    m = config.model
    lines = [
        "# brats-mtl report",
        "",
        *([note, ""] if note else []),
        f"Network widths {tuple(m.widths)}, patch {m.patch_size}^3, "
        f"{config.train.n_folds}-fold CV, TTA {config.inference.tta} passes, "
        f"ET suppression below p={config.inference.et_probability_threshold} and "
        f"{config.inference.et_min_voxels} voxels. Metrics as the BraTS online system "
        "(Dice: both empty = 1; HD95 in mm: both empty = 0, one empty = 373.128664).",
        "",
        "## Segmentation (layout of the paper's Table 3; means over cases)",
        "",
        _markdown_table(table3),
        "",
        "Out-of-fold, per case (ET_probability: the ET classifier's; ET_suppressed: ET "
        "relabeled NCR/NET because the classifier said no ET and few ET voxels were "
        "predicted):",
        "",
        _markdown_table(per_case),
        "",
        "Files: `tables/train_set_out_of_fold.csv` (online-system CSV), "
        "`predictions/out_of_fold/` (label maps), `predictions/out_of_fold/predictions.csv` "
        "(ET probability, suppression, volumes in mL).",
        "",
    ]
    if lesionwise is not None and len(lesionwise):
        lines += [
            "## Lesion-wise (BraTS 2023-2025 protocol; out-of-fold)",
            "",
            "Lesion-wise Dice and HD95 (mm) averaged over cases, lesion counts summed "
            "(missed lesions and false-positive components score 0 and 374 mm).",
            "",
            _markdown_table(lesionwise_summary(lesionwise)),
            "",
            "File: `tables/train_set_out_of_fold_lesionwise.csv`.",
            "",
        ]
    if uncertainty is not None:
        lines += [
            f"## Uncertainty ({config.inference.uncertainty} maps, QU-BraTS score; means "
            "over the out-of-fold cases)",
            "",
            _markdown_table(uncertainty),
            "",
            "Score = (AUC_Dice + (1 - AUC_FTP) + (1 - AUC_FTN)) / 3 of the filtered Dice, "
            "true-positive and true-negative ratios over thresholds 100 to 0 (Mehta et al., "
            "MELBA 2022), brain mask T1 > 0. Baselines: uniform random maps, and maps of 0 "
            "everywhere (nothing filtered: (Dice + 2) / 3), which helpful maps must beat. "
            "Files: `tables/uncertainty_out_of_fold.csv`, "
            "`tables/uncertainty_random_out_of_fold.csv`, "
            "`predictions/out_of_fold/<ID>_unc_{whole,core,enhance}.nii.gz`.",
            "",
        ]
    if test_cases is not None:
        test_table = _per_case_table(test_cases, columns, predictions / "test" / "predictions.csv")
        lines += ["Test set (fold ensemble), per case:", "", _markdown_table(test_table), ""]
    if table4 is not None:
        lines += [
            "## Survival (layout of the paper's Table 4)",
            "",
            _markdown_table(table4, digits=3),
            "",
            "Model: `survival/model.json`.",
            "",
        ]
    lines += ["## Figures", ""]
    for name, path in figures.items():
        rel = Path(path).resolve().relative_to(out.resolve())
        lines += [f"### {name}", "", f"![{name}]({rel.as_posix()})", ""]
    return write_text_atomic(out / "report.md", "\n".join(lines), overwrite=True)


@dataclass(frozen=True)
class DemoCohort:
    """Folders and files of the synthetic demo cohort (``make_demo_cohort``)."""

    train_dir: Path
    unlabeled_dir: Path
    test_dir: Path
    survival_csv: Path


def make_demo_cohort(
    root: str | Path,
    *,
    n_train: int = 10,
    n_unlabeled: int = 2,
    n_test: int = 3,
    n_survival: int = 60,
    shape: tuple[int, int, int] = (48, 48, 48),
    seed: int = 0,
) -> DemoCohort:
    """Write a synthetic cohort: labeled training cases, unlabeled cases, labeled test
    cases (BraTS 2021 layout, phantoms), and a BraTS 2019-style survival table.

    Every other phantom (odd index) has no ET, so each fold trains the ET classifier on as
    many cases without ET as with it; every phantom has an enhancing vessel in its edema
    (:func:`~brats_mtl.data.make_phantom`), the kind of structure that gives false ET on
    a case without ET, which the classifier and ET suppression are there to remove.

    The survival table follows the paper's fitted line (1262 - 13.2 * age days) with
    noise, mixes GTR, STR and NA resections, and holds one censored entry and one ``NA``
    survival, as the real table does.

    Args:
        root: folder to create (``train/``, ``unlabeled/``, ``test/``, ``survival.csv``).
        n_train, n_unlabeled, n_test: case counts.
        n_survival: rows of the survival table (patients need no images for the age
            regression).
        shape: volume shape of every case.
        seed: everything is drawn from this seed.

    Returns:
        A :class:`DemoCohort`.
    """
    import numpy as np

    from brats_mtl.data import write_phantom_case

    root = Path(root)
    train, unlabeled, test = root / "train", root / "unlabeled", root / "test"
    rng = np.random.default_rng(seed)
    for i in range(n_train + n_unlabeled + n_test):
        folder = train if i < n_train else unlabeled if i < n_train + n_unlabeled else test
        write_phantom_case(
            folder,
            demo_case_id(i),
            layout="brats2021",
            shape=shape,
            labeled=folder is not unlabeled,
            with_et=(i % 2 == 0),
            seed=seed * 1000 + i,
            enhancing_vessel=True,
            overwrite=True,
        )
    lines = ["BraTS19ID,Age,Survival,ResectionStatus"]
    for i in range(n_survival):
        age = float(rng.uniform(30, 80))
        days = max(30.0, 1262.0 - 13.2 * age + float(rng.normal(0, 250)))
        resection = ("GTR", "GTR", "STR", "NA")[i % 4]
        survival = f"{days:.0f}"
        if i == 5:
            survival = f"ALIVE ({days:.0f} days later)"
        elif i == 9:
            survival = "NA"
        lines.append(f"{demo_case_id(i)},{age:.3f},{survival},{resection}")
    survival_csv = write_text_atomic(root / "survival.csv", "\n".join(lines) + "\n", overwrite=True)
    return DemoCohort(train, unlabeled, test, survival_csv)


def run_demo(
    out_dir: str | Path,
    config: Config | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    command_line: str | None = None,
) -> PipelineResult:
    """The demo: a synthetic cohort in ``OUT/data``, the whole chain into ``OUT/results``.

    A folder that already holds a demo is reused: the cohort is kept (not written again,
    so the training cache stays valid), finished folds are not trained again and written
    predictions are skipped; tables, figures and the report are written again. Running the
    demo twice therefore costs one training.

    Args:
        out_dir: the demo's folder.
        config: default :func:`demo_config`.
        overwrite: start again: remove ``OUT/data`` and ``OUT/results`` first (only in a
            folder the demo created; see :func:`prepare_output_dir`).
        progress: progress bars.
        command_line: recorded in the folder's marker file.

    Returns:
        The :class:`PipelineResult` of ``OUT/results``.

    Raises:
        FileExistsError: if ``out_dir`` is a non-empty folder that the demo did not create.
        ValueError: from the stages (e.g. a ``--set`` that changes the network of a
            trained demo: the message says to pass ``--overwrite``).
    """
    config = config or demo_config()
    out = Path(out_dir)
    reused = prepare_output_dir(
        out, "demo", resume=not overwrite, overwrite=overwrite, command_line=command_line
    )
    if reused:
        logger.info(
            "reusing the demo in %s: finished work is skipped (--overwrite starts again)", out
        )
    cohort = demo_cohort(out / "data", seed=config.train.seed)
    try:
        return run_pipeline(
            cohort.train_dir,
            out / "results",
            config=config,
            unlabeled_dirs=(cohort.unlabeled_dir,),
            test_dir=cohort.test_dir,
            survival_csv=cohort.survival_csv,
            resume=True,
            progress=progress,
            command_line=command_line,
            report_note=demo_report_note(cohort),
        )
    except ValueError as err:
        if reused:
            raise ValueError(f"{err}\n(to start the demo in {out} again: --overwrite)") from None
        raise


#: Synthetic demo cases are numbered from here: BraTS 2021 training IDs end at 01666, so
#: ``BraTS2021_90000`` and up can never be mistaken for (or matched against) a real case.
DEMO_ID_BASE = 90000


def demo_report_note(cohort: DemoCohort) -> str:
    """The first paragraph of the demo's report: its cohort is synthetic, and its IDs only
    look like BraTS 2021 IDs (counts read from the cohort's folders)."""

    def count(folder: Path) -> int:
        return sum(1 for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else 0

    return (
        "**Synthetic cohort: no patient data.** Every case in this report is a phantom "
        f"that `brats-mtl demo` generated ({count(cohort.train_dir)} labeled, "
        f"{count(cohort.unlabeled_dir)} unlabeled and {count(cohort.test_dir)} test cases: "
        "ellipsoidal brains holding a tumour with a necrotic core and edema, half of them "
        "with an enhancing rim (ET) and all with an enhancing vessel in the edema, which a "
        "model without ET suppression tends to call ET), and the survival table is "
        "synthetic too. The IDs "
        f"({demo_case_id(0)} and up) follow the BraTS 2021 naming only so that the BraTS "
        "readers take them; they are not BraTS 2021 cases (its IDs end at 01666). The "
        "numbers show that the chain runs, not how the method does on MRI."
    )


def demo_case_id(index: int) -> str:
    """``BraTS2021_<DEMO_ID_BASE + index>``: the ID of the demo's ``index``-th phantom case."""
    return f"BraTS2021_{DEMO_ID_BASE + index:05d}"


def demo_cohort(root: str | Path, *, seed: int = 0) -> DemoCohort:
    """The demo's cohort in ``root``: made once (:func:`make_demo_cohort`), then reused.

    The cohort is written into a temporary folder beside ``root`` and renamed, so a
    ``root`` that exists is complete. An incomplete ``root`` left by an older version
    (no ``survival.csv``) is written again.

    Args:
        root: folder of the cohort (``train/``, ``unlabeled/``, ``test/``, ``survival.csv``).
        seed: seed of a new cohort.

    Returns:
        A :class:`DemoCohort`.
    """
    root = Path(root)
    cohort = DemoCohort(root / "train", root / "unlabeled", root / "test", root / "survival.csv")
    if cohort.survival_csv.is_file():
        logger.info("reusing the synthetic cohort in %s", root)
        return cohort
    logger.info("writing a synthetic cohort to %s", root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual permissions
    try:
        make_demo_cohort(tmp, seed=seed)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return cohort
