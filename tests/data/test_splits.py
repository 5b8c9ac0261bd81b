"""Stratified folds: balance per stratum, stable order, saved once and reused."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from brats_mtl.data.splits import case_stratum, load_or_create_splits, stratified_folds
from brats_mtl.training import read_splits
from brats_mtl.workspace.run_dir import RunDir


def test_stratified_folds_balance_every_stratum_and_are_stable():
    """Each stratum spreads over the folds within one case; the split is order-free."""
    strata = {f"c{i:02d}": s for i, s in enumerate(["HGG"] * 13 + ["LGG"] * 7 + ["noET"] * 3)}
    splits = stratified_folds(strata, n_folds=5, seed=7)
    held_out = [c for k in range(5) for c in splits.val_ids(k)]
    assert sorted(held_out) == sorted(strata)  # a partition
    for stratum, n in Counter(strata.values()).items():
        per_fold = [sum(strata[c] == stratum for c in splits.val_ids(k)) for k in range(5)]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == n
    sizes = [len(splits.val_ids(k)) for k in range(5)]
    assert max(sizes) - min(sizes) <= 1
    for k in range(5):
        assert set(splits.train_ids(k)) == set(strata) - set(splits.val_ids(k))
    assert stratified_folds(dict(reversed(strata.items())), 5, 7) == splits  # order-free
    assert stratified_folds(strata, 5, 8).folds != splits.folds


def test_case_stratum_prefers_grade():
    """The grade (HGG/LGG) when known, else whether the case has ET."""
    assert case_stratum("LGG", True) == "LGG"
    assert case_stratum(None, True) == "ET"
    assert case_stratum(None, False) == "noET"


def test_too_few_labeled_cases_names_both_numbers():
    """Fewer labeled cases than folds: the error names both counts and the setting."""
    with pytest.raises(ValueError, match=r"3 labeled cases cannot be split into 5 folds.*n_folds"):
        stratified_folds({"a": "ET", "b": "ET", "c": "noET"}, 5, 0)


def test_splits_saved_once_and_reused(tmp_path):
    """splits.json is written once; another seed keeps it, other cases or folds are refused."""
    strata = {f"c{i}": "ET" if i % 3 else "noET" for i in range(7)}
    path = RunDir(tmp_path).splits_file
    first = load_or_create_splits(path, strata, 3, seed=1, unlabeled_ids=["u1"])
    saved = json.loads(path.read_text())
    assert saved["strata"]["c0"] == "noET" and saved["unlabeled"] == ["u1"]
    assert saved["folds"]["0"]["val"] == first.val_ids(0)
    # a different seed does not reshuffle a saved run
    assert load_or_create_splits(path, strata, 3, seed=99) == first
    assert read_splits(tmp_path) == first
    with pytest.raises(ValueError, match="new run folder"):
        load_or_create_splits(path, {**strata, "c9": "ET"}, 3, seed=1)
    with pytest.raises(ValueError, match="n_folds=3"):
        load_or_create_splits(path, strata, 4, seed=1)
