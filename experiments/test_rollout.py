"""A bad rollout of serving, or serving scaled to zero, on an orchestrator
(``--chaos-backend swarm``).

Swarm updates serving's replicas one at a time, stop-first, and rolls back by itself only
when a new task *exits* (``failure_action: rollback``).  A new version that runs but
serves no model, or the wrong one, it keeps rolling out.  chaoskit's probes see the
failing replica, the gateway fails over to the one not yet updated, and the DR engine
rolls the service back (a new task gets 20 s to be ready).  Swarm updates the second
replica 5 s after the first one *runs*, so without a health check both serve the bad
spec for a while: the failed requests and wrong predictions in the report are that
window, measured.
"""

from __future__ import annotations

import pytest

from chaoskit.faults import BadRollout, ScaleService

pytestmark = pytest.mark.chaos_needs("orchestrator", "replicas>=2")


# TTD: Swarm stops the first replica ~3 s after it accepted the update (stop-first; 3.3 s
# measured), and that is the first thing a probe can see.  RTO: the replica's new task
# gets its grace (20 s) before the rollout is blamed, then the rollback restarts both
# replicas one after the other, each a TensorFlow cold start: 5-10 s, and up to 18 s on
# a 2-core machine where importing TensorFlow alone takes 10 s of CPU (63 s measured)
@pytest.mark.chaos(ttd="5s", rto="90s")
@pytest.mark.parametrize("change", ["crash", "no-model", "wrong-model"])
def test_a_bad_rollout_is_rolled_back(chaos, change):
    chaos.run(BadRollout("serving", change=change))
    backend = chaos.stack.backend
    assert backend.rollout_of("serving") is None, "the bad spec is still in force"
    rolled_back = [e for e in chaos.events() if e["event"] == "recovered"
                   and e.get("action") == "rollback"]  # fmt: skip
    if change == "crash":  # its tasks exit: Swarm's failure_action rolls back by itself
        assert backend.update_state("serving") in ("rollback_started", "rollback_completed")
    else:  # Swarm sees running tasks and rolls on: chaoskit's probes catch it
        assert rolled_back and "recovered_by" not in rolled_back[0], rolled_back
    gateway = chaos.stack.gateway
    assert gateway.routed == gateway.primary, "no failback after the rollback"


# TTD: Swarm stops the tasks ~3 s after the scale (as for a rollout's first stop).  RTO:
# both replicas start again at once, TensorFlow cold starts on two cores (5-10 s)
@pytest.mark.chaos(ttd="5s", rto="30s")
def test_a_service_scaled_to_zero_is_scaled_back(chaos):
    """``docker service scale serving=0``: Swarm keeps it at 0; chaoskit scales it back."""
    chaos.run(ScaleService("serving", replicas=0))
    events = chaos.events()
    (reverted,) = [e["t"] for e in events if e["event"] == "fault.reverted"]
    repaired = {e["service"] for e in events if e["event"] == "recovered" and e["t"] < reverted
                and e.get("action") == "restart"}  # fmt: skip
    assert repaired, "serving was not scaled back before the fault's own revert"
    for replica in chaos.stack.replicas:
        assert chaos.stack.backend.status(replica) == "running", replica
