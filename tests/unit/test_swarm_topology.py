"""A node's availability is updated at the version the manager has now: a manager that
bumped it meanwhile (a node marked Ready or Down) makes the update try again, anything
else is the error (a fake Engine API: the manager's answers as docker-py raises them)."""

from __future__ import annotations

import docker.errors
import pytest

from chaoskit.errors import BackendError
from chaoskit.stack.swarm_topology import Topology


class FakeManager:
    """A node whose version the manager bumps *bumps* times between inspect and update."""

    def __init__(self, bumps: int, refusal: str = "update out of sequence") -> None:
        self.version, self.bumps, self.refusal = 7, bumps, refusal
        self.spec = {"Role": "worker", "Availability": "active"}

    def info(self) -> dict:
        return {"Swarm": {"NodeID": "manager"}}

    def inspect_node(self, node_id: str) -> dict:
        return {"ID": node_id, "Version": {"Index": self.version}, "Spec": dict(self.spec)}

    def update_node(self, node_id: str, version: int, spec: dict) -> None:
        if self.bumps:
            self.bumps -= 1
            self.version += 1
        if version != self.version:
            raise docker.errors.APIError("500 Server Error", explanation=self.refusal)
        self.spec, self.version = spec, self.version + 1


def topology(api: FakeManager) -> Topology:
    return Topology(type("Client", (), {"api": api})(), "unix:///fake.sock")


def test_a_version_bumped_meanwhile_is_tried_again() -> None:
    api = FakeManager(bumps=2)
    topology(api).set_availability("w1", "drain")
    assert api.spec == {"Role": "worker", "Availability": "drain"}


def test_a_manager_that_keeps_bumping_it_is_the_error() -> None:
    api = FakeManager(bumps=10)
    with pytest.raises(BackendError, match=r"setting node w1 to pause: .*out of sequence"):
        topology(api).set_availability("w1", "pause")
    assert api.spec["Availability"] == "active"


def test_any_other_refusal_is_the_error_at_once() -> None:
    api = FakeManager(bumps=1, refusal="node not found")
    with pytest.raises(BackendError, match="node not found"):
        topology(api).set_availability("w1", "drain")
    assert api.bumps == 0 and api.spec["Availability"] == "active"
