"""The machine runs out of something under the stack: here, the trainer's disk.

The checkpoint volume fills (a file takes every free byte): the trainer's saves fail
with ENOSPC while it trains on, so a crash would lose more and more (RPO grows).  The
DR engine must see it (the store guard's free-space watch: TTD), serving must not
notice (no failed request, no wrong prediction), and once the disk has room again the
trainer's saves must resume and be backed up (RTO: until then), with no checkpoint lost
or damaged.
"""

from __future__ import annotations

import pytest

from chaoskit.faults.resources import DiskFull


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
