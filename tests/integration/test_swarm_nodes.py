"""Swarm nodes on this machine, for real: a manager engine of the tests' own (in its own
network namespace, never the host's engine), a worker added to its swarm that runs a
task, loses it when its engine is killed (the manager marks it Down), gets it back, and
leaves nothing once removed lost (its killed engine's mounts and cgroups too); a node
whose owner was killed is reaped; a manager that is none is refused, and so is a node
name nobody recorded.  Needs root, dockerd, nsenter and a static busybox (the only
image: nothing can be pulled)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from owner_support import killed_owner

from chaoskit.errors import BackendError, ConfigError
from chaoskit.stack import swarm_nodes
from chaoskit.stack.docker_engine import connect
from chaoskit.stack.swarm_nodes import SwarmNode
from chaoskit.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"
IMAGE = "chaoskit-swarm-test-busybox:1"
PORT = 18080
REPO = str(Path(__file__).resolve().parents[2])


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "swarm node tests need root"
    for tool in ("dockerd", "nsenter", "unshare", "ip", "iptables"):
        if shutil.which(tool) is None:
            return f"swarm node tests need {tool}"
    if not os.path.isfile(BUSYBOX) or b"ld-linux" in Path(BUSYBOX).read_bytes()[:4096]:
        return "swarm node tests need a static busybox (apt-get install busybox-static)"
    return None


if _missing():
    pytest.skip(str(_missing()), allow_module_level=True)


def busybox_rootfs() -> bytes:
    """A root file system of one static busybox: the tests' image, made here."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(BUSYBOX, "bin/busybox")
        for name in ("proc", "sys", "dev", "etc", "tmp", "www"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def nodes_dir() -> Iterator[Path]:
    """A state dir of the tests' own (short: the nodes' sockets live under it)."""
    path = Path(tempfile.mkdtemp(prefix="ckn-"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(swarm_nodes.STATE_ENV, str(path))
        yield path
        for node in reversed(swarm_nodes.list_nodes()):  # workers first, the manager last
            swarm_nodes.remove_node(node.name)
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def manager(nodes_dir: Path) -> Iterator[tuple[SwarmNode, Any]]:
    """An engine in its own netns with a swarm of its own and the busybox image."""
    node = swarm_nodes.add_node(join=False, name="mgr")
    client = connect(node.url)
    repository, tag = IMAGE.split(":")
    client.api.import_image_from_data(busybox_rootfs(), repository=repository, tag=tag)
    client.swarm.init(advertise_addr=node.address, listen_addr=f"{node.address}:2377")
    yield node, client
    client.close()


def ready_nodes(client: Any) -> list[str]:
    return [n.attrs["Description"]["Hostname"] for n in client.nodes.list()
            if n.attrs["Status"]["State"] == "ready"]  # fmt: skip


def page(node: SwarmNode) -> str | None:
    """What the service's task serves on the node's host-mode port, or None."""
    try:
        with urllib.request.urlopen(f"http://{node.address}:{PORT}/", timeout=2) as answer:
            return str(answer.read().decode())
    except OSError:
        return None


def assert_nothing_left(node: SwarmNode, client: Any) -> None:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert node.netns not in netns
    assert not Path(f"/sys/class/net/{node.veth}").exists()
    assert node.engine_pid is not None and not _running(str(node.engine_pid))
    assert not [p for p in os.listdir("/proc") if _running(p, naming=node.data_dir)]
    assert not (Path(os.environ[swarm_nodes.STATE_ENV]) / f"{node.name}.json").exists()
    assert not Path(node.data_dir).exists()
    assert node.data_dir not in Path("/proc/self/mounts").read_text()
    assert f"chaoskit-node:{node.name}" not in _forward_rules()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{node.netns}"))
    assert node.node_id not in [n.id for n in client.nodes.list()]


def _running(pid: str, naming: str = "") -> bool:
    """A live process (a zombie is dead: its parent, maybe init, has yet to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in "ZX" and naming.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False


def _forward_rules() -> str:
    return subprocess.run(["iptables", "-w", "5", "-S", "FORWARD"], capture_output=True,
                          text=True).stdout  # fmt: skip


def test_a_worker_runs_a_task_loses_it_with_its_engine_gets_it_back_and_leaves_nothing(
    manager: tuple[SwarmNode, Any], tmp_path: Path
) -> None:
    mgr, client = manager
    started = time.monotonic()
    worker = swarm_nodes.add_node(mgr.url, "w1", images=[IMAGE])
    print(f"add_node took {time.monotonic() - started:.2f}s")
    assert sorted(ready_nodes(client)) == ["chaoskit-node-mgr", "chaoskit-node-w1"]
    labels = client.nodes.get(worker.node_id).attrs["Spec"]["Labels"]
    assert labels == {"chaoskit.managed": "1", "chaoskit.node": "w1",
                      "chaoskit.owner": worker.owner}  # fmt: skip
    assert connect(worker.url).images.get(IMAGE)  # copied: nothing could be pulled
    with pytest.raises(BackendError, match="is not a swarm manager; it is a swarm worker"):
        swarm_nodes.add_node(worker.url, "w2")

    from docker.types import EndpointSpec, Mount

    (tmp_path / "index.html").write_text("kept on the host\n")  # bind-mounted on the worker
    client.networks.create("chaoskit-test", driver="overlay", attachable=True)
    service = client.services.create(
        IMAGE, ["/bin/busybox", "httpd", "-f", "-p", str(PORT), "-h", "/www"], name="web",
        networks=["chaoskit-test"], constraints=["node.role==worker"], init=True,
        endpoint_spec=EndpointSpec(mode="dnsrr", ports={PORT: (PORT, "tcp", "host")}),
        mounts=[Mount("/www", str(tmp_path), type="bind", read_only=True)],
    )  # fmt: skip
    wait_until(lambda: page(worker) == "kept on the host\n", 60, interval=0.1,
               what="the worker's task answering")  # fmt: skip
    (first,) = [t["ID"] for t in service.tasks() if t["Status"]["State"] == "running"]

    lost = time.monotonic()
    swarm_nodes.stop_engine("w1")
    (lost_node,) = [n for n in swarm_nodes.list_nodes() if n.name == "w1"]
    assert not lost_node.engine_alive() and page(worker) is None
    wait_until(lambda: client.nodes.get(worker.node_id).attrs["Status"]["State"] == "down",
               60, interval=0.1, what="the manager marking the lost node Down")  # fmt: skip
    print(f"node Down {time.monotonic() - lost:.1f}s after its engine was killed")

    back = swarm_nodes.start_engine("w1")
    assert back.engine_alive() and back.engine != worker.engine
    assert sorted(ready_nodes(client)) == ["chaoskit-node-mgr", "chaoskit-node-w1"]
    wait_until(lambda: page(worker) == "kept on the host\n", 60, interval=0.1,
               what="a new task answering on the node that came back")  # fmt: skip
    assert [t["ID"] for t in service.tasks() if t["Status"]["State"] == "running"] != [first]

    swarm_nodes.stop_engine("w1")  # lost again, and removed so: dockerd cleans up nothing
    groups = list(Path("/sys/fs/cgroup").glob(f"*/{worker.netns}/*/"))
    assert groups and f"{worker.data_dir}/data/overlay2/" in Path("/proc/self/mounts").read_text()
    swarm_nodes.remove_node("w1")
    assert_nothing_left(back, client)
    service.remove()


def test_a_node_whose_owner_was_killed_is_reaped(manager: tuple[SwarmNode, Any]) -> None:
    mgr, client = manager
    name = killed_owner(f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        from chaoskit.stack import swarm_nodes
        node = swarm_nodes.add_node({mgr.url!r}, "orphan", images=[{IMAGE!r}])
        print(node.name, flush=True)
        time.sleep(600)
    """)
    assert name == "orphan"
    (orphan,) = [n for n in swarm_nodes.list_nodes() if n.name == "orphan"]
    assert orphan.engine_alive() and "chaoskit-node-orphan" in ready_nodes(client)
    assert swarm_nodes.reap_orphan_nodes() == ["orphan"]  # not mgr: its owner is alive
    assert_nothing_left(orphan, client)
    assert [n.name for n in swarm_nodes.list_nodes()] == ["mgr"]


def test_an_engine_in_no_swarm_is_refused_as_manager_before_anything_is_made(
    nodes_dir: Path,
) -> None:
    loner = swarm_nodes.add_node(join=False, name="loner")
    try:
        with pytest.raises(BackendError) as refused:
            swarm_nodes.add_node(loner.url, "w3")
        assert str(refused.value) == (
            f"the Docker engine at {loner.url} is not a swarm manager; it is in no swarm; "
            f"run `docker swarm init --advertise-addr ADDR` there first")
        assert "w3" not in [n.name for n in swarm_nodes.list_nodes()]
        with pytest.raises(ConfigError, match=r"no swarm node named 'w3' .*known: .*loner"):
            swarm_nodes.remove_node("w3")
    finally:
        swarm_nodes.remove_node("loner")


def test_a_lost_engine_starts_again_though_its_pid_files_name_live_processes(
    nodes_dir: Path,
) -> None:
    """A killed engine's containerd may still be a zombie when the node is started again
    (this machine's init reaps late), and dockerd takes a zombie for a live containerd:
    a live process in its pid files stands in for one."""
    loner = swarm_nodes.add_node(join=False, name="relit")
    stand_in = subprocess.Popen(["sleep", "60"])
    try:
        swarm_nodes.stop_engine("relit")
        for pid_file in ("docker.pid", "exec/containerd/containerd.pid"):
            (Path(loner.data_dir) / pid_file).write_text(f"{stand_in.pid}\n")
        back = swarm_nodes.start_engine("relit")
        assert back.engine_alive()
        assert connect(back.url).version()["Version"]
        assert stand_in.poll() is None  # not the node's: left alone
    finally:
        stand_in.kill()
        stand_in.wait()
        swarm_nodes.remove_node("relit")
