"""The run journal: append-only JSON lines, one timestamped event per line.

Faults, services and the DR engine only *write* events here; every reported figure
(TTD, RTO, RPO, failed requests) is computed from the journal afterwards.  Each event
carries ``t`` (CLOCK_MONOTONIC seconds, comparable across processes on one host, used
for durations) and ``wall`` (Unix time, for humans and for file timestamps).

Several processes may append to one journal: the file is opened with O_APPEND and each
event is written with a single ``write`` call, which Linux keeps whole.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chaoskit.errors import JournalError

JOURNAL_ENV = "CHAOSKIT_JOURNAL"
"""Environment variable through which services learn the journal path."""

Event = dict[str, Any]


class Journal:
    """Appends events to a JSONL file; safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike[str], *, source: str = "chaoskit") -> None:
        self.path = Path(path)
        self.source = source
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> Event:
        """Append one event and return it; ``t``/``wall`` default to now."""
        entry: Event = {"t": time.monotonic(), "wall": time.time(), "event": event}
        entry.setdefault("source", self.source)
        entry.update(fields)
        line = (json.dumps(entry, default=str, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd < 0:
                raise JournalError(f"journal {self.path} is closed")
            os.write(self._fd, line)
        return entry

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_env(cls, *, source: str) -> Journal | None:
        """The journal named by $CHAOSKIT_JOURNAL, or None when a service runs standalone."""
        path = os.environ.get(JOURNAL_ENV)
        return cls(path, source=source) if path else None


TAIL_CHUNK = 1 << 20
"""Bytes a :class:`JournalTail` reads at a time."""


class JournalTail:
    """Follows a journal as it grows: each call returns the complete events added since.

    It starts at the journal's end, at its start (*from_start*) or at a byte *offset*
    (the journal's size when something began: what was appended since is its window).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, from_start: bool = False, offset: int | None = None
    ) -> None:
        self.path = Path(path)
        if offset is not None:
            self._offset = offset
        else:
            exists = self.path.exists()
            self._offset = 0 if from_start or not exists else self.path.stat().st_size
        self._partial = b""

    def events(self) -> Iterator[Event]:
        """The complete events added since, read :data:`TAIL_CHUNK` bytes at a time.

        A caller that keeps only the events it looks for needs memory for one chunk, not
        for the whole journal (which grows by megabytes an hour of load).  Consume it to
        the end: the events of a chunk read but not consumed are skipped for good.
        """
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            f.seek(self._offset)
            while chunk := f.read(TAIL_CHUNK):
                self._offset += len(chunk)
                *lines, self._partial = (self._partial + chunk).split(b"\n")
                for line in lines:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue  # a line another writer damaged is reported by read_journal
                    if isinstance(event, dict) and "event" in event:
                        yield event

    def new_events(self) -> list[Event]:
        return list(self.events())


def read_journal(path: str | os.PathLike[str]) -> list[Event]:
    """All events of a journal in file order.

    A last line cut off by a crash is skipped with a warning; damage anywhere else is a
    JournalError naming the line, because it would make every figure doubtful.
    """
    return list(iter_journal(path))


def iter_journal(path: str | os.PathLike[str]) -> Iterator[Event]:
    p = Path(path)
    if p.is_dir():
        p = p / "journal.jsonl"
    try:
        raw = p.read_bytes()
    except FileNotFoundError as e:
        raise JournalError(f"no journal at {p}") from e
    lines = raw.split(b"\n")
    last = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            if not isinstance(event, dict) or "event" not in event or "t" not in event:
                raise ValueError("not an event object")
        except ValueError as e:
            if number - 1 == last:
                warnings.warn(
                    f"{p}: skipped line {number}, cut off (the run was probably interrupted)",
                    stacklevel=2,
                )
                continue
            raise JournalError(f"{p}: line {number} is not a journal event: {e}") from e
        yield event
