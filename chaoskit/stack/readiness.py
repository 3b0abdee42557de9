"""Readiness checks shared by the backends: "is the service ready yet?" and the wait loop.

Both backends reach a service's first port from the host (a process listens there, a
container publishes there), so one HTTP probe and one wait loop serve both; only how a
backend learns that the service died differs, and that is passed in.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from chaoskit.errors import StackError
from chaoskit.stack.service import Readiness

POLL = 0.02


def http_ok(host: str, port: int, path: str, timeout: float = 1.0) -> bool:
    """True when GET http://host:port/path answers 200; any failure is "not yet"."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def is_ready(
    readiness: Readiness, *, host: str, port: int | None, values: Mapping[str, object]
) -> bool:
    """Apply *readiness*: the file exists (placeholders from *values*) and the HTTP path answers."""
    if readiness.file and not Path(readiness.file.format(**values)).exists():
        return False
    if readiness.http_path and port is not None:
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
