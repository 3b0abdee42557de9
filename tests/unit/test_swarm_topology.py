"""A node's availability is updated at the version the manager has now: a manager that
bumped it meanwhile (a node marked Ready or Down) makes the update try again, anything
else is the error.  A pause names its process, and a node paused by a process that is
gone is made active again (a fake Engine API: the manager's answers as docker-py raises
them)."""

from __future__ import annotations

import docker.errors
import pytest

from chaoskit.errors import BackendError
from chaoskit.stack.docker_engine import owner_label
from chaoskit.stack.swarm_topology import PAUSED_BY, Topology


class FakeManager:
    """A node whose version the manager bumps *bumps* times between inspect and update."""

    def __init__(self, bumps: int, refusal: str = "update out of sequence") -> None:
        self.version, self.bumps, self.refusal = 7, bumps, refusal
        self.spec = {"Role": "worker", "Availability": "active"}

    def info(self) -> dict:
        return {"Swarm": {"NodeID": "manager"}}

    def inspect_node(self, node_id: str) -> dict:
        return {"ID": node_id, "Version": {"Index": self.version}, "Spec": dict(self.spec)}

    def nodes(self) -> list[dict]:
        return [self.inspect_node("w1")]

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
    assert api.spec == {"Role": "worker", "Availability": "drain", "Labels": {}}


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


def test_a_pause_names_its_process_and_the_end_of_it_forgets_it() -> None:
    api = FakeManager(bumps=0)
    api.spec["Labels"] = {"team": "ml"}
    topology(api).set_availability("w1", "pause")
    assert api.spec["Labels"] == {"team": "ml", PAUSED_BY: owner_label()}
    topology(api).set_availability("w1", "active")
    assert api.spec == {"Role": "worker", "Availability": "active", "Labels": {"team": "ml"}}


@pytest.mark.parametrize("alive", [True, False], ids=["owner-alive", "owner-killed"])
def test_a_node_paused_by_a_killed_process_is_made_active_again(alive: bool) -> None:
    api = FakeManager(bumps=0)
    owner = owner_label() if alive else owner_label().rsplit(":", 2)[0] + ":999999999:1"
    api.spec = {"Role": "manager", "Availability": "pause", "Labels": {PAUSED_BY: owner}}
    reaped = topology(api).reap_paused()
    assert reaped == ([] if alive else ["w1"])
    assert api.spec["Availability"] == ("pause" if alive else "active")
    assert (PAUSED_BY in api.spec["Labels"]) is alive
