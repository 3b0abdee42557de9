"""The resource experiments (experiments/test_resources.py) end to end, on processes and
on Docker: a full checkpoint disk is detected, the trainer's saves fail and resume; a
CPU-starved replica is failed over and repaired; the report has TTD, RTO and RPO, and no
volume, fill file, cgroup or container is left."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from docker_support import backend, docker_client  # noqa: F401

from chaoskit.journal import read_journal
from chaoskit.stack import cgroup, volume
from chaoskit.stack.docker_engine import managed_objects

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "test_resources.py"
if volume.cannot_mount():
    pytest.skip(f"resource experiments: {volume.cannot_mount()}", allow_module_level=True)


def test_a_full_disk_is_seen_and_nothing_is_left(
    backend: tuple[str, object], pytester: pytest.Pytester  # noqa: F811
) -> None:
    name, engine = backend
    pytester.makepyfile(test_resources=EXPERIMENTS.read_text())
    mounted_before = set(volume.chaoskit_mounts())
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--chaos-backend={name}", timeout=600
    )
    result.assert_outcomes(passed=2)
    latest = pytester.path / "reports" / "latest"
    with open(latest / "results.csv") as f:
        rows = {row["fault"]: row for row in csv.DictReader(f)}
    disk, cpu = rows["disk-full"], rows["cpu-starvation"]
    assert disk["verdict"] == "pass" and cpu["verdict"] == "pass", rows
    assert float(disk["ttd_s"]) <= 2 and disk["rto_s"] and float(disk["rpo_s"]) > 0, disk
    assert cpu["detected_by"] == "latency" and float(cpu["rto_s"]) <= 15, cpu
    events = read_journal(latest / "journal.jsonl")
    (started,) = [e for e in events if e["event"] == "stack.started"]
    assert started["checkpoint_volume_mb"] == 16
    (injected,) = [e for e in events
                   if e["event"] == "fault.injected" and e["fault"] == "disk-full"]  # fmt: skip
    assert injected["changes"]["free_bytes"] < 1 << 20
    assert not Path(injected["changes"]["path"]).exists()
    assert set(volume.chaoskit_mounts()) == mounted_before  # unmounted on close
    assert cgroup.reap_orphans() == []  # the starved replica's cgroup went with the revert
    if engine is not None:
        left = managed_objects(engine)
        assert left == {"containers": [], "networks": [], "volumes": []}, left
