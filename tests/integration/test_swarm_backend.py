"""The Swarm backend on a real swarm: tasks that Swarm replaces are followed, faults act on
the current task, and nothing is left afterwards (also after the owner was SIGKILLed)."""

from __future__ import annotations

import os

import pytest
from docker_support import (  # noqa: F401
    NOTHING_LEFT,
    answers,
    docker_client,
    engine_or_skip,
    http_spec,
    reap_killed_runs,
)
from owner_support import killed_owner

from chaoskit.errors import StackError
from chaoskit.stack import swarm_mode
from chaoskit.stack.docker_engine import connect, engine_url, managed_objects
from chaoskit.stack.swarm import SwarmBackend
from chaoskit.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.swarm]
engine_or_skip()

REPLACED = 30.0
"""Seconds for Swarm to replace a task: its restart delay (5 s) plus a container start."""


@pytest.fixture(scope="module")
def swarm_engine(docker_client):  # noqa: F811
    """One swarm for the module (leaving one takes ~5 s: Swarm waits for its ingress
    network to go); a backend that initialised its own swarm leaves it is tested in
    test_swarm_experiments.py."""
    reap_killed_runs(docker_client)
    initialised = swarm_mode.ensure_manager(docker_client, engine_url())
    yield docker_client
    if initialised:
        assert swarm_mode.leave_if_ours(docker_client), "chaoskit services were left"


@pytest.fixture
def swarm(swarm_engine, tmp_path):
    backend = SwarmBackend(tmp_path / "run", tmp_path / "data")
    assert not backend.initialised_swarm  # the module's swarm is found, and kept
    yield backend
    backend.close()
    assert managed_objects(swarm_engine, project=backend.project) == NOTHING_LEFT
    assert swarm_mode.swarm_state(swarm_engine)[0] == "active"


def test_replicas_are_the_slots_of_one_service(swarm):
    swarm.start_replicas([http_spec("web"), http_spec("web-b")])
    tasks = {name: swarm.task(name) for name in ("web", "web-b")}
    assert {t["ServiceID"] for t in tasks.values()} == {swarm.task("web")["ServiceID"]}
    assert [tasks["web"]["Slot"], tasks["web-b"]["Slot"]] == [1, 2]
    for name in ("web", "web-b"):
        assert swarm.status(name) == "running"
        assert answers(swarm.endpoint(name, "rest")[1])


def test_a_killed_task_is_replaced_and_its_address_follows(swarm):
    swarm.start_replicas([http_spec("web"), http_spec("web-b")])
    old_task, old_address = swarm.task("web-b")["ID"], swarm.task_endpoint("web-b", "rest")
    port = swarm.endpoint("web-b", "rest")[1]
    killed = swarm.kill("web-b")
    wait_until(lambda: swarm.status("web-b") != "running", 10, what="the kill")
    assert not answers(port)
    wait_until(lambda: swarm.instance("web-b") not in (None, killed), REPLACED,
               what="Swarm's replacement task")  # fmt: skip
    assert swarm.task("web-b")["ID"] != old_task
    assert swarm.task_endpoint("web-b", "rest") != old_address  # a new published port
    wait_until(lambda: answers(port), 10, what="the forwarder following the new task")
    assert swarm.status("web") == "running"  # the other slot untouched


def test_restart_replaces_a_hung_task_swarm_thinks_running(swarm):
    swarm.start(http_spec("web"))
    swarm.pause("web")
    assert swarm.status("web") == "paused"
    assert swarm.task("web")["Status"]["State"] == "running"  # Swarm does not notice
    hung = swarm.instance("web")
    swarm.restart("web")
    assert swarm.status("web") == "running" and swarm.instance("web") != hung
    assert answers(swarm.endpoint("web", "rest")[1])


def test_a_task_failing_while_a_rollout_is_rolled_back_does_not_bring_it_back(swarm):
    """The DR engine may restart a replica just after its rollback (a first answer slower
    than its probe): Swarm is still watching the rollback's tasks, and the rollout must
    stay rolled back (a plain update back ran under failure_action: rollback, and Swarm
    rolled the service forward to the rollout it had just left)."""
    swarm.start_replicas([http_spec("web"), http_spec("web-b")])
    swarm.roll_out("web", "labelled-only")  # tasks that run and answer: Swarm goes on
    swarm.await_replicas("web")
    assert swarm.rollout_of("web") == "labelled-only"
    assert swarm.roll_back("web")  # returns once every replica runs the old spec, ready
    for name in ("web-b", "web"):
        swarm.remove(name)  # inside the rollback's monitoring of its tasks
    wait_until(lambda: swarm.update_state("web") == "rollback_completed", REPLACED,
               what="Swarm's end of the rollback")  # fmt: skip
    assert swarm.rollout_of("web") is None
    swarm.await_replicas("web")
    assert swarm.rollout_of("web") is None and swarm.update_state("web") == "rollback_completed"


def test_faults_on_a_task_that_is_not_running_say_so(swarm):
    swarm.start(http_spec("web"))
    swarm.kill("web")
    wait_until(lambda: swarm.status("web") != "running", 10, what="the kill")
    with pytest.raises(StackError, match="'web' has no running task"):
        swarm.kill("web")
    with pytest.raises(StackError, match="no service 'nope' in this stack"):
        swarm.kill("nope")


def test_a_secret_file_is_given_as_a_swarm_secret_at_its_path(swarm, swarm_engine, tmp_path):
    import dataclasses

    token = tmp_path / "site.token"
    token.write_text("s3cret\n")
    swarm.start(dataclasses.replace(http_spec("web"), secrets=(str(token),)))
    (secret,) = managed_objects(swarm_engine, project=swarm.project)["secrets"]
    assert secret["Spec"]["Name"].endswith("site.token")
    # the file lies outside every bind mount of the task: only the secret puts it there
    run = swarm_engine.api.exec_create(swarm.container_id("web"), ["cat", str(token)])
    assert swarm_engine.api.exec_start(run["Id"]) == b"s3cret\n"


def test_a_fixed_port_in_use_is_refused_before_anything_is_created(swarm, swarm_engine):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StackError, match=f"port 127.0.0.1:{port} is already in use"):
            swarm.start(http_spec("web", port=port))
    assert managed_objects(swarm_engine, project=swarm.project)["services"] == []


def test_the_next_backend_removes_what_a_killed_owner_left(swarm_engine, tmp_path):
    here = os.path.dirname(__file__)
    project = killed_owner(f"""
        import sys, time
        sys.path.insert(0, {here!r})
        from docker_support import http_spec
        from chaoskit.stack.swarm import SwarmBackend
        backend = SwarmBackend({str(tmp_path / "run")!r}, {str(tmp_path / "data")!r})
        backend.start(http_spec("web"))
        print(backend.project, flush=True)
        time.sleep(120)
    """)
    assert project, "the killed run did not start its service"
    left = managed_objects(swarm_engine, project=project)
    assert len(left["services"]) == 1 and len(left["networks"]) == 1
    backend = SwarmBackend(tmp_path / "next-run", tmp_path / "data")
    try:
        assert any(r.startswith("service ") for r in backend.reaped), backend.reaped
        assert managed_objects(swarm_engine, project=project) == NOTHING_LEFT
    finally:
        backend.close()


def test_a_worker_s_engine_is_refused_and_nothing_is_made(swarm, tmp_path):
    """A worker cannot create services: one message naming it, before anything is made."""
    from chaoskit.errors import BackendError
    from chaoskit.stack import swarm_nodes

    node = swarm_nodes.add_node(swarm.url, images=[])
    try:
        with pytest.raises(BackendError, match=f"engine at {node.url} is a swarm worker"):
            SwarmBackend(tmp_path / "on-worker", tmp_path / "data", base_url=node.url)
        assert connect(node.url).api.containers(all=True) == []
    finally:
        swarm_nodes.remove_node(node.name)


@pytest.mark.parametrize("spares", [0, 1], ids=["new-task", "warm-spare"])
def test_a_replica_on_a_lost_node_moves_before_swarm_notices(swarm_engine, tmp_path, spares):
    """Restart of a replica whose node's engine is gone: the node is drained and the
    replica runs on the manager's node (in a warm spare's slot, or a new one) while Swarm
    still calls the lost node ready; between experiments the service is back at its
    count, with its spare on the manager's node."""
    from chaoskit.stack import swarm_nodes
    from chaoskit.stack import swarm_rollout as rollout
    from chaoskit.stack.swarm_mode import SwarmOptions
    from chaoskit.stack.swarm_tasks import live_slots

    options = SwarmOptions(workers=1, spares=spares)
    backend = SwarmBackend(tmp_path / "run", tmp_path / "data", options=options)
    names = ("web", "web-b")
    try:
        backend.start_replicas([http_spec(name) for name in names])
        backend.rebalance()  # the spare, wherever Swarm put it, to the manager's node
        own = backend.topology.own_id
        (group,) = backend._swarm_services.values()
        assert [backend._node(s) for s in group.spares] == [own] * spares
        (lost,) = [n for n in names if backend.node_of(n) != own]  # Swarm spreads
        node_id = backend.node_of(lost)
        spare_slots = [s.slot for s in group.spares]
        swarm_nodes.stop_engine(backend.topology.name_of(node_id))
        port = backend.endpoint(lost, "rest")[1]
        assert not answers(port)
        backend.restart(lost)
        assert swarm_engine.api.inspect_node(node_id)["Status"]["State"] == "ready"  # Swarm
        assert backend.drains == [node_id]  # has not noticed yet: it would wait for that
        assert backend.node_of(lost) == own and answers(port)
        if spares:
            assert backend.task(lost)["Slot"] == spare_slots[0]  # no new task
        assert rollout.replicas_of(swarm_engine.api, group.id) == 2 + 1

        swarm_nodes.start_engine(backend.topology.name_of(node_id))
        backend.activate_drained()
        backend.rebalance()  # as the next experiment's ensure_running does
        assert rollout.replicas_of(swarm_engine.api, group.id) == 2 + spares
        slots = {backend.task(n)["Slot"] for n in names} | {s.slot for s in group.spares}
        assert slots == live_slots(backend._tasks(group.name)) and len(slots) == 2 + spares
        assert [backend._node(s) for s in group.spares] == [own] * spares
        for name in names:
            assert backend.status(name) == "running"
            assert answers(backend.endpoint(name, "rest")[1])
    finally:
        backend.close()
    assert managed_objects(swarm_engine, project=backend.project) == NOTHING_LEFT
