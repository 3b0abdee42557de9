"""Repository locks: shared for backup and restore, exclusive for prune.

A lock is a small file in ``locks/`` naming host, pid and the pid's start time.  A lock
is stale, and is removed with a warning, when its process is gone from this host (or the
pid was reused by another process) or when it was not refreshed for ``stale_after``
seconds; a holder refreshes its lock in the background, so only dead holders go stale.
That is what makes a SIGKILLed backup harmless to the next operation.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from chaoskit.atomic import atomic_write_bytes, fsync_dir
from chaoskit.errors import RepositoryError
from chaoskit.liveness import pid_alive

STALE_AFTER = 30 * 60.0
REFRESH_EVERY = 60.0


def _start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (distinguishes a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class LockInfo:
    name: str
    exclusive: bool
    hostname: str
    pid: int
    start_ticks: int | None
    time: float

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        return f"{kind} lock {self.name[:8]} held by pid {self.pid} on {self.hostname} since {when}"


def _read(path: Path) -> LockInfo | None:
    try:
        doc = json.loads(path.read_bytes())
        return LockInfo(
            name=path.name,
            exclusive=bool(doc["exclusive"]),
            hostname=str(doc["hostname"]),
            pid=int(doc["pid"]),
            start_ticks=doc.get("start_ticks"),
            time=float(doc["time"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # damaged: judge by file age
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        return LockInfo(path.name, True, "?", -1, None, mtime)


def stale_reason(info: LockInfo, stale_after: float) -> str | None:
    age = time.time() - info.time
    if age > stale_after:
        return f"not refreshed for {age:.0f}s"
    if info.hostname == os.uname().nodename:
        if not pid_alive(info.pid):
            return f"process {info.pid} is gone"
        ticks = _start_ticks(info.pid)
        if info.start_ticks is not None and ticks is not None and ticks != info.start_ticks:
            return f"pid {info.pid} now belongs to another process"
    return None


class Lock:
    """A held lock; use as a context manager (released on exit, refreshed meanwhile)."""

    def __init__(
        self,
        locks_dir: Path,
        *,
        exclusive: bool,
        stale_after: float = STALE_AFTER,
        refresh_every: float = REFRESH_EVERY,
    ) -> None:
        self.dir = locks_dir
        self.exclusive = exclusive
        self.stale_after = stale_after
        self.refresh_every = refresh_every
        self.name = os.urandom(16).hex()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False  # our lock file exists

    def _doc(self) -> bytes:
        return json.dumps(
            {
                "exclusive": self.exclusive,
                "hostname": os.uname().nodename,
                "pid": os.getpid(),
                "start_ticks": _start_ticks(os.getpid()),
                "time": time.time(),
            }
        ).encode()

    def _conflicts(self) -> list[LockInfo]:
        conflicts = []
        for path in sorted(self.dir.iterdir()):
            if path.name == self.name or path.name.startswith("."):
                continue
            info = _read(path)
            if info is None:
                continue
            reason = stale_reason(info, self.stale_after)
            if reason is not None:
                warnings.warn(f"removing stale {info.describe()}: {reason}", stacklevel=3)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if self.exclusive or info.exclusive:
                conflicts.append(info)
        return conflicts

    def acquire(self) -> Lock:
        self.dir.mkdir(parents=True, exist_ok=True)
        conflicts = self._conflicts()
        if not conflicts:
            atomic_write_bytes(self.dir / self.name, self._doc())
            self.held = True
            conflicts = self._conflicts()  # someone may have locked at the same moment
            if conflicts:
                self.release()
        if conflicts:
            raise RepositoryError(
                "repository is locked: " + "; ".join(c.describe() for c in conflicts)
            )
        self._thread = threading.Thread(target=self._refresh, name="chaoskit-lock", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh_every):
            with contextlib.suppress(OSError):
                atomic_write_bytes(self.dir / self.name, self._doc())

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if not self.held:
            return
        self.held = False
        with contextlib.suppress(FileNotFoundError):
            (self.dir / self.name).unlink()
            fsync_dir(self.dir)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def list_locks(locks_dir: Path) -> list[LockInfo]:
    if not locks_dir.is_dir():
        return []
    return [i for p in sorted(locks_dir.iterdir()) if (i := _read(p)) is not None]
