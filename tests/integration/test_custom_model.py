"""The user's own stack: the standard suite against examples/custom-model, end to end.

``chaoskit run --stack examples/custom-model/chaoskit.toml`` starts the example's own
trainer (Keras ModelCheckpoint, ``model.export()``) and two replicas of chaoskit's
server over its two-input model, runs every applicable experiment of the standard suite
and writes the report; the DR-site experiments are skipped, naming what is missing.
Afterwards no process of the run may be left.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chaoskit.stack.process import OWNER_ENV, chaoskit_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom-model" / "chaoskit.toml"


def grpc_probed_copy(tmp_path: Path) -> Path:
    """The example project with ``protocol = "grpc"``: the DR engine probes each replica's
    gRPC port through its own proxy (``<replica>-grpc``)."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE.parent, project)
    stack_file = project / "chaoskit.toml"
    text = stack_file.read_text()
    assert "replicas = 2\n" in text
    stack_file.write_text(text.replace("replicas = 2\n", 'replicas = 2\nprotocol = "grpc"\n'))
    return stack_file


def test_the_standard_suite_and_the_projects_own_experiment_pass_on_the_example(
    tmp_path: Path,
) -> None:
    """``chaoskit run`` on the example (its gRPC-probed variant), with the project's own
    experiment (examples/custom-model/experiments) in the same run: every applicable
    suite experiment passes, seen over gRPC (a cut of a replica's proxy cuts both of its
    links); the quality gate judges on the [quality] labelled set, pins versions over
    gRPC, refuses the worse version and rewinds the Keras trainer; nothing is left."""
    stack_file = grpc_probed_copy(tmp_path)
    reports = tmp_path / "reports"
    command = [sys.executable, "-m", "chaoskit.cli", "run", "--stack", str(stack_file),
               "--report-dir", str(reports), "--", str(stack_file.parent / "experiments")]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as run:  # fmt: skip
        output, _ = run.communicate(timeout=900)
    assert run.returncode == 0, output[-4000:]
    assert "lacks a service with role 'dr-site'" in output  # skipped, saying why
    latest = reports / "latest"
    with open(latest / "results.csv", newline="") as f:
        rows = {row["name"].split("::")[-1]: row for row in csv.DictReader(f)}
    assert {"test_kill_replica[serving]", "test_hang_replica[serving-b]",
            "test_primary_link_fails_over[partition-refuse]",
            "test_newest_version_damage[silent-weight-change]",
            "test_checkpoint_damage_then_trainer_crash",
            "test_a_worse_version_is_refused_and_rolled_back"} <= set(rows)  # fmt: skip
    for row in rows.values():
        assert row["verdict"] == "pass", row
        assert float(row["ttd_s"]) > 0 and float(row["rto_s"]) >= float(row["ttd_s"])
    checkpoint = rows["test_checkpoint_damage_then_trainer_crash"]
    assert checkpoint["integrity"] == "True" and float(checkpoint["rpo_s"]) >= 0
    assert int(checkpoint["rpo_steps"]) >= 0  # Keras checkpoints name their epoch
    damage = rows["test_newest_version_damage[bit-flip-variables]"]
    assert damage["integrity"] == "True" and damage["wrong_predictions"] == "0"
    worse = rows["test_a_worse_version_is_refused_and_rolled_back"]
    assert worse["fault"] == "worse-version" and worse["wrong_predictions"] == "0"
    assert float(worse["rpo_s"]) >= 0

    events = [json.loads(line) for line in (latest / "journal.jsonl").open()]
    cut = [e for e in events if e["event"] == "fault.injected" and e["fault"] == "partition"]
    assert cut and all(e["changes"]["also"] == [f"{e['changes']['proxy']}-grpc"] for e in cut)
    probed = [e for e in events if e["event"] == "detected" and e["signal"] == "probe"]
    assert probed and all(e["probe"] == "grpc" for e in probed)
    assert [e for e in events if e["event"] == "restore.done" and e.get("action") == "rewind"]
    applied = [e for e in events if e["event"] == "serving.config_applied"]
    assert applied and all(e.get("via") == "grpc" for e in applied)  # no config file
    left = [p for p, env in chaoskit_processes().items() if env[OWNER_ENV] == str(run.pid)]
    assert not left, f"services of the run were left behind: {left}"
