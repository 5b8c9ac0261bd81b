"""Atomic files and folders, and the folder lock."""

from __future__ import annotations

import pytest

from brats_mtl.atomic import atomic_folder, atomic_output, locked, write_text_atomic


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_output_keeps_the_old_file_when_the_block_fails(tmp_path):
    path = write_text_atomic(tmp_path / "a.csv", "old\n")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_text_atomic(path, "new\n")
    with pytest.raises(RuntimeError), atomic_output(path, overwrite=True) as tmp:
        assert tmp.name.endswith(".csv") and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError
    assert path.read_text() == "old\n" and _names(tmp_path) == ["a.csv"]


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "cohort"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "case.txt").write_text("half")
        raise RuntimeError
    assert _names(tmp_path) == []  # neither the target nor the temporary folder
    with atomic_folder(target) as tmp:
        assert tmp.parent == tmp_path and not target.exists()
        (tmp / "sub").mkdir()
        (tmp / "sub" / "case.txt").write_text("one")
    assert (target / "sub" / "case.txt").read_text() == "one"
    assert _names(tmp_path) == ["cohort"]


def test_atomic_folder_replaces_only_with_overwrite_and_only_on_success(tmp_path):
    target = tmp_path / "cohort"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"), atomic_folder(target):
        pass
    with pytest.raises(RuntimeError), atomic_folder(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError
    assert _names(target) == ["old.txt"] and _names(tmp_path) == ["cohort"]
    with atomic_folder(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _names(target) == ["new.txt"] and _names(tmp_path) == ["cohort"]


def test_locked_excludes_another_holder_and_keeps_the_lock_file(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "records" / ".lock"

    def try_lock() -> bool:
        with open(path, "a") as other:  # another open file: flock excludes it
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(other, fcntl.LOCK_UN)
            return True

    with locked(path):
        assert path.is_file() and not try_lock()
    assert try_lock() and path.is_file()
