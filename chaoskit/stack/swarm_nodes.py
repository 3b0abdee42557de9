"""Extra Docker Swarm nodes on this machine: a dockerd of its own per node, in its own
network namespace, joined to a manager's swarm as a worker.

A node-loss fault needs a second node whose death takes its tasks with it while the
manager lives on.  Each node here is a network namespace ``chaoskit-node-<name>`` with a
veth pair to the host (subnet ``10.237.N.0/24``: host side ``.1``, node side ``.2``, the
node's default route), and a dockerd entered into it with ``nsenter --net`` (not ``ip
netns exec``: that remounts /sys, which hides the cgroup mounts and dockerd then fails
with "Devices cgroup isn't mounted").  The engine has its own data root, exec root,
socket, pidfile, cgroup parent (``/chaoskit-node-<name>``) and hostname (a UTS
namespace of its own: ``docker node ls`` tells the nodes apart).  One FORWARD rule per
node lets nodes reach each other through the host; the host itself reaches them
directly.

Only the network namespace differs from the host's: the node shares the host's file
system, so bind mounts of host paths work on every node alike, which is what lets a
service keep bind-mounted data on either node (and lets the host-environment image
run there).  Nothing can be pulled, so images are copied from the manager's engine
(``docker save`` there, ``docker load`` here), and the engine runs with
``DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1``: otherwise every task waits ~20 s on a
registry it cannot reach before it uses the local image.  Swarm's virtual IPs and the
ingress routing mesh need IPVS, which machines like this one lack: services on these
nodes use ``endpoint_mode=dnsrr`` and published ports ``mode=host``.

Each node is recorded in ``<state dir>/<name>.json`` (written atomically; the state dir
is ``$CHAOSKIT_SWARM_NODES_DIR`` or ``/var/lib/chaoskit/swarm-nodes``, the node's data
beside it in ``<name>/``) with its owner: host, pid and start time of the process that
added it, as the Docker backend labels containers.  :func:`reap_orphan_nodes` removes
the nodes whose owner is gone (a run killed with SIGKILL).  A node added from the
command line belongs to no process (owner ``cli``): it stays until ``chaoskit swarm
remove-node`` removes it.  Everything here needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from chaoskit.atomic import atomic_write_text
from chaoskit.errors import BackendError, ConfigError
from chaoskit.stack.docker_engine import (
    MANAGED,
    OWNER,
    connect,
    engine_errors,
    engine_url,
    owner_alive,
    owner_label,
)
from chaoskit.stack.netns_firewall import IPTABLES, NSENTER
from chaoskit.stack.swarm_node_host import (
    NETNS_DIR,
    kill_processes,
    mounts_under,
    remove_cgroups,
    unmount_all,
)
from chaoskit.waiting import wait_until

STATE_ENV = "CHAOSKIT_SWARM_NODES_DIR"
DEFAULT_STATE_DIR = "/var/lib/chaoskit/swarm-nodes"
CLI_OWNER = "cli"
"""The owner of a node added from the command line: never an orphan (no process owns it)."""
NODE_LABEL = "chaoskit.node"
NETNS_PREFIX = "chaoskit-node-"
SUBNET = "10.237"
VETH_PREFIX = "ckn"
START_TIMEOUT = 60.0
STATE_TIMEOUT = 60.0
"""How long a manager may take to mark a node Ready (joined, started) or Down (lost:
its heartbeats stop; 10-20 s here)."""
STOP_TIMEOUT = 20.0
"""SIGTERM grace for remove_node: dockerd stops its containers (10 s each by default)."""
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,23}")
_SOCKET_MAX = 107  # sun_path; containerd puts containerd.sock.ttrpc under the exec root


@dataclass(frozen=True)
class SwarmNode:
    """What was made for one node: enough to remove it even after its owner died."""

    name: str
    index: int
    netns: str
    veth: str
    host_address: str
    address: str
    data_dir: str
    owner: str
    manager_url: str | None = None
    node_id: str | None = None
    engine: str | None = None
    """host:pid:start time of its dockerd (as owner labels are): a reused pid is not it."""

    @property
    def url(self) -> str:
        return f"unix://{self.data_dir}/docker.sock"

    @property
    def engine_pid(self) -> int | None:
        return int(self.engine.rsplit(":", 2)[1]) if self.engine else None

    def engine_alive(self) -> bool:
        return self.engine is not None and owner_alive(self.engine)


# --- the record ---------------------------------------------------------------------


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR)


def _state_file(name: str) -> Path:
    return state_dir() / f"{name}.json"


def _save(node: SwarmNode) -> None:
    atomic_write_text(_state_file(node.name), json.dumps(asdict(node), indent=1) + "\n")


def list_nodes() -> list[SwarmNode]:
    """The recorded nodes, by name; ``engine_alive()`` tells whose dockerd runs."""
    nodes = []
    for path in sorted(state_dir().glob("*.json")):
        try:
            nodes.append(SwarmNode(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"swarm node record {path} is unreadable: {e}") from e
    return nodes


def _load(name: str) -> SwarmNode:
    nodes = {node.name: node for node in list_nodes()}
    if name not in nodes:
        known = ", ".join(sorted(nodes)) or "none"
        raise ConfigError(f"no swarm node named {name!r} on this machine (known: {known})")
    return nodes[name]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Held while a name and subnet are chosen and recorded: two adders never share one."""
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _allocate(name: str | None, owner: str, manager_url: str | None) -> SwarmNode:
    """The lowest free subnet (no node, veth or host address uses it) and the name."""
    taken = {node.name: node.index for node in list_nodes()}
    used = set(taken.values()) | _host_subnets()
    index = next((i for i in range(1, 255) if i not in used
                  and not Path(f"/sys/class/net/{VETH_PREFIX}{i}").exists()), None)  # fmt: skip
    if index is None:
        raise BackendError(f"no free subnet {SUBNET}.N.0/24 for another swarm node")
    if name is None:
        name = next(f"node{i}" for i in range(index, index + 300) if f"node{i}" not in taken)
    _check_name(name)
    if name in taken:
        raise ConfigError(f"a swarm node named {name!r} exists already (remove it first)")
    netns = NETNS_PREFIX + name
    if (NETNS_DIR / netns).exists():
        raise ConfigError(f"network namespace {netns} exists but chaoskit has no record of "
                          f"it; remove it with `ip netns delete {netns}`")  # fmt: skip
    data_dir = state_dir().absolute() / name
    if len(f"{data_dir}/exec/containerd/containerd.sock.ttrpc") > _SOCKET_MAX:
        raise ConfigError(f"{STATE_ENV} {str(state_dir())!r} is too long for the node's "
                          f"sockets (at most {_SOCKET_MAX} bytes): use a shorter one")  # fmt: skip
    return SwarmNode(name=name, index=index, netns=netns, veth=f"{VETH_PREFIX}{index}",
                     host_address=f"{SUBNET}.{index}.1", address=f"{SUBNET}.{index}.2",
                     data_dir=str(data_dir), owner=owner, manager_url=manager_url)  # fmt: skip


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"swarm node name {name!r}: use 1-24 lowercase letters, digits "
                          f"and '-', starting with a letter or digit")  # fmt: skip
    return name


def _host_subnets() -> set[int]:
    """N of every 10.237.N.x address on the host (someone else's use of the range)."""
    out = _run("ip", "-o", "-4", "addr", "show").stdout
    return {int(n) for n in re.findall(rf"inet {re.escape(SUBNET)}\.(\d+)\.", out)}


# --- adding, losing, removing ---------------------------------------------------------


def add_node(
    manager_url: str | None = None,
    name: str | None = None,
    *,
    images: Iterable[str] = (),
    join: bool = True,
    owner: str | None = None,
) -> SwarmNode:
    """A new node on this machine, joined to the swarm of *manager_url* as a worker and
    Ready there, labelled ``chaoskit.managed``, ``chaoskit.owner`` and ``chaoskit.node``
    (its name: constrain services with ``node.labels.chaoskit.node==NAME``).

    *images* are copied from the manager's engine first (nothing can be pulled).
    ``join=False`` makes an engine of its own that joins no swarm (e.g. to init a swarm
    there: the tests' manager).  *owner* defaults to this process (reaped once it is
    gone); :data:`CLI_OWNER` for a node nobody reaps.  On any failure, Ctrl-C included,
    what was made is removed again.
    """
    if name is not None:
        _check_name(name)
    _check_can_run()
    images = list(images)
    url = engine_url(manager_url)
    manager: Any = connect(url) if join or images else None
    joining = _join_info(manager, url) if join else None
    for image in images:
        _check_image(manager, url, image)
    with _locked():
        node = _allocate(name, owner or owner_label(), url if join else None)
        _save(node)  # before anything is made: a killed owner leaves a record to reap
    try:
        _make_network(node)
        node = _start(node)
        client = connect(node.url)
        for image in images:
            _copy_image(manager, client, image, node.name)
        if joining is not None:
            node = _join(node, client, manager, *joining)
    except BaseException as e:
        with contextlib.suppress(ConfigError):
            node = _load(node.name)  # what was recorded so far: its engine, its node id
        try:
            _teardown(node, url if join else None)
        except Exception as cleanup:  # the first error is the one to see
            e.add_note(f"removing the half-made swarm node {node.name!r} failed too: {cleanup}")
        raise
    return node


def remove_node(name: str, manager_url: str | None = None) -> None:
    """Remove the node: its engine stopped (SIGTERM, then SIGKILL), forgotten by the
    manager it joined (or *manager_url*), its mounts, veth, netns, cgroups, data and
    record gone.  Each step skips what is gone already, so running it again after a
    failure finishes the job.  ConfigError for a name with no record."""
    node = _load(name)
    _teardown(node, manager_url or node.manager_url)


def stop_engine(name: str) -> SwarmNode:
    """Node loss: every process of the node (dockerd, containerd, shims, containers)
    killed at once with SIGKILL, like a power cut; its tasks die with it and the manager
    marks it Down once heartbeats stop.  :func:`start_engine` undoes it."""
    node = _load(name)
    kill_processes(node)
    node = replace(node, engine=None)
    _save(node)
    return node


def start_engine(name: str) -> SwarmNode:
    """The node's dockerd started again (a no-op if it runs) and, if it joined a swarm,
    Ready there again.  dockerd cleans up what its killed predecessor left mounted.

    A joined node starts only once its manager has marked it Down, as a rebooted
    machine would be: one back sooner meets the gossip identity of its killed engine,
    which the manager still lists at the node's address, and its overlay network's
    first task waits 30 s in "preparing" on a bulk sync to that ghost (libnetwork's
    networkdb)."""
    node = _load(name)
    if node.engine_alive():
        return node
    _check_can_run()
    kill_processes(node)  # what a dockerd that died on its own left running
    manager = connect(node.manager_url) if node.manager_url and node.node_id else None
    if manager is not None:
        _wait_state(manager, node, "down")
    node = _start(node)
    if manager is not None:
        _wait_state(manager, node, "ready")
    return node


def copy_image(name: str, image: str, manager_url: str | None = None) -> None:
    """Copy *image* from the manager's engine (the one the node joined) into the node's."""
    node = _load(name)
    manager = connect(manager_url or node.manager_url)
    _check_image(manager, engine_url(manager_url or node.manager_url), image)
    _copy_image(manager, connect(node.url), image, node.name)


def reap_orphan_nodes() -> list[str]:
    """Remove the nodes whose owner process (on this host) is gone; their names."""
    orphans = [node for node in list_nodes() if not owner_alive(node.owner)]
    for node in orphans:
        _teardown(node, node.manager_url)
    return [node.name for node in orphans]


# --- the swarm ------------------------------------------------------------------------


def _check_image(manager: Any, url: str, image: str) -> None:
    import docker.errors

    try:
        manager.api.inspect_image(image)
    except docker.errors.NotFound:
        raise ConfigError(f"image {image!r} is not on the engine at {url}: build or load it "
                          f"there first (nothing can be pulled)") from None  # fmt: skip
    except docker.errors.DockerException as e:
        raise BackendError(f"looking up image {image!r} on the engine at {url}: {e}") from e


def _copy_image(manager: Any, client: Any, image: str, name: str) -> None:
    """``docker save`` on the manager's engine streamed into ``docker load`` on the node."""
    with engine_errors(f"copying image {image!r} to swarm node {name}"):
        for event in client.api.load_image(manager.api.get_image(image)):
            if isinstance(event, dict) and event.get("error"):
                raise BackendError(f"copying image {image!r} to swarm node {name}: "
                                   f"{event['error']}")  # fmt: skip


def _join_info(manager: Any, url: str) -> tuple[str, str]:
    """(a manager address reachable from a node, the worker join token); BackendError
    unless the engine at *url* is a swarm manager."""
    with engine_errors(f"asking the engine at {url} about its swarm"):
        swarm = manager.info().get("Swarm") or {}
    state = swarm.get("LocalNodeState") or "inactive"
    if state != "active" or not swarm.get("ControlAvailable"):
        why = {
            "active": "it is a swarm worker; give a manager's engine",
            "inactive": "it is in no swarm; run `docker swarm init --advertise-addr ADDR` "
                        "there first",
            "locked": "its swarm is locked; run `docker swarm unlock` there first",
        }.get(state, f"its swarm state is {state!r}")  # fmt: skip
        raise BackendError(f"the Docker engine at {url} is not a swarm manager; {why}")
    with engine_errors(f"reading the join token of the swarm at {url}"):
        token = manager.api.inspect_swarm()["JoinTokens"]["Worker"]
    own = [m["Addr"] for m in swarm.get("RemoteManagers") or () if m["NodeID"] == swarm["NodeID"]]
    return (own[0] if own else f"{swarm['NodeAddr']}:2377"), token


def _join(node: SwarmNode, client: Any, manager: Any, address: str, token: str) -> SwarmNode:
    with engine_errors(f"joining swarm node {node.name} to the swarm of {node.manager_url}"):
        client.swarm.join(remote_addrs=[address], join_token=token, advertise_addr=node.address,
                          listen_addr=f"{node.address}:2377")  # fmt: skip
        node = replace(node, node_id=client.info()["Swarm"]["NodeID"])
    _save(node)
    labels = {MANAGED: "1", OWNER: node.owner, NODE_LABEL: node.name}
    with engine_errors(f"labelling swarm node {node.name} ({node.node_id})"):
        found = manager.api.inspect_node(node.node_id)
        spec = {**found["Spec"], "Labels": {**found["Spec"].get("Labels", {}), **labels}}
        manager.api.update_node(node.node_id, found["Version"]["Index"], spec)
    _wait_state(manager, node, "ready")
    return node


def _node_state(manager: Any, node_id: str) -> str:
    with engine_errors(f"inspecting swarm node {node_id}"):
        return str(manager.api.inspect_node(node_id)["Status"]["State"])


def _wait_state(manager: Any, node: SwarmNode, state: str) -> None:
    """Until the manager reports the node in *state* ("ready", "down")."""
    assert node.node_id is not None
    node_id = node.node_id
    try:
        wait_until(lambda: _node_state(manager, node_id) == state, STATE_TIMEOUT,
                   interval=0.1)  # fmt: skip
    except TimeoutError:
        raise BackendError(f"swarm node {node.name} ({node_id}) is not {state.title()} on "
                           f"the manager at {node.manager_url} after {STATE_TIMEOUT:g}s: it "
                           f"is {_node_state(manager, node_id)}") from None  # fmt: skip


def _forget(node: SwarmNode, manager_url: str | None) -> str | None:
    """``docker node rm --force`` on the manager; why it could not, or None.  A manager
    that no longer answers has nothing to forget."""
    if not manager_url or not node.node_id:
        return None
    try:
        manager = connect(manager_url, timeout=10)
    except BackendError:
        return None
    import docker.errors

    try:
        manager.api.remove_node(node.node_id, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.DockerException as e:
        return (f"the manager at {manager_url} did not forget it ({e}): run `docker node rm "
                f"--force {node.node_id}` there")  # fmt: skip
    return None


# --- the engine -------------------------------------------------------------------------


def _check_can_run() -> None:
    if os.geteuid() != 0:
        raise BackendError("swarm nodes need root (network namespaces, veth pairs, a dockerd "
                           "of their own)")  # fmt: skip
    for tool in ("dockerd", "ip", NSENTER, "unshare", IPTABLES):
        if shutil.which(tool) is None:
            raise BackendError(f"swarm nodes need {tool}, which is not installed")


def dockerd_command(node: SwarmNode) -> list[str]:
    """dockerd entered into the node's netns with a hostname of its own."""
    root = node.data_dir
    return [
        NSENTER, f"--net={NETNS_DIR / node.netns}", "--", "unshare", "--uts", "--",
        "/bin/sh", "-c", 'hostname "$0" && exec "$@"', node.netns,
        "dockerd", "--config-file", f"{root}/daemon.json", "--data-root", f"{root}/data",
        "--exec-root", f"{root}/exec", "-H", node.url, "--pidfile", f"{root}/docker.pid",
        "--cgroup-parent", f"/{node.netns}",
    ]  # fmt: skip


def _start(node: SwarmNode) -> SwarmNode:
    """Start the node's dockerd and wait until its socket answers; the node with it."""
    root = Path(node.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "daemon.json").write_text("{}\n")  # not the host's /etc/docker/daemon.json
    # Nothing of the node runs now, but a killed engine's pid files name processes that
    # may still be zombies (the machine's init reaps them when it gets to it): dockerd
    # would take its containerd for a live one, wait on its socket and give up.
    for pid_file in (root / "docker.pid", root / "exec" / "containerd" / "containerd.pid"):
        pid_file.unlink(missing_ok=True)
    env = {**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}
    with open(root / "dockerd.log", "ab") as log:
        engine = subprocess.Popen(dockerd_command(node), env=env, stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # its own session: Ctrl-C spares it
    node = replace(node, engine=owner_label(engine.pid))
    _save(node)

    def answers() -> bool:
        if engine.poll() is not None:
            return True
        with contextlib.suppress(BackendError):
            connect(node.url, timeout=5).close()
            return True
        return False

    try:
        wait_until(answers, START_TIMEOUT, interval=0.05)
    except TimeoutError:
        raise BackendError(f"the dockerd of swarm node {node.name} does not answer at "
                           f"{node.url} after {START_TIMEOUT:g}s; see "
                           f"{root}/dockerd.log") from None  # fmt: skip
    if engine.returncode is not None:
        last = (root / "dockerd.log").read_text(errors="replace").strip().splitlines()[-1:]
        raise BackendError(f"the dockerd of swarm node {node.name} exited with status "
                           f"{engine.returncode}: {last[0] if last else 'no output'}")  # fmt: skip
    return node


# --- the plumbing ---------------------------------------------------------------------


def _run(*command: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BackendError(f"{' '.join(command)}: {e}") from e
    if done.returncode not in ok:
        why = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise BackendError(f"{' '.join(command)}: {why}")
    return done


def _forward_rule(node: SwarmNode) -> list[str]:
    """Node-to-node traffic routed through the host (FORWARD may drop it by default)."""
    return ["FORWARD", "-i", node.veth, "-o", f"{VETH_PREFIX}+", "-m", "comment",
            "--comment", f"chaoskit-node:{node.name}", "-j", "ACCEPT"]  # fmt: skip


def _make_network(node: SwarmNode) -> None:
    peer, ns = f"{node.veth}n", node.netns
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", node.veth, "type", "veth", "peer", "name", peer, "netns", ns)
    _run("ip", "addr", "add", f"{node.host_address}/24", "dev", node.veth)
    _run("ip", "link", "set", node.veth, "up")
    _run("ip", "-n", ns, "addr", "add", f"{node.address}/24", "dev", peer)
    _run("ip", "-n", ns, "link", "set", peer, "up")
    _run("ip", "-n", ns, "link", "set", "lo", "up")
    _run("ip", "-n", ns, "route", "add", "default", "via", node.host_address)
    _run(IPTABLES, "-w", "5", "-I", *_forward_rule(node))
    forwarding = Path("/proc/sys/net/ipv4/ip_forward")
    if forwarding.read_text().strip() != "1":  # nodes reach each other through the host
        forwarding.write_text("1\n")


def _teardown(node: SwarmNode, manager_url: str | None) -> None:
    """Undo add_node, each step skipping what is gone (a half-made node, a second try)."""
    kill_processes(node, grace=STOP_TIMEOUT)
    refused = _forget(node, manager_url)
    unmount_all(node.data_dir)
    if Path(f"/sys/class/net/{node.veth}").exists():
        _run("ip", "link", "delete", node.veth)
    rule = _forward_rule(node)
    while _run(IPTABLES, "-w", "5", "-C", *rule, ok=(0, 1)).returncode == 0:
        _run(IPTABLES, "-w", "5", "-D", *rule)
    if (NETNS_DIR / node.netns).exists():
        _run("ip", "netns", "delete", node.netns)
    remove_cgroups(node)
    if mounts_under(node.data_dir):
        raise BackendError(f"{node.data_dir} still has mounts: not removing it")
    shutil.rmtree(node.data_dir, ignore_errors=True)
    if Path(node.data_dir).exists():
        shutil.rmtree(node.data_dir)  # the error, this time
    with contextlib.suppress(FileNotFoundError):
        _state_file(node.name).unlink()
    if refused:
        raise BackendError(f"swarm node {node.name} is gone from this machine, but {refused}")

