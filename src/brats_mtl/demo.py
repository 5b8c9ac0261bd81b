"""The demo: a synthetic cohort of phantoms, and the whole chain on it.

``brats-mtl demo --out DIR`` writes the cohort into ``DIR/data`` (:func:`demo_cohort`)
and runs :func:`~brats_mtl.pipeline.run_pipeline` into ``DIR/results``
(:func:`run_demo`). The phantoms (:func:`~brats_mtl.data.make_phantom`) are ellipsoidal
brains with a tumour; half have enhancing tumour (ET) and all an enhancing vessel, the
structure that ET suppression is there to remove (paper section 4.3).

Source: paper sections 4-5 (the chain); the BraTS 2021 and BraTS 2019 survival file
layouts (what the readers take).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from brats_mtl.atomic import atomic_folder, write_text_atomic
from brats_mtl.config import Config
from brats_mtl.pipeline import PipelineResult, run_pipeline
from brats_mtl.presets import demo_config
from brats_mtl.workspace.ownership import prepare_output_dir

logger = logging.getLogger(__name__)


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
    """Write a synthetic cohort of phantoms and a survival table.

    Labeled training cases, unlabeled cases and labeled test cases (BraTS 2021 layout,
    phantoms), and a BraTS 2019-style survival table.

    Every other phantom (odd index) has no ET, so each fold trains the ET classifier on as
    many cases without ET as with it; every phantom has an enhancing vessel in its edema
    (:func:`~brats_mtl.data.make_phantom`), the kind of structure that gives false ET on
    a case without ET, which the classifier and ET suppression are there to remove.

    The survival table follows the paper's fitted line (1262 - 13.2 * age days) with
    noise, mixes GTR, STR and NA resections, and holds one censored entry and one ``NA``
    survival, as the real table does.

    Args:
        root: folder to create (``train/``, ``unlabeled/``, ``test/``, ``survival.csv``).
        n_train: labeled training cases.
        n_unlabeled: unlabeled cases.
        n_test: labeled test cases.
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
            folder the demo created; see
            :func:`~brats_mtl.workspace.ownership.prepare_output_dir`).
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
    """The first paragraph of the demo's report: its cohort is synthetic.

    Its IDs only look like BraTS 2021 IDs; the counts are read from the cohort's folders.
    """

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
    with atomic_folder(root, overwrite=True) as tmp:  # an incomplete root is replaced
        make_demo_cohort(tmp, seed=seed)
    return cohort
