"""Atomic writes: all or nothing, readable by others, no temp files left behind."""

from __future__ import annotations

import stat

import pytest

from sweeplab.files import atomic_write_text, atomic_writer


def test_replaces_the_whole_file_and_is_world_readable(tmp_path):
    path = tmp_path / "deep" / "record.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "record.json"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_writer(path) as handle:
        handle.write(b"half a rec")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
