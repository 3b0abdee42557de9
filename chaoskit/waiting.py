"""Wait on a condition with a timeout — the alternative to sleep-and-hope."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.02, what: str = ""
) -> T:
    """Poll *condition* until it returns a truthy value and return that value.

    Raises TimeoutError naming *what* (or the condition) when *timeout* seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or repr(condition)} not reached within {timeout:g}s")
        time.sleep(interval)
