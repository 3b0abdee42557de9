"""The Docker backend: every service is a container on the run's own bridge network.

Layout of a run (project ``chaoskit-<run>-<hash of run_dir>``, all objects labelled, see
:mod:`chaoskit.stack.docker_engine`):

* one user-defined bridge network named after the project; each container joins it with
  its service name as alias, so services reach each other by name, and a network
  partition is ``network disconnect`` (undone by ``connect``); a firewall partition
  enters the container's own network namespace instead (``netns_pid``);
* containers ``<project>-<service>``, run with ``--init`` so a graceful stop reaches the
  service, and as the calling user so files they write stay the user's;
* ports: a spec port keeps the process backend's meaning (0 = a free host port chosen at
  first start and kept across restarts).  The container listens on the *same number*
  and publishes it on 127.0.0.1, so ``{port_<name>}`` means one thing inside and out and
  the reference stack's commands need no change;
* files: ``data_dir`` and ``run_dir`` are bind-mounted at their own absolute paths, so
  the commands' host paths work unchanged, the journal is shared, and storage faults act
  on the files from the host.  On top, the model store, the checkpoints, the backup
  repository and the DR site are named volumes (``<project>-models`` …, local driver
  bound to ``data_dir/<name>``): Docker objects a user can see and inspect, removed with
  the run, while the data stays reachable from the host at the same paths;
* image: ``spec.image``, else the backend's ``image``, else the offline host-environment
  image (:mod:`chaoskit.stack.docker_image`) with the host's Python bind-mounted.  With
  your own image pass ``python=`` to replace the host interpreter path in commands.

Recovery (``restart``) replaces the container by a new one from the same spec (a new
id); ``restart_mode="in_place"`` restarts the same container instead.  Docker's own
restart policy is not set (``restart_policy=`` exists for the benchmark's baseline
only): the DR engine does the recovering.  ``kill`` signals the container's init
directly when the engine shares our pid namespace, like a crash (see
:func:`signal_init`); to the engine that is an unexpected exit, as for an OOM kill.
:class:`~chaoskit.stack.docker_attach.DockerAttachBackend` targets containers the user
started.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoskit.errors import BackendError, ConfigError, StackError
from chaoskit.journal import JOURNAL_ENV
from chaoskit.stack import docker_engine as engine
from chaoskit.stack.docker_engine import (  # re-exported: part of this backend's API
    container_status,
    instance_of,
    netns_pid_of,
    project_name,
    signal_init,
)
from chaoskit.stack.ports import HOST, allocate_ports, endpoint_in
from chaoskit.stack.process import parse_signal
from chaoskit.stack.readiness import is_ready, wait_ready
from chaoskit.stack.service import ServiceSpec

BIND_HOST = "0.0.0.0"
"""What ``{bind_host}`` renders to: in its own network namespace a container must listen on
all its interfaces for the published port to reach it (the process backend: 127.0.0.1)."""
VOLUMES = ("models", "checkpoints", "backups", "dr-site")
RESTART_MODES = ("replace", "in_place")
CPU_PERIOD_US = 100_000


def user_of_this_process() -> str:
    """``uid:gid`` of this process: containers run as it, so the files they write stay ours."""
    return f"{os.getuid()}:{os.getgid()}"


def _remove_quietly(client: Any, project: str) -> None:
    """The finalizer's cleanup: at interpreter exit an unreachable engine is not worth a trace."""
    try:
        engine.remove_project(client, project)
    except BackendError:
        pass


@dataclass
class _Service:
    spec: ServiceSpec
    ports: dict[str, int]
    image: str
    container: str | None = None  # id


class DockerBackend:
    """Runs services as containers; see the module docstring for the layout."""

    name = "docker"
    network_options: dict[str, Any] = {"driver": "bridge"}

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        data_dir: str | os.PathLike[str],
        *,
        image: str | None = None,
        python: str | None = None,
        project: str | None = None,
        base_url: str | None = None,
        restart_mode: str = "replace",
        volumes: bool = True,
        pull: bool = False,
        restart_policy: str | None = None,
    ) -> None:
        if restart_mode not in RESTART_MODES:
            raise ConfigError(f"restart_mode {restart_mode!r}: choose from {RESTART_MODES}")
        self.run_dir = Path(run_dir).absolute()
        self.data_dir = Path(data_dir).absolute()
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.client = engine.connect(base_url)
        self.url = engine.engine_url(base_url)
        self.reaped = engine.reap_orphans(self.client)
        self.project = project or project_name(self.run_dir)
        self.image, self.python, self.pull = image, python, pull
        self.restart_mode, self.use_volumes = restart_mode, volumes
        self.restart_policy = restart_policy  # a baseline for benchmarks; the DR engine sets none
        self._services: dict[str, _Service] = {}
        self._checked_images: set[str] = set()
        self._network: str | None = None
        self._volumes: dict[str, str] = {}
        self._lock = threading.RLock()
        self._finalizer = self._arm_finalizer()

    def _arm_finalizer(self) -> weakref.finalize:  # type: ignore[type-arg]
        """Remove the project's objects at garbage collection or interpreter exit at the latest."""
        return weakref.finalize(self, _remove_quietly, self.client, self.project)

    # -- shared objects -------------------------------------------------------------
    @property
    def network(self) -> str:
        """The stack network's name (created at the first start)."""
        return self.project

    def _ensure_network(self) -> None:
        if self._network:
            return
        api = self.client.api
        with engine.engine_errors(f"looking up network {self.network!r}"):
            existing = api.networks(names=[self.network])
        for net in existing:
            if net["Name"] == self.network:
                self._check_ours(net.get("Labels") or {}, f"network {self.network!r}")
                self._network = net["Id"]
                return
        with engine.engine_errors(f"creating network {self.network!r}"):
            created = api.create_network(
                self.network, labels=engine.labels_for(self.project), **self.network_options
            )
        self._network = created["Id"]

    def _ensure_volumes(self) -> None:
        if not self.use_volumes or self._volumes:
            return
        for key in VOLUMES:
            path = self.data_dir / key
            path.mkdir(parents=True, exist_ok=True)
            name = f"{self.project}-{key}"
            with engine.engine_errors(f"creating volume {name!r}"):
                self.client.api.create_volume(
                    name,
                    driver="local",
                    labels=engine.labels_for(self.project),
                    driver_opts={"type": "none", "o": "bind", "device": str(path)},
                )
            self._volumes[key] = name

    def volume(self, key: str) -> str:
        """The Docker volume holding ``data_dir/<key>`` (models, checkpoints, backups, dr-site)."""
        if key not in self._volumes:
            raise StackError(f"no volume {key!r} in this stack (volumes: {list(self._volumes)})")
        return self._volumes[key]

    def _check_ours(self, labels: dict[str, str], what: str) -> None:
        if labels.get(engine.MANAGED) != "1":
            raise BackendError(
                f"{what} already exists and chaoskit does not own it; remove or rename it, "
                f"or give this backend another project name"
            )
        if labels.get(engine.PROJECT) != self.project or (
            labels.get(engine.OWNER) != engine.owner_label()
            and engine.owner_alive(labels.get(engine.OWNER, ""))
        ):
            raise BackendError(
                f"{what} belongs to another live chaoskit run (owner "
                f"{labels.get(engine.OWNER)}); choose another project name"
            )

    def ensure_image(self, image: str) -> None:
        """BackendError naming *image* when the engine does not have it (and may not pull)."""
        import docker.errors

        if image in self._checked_images:
            return
        try:
            self.client.api.inspect_image(image)
        except docker.errors.ImageNotFound as e:
            if not self.pull:
                raise BackendError(
                    f"image {image!r} is not on the Docker engine at {self.url}; load or build "
                    f"it there first (chaoskit pulls only with pull=True)"
                ) from e
            with engine.engine_errors(f"pulling image {image!r}"):
                self.client.api.pull(image)
        except docker.errors.DockerException as e:
            raise BackendError(f"cannot inspect image {image!r}: {e}") from e
        self._checked_images.add(image)

    # -- lifecycle ------------------------------------------------------------------
    def start(self, spec: ServiceSpec) -> None:
        with self._lock:
            svc = self._services.get(spec.name)
            if svc is not None and self.status(spec.name) in ("running", "paused"):
                raise StackError(f"service {spec.name!r} is already running")
            if svc is None:
                image = spec.image or self.image
                if image is None:
                    from chaoskit.stack.docker_image import ensure_image

                    image = ensure_image(self.client)
                self.ensure_image(image)
                svc = _Service(spec, allocate_ports(spec.name, spec.ports), image)
                self._services[spec.name] = svc
            self._ensure_network()
            self._ensure_volumes()
            self._launch(svc)
        self._wait_ready(svc)

    def _values(self, svc: _Service) -> dict[str, object]:
        values: dict[str, object] = {f"port_{k}": v for k, v in svc.ports.items()}
        values.update(run_dir=str(self.run_dir), data_dir=str(self.data_dir), bind_host=BIND_HOST)
        return values

    @staticmethod
    def _hostenv(svc: _Service) -> bool:
        from chaoskit.stack.docker_image import REPOSITORY

        return svc.image.startswith(REPOSITORY + ":")

    def _mounts(self, svc: _Service) -> list[Any]:
        from docker.types import Mount

        from chaoskit.stack import docker_image

        mounts = []
        if self._hostenv(svc):
            mounts += [Mount(p, p, type="bind", read_only=True) for p in docker_image.host_paths()]
        shared = {str(self.run_dir), str(self.data_dir)}
        journal = svc.spec.env.get(JOURNAL_ENV)
        if journal:
            shared.add(str(Path(journal).absolute().parent))
        mounts += [Mount(p, p, type="bind") for p in sorted(shared)]
        if svc.spec.cwd and svc.spec.cwd not in shared:  # a stack file's directory: its code
            mounts.append(Mount(svc.spec.cwd, svc.spec.cwd, type="bind", read_only=True))
        return mounts + [self._volume_mount(key, name) for key, name in self._volumes.items()]

    def _volume_mount(self, key: str, name: str) -> Any:
        from docker.types import Mount

        return Mount(str(self.data_dir / key), name, type="volume")

    def _command(self, svc: _Service) -> list[str] | None:
        """The rendered command; None: the image's own (a user's image, e.g. TF Serving's)."""
        command: list[str] | None = svc.spec.render(self._values(svc)) or None
        if self.python and command and command[0] == sys.executable:
            command[0] = self.python
        return command

    def _env(self, svc: _Service) -> dict[str, str]:
        env = {"TF_CPP_MIN_LOG_LEVEL": "2", "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
        if self._hostenv(svc) and os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]  # the host's environment, all of it
        env.update(svc.spec.env)
        return env

    def _workdir(self, svc: _Service) -> str | None:
        return svc.spec.cwd or ("/tmp" if self._hostenv(svc) else None)

    def _launch(self, svc: _Service) -> None:
        """Create and start a fresh container for *svc* (the old one must be gone)."""
        spec, api = svc.spec, self.client.api
        name = f"{self.project}-{spec.name}"
        self._claim_name(name)
        command, env = self._command(svc), self._env(svc)
        host_config = api.create_host_config(
            init=True,
            mounts=self._mounts(svc),
            port_bindings={p: (HOST, p) for p in svc.ports.values()},
            restart_policy={"Name": self.restart_policy} if self.restart_policy else None,
        )
        networking = api.create_networking_config(
            {self.network: api.create_endpoint_config(aliases=[spec.name])}
        )
        with engine.engine_errors(f"creating container {name!r} from image {svc.image!r}"):
            created = api.create_container(
                svc.image,
                command,
                name=name,
                environment=env,
                working_dir=self._workdir(svc),
                user=user_of_this_process(),
                ports=list(svc.ports.values()),
                labels=engine.labels_for(self.project, spec.name),
                host_config=host_config,
                networking_config=networking,
            )
        svc.container = created["Id"]
        with engine.engine_errors(f"starting container {name!r}"):
            api.start(svc.container)

    def _claim_name(self, name: str) -> None:
        """Make *name* free: remove our own stale container, refuse anyone else's."""
        import docker.errors

        try:
            info = self.client.api.inspect_container(name)
        except docker.errors.NotFound:
            return
        self._check_ours(info["Config"].get("Labels") or {}, f"container {name!r}")
        self._save_logs(info["Id"], name.removeprefix(self.project + "-"))
        with engine.engine_errors(f"removing old container {name!r}"):
            self.client.api.remove_container(info["Id"], force=True)

    def _inspect(self, svc: _Service) -> dict[str, Any] | None:
        import docker.errors

        if svc.container is None:
            return None
        try:
            with engine.engine_errors(f"inspecting service {svc.spec.name!r}"):
                info: dict[str, Any] = self.client.api.inspect_container(svc.container)
                return info
        except BackendError as e:
            if isinstance(e.__cause__, docker.errors.NotFound):
                return None
            raise

    def _wait_ready(self, svc: _Service) -> None:
        def exit_code() -> int | None:
            info = self._inspect(svc)
            if info is None:
                return -1
            return None if info["State"].get("Running") else int(info["State"]["ExitCode"])

        port = next(iter(svc.ports.values()), None)
        values = self._values(svc)
        wait_ready(
            svc.spec.name,
            svc.spec.readiness.timeout,
            ready=lambda: is_ready(svc.spec.readiness, host=HOST, port=port, values=values),
            exit_code=exit_code,
            logs=lambda: self.logs(svc.spec.name, tail=15),
            give_up=lambda: self._kill_quietly(svc),
        )

    def _kill_quietly(self, svc: _Service) -> None:
        import docker.errors

        if svc.container:
            try:
                self.client.api.kill(svc.container)
            except docker.errors.APIError:
                pass  # not running any more: nothing to kill

    def _get(self, service: str) -> _Service:
        try:
            return self._services[service]
        except KeyError:
            known = ", ".join(sorted(self._services)) or "none"
            raise StackError(f"no service {service!r} in this stack (services: {known})") from None

    def _container(self, service: str) -> str:
        svc = self._get(service)
        if svc.container is None:
            raise StackError(f"service {service!r} has no container")
        return svc.container

    def stop(self, service: str, timeout: float | None = None) -> None:
        svc = self._get(service)
        grace = svc.spec.stop_timeout if timeout is None else timeout
        if self.status(service) not in ("running", "paused"):
            return
        with engine.engine_errors(f"stopping service {service!r}"):
            self.client.api.stop(self._container(service), timeout=math.ceil(grace))

    def kill(self, service: str, signal: str = "SIGKILL") -> str:
        sig = parse_signal(signal)
        info = self._inspect(self._get(service))
        instance = instance_of(info)
        if instance is None:
            raise StackError(f"service {service!r} is not running")
        if not signal_init(info, sig):  # type: ignore[arg-type]
            with engine.engine_errors(f"sending {sig.name} to service {service!r}"):
                self.client.api.kill(self._container(service), signal=sig.name)
        return instance

    def pause(self, service: str) -> None:
        with engine.engine_errors(f"pausing service {service!r}"):
            self.client.api.pause(self._container(service))

    def limit_cpu(self, service: str, cpus: float) -> Callable[[], None]:
        """At most *cpus* CPUs for the service's container (``docker update``); returns
        the undo.  A restart replaces the container by one without the limit."""
        container = self._container(service)
        with engine.engine_errors(f"limiting the CPU of service {service!r}"):
            self.client.api.update_container(container, cpu_period=CPU_PERIOD_US,
                                             cpu_quota=max(1000, round(cpus * CPU_PERIOD_US)))

        def lift() -> None:
            import docker.errors

            try:
                with engine.engine_errors(f"lifting the CPU limit of service {service!r}"):
                    self.client.api.update_container(container, cpu_quota=-1)  # -1: none
            except BackendError as e:
                if not isinstance(e.__cause__, docker.errors.NotFound):
                    raise  # gone: a restart replaced it by one without the limit

        return lift

    def limit_memory(self, service: str, limit_bytes: int | None) -> Any:
        """At most *limit_bytes* (None: its usage + a little) for the service's container
        and a balloon exec'd in it until the kernel OOM-kills the service (see
        :mod:`chaoskit.stack.memory_limit`).  A restart replaces it by one without."""
        from chaoskit.stack.memory_limit import DockerMemoryLimit

        svc = self._get(service)
        if self.status(service) != "running":
            raise StackError(f"cannot limit the memory of {service}: it is not running")
        python = self.python or (sys.executable if self._hostenv(svc) else "python3")
        limit = DockerMemoryLimit(self.client, self._container(service), service, limit_bytes,
                                  python=python)  # fmt: skip
        limit.inflate()
        return limit

    def resume(self, service: str) -> None:
        with engine.engine_errors(f"resuming service {service!r}"):
            self.client.api.unpause(self._container(service))

    def restart(self, service: str) -> None:
        """Replace the container by a new one from the same spec (or restart it in place)."""
        if self.restart_mode == "in_place":
            self.restart_in_place(service)
            return
        svc = self._get(service)
        with self._lock:
            self._launch(svc)  # _claim_name removes the old container, whatever its state
        self._wait_ready(svc)

    def restart_in_place(self, service: str) -> None:
        """Kill what is left of the same container and start it again; waits until ready."""
        svc = self._get(service)
        with self._lock:
            container = self._container(service)
            self._kill_quietly(svc)
            with engine.engine_errors(f"restarting service {service!r}"):
                self.client.api.wait(container, timeout=30, condition="not-running")
                self.client.api.start(container)
        self._wait_ready(svc)

    def remove(self, service: str) -> None:
        """Remove the service's container (forced): the service is "absent" afterwards."""
        svc = self._get(service)
        if svc.container is None:
            return
        self._save_logs(svc.container, service)
        with engine.engine_errors(f"removing the container of service {service!r}"):
            self.client.api.remove_container(svc.container, force=True)

    # -- network partition ----------------------------------------------------------
    def disconnect(self, service: str) -> str:
        """Cut the service off the stack network (its published ports go dark too)."""
        container = self._container(service)
        with engine.engine_errors(f"disconnecting service {service!r} from {self.network!r}"):
            self.client.api.disconnect_container_from_network(container, self.network)
        return container

    def connect(self, service: str, container: str | None = None) -> None:
        """Join the service (or a given container of it) to the stack network again."""
        container = container or self._container(service)
        with engine.engine_errors(f"connecting service {service!r} to {self.network!r}"):
            self.client.api.connect_container_to_network(container, self.network, aliases=[service])

    def connected(self, service: str) -> bool:
        info = self._inspect(self._get(service))
        return info is not None and self.network in info["NetworkSettings"]["Networks"]

    def netns_pid(self, service: str) -> int:
        """The pid of the service's container init (to enter its network namespace)."""
        return netns_pid_of(self._inspect(self._get(service)), f"service {service!r}")

    # -- observation ----------------------------------------------------------------
    def container_id(self, service: str) -> str | None:
        """The id of the service's current container (None before the first start)."""
        return self._get(service).container

    def instance(self, service: str) -> str | None:
        return instance_of(self._inspect(self._get(service)))

    def status(self, service: str) -> str:
        svc = self._services.get(service)
        return "absent" if svc is None else container_status(self._inspect(svc))

    def endpoint(self, service: str, port: str) -> tuple[str, int]:
        return endpoint_in(self._get(service).ports, service, port)

    def logs(self, service: str, tail: int = 50) -> str:
        svc = self._get(service)
        if self._inspect(svc) is not None:
            with engine.engine_errors(f"reading the logs of service {service!r}"):
                raw = self.client.api.logs(svc.container, tail=tail)
            return str(raw.decode(errors="replace")).rstrip("\n")
        log = self.run_dir / "logs" / f"{service}.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return "\n".join(lines[-tail:])

    def _save_logs(self, container: str, service: str) -> None:
        """Append a container's output to run_dir/logs/<service>.log before it is removed."""
        import docker.errors

        try:
            raw = self.client.api.logs(container)
        except docker.errors.APIError:
            return
        with open(self.run_dir / "logs" / f"{service}.log", "ab") as out:
            out.write(raw)

    def services(self) -> list[str]:
        return list(self._services)

    def close(self) -> None:
        """Save the logs, then remove every container, the network and the volumes."""
        with self._lock:
            for name, svc in self._services.items():
                if svc.container and self._inspect(svc) is not None:
                    self._save_logs(svc.container, name)
            self._finalizer()
            self._finalizer = self._arm_finalizer()
            self._network = None
            self._volumes.clear()
