"""Break and degrade the link to the primary serving replica; the stack must fail over
and back.

Each replica sits behind a proxy of its own (named after it), where these faults act.
A broken link is not healed by a restart, so this needs a second replica to fail over
to; the gateway must route to the primary again after the heal.  (A standby's broken
link touches no client: the engine keeps it out of rotation until it heals, and there
is no recovery to time while the fault is held.)
"""

from __future__ import annotations

import pytest

from chaoskit.faults.network import Latency, Partition
from chaoskit.suite import assert_requests_kept


def slower_than_allowed(stack) -> str:
    """A delay a quarter above the stack's slow-answer threshold (250 ms by default)."""
    return f"{round(stack.dr_config.slow_probe * 1250)}ms"


FAULTS = {
    "partition-refuse": lambda stack: Partition(proxy=stack.replicas[0], mode="refuse"),
    "partition-hang": lambda stack: Partition(proxy=stack.replicas[0], mode="hang"),
    "latency": lambda stack: Latency(proxy=stack.replicas[0], delay=slower_than_allowed(stack)),
}
FAILED_REQUESTS_ALLOWED = {"partition-refuse": 0, "partition-hang": 1, "latency": 0}
"""The gateway retries on the healthy replica; a hang may cost the request in flight."""


@pytest.mark.chaos_needs("replicas>=2", "proxies")
@pytest.mark.chaos(ttd="2s", rto="3s")
@pytest.mark.parametrize("kind", FAULTS)
def test_primary_link_fails_over(chaos, kind):
    result = chaos.run(FAULTS[kind](chaos.stack))
    assert result.wrong_predictions == 0
    assert_requests_kept(chaos.stack, result, allowed=FAILED_REQUESTS_ALLOWED[kind])
    gateway = chaos.stack.gateway
    assert gateway.routed == gateway.primary, "the gateway did not fail back after the heal"
