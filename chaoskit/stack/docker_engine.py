"""Talking to the Docker engine: connecting, translating its errors, labels, cleanup, state.

Everything the Docker backend creates (containers, the stack network, volumes) carries
``chaoskit.managed=1``, its project and its owner (host, pid and start time of the
Python process that created it).  That is how a run finds its own objects to remove in
``close()``, and how the next backend removes what an interrupted run (SIGKILL, power
loss) left behind: objects whose owner process is gone.  Objects without the label are
never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal as signals
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chaoskit.errors import BackendError, StackError

MANAGED = "chaoskit.managed"
PROJECT = "chaoskit.project"
SERVICE = "chaoskit.service"
OWNER = "chaoskit.owner"
DEFAULT_URL = "unix:///var/run/docker.sock"


def engine_url(base_url: str | None = None) -> str:
    return base_url or os.environ.get("DOCKER_HOST") or DEFAULT_URL


def connect(base_url: str | None = None, *, timeout: float = 30.0) -> Any:
    """A docker SDK client whose engine answered a ping; BackendError naming the URL if not."""
    import docker

    url = engine_url(base_url)
    try:
        client = docker.DockerClient(base_url=url, timeout=int(timeout))
        client.ping()
    except Exception as e:  # DockerException, requests errors, bad URLs: all "no engine"
        raise BackendError(
            f"no Docker engine answers at {url} ({type(e).__name__}: {e}); start dockerd "
            f"or point DOCKER_HOST at a running engine"
        ) from e
    return client


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Translate docker/requests errors raised inside the block into BackendError about *what*."""
    import docker.errors
    import requests

    try:
        yield
    except docker.errors.NotFound as e:
        raise BackendError(f"{what}: not found ({_explain(e)})") from e
    except docker.errors.APIError as e:
        raise BackendError(f"{what}: the Docker engine refused: {_explain(e)}") from e
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        raise BackendError(f"{what}: Docker engine unreachable or failing: {e}") from e


def _explain(e: Any) -> str:
    return str(getattr(e, "explanation", None) or e)


def is_not_found(e: BaseException) -> bool:
    import docker.errors

    cause = e.__cause__ if isinstance(e, BackendError) else e
    return isinstance(cause, docker.errors.NotFound)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (tells a live owner from a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def owner_label(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def owner_alive(owner: str) -> bool:
    """False only when the owner ran on this host and is gone; unknown owners count as alive."""
    try:
        host, pid, started = owner.rsplit(":", 2)
        number = int(pid)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    return _start_time(number) == started


def labels_for(project: str, service: str | None = None) -> dict[str, str]:
    labels = {MANAGED: "1", PROJECT: project, OWNER: owner_label()}
    if service is not None:
        labels[SERVICE] = service
    return labels


def managed_objects(client: Any, *, project: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every chaoskit-labelled swarm service and secret (when the engine is a swarm
    manager), container, network and volume (of *project* if given)."""
    label = MANAGED if project is None else f"{PROJECT}={project}"
    api = client.api
    with engine_errors("listing chaoskit's containers, networks and volumes"):
        manager = bool((api.info().get("Swarm") or {}).get("ControlAvailable"))
        services = api.services(filters={"label": label}) if manager else []
        secrets = api.secrets(filters={"label": label}) if manager else []
        containers = api.containers(all=True, filters={"label": label})
        networks = api.networks(filters={"label": label})
        volumes = api.volumes(filters={"label": label}).get("Volumes") or []
    return {"services": [{**s, "Labels": s["Spec"].get("Labels")} for s in services],
            "containers": containers, "networks": networks, "volumes": volumes,
            "secrets": [{**s, "Labels": s["Spec"].get("Labels")} for s in secrets]}  # fmt: skip


SWARM_SERVICE_ID = "com.docker.swarm.service.id"
"""Swarm's label on each task's container."""
TASKS_GONE_TIMEOUT = 30.0
"""Seconds a removed swarm service's containers get to go (its network is busy till then)."""


def remove_objects(client: Any, found: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Remove swarm services (and wait for their tasks' containers to go), then containers
    (forced), networks, volumes and secrets; returns what was removed."""
    api, removed = client.api, []
    steps = (
        ("services", lambda o: o["ID"], api.remove_service),
        ("containers", lambda o: o["Id"], lambda i: api.remove_container(i, force=True)),
        ("networks", lambda o: o["Id"], api.remove_network),
        ("volumes", lambda o: o["Name"], lambda n: api.remove_volume(n, force=True)),
        ("secrets", lambda o: o["ID"], api.remove_secret),
    )
    for kind, ident, remove in steps:
        for obj in found.get(kind, []):
            try:
                with engine_errors(f"removing {kind[:-1]} {ident(obj)[:12]}"):
                    remove(ident(obj))
            except BackendError as e:
                if is_not_found(e):
                    continue  # gone already (a swarm task's container goes with its service)
                raise
            removed.append(f"{kind[:-1]} {ident(obj)[:12]}")
        if kind == "services" and found.get(kind):
            _wait_tasks_gone(client, [ident(o) for o in found[kind]])
    return removed


def _wait_tasks_gone(client: Any, service_ids: list[str]) -> None:
    """Until the removed services have no task left in the swarm and no container on this
    engine (or a timeout).  Swarm's agent acts seconds late (~3 s here), and may still
    start a task that was waiting out its restart delay: the containers are removed here
    as they appear, until the manager has forgotten every task."""
    from chaoskit.waiting import wait_until

    def gone() -> bool:
        with engine_errors("listing the removed services' tasks and containers"):
            tasks = [t for t in client.api.tasks() if t.get("ServiceID") in service_ids]
            left = [c for i in service_ids for c in client.api.containers(
                all=True, filters={"label": f"{SWARM_SERVICE_ID}={i}"})]  # fmt: skip
        for container in left:
            with contextlib.suppress(BackendError), engine_errors("removing a task's container"):
                client.api.remove_container(container["Id"], force=True)
        return not left and not tasks

    with contextlib.suppress(TimeoutError):
        wait_until(gone, timeout=TASKS_GONE_TIMEOUT, interval=0.2)


def remove_project(client: Any, project: str) -> list[str]:
    """Remove every object labelled with *project*."""
    return remove_objects(client, managed_objects(client, project=project))


def reap_orphans(client: Any) -> list[str]:
    """Remove chaoskit objects whose owning process (on this host) is gone."""
    found = managed_objects(client)
    orphans = {
        kind: [o for o in objs if not owner_alive((o.get("Labels") or {}).get(OWNER, ""))]
        for kind, objs in found.items()
    }
    return remove_objects(client, orphans)


def project_name(run_dir: Path) -> str:
    """``chaoskit-<run dir name>-<6 hex of its full path>``: stable per run, unique per dir."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_dir.name.lower()).strip("-")[:32] or "run"
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:6]
    return f"chaoskit-{slug}-{digest}"


def container_status(info: dict[str, Any] | None) -> str:
    """Docker's state mapped onto the protocol's running / paused / exited / absent."""
    if info is None:
        return "absent"
    state = info["State"]
    if state.get("Running") and state.get("Paused"):
        return "paused"
    if state.get("Running") and not state.get("Restarting"):
        return "running"
    return "exited"


def instance_of(info: dict[str, Any] | None) -> str | None:
    """``<container id>:<pid>``: changes when the container is replaced *or* restarted."""
    if info is None or not info["State"].get("Running"):
        return None
    return f"{info['Id'][:12]}:{info['State'].get('Pid', 0)}"


def netns_pid_of(info: dict[str, Any] | None, what: str) -> int:
    """The pid of a running container's init, whose network namespace is the container's.

    StackError when it is not running, or when the engine does not share our pid namespace
    (a remote engine: the pid would name some other process here).
    """
    pid = int(info["State"].get("Pid") or 0) if info and info["State"].get("Running") else 0
    if pid <= 0:
        raise StackError(f"{what} is not running: it has no network namespace to enter")
    try:
        ours = info is not None and info["Id"] in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        ours = False
    if not ours:
        raise StackError(
            f"{what}: its pid {pid} is not a process of this host (is the Docker engine "
            f"remote?); its network namespace cannot be entered from here"
        )
    return pid


def signal_init(info: dict[str, Any], sig: signals.Signals) -> bool:
    """Signal the container's init (its pid 1) from here, as ``docker kill`` would.

    Only when the engine shares our pid namespace (the pid's cgroup names the container).
    The engine's kill API returns only after its teardown (0.4-0.8 s measured), which would
    put the journalled fault time well after the outage began; a signal is instant.
    """
    pid = int(info["State"].get("Pid") or 0)
    try:
        if pid <= 0 or info["Id"] not in Path(f"/proc/{pid}/cgroup").read_text():
            return False
        os.kill(pid, sig)
    except (OSError, KeyError):
        return False
    return True
