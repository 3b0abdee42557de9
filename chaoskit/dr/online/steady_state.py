"""The steady-state hypothesis of a serving stack: the served version answers its canary.

Correct means: the version that serving reports AVAILABLE returns, for the canary
inputs, the golden outputs recorded for that version when it was exported.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaoskit.dr.online.goldens import Goldens, max_abs_error
from chaoskit.serving.client import ServingClient


@dataclass(frozen=True)
class SteadyStateResult:
    ok: bool
    version: int | None
    max_abs_error: float | None
    reason: str


def check_steady_state(
    client: ServingClient, goldens: Goldens, *, timeout: float = 2.0
) -> SteadyStateResult:
    """One canary round trip against the served version."""
    version = client.available_version(timeout=timeout)
    if version is None:
        return SteadyStateResult(False, None, None, "no version AVAILABLE")
    canary = goldens.for_version(version)
    if canary is None:
        return SteadyStateResult(False, version, None, f"no canary file for version {version}")
    try:
        answer = client.predict(canary["inputs"], version=version, timeout=timeout)
    except OSError as e:
        return SteadyStateResult(False, version, None, f"predict failed: {e}")
    if not answer.ok:
        return SteadyStateResult(
            False, version, None, f"predict answered {answer.status}: {answer.body.get('error')}"
        )
    error = max_abs_error(answer.body.get("predictions"), canary["outputs"])
    tolerance = float(canary.get("tolerance", 1e-4))
    if error > tolerance:
        return SteadyStateResult(
            False, version, error, f"canary error {error:.3g} exceeds tolerance {tolerance:g}"
        )
    return SteadyStateResult(True, version, error, "canary outputs match")
