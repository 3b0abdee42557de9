"""Damage the newest checkpoint and crash the trainer: it must resume from a verified one.

The store guard restores the damaged checkpoint from its recovery point (or, when that
cannot be, resumes from the newest one that verifies) before it restarts the trainer;
the RPO says how much training was lost, in steps where the checkpoint format tells.
"""

from __future__ import annotations

import pytest

from chaoskit.faults.service import KillService
from chaoskit.faults.storage import BitFlip


def newest_checkpoint(stack) -> str:
    """The storage-fault target of the newest checkpoint's data, for the stack's format."""
    kind = getattr(getattr(stack, "checkpoint_format", None), "kind", "tf")
    return "checkpoint:latest.data" if kind == "tf" else "checkpoint:latest"


@pytest.mark.chaos_needs("trainer", "checkpoints")
@pytest.mark.chaos(ttd="2s", rto="30s", rpo="30s")
def test_checkpoint_damage_then_trainer_crash(chaos):
    damage = BitFlip(newest_checkpoint(chaos.stack), flips=3)
    with chaos.inject(damage), chaos.inject(KillService(chaos.stack.trainer)):
        assert chaos.wait_recovered(), "the DR engine did not confirm recovery in time"
    result = chaos.verify()
    assert result.integrity is True
    assert result.rpo_s is not None and result.rpo_s >= 0
