"""A worker that runs one loop on a daemon thread until stopped.

The DR engine, the load generator, the store guard, the backup agent, the replicator
and the learned monitor are each such a loop: they share how they start and stop here.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import ClassVar, Self


class BackgroundLoop(ABC):
    """Subclasses implement ``_loop`` (returning once ``self._stop`` is set) and call
    ``super().__init__()``; ``start()`` returns the instance, ``stop()`` waits for it."""

    thread_name: ClassVar[str] = "chaoskit"
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _loop(self) -> None:
        """The work, until ``self._stop`` is set."""

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to end and wait for it (*timeout* s, default ``stop_timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout if timeout is None else timeout)
