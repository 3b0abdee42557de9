"""The DR engine loop: probe serving at a fixed interval, detect, recover, confirm.

A probe fails when serving does not answer in time, answers with an error, answers
with outputs that match the canary of no exported version (silent corruption), or
answers correctly but slower than ``slow_probe`` (a degraded link).

It only acts and writes events (probe, detected, recovery.*, steady_state.*); how fast
it was is computed from the journal afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from chaoskit.background import BackgroundLoop
from chaoskit.dr.online.detector import ConsecutiveFailureDetector
from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.online.probe import probe_predict
from chaoskit.dr.online.recovery import RecoveryAction
from chaoskit.errors import ConfigError
from chaoskit.journal import Journal
from chaoskit.serving.client import ServingClient


@dataclass(frozen=True)
class DRConfig:
    """Monitor cadence and patience.  Defaults: probe every 100 ms, alert after 2 misses."""

    probe_interval: float = 0.1
    probe_timeout: float = 0.3
    slow_probe: float = 0.2
    """A correct answer slower than this counts against the replica (a degraded link)."""
    failures_to_alert: int = 2
    recovery_timeout: float = 90.0

    def __post_init__(self) -> None:
        for name in ("probe_interval", "probe_timeout", "slow_probe", "recovery_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {value!r}")


class DREngine(BackgroundLoop):
    """Monitors one service through its :predict endpoint and recovers it when it fails."""

    thread_name = "chaoskit-dr"

    def __init__(
        self,
        client: ServingClient,  # or a GrpcServingClient: the same predict
        goldens: Goldens,
        journal: Journal,
        recovery: RecoveryAction,
        *,
        service: str = "serving",
        config: DRConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or DRConfig()
        self.client = client
        self.goldens = goldens
        self.inputs = goldens.inputs()
        self.journal = journal
        self.recovery = recovery
        self.service = service
        self.detector = ConsecutiveFailureDetector(self.config.failures_to_alert)

    def _loop(self) -> None:
        interval = self.config.probe_interval
        next_probe = time.monotonic()
        while not self._stop.is_set():
            result = probe_predict(self.client, self.inputs, timeout=self.config.probe_timeout)
            ok, error, signal = result.ok, result.error, "probe"
            if ok and self.goldens.matching_version(result.predictions) is None:
                # an answer, but not what any exported version computes: silent corruption
                ok, error, signal = False, "canary outputs match no exported version", "canary"
            elif ok and result.latency_s > self.config.slow_probe:
                ok, error, signal = False, f"slow answer ({result.latency_s:.3f}s)", "latency"
            self.journal.record(
                "probe",
                service=self.service,
                ok=ok,
                latency_s=round(result.latency_s, 6),
                status=result.status,
                error=error,
            )
            observe = getattr(self.recovery, "observe", None)
            if observe is not None:
                observe(self.service, ok)
            if self.detector.observe(ok):
                self.journal.record(
                    "detected",
                    service=self.service,
                    signal=signal,
                    failures=self.detector.streak,
                    reason=error,
                    probe=getattr(self.client, "protocol", "rest"),
                )
                if self._stop.is_set():
                    break
                self.recovery.run(self.service)
                self.detector.reset()
                next_probe = time.monotonic()
            next_probe += interval
            delay = next_probe - time.monotonic()
            if delay < 0:  # a slow probe: keep the cadence instead of bursting to catch up
                next_probe = time.monotonic()
                delay = 0
            self._stop.wait(delay)
