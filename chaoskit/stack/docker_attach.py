"""Attach mode: faults and detection on containers the user started (e.g. docker compose).

chaoskit does not own these containers: it never creates or removes them.  Targets are
found by name (or id) or by a label; a label target is looked up again on every call, so
a container recreated by compose is followed.  Recovery uses Docker actions only: restart
is "kill what is left, start the same container again".  ``close()`` undoes what could
still be pending (a pause, a network disconnect) and removes nothing.  Attaching deletes
the firewall rules (see :mod:`chaoskit.stack.netns_firewall`) that a chaoskit run which
died before its revert left in the targets' network namespaces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from signal import SIGKILL
from typing import Any

from chaoskit.errors import BackendError, ConfigError, StackError
from chaoskit.stack import docker_engine as engine
from chaoskit.stack.docker import container_status, instance_of, netns_pid_of, signal_init
from chaoskit.stack.ports import HOST
from chaoskit.stack.process import parse_signal
from chaoskit.stack.readiness import is_ready, wait_ready
from chaoskit.stack.service import Readiness, ServiceSpec


@dataclass(frozen=True)
class AttachTarget:
    """A user's container as a chaoskit service.

    ``container``: name or id; or ``label``: ``key=value`` (exactly one match).  ``ports``:
    port name -> port *inside* the container (e.g. ``{"rest": 8501}`` for TF Serving).
    ``network``: where a partition cuts (default: the container's first network).
    """

    service: str
    container: str | None = None
    label: str | None = None
    ports: Mapping[str, int] = field(default_factory=dict)
    readiness: Readiness = field(default_factory=Readiness)
    network: str | None = None

    def __post_init__(self) -> None:
        if (self.container is None) == (self.label is None):
            raise ConfigError(
                f"attach target {self.service!r}: give exactly one of container= or label="
            )

    def describe(self) -> str:
        return f"container {self.container!r}" if self.container else f"label {self.label!r}"


def find_container(api: Any, target: AttachTarget) -> dict[str, Any]:
    """The container *target* names (inspected): by name or id, or the one container its
    label matches (running ones first); BackendError naming the target if none or several."""
    import docker.errors

    service = target.service
    ident = target.container
    if target.label is not None:
        with engine.engine_errors(f"looking up containers with label {target.label!r}"):
            found = api.containers(all=True, filters={"label": target.label})
        running = [c for c in found if c["State"] in ("running", "paused")] or found
        if len(running) != 1:
            names = ", ".join(n.lstrip("/") for c in running for n in c["Names"][:1])
            raise BackendError(
                f"attach target {service!r}: label {target.label!r} matches "
                f"{len(running)} containers ({names or 'none'}); it must match exactly one"
            )
        ident = running[0]["Id"]
    try:
        info: dict[str, Any] = api.inspect_container(ident)
    except docker.errors.NotFound as e:
        raise BackendError(
            f"attach target {service!r}: {target.describe()} does not exist on the "
            f"Docker engine"
        ) from e
    except docker.errors.DockerException as e:
        raise BackendError(f"attach target {service!r}: cannot inspect it: {e}") from e
    return info


class DockerAttachBackend:
    """The Backend protocol over containers chaoskit does not own."""

    name = "docker-attach"

    def __init__(self, targets: Iterable[AttachTarget], *, base_url: str | None = None) -> None:
        self.targets = {t.service: t for t in targets}
        self.client = engine.connect(base_url)
        self._cut: dict[str, tuple[str, str, list[str]]] = {}  # service -> container, net, aliases
        self._paused: set[str] = set()
        self._lock = threading.RLock()
        for service in self.targets:
            self._find(service)  # a target that does not exist fails here, by name
        self.removed_rules = self._remove_stale_rules()

    def _remove_stale_rules(self) -> dict[str, int]:
        """Delete firewall rules a dead chaoskit run left in the targets' namespaces
        (best effort: a stopped container, a remote engine or no root is no error)."""
        from chaoskit.stack.netns_firewall import remove_stale_rules

        removed = {}
        for service in self.targets:
            try:
                found = remove_stale_rules(self.netns_pid(service))
            except StackError:
                continue
            if found:
                removed[service] = len(found)
        return removed

    # -- finding the containers -------------------------------------------------------
    def _target(self, service: str) -> AttachTarget:
        try:
            return self.targets[service]
        except KeyError:
            known = ", ".join(sorted(self.targets)) or "none"
            raise StackError(f"no service {service!r} attached (services: {known})") from None

    def _find(self, service: str) -> dict[str, Any]:
        """The target's container (inspected); BackendError naming the target if none."""
        return find_container(self.client.api, self._target(service))

    def container_id(self, service: str) -> str | None:
        return str(self._find(service)["Id"])

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, spec: ServiceSpec) -> None:
        """Attach: the container must exist; start it if stopped; wait for readiness."""
        info = self._find(spec.name)
        if not info["State"].get("Running"):
            with engine.engine_errors(f"starting attached service {spec.name!r}"):
                self.client.api.start(info["Id"])
        self._wait_ready(spec.name, spec.readiness)

    def _wait_ready(self, service: str, readiness: Readiness | None = None) -> None:
        readiness = readiness or self._target(service).readiness
        port = next(iter(self._target(service).ports), None)
        host_port = self.endpoint(service, port)[1] if port else None

        def exit_code() -> int | None:
            state = self._find(service)["State"]
            return None if state.get("Running") else int(state["ExitCode"])

        wait_ready(
            service,
            readiness.timeout,
            ready=lambda: is_ready(readiness, host=HOST, port=host_port, values={}),
            exit_code=exit_code,
            logs=lambda: self.logs(service, tail=15),
            give_up=lambda: None,  # not ours to kill
        )

    def stop(self, service: str, timeout: float | None = None) -> None:
        info = self._find(service)
        with engine.engine_errors(f"stopping attached service {service!r}"):
            self.client.api.stop(info["Id"], timeout=int(timeout if timeout is not None else 10))

    def kill(self, service: str, signal: str = "SIGKILL") -> str:
        sig = parse_signal(signal)
        info = self._find(service)
        instance = instance_of(info)
        if instance is None:
            raise StackError(f"attached service {service!r} is not running")
        if not signal_init(info, sig):
            with engine.engine_errors(f"sending {sig.name} to attached service {service!r}"):
                self.client.api.kill(info["Id"], signal=sig.name)
        return instance

    def pause(self, service: str) -> None:
        with engine.engine_errors(f"pausing attached service {service!r}"):
            self.client.api.pause(self._find(service)["Id"])
        self._paused.add(service)

    def resume(self, service: str) -> None:
        with engine.engine_errors(f"resuming attached service {service!r}"):
            self.client.api.unpause(self._find(service)["Id"])
        self._paused.discard(service)

    def restart(self, service: str) -> None:
        """Kill what is left of the same container, start it again, wait until ready."""
        with self._lock:
            info = self._find(service)
            api = self.client.api
            with engine.engine_errors(f"restarting attached service {service!r}"):
                if info["State"].get("Paused"):
                    # a frozen init keeps a SIGKILL pending until it is thawed
                    api.unpause(info["Id"])
                started_at = info["State"].get("StartedAt")
                if info["State"].get("Running") and not signal_init(info, SIGKILL):
                    api.kill(info["Id"])
                # the user's restart policy may start it again first: then it is running
                # with a new StartedAt, and a wait for "not-running" would block
                deadline = time.monotonic() + 30
                state = api.inspect_container(info["Id"])["State"]
                while state.get("Running") and state.get("StartedAt") == started_at:
                    if time.monotonic() > deadline:
                        raise BackendError(f"attached service {service!r} did not stop")
                    time.sleep(0.05)
                    state = api.inspect_container(info["Id"])["State"]
                if not state.get("Running"):
                    api.start(info["Id"])
            self._paused.discard(service)
        self._wait_ready(service)

    restart_in_place = restart

    # -- network partition --------------------------------------------------------------
    def _network(self, service: str, info: dict[str, Any]) -> str:
        networks = info["NetworkSettings"]["Networks"]
        name = self._target(service).network or next(iter(networks), None)
        if name is None:
            raise StackError(f"attached service {service!r} is on no network")
        return str(name)

    def disconnect(self, service: str) -> str:
        """Cut the container off its network, remembering its aliases for the reconnect."""
        info = self._find(service)
        network = self._network(service, info)
        settings = info["NetworkSettings"]["Networks"].get(network) or {}
        aliases = [a for a in settings.get("Aliases") or [] if not info["Id"].startswith(a)]
        with engine.engine_errors(f"disconnecting {service!r} from network {network!r}"):
            self.client.api.disconnect_container_from_network(info["Id"], network)
        self._cut[service] = (info["Id"], network, aliases)
        return str(info["Id"])

    def connect(self, service: str, container: str | None = None) -> None:
        cut = self._cut.pop(service, None)
        info = self._find(service)
        network = cut[1] if cut else self._network(service, info)
        with engine.engine_errors(f"connecting {service!r} to network {network!r}"):
            self.client.api.connect_container_to_network(
                container or info["Id"], network, aliases=cut[2] if cut else None
            )

    def connected(self, service: str) -> bool:
        info = self._find(service)
        cut = self._cut.get(service)
        network = cut[1] if cut else self._network(service, info)
        return network in info["NetworkSettings"]["Networks"]

    def netns_pid(self, service: str) -> int:
        """The pid of the container's init (to enter its network namespace)."""
        return netns_pid_of(self._find(service), f"attached service {service!r}")

    # -- observation --------------------------------------------------------------------
    def instance(self, service: str) -> str | None:
        return instance_of(self._find(service))

    def status(self, service: str) -> str:
        try:
            return container_status(self._find(service))
        except BackendError:
            return "absent"

    def endpoint(self, service: str, port: str) -> tuple[str, int]:
        """The published host port of the container port named *port* (or its bridge IP).

        Looked up on every call: Docker gives a randomly published port a new number when
        the container restarts, so clients must ask again (or the user publishes fixed ports).
        """
        target = self._target(service)
        if port not in target.ports:
            raise StackError(f"attached service {service!r} has no port named {port!r}")
        inner = target.ports[port]
        info = self._find(service)
        bindings = (info["NetworkSettings"].get("Ports") or {}).get(f"{inner}/tcp") or []
        for binding in bindings:
            host = binding.get("HostIp") or "0.0.0.0"
            if ":" not in host:  # IPv4 (the IPv6 twin is skipped)
                return (HOST if host == "0.0.0.0" else host), int(binding["HostPort"])
        for settings in info["NetworkSettings"]["Networks"].values():
            if settings.get("IPAddress"):
                return str(settings["IPAddress"]), inner
        raise StackError(f"attached service {service!r}: port {inner} is not reachable")

    def logs(self, service: str, tail: int = 50) -> str:
        with engine.engine_errors(f"reading the logs of attached service {service!r}"):
            raw = self.client.api.logs(self._find(service)["Id"], tail=tail)
        return str(raw.decode(errors="replace")).rstrip("\n")

    def services(self) -> list[str]:
        return list(self.targets)

    def close(self) -> None:
        """Undo a pending pause or partition; remove nothing (the containers are the user's)."""
        for service in list(self._paused):
            if self.status(service) == "paused":
                self.resume(service)
        self._paused.clear()
        for service, (container, _, _) in list(self._cut.items()):
            if self.status(service) != "absent" and not self.connected(service):
                self.connect(service, container)
        self._cut.clear()
