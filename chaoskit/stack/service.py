"""What a service of a stack is: a command (or image), its ports and how to tell it is ready."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from chaoskit.errors import ConfigError


@dataclass(frozen=True)
class Readiness:
    """How a backend knows a service is ready.

    ``http_path``: GET on the service's first port answers 200.  ``file``: a path that
    exists (placeholders allowed).  ``tcp``: the first port accepts a connection.
    ``model_status``: TF Serving's status of this model shows a version AVAILABLE on the
    first port (its REST port).  ``version_in``: this model base path holds a version.
    Every kind given must hold.  ``timeout``: seconds before start gives up.
    """

    http_path: str | None = None
    file: str | None = None
    tcp: bool = False
    model_status: str | None = None
    version_in: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class ServiceSpec:
    """One service.  ``command`` may use ``{port_<name>}``, ``{run_dir}``, ``{data_dir}`` and
    ``{bind_host}`` (the address to listen on: 127.0.0.1 for processes, 0.0.0.0 in containers).

    ``ports`` maps a port name to a fixed port number, or to 0 for "choose a free one at
    first start" (kept across restarts so clients and proxies keep working).
    """

    name: str
    command: tuple[str, ...]
    ports: Mapping[str, int] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    readiness: Readiness = field(default_factory=Readiness)
    image: str | None = None
    stop_timeout: float = 5.0
    cwd: str | None = None
    """Working directory of a process (the stack file's directory for a user's stack)."""
    secrets: tuple[str, ...] = ()
    """Files holding secrets the service reads (a token): an orchestrator gives them as
    its secrets, at the same paths; other backends leave them where they are."""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"service name {self.name!r} must be letters, digits, - or _")
        if not self.command and self.image is None:
            raise ConfigError(f"service {self.name!r} has no command (and no image to run)")
        for port_name, port in self.ports.items():
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise ConfigError(
                    f"service {self.name!r}: port {port_name}={port!r} is not 0..65535"
                )
        object.__setattr__(self, "ports", MappingProxyType(dict(self.ports)))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def render(self, values: Mapping[str, object]) -> list[str]:
        """The command with its placeholders filled in."""
        try:
            return [part.format(**values) for part in self.command]
        except (KeyError, IndexError) as e:
            raise ConfigError(f"service {self.name!r}: unknown placeholder {e} in command") from e
