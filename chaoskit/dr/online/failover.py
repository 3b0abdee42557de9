"""Failover between serving replicas, then repair, then failback.

When a replica's probes fail, it is taken out of the gateway's rotation (no client
request is retried there) and the gateway is moved to a healthy replica first (service
is back as soon as the gateway answers its canary), then the failed replica is repaired
in the background of the client's view: restarted if its process is dead, hung or
answering wrongly, left alone if only its link is broken (a restart cannot heal a
network).  Once it has answered ``heal_after`` probes in a row again it is ``healed``
(journaled: nothing else confirms a replica repaired behind a failover), and the gateway
moves back to the primary replica — unless another detector still holds it (the learned
monitor sees degradations the probes pass, so it decides when those have healed).
"""

from __future__ import annotations

import threading
from typing import Any

from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.online.probe import probe_predict
from chaoskit.dr.online.recovery import RestartService, confirm_steady_state
from chaoskit.journal import Journal

FAILOVER_CONFIRM_S = 5.0
"""Seconds the replica failed over to gets to answer its canary before the failed one is
repaired anyway."""


class FailoverThenRepair:
    """The recovery action of the replicated reference stack."""

    name = "failover"

    def __init__(
        self, stack: Any, goldens: Goldens, journal: Journal, restart: RestartService,
        *, heal_after: int = 10, timeout: float = 30.0,
    ) -> None:  # fmt: skip
        self.stack = stack
        self.gateway = stack.gateway
        self.goldens = goldens
        self.journal = journal
        self.restart = restart
        self.heal_after = heal_after
        self.timeout = timeout
        self._healthy_streak: dict[str, int] = {}
        self._failed: set[str] = set()
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def run(self, service: str) -> bool:
        with self._lock:  # one engine per replica: repairs happen one at a time
            return self._run(service)

    def _run(self, service: str) -> bool:
        self._failed.add(service)
        self._healthy_streak[service] = 0
        self.gateway.take_out(service)  # no client retry goes there until it has healed
        confirmed = True
        if self.gateway.routed == service:
            others = [r for r in self.gateway.replicas if r != service and r not in self._failed]
            if others:
                self.journal.record("recovery.started", action="failover", service=service,
                                    to=others[0])  # fmt: skip
                self.gateway.route_to(others[0])
                self.journal.record("recovered", action="failover", service=others[0])
                # a healthy replica answers at once; one that is failing too (both went
                # down together) is its own detection's to repair: waiting here for it
                # would hold up this replica's repair
                confirmed = confirm_steady_state(
                    self.stack.client(timeout=2.0), self.goldens, self.journal,
                    timeout=min(self.timeout, FAILOVER_CONFIRM_S),
                )  # fmt: skip
        if self._process_is_broken(service):
            failed_over = self.gateway.routed != service
            return self.restart.run(service, background=failed_over) and confirmed
        reason = "the process answers directly, its link is broken: waiting for it to heal"
        self.journal.record("repair.waiting", service=service, reason=reason)
        return confirmed

    def _process_is_broken(self, service: str) -> bool:
        """Dead, frozen, or wrong when asked directly (bypassing its network link)."""
        if self.stack.backend.status(service) != "running":
            return True
        client = self.stack.direct_client(service, timeout=1.0)
        result = probe_predict(client, self.goldens.inputs(), timeout=1.0)
        return not result.ok or self.goldens.matching_version(result.predictions) is None

    def hold(self, service: str) -> None:
        """Another detector still sees *service* degraded: no failback until released."""
        self._held.add(service)

    def release(self, service: str) -> None:
        self._held.discard(service)

    def observe(self, service: str, ok: bool) -> None:
        """Called after every probe: fail back to the primary once it is healthy again."""
        if service not in self._failed:
            return
        if service in self._held:
            self._healthy_streak[service] = 0
            return
        self._healthy_streak[service] = self._healthy_streak.get(service, 0) + 1 if ok else 0
        if self._healthy_streak[service] < self.heal_after:
            return
        self._failed.discard(service)
        self.gateway.put_back(service)
        # the replica's own "I am back": a repair behind a failover is confirmed by it
        self.journal.record("healed", service=service, probes=self.heal_after)
        if service == self.gateway.primary and self.gateway.route_to(service):
            self.journal.record("failback", service=service)
