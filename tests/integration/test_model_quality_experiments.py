"""The model-quality experiments (experiments/test_model_quality.py) end to end, on
processes and on Docker: a worse (or slower) version is refused, never answers a
client, is set aside, the trainer is rewound to the good version's checkpoint (not for
a slow one), and the replicas' model config is the default again afterwards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from docker_support import backend, docker_client  # noqa: F401

from chaoskit.journal import read_journal
from chaoskit.stack.docker_engine import managed_objects

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "test_model_quality.py"


def test_a_worse_version_is_refused_set_aside_and_training_rewound(
    backend: tuple[str, object], pytester: pytest.Pytester  # noqa: F811
) -> None:
    name, engine = backend
    pytester.makepyfile(test_model_quality=EXPERIMENTS.read_text())
    only = [] if name == "process" else ["-k", "diverge"]  # Docker: one of the two
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--chaos-backend={name}", *only, timeout=900
    )
    result.assert_outcomes(passed=4 if name == "process" else 1)
    latest = pytester.path / "reports" / "latest"
    with open(latest / "results.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        assert row["verdict"] == "pass" and int(row["wrong_predictions"]) == 0, row
        assert row["ttd_s"] and row["rto_s"], row
        if row["fault"] != "slow-model":  # a slow version rolls back without a rewind
            assert row["rpo_s"] and row["rpo_steps"], row
    events = read_journal(latest / "journal.jsonl")
    breaches = [e for e in events if e["event"] == "quality.verdict" and e["decision"] == "breach"]
    assert len(breaches) >= len(rows)
    for breach in breaches:
        (aside,) = [e for e in events
                    if e["event"] == "model.quarantined" and e["version"] == breach["version"]
                    and e["t"] >= breach["t"]][:1]  # fmt: skip
        assert (Path(aside["to"]) / str(breach["version"])).is_dir()  # moved, not deleted
        if "slower than the stable version's" in breach["reason"]:
            continue  # its weights are fine: training goes on
        good = breach["stable"]
        rewind = next(e for e in events if e["event"] == "recovery.started"
                      and e.get("action") == "rewind" and e["t"] >= breach["t"])  # fmt: skip
        assert rewind["step"] == good  # the reference trainer's version is its step
        resumed = next(e for e in events
                       if e["event"] == "trainer.started" and e["t"] > rewind["t"])  # fmt: skip
        assert resumed["step"] <= good
    exported = next(e for e in events if e["event"] == "model.exported")
    data_dir = Path(exported["path"]).parents[2]
    config = json.loads((data_dir / "model-config.json").read_text())
    assert config == {"model_version_policy": {"latest": {"num_versions": 1}},
                      "version_labels": {}}  # fmt: skip
    if engine is not None:
        left = managed_objects(engine)
        assert left == {"containers": [], "networks": [], "volumes": []}, left
