"""End to end on Docker Swarm: ``pytest --chaos-backend=swarm --chaos-swarm-workers=1``
runs kill, hang, partition, corruption, bad-rollout and node-loss experiments on real
Swarm services spread over two nodes, with TTD/RTO/RPO in the report, and nothing of the run
is left: no service, network, volume or secret, no added node, and the swarm chaoskit
initialised is left again.

One of each kind, in one run sharing one stack (all of them run in ``pytest experiments
chaoskit/suite --chaos-backend=swarm --chaos-swarm-workers=1``): CI's time is short.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from docker_support import NOTHING_LEFT, docker_client, engine_or_skip, reap_killed_runs  # noqa: F401

from chaoskit.journal import read_journal
from chaoskit.stack import swarm_mode, swarm_nodes
from chaoskit.stack.docker_engine import managed_objects

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow]
engine_or_skip()

ROOT = Path(__file__).resolve().parents[2]
MODULES = {  # file -> what of it runs here (one of each kind: CI's time is short)
    "chaoskit/suite/test_serving.py": "replica[serving-b]",
    "experiments/test_corruption.py": "zero-index",
    "experiments/test_rollout.py": "wrong-model",
    "experiments/test_nodes.py": "lost_node",
}
PARTITION = """
import pytest
from chaoskit.faults import FirewallPartition

# RTO: the gateway fails over at once; the partitioned task is replaced, a TensorFlow
# cold start of 5-18 s on two cores (15.7 s measured on a slow one)
@pytest.mark.chaos(ttd="3s", rto="30s")
def test_a_partitioned_task_fails_over(chaos):
    chaos.run(FirewallPartition("serving", mode="drop"))
    gateway = chaos.stack.gateway
    assert gateway.routed == gateway.primary, "no failback after the heal"
"""


def test_swarm_experiments_pass_on_two_nodes_and_leave_nothing(pytester: pytest.Pytester,
                                                                docker_client):  # noqa: F811
    reap_killed_runs(docker_client)
    swarm_before = swarm_mode.swarm_state(docker_client)[0]
    nodes_before = {n.name for n in swarm_nodes.list_nodes()}
    files = {Path(m).stem: (ROOT / m).read_text() for m in MODULES}
    pytester.makepyfile(**files, test_partition=PARTITION)
    selection = " or ".join(f"({k})" for k in [*MODULES.values(), "partitioned"])
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--chaos-backend=swarm", "--chaos-swarm-workers=1",
        "-k", selection, timeout=1200,
    )  # fmt: skip
    result.assert_outcomes(passed=6)
    latest = pytester.path / "reports" / "latest"
    with open(latest / "results.csv") as f:
        rows = list(csv.DictReader(f))
    faults = {row["fault"] for row in rows}
    assert {"kill", "hang", "partition", "zero-range", "bad-rollout", "node-loss"} <= faults, \
        faults
    for row in rows:
        assert row["verdict"] == "pass" and row["ttd_s"] and row["rto_s"], row
    events = read_journal(latest / "journal.jsonl")
    started = [e for e in events if e["event"] == "experiment.started"]
    assert {e["backend"] for e in started} == {"swarm"}
    rollbacks = [e for e in events if e["event"] == "recovered" and e.get("action") == "rollback"]
    assert rollbacks, "chaoskit did not roll the bad rollout back"
    left = managed_objects(docker_client)
    assert left == NOTHING_LEFT, left
    assert {n.name for n in swarm_nodes.list_nodes()} == nodes_before  # the worker is gone
    assert swarm_mode.swarm_state(docker_client)[0] == swarm_before
