"""Recovery actions (runbooks): act on the stack, then confirm the steady state.

Each action journals ``recovery.started``, then ``recovered`` and ``steady_state.ok``
once canary predictions are correct again, or ``recovery.failed`` with the reason.
"""

from __future__ import annotations

import time
from typing import Protocol

from chaoskit.dr.goldens import Goldens
from chaoskit.dr.steady_state import check_steady_state
from chaoskit.errors import ChaosKitError
from chaoskit.journal import Journal
from chaoskit.serving.client import ServingClient


class RecoveryAction(Protocol):
    name: str

    def run(self, service: str) -> bool:
        """Bring *service* back; True once the steady state is confirmed."""


def confirm_steady_state(
    client: ServingClient,
    goldens: Goldens,
    journal: Journal,
    *,
    timeout: float,
    interval: float = 0.05,
    phase: str = "recovery",
) -> bool:
    """Poll the canary until it is correct (journal steady_state.ok) or *timeout* passes."""
    deadline = time.monotonic() + timeout
    result = check_steady_state(client, goldens, timeout=min(2.0, timeout))
    while not result.ok and time.monotonic() < deadline:
        time.sleep(interval)
        result = check_steady_state(client, goldens, timeout=min(2.0, timeout))
    if result.ok:
        journal.record(
            "steady_state.ok",
            phase=phase,
            version=result.version,
            max_abs_error=result.max_abs_error,
        )
    else:
        journal.record("steady_state.violated", phase=phase, reason=result.reason)
    return result.ok


class RestartService:
    """Restart the failed service (kill what is left, start it again, wait until ready)."""

    name = "restart"

    def __init__(
        self,
        stack: object,
        client: ServingClient,
        goldens: Goldens,
        journal: Journal,
        *,
        timeout: float = 90.0,
    ) -> None:
        self.stack = stack
        self.client = client
        self.goldens = goldens
        self.journal = journal
        self.timeout = timeout

    def run(self, service: str, *, background: bool = False) -> bool:
        """Restart *service*; ``background``: clients are already served by another replica."""
        self.journal.record(
            "recovery.started", action=self.name, service=service, background=background
        )
        deadline = time.monotonic() + self.timeout
        try:
            self.stack.backend.restart(service)  # type: ignore[attr-defined]
        except ChaosKitError as e:
            self.journal.record("recovery.failed", action=self.name, service=service, reason=str(e))
            return False
        self.journal.record("recovered", action=self.name, service=service)
        return confirm_steady_state(
            self.client, self.goldens, self.journal, timeout=max(0.0, deadline - time.monotonic())
        )
