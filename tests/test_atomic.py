"""atomic_path: the final path is absent, the old file or the whole new one; no temporary survives."""

from __future__ import annotations

import os

import pytest

from radio_curation.atomic import TEMPORARY_GLOB, atomic_path, write_atomic


def _temporaries(folder):
    return list(folder.glob(TEMPORARY_GLOB))


def test_success_leaves_the_final_file_only(tmp_path):
    final = tmp_path / "result.bin"
    with atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp != final
        assert tmp.name.startswith(f".result.bin.tmp-{os.getpid()}-")
        tmp.write_bytes(b"new")
        assert not final.exists()
    assert final.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.bin"]


@pytest.mark.parametrize("error", [ValueError("disk full"), KeyboardInterrupt()])
def test_failure_leaves_neither_temporary_nor_final(tmp_path, error):
    final = tmp_path / "result.bin"
    with pytest.raises(type(error)), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise error
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fsync", [False, True])
def test_failure_keeps_an_existing_final_untouched(tmp_path, fsync):
    final = tmp_path / "result.bin"
    final.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_path(final, fsync=fsync) as tmp:
        tmp.write_bytes(b"new, but cut short")
        raise KeyboardInterrupt
    assert final.read_bytes() == b"old"
    assert not _temporaries(tmp_path)


def test_success_replaces_an_existing_final(tmp_path):
    final = tmp_path / "result.bin"
    final.write_bytes(b"old")
    with atomic_path(final, fsync=True) as tmp:
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new" and not _temporaries(tmp_path)


def test_a_failing_rename_removes_the_temporary(tmp_path):
    """A folder cannot replace a non-empty folder: the rename fails and the new folder goes too."""
    final = tmp_path / "sky"
    final.mkdir()
    (final / "sky.json").write_text("{}")
    with pytest.raises(OSError), atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "part.fits").write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["sky"]
    assert (final / "sky.json").read_text() == "{}"


def test_a_folder_is_moved_into_place_whole(tmp_path):
    final = tmp_path / "sky"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
    assert [p.name for p in final.iterdir()] == ["a.txt"] and not _temporaries(tmp_path)


def test_concurrent_writers_get_distinct_temporaries(tmp_path):
    final = tmp_path / "result.bin"
    with atomic_path(final) as first:
        first.write_bytes(b"first")
        with atomic_path(final) as second:
            assert second != first
            second.write_bytes(b"second")
        assert final.read_bytes() == b"second"
    assert final.read_bytes() == b"first" and not _temporaries(tmp_path)


@pytest.mark.parametrize("data", ["text ü\n", b"\x00bytes"])
def test_write_atomic_writes_text_or_bytes(tmp_path, data):
    path = tmp_path / "x"
    write_atomic(path, data)
    assert (path.read_text(encoding="utf-8") if isinstance(data, str) else path.read_bytes()) == data
    assert not _temporaries(tmp_path)
