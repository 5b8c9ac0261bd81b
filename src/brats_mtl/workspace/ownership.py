"""The folders brats-mtl owns: the marker, claiming a folder, what ``--overwrite`` removes.

A folder that ``brats-mtl run``, ``demo`` or ``train`` creates holds the marker
:data:`OUTPUT_MARKER` (version, command, when; for ``run`` also the run's inputs, which
``--resume`` reuses when they are not given again). The rules:

- an absent or empty folder is created and marked;
- a marked folder of the same command may be resumed, or cleared by ``--overwrite``,
  which removes only what that command writes there (other files are kept, with a
  WARNING);
- a non-empty folder without the marker is refused (brats-mtl did not create it and
  cannot tell its files from the user's), except an output of a version older than the
  marker, which may be resumed but never overwritten;
- inputs inside the output folder, and an output folder inside an input, are refused, so
  that ``--overwrite`` can never delete input data;
- a command that fails before it writes anything leaves no folder behind.

Source: the README's rules on outputs (never overwrite inputs; refuse to overwrite
without a flag); nnU-Net and Lightning resume conventions.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from brats_mtl import __version__
from brats_mtl.atomic import write_text_atomic
from brats_mtl.config import load_config
from brats_mtl.workspace.run_dir import CONFIG_FILE, FOLD_OUTPUTS, RUN_ENTRIES, RUN_LEGACY_FILES

logger = logging.getLogger(__name__)

#: File that marks a folder created by brats-mtl (``run``/``demo`` output folders).
OUTPUT_MARKER = ".brats-mtl-output"
#: What ``brats-mtl run`` writes in its output folder (all that ``overwrite`` removes).
RUN_OUTPUTS = ("run", "predictions", "tables", "figures", "survival", "report.md")
#: What ``brats-mtl demo`` writes in its output folder: ``data/`` (the cohort it generated)
#: and ``results/``, where ``overwrite`` removes only what ``run`` writes
#: (:data:`RUN_OUTPUTS`) and keeps other files.
DEMO_OUTPUTS = ("data", "results")
#: Output entries per command, entries removed only in part (name -> what is removed
#: inside), and the files that show an output folder written before the marker existed
#: (such a folder may be resumed, never overwritten).
_OUTPUTS = {
    "run": (RUN_OUTPUTS, {}, (Path("run") / CONFIG_FILE,)),
    "demo": (DEMO_OUTPUTS, {"results": RUN_OUTPUTS}, (Path("results") / "run" / CONFIG_FILE,)),
    "train": (RUN_ENTRIES, {}, RUN_LEGACY_FILES),
}


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
    """The inputs of a ``brats-mtl run``, recorded in its output folder's marker.

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
    """Record ``inputs`` in the marker of the ``run`` output folder ``out_dir``.

    An atomic rewrite; the marker's other fields are kept. A folder without a ``run`` marker (an
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
    """The inputs a ``run`` uses: the given ones, or on ``resume`` the recorded ones.

    On ``resume``, those recorded in ``out_dir``'s marker for any not given (``data_dir``
    None, ``unlabeled_dirs`` empty, ``test_dir``/``survival_csv`` None), with one INFO
    line naming them; a given input that differs from the recorded one wins, with a
    WARNING naming old -> new. An input named in
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


def remove_derived_outputs(out: Path, without: Collection[str]) -> None:
    """Remove what ``run`` derived from the inputs in ``without``.

    For a resumed run that leaves them out, in a folder that ``run`` marked as its own.

    Args:
        out: the ``run`` output folder.
        without: names from :data:`DROPPABLE_INPUTS`.
    """
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
    """Refuse inputs in the output folder, and an output folder inside an input folder.

    See :func:`prepare_output_dir`.
    """
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
    """Remove ``entries`` of ``folder``; log a WARNING naming what is removed and kept.

    For a name in ``nested``, only the entries listed there inside it are removed.

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
    """``train --overwrite`` of one fold: remove what training wrote in its folder.

    Removes :data:`~brats_mtl.workspace.run_dir.FOLD_OUTPUTS` in ``fold_path``, keeping
    other files with a WARNING; the folder goes when nothing else is left.

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
    """Within the block, a command that fails before writing anything leaves no folder.

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
