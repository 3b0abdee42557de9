"""Where a Swarm backend's replicas run: moving a lost node's replicas elsewhere at once,
warm spares, and putting a service back in shape between experiments.

Swarm replaces the tasks of a node only once it has marked the node down (its heartbeats
stopped: 10-15 s here), then after its restart delay (5 s); a drained node's tasks wait
for the same, since Swarm never runs a slot twice while its old task may still run.  The
DR engine knows at its next probe.  For a replicated service it drains the node and
moves the replica at once, to a slot of its own:

* a **warm spare** (``SwarmOptions.spares``): tasks the service runs beyond its replicas,
  ready and unused, on the manager's node (the one node no node fault takes, since
  chaoskit reaches the swarm through it).  The replica takes the spare's slot, and its
  old slot becomes the spare, which Swarm restarts on a live node once it has marked the
  lost one down;
* else a **new task**: the service is scaled up by one and the replica takes the new
  slot, a cold start on an active node.

Serving is stateless, so an extra copy of a replica for a while costs nothing.  One-task
services (a trainer, a DR site) keep Swarm's way: two of them would write the same files.
Between experiments :meth:`Placement.rebalance` scales the service back to its count,
spreads the replicas over the active nodes and brings the spares home.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from chaoskit.stack import swarm_rollout as rollout
from chaoskit.stack.swarm_tasks import RUNNING, live_slots, task_container
from chaoskit.waiting import wait_until

if TYPE_CHECKING:
    from chaoskit.stack.swarm import _Member, _SwarmService
    from chaoskit.stack.swarm_topology import Topology

SLOT_WAIT_S = 10.0
"""How long Swarm's orchestrator may take to create, or end, the tasks of a scale."""


class Placement:
    """The node operations of :class:`chaoskit.stack.swarm.SwarmBackend` (a mixin)."""

    client: Any
    topology: Topology
    _members: dict[str, _Member]
    _swarm_services: dict[str, _SwarmService]
    _drained: set[str]
    drains: list[str]

    if TYPE_CHECKING:  # SwarmBackend's
        def _member(self, service: str) -> _Member: ...
        def _slot_task(self, member: _Member) -> dict[str, Any] | None: ...
        def _tasks(self, swarm_service: str) -> list[dict[str, Any]]: ...
        def _remove_container(self, task: dict[str, Any] | None, service: str) -> None: ...
        def _wait_ready(self, member: _Member, before: str | None,
                        timeout: float | None = None) -> None: ...  # fmt: skip

    def node_of(self, service: str) -> str | None:
        """The swarm node id of the node running *service*'s current task."""
        return self._node(self._member(service))

    def _node(self, member: _Member) -> str | None:
        task = self._slot_task(member)
        return None if task is None else task.get("NodeID")

    def drain(self, node_id: str) -> None:
        """Drain a node (no new task goes there); the node faults' reverts make drained
        nodes active again."""
        self.topology.set_availability(node_id, "drain")
        self._drained.add(node_id)
        self.drains.append(node_id)

    def _place_spares(self, group: _SwarmService) -> None:
        """Scale a new service up by its spares, on the manager's node: once Swarm has
        spread the replicas, the other nodes are paused while it places the spares."""
        if not group.spares:
            return
        members = [self._members[name] for name in group.members]
        wait_until(lambda: all(self._node(m) for m in members), SLOT_WAIT_S, interval=0.05,
                   what=f"the replicas of swarm service {group.name!r} placed")  # fmt: skip
        with self._paused(self.topology.active_nodes() - {self.topology.own_id}):
            rollout.scale(self.client.api, group.name, len(members) + len(group.spares))
            wait_until(lambda: all(self._node(s) for s in group.spares), SLOT_WAIT_S,
                       interval=0.05, what=f"the spares of {group.name!r} placed")  # fmt: skip

    # -- a lost node ------------------------------------------------------------------
    def replace_elsewhere(self, member: _Member) -> bool:
        """The member's task is on a lost node: drain the node and, for a replicated
        service, move the member to a warm spare or a new task (see the module
        docstring).  False for a one-task service, which waits for Swarm."""
        node_id = self._node(member)
        if node_id is not None and node_id not in self._drained:
            self.drain(node_id)
        group = self._swarm_services[member.service]
        if len(group.members) < 2:
            return False
        spare = self._warm_spare(group)
        if spare is not None:
            member.slot, spare.slot = spare.slot, member.slot
            return True
        taken = {m.slot for m in self._group(group)}
        replicas = rollout.replicas_of(self.client.api, member.service)
        rollout.scale(self.client.api, member.service, replicas + 1)
        new = wait_until(lambda: sorted(live_slots(self._tasks(member.service)) - taken),
                         SLOT_WAIT_S, interval=0.05,
                         what=f"a new task of swarm service {member.service!r}")  # fmt: skip
        member.slot = new[0]
        return True

    def _warm_spare(self, group: _SwarmService) -> _Member | None:
        """A spare whose task runs on a node that is neither lost nor drained."""
        for spare in group.spares:
            task = self._slot_task(spare) or {}
            node_id = task.get("NodeID")
            running = (task.get("Status") or {}).get("State") == RUNNING
            if running and node_id not in self._drained and not self.topology.lost(node_id):
                return spare
        return None

    def _group(self, group: _SwarmService) -> list[_Member]:
        return [*(self._members[name] for name in group.members), *group.spares]

    # -- between experiments ----------------------------------------------------------
    def rebalance(self) -> list[str]:
        """Each replicated service back at its count, its replicas spread over the active
        nodes again (Swarm never moves a task back after a node came back, so a node
        fault would leave the next one's node empty) and its spares on the manager's
        node; returns the replicas moved."""
        moved = []
        for group in self._swarm_services.values():
            moved += self._trim(group)
            moved += self._spread(group)
            self._bring_spares_home(group)
        return moved

    def _trim(self, group: _SwarmService) -> list[str]:
        """Scale *group* back after :meth:`replace_elsewhere` added a task; a member (or
        spare) whose slot Swarm ended takes a slot left over."""
        slots = self._group(group)
        if rollout.replicas_of(self.client.api, group.name) <= len(slots):
            return []
        rollout.scale(self.client.api, group.name, len(slots))

        def trimmed() -> set[int]:
            live = live_slots(self._tasks(group.name))
            return live if len(live) == len(slots) else set()

        live = wait_until(trimmed, SLOT_WAIT_S, interval=0.05,
                          what=f"swarm service {group.name!r} at {len(slots)} tasks")  # fmt: skip
        left = sorted(live - {m.slot for m in slots})
        moved = [m for m in slots if m.slot not in live]
        for member, slot in zip(moved, left, strict=True):
            member.slot = slot
        for member in moved:
            self._wait_ready(member, before=None)
        return [m.name for m in moved if m.name in self._members]

    def _spread(self, group: _SwarmService) -> list[str]:
        """Move one replica off the node all of them run on, to another active node."""
        active = self.topology.active_nodes()
        members = [self._members[name] for name in group.members]
        nodes = {self._node(m) for m in members}
        if len(members) < 2 or len(active) < 2 or len(nodes) != 1 or not nodes <= active:
            return []
        member = members[-1]
        self._move(member, min(active - nodes))
        return [member.name]

    def _bring_spares_home(self, group: _SwarmService) -> None:
        """Each spare not running on the manager's node gets a ready task there."""
        own = self.topology.own_id
        for spare in group.spares:
            if self._node(spare) == own:
                self._wait_ready(spare, before=None)  # ready before a node loss needs it
            else:
                self._move(spare, own)

    def _move(self, member: _Member, node_id: str) -> None:
        """Run *member*'s slot on *node_id*: its container removed (if its node is back:
        else it went with the node), the other active nodes are paused while Swarm
        replaces the task.  Swarm's spread alone counts the spares too, so it may put
        the task back where it was."""
        task = self._slot_task(member)
        with self._paused(self.topology.active_nodes() - {node_id}):
            self._remove_container(task, member.name)
            self._wait_ready(member, before=task_container(task))

    @contextmanager
    def _paused(self, nodes: set[str]) -> Iterator[None]:
        for node_id in nodes:
            self.topology.set_availability(node_id, "pause")
        try:
            yield
        finally:
            for node_id in nodes:
                self.topology.set_availability(node_id, "active")

    def activate_drained(self) -> list[str]:
        """Make the nodes this backend drained active again, once they are back."""
        back = [n for n in self._drained if not self.topology.lost(n)]
        for node_id in back:
            self.topology.set_availability(node_id, "active")
            self._drained.discard(node_id)
        return back
