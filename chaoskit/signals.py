"""SIGTERM and SIGINT as a call from a watcher thread, never from a signal handler.

A Python signal handler runs in the main thread between two bytecodes, also while that
thread holds the lock inside ``threading.Event.wait``; a handler that then calls
``event.set()`` (or anything else that takes that lock) blocks on it for ever.  That is
how ``chaoskit backup watch`` once hung on SIGTERM.  So the Python-level handlers here
do nothing; the interpreter's C-level handler, in whichever thread the kernel picked,
writes the signal's number to a wakeup pipe (``signal.set_wakeup_fd``) at once, and a
watcher thread reading that pipe calls back in ordinary thread context.  A second signal
ends the process at once (exit status 128 + signal), as a second Ctrl-C does elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class StopSignals:
    """While open, the first SIGTERM/SIGINT calls *callback* (from the watcher thread).
    Open it from the main thread (``set_wakeup_fd`` must be)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.received: int | None = None
        self._closing = False
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # the C handler must never block on it
        self._thread = threading.Thread(target=self._watch, name="chaoskit-signals", daemon=True)

    def start(self) -> StopSignals:
        """Start watching (for a process's whole life, or until the ``with`` ends)."""
        self._previous = {s: signal.signal(s, _ignore_here) for s in STOP_SIGNALS}
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._thread.start()
        return self

    def __enter__(self) -> StopSignals:
        return self.start()

    def _watch(self) -> None:
        while True:
            data = os.read(self._read_fd, 64)
            if self._closing or not data:
                return
            for signum in data:
                if signum not in STOP_SIGNALS:
                    continue
                if self.received is not None:
                    os._exit(128 + signum)  # a second signal: stop now, not gracefully
                self.received = signum
                self.callback()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:  # fmt: skip
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._closing = True
        with contextlib.suppress(OSError):
            os.write(self._write_fd, b"\0")  # wakes the watcher, which sees it is closing
        self._thread.join()
        os.close(self._read_fd)
        os.close(self._write_fd)


def _ignore_here(signum: int, frame: object) -> None:
    """The Python-level handler: nothing (the watcher acts); it only keeps the signal's
    default action, death, from happening."""
