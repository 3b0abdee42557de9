"""Faults that act on a whole service: kill it, or hang it (alive but not answering)."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import ClassVar

from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.stack.process import parse_signal
from chaoskit.waiting import wait_until


@dataclass(frozen=True)
class KillService(Fault):
    """Send *signal* (default SIGKILL) to the service, like a crash or an OOM kill.

    Nothing is undone on revert: bringing the service back is the DR engine's job, and
    the experiment measures how long that takes.
    """

    kind: ClassVar[str] = "kill"
    service: str = "serving"
    signal: str = "SIGKILL"

    def __post_init__(self) -> None:
        parse_signal(self.signal)  # fail at construction on a bad signal name

    def _inject(self, ctx: FaultContext) -> Changes:
        backend = ctx.stack.backend
        instance = backend.kill(self.service, self.signal)
        if parse_signal(self.signal) == signal.SIGKILL:
            # a big process takes a while to die; the fault has happened once it is gone
            # (gone, or already replaced by the DR engine: a new instance also proves it)
            wait_until(
                lambda: backend.status(self.service) != "running"
                or backend.instance(self.service) != instance,
                30,
                what=f"{self.service} to die",
            )
        return Changes(record={"service": self.service, "instance": instance})

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        return None


@dataclass(frozen=True)
class HangService(Fault):
    """Freeze the service (SIGSTOP, or ``docker pause``): its port stays open, nothing answers.

    A "process is alive" check misses this.  Revert resumes the frozen instance if it is
    still there and still frozen; if the DR engine replaced it meanwhile, there is nothing
    to undo.
    """

    kind: ClassVar[str] = "hang"
    service: str = "serving"

    def _inject(self, ctx: FaultContext) -> Changes:
        backend = ctx.stack.backend
        instance = backend.instance(self.service)
        backend.pause(self.service)
        return Changes(record={"service": self.service, "instance": instance}, undo=instance)

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        backend = ctx.stack.backend
        still_frozen = backend.status(self.service) == "paused"
        if still_frozen and backend.instance(self.service) == changes.undo:
            backend.resume(self.service)
