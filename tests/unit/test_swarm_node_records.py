"""Swarm nodes without engines: records, names, subnets, who is an orphan, which engine is
a manager, the mount table, dockerd's command line and the CLI's error path (fakes stand
in for the Docker engine and the `ip` tool)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaoskit.cli import main
from chaoskit.errors import BackendError, ConfigError
from chaoskit.stack import swarm_node_host, swarm_nodes
from chaoskit.stack.docker_engine import owner_label
from chaoskit.stack.swarm_nodes import CLI_OWNER, SwarmNode


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(swarm_nodes.STATE_ENV, str(tmp_path))
    monkeypatch.setattr(swarm_nodes, "_host_subnets", lambda: set())
    return tmp_path


def record(name: str, owner: str | None = None) -> SwarmNode:
    """A node as add_node records it before making anything."""
    node = swarm_nodes._allocate(name, owner or owner_label(), None)
    swarm_nodes._save(node)
    return node


class FakeManager:
    """The docker client calls add_node makes on a manager, answering from *swarm*."""

    def __init__(self, swarm: dict[str, Any], images: tuple[str, ...] = ()) -> None:
        self.swarm, self.images = swarm, images
        self.api = self

    def info(self) -> dict[str, Any]:
        return {"Swarm": self.swarm}

    def inspect_swarm(self) -> dict[str, Any]:
        return {"JoinTokens": {"Worker": "SWMTKN-worker"}}

    def inspect_image(self, image: str) -> dict[str, Any]:
        import docker.errors

        if image not in self.images:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        return {"Id": "sha256:1"}


MANAGER = {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "m1",
           "NodeAddr": "10.237.9.2", "RemoteManagers": [{"NodeID": "m1",
                                                         "Addr": "10.237.9.2:2377"}]}  # fmt: skip


def test_a_record_is_written_whole_and_read_back(state: Path) -> None:
    node = record("a")
    assert json.loads((state / "a.json").read_text())["veth"] == "ckn1"
    assert [p.name for p in state.iterdir()] == ["a.json"]  # no temp file left
    assert swarm_nodes.list_nodes() == [node]
    assert node.url == f"unix://{state}/a/docker.sock" and node.netns == "chaoskit-node-a"
    assert node.engine_alive() is False and node.engine_pid is None


def test_allocation_takes_the_lowest_free_subnet_and_names_it(monkeypatch) -> None:
    record("a")
    monkeypatch.setattr(swarm_nodes, "_host_subnets", lambda: {2})  # someone else's 10.237.2.x
    node = swarm_nodes._allocate(None, "me", "unix:///m.sock")
    assert (node.index, node.name, node.veth) == (3, "node3", "ckn3")
    assert (node.host_address, node.address) == ("10.237.3.1", "10.237.3.2")
    assert node.manager_url == "unix:///m.sock" and node.owner == "me"


@pytest.mark.parametrize("name", ["Upper", "-dash", "has space", "x" * 25, ""])
def test_a_bad_name_is_refused_naming_it(name: str) -> None:
    with pytest.raises(ConfigError, match=f"swarm node name {name!r}"):
        swarm_nodes._allocate(name, "me", None)


def test_a_taken_name_and_a_too_long_state_dir_are_refused(state: Path, monkeypatch) -> None:
    record("a")
    with pytest.raises(ConfigError, match="a swarm node named 'a' exists already"):
        swarm_nodes._allocate("a", "me", None)
    monkeypatch.setenv(swarm_nodes.STATE_ENV, str(state / ("d" * 80)))
    with pytest.raises(ConfigError, match="too long for the node's sockets"):
        swarm_nodes._allocate("b", "me", None)


def test_an_unknown_name_is_a_config_error_listing_the_known_nodes() -> None:
    with pytest.raises(ConfigError, match=r"no swarm node named 'x' on this machine \(known: "
                                          r"none\)"):  # fmt: skip
        swarm_nodes.remove_node("x")
    record("b"), record("a")
    for call in (swarm_nodes.remove_node, swarm_nodes.stop_engine, swarm_nodes.start_engine):
        with pytest.raises(ConfigError, match=r"'x' on this machine \(known: a, b\)"):
            call("x")


def test_reaping_removes_only_nodes_whose_owner_is_gone(monkeypatch) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = owner_label(dead.pid)
    dead.wait()
    record("mine"), record("cli", CLI_OWNER), record("orphan", gone)
    removed: list[tuple[str, str | None]] = []
    monkeypatch.setattr(swarm_nodes, "_teardown", lambda n, url: removed.append((n.name, url)))
    assert swarm_nodes.reap_orphan_nodes() == ["orphan"]
    assert removed == [("orphan", None)]  # the command line's node has no owner to lose


@pytest.mark.parametrize("swarm, why", [
    ({}, "it is in no swarm; run `docker swarm init --advertise-addr ADDR` there first"),
    ({"LocalNodeState": "active", "ControlAvailable": False},
     "it is a swarm worker; give a manager's engine"),
    ({"LocalNodeState": "locked"}, "its swarm is locked; run `docker swarm unlock` there"),
    ({"LocalNodeState": "error"}, "its swarm state is 'error'"),
])  # fmt: skip
def test_only_a_swarm_manager_is_accepted_before_anything_is_made(
    swarm: dict[str, Any], why: str, state: Path, monkeypatch
) -> None:
    made: list[tuple[str, ...]] = []
    monkeypatch.setattr(swarm_nodes, "_check_can_run", lambda: None)
    monkeypatch.setattr(swarm_nodes, "connect", lambda url, **kw: FakeManager(swarm))
    monkeypatch.setattr(swarm_nodes, "_run", lambda *command, **kw: made.append(command))
    with pytest.raises(BackendError) as refused:
        swarm_nodes.add_node("unix:///m.sock", "w")
    assert str(refused.value).startswith(
        "the Docker engine at unix:///m.sock is not a swarm manager; " + why)
    assert made == [] and not list(state.glob("*.json"))


def test_a_manager_gives_its_own_address_and_the_worker_token() -> None:
    assert swarm_nodes._join_info(FakeManager(MANAGER), "u") == ("10.237.9.2:2377",
                                                                 "SWMTKN-worker")  # fmt: skip
    bare = {**MANAGER, "RemoteManagers": []}
    assert swarm_nodes._join_info(FakeManager(bare), "u")[0] == "10.237.9.2:2377"


def test_an_image_missing_on_the_manager_is_refused_naming_it(state: Path, monkeypatch) -> None:
    monkeypatch.setattr(swarm_nodes, "_check_can_run", lambda: None)
    monkeypatch.setattr(swarm_nodes, "connect",
                        lambda url, **kw: FakeManager(MANAGER, images=("have:1",)))  # fmt: skip
    with pytest.raises(ConfigError, match=r"image 'want:2' is not on the engine at "
                                          r"unix:///m.sock: build or load it there"):  # fmt: skip
        swarm_nodes.add_node("unix:///m.sock", images=["have:1", "want:2"])
    assert not list(state.glob("*.json"))


def test_dockerd_is_entered_into_the_netns_with_nsenter_not_ip_netns_exec() -> None:
    node = record("a")
    command = swarm_nodes.dockerd_command(node)
    assert command[:2] == [swarm_nodes.NSENTER, "--net=/var/run/netns/chaoskit-node-a"]
    assert "ip" not in command and "exec" not in command[:3]
    flags = dict(zip(command[command.index("dockerd") + 1::2],
                     command[command.index("dockerd") + 2::2], strict=True))  # fmt: skip
    assert flags == {
        "--config-file": f"{node.data_dir}/daemon.json", "--data-root": f"{node.data_dir}/data",
        "--exec-root": f"{node.data_dir}/exec", "-H": node.url,
        "--pidfile": f"{node.data_dir}/docker.pid", "--cgroup-parent": "/chaoskit-node-a",
    }  # fmt: skip


def test_mounts_under_a_directory_are_found_deepest_first_with_escapes_decoded() -> None:
    table = "\n".join([
        "/dev/vda /n/a/data ext4 rw 0 0",
        "overlay /n/a/data/overlay2/x/merged overlay rw 0 0",
        "nsfs /n/a/exec/netns/ingress_sbox nsfs rw 0 0",
        "nsfs /n/a\\040b/exec/netns/1 nsfs rw 0 0",
        "/dev/vda /n/ab ext4 rw 0 0",
    ])  # fmt: skip
    assert swarm_node_host.mounts_under("/n/a", table) == [
        "/n/a/data/overlay2/x/merged", "/n/a/exec/netns/ingress_sbox", "/n/a/data"]
    assert swarm_node_host.mounts_under("/n/a b", table) == ["/n/a b/exec/netns/1"]


def test_the_cli_error_is_one_line_and_exit_2(state: Path, capsys) -> None:
    record("a")
    assert main(["swarm", "remove-node", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err == "chaoskit: error: no swarm node named 'nosuch' on this machine (known: a)\n"
    repo = str(Path(__file__).parents[2])
    done = subprocess.run([sys.executable, "-m", "chaoskit.cli", "swarm", "add-node", "--name",
                           "Bad!"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": repo})  # fmt: skip
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "chaoskit: error: swarm node name 'Bad!': use 1-24 lowercase letters, digits and "
        "'-', starting with a letter or digit"]


def test_the_cli_lists_the_nodes(capsys) -> None:
    assert main(["swarm", "nodes"]) == 0
    assert capsys.readouterr().out.startswith("no swarm nodes on this machine")
    record("a", CLI_OWNER)
    assert main(["swarm", "nodes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "ENGINE", "SWARM", "NODE", "ID", "OWNER"]
    assert lines[1].split() == ["a", "10.237.1.2", "stopped", "-", "cli"]
