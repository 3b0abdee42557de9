"""Degrade the link to the primary replica in ways the standard suite does not; the DR
engine must fail over (partitions and latency are in :mod:`chaoskit.suite.test_links`).

Clients reach serving through the gateway proxy; each replica sits behind a proxy of its
own, where these faults act.  The DR engine probes each replica through its link, moves
the gateway to the healthy replica, leaves a replica whose process still answers alone
(a restart does not heal a network), and moves back once the link has healed.
"""

from __future__ import annotations

import pytest

from chaoskit.faults.network import Bandwidth, ResetPeer
from chaoskit.suite import assert_requests_kept

FAULTS = {
    "bandwidth-1KBps": Bandwidth(proxy="serving", rate_kbps=1),
    "reset-peer": ResetPeer(proxy="serving"),
}


@pytest.mark.chaos(ttd="2s", rto="3s")
@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_degraded_replica_link_fails_over(chaos, fault):
    result = chaos.run(fault)
    assert result.wrong_predictions == 0
    assert_requests_kept(chaos.stack, result, allowed=0)  # the gateway retries elsewhere
    gateway = chaos.stack.gateway
    assert gateway.routed == gateway.primary, "the gateway did not fail back after the heal"
