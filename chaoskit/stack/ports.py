"""Free-port selection and port-in-use checks for services on this host."""

from __future__ import annotations

import errno
import socket

from chaoskit.errors import StackError


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
