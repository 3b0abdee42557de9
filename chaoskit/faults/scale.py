"""An orchestrator's service scaled down: someone runs ``docker service scale serving=0``
(or a bad autoscaler does), and the replicas' tasks are shut down.

Swarm does what it is told: nothing brings the tasks back.  chaoskit's DR engine, seeing
the replicas gone, scales the service back to the stack's count (its restart of a
replica whose slot no longer exists).  Undone by scaling back to the count before, if
nobody has, and waiting until every replica is ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from chaoskit.errors import FaultError
from chaoskit.faults.base import Changes, Fault, FaultContext


@dataclass(frozen=True)
class ScaleService(Fault):
    """Scale the Swarm service *service* belongs to down to *replicas* tasks."""

    kind: ClassVar[str] = "scale-down"
    service: str = "serving"
    replicas: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) \
                or self.replicas < 0:
            raise FaultError(f"{self.kind}: replicas must be 0 or more, got {self.replicas!r}")

    def _inject(self, ctx: FaultContext) -> Changes:
        backend = ctx.stack.backend
        if not callable(getattr(backend, "scale", None)):
            raise FaultError(f"{self.kind}: the {backend.name} backend does not scale services "
                             "(an orchestrator does: --chaos-backend swarm)")  # fmt: skip
        before = backend.scale(self.service, self.replicas)
        if before <= self.replicas:
            backend.scale(self.service, before)
            raise FaultError(f"{self.kind}: {self.service!r} runs {before} replicas: scaling "
                             f"to {self.replicas} takes none away")  # fmt: skip
        return Changes(record={"service": self.service, "from": before, "to": self.replicas},
                       undo=before)  # fmt: skip

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        backend = ctx.stack.backend
        backend.scale(self.service, changes.undo)  # a no-op once the DR engine has
        backend.await_replicas(self.service)
