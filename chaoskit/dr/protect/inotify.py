"""Wake up as soon as files change: a minimal Linux inotify watcher (ctypes, no dependency).

The store guard scans on every change instead of waiting for its next periodic scan, so
damage to the model store is detected in milliseconds.  Where inotify is unavailable
(another OS, a network file system that does not report changes), ``Watcher.available``
is False and the guard falls back to periodic scans alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
from pathlib import Path

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_IGNORED = 0x8000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
CHANGES = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
    | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
)  # fmt: skip
_EVENT = struct.Struct("iIII")


class Watcher:
    """Watches directories (not recursively); ``wait`` returns True when any changed."""

    def __init__(self) -> None:
        self._fd = -1
        self._watched: dict[str, int] = {}
        self._libc = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd >= 0:
            self._libc, self._fd = libc, fd

    @property
    def available(self) -> bool:
        return self._fd >= 0

    def watch(self, directory: str | os.PathLike[str]) -> None:
        """Add *directory* (idempotent; a missing one is skipped, the next scan sees why)."""
        path = os.fspath(directory)
        if not self.available or path in self._watched or not Path(path).is_dir():
            return
        wd = self._libc.inotify_add_watch(self._fd, path.encode(), CHANGES)  # type: ignore[union-attr]
        if wd >= 0:
            self._watched[path] = wd

    def forget_missing(self) -> None:
        """Drop directories that are gone (the kernel dropped their watches already)."""
        for path in [p for p in self._watched if not Path(p).is_dir()]:
            del self._watched[path]

    def wait(self, timeout: float) -> bool:
        """Block up to *timeout* seconds; True if something changed (events are drained).

        A watched directory that was deleted, or renamed away (a restore swaps in a new
        directory under the same path), is forgotten, so the next ``watch`` of that
        path watches what is there now.
        """
        if not self.available:
            return False
        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        gone: set[int] = set()
        try:
            while chunk := os.read(self._fd, 64 * (_EVENT.size + 256)):
                offset = 0
                while offset + _EVENT.size <= len(chunk):
                    wd, mask, _, length = _EVENT.unpack_from(chunk, offset)
                    if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                        gone.add(wd)
                    offset += _EVENT.size + length
        except BlockingIOError:
            pass
        for path, wd in [(p, w) for p, w in self._watched.items() if w in gone]:
            self._libc.inotify_rm_watch(self._fd, wd)  # type: ignore[union-attr]
            del self._watched[path]
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._watched.clear()
