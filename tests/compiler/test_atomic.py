"""Atomic writes: whole or nothing, with the permissions of an ordinary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from edgec.atomic import atomic_path, atomic_write_bytes, check_output, check_output_dir
from edgec.errors import OutputError


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_new_file_gets_the_umask_mode_not_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "sub" / "a.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"x"
    assert _mode(tmp_path / "sub" / "a.bin") == 0o644


def test_replacing_a_file_keeps_its_mode(tmp_path: Path) -> None:
    out = tmp_path / "a.bin"
    out.write_bytes(b"old")
    out.chmod(0o640)
    atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"new" and _mode(out) == 0o640


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "a.bin"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_unwritable_place_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_bytes(blocker / "a.bin", b"x")  # a file where a folder should be


def test_checks_refuse_a_file_in_the_way_without_creating_anything(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(OutputError, match="is not a directory"):
        check_output(tmp_path / "f" / "sub" / "a.bin")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path)
    assert check_output_dir(tmp_path / "new" / "db") == tmp_path / "new" / "db"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_a_mode_the_writer_sets_is_kept(tmp_path: Path) -> None:
    """An executable written through atomic_path (the aarch64 runner) stays executable."""
    out = tmp_path / "runner"
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"#!/bin/sh\n")
        os.chmod(tmp, 0o755)
    assert _mode(out) == 0o755
