"""Damage the newest model version; the DR engine must detect it, restore it, verify it.

Serving keeps the loaded version in memory, so no client may see a wrong prediction;
the store guard finds the damage against the version's recovery point and restores it.
"""

from __future__ import annotations

import pytest

from chaoskit.faults.storage import BitFlip, Truncate
from chaoskit.faults.weights import SilentWeightChange

VARIABLES = "model:latest/variables/variables.data-00000-of-00001"

FAULTS = {
    "bit-flip-variables": BitFlip(VARIABLES, flips=3),
    "truncate-variables": Truncate(VARIABLES),
    "silent-weight-change": SilentWeightChange("model:latest", scale=1.5),
}


@pytest.mark.chaos(ttd="2s", rto="15s")
@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_newest_version_damage(chaos, fault):
    result = chaos.run(fault)
    assert result.integrity is True
    assert result.wrong_predictions == 0
