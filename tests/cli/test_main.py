"""``brats-mtl`` entry point: log levels of -v / -vv."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from click.testing import CliRunner

from brats_mtl.cli.main import cli

THIRD_PARTY = ("fsspec", "matplotlib", "PIL.PngImagePlugin")


@pytest.fixture()
def restore_levels():
    """The test changes global logger levels; put them back afterwards."""
    names = ("", "brats_mtl", *THIRD_PARTY)
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(
    ("flags", "package_level", "third_party_level"),
    [
        ([], logging.INFO, logging.WARNING),
        (["-v"], logging.DEBUG, logging.WARNING),
        (["-vv"], logging.DEBUG, logging.DEBUG),
    ],
)
def test_verbose_levels(restore_levels, flags, package_level, third_party_level):
    result = CliRunner().invoke(cli, [*flags, "model-summary", "--help"])
    assert result.exit_code == 0, result.output
    assert logging.getLogger("brats_mtl.evaluation.tables").getEffectiveLevel() == package_level
    for name in THIRD_PARTY:
        assert logging.getLogger(name).getEffectiveLevel() == third_party_level, name


def _stderr_lines(code: str, argument: str) -> list[str]:
    """Run ``python -c code argument`` in a fresh process; its stderr lines."""
    done = subprocess.run(
        [sys.executable, "-c", code, argument], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_v_prints_package_debug_lines_but_no_library_debug_lines():
    """A real process: -v shows brats_mtl DEBUG records, not matplotlib's (which logs
    DEBUG lines while it starts) nor any other library's."""
    code = (
        "import logging, sys, types, click\n"
        "from brats_mtl.cli import main\n"
        "@click.command('probe')\n"
        "def probe():\n"
        "    import matplotlib.pyplot  # logs DEBUG lines (config dir, backend)\n"
        "    logging.getLogger('brats_mtl.probe').debug('package debug line')\n"
        "    logging.getLogger('fsspec').debug('library debug line')\n"
        "sys.modules['probe_cli'] = types.SimpleNamespace(command=probe)\n"
        "main._COMMANDS['probe'] = ('probe_cli', 'test command')\n"
        "main.cli([sys.argv[1], 'probe'])\n"
    )

    def debug_lines(flag: str) -> list[str]:
        return [line for line in _stderr_lines(code, flag) if line.startswith("DEBUG")]

    assert debug_lines("-v") == ["DEBUG brats_mtl.probe: package debug line"]
    every = debug_lines("-vv")  # the probe is real: matplotlib does log at DEBUG
    assert any(line.startswith("DEBUG matplotlib") for line in every)
    assert "DEBUG fsspec: library debug line" in every


def test_lightning_lines_are_printed_once_and_start_up_notes_only_with_v():
    """``import lightning`` adds its own stderr handler; under the CLI's root handler each
    Lightning line must still appear once, and its start-up notes only with -v."""
    code = (
        "import logging, sys\n"
        "from brats_mtl.cli.main import configure_logging\n"
        "configure_logging(int(sys.argv[1]))\n"
        "import brats_mtl.training.module\n"
        "logging.getLogger('lightning.pytorch.trainer').info('trainer line')\n"
        "logging.getLogger('lightning.pytorch.utilities.rank_zero').info('start-up note')\n"
    )

    assert _stderr_lines(code, "0") == ["INFO lightning.pytorch.trainer: trainer line"]
    assert _stderr_lines(code, "1") == [
        "INFO lightning.pytorch.trainer: trainer line",
        "INFO lightning.pytorch.utilities.rank_zero: start-up note",
    ]
