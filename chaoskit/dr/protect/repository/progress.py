"""Progress of long operations on a terminal: bytes, files, rate.  Silent elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """Redraws one status line at most ten times a second, only when enabled."""

    def __init__(
        self,
        verb: str,
        total_bytes: int = 0,
        total_files: int = 0,
        *,
        enabled: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.verb = verb
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.bytes = 0
        self.files = 0
        self._start = time.monotonic()
        self._last = 0.0

    @classmethod
    def for_terminal(cls, verb: str, total_bytes: int = 0, total_files: int = 0) -> Progress:
        return cls(verb, total_bytes, total_files, enabled=sys.stderr.isatty())

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        self.bytes += nbytes
        self.files += files
        if self.enabled and time.monotonic() - self._last >= 0.1:
            self._draw()

    def _draw(self, end: str = "") -> None:
        self._last = time.monotonic()
        elapsed = max(self._last - self._start, 1e-6)
        total = f" / {_size(self.total_bytes)}" if self.total_bytes else ""
        files = f" / {self.total_files}" if self.total_files else ""
        self.stream.write(
            f"\r{self.verb}: {_size(self.bytes)}{total}, "
            f"{self.files}{files} files, {_size(self.bytes / elapsed)}/s\x1b[K{end}"
        )
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self._draw("\n")
