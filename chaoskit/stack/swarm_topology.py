"""The nodes a Swarm backend's tasks run on: which engine sees a task's container, where
its published ports are, which node is lost, and draining one.

Each node's engine sees only its own containers, so acting on a task (signal, pause,
remove, logs) goes to the engine of the node it runs on: the manager's own engine, or
that of a node chaoskit added on this machine (:mod:`chaoskit.stack.swarm_nodes`).  A
node is *lost* when its engine no longer answers; Swarm notices only when its heartbeats
stop (about 12 s here), chaoskit at its next probe.
"""

from __future__ import annotations

import threading
from typing import Any

from chaoskit.errors import BackendError
from chaoskit.stack import docker_engine as engine
from chaoskit.stack import swarm_nodes
from chaoskit.stack.ports import HOST

PAUSED_BY = "chaoskit.paused-by"
"""Node label: the chaoskit process (owner label) that paused the node for a while."""
_CONFLICT = "update out of sequence"
"""swarmkit's answer to an update naming a version that is no longer the object's."""
_CONFLICT_TRIES = 5


class Topology:
    def __init__(self, client: Any, url: str) -> None:
        self.client, self.url = client, url
        with engine.engine_errors("asking the Docker engine for its swarm node"):
            self.own_id = str(client.api.info()["Swarm"]["NodeID"])
        self.added: list[str] = []
        """Names of the nodes this backend added (removed again at close)."""
        self._images: set[str] = set()
        self._apis: dict[str, Any] = {}
        self._addresses: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- nodes of our own ------------------------------------------------------------
    def ensure_workers(self, count: int, image: str) -> None:
        """At least *count* nodes added by this backend, each holding *image*."""
        with self._lock:
            if count and not self.added:
                swarm_nodes.reap_orphan_nodes()
            for name in self.added:
                if image not in self._images:
                    swarm_nodes.copy_image(name, image, self.url)
            while len(self.added) < count:
                self.added.append(swarm_nodes.add_node(self.url, images=[image]).name)
            self._images.add(image)

    def _record(self, node_id: str) -> swarm_nodes.SwarmNode | None:
        return next((n for n in swarm_nodes.list_nodes() if n.node_id == node_id), None)

    def name_of(self, node_id: str) -> str | None:
        """The chaoskit name of the node (None: the manager's own node, or one of the
        user's that chaoskit did not add)."""
        record = None if node_id == self.own_id else self._record(node_id)
        return None if record is None else record.name

    # -- reaching a task's node ------------------------------------------------------
    def api_for(self, node_id: str | None) -> Any:
        """The engine API of the node; None when the node is lost (its engine is down)."""
        if node_id in (None, self.own_id):
            return self.client.api
        assert node_id is not None
        record = self._record(node_id)
        if record is None:
            raise BackendError(f"task on node {node_id[:12]}: chaoskit cannot reach that "
                               "node's Docker engine from here (not a node it added)")  # fmt: skip
        if not record.engine_alive():
            return None
        with self._lock:
            if node_id not in self._apis:
                self._apis[node_id] = engine.connect(record.url, timeout=5).api
            return self._apis[node_id]

    def lost(self, node_id: str | None) -> bool:
        """The node's engine no longer answers (Swarm may not know it yet)."""
        if node_id in (None, self.own_id):
            return False
        record = self._record(str(node_id))
        if record is not None:
            return not record.engine_alive()
        with engine.engine_errors(f"inspecting node {node_id}"):
            state = self.client.api.inspect_node(node_id)["Status"]["State"]
        return bool(state == "down")

    def address(self, node_id: str | None) -> str:
        """Where this host reaches the node's host-mode published ports (asked once per
        node: the forwarder asks for every route five times a second)."""
        if node_id in (None, self.own_id):
            return HOST
        assert node_id is not None
        if node_id not in self._addresses:
            with engine.engine_errors(f"inspecting node {node_id}"):
                addr = str(self.client.api.inspect_node(node_id)["Status"]["Addr"])
            self._addresses[node_id] = addr
        return self._addresses[node_id]

    # -- node faults and their repair --------------------------------------------------
    def set_availability(self, node_id: str, availability: str) -> None:
        """``drain`` (Swarm moves its tasks elsewhere at once, reachable or not) or
        ``active``, ``pause``.  A pause names this process in the node's labels, so that
        the next backend makes the node active again if this one was killed meanwhile
        (:meth:`reap_paused`).  The update names the node's version, which the manager
        bumps on its own too (a node marked Ready, Down): a conflict is tried again."""
        for attempt in range(1, _CONFLICT_TRIES + 1):
            try:
                with engine.engine_errors(f"setting node {node_id[:12]} to {availability}"):
                    node = self.client.api.inspect_node(node_id)
                    labels = dict(node["Spec"].get("Labels") or {})
                    labels.pop(PAUSED_BY, None)
                    if availability == "pause":
                        labels[PAUSED_BY] = engine.owner_label()
                    spec = {**node["Spec"], "Availability": availability, "Labels": labels}
                    self.client.api.update_node(node_id, node["Version"]["Index"], spec)
                return
            except BackendError as e:
                if _CONFLICT not in str(e) or attempt == _CONFLICT_TRIES:
                    raise

    def reap_paused(self) -> list[str]:
        """Make active again the nodes a killed chaoskit process paused (it placed a task
        when it was killed); their ids."""
        with engine.engine_errors("listing the swarm's nodes"):
            nodes = self.client.api.nodes()
        orphans = [n["ID"] for n in nodes if n["Spec"].get("Availability") == "pause"
                   and PAUSED_BY in (n["Spec"].get("Labels") or {})
                   and not engine.owner_alive(n["Spec"]["Labels"][PAUSED_BY])]  # fmt: skip
        for node_id in orphans:
            self.set_availability(node_id, "active")
        return orphans

    def active_nodes(self) -> set[str]:
        """Ids of the nodes that are Ready and active (tasks may go there)."""
        with engine.engine_errors("listing the swarm's nodes"):
            nodes = self.client.api.nodes()
        return {n["ID"] for n in nodes if n["Status"]["State"] == "ready"
                and n["Spec"].get("Availability") == "active"}  # fmt: skip

    def availability(self, node_id: str) -> str:
        with engine.engine_errors(f"inspecting node {node_id[:12]}"):
            return str(self.client.api.inspect_node(node_id)["Spec"]["Availability"])

    def node_id_of(self, name: str) -> str:
        nodes = {n.name: n for n in swarm_nodes.list_nodes()}
        if name not in nodes or not nodes[name].node_id:
            raise BackendError(f"no swarm node named {name!r} joined this swarm (chaoskit's "
                               f"nodes: {', '.join(sorted(nodes)) or 'none'})")  # fmt: skip
        return str(nodes[name].node_id)

    def close(self) -> None:
        """Remove the nodes this backend added."""
        with self._lock:
            for name in self.added:
                swarm_nodes.remove_node(name, self.url)
            self.added.clear()
            self._apis.clear()
