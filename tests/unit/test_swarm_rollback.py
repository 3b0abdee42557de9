"""Rolling a chaoskit rollout back is Swarm's own rollback (under the rollback policy, so a
task failing meanwhile cannot roll the bad spec forward again); when the service was
changed after the rollout, the rollout's additions come out of the current spec instead
(a fake Engine API: the manager's answers as docker-py gets them)."""

from __future__ import annotations

import copy
from typing import Any

from chaoskit.stack import swarm_rollout as rollout

ORIGINAL = {"Image": "sha256:abc", "Args": ["--port", "1"], "Labels": {"team": "ml"},
            "Mounts": [{"Type": "bind", "Source": "/models", "Target": "/models"}]}  # fmt: skip


class FakeManager:
    """One service; ``update_service`` and the rollback POST change it as Swarm does."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {"ID": "s1", "Version": {"Index": 10},
                                     "Spec": self._spec(ORIGINAL, replicas=2)}  # fmt: skip
        self.posts: list[tuple[str, dict[str, Any]]] = []

    @staticmethod
    def _spec(container: dict[str, Any], replicas: int) -> dict[str, Any]:
        return {"Name": "serving", "Labels": {}, "Mode": {"Replicated": {"Replicas": replicas}},
                "TaskTemplate": {"ContainerSpec": copy.deepcopy(container), "ForceUpdate": 0}}

    def inspect_service(self, service: str) -> dict[str, Any]:
        return copy.deepcopy(self.info)

    def update_service(self, service: str, version: int, task_template: dict[str, Any],
                       mode: dict[str, Any], **_: Any) -> None:  # fmt: skip
        spec = {**copy.deepcopy(self.info["Spec"]), "TaskTemplate": task_template, "Mode": mode}
        self.info = {**self.info, "PreviousSpec": self.info["Spec"], "Spec": spec,
                     "Version": {"Index": version + 1}}  # fmt: skip

    def _url(self, path: str, *args: str) -> str:
        return path.format(*args)

    def _post_json(self, url: str, data: dict[str, Any], params: dict[str, Any]) -> str:
        self.posts.append((url, params))
        assert params == {"version": self.info["Version"]["Index"], "rollback": "previous"}
        self.info = {**self.info, "Spec": self.info["PreviousSpec"], "PreviousSpec": data,
                     "UpdateStatus": {"State": "rollback_started"}}  # fmt: skip
        return "204"

    def _raise_for_status(self, response: str) -> None:
        assert response == "204"


def roll_out(api: FakeManager) -> None:
    rollout.roll_out(api, "serving", "bad-1", args=("--bad",),
                     mounts=({"Type": "tmpfs", "Target": "/models"},))  # fmt: skip


def test_a_rollout_is_rolled_back_by_swarm_under_its_rollback_policy() -> None:
    api = FakeManager()
    roll_out(api)
    assert rollout.rollout_of(api.info) == "bad-1"
    assert rollout.roll_back(api, "serving")
    assert api.posts == [("/services/s1/update", {"version": 11, "rollback": "previous"})]
    assert api.info["Spec"]["TaskTemplate"]["ContainerSpec"] == ORIGINAL
    assert api.info["UpdateStatus"]["State"] == "rollback_started"
    assert not rollout.roll_back(api, "serving")  # nothing left to roll back
    assert len(api.posts) == 1


def test_a_service_scaled_after_the_rollout_loses_the_rollouts_additions() -> None:
    api = FakeManager()
    roll_out(api)
    rollout.scale(api, "serving", 3)  # its previous spec is the bad one now
    assert rollout.roll_back(api, "serving")
    assert api.posts == []
    assert api.info["Spec"]["TaskTemplate"]["ContainerSpec"] == ORIGINAL
    assert api.info["Spec"]["Mode"] == {"Replicated": {"Replicas": 3}}
    assert rollout.rollout_of(api.info) is None
