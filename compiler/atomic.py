"""Atomic file writes and a file lock: a reader (or a crash) never sees a half-written output."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgec.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic
    on POSIX. On any exception the temporary file is removed and ``path`` is untouched.
    A folder that cannot be made or written to is an ``OutputError`` (one line on the
    CLI), raised before the caller writes anything. The result has the mode a plain
    ``open(path, "w")`` would give it (the old file's mode when replacing one), not
    ``mkstemp``'s owner-only 0600.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # set before the caller writes, so a mode the caller gives it (an executable's
        # 0755) is the one that lands
        os.chmod(tmp_path, _mode_for(target))
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def check_output(path: str | os.PathLike[str]) -> Path:
    """Fail early, with an ``OutputError``, if ``atomic_path(path)`` could not write there.

    Checked without creating anything: ``path`` is not a folder, and its nearest existing
    ancestor is a folder this process may write to. Meant for commands that do minutes of
    work before they write."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"output {target} is a directory")
    _check_writable_ancestor(target, target.absolute().parent)
    return target


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """``check_output`` for a folder the command fills (a tuning database, say)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target} is a file, not a folder")
    _check_writable_ancestor(target, target.absolute())
    return target


def _check_writable_ancestor(target: Path, start: Path) -> None:
    ancestor = start
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {target}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {target}: no permission to write in {ancestor}")


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)  # reading the umask means setting it; put it back at once
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``path`` (created if needed), released on exit or process death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
