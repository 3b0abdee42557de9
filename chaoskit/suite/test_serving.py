"""Kill and hang each serving replica under load; the stack must detect it and serve again.

Budgets: detection within 1 s of a crash (probes every 100 ms by default), service back
within 20 s (a TensorFlow server's cold start plus detection, when nothing fails over).
With a second replica, clients lose no request to a kill and at most one to a hang.
"""

from __future__ import annotations

import pytest

from chaoskit.faults.service import HangService, KillService
from chaoskit.suite import assert_requests_kept


@pytest.mark.chaos(ttd="1s", rto="20s")
def test_kill_replica(chaos, chaos_replica):
    """SIGKILL: the process is gone, its port refuses connections."""
    result = chaos.run(KillService(chaos_replica, signal="SIGKILL"))
    assert_requests_kept(chaos.stack, result, allowed=0)


@pytest.mark.chaos(ttd="2s", rto="20s")
def test_hang_replica(chaos, chaos_replica):
    """SIGSTOP (docker pause): alive, its port accepts connections, nothing answers."""
    result = chaos.run(HangService(chaos_replica))
    assert_requests_kept(chaos.stack, result, allowed=1)
