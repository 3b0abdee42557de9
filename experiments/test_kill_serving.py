"""Kill and hang the model server under load; the DR engine must detect and recover it.

Budgets: detection within 1 s of a crash (probes every 100 ms), service back within the
cold start of a TensorFlow process plus detection (a few seconds here).
"""

from __future__ import annotations

import pytest

from chaoskit.faults.service import HangService, KillService


@pytest.mark.chaos(ttd="1s", rto="20s")
def test_kill_serving(chaos):
    """SIGKILL: the process is gone, the port refuses connections."""
    chaos.run(KillService("serving", signal="SIGKILL"))


@pytest.mark.chaos(ttd="2s", rto="20s")
def test_hang_serving(chaos):
    """SIGSTOP: the process is alive and its port accepts connections, but nothing answers."""
    chaos.run(HangService("serving"))
