"""Writes that a crash cannot leave half done."""

from __future__ import annotations

import pytest

from diti_sd.files import atomic_folder, atomic_write


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    atomic_write(target, lambda tmp: tmp.write_text("old"))

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_failed_folder_write_leaves_the_old_folder_whole(tmp_path):
    target = tmp_path / "checkpoint"

    def first(tmp):
        (tmp / "a.txt").write_text("1")
        (tmp / "b.txt").write_text("1")

    atomic_folder(target, first)

    def crash(tmp):
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_folder(target, crash)
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.txt": "1", "b.txt": "1"}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]
    atomic_folder(target, lambda tmp: (tmp / "c.txt").write_text("3"))  # a finished write replaces it whole
    assert [p.name for p in target.iterdir()] == ["c.txt"]
