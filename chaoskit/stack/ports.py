"""Free-port selection, port-in-use checks and endpoints of services on this host."""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping

from chaoskit.errors import StackError

HOST = "127.0.0.1"
"""Where a backend's services are reached from this host (published there, if containers)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int, *, what: str) -> None:
    """Raise StackError naming *what* and the port when something already listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise StackError(f"{what}: port {host}:{port} is already in use") from e
            raise StackError(f"{what}: cannot use port {host}:{port}: {e.strerror}") from e


def allocate_ports(service: str, wanted: Mapping[str, int]) -> dict[str, int]:
    """The ports of *service*: a fixed one if free (else StackError), a free one for 0."""
    ports = {}
    for name, port in wanted.items():
        if port:
            ensure_port_free(HOST, port, what=f"service {service!r}")
        ports[name] = port or free_port(HOST)
    return ports


def endpoint_in(ports: Mapping[str, int], service: str, port: str) -> tuple[str, int]:
    """(HOST, number) of the port named *port*; StackError when the service has none."""
    if port not in ports:
        raise StackError(f"service {service!r} has no port named {port!r}")
    return HOST, ports[port]
