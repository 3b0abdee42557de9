"""The project's own experiment on its own stack: a worse model is never served.

Clients ask for the version label ``stable``; chaoskit's quality gate scores each new
version the trainer exports on ``labelled.json`` (the stack file's ``[quality]``) and
pins ``stable`` through the replicas' gRPC port (``HandleReloadConfigRequest``, as on a
real tensorflow/serving).  A worse version (the newest, its largest weight matrix
negated, published as the next number) must be refused, ``stable`` must stay on the
good version, the bad one must be set aside, and the trainer rewound to the checkpoint
the good version came from (RPO: the epochs lost).  Run it with::

    pytest examples/custom-model/experiments --chaos-stack examples/custom-model/chaoskit.toml
"""

from __future__ import annotations

import pytest

from chaoskit.faults.worse_version import WorseVersion


@pytest.mark.chaos(ttd="10s", rto="90s", rpo="5m")
@pytest.mark.chaos_quality(margin=0.1)
@pytest.mark.chaos_needs("quality-gate")
def test_a_worse_version_is_refused_and_rolled_back(chaos):
    with chaos.inject(WorseVersion(scale=-1.0)):
        (breach,) = chaos.wait_for("quality.verdict", decision="breach", timeout=60)
    assert chaos.wait_recovered(), "the DR engine did not confirm recovery in time"
    result = chaos.verify()
    assert result.wrong_predictions == 0
    assert result.failed_requests == 0
    assert "accuracy" in breach["reason"] and "beyond the bound" in breach["reason"]
    quarantined = [e["version"] for e in chaos.events() if e["event"] == "model.quarantined"]
    assert breach["version"] in quarantined
    stable = [e for e in chaos.events() if e["event"] == "quality.promoted"]
    assert stable and breach["version"] not in [e["version"] for e in stable]
    reloads = [e for e in chaos.events() if e["event"] == "serving.config_applied"]
    assert reloads and all(e.get("via") == "grpc" for e in reloads)  # no config file
