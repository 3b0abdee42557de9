"""A load generator: keeps calling :predict for the whole experiment and journals each call.

Each answer is classified: failed (error status or no answer), correct (equals the
golden outputs of some exported version) or wrong (200 but matching no golden) — the
raw material for failed_requests and wrong_predictions.  An answer the gateway got
through a retry names the replica whose try failed (``retried``: retried_requests).
"""

from __future__ import annotations

import time

from chaoskit.background import BackgroundLoop
from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.online.probe import probe_predict
from chaoskit.errors import ConfigError
from chaoskit.journal import Journal
from chaoskit.serving.client import ServingClient


class LoadGenerator(BackgroundLoop):
    """Sends ``rate`` requests per second (one at a time) until stopped."""

    thread_name = "chaoskit-load"

    def __init__(
        self,
        client: ServingClient,
        goldens: Goldens,
        journal: Journal,
        *,
        rate: float = 20.0,
        timeout: float = 2.0,
    ) -> None:
        super().__init__()
        if not rate > 0:
            raise ConfigError(f"load rate must be > 0 requests/s, got {rate!r}")
        self.client = client
        self.goldens = goldens
        self.journal = journal
        self.rate = rate
        self.timeout = timeout
        self.inputs = goldens.inputs()

    def _loop(self) -> None:
        period = 1.0 / self.rate
        next_call = time.monotonic()
        while not self._stop.is_set():
            result = probe_predict(self.client, self.inputs, timeout=self.timeout)
            version = self.goldens.matching_version(result.predictions) if result.ok else None
            self.journal.record(
                "request",
                ok=result.ok,
                correct=None if not result.ok else version is not None,
                version=version,
                latency_s=round(result.latency_s, 6),
                status=result.status,
                error=result.error,
                **({} if result.retried is None else {"retried": result.retried}),
            )
            next_call = max(next_call + period, time.monotonic())
            self._stop.wait(next_call - time.monotonic())
