"""Attach mode against containers "the user" started: faults, detection, Docker-only recovery,
and nothing of the user's removed."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from docker_support import answers, docker_client, engine_or_skip  # noqa: F401

from chaoskit.errors import BackendError, ConfigError
from chaoskit.faults import FaultContext, FirewallPartition
from chaoskit.journal import Journal
from chaoskit.stack import netns_firewall
from chaoskit.stack.docker_attach import AttachTarget, DockerAttachBackend
from chaoskit.stack.docker_image import ensure_image, host_paths
from chaoskit.stack.service import Readiness, ServiceSpec
from chaoskit.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]
engine_or_skip()

INNER = 8501  # the container listens on a fixed port, as TF Serving does


@pytest.fixture
def user_stack(docker_client, tmp_path):  # noqa: F811
    """A network and a web container the user made (no chaoskit labels), removed at the end."""
    from docker.types import Mount

    api = docker_client.api
    suffix = tmp_path.name[-12:].lower().replace("_", "-")
    net = api.create_network(f"usernet-{suffix}")
    host_config = api.create_host_config(
        init=True, port_bindings={INNER: ("127.0.0.1", None)},
        mounts=[Mount(p, p, type="bind", read_only=True) for p in host_paths()],
    )
    web = api.create_container(
        ensure_image(docker_client),
        [sys.executable, "-m", "http.server", "--bind", "0.0.0.0", str(INNER)],
        name=f"userweb-{suffix}", labels={"com.example.role": f"web-{suffix}"},
        ports=[INNER], host_config=host_config,
        networking_config=api.create_networking_config(
            {f"usernet-{suffix}": api.create_endpoint_config(aliases=["web"])}),
    )
    api.start(web["Id"])
    yield {"id": web["Id"], "name": f"userweb-{suffix}", "label": f"com.example.role=web-{suffix}",
           "network": f"usernet-{suffix}"}
    api.remove_container(web["Id"], force=True)
    api.remove_network(net["Id"])


def attach(stack, by="name"):
    target = AttachTarget(
        "web", **({"container": stack["name"]} if by == "name" else {"label": stack["label"]}),
        ports={"rest": INNER}, readiness=Readiness(http_path="/", timeout=20),
    )
    backend = DockerAttachBackend([target])
    backend.start(ServiceSpec("web", command=("attached",),
                              readiness=Readiness(http_path="/", timeout=20)))
    return backend


def test_kill_is_detected_and_restart_brings_the_same_container_back(user_stack):
    backend = attach(user_stack)
    try:
        _, port = backend.endpoint("web", "rest")
        assert answers(port)
        backend.kill("web")
        wait_until(lambda: backend.status("web") == "exited", 5, what="killed container exits")
        backend.restart("web")
        assert backend.container_id("web") == user_stack["id"]
        _, port = backend.endpoint("web", "rest")  # Docker picks a new random host port
        assert answers(port)
    finally:
        backend.close()
    assert backend.client.api.inspect_container(user_stack["id"])["State"]["Running"]


def test_pause_and_partition_by_label_are_undone_by_close(user_stack):
    backend = attach(user_stack, by="label")
    _, port = backend.endpoint("web", "rest")
    backend.pause("web")
    assert backend.status("web") == "paused"
    backend.close()  # a run that ends mid-fault leaves the user's container as it was
    assert backend.status("web") == "running" and answers(port)
    backend.disconnect("web")
    assert not backend.connected("web") and not answers(port)
    backend.close()
    info = backend.client.api.inspect_container(user_stack["id"])
    assert "web" in info["NetworkSettings"]["Networks"][user_stack["network"]]["Aliases"]
    # a randomly published port may get a new number when the network endpoint is re-made
    wait_until(lambda: answers(backend.endpoint("web", "rest")[1]), 5, what="answers again")


def test_a_missing_target_is_named(docker_client):  # noqa: F811
    with pytest.raises(BackendError, match=r"attach target 'web': container 'no-such-ctr' "
                       "does not exist"):
        DockerAttachBackend([AttachTarget("web", container="no-such-ctr")])
    with pytest.raises(BackendError, match=r"label 'no.such=label' matches 0 containers"):
        DockerAttachBackend([AttachTarget("web", label="no.such=label")])
    with pytest.raises(ConfigError, match="exactly one of container= or label="):
        AttachTarget("web")


def test_attach_removes_a_dead_runs_firewall_rules_and_firewall_partition_works(
    docker_client, user_stack, tmp_path  # noqa: F811
):
    pid = docker_client.api.inspect_container(user_stack["id"])["State"]["Pid"]
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = netns_firewall.partition_rules("drop", netns_firewall.make_comment(dead.pid))
    mine = netns_firewall.make_comment()  # a live owner's rule, on an interface that is not there
    live = netns_firewall.Rule("INPUT", ("-i", "nothere0", "-m", "comment", "--comment", mine,
                                         "-j", "DROP"))  # fmt: skip
    netns_firewall.add_rules(pid, [*stale, live])
    try:
        backend = attach(user_stack)  # the dead run's partition would make this wait time out
        assert backend.removed_rules == {"web": 1}
        assert [r.comment for r in netns_firewall.list_rules(pid)] == [mine]
    finally:
        netns_firewall.delete_rules(pid, mine)
    try:
        _, port = backend.endpoint("web", "rest")
        ctx = FaultContext(Journal(tmp_path / "j.jsonl"), stack=SimpleNamespace(backend=backend))
        with FirewallPartition("web").inject(ctx):
            assert not answers(port)
        wait_until(lambda: answers(port), 5, what="attached service answers after revert")
        assert not any(r.comment for r in netns_firewall.list_rules(pid))
    finally:
        backend.close()
