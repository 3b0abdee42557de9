"""Which services are still to recover: one rule for ``wait_recovered`` and for the RTO.

Fed the journal's events in time order, a :class:`RecoveryTracker` keeps the services
that are *outstanding*: every service a ``detected`` event named after the first fault
(from its last detection on), and every service a process fault (kill, hang, stop,
restart, remove, and memory pressure: it ends in the OOM killer's SIGKILL) or a node loss
(every task on the node) took down (from the fault on).  A service is back and confirmed when,
after that moment:

- it confirmed itself: ``steady_state.ok`` (phase recovery) naming it (the replicator
  after the DR site caught up), ``healed`` or ``failback`` naming it (the failover's
  probes of that replica passed ``heal_after`` times in a row), ``learned.normal`` when
  the learned detectors flagged it;
- or a foreground recovery ``recovered`` it (restart, restore, observe) and the steady
  state was confirmed (``steady_state.ok``) after its detection; a repair behind a
  failover (``background``) is not confirmed by the gateway's canary, which another
  replica answers: only that replica's own heal confirms it;
- or, with a gateway (``routed`` in ``experiment.started``), a replica whose repair
  waits for its link (``repair.waiting``) is out of the client path: the gateway routes
  to another replica, moved there by a failover (then confirmed) or a failback (healed);
- or, on a stack without gateway, any ``steady_state.ok`` after its detection (not
  for a service a process fault took down: a recovery action must have brought it back).

The window is *clear* once every fault was injected, nothing is outstanding, and the
steady state was confirmed after the last fault and the last foreground recovery action.
The RTO ends at the first clear moment after the last fault, or after the last outage
that began later (a foreground recovery, a service detected for the first time);
detecting again a service whose repair waits for its link does not reopen it (a held
link fault is re-detected every few probes).
"""

from __future__ import annotations

from dataclasses import dataclass

from chaoskit.journal import Event

PROCESS_FAULTS = frozenset({"kill", "hang", "stop", "restart", "remove", "memory-pressure"})
"""Fault kinds that take their ``service`` down: it is outstanding from the fault on."""
NODE_LOSS = "node-loss"
"""Takes down every service its ``changes`` name (those on the node): outstanding too."""
MODEL_STORE = "model-store"
GATEWAY_ROW = "gateway"
"""The learned detectors' row for the client path (not a service): the confirmations of
the steady state say when it is back."""
SELF_CONFIRMING = frozenset({"healed", "failback"})
NOISY = frozenset({"probe", "request", "signals.window"})
EARLY_KEPT = 200


@dataclass
class _Outstanding:
    since: float
    signal: str | None = None
    background: bool = False
    recovered: bool = False
    confirmed: bool = False
    waiting: bool = False
    down: bool = False
    """Taken down by a process fault: back only once a recovery action brought it back."""


class RecoveryTracker:
    """The outstanding services of one experiment window, updated event by event."""

    def __init__(self, start: Event | None = None) -> None:
        self.routed: str | None = None if start is None else start.get("routed")
        self.gatewayed = self.routed is not None
        self.outstanding: dict[str, _Outstanding] = {}
        self.faulted = False
        self._confirm_since = float("-inf")
        self._confirmed = False
        self._detected: set[str] = set()
        self._early: list[Event] = []
        self.clear_at: float | None = None
        """The clear moment that ended the last outage so far (None: not clear yet)."""

    def clear(self) -> bool:
        """Every fault's services and every detected service are back and confirmed."""
        return self.faulted and self._confirmed and not self.outstanding

    def feed(self, event: Event) -> None:
        kind, t, service = event["event"], event["t"], event.get("service")
        if kind == "fault.injected":
            self.faulted, self.clear_at = True, None
            self._reopen(t)
            params = event.get("params") or {}
            if event.get("fault") in PROCESS_FAULTS and params.get("service"):
                self.outstanding[params["service"]] = _Outstanding(since=t, down=True)
            if event.get("fault") == NODE_LOSS:  # every task of the node died with it
                for name in (event.get("changes") or {}).get("services") or []:
                    self.outstanding[name] = _Outstanding(since=t, down=True)
            early, self._early = self._early, []
            for e in sorted((e for e in early if e["t"] >= t), key=lambda e: e["t"]):
                self.feed(e)
        elif not self.faulted:
            # a fault's time is when it began, its event is written once it took effect:
            # what the engine journaled meanwhile comes first in the file
            if kind not in NOISY:
                self._early = [*self._early[-(EARLY_KEPT - 1) :], event]
            return
        elif kind == "detected" and service and service != GATEWAY_ROW:
            if service not in self._detected:
                self._detected.add(service)
                self.clear_at = None  # a new problem: the RTO goes on until it is back
            down = service in self.outstanding and self.outstanding[service].down
            self.outstanding[service] = _Outstanding(t, event.get("signal"), down=down)
        elif kind == "recovery.started":
            if not event.get("background"):
                self._reopen(t)
                self.clear_at = None  # clients wait for this one too
            if event.get("action") == "failover" and event.get("to"):
                self.routed = event["to"]
            if service in self.outstanding:
                self.outstanding[service].background = bool(event.get("background"))
        elif kind == "recovered" and event.get("action") != "failover":
            # the failover's `recovered` names the replica it moved to, not a repaired one
            named = service or (MODEL_STORE if event.get("action") == "restore" else None)
            if named in self.outstanding:
                self.outstanding[named].recovered = True
        elif kind == "repair.waiting" and service in self.outstanding:
            self.outstanding[service].waiting = True
        elif kind in SELF_CONFIRMING and service:
            if kind == "failback":
                self.routed = service
            self.outstanding.pop(service, None)
        elif kind == "learned.normal":
            if service in self.outstanding and self.outstanding[service].signal == "learned":
                del self.outstanding[service]
        elif kind == "steady_state.ok" and event.get("phase") == "recovery":
            if t >= self._confirm_since:
                self._confirmed = True
            if service is not None:
                self.outstanding.pop(service, None)
            else:
                for state in self.outstanding.values():
                    state.confirmed = True
        self._settle()
        if self.clear_at is None and self.clear():
            self.clear_at = t

    def _reopen(self, t: float) -> None:
        """A fault or a foreground recovery: the steady state must be confirmed after it."""
        self._confirm_since = max(self._confirm_since, t)
        self._confirmed = False

    def _settle(self) -> None:
        for name, state in list(self.outstanding.items()):
            if self._back(name, state):
                del self.outstanding[name]

    def _back(self, name: str, state: _Outstanding) -> bool:
        if state.waiting and self.routed is not None and self.routed != name:
            return True  # out of the client path; its link heals when the fault ends
        if state.background:
            return False  # repaired behind a failover: only its own heal confirms it
        if state.recovered and state.confirmed:
            return True
        return state.confirmed and not self.gatewayed and not state.down


def recovered_at(start: Event, events: list[Event]) -> float | None:
    """When the window became clear for the last time (the end of the RTO), or None."""
    tracker = RecoveryTracker(start)
    for event in events:
        tracker.feed(event)
    return tracker.clear_at
