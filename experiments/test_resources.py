"""The machine runs out of something under the stack: the trainer's disk, a replica's CPU
or its memory.

The checkpoint volume fills (a file takes every free byte): the trainer's saves fail
with ENOSPC while it trains on, so a crash would lose more and more (RPO grows).  The
DR engine must see it (the store guard's free-space watch: TTD), serving must not
notice (no failed request, no wrong prediction), and once the disk has room again the
trainer's saves must resume and be backed up (RTO: until then), with no checkpoint lost
or damaged.  A replica starved of CPU, or run out of memory until the kernel's OOM
killer kills it, is failed over and restarted, and clients lose (almost) nothing.
"""

from __future__ import annotations

import pytest

from chaoskit.faults.resources import CpuStarvation, DiskFull, MemoryPressure
from chaoskit.stack.cgroup import cannot_limit
from chaoskit.stack.memory_limit import cannot_limit_memory
from chaoskit.suite import assert_requests_kept


@pytest.mark.chaos(ttd="2s", rto="30s", rpo="30s")
@pytest.mark.chaos_needs("trainer", "checkpoints", "checkpoint-volume")
def test_a_full_checkpoint_disk_is_seen_and_saves_resume(chaos):
    with chaos.inject(DiskFull("checkpoints")):
        chaos.wait_for("detected", signal="disk-full", timeout=10)
        failed = chaos.wait_for("trainer.save_failed", kind="checkpoint", count=2, timeout=30)
    assert chaos.wait_recovered(), "saves did not resume and get backed up in time"
    result = chaos.verify()
    assert "space" in failed[0]["error"].lower(), failed[0]  # ENOSPC, in TF's words
    assert result.failed_requests == 0 and result.wrong_predictions == 0
    assert result.rpo_s is not None and result.rpo_s > 0 and result.rpo_steps
    resumed = [e for e in chaos.events() if e["event"] == "trainer.save_resumed"]
    assert resumed and resumed[0]["kind"] == "checkpoint"


@pytest.mark.chaos(ttd="2s", rto="15s")
@pytest.mark.chaos_needs("replicas>=2")
def test_a_starved_replica_is_failed_over_and_repaired(chaos):
    """A replica capped at 2 % of a CPU answers, too slowly: the DR engine fails over
    to the other one and restarts it (a new process, or container, without the cap)."""
    if chaos.backend == "process" and cannot_limit():
        pytest.skip(f"the process backend cannot starve a service: {cannot_limit()}")
    result = chaos.run(CpuStarvation(chaos.stack.replicas[0], cpus=0.02))
    # its answers come late (latency) or after the probe's deadline (probe: a timeout)
    assert result.detected_by in ("latency", "probe"), result.detections
    assert result.wrong_predictions == 0
    assert_requests_kept(chaos.stack, result, allowed=1)  # a try may wait out its deadline
    gateway = chaos.stack.gateway
    assert gateway.routed == gateway.primary, "the gateway did not fail back after the repair"


@pytest.mark.chaos(ttd="2s", rto="15s")
@pytest.mark.chaos_needs("replicas>=2")
def test_a_replica_under_memory_pressure_is_oom_killed_and_restarted(chaos):
    """A replica may hold little more than it does while a balloon beside it takes memory:
    the kernel's OOM killer SIGKILLs it, the DR engine fails over to the other replica and
    restarts it (a new process, or container, outside the limit)."""
    if chaos.backend == "process" and cannot_limit_memory():
        pytest.skip(f"the process backend cannot limit a service's memory: {cannot_limit_memory()}")
    replica = chaos.stack.replicas[0]
    result = chaos.run(MemoryPressure(replica))
    (injected,) = [e for e in chaos.events() if e["event"] == "fault.injected"]
    killed = injected["changes"]
    # the kernel's word, not an assumption: its OOM counter (Docker: the engine's oom
    # events) and the replica's end by SIGKILL; the balloon outlived it
    assert killed["oom_killed"] and killed["exit_signal"] == "SIGKILL", killed
    assert killed.get("oom_kills", 1) >= 1 and killed.get("balloon_alive", True), killed
    assert result.detections and result.detections[0]["service"] == replica, result.detections
    assert result.wrong_predictions == 0
    assert_requests_kept(chaos.stack, result, allowed=1)  # the request in flight at the kill
    gateway = chaos.stack.gateway
    assert gateway.routed == gateway.primary, "the gateway did not fail back after the repair"
