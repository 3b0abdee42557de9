"""A probe: one real ``:predict`` call with the canary inputs, not just a port check."""

from __future__ import annotations

import time
from dataclasses import dataclass

from chaoskit.serving.client import ServingClient
from chaoskit.stack.router import RETRIED_HEADER


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_s: float
    status: int | None
    error: str | None
    predictions: object = None
    retried: str | None = None
    """The replica whose try failed, when the gateway answered through a retry."""


def probe_predict(
    client: ServingClient, instances: list[list[float]], *, timeout: float
) -> ProbeResult:
    """Predict on the default version; ok = HTTP 200 with one prediction per instance."""
    start = time.monotonic()
    try:
        answer = client.predict(instances, timeout=timeout)
    except OSError as e:
        return ProbeResult(False, time.monotonic() - start, None, _short(e))
    latency = time.monotonic() - start
    retried = answer.headers.get(RETRIED_HEADER.lower())
    if not answer.ok:
        error = str(answer.body.get("error", ""))[:200]
        return ProbeResult(False, latency, answer.status, error, retried=retried)
    predictions = answer.body.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(instances):
        return ProbeResult(False, latency, answer.status, "malformed predictions", retried=retried)
    return ProbeResult(True, latency, answer.status, None, predictions, retried)


def _short(error: BaseException) -> str:
    if isinstance(error, TimeoutError) or "timed out" in str(error):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return f"{type(error).__name__}: {error}"[:200]
