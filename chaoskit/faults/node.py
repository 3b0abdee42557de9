"""Node faults on a swarm: a node is lost with every task on it, or drained.

``NodeLoss`` stops a node's Docker engine the way a power cut would (every process of
the node SIGKILLed at once, :func:`chaoskit.stack.swarm_nodes.stop_engine`): its tasks
die with it, and Swarm learns of it only when the node's heartbeats stop (about 12 s
here) before it reschedules them.  chaoskit's DR engine, seeing a replica gone whose
node no longer answers, drains that node and moves the replica to a warm spare or a new
task on another node at once (:mod:`chaoskit.stack.swarm_placement`).  Undone by
starting the engine again once Swarm has marked the node Down, as after a reboot (the
node rejoins, Ready), and making drained nodes active again.

``DrainNode`` is the planned counterpart: ``docker node update --availability drain``,
Swarm moves the node's tasks elsewhere, one graceful stop each.  Undone by making the
node active again (Swarm does not move tasks back; nothing needs it to).

Only nodes chaoskit added on this machine can be lost (``--chaos-swarm-workers``, or
``chaoskit swarm add-node``); the manager's own node never is, since chaoskit reaches
the swarm through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from chaoskit.errors import FaultError
from chaoskit.faults.base import Changes, Fault, FaultContext


def _swarm(kind: str, ctx: FaultContext) -> Any:
    backend = ctx.stack.backend
    if getattr(backend, "topology", None) is None:
        raise FaultError(f"{kind}: the {backend.name} backend has no nodes "
                         "(--chaos-backend swarm --chaos-swarm-workers 1)")  # fmt: skip
    return backend


def _target(kind: str, ctx: FaultContext, node: str | None, service: str | None) -> str:
    """The chaoskit name of the node to act on: *node*, or the one running *service*'s
    task, or (neither given) the first worker that runs a serving replica."""
    backend = _swarm(kind, ctx)
    topology = backend.topology
    if node is not None:
        topology.node_id_of(node)  # a name that names no node: one message
        return node
    candidates = [service] if service is not None else list(ctx.stack.replicas)
    for name in candidates:
        node_id = backend.node_of(name)
        if node_id is not None and node_id != topology.own_id:
            found = topology.name_of(node_id)
            if found is not None:
                return str(found)
    where = f"service {service!r}" if service else "no serving replica"
    raise FaultError(f"{kind}: {where} runs on a node chaoskit may lose (it runs on the "
                     "manager's own node; add workers with --chaos-swarm-workers)")  # fmt: skip


def _services_on(ctx: FaultContext, node_id: str) -> list[str]:
    backend = ctx.stack.backend
    return [s for s in ctx.stack.services if backend.node_of(s) == node_id]


@dataclass(frozen=True)
class NodeLoss(Fault):
    """Lose a swarm node with every task on it (see the module docstring)."""

    kind: ClassVar[str] = "node-loss"
    node: str | None = None
    service: str | None = None

    def _inject(self, ctx: FaultContext) -> Changes:
        from chaoskit.stack import swarm_nodes

        name = _target(self.kind, ctx, self.node, self.service)
        node_id = ctx.stack.backend.topology.node_id_of(name)
        services = _services_on(ctx, node_id)
        swarm_nodes.stop_engine(name)
        return Changes(record={"node": name, "node_id": node_id, "services": services},
                       undo=name)  # fmt: skip

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        from chaoskit.stack import swarm_nodes

        swarm_nodes.start_engine(changes.undo)  # a no-op once it runs
        ctx.stack.backend.activate_drained()


@dataclass(frozen=True)
class DrainNode(Fault):
    """Drain a swarm node: Swarm moves its tasks elsewhere (see the module docstring)."""

    kind: ClassVar[str] = "drain"
    node: str | None = None
    service: str | None = None

    def _inject(self, ctx: FaultContext) -> Changes:
        name = _target(self.kind, ctx, self.node, self.service)
        topology = ctx.stack.backend.topology
        node_id = topology.node_id_of(name)
        if topology.availability(node_id) != "active":
            raise FaultError(f"{self.kind}: node {name!r} is not active "
                             f"({topology.availability(node_id)})")  # fmt: skip
        services = _services_on(ctx, node_id)
        topology.set_availability(node_id, "drain")
        return Changes(record={"node": name, "node_id": node_id, "services": services},
                       undo=node_id)  # fmt: skip

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        ctx.stack.backend.topology.set_availability(changes.undo, "active")
