"""Putting an engine in swarm mode for a run, and taking it out again.

chaoskit's Swarm backend needs its engine to be a swarm manager.  An engine in no swarm
gets a single-node swarm of its own, and the node is labelled with the run's owner
(``chaoskit.swarm-owner``): the run leaves that swarm at its end, and when the owner was
killed the next run does (:func:`reap_orphan_swarm`), once no chaoskit service is left in
it.  A swarm chaoskit found stays as it was.  A worker is refused: only a manager may
create services.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from typing import Any

from chaoskit.errors import BackendError
from chaoskit.stack import docker_engine as engine


@dataclass(frozen=True)
class SwarmOptions:
    """How the swarm is set up for a run (``--chaos-swarm-workers``,
    ``--chaos-swarm-healthcheck``, ``--chaos-swarm-spares``)."""

    workers: int = 0
    """Worker nodes chaoskit adds on this machine for the run (node loss needs one)."""
    healthcheck: float | None = None
    """Seconds between the Docker health checks of each task (None: no health check,
    Swarm's default, so Swarm sees only exits); a check is the service's readiness."""
    spares: int = 0
    """Warm tasks a replicated service runs beyond its replicas, on the manager's node:
    a replica whose node is lost moves to one at once (:mod:`swarm_placement`)."""


SWARM_OWNER = "chaoskit.swarm-owner"
"""Node label: the chaoskit run that initialised this swarm (and must leave it)."""


def advertise_address() -> str:
    """This host's address on its default route (other nodes reach the manager there);
    127.0.0.1 without one.  Nothing is sent: a UDP socket's connect only picks a route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("203.0.113.1", 9))  # TEST-NET-3: only its route matters
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def swarm_state(client: Any) -> tuple[str, bool]:
    """(LocalNodeState, is a manager) of the engine: "inactive", "active", "pending" …"""
    with engine.engine_errors("asking the Docker engine about its swarm"):
        swarm = client.api.info().get("Swarm") or {}
    return str(swarm.get("LocalNodeState") or "inactive"), bool(swarm.get("ControlAvailable"))


def ensure_manager(client: Any, url: str) -> bool:
    """Make sure the engine is a swarm manager; True when chaoskit initialised the swarm
    for this run (and labelled the node with this process as its owner)."""
    state, manager = swarm_state(client)
    if state == "active" and manager:
        return False
    if state == "active":
        raise BackendError(
            f"the Docker engine at {url} is a swarm worker, not a manager: chaoskit creates "
            f"services, which only a manager can; point DOCKER_HOST at a manager's engine"
        )
    if state != "inactive":
        raise BackendError(
            f"the Docker engine at {url} is in swarm state {state!r}; wait until it is "
            f"'active' (or run 'docker swarm leave --force') and try again"
        )
    with engine.engine_errors(f"initialising a swarm on the Docker engine at {url}"):
        client.api.init_swarm(advertise_addr=advertise_address(), listen_addr="0.0.0.0:2377")
    _label_own_node(client, {SWARM_OWNER: engine.owner_label()})
    return True


def _own_node(client: Any) -> dict[str, Any]:
    node_id = client.api.info()["Swarm"]["NodeID"]
    node: dict[str, Any] = client.api.inspect_node(node_id)
    return node


def _label_own_node(client: Any, labels: dict[str, str]) -> None:
    with engine.engine_errors("labelling this swarm node"):
        node = _own_node(client)
        spec = dict(node["Spec"])
        spec["Labels"] = {**(spec.get("Labels") or {}), **labels}
        client.api.update_node(node["ID"], node["Version"]["Index"], spec)


def chaoskit_services(client: Any) -> list[dict[str, Any]]:
    with engine.engine_errors("listing chaoskit's swarm services"):
        services: list[dict[str, Any]] = client.api.services(filters={"label": engine.MANAGED})
    return services


def leave_if_ours(client: Any) -> bool:
    """Leave the swarm when chaoskit initialised it and no chaoskit service is left in it;
    True when it left."""
    state, manager = swarm_state(client)
    if state != "active" or not manager:
        return False
    with engine.engine_errors("inspecting this swarm node"):
        owner = (_own_node(client)["Spec"].get("Labels") or {}).get(SWARM_OWNER)
    if owner is None or chaoskit_services(client):
        return False
    with engine.engine_errors("leaving the swarm chaoskit initialised"):
        client.api.leave_swarm(force=True)
    return True


def reap_orphan_swarm(client: Any) -> bool:
    """Leave a swarm an earlier, killed run initialised (once its services are gone)."""
    state, manager = swarm_state(client)
    if state != "active" or not manager:
        return False
    with contextlib.suppress(BackendError), engine.engine_errors("inspecting this swarm node"):
        owner = (_own_node(client)["Spec"].get("Labels") or {}).get(SWARM_OWNER)
        if owner is not None and owner != engine.owner_label() and not engine.owner_alive(owner):
            return leave_if_ours(client)
    return False
