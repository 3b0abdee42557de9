"""Faults on a service's container: graceful stop, restart, removal and a network partition.

Stop works on every backend; restart-in-place, removal and the partition need the docker
backend (attach mode: no removal, the containers are the user's), and say so otherwise.
Like :class:`KillService`, the faults that take a service down undo nothing on revert:
bringing it back is the DR engine's job and what the experiment measures.  The partition
is undone on revert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from chaoskit.errors import FaultError
from chaoskit.faults.base import Changes, Fault, FaultContext


def _backend_with(ctx: FaultContext, fault: Fault, method: str) -> Any:
    backend = ctx.stack.backend
    if not callable(getattr(backend, method, None)):
        raise FaultError(
            f"{fault.describe()} is not available on the "
            f"{getattr(backend, 'name', type(backend).__name__)!r} backend (it has no {method}())"
        )
    return backend


@dataclass(frozen=True)
class StopService(Fault):
    """Stop the service gracefully (SIGTERM, SIGKILL after *timeout* s), like a scale-down
    or a node drain.  Not undone on revert."""

    kind: ClassVar[str] = "stop"
    service: str = "serving"
    timeout: float | None = None

    def _inject(self, ctx: FaultContext) -> Changes:
        backend = ctx.stack.backend
        instance = backend.instance(self.service)
        backend.stop(self.service, self.timeout)
        return Changes(record={"service": self.service, "instance": instance})

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        return None


@dataclass(frozen=True)
class RestartContainer(Fault):
    """``docker restart``-like blip: the same container is killed and started again (the
    service is down for its cold start).  Nothing to undo."""

    kind: ClassVar[str] = "restart"
    service: str = "serving"

    def _inject(self, ctx: FaultContext) -> Changes:
        backend = _backend_with(ctx, self, "restart_in_place")
        before = backend.instance(self.service)
        backend.restart_in_place(self.service)
        after = backend.instance(self.service)
        return Changes(record={"service": self.service, "instance": before, "new_instance": after})

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        return None


@dataclass(frozen=True)
class RemoveContainer(Fault):
    """Remove the service's container (forced), as a careless ``docker rm -f`` or a lost
    node would: status becomes "absent".  Not undone on revert: recovery starts a
    replacement from the same spec."""

    kind: ClassVar[str] = "remove"
    service: str = "serving"

    def _inject(self, ctx: FaultContext) -> Changes:
        backend = _backend_with(ctx, self, "remove")
        instance = backend.instance(self.service)
        backend.remove(self.service)
        return Changes(record={"service": self.service, "instance": instance})

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        return None


@dataclass(frozen=True)
class NetworkPartition(Fault):
    """Disconnect the service's container from the stack network: other services cannot
    reach it and its published ports go dark, while the process keeps running.

    Revert reconnects that same container if it still exists and is still cut off; a
    replacement started meanwhile joined the network by itself.
    """

    kind: ClassVar[str] = "partition"
    service: str = "serving"

    def _inject(self, ctx: FaultContext) -> Changes:
        backend = _backend_with(ctx, self, "disconnect")
        container = backend.disconnect(self.service)
        return Changes(
            record={
                "service": self.service,
                "container": container[:12],
                "network": getattr(backend, "network", None),
            },
            undo=container,
        )

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        backend = ctx.stack.backend
        current = backend.container_id(self.service)
        if current == changes.undo and backend.status(self.service) != "absent":
            if not backend.connected(self.service):
                backend.connect(self.service, changes.undo)
