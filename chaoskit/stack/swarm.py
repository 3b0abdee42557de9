"""The Swarm backend: every service of a stack is a Docker Swarm service, and Swarm runs
its tasks.

What differs from the Docker backend (:mod:`chaoskit.stack.docker`, whose images, files,
commands and labels this backend shares):

* the engine must be a swarm manager; an engine in no swarm gets a single-node swarm for
  the run (:mod:`chaoskit.stack.swarm_mode`);
* the serving replicas are the tasks of **one** service (``<project>-<primary>``, N
  replicas, :meth:`SwarmBackend.start_replicas`); chaoskit's replica names (``serving``,
  ``serving-b`` …) are its task *slots* 1..N.  Swarm keeps a slot when it replaces a
  task, so a replica's faults and probes follow the replacement: every call resolves the
  slot's current task through the manager's task list.  Other services have one task;
* the run's network is an attachable overlay network; services use ``endpoint_mode:
  dnsrr`` (each name resolves to its tasks' addresses), since Swarm's virtual IPs and
  ingress routing mesh need IPVS, which this kind of kernel lacks;
* ports: a task listens on the spec's port numbers inside its container, published in
  *host* mode on a port Swarm picks.  The backend's forwarder
  (:mod:`chaoskit.stack.swarm_forwarder`) listens on this host at the spec's number (0: a
  free one, kept for the run) and sends each new connection to the current task's
  published port.  So clients, the gateway's proxies and the DR engine's probes keep one
  address while Swarm replaces tasks; :meth:`SwarmBackend.task_endpoint` is a task's own;
* nodes: tasks run on the manager's node or on workers chaoskit adds on this machine
  (``SwarmOptions.workers``, :mod:`chaoskit.stack.swarm_topology`); a task is acted on
  through its node's engine;
* restarts are Swarm's: its restart policy (condition ``any``, 5 s delay, Swarm's default)
  replaces a task that exits.  :meth:`SwarmBackend.restart` removes the current task's
  container (a hung one that Swarm believes running, one serving damaged weights),
  replaces a task whose node is lost on another node at once
  (:mod:`chaoskit.stack.swarm_placement`), and waits for a fresh rollout's new task
  rather than fight Swarm's update (:mod:`chaoskit.stack.swarm_rollout`); then it waits
  until the replacement is ready.  ``recovery = "observe"`` leaves all of it to Swarm;
* every service, network, volume and secret carries chaoskit's labels; ``close()`` removes
  them, and the next backend removes those of a killed run (:func:`docker_engine.reap_orphans`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoskit.errors import BackendError, StackError
from chaoskit.stack import docker_engine as engine
from chaoskit.stack import swarm_mode
from chaoskit.stack import swarm_rollout as rollout
from chaoskit.stack.docker import DockerBackend, _Service, user_of_this_process
from chaoskit.stack.docker_engine import container_status, instance_of, netns_pid_of, signal_init
from chaoskit.stack.ports import HOST, allocate_ports, endpoint_in
from chaoskit.stack.process import parse_signal
from chaoskit.stack.readiness import is_ready, wait_ready
from chaoskit.stack.service import ServiceSpec
from chaoskit.stack.swarm_forwarder import Forwarder
from chaoskit.stack.swarm_mode import SwarmOptions
from chaoskit.stack.swarm_placement import Placement
from chaoskit.stack.swarm_tasks import (
    FAILED,
    RUNNING,
    STARTING,
    latest,
    published_port,
    slot_task,
    task_container,
)
from chaoskit.stack.swarm_topology import Topology


@dataclass
class _Member:
    """A chaoskit service name: one slot of a Swarm service."""

    name: str
    service: str  # the Swarm service's name
    slot: int
    spec: ServiceSpec
    svc: _Service


@dataclass
class _SwarmService:
    name: str
    id: str
    members: list[str] = field(default_factory=list)
    spares: list[_Member] = field(default_factory=list)
    """Warm slots beyond the members' (``SwarmOptions.spares``; see swarm_placement)."""


class SwarmBackend(Placement, DockerBackend):
    """Runs services as Swarm services; see the module docstring for the layout."""

    name = "swarm"
    network_options: dict[str, Any] = {"driver": "overlay", "attachable": True}

    def __init__(self, run_dir: str | Path, data_dir: str | Path, *, image: str | None = None,
                 python: str | None = None, project: str | None = None,
                 base_url: str | None = None,
                 options: SwarmOptions | None = None) -> None:  # fmt: skip
        super().__init__(run_dir, data_dir, image=image, python=python, project=project,
                         base_url=base_url)  # fmt: skip
        swarm_mode.reap_orphan_swarm(self.client)
        self.initialised_swarm = swarm_mode.ensure_manager(self.client, self.url)
        self.options = options or SwarmOptions()
        self.topology = Topology(self.client, self.url)
        self.topology.reap_paused()
        self._placement_lock = threading.Lock()
        self._drained: set[str] = set()
        self.drains: list[str] = []
        """Every node this backend drained, in order (the DR engine's node repairs)."""
        self._members: dict[str, _Member] = {}
        self._swarm_services: dict[str, _SwarmService] = {}
        self._forwarder: Forwarder | None = None

    # -- starting -------------------------------------------------------------------
    def start(self, spec: ServiceSpec) -> None:
        """Create a one-task service for *spec*, or wait for a slot created by
        :meth:`start_replicas`; returns once its task is ready."""
        member = self._members.get(spec.name)
        if member is None:
            self.start_replicas([spec])
            return
        self._wait_ready(member, before=None)

    def start_replicas(self, specs: list[ServiceSpec]) -> None:
        """One Swarm service whose N tasks are *specs* (replicas alike but for their names
        and port numbers: the first one's command runs in every task); returns once every
        task is ready."""
        first = specs[0]
        with self._lock:
            if any(s.name in self._members for s in specs):
                raise StackError(f"service {first.name!r} is already running")
            image = first.image or self.image
            if image is None:
                from chaoskit.stack.docker_image import ensure_image

                image = ensure_image(self.client)
            self.ensure_image(image)
            self.topology.ensure_workers(self.options.workers, image)
            svc = _Service(first, allocate_ports(first.name, first.ports), image)
            self._services[first.name] = svc
            self._ensure_network()
            self._ensure_volumes()
            name = f"{self.project}-{first.name}"
            spares = self.options.spares if len(specs) > 1 else 0
            created = self._create_service(name, svc, replicas=len(specs))
            group = self._swarm_services[name] = _SwarmService(name, created)
            for slot, spec in enumerate(specs, start=1):
                ports = svc.ports if slot == 1 else allocate_ports(spec.name, spec.ports)
                member_svc = svc if slot == 1 else _Service(spec, ports, image)
                self._services[spec.name] = member_svc
                self._members[spec.name] = _Member(spec.name, name, slot, spec, member_svc)
                group.members.append(spec.name)
            for slot in range(len(specs) + 1, len(specs) + spares + 1):
                group.spares.append(_Member(f"{first.name}~spare{slot}", name, slot, first, svc))
            self._ensure_forwarder()
        self._place_spares(group)
        for member in [*(self._members[spec.name] for spec in specs), *group.spares]:
            self._wait_ready(member, before=None)

    def _create_service(self, name: str, svc: _Service, *, replicas: int) -> str:
        from docker.types import (
            ContainerSpec,
            Placement,
            RestartPolicy,
            ServiceMode,
            TaskTemplate,
        )

        self._claim_service_name(name)
        container = ContainerSpec(
            self._pinned(svc.image), command=self._command(svc), env=self._env(svc),
            workdir=self._workdir(svc), user=user_of_this_process(), mounts=self._mounts(svc),
            init=True,
            labels={engine.PROJECT: self.project, engine.SERVICE: svc.spec.name},
            stop_grace_period=int(svc.spec.stop_timeout * 1e9), healthcheck=self._healthcheck(svc),
            secrets=[self._secret(path) for path in svc.spec.secrets],
        )  # fmt: skip
        # A one-task service keeps state (a trainer's checkpoints, a DR site's store) that
        # must never have two writers: on a lost node it could only wait for Swarm's
        # heartbeat timeout.  It stays on the manager's node, which no node fault takes.
        placement = None if replicas > 1 else Placement([f"node.id=={self.topology.own_id}"])
        template = TaskTemplate(container, restart_policy=RestartPolicy(condition="any"),
                                placement=placement,
                                networks=[{"Target": self.network,
                                           "Aliases": [svc.spec.name]}])  # fmt: skip
        endpoint = {"Mode": "dnsrr", "Ports": [
            {"Protocol": "tcp", "TargetPort": port, "PublishMode": "host"}
            for port in svc.ports.values()]}  # fmt: skip
        with engine.engine_errors(f"creating swarm service {name!r} from image {svc.image!r}"):
            created = self.client.api.create_service(
                template, name=name, labels=engine.labels_for(self.project, svc.spec.name),
                mode=ServiceMode("replicated", replicas=replicas), endpoint_spec=endpoint,
                update_config=rollout.update_config(), rollback_config=rollout.rollback_config(),
            )  # fmt: skip
        return str(created["ID"])

    def _pinned(self, image: str) -> str:
        """What a task runs: a local image by its id, so no engine tries to pull it (each
        task start would ask a registry first, and could get another image of that
        name); a registry's by its digest, as ``docker service create`` pins it."""
        with engine.engine_errors(f"inspecting image {image!r}"):
            info = self.client.api.inspect_image(image)
        digests = info.get("RepoDigests") or []
        return str(digests[0] if digests else info["Id"])

    def _secret(self, path: str) -> Any:
        """A Docker secret holding the file *path* (labelled, removed with the run), given
        to the task at the same path, readable by the task's user only."""
        from docker.types import SecretReference

        name = f"{self.project}-{Path(path).name}"
        with engine.engine_errors(f"creating swarm secret {name!r} from {path}"):
            for old in self.client.api.secrets(filters={"name": name}):
                self._check_ours(old["Spec"].get("Labels") or {}, f"swarm secret {name!r}")
                self.client.api.remove_secret(old["ID"])
            created = self.client.api.create_secret(name, Path(path).read_bytes(),
                                                    labels=engine.labels_for(self.project))
        return SecretReference(created["ID"], name, filename=path, uid=str(os.getuid()),
                               gid=str(os.getgid()), mode=0o400)  # fmt: skip

    def _healthcheck(self, svc: _Service) -> Any:
        """The service's readiness as a Docker health check, when asked for: Swarm then
        counts a task as up once it is healthy, and an unhealthy one as failed.  Failures
        count after the grace a new task gets (:data:`swarm_rollout.GRACE_S`)."""
        from docker.types import Healthcheck

        path, every = svc.spec.readiness.http_path, self.options.healthcheck
        if every is None or path is None or not svc.ports or not self._hostenv(svc):
            return None  # a user's image: no Python of ours to run the check with
        url = f"http://127.0.0.1:{next(iter(svc.ports.values()))}{path}"
        check = f"import urllib.request as u; u.urlopen({url!r}, timeout={every:g})"
        ns = int(every * 1e9)
        return Healthcheck(test=["CMD", self.python or sys.executable, "-c", check],
                           interval=ns, timeout=ns, retries=3,
                           start_period=int(rollout.GRACE_S * 1e9))  # fmt: skip

    def _volume_mount(self, key: str, name: str) -> Any:
        """A volume every node creates alike: the run's directory, bound (all nodes of a
        swarm on this machine share its file system)."""
        from docker.types import DriverConfig, Mount

        options = {"type": "none", "o": "bind", "device": str(self.data_dir / key)}
        return Mount(str(self.data_dir / key), name, type="volume",
                     labels=engine.labels_for(self.project),
                     driver_config=DriverConfig("local", options))  # fmt: skip

    def _claim_service_name(self, name: str) -> None:
        """Make *name* free: remove our own stale service, refuse anyone else's."""
        with engine.engine_errors(f"looking up swarm service {name!r}"):
            existing = [s for s in self.client.api.services(filters={"name": name})
                        if s["Spec"]["Name"] == name]  # fmt: skip
        for old in existing:
            self._check_ours(old["Spec"].get("Labels") or {}, f"swarm service {name!r}")
            engine.remove_objects(self.client, {"services": [old]})

    # -- tasks ----------------------------------------------------------------------
    def _member(self, service: str) -> _Member:
        try:
            return self._members[service]
        except KeyError:
            known = ", ".join(sorted(self._members)) or "none"
            raise StackError(f"no service {service!r} in this stack (services: {known})") from None

    def _tasks(self, swarm_service: str) -> list[dict[str, Any]]:
        with engine.engine_errors(f"listing the tasks of swarm service {swarm_service!r}"):
            tasks: list[dict[str, Any]] = self.client.api.tasks(filters={"service": swarm_service})
        return tasks

    def task(self, service: str) -> dict[str, Any] | None:
        """The current task of *service* (a slot of its Swarm service), from the manager."""
        return self._slot_task(self._member(service))

    def _slot_task(self, member: _Member) -> dict[str, Any] | None:
        return slot_task(self._tasks(member.service), member.slot)

    def _inspect_task(self, task: dict[str, Any] | None) -> dict[str, Any] | None:
        container = task_container(task)
        if task is None or container is None:
            return None
        api = self.topology.api_for(task.get("NodeID"))
        if api is None:
            return None  # its node is lost, and the container with it
        try:
            with engine.engine_errors(f"inspecting container {container[:12]}"):
                info: dict[str, Any] = api.inspect_container(container)
                return info
        except BackendError as e:
            if engine.is_not_found(e):
                return None
            raise

    def _latest_task(self, member: _Member) -> dict[str, Any] | None:
        """The slot's newest task, whatever Swarm wants of it (a failed one included)."""
        return latest([t for t in self._tasks(member.service) if t.get("Slot") == member.slot])

    def task_endpoint(self, service: str, port: str) -> tuple[str, int] | None:
        """The current task's own address for *port* (its node's address and the port
        Swarm published), bypassing the forwarder; None while no task runs."""
        return self._task_endpoint(self._member(service), port)

    def _task_endpoint(self, member: _Member, port: str) -> tuple[str, int] | None:
        target = self._target_port(member, port)
        task = self._slot_task(member)
        if task is None or (task.get("Status") or {}).get("State") != RUNNING:
            return None
        published = published_port(task, target)
        return None if published is None else (self.topology.address(task.get("NodeID")), published)

    def _target_port(self, member: _Member, port: str) -> int:
        """The port number every task of the member's Swarm service listens on."""
        first = self._swarm_services[member.service].members[0]
        return endpoint_in(self._services[first].ports, member.name, port)[1]

    # -- the forwarder: one address per service while Swarm replaces tasks ------------
    def _ensure_forwarder(self) -> None:
        if self._forwarder is None:
            self._forwarder = Forwarder(self._upstreams)
        for member in self._members.values():
            for port_name, port in member.svc.ports.items():
                self._forwarder.add(f"{member.name}:{port_name}", port)

    def _upstreams(self) -> dict[str, str]:
        """Each route (service:port) -> its running task's published address."""
        with self._lock:
            members = list(self._members.values())
        tasks = {name: self._tasks(name) for name in {m.service for m in members}}
        upstreams = {}
        for member in members:
            task = slot_task(tasks[member.service], member.slot)
            if task is None or (task.get("Status") or {}).get("State") != RUNNING:
                continue
            for port_name in member.svc.ports:
                published = published_port(task, self._target_port(member, port_name))
                if published is not None:
                    address = self.topology.address(task.get("NodeID"))
                    upstreams[f"{member.name}:{port_name}"] = f"{address}:{published}"
        return upstreams

    # -- readiness ------------------------------------------------------------------
    def _wait_ready(self, member: _Member, before: str | None,  # type: ignore[override]
                    timeout: float | None = None) -> None:  # fmt: skip
        """Until the slot runs a task of the service's current spec, other than *before* (a
        container id), that passes the readiness check on its own address; StackError
        with its output if it fails or *timeout* (default: the spec's) passes."""
        values = self._values(member.svc)
        first_port = next(iter(member.svc.ports), None)

        def ready() -> bool:
            task = self._slot_task(member)
            if task is None or task_container(task) in (None, before):
                return False
            spec = rollout.inspect_service(self.client.api, member.service)
            if rollout.task_rollout(task) != rollout.rollout_of(spec):
                return False  # a task of the spec being replaced
            address = self._task_endpoint(member, first_port) if first_port else None
            if first_port is not None and address is None:
                return False
            host, port = address if address else (HOST, None)
            return is_ready(member.spec.readiness, host=host, port=port, values=values)

        def exit_code() -> int | None:
            task = self._latest_task(member)
            state = (task or {}).get("Status", {}).get("State")
            if task is None or state not in FAILED or task_container(task) == before:
                return None
            return int(((task["Status"].get("ContainerStatus") or {}).get("ExitCode")) or -1)

        wait_ready(member.name, timeout or member.spec.readiness.timeout, ready=ready,
                   exit_code=exit_code,
                   logs=lambda: self._logs(member, tail=15),
                   give_up=lambda: None)  # fmt: skip  (close() removes the service)
        if self._forwarder is not None:
            self._forwarder.follow()  # the service's address reaches the new task now

    # -- what faults and recovery do to a task ------------------------------------------
    def _inspect(self, svc: _Service) -> dict[str, Any] | None:
        """The container of the service's current task (the Docker backend's operations
        then act on it)."""
        return self._inspect_task(self.task(svc.spec.name))

    def _container(self, service: str) -> str:
        container = task_container(self.task(service))
        if container is None:
            raise StackError(f"service {service!r} has no running task")
        return container

    def container_id(self, service: str) -> str | None:
        return task_container(self.task(service))

    def status(self, service: str) -> str:
        if service not in self._members:
            return "absent"
        info = self._inspect_task(self.task(service))
        return "exited" if info is None else container_status(info)

    def _running(self, service: str) -> tuple[Any, dict[str, Any]]:
        """(the engine API of its node, the container) of the service's running task."""
        task = self.task(service)
        info = self._inspect_task(task)
        if task is None or info is None or not info["State"].get("Running"):
            raise StackError(f"service {service!r} has no running task")
        return self.topology.api_for(task.get("NodeID")), info

    def kill(self, service: str, signal: str = "SIGKILL") -> str:
        sig = parse_signal(signal)
        api, info = self._running(service)
        instance = instance_of(info)
        assert instance is not None
        if not signal_init(info, sig):  # every node of this machine shares our pids
            with engine.engine_errors(f"sending {sig.name} to service {service!r}"):
                api.kill(info["Id"], signal=sig.name)
        return instance

    def pause(self, service: str) -> None:
        api, info = self._running(service)
        with engine.engine_errors(f"pausing service {service!r}"):
            api.pause(info["Id"])

    def resume(self, service: str) -> None:
        api, info = self._running(service)
        with engine.engine_errors(f"resuming service {service!r}"):
            api.unpause(info["Id"])

    def stop(self, service: str, timeout: float | None = None) -> None:
        """Stop the current task's container (Swarm replaces the task: the platform)."""
        grace = self._member(service).spec.stop_timeout if timeout is None else timeout
        if self.status(service) not in ("running", "paused"):
            return
        api, info = self._running(service)
        with engine.engine_errors(f"stopping service {service!r}"):
            api.stop(info["Id"], timeout=math.ceil(grace))

    def netns_pid(self, service: str) -> int:
        return netns_pid_of(self._inspect_task(self.task(service)), f"service {service!r}")

    def restart(self, service: str) -> None:
        """Remove the current task's container if it still runs (hung, or serving damaged
        files); Swarm replaces the task; wait until the replacement is ready."""
        member = self._member(service)
        group = self._swarm_services[member.service]
        wanted = len(group.members) + len(group.spares)
        if rollout.replicas_of(self.client.api, member.service) < wanted:
            rollout.scale(self.client.api, member.service, wanted)  # scaled down: back up
        if self.fresh_rollout(service):
            # Swarm is replacing the tasks: removing one would count as the rollout's failure.
            # Its new task for this slot gets its grace to be ready, no more.
            self._wait_ready(member, before=None, timeout=rollout.GRACE_S)
            return
        task = self.task(service)
        info = self._inspect_task(task)
        before = task_container(task)
        if task is not None and self.topology.lost(task.get("NodeID")):
            with self._placement_lock:
                if self.replace_elsewhere(member):
                    before = None  # a new slot
        elif info is not None and info["State"].get("Running"):
            self._remove_container(task, service)
        elif task is not None and (task.get("Status") or {}).get("State") in STARTING:
            before = None  # Swarm is already replacing it: that one will do
        self._wait_ready(member, before=before)

    def remove(self, service: str) -> None:
        """Remove the current task's container (forced); Swarm replaces the task."""
        task = self.task(service)
        if task_container(task) is not None:
            self._remove_container(task, service)

    def _remove_container(self, task: dict[str, Any] | None, service: str) -> None:
        container = task_container(task)
        api = self.topology.api_for((task or {}).get("NodeID"))
        if container is None or api is None:
            return  # no container, or its node is lost with it
        self._save_logs(container, service)
        try:
            with engine.engine_errors(f"removing the container of service {service!r}"):
                api.remove_container(container, force=True)
        except BackendError as e:
            if not engine.is_not_found(e):
                raise

    # -- rollouts and scale -----------------------------------------------------------
    def scale(self, service: str, replicas: int) -> int:
        """Set the replica count of *service*'s Swarm service; returns the old count.
        Scaling down ends the highest slots' tasks first; :meth:`restart` of a replica
        whose slot is gone scales the service back to the stack's count."""
        return rollout.scale(self.client.api, self._member(service).service, replicas)

    def roll_out(self, service: str, rollout_id: str, *, args: tuple[str, ...] = (),
                 mounts: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:  # fmt: skip
        """Update the Swarm service *service* belongs to (every replica: Swarm rolls it
        out task by task, see :mod:`chaoskit.stack.swarm_rollout`); returns immediately."""
        member = self._member(service)
        return rollout.roll_out(self.client.api, member.service, rollout_id, args=args,
                                mounts=mounts)  # fmt: skip

    def rollout_of(self, service: str) -> str | None:
        """The chaoskit rollout the service's spec carries now (None: its own spec)."""
        return rollout.rollout_of(rollout.inspect_service(self.client.api,
                                                          self._member(service).service))

    def fresh_rollout(self, service: str) -> str | None:
        """The rollout that is the suspect when *service* fails (see
        :func:`swarm_rollout.fresh_rollout`)."""
        return rollout.fresh_rollout(self.client.api, self._member(service).service)

    def suspect_rollout(self, service: str) -> str | None:
        """The rollout to blame when *service* fails: a fresh one whose task the replica
        runs, once that task has started (a new task still starting gets its grace); or
        the one Swarm is rolling back itself.  None: a restart is the repair."""
        member = self._member(service)
        info = rollout.inspect_service(self.client.api, member.service)
        if (info.get("UpdateStatus") or {}).get("State") == "rollback_started":
            return rollout.rollout_of({"Spec": info.get("PreviousSpec") or info["Spec"]})
        fresh = rollout.fresh_rollout(self.client.api, member.service)
        task = self.task(service)
        if fresh is None or task is None or rollout.task_rollout(task) != fresh:
            return None
        return None if (task.get("Status") or {}).get("State") in STARTING else fresh

    def update_state(self, service: str) -> str | None:
        """Swarm's state of the last update of *service*'s Swarm service ("updating",
        "completed", "rollback_completed" …; None: never updated)."""
        info = rollout.inspect_service(self.client.api, self._member(service).service)
        return (info.get("UpdateStatus") or {}).get("State")

    def roll_back(self, service: str) -> bool:
        """Re-apply the previous spec of *service*'s Swarm service if a chaoskit rollout is
        in force, and wait until every replica runs it and is ready; False when nothing
        was rolled out."""
        rolled_back = rollout.roll_back(self.client.api, self._member(service).service)
        self.await_replicas(service)
        return rolled_back

    def await_replicas(self, service: str) -> None:
        """Until every replica of *service*'s Swarm service runs its current spec, ready."""
        member = self._member(service)
        for name in self._swarm_services[member.service].members:
            self._wait_ready(self._members[name], before=None)

    # not for swarm tasks: Swarm owns their containers and their network attachments
    restart_in_place = None  # type: ignore[assignment]
    disconnect = None  # type: ignore[assignment]
    connect = None  # type: ignore[assignment]

    def logs(self, service: str, tail: int = 50) -> str:
        return self._logs(self._member(service), tail)

    def _logs(self, member: _Member, tail: int) -> str:
        service = member.name
        task = self._latest_task(member)
        container = task_container(task)
        if container is not None and self._inspect_task(task) is not None:
            assert task is not None
            with engine.engine_errors(f"reading the logs of service {service!r}"):
                raw = self.topology.api_for(task.get("NodeID")).logs(container, tail=tail)
            return str(raw.decode(errors="replace")).rstrip("\n")
        log = self.run_dir / "logs" / f"{service}.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return "\n".join(lines[-tail:])

    def close(self) -> None:
        """Stop the forwarder, save the logs, remove every service, network, volume and
        secret and the nodes added, and leave the swarm if this run initialised it."""
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            forwarder.close()  # outside the lock: its follower takes it
        with self._lock:
            for name in self._members:
                with contextlib.suppress(BackendError):  # its service may be gone already
                    container = self.container_id(name)
                    if container is not None:
                        self._save_logs(container, name)
            super().close()
            self._members.clear()
            self._swarm_services.clear()
            self.topology.close()
            if self.initialised_swarm:
                swarm_mode.leave_if_ours(self.client)

