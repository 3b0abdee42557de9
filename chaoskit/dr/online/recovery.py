"""Recovery actions (runbooks): act on the stack, then confirm the steady state.

Each action journals ``recovery.started``, then ``recovered`` and ``steady_state.ok``
once canary predictions are correct again, or ``recovery.failed`` with the reason.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.online.steady_state import check_steady_state
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
        """Restart *service*; ``background``: clients are already served by another replica.

        On an orchestrator that is rolling the service out (or just did), the new spec is
        the suspect when the replica's task of it fails: a restart would start it again,
        so the rollout is rolled back instead (see :meth:`_suspect_rollout`).
        """
        deadline = time.monotonic() + self.timeout
        suspect = self._suspect_rollout(service)
        if suspect is None:
            restarted, suspect = self._restart(service, background)
            if not restarted:
                return False
        by: dict[str, str] = {}
        if suspect is not None:
            rolled_back = self._roll_back(service, suspect, background)
            if rolled_back is None:
                return False
            by = {} if rolled_back else {"recovered_by": "platform"}  # it rolled back first
        action = self.name if suspect is None else "rollback"
        self.journal.record("recovered", action=action, service=service, **by)
        # behind a failover the gateway's canary is answered by another replica: wait for
        # this one's own answer, or the engine re-detects it while its model still loads
        # and restarts it again (a restart loop)
        client = (
            self.stack.direct_client(service, timeout=2.0)  # type: ignore[attr-defined]
            if background
            else self.client
        )
        return confirm_steady_state(
            client, self.goldens, self.journal, timeout=max(0.0, deadline - time.monotonic())
        )

    def _restart(self, service: str, background: bool) -> tuple[bool, str | None]:
        """(restarted or not, the rollout to blame instead: its new task never got ready,
        or is ready and answers wrongly)."""
        self.journal.record("recovery.started", action=self.name, service=service,
                            background=background)  # fmt: skip
        try:
            self.stack.backend.restart(service)  # type: ignore[attr-defined]
        except ChaosKitError as e:
            suspect = self._suspect_rollout(service)
            if suspect is None:
                self.journal.record("recovery.failed", action=self.name, service=service,
                                    reason=str(e))  # fmt: skip
            return suspect is not None, suspect
        suspect = self._suspect_rollout(service)
        if suspect is not None and check_steady_state(
                self.stack.direct_client(service, timeout=2.0),  # type: ignore[attr-defined]
                self.goldens, timeout=2.0).ok:  # fmt: skip
            suspect = None  # the rollout's new task serves right: nothing to blame
        return True, suspect

    def _roll_back(self, service: str, rollout: str, background: bool) -> bool | None:
        """Roll *rollout* back: True when chaoskit did, False when the orchestrator had
        already, None when it failed."""
        self.journal.record("recovery.started", action="rollback", service=service,
                            background=background, rollout=rollout)  # fmt: skip
        try:
            return bool(self.stack.backend.roll_back(service))  # type: ignore[attr-defined]
        except ChaosKitError as e:
            self.journal.record("recovery.failed", action="rollback", service=service,
                                reason=str(e))  # fmt: skip
            return None

    def _suspect_rollout(self, service: str) -> str | None:
        """The rollout whose task *service* runs, if the backend rolls out (Swarm) and the
        rollout is fresh: under way, just done, or being rolled back by the orchestrator."""
        suspect = getattr(self.stack.backend, "suspect_rollout", None)  # type: ignore[attr-defined]
        if not callable(suspect):
            return None
        try:
            found: str | None = suspect(service)
        except ChaosKitError:
            return None  # cannot tell: a restart is still the right first move
        return found


class ObservePlatform:
    """``recovery = "observe"``: chaoskit does not act; it waits for the platform (a Docker
    restart policy, an orchestrator, a supervisor) to bring the service back.

    Recovery is confirmed when the failed replica itself answers its canary correctly
    again (asked through its own link, as the gateway reaches it), so a dead standby is
    not "recovered" just because the primary serves.  The journal says who recovered
    (``recovered_by="platform"``) and, when nothing did within ``timeout``, says so.
    """

    name = "observe"

    def __init__(
        self, stack: Any, goldens: Goldens, journal: Journal, *, timeout: float = 90.0
    ) -> None:
        self.stack = stack
        self.goldens = goldens
        self.journal = journal
        self.timeout = timeout

    def run(self, service: str) -> bool:
        self.journal.record("recovery.started", action=self.name, service=service)
        client = self.stack.replica_client(service, timeout=2.0)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if check_steady_state(client, self.goldens, timeout=2.0).ok:
                self.journal.record("recovered", action=self.name, service=service,
                                    recovered_by="platform")  # fmt: skip
                return confirm_steady_state(client, self.goldens, self.journal, timeout=5.0)
            time.sleep(0.05)
        self.journal.record(
            "recovery.failed", action=self.name, service=service,
            reason=f"nothing recovered {service} within {self.timeout:g}s (recovery = observe: "
            "chaoskit only watched)",
        )  # fmt: skip
        return False
