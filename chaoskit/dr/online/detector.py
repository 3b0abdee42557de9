"""Probe detector: turns a stream of probe outcomes into an alert.

An alert fires after ``failures_to_alert`` consecutive failed or timed-out probes (a
single slow answer is not an outage), and re-arms after the next successful probe or
an explicit reset (after a recovery).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chaoskit.errors import ConfigError


@dataclass
class ConsecutiveFailureDetector:
    failures_to_alert: int = 2
    _streak: int = field(default=0, init=False)
    _fired: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.failures_to_alert < 1:
            raise ConfigError(f"failures_to_alert must be >= 1, got {self.failures_to_alert!r}")

    def observe(self, ok: bool) -> bool:
        """Feed one probe outcome; True exactly once per outage, when the alert fires."""
        if ok:
            self._streak = 0
            self._fired = False
            return False
        self._streak += 1
        if self._streak >= self.failures_to_alert and not self._fired:
            self._fired = True
            return True
        return False

    @property
    def streak(self) -> int:
        return self._streak

    def reset(self) -> None:
        self._streak = 0
        self._fired = False
