"""Property: whatever random damage hits the model store, the DR engine detects it within
budget, restores a recovery point whose every file verifies, and no request ever gets a
wrong prediction.

Hypothesis draws the file, the kind of damage, its size and the seed that places it.
The standard suite draws a few examples (``--chaos-examples``, default 3); a failing
example is reported with its parameters and seed, which reproduce it exactly.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chaoskit.faults.storage import AppendBytes, BitFlip, DeleteFile, Truncate, ZeroRange

FILES = [
    "model:latest/variables/variables.data-00000-of-00001",
    "model:latest/variables/variables.index",
    "model:latest/saved_model.pb",
    "model:latest/fingerprint.pb",
]


@st.composite
def corruptions(draw):
    target = draw(st.sampled_from(FILES))
    kind = draw(st.sampled_from(["bit-flip", "truncate", "zero-range", "append", "delete"]))
    if kind == "bit-flip":
        return BitFlip(target, flips=draw(st.integers(1, 16)))
    if kind == "truncate":
        return Truncate(target)  # the cut point comes from the seed
    if kind == "zero-range":
        return ZeroRange(target, length=draw(st.integers(1, 256)))
    if kind == "append":
        return AppendBytes(target, count=draw(st.integers(1, 4096)))
    return DeleteFile(target)


@pytest.mark.chaos(ttd="2s", rto="15s")
def test_random_model_store_corruption(chaos_experiments, chaos_examples):
    @settings(
        max_examples=chaos_examples,
        deadline=None,
        phases=[Phase.generate],  # no shrinking: each example is a live experiment
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fault=corruptions(), seed=st.integers(0, 2**31 - 1))
    def check(fault, seed):
        with chaos_experiments(f"{fault.describe()} seed={seed}", seed=seed) as experiment:
            result = experiment.run(fault)
        assert result.integrity is True, result.reasons
        assert result.wrong_predictions == 0

    check()
