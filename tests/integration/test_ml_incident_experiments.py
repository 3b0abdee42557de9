"""The ML-incident experiments (experiments/test_model_quality.py and test_resources.py)
end to end, in one run per backend: on processes a poisoned and a slow version, a full
checkpoint disk and a CPU-starved replica; on Docker a diverged version and a full disk;
on both a replica under memory pressure.

A worse (or slower) version is refused, never answers a client, is set aside, and the
trainer is rewound to the good version's checkpoint (not for a slow one); the replicas'
model config is the default again afterwards.  A full disk is detected, the trainer's
saves fail and resume; a starved replica is failed over and repaired, and so is one the
kernel's OOM killer killed (the journal says so).  The report has
TTD, RTO and RPO, and no volume, fill file, cgroup, balloon or container is left.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from docker_support import NOTHING_LEFT, backend, docker_client  # noqa: F401

from chaoskit.journal import read_journal
from chaoskit.stack import cgroup, volume
from chaoskit.stack.docker_engine import managed_objects
from chaoskit.stack.memory_limit import cannot_limit_memory

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
SELECTED = {
    "process": ["poison", "slow", "disk", "starved", "memory"],
    "docker": ["diverge", "disk", "memory"],
}
"""A few of each family (every one runs in `make experiments`): the suite's time is short."""


def test_ml_incidents_are_detected_and_recovered_and_nothing_is_left(
    backend: tuple[str, object], pytester: pytest.Pytester  # noqa: F811
) -> None:
    name, engine = backend
    for module in ("test_model_quality", "test_resources"):
        pytester.makepyfile(**{module: (EXPERIMENTS / f"{module}.py").read_text()})
    mounted_before = set(volume.chaoskit_mounts())
    selected = SELECTED[name]
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--chaos-backend={name}", "-k", " or ".join(selected),
        timeout=900,
    )  # fmt: skip
    skipped = ("disk" in selected and volume.cannot_mount() is not None) + (
        "starved" in selected and name == "process" and cgroup.cannot_limit() is not None
    ) + ("memory" in selected and name == "process" and cannot_limit_memory() is not None)
    result.assert_outcomes(passed=len(selected) - skipped, skipped=skipped)
    latest = pytester.path / "reports" / "latest"
    with open(latest / "results.csv") as f:
        rows = {row["fault"]: row for row in csv.DictReader(f)}
    for row in rows.values():
        assert row["verdict"] == "pass" and int(row["wrong_predictions"]) == 0, row
        assert row["ttd_s"] and row["rto_s"], row
    events = read_journal(latest / "journal.jsonl")
    check_quality(rows, events)
    if "disk-full" in rows:
        check_disk_full(rows["disk-full"], events)
    if "cpu-starvation" in rows:
        starved = rows["cpu-starvation"]
        assert starved["detected_by"] in ("latency", "probe"), starved  # late, or too late
    if "memory-pressure" in rows:
        (pressed,) = [e for e in events if e["event"] == "fault.injected"
                      and e["fault"] == "memory-pressure"]  # fmt: skip
        assert pressed["changes"]["oom_killed"], pressed  # the kernel's counter, or the engine's
    assert set(volume.chaoskit_mounts()) == mounted_before  # unmounted on close
    assert cgroup.reap_orphans() == []  # the limited replicas' cgroups went with the reverts
    if engine is not None:
        left = managed_objects(engine)
        assert left == NOTHING_LEFT, left


def check_quality(rows: dict[str, dict[str, str]], events: list[dict]) -> None:
    for fault in ("poison-training", "diverge-training"):
        if fault in rows:
            assert rows[fault]["rpo_s"] and rows[fault]["rpo_steps"], rows[fault]
    breaches = [e for e in events if e["event"] == "quality.verdict" and e["decision"] == "breach"]
    assert len(breaches) >= len({"poison-training", "diverge-training", "slow-model"} & set(rows))
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


def check_disk_full(row: dict[str, str], events: list[dict]) -> None:
    assert float(row["ttd_s"]) <= 2 and float(row["rpo_s"]) > 0, row
    (started,) = [e for e in events if e["event"] == "stack.started"]
    assert started["checkpoint_volume_mb"] == 16
    (injected,) = [e for e in events
                   if e["event"] == "fault.injected" and e["fault"] == "disk-full"]  # fmt: skip
    assert injected["changes"]["free_bytes"] < 1 << 20
    assert not Path(injected["changes"]["path"]).exists()
