"""A swarm chaoskit initialised names its run; the next run leaves it only when that run
was killed and left no chaoskit service, and keeps any other swarm as it found it (a
fake Engine API: an engine's state outlives its runs, as CI's did)."""

from __future__ import annotations

from typing import Any

import pytest

from chaoskit.errors import BackendError
from chaoskit.stack import swarm_mode
from chaoskit.stack.docker_engine import MANAGED, owner_label

KILLED = owner_label().rsplit(":", 2)[0] + ":999999999:1"
"""An owner on this host whose process is gone."""


class FakeEngine:
    """An engine's swarm state: inactive, or one manager node with *labels*."""

    def __init__(self, labels: dict[str, str] | None = None, services: int = 0) -> None:
        self.active, self.services_left = labels is not None, services
        self.labels = dict(labels or {})
        self.inits = self.leaves = 0

    def info(self) -> dict[str, Any]:
        if not self.active:
            return {"Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}}
        return {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "n1"}}

    def inspect_node(self, node_id: str) -> dict[str, Any]:
        return {"ID": node_id, "Version": {"Index": 3}, "Spec": {"Labels": dict(self.labels)}}

    def update_node(self, node_id: str, version: int, spec: dict[str, Any]) -> None:
        self.labels = dict(spec["Labels"])

    def services(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        assert filters == {"label": MANAGED}
        return [{"ID": f"s{i}"} for i in range(self.services_left)]

    def init_swarm(self, **_: Any) -> None:
        self.active, self.labels, self.inits = True, {}, self.inits + 1

    def leave_swarm(self, force: bool) -> None:
        assert force
        self.active, self.leaves = False, self.leaves + 1


def client(api: FakeEngine) -> Any:
    return type("Client", (), {"api": api})()


def test_a_killed_runs_swarm_is_left_and_a_new_one_names_this_run() -> None:
    api = FakeEngine({swarm_mode.SWARM_OWNER: KILLED})
    assert swarm_mode.reap_orphan_swarm(client(api))
    assert swarm_mode.ensure_manager(client(api), "unix:///fake.sock")
    assert (api.leaves, api.inits) == (1, 1)
    assert api.labels == {swarm_mode.SWARM_OWNER: owner_label()}


@pytest.mark.parametrize(
    ("labels", "services"),
    [({swarm_mode.SWARM_OWNER: owner_label()}, 0), ({}, 0), ({"team": "ml"}, 0),
     ({swarm_mode.SWARM_OWNER: KILLED}, 1)],
    ids=["this-run", "not-chaoskits", "someone-elses-labels", "services-left"],
)  # fmt: skip
def test_any_other_swarm_is_kept_as_it_was(labels: dict[str, str], services: int) -> None:
    api = FakeEngine(labels, services)
    assert not swarm_mode.reap_orphan_swarm(client(api))
    assert not swarm_mode.ensure_manager(client(api), "unix:///fake.sock")  # found, kept
    assert (api.leaves, api.inits, api.labels) == (0, 0, labels)


def test_a_worker_engine_is_refused_by_name() -> None:
    api = FakeEngine({})
    api.info = lambda: {"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}}
    with pytest.raises(BackendError, match="unix:///fake.sock is a swarm worker"):
        swarm_mode.ensure_manager(client(api), "unix:///fake.sock")
