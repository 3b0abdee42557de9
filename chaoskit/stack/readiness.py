"""Readiness checks shared by the backends: "is the service ready yet?" and the wait loop.

Both backends reach a service's first port from the host (a process listens there, a
container publishes there), so one HTTP probe and one wait loop serve both; only how a
backend learns that the service died differs, and that is passed in.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from chaoskit.errors import StackError
from chaoskit.model import version_dirs
from chaoskit.stack.service import Readiness

POLL = 0.02


def http_ok(host: str, port: int, path: str, timeout: float = 1.0) -> bool:
    """True when GET http://host:port/path answers 200; any failure is "not yet"."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when host:port accepts a TCP connection."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def model_available(host: str, port: int, model: str, timeout: float = 1.0) -> bool:
    """True when TF Serving's status of *model* lists a version in state AVAILABLE (the
    status endpoint answers 200 while a version is still LOADING, so 200 is not enough)."""
    from chaoskit.serving.client import ServingClient

    return ServingClient(host, port, model, timeout=timeout).available_version() is not None


def is_ready(
    readiness: Readiness, *, host: str, port: int | None, values: Mapping[str, object]
) -> bool:
    """Apply *readiness*: every kind it names holds (placeholders from *values*)."""
    if readiness.file and not Path(readiness.file.format(**values)).exists():
        return False
    if readiness.version_in and not version_dirs(readiness.version_in):
        return False
    if port is None:
        return True
    if readiness.tcp and not tcp_open(host, port):
        return False
    if readiness.model_status and not model_available(host, port, readiness.model_status):
        return False
    if readiness.http_path:
        return http_ok(host, port, readiness.http_path)
    return True


def wait_ready(
    name: str,
    timeout: float,
    *,
    ready: Callable[[], bool],
    exit_code: Callable[[], int | None],
    logs: Callable[[], str],
    give_up: Callable[[], None],
) -> None:
    """Poll *ready* until it holds; StackError with the last output if the service exits
    (``exit_code`` returns an int) or *timeout* passes (then ``give_up`` stops it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = exit_code()
        if code is not None:
            raise StackError(
                f"service {name!r} exited with code {code} before it was ready; "
                f"last output:\n{logs()}"
            )
        if ready():
            return
        time.sleep(POLL)
    give_up()
    raise StackError(f"service {name!r} was not ready within {timeout:g}s; last output:\n{logs()}")
