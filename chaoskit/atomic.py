"""Durable, all-or-nothing file writes: temp file in the same directory, fsync, rename."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or creation inside *path* durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, durable: bool = True, mode: int = 0o644
) -> None:
    """Replace *path* with *data* so a reader sees the old or the new file, never a mix.

    With ``durable`` the data and the rename are fsynced; a crash then leaves either
    version whole.  On any error the temporary file is removed.  *mode* is set when the
    file is created (0o600 for a secret: it is never readable by others, not even
    while it is written).
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
        if durable:
            fsync_dir(target.parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_move(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move the file *source* over *target* atomically, also to another file system
    (a volume of its own): there it is copied beside *target*, fsynced and renamed."""
    try:
        os.replace(source, target)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    dest = Path(target)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(dest.parent)
    os.unlink(source)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, durable: bool = True, mode: int = 0o644
) -> None:
    """Text form of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable, mode=mode)


def ensure_secret_file(path: str | os.PathLike[str], nbytes: int = 32) -> str:
    """The random token in *path*, created first (mode 0600, never replaced) if missing."""
    import secrets

    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return target.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(nbytes))
        f.flush()
        os.fsync(f.fileno())
    return target.read_text().strip()


_RENAME_EXCHANGE = 2  # renameat2 flag (linux/fs.h)


def exchange_paths(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Atomically swap two paths (Linux renameat2); False when the system cannot.

    A restore swaps a verified copy into place with it; a stale-model fault swaps an
    older version's files in; either way no reader ever sees a half-moved directory.
    """
    import ctypes

    func = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if func is None:
        return False
    at_fdcwd = -100
    rc = func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(rc == 0)
