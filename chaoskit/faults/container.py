"""Faults on a service's container: graceful stop, restart, removal and network partitions.

Stop works on every backend; restart-in-place, removal and the partitions need the docker
backend (attach mode: no removal, the containers are the user's), and say so otherwise.
Like :class:`KillService`, the faults that take a service down undo nothing on revert:
bringing it back is the DR engine's job and what the experiment measures.  The
partitions are undone on revert: :class:`NetworkPartition` takes the container off the
stack network, :class:`FirewallPartition` keeps it there and has the kernel drop or
reject its traffic (iptables rules in its network namespace).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from chaoskit.errors import FaultError, StackError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.stack import netns_firewall


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


@dataclass(frozen=True)
class FirewallPartition(Fault):
    """Partition the service's container in the kernel: iptables rules in its network
    namespace cut every packet arriving on any interface but loopback, while the
    container stays on the network and keeps running.

    ``mode="drop"``: packets are dropped, so clients hang until their own timeout (a
    silent network failure).  ``mode="reject"``: TCP is answered with a reset and anything
    else with ICMP port-unreachable, so clients fail fast (connection refused or reset).

    Needs root on the Docker engine's host (``nsenter`` and ``iptables``).  Revert deletes
    exactly the rules this fault added (found by their comment, see
    :mod:`chaoskit.stack.netns_firewall`), if the same container still runs with the same
    init; a replacement started meanwhile has a fresh namespace and is left alone.
    """

    kind: ClassVar[str] = "partition"
    service: str = "serving"
    mode: str = "drop"

    def _inject(self, ctx: FaultContext) -> Changes:
        if self.mode not in netns_firewall.MODES:
            raise FaultError(
                f"{self.describe()}: mode {self.mode!r} is not one of {netns_firewall.MODES}"
            )
        backend = _backend_with(ctx, self, "netns_pid")
        container = backend.container_id(self.service) or ""
        pid = backend.netns_pid(self.service)
        comment = netns_firewall.make_comment()
        netns_firewall.add_rules(pid, netns_firewall.partition_rules(self.mode, comment))
        return Changes(
            record={
                "service": self.service,
                "container": container[:12],
                "mode": self.mode,
                "rule": comment,
            },
            undo=(container, pid, comment),
        )

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        container, pid, comment = changes.undo
        backend = ctx.stack.backend
        try:
            if backend.container_id(self.service) != container:
                return  # replaced: the old namespace went with the old container
            if backend.netns_pid(self.service) != pid:
                return  # restarted in place: a new init in a new namespace
        except StackError:
            return  # gone or stopped: its namespace, and the rules in it, are gone too
        netns_firewall.delete_rules(pid, comment)
