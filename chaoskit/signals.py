"""SIGTERM and SIGINT as a call from a watcher thread, never from a signal handler.

A Python signal handler runs in the main thread between two bytecodes, also while that
thread holds the lock inside ``threading.Event.wait``; a handler that then calls
``event.set()`` (or anything else that takes that lock) blocks on it for ever.  That is
how ``chaoskit backup watch`` once hung on SIGTERM.  So the stop signals are blocked in
the main thread and in every thread it starts afterwards, and one watcher thread takes
them with ``sigwait`` and calls back in ordinary thread context.  A second signal ends
the process at once (exit status 128 + signal), as a second Ctrl-C does elsewhere.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import TracebackType

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class StopSignals:
    """While open, the first SIGTERM/SIGINT calls *callback* (from the watcher thread).

    Open it before starting any other thread: threads inherit the blocked mask, and a
    thread started earlier could still receive a signal through Python's handler.
    """

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.received: int | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._watch, name="chaoskit-signals", daemon=True)

    def start(self) -> StopSignals:
        """Block the signals and start watching (for a process's whole life: no close)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self._thread.start()
        return self

    def __enter__(self) -> StopSignals:
        return self.start()

    def _watch(self) -> None:
        while True:
            signum = signal.sigwait(STOP_SIGNALS)
            if self._closing:
                return
            if self.received is not None:
                os._exit(128 + signum)  # a second signal: stop now, not gracefully
            self.received = signum
            self.callback()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:  # fmt: skip
        self._closing = True
        if self._thread.is_alive() and self._thread.ident is not None:
            signal.pthread_kill(self._thread.ident, signal.SIGTERM)  # wakes its sigwait
            self._thread.join()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
