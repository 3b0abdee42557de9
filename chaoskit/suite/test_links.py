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

FAULTS = {
    "partition-refuse": lambda proxy: Partition(proxy=proxy, mode="refuse"),
    "partition-hang": lambda proxy: Partition(proxy=proxy, mode="hang"),
    "latency-250ms": lambda proxy: Latency(proxy=proxy, delay="250ms"),
}


@pytest.mark.chaos_needs("replicas>=2", "proxies")
@pytest.mark.chaos(ttd="2s", rto="3s")
@pytest.mark.parametrize("make", FAULTS.values(), ids=FAULTS.keys())
def test_primary_link_fails_over(chaos, make):
    result = chaos.run(make(chaos.stack.replicas[0]))
    assert result.wrong_predictions == 0
    gateway = chaos.stack.gateway
    assert gateway.routed == gateway.primary, "the gateway did not fail back after the heal"
