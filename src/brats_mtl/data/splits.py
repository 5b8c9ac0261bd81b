"""Stratified k-fold splits of the labeled cases, saved once per run and reused.

The paper trains five networks on a stratified five-fold split of the training set
(paper, Training Procedure). Cases are stratified by tumor grade (HGG / LGG) where the
dataset carries it (BraTS 2018/2019 folders, BraTS 2020 ``name_mapping.csv``), else by
whether the case contains enhancing tumor (docs/design.md section 4).

Assignment (written here because scikit-learn is not a dependency): the cases of each
stratum, taken in sorted order of stratum name, are shuffled with a generator seeded by
the run's seed and dealt round-robin into the folds; the dealing position carries over
from one stratum to the next. Every fold then holds ``floor`` or ``ceil`` of
``n_stratum / n_folds`` cases of each stratum, and fold sizes differ by at most one.
This is the same allocation as scikit-learn's ``StratifiedKFold`` up to the order of
cases, not the same folds.

Patients, not scans: BraTS 2023+ IDs carry a timepoint (``BraTS-GLI-00000-000`` and
``BraTS-GLI-00000-100`` are two scans of one patient, ``tasks.patient_id``). What is
dealt is a patient with all of its scans (a stratified *group* k-fold, as scikit-learn's
``StratifiedGroupKFold``), so no patient is in the training and the held-out set of one
fold; a patient's stratum is that of its first scan by ID. Where every patient has one
scan (BraTS 2017-2021), the folds are those of the case-wise dealing.

Unlabeled cases take no part in the split; they join the training set of every fold.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brats_mtl.atomic import write_text_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    """The folds of one run.

    Attributes:
        n_folds: number of folds k.
        seed: seed of the shuffle inside the strata.
        strata: case ID -> stratum ("HGG", "LGG", "ET", "noET") of every labeled case.
        folds: for fold ``k`` the held-out (validation) case IDs, sorted; the training
            cases of fold ``k`` are all other labeled cases plus the unlabeled ones.
        patients: case ID -> patient ID (``tasks.patient_id``); empty when unknown (a
            ``splits.json`` written before patients were recorded).
    """

    n_folds: int
    seed: int
    strata: dict[str, str]
    folds: tuple[tuple[str, ...], ...]
    patients: dict[str, str] = field(default_factory=dict)

    @property
    def case_ids(self) -> list[str]:
        """All labeled case IDs, sorted."""
        return sorted(self.strata)

    def val_ids(self, fold: int) -> list[str]:
        """Held-out case IDs of ``fold`` (sorted).

        Raises:
            ValueError: if ``fold`` is not in ``0 .. n_folds - 1``.
        """
        self._check_fold(fold)
        return list(self.folds[fold])

    def train_ids(self, fold: int) -> list[str]:
        """Labeled training case IDs of ``fold`` (sorted): every case not held out.

        Raises:
            ValueError: if ``fold`` is not in ``0 .. n_folds - 1``.
        """
        held_out = set(self.val_ids(fold))
        return [c for c in self.case_ids if c not in held_out]

    def _check_fold(self, fold: int) -> None:
        if not 0 <= fold < self.n_folds:
            raise ValueError(
                f"fold {fold} does not exist: this run has folds 0 to {self.n_folds - 1}"
            )

    def to_json(self, unlabeled_ids: Sequence[str] = ()) -> dict:
        """The JSON document written to ``splits.json``.

        ``folds`` maps the fold number (as a string) to ``{"train": [...], "val": [...]}``
        with labeled case IDs; ``unlabeled`` lists the unlabeled cases known when the
        splits were made (informational: unlabeled cases join every fold's training set).
        """
        return {
            "n_folds": self.n_folds,
            "seed": self.seed,
            "strata": dict(sorted(self.strata.items())),
            "folds": {
                str(k): {"train": self.train_ids(k), "val": self.val_ids(k)}
                for k in range(self.n_folds)
            },
            "unlabeled": sorted(unlabeled_ids),
            "patients": dict(sorted(self.patients.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping, source: str | Path = "the document") -> Splits:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: if the document lacks a key or its folds do not partition the
                cases (names ``source``).
        """
        try:
            n_folds = int(data["n_folds"])
            strata = {str(k): str(v) for k, v in data["strata"].items()}
            folds = tuple(tuple(sorted(data["folds"][str(k)]["val"])) for k in range(n_folds))
            seed = int(data["seed"])
            patients = {str(k): str(v) for k, v in data.get("patients", {}).items()}
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{source} is not a valid splits file ({err!r}); delete it or use a new run folder"
            ) from None
        held_out = sorted(c for fold in folds for c in fold)
        if held_out != sorted(strata):
            raise ValueError(
                f"{source}: the folds' validation sets do not partition the labeled cases; "
                "delete it or use a new run folder"
            )
        return cls(n_folds=n_folds, seed=seed, strata=strata, folds=folds, patients=patients)


def case_stratum(grade: str | None, has_et: bool) -> str:
    """Stratum of one labeled case: its grade when known, else its ET presence.

    Args:
        grade: "HGG" / "LGG" or None when the dataset does not say.
        has_et: whether the case's segmentation contains label 4 (ET).

    Returns:
        "HGG", "LGG", "ET" or "noET".

    Source: docs/design.md section 4.
    """
    if grade:
        return grade
    return "ET" if has_et else "noET"


def check_enough_cases(
    case_ids: Sequence[str], n_folds: int, patients: Mapping[str, str] | None = None
) -> None:
    """Refuse a cohort too small for ``n_folds`` folds: every fold holds out a patient.

    Cheap (IDs only), so training runs it before any case is preprocessed.

    Args:
        case_ids: the labeled cases.
        n_folds: ``train.n_folds``.
        patients: case ID -> patient ID (scans of one patient share a fold); default
            each case its own patient.

    Raises:
        ValueError: naming both numbers and the ``train.n_folds`` setting to lower.
    """
    if n_folds < 2:
        raise ValueError(f"train.n_folds must be at least 2, got {n_folds}")
    if len(case_ids) < n_folds:
        raise ValueError(
            f"{len(case_ids)} labeled cases cannot be split into {n_folds} folds: every fold "
            f"needs a held-out case. Add labeled cases or lower the number of folds, e.g. "
            f"--set train.n_folds={max(2, len(case_ids))}"
            if len(case_ids) >= 2
            else f"{len(case_ids)} labeled cases cannot be split into {n_folds} folds: "
            "cross-validation needs at least 2 labeled cases"
        )
    patient_of = {c: (patients or {}).get(c, c) for c in case_ids}
    scans: dict[str, list[str]] = {}
    for case_id in sorted(case_ids):
        scans.setdefault(patient_of[case_id], []).append(case_id)
    if len(scans) < n_folds:
        raise ValueError(
            f"{len(case_ids)} labeled cases of {len(scans)} patients cannot be split into "
            f"{n_folds} folds: the scans of one patient share a fold, and every fold needs "
            f"a held-out patient; lower the number of folds, e.g. "
            f"--set train.n_folds={max(2, len(scans))}"
        )


def stratified_folds(
    strata: Mapping[str, str],
    n_folds: int,
    seed: int,
    patients: Mapping[str, str] | None = None,
) -> Splits:
    """Stratified (group) k-fold assignment of labeled cases (round-robin in shuffled strata).

    Args:
        strata: case ID -> stratum label, one entry per labeled case.
        n_folds: number of folds k (paper: 5).
        seed: seed of the shuffle; the same seed and cases give the same folds.
        patients: case ID -> patient ID; the scans of one patient share a fold. None
            (or a case missing from it): each case is its own patient.

    Returns:
        The :class:`Splits`.

    Raises:
        ValueError: if there are fewer labeled cases than folds (names both numbers and
            the ``train.n_folds`` setting), or ``n_folds < 2``.

    Source: paper, Training Procedure (stratified five-fold cross-validation).
    """
    check_enough_cases(list(strata), n_folds, patients)
    patient_of = {c: (patients or {}).get(c, c) for c in strata}
    scans: dict[str, list[str]] = {}
    for case_id in sorted(strata):
        scans.setdefault(patient_of[case_id], []).append(case_id)
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[str]] = {}
    for patient in sorted(scans, key=lambda p: scans[p][0]):
        by_stratum.setdefault(strata[scans[patient][0]], []).append(patient)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    position = 0
    for stratum in sorted(by_stratum):
        members = by_stratum[stratum]
        for i in rng.permutation(len(members)):
            folds[position % n_folds].extend(scans[members[i]])
            position += 1
    return Splits(
        n_folds=n_folds,
        seed=seed,
        strata=dict(strata),
        folds=tuple(tuple(sorted(f)) for f in folds),
        patients=dict(patient_of),
    )


def read_splits(path: str | Path) -> Splits:
    """Read a run's splits file (``RunDir.splits_file``).

    Args:
        path: the splits file inside a run folder.

    Raises:
        FileNotFoundError: if the run folder has no splits file (train first).
        ValueError: if the file is not a valid splits file.
    """
    path = Path(path)
    run_dir = path.parent
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {run_dir} is not a training run folder "
            "(run `brats-mtl train DATA_DIR --out RUN_DIR` first)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); delete it or use a new run folder"
        ) from None
    return Splits.from_json(data, source=path)


def write_splits(splits: Splits, path: str | Path, unlabeled_ids: Sequence[str] = ()) -> Path:
    """Write a run's splits file (``RunDir.splits_file``) atomically (temp file, rename).

    Args:
        splits: the folds.
        path: the splits file (its folder is created).
        unlabeled_ids: unlabeled case IDs, recorded for information.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(splits.to_json(unlabeled_ids), indent=2) + "\n"
    return write_text_atomic(path, text, overwrite=True)


def load_or_create_splits(
    path: str | Path,
    strata: Mapping[str, str],
    n_folds: int,
    seed: int,
    unlabeled_ids: Sequence[str] = (),
    *,
    replace_mismatched: bool = False,
    patients: Mapping[str, str] | None = None,
) -> Splits:
    """Reuse ``RUN_DIR/splits.json`` when it matches the cases, else create and save it.

    Args:
        path: the run's splits file (``RunDir.splits_file``).
        strata: case ID -> stratum of every labeled case found now.
        n_folds: folds wanted (``train.n_folds``).
        seed: shuffle seed (``train.seed``).
        unlabeled_ids: unlabeled case IDs, recorded for information.
        replace_mismatched: make the splits again (with a WARNING) when the saved ones
            were made for other labeled cases, fold count or seed, instead of raising.
            For a run without checkpoints, whose splits no model has used yet.
        patients: case ID -> patient ID for new splits (see :func:`stratified_folds`).

    Returns:
        The run's :class:`Splits`.

    Raises:
        ValueError: if a saved splits file exists but was made for other labeled cases or
            another number of folds (the message says to use a new run folder), or if
            there are fewer labeled cases than folds.

    Source: docs/design.md section 4 (splits are saved and reused).
    """
    path = Path(path)
    if path.is_file() and replace_mismatched:
        try:
            saved = read_splits(path)
            made_for = f"{len(saved.case_ids)} cases, {saved.n_folds} folds, seed {saved.seed}"
            same = (saved.case_ids, saved.n_folds, saved.seed) == (sorted(strata), n_folds, seed)
        except ValueError as err:  # unreadable: as good as absent when nothing used it
            made_for, same = str(err), False
        if not same:
            splits = stratified_folds(strata, n_folds, seed, patients)
            logger.warning(
                "replacing %s (made for %s; now %d cases, %d folds, seed %d): no model of "
                "this run has used it",
                path,
                made_for,
                len(strata),
                n_folds,
                seed,
            )
            write_splits(splits, path, unlabeled_ids)
            return splits
    if path.is_file():
        saved = read_splits(path)
        if saved.case_ids != sorted(strata):
            missing = sorted(set(saved.case_ids) - set(strata))
            added = sorted(set(strata) - set(saved.case_ids))
            raise ValueError(
                f"{path} was made for other labeled cases (missing now: {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}; new: {added[:5]}"
                f"{'...' if len(added) > 5 else ''}). Folds must not change within a run: "
                "train into a new run folder (--out)"
            )
        if saved.n_folds != n_folds:
            raise ValueError(
                f"{path} holds {saved.n_folds} folds but train.n_folds is {n_folds}: "
                f"set train.n_folds={saved.n_folds} or train into a new run folder (--out)"
            )
        return saved
    splits = stratified_folds(strata, n_folds, seed, patients)
    write_splits(splits, path, unlabeled_ids)
    return splits
