"""The state of one chaoskit run inside pytest: its journal, its stack, and the cleanups
that must all run however the run ends (kept in ``config.stash`` by the plugin)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoskit.errors import ChaosKitError
from chaoskit.objectives import Objectives


@dataclass
class RunState:
    """Per-run state kept in ``config.stash``."""

    backend: str
    report_dir: Path
    seed: int
    defaults: Objectives
    swarm: Any = None
    """The swarm backend's options (a ``SwarmOptions``; None: defaults)."""
    stack_file: Path | None = None
    """The user's stack (``--chaos-stack``); None: the reference stack."""
    plan: Any = None
    run_id: str = field(
        default_factory=lambda: time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    )
    journal: Any = None
    stack: Any = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    """Idempotent stoppers of what runs (experiments, guard, stack), newest last."""
    results: list[Any] = field(default_factory=list)
    session_loops: list[Any] = field(default_factory=list)
    """The loops that live for the whole run (store guard, replicator): one that died
    between experiments fails the next experiment instead of leaving it unguarded."""
    store_guard: Any = None
    """The stack's store guard (a quality gate sets bad versions aside through it)."""
    cleanup_failures: list[str] = field(default_factory=list)
    """``<cleanup>: <Type>: <message>`` of every cleanup that raised, for the summary."""

    def run_cleanups(self) -> None:
        """Stop everything still running, newest first (an interrupted run gets here).

        Every cleanup runs, even after one raised: a stack left running because the
        guard's stop failed would outlive the session.  Each failure is journaled
        (``cleanup.failed``) and kept in ``cleanup_failures`` (the summary prints them, the
        exit status turns non-zero); a BaseException (Ctrl-C) is re-raised once all ran.
        """
        interrupted: BaseException | None = None
        while self.cleanups:
            cleanup = self.cleanups.pop()
            try:
                cleanup()
            except BaseException as e:  # the first one is re-raised below
                self._cleanup_failed(cleanup, e)
                if not isinstance(e, Exception) and interrupted is None:
                    interrupted = e
        if interrupted is not None:
            raise interrupted

    def _cleanup_failed(self, cleanup: Callable[[], None], error: BaseException) -> None:
        name, message = cleanup_name(cleanup), " ".join(str(error).split())
        what = f"{type(error).__name__}: {message}" if message else type(error).__name__
        self.cleanup_failures.append(f"{name}: {what}")  # one line each in the summary
        if self.journal is None:
            return
        try:
            self.journal.record("cleanup.failed", name=name, type=type(error).__name__,
                                message=str(error))  # fmt: skip
        except (ChaosKitError, OSError):
            pass  # closed or full: the summary still lists the failure

    @property
    def run_dir(self) -> Path:
        return self.report_dir / self.run_id

    def open_journal(self) -> Any:
        if self.journal is None:
            from chaoskit.journal import Journal

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.journal = Journal(self.run_dir / "journal.jsonl", source="chaoskit")
        return self.journal


def cleanup_name(cleanup: Callable[[], None]) -> str:
    """``StoreGuard.stop`` for a bound method, else the function's qualified name."""
    owner = getattr(cleanup, "__self__", None)
    name = getattr(cleanup, "__name__", None) or type(cleanup).__name__
    if owner is not None and not isinstance(owner, type):
        return f"{type(owner).__name__}.{name}"
    return str(getattr(cleanup, "__qualname__", name))
