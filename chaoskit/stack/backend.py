"""The Backend protocol: everything faults and the DR engine may do to a service.

``process`` (local processes, the embedded default), ``docker`` (containers) and
``swarm`` (Docker Swarm services) implement it, so every experiment runs on each.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from chaoskit.stack.service import ServiceSpec

BACKENDS = ("process", "docker", "swarm")


@runtime_checkable
class Backend(Protocol):
    name: str

    def start(self, spec: ServiceSpec) -> None:
        """Start the service and return once its readiness check passes."""

    def stop(self, service: str, timeout: float | None = None) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after *timeout*)."""

    def kill(self, service: str, signal: str = "SIGKILL") -> str:
        """Send *signal*; returns the instance (pid, container id) that received it."""

    def pause(self, service: str) -> None:
        """Freeze the service: alive, but not answering."""

    def resume(self, service: str) -> None:
        """Undo :meth:`pause`."""

    def restart(self, service: str) -> None:
        """Kill whatever is left of the service and start it again; waits until ready."""

    def instance(self, service: str) -> str | None:
        """What runs the service now (pid, container id); None when nothing runs."""

    def status(self, service: str) -> str:
        """One of "running", "paused", "exited", "absent"."""

    def endpoint(self, service: str, port: str) -> tuple[str, int]:
        """Host and port where clients reach *port* of *service*."""

    def logs(self, service: str, tail: int = 50) -> str:
        """The last *tail* lines of the service's output."""

    def close(self) -> None:
        """Stop every service this backend started; nothing may be left behind."""
