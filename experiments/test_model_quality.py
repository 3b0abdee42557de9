"""A valid, newly trained version that is worse: it must never be served as ``stable``.

Clients predict on the ``stable`` label; chaoskit's quality gate scores every version
the trainer exports on held-out labelled data before ``stable`` moves to it
(:mod:`chaoskit.dr.online.quality_guard`).  Poisoned labels, a diverged learning rate
and a preprocessing skew (inputs scaled before the model) each make the trainer export
versions that load, answer and match their own canary: only their quality gives them
away.  The gate must refuse such a version (TTD: the fault until that verdict), keep
``stable`` on the last good version, set the bad one aside, and rewind the trainer to
the checkpoint the good version came from (RPO: the training lost; the gate cannot
tell a skew from bad weights, so it rewinds for all three).  Once the fault is gone,
the rewound trainer's next version must be good enough to promote again.  A version
that answers right but far slower (a slow model) is refused the same way, without
rewinding training: its weights are fine.
"""

from __future__ import annotations

import time

import pytest

from chaoskit.faults.training import (
    DivergeTraining,
    PoisonTraining,
    SkewPreprocessing,
    SlowModel,
)

FAULTS = {
    "poison-flip": PoisonTraining(labels="flip"),
    "diverge-1e30": DivergeTraining(learning_rate=1e30),
    "skew-10x": SkewPreprocessing(scale=10.0),
}


def refused_then_recovered(chaos, fault):
    """Hold *fault* until the gate refuses a version; once it is gone, a version must be
    promoted again and the engine confirm recovery.  (the breach verdict, the result)"""
    with chaos.inject(fault):
        (breach,) = chaos.wait_for("quality.verdict", decision="breach", timeout=90)
    reverted = time.monotonic()
    chaos.wait_for("quality.promoted", since=reverted, timeout=120)
    assert chaos.wait_recovered(), "the DR engine did not confirm recovery in time"
    return breach, chaos.verify()


@pytest.mark.chaos(ttd="45s", rto="60s", rpo="60s")
@pytest.mark.chaos_quality(margin=0.5)
@pytest.mark.chaos_needs("trainer", "checkpoints")
@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_a_worse_version_is_never_served(chaos, fault):
    breach, result = refused_then_recovered(chaos, fault)
    assert result.wrong_predictions == 0
    assert result.integrity is True
    assert result.rpo_steps is not None and result.rpo_steps >= 0
    quarantined = [e for e in chaos.events() if e["event"] == "model.quarantined"]
    assert breach["version"] in [e["version"] for e in quarantined]
    # the rewound trainer exports that version number again: only once that new version
    # passed may the number answer a client (wrong_predictions counts it otherwise too)
    passed = next((e["t"] for e in chaos.events() if e["event"] == "quality.verdict"
                   and e["version"] == breach["version"] and e["decision"] == "promote"),
                  float("inf"))  # fmt: skip
    early = [e for e in chaos.events() if e["event"] == "request" and e["ok"]
             and e.get("version") == breach["version"] and e["t"] < passed]  # fmt: skip
    assert not early, f"{len(early)} answers from refused version {breach['version']}"


@pytest.mark.chaos(ttd="45s", rto="60s")
@pytest.mark.chaos_quality(margin=0.5, max_slowdown=3)
@pytest.mark.chaos_needs("trainer")
def test_a_slower_version_is_never_served(chaos):
    breach, result = refused_then_recovered(chaos, SlowModel(repeat=2000))
    assert result.wrong_predictions == 0
    assert "slower than the stable version's" in breach["reason"]
    (latency,) = [e for e in chaos.events()
                  if e["event"] == "quality.latency" and e["version"] == breach["version"]]
    assert latency["median_s"] > 3 * latency["stable_median_s"]
    assert not [e for e in chaos.events() if e.get("action") == "rewind"]  # weights are fine
