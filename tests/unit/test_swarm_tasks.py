"""Reading Swarm's task list and update status: the slot's current task, its ports, and
when a rollout is still the suspect (shapes as the Engine API answers them)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from chaoskit.errors import FaultError
from chaoskit.faults import BadRollout, NodeLoss
from chaoskit.faults.base import FaultContext
from chaoskit.journal import Journal
from chaoskit.stack.swarm_rollout import FRESH_S, ROLLOUT, fresh_rollout, rollout_of
from chaoskit.stack.swarm_tasks import (
    created_at,
    live_slots,
    published_port,
    slot_task,
    task_container,
)


def task(slot: int, created: str, desired: str = "running", state: str = "running",
         container: str | None = "c1", ports: list | None = None) -> dict:  # fmt: skip
    status = {"State": state, "ContainerStatus": {"ContainerID": container} if container else {},
              "PortStatus": {"Ports": ports or []}}  # fmt: skip
    return {"ID": f"t{slot}{created}", "Slot": slot, "DesiredState": desired,
            "CreatedAt": created, "Status": status}  # fmt: skip


def test_the_slot_s_task_is_the_newest_one_swarm_wants_running():
    tasks = [
        task(1, "2026-12-02T05:00:01.5Z", desired="shutdown", state="failed"),
        task(1, "2026-12-02T05:00:01.25Z", desired="running", state="starting", container=None),
        task(1, "2026-12-02T05:00:01.123456789Z", desired="shutdown"),
        task(2, "2026-12-02T05:00:09Z"),
    ]
    assert slot_task(tasks, 1) is tasks[1]  # .25 is later than .123456789
    assert task_container(slot_task(tasks, 1)) is None
    assert slot_task(tasks, 3) is None


def test_live_slots_are_those_swarm_keeps_a_task_for():
    tasks = [
        task(1, "2026-12-02T05:00:01Z"),
        task(2, "2026-12-02T05:00:01Z", desired="shutdown"),  # on a drained, lost node
        task(2, "2026-12-02T05:00:02Z", desired="ready", state="new", container=None),
        task(3, "2026-12-02T05:00:02Z", state="starting", container=None),  # a new slot
        task(4, "2026-12-02T05:00:01Z", desired="remove"),  # scaled away
        task(5, "2026-12-02T05:00:01Z", desired="shutdown", state="failed"),
    ]
    assert live_slots(tasks) == {1, 2, 3}
    assert live_slots([]) == set()


def test_fractions_of_different_lengths_sort_by_time():
    assert created_at({"CreatedAt": "2026-12-02T05:00:01.5Z"}) > \
        created_at({"CreatedAt": "2026-12-02T05:00:01.123456789Z"})
    assert created_at({"CreatedAt": "2026-12-02T05:00:02Z"}) > \
        created_at({"CreatedAt": "2026-12-02T05:00:01.999Z"})


def test_the_published_port_is_found_by_target():
    t = task(1, "2026-12-02T05:00:00Z", ports=[
        {"Protocol": "tcp", "TargetPort": 8500, "PublishedPort": 30001, "PublishMode": "host"},
        {"Protocol": "tcp", "TargetPort": 8501, "PublishedPort": 30002, "PublishMode": "host"}])
    assert published_port(t, 8501) == 30002
    assert published_port(t, 9999) is None


class FakeManager:
    """The manager's inspect_service answer: only the fields fresh_rollout reads."""

    def __init__(self, rollout: str | None, state: str | None, completed: float | None = None):
        labels = {ROLLOUT: rollout} if rollout else {}
        status = {"State": state} if state else {}
        if completed is not None:
            status["CompletedAt"] = time.strftime("%Y-%m-%dT%H:%M:%S.5Z", time.gmtime(completed))
        self.info = {"ID": "s", "Spec": {"TaskTemplate": {"ContainerSpec": {"Labels": labels}}},
                     "UpdateStatus": status}  # fmt: skip

    def inspect_service(self, name: str) -> dict:
        return self.info


@pytest.mark.parametrize("rollout,state,age,suspect", [
    ("r1", "updating", None, "r1"),
    ("r1", "paused", None, "r1"),
    ("r1", "completed", 5.0, "r1"),
    ("r1", "completed", FRESH_S + 5, None),  # long done: a failure now is something else
    ("r1", "rollback_completed", None, None),
    (None, "updating", None, None),  # someone else's update: not chaoskit's to blame
])  # fmt: skip
def test_a_rollout_is_the_suspect_while_fresh(rollout, state, age, suspect):
    completed = None if age is None else time.time() - age
    api = FakeManager(rollout, state, completed)
    assert fresh_rollout(api, "s") == suspect
    assert rollout_of(api.info) == rollout


def test_orchestrator_faults_refuse_a_backend_without_one(tmp_path):
    ctx = FaultContext(Journal(tmp_path / "j.jsonl"),
                       stack=SimpleNamespace(backend=SimpleNamespace(name="process")))
    with pytest.raises(FaultError, match="process backend does not roll services out"):
        BadRollout("serving").inject(ctx)
    with pytest.raises(FaultError, match="process backend has no nodes"):
        NodeLoss().inject(ctx)
    with pytest.raises(FaultError, match="change 'oops': choose from crash, no-model"):
        BadRollout("serving", change="oops")
