"""A worker that runs one loop on a daemon thread until stopped.

The DR engine, the load generator, the store guard, the backup agent, the replicator
and the learned monitor are each such a loop: they share how they start and stop here,
and how they die.  A loop that raises does not end silently (detection would stop with
nobody noticing): it keeps the exception in ``crashed`` and journals
``<loop_name>.crashed`` (loop, type, message, traceback), which fails the experiment
whose window it falls in (see :mod:`chaoskit.report.metrics`).
"""

from __future__ import annotations

import re
import threading
import traceback
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

from chaoskit.errors import ChaosKitError


def _words(class_name: str) -> list[str]:
    """``DREngine`` → ``["DR", "Engine"]``: an acronym stays one word."""
    return re.findall(r"[A-Z]+(?=[A-Z][a-z]|[0-9]|$)|[A-Z]?[a-z0-9]+", class_name)


class BackgroundLoop(ABC):
    """Subclasses implement ``_loop`` (returning once ``self._stop`` is set) and call
    ``super().__init__()``; ``start()`` returns the instance, ``stop()`` waits for it."""

    thread_name: ClassVar[str] = "chaoskit"
    stop_timeout: ClassVar[float] = 30.0
    loop_name: ClassVar[str] = "background_loop"
    """Names the crash event, ``<loop_name>.crashed``; by default from the class name
    (``DREngine`` → ``dr_engine``)."""
    loop_label: ClassVar[str] = "background loop"
    """The loop for a reader (``DREngine`` → ``DR engine``), in the crash's failing reason."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        words = _words(cls.__name__)
        if "loop_name" not in cls.__dict__:
            cls.loop_name = "_".join(w.lower() for w in words)
        if "loop_label" not in cls.__dict__:
            cls.loop_label = " ".join(w if w.isupper() and len(w) > 1 else w.lower()
                                      for w in words)  # fmt: skip

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.crashed: BaseException | None = None
        """What ended the loop when it raised instead of returning; None while it runs
        or after a clean stop."""

    @abstractmethod
    def _loop(self) -> None:
        """The work, until ``self._stop`` is set."""

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """The loop's thread is alive (False before ``start``, after ``stop`` or a crash)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:
            self.crashed = e
            if not self._journal_crash(e):
                raise  # nowhere to journal it: let threading.excepthook print it

    def _journal_crash(self, error: BaseException) -> bool:
        """Journal ``<loop_name>.crashed``; False when there is no journal or it failed
        (the journal itself may be what broke the loop)."""
        journal = getattr(self, "journal", None)  # every loop that has one calls it so
        if journal is None:
            return False
        try:
            journal.record(
                f"{self.loop_name}.crashed",
                loop=self.loop_label,
                thread=self.thread_name,
                type=type(error).__name__,
                message=str(error),
                traceback="".join(traceback.format_exception(error)),
            )
        except (ChaosKitError, OSError, ValueError, TypeError):
            return False
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to end and wait for it (*timeout* s, default ``stop_timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout if timeout is None else timeout)
