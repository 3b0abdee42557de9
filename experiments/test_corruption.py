"""Damage the model store and the checkpoints; the DR engine must detect, restore, verify.

Every fault kind of the storage family the standard suite (:mod:`chaoskit.suite`) does
not already run, one experiment each.  The store guard scans the
live files against the SHA-256 manifests of their recovery points every 250 ms and
restores the newest recovery point that verifies; serving keeps answering from memory,
so no request may get a wrong prediction.
"""

from __future__ import annotations

import pytest

from chaoskit.faults.service import KillService
from chaoskit.faults.storage import (
    AppendBytes,
    CheckpointStateFault,
    DeleteFile,
    DeleteVersion,
    Truncate,
    ZeroRange,
)
from chaoskit.faults.weights import StaleModel

VARIABLES = "model:latest/variables/variables.data-00000-of-00001"

MODEL_FAULTS = {
    "zero-index": ZeroRange("model:latest/variables/variables.index", length=32),
    "append-variables": AppendBytes(VARIABLES, count=64),
    "delete-saved-model": DeleteFile("model:latest/saved_model.pb"),
    "delete-version": DeleteVersion("latest"),
    "stale-model": StaleModel("model:latest", source="previous"),
}

CHECKPOINT_FAULTS = {
    "truncate-checkpoint-index": Truncate("checkpoint:latest.index"),
    "remove-checkpoint-state": CheckpointStateFault("remove"),
    "garble-checkpoint-state": CheckpointStateFault("garble"),
}


@pytest.mark.chaos(ttd="2s", rto="15s")
@pytest.mark.parametrize("fault", MODEL_FAULTS.values(), ids=MODEL_FAULTS.keys())
def test_model_store_damage(chaos, fault):
    result = chaos.run(fault)
    assert result.integrity is True
    assert result.wrong_predictions == 0


@pytest.mark.chaos(ttd="2s", rto="30s", rpo="30s")
@pytest.mark.parametrize("fault", CHECKPOINT_FAULTS.values(), ids=CHECKPOINT_FAULTS.keys())
def test_checkpoint_damage_then_trainer_crash(chaos, fault):
    """The checkpoint is damaged and the trainer crashes: it must resume from a verified one."""
    with chaos.inject(fault), chaos.inject(KillService("trainer")):
        assert chaos.wait_recovered(), "the DR engine did not confirm recovery in time"
    result = chaos.verify()
    assert result.integrity is True
    assert result.rpo_steps is not None and result.rpo_steps >= 0
