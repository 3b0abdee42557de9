"""A replica slower than usual but not slow enough for the probes: the learned detectors
see it.

The probe detector counts an answer slower than 200 ms as a failure.  A link adding
100 ms stays under that, so no probe fails; yet the replica's latency is several times
what it was in this experiment's steady state, which the learned detectors (trained on
that steady state) flag after three 1-second windows, naming the replica and the
signals behind it.  The DR engine fails the gateway over to the other replica, and
fails back only once the learned monitor sees the replica normal again.
"""

from __future__ import annotations

import pytest

from chaoskit.faults.network import Latency


@pytest.mark.chaos(ttd="10s", rto="12s")
@pytest.mark.chaos_learned(baseline="20s")
def test_learned_detectors_catch_a_mildly_slow_replica(chaos):
    result = chaos.run(Latency(proxy="serving", delay="100ms"))
    assert result.detected_by == "learned", "something other than the learned detectors"
    alerts = [
        e for e in chaos.events()
        if e["event"] == "detected" and e.get("signal") == "learned" and e["service"] == "serving"
    ]  # fmt: skip
    assert alerts, "no learned alert named the slow replica"
    assert any("latency" in d["signal"] for d in alerts[0]["diagnosis"]), alerts[0]
    gateway = chaos.stack.gateway
    assert gateway.routed == gateway.primary, "the gateway did not fail back after the heal"
