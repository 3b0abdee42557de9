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


def run_suite(tmp_path: Path, *args: str) -> tuple[int, str, int, Path]:
    """(exit code, output, pid of the run, its report) of ``chaoskit run`` on the example."""
    reports = tmp_path / "reports"
    command = [sys.executable, "-m", "chaoskit.cli", "run", "--stack", str(EXAMPLE),
               "--report-dir", str(reports), *args]  # fmt: skip
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as run:  # fmt: skip
        output, _ = run.communicate(timeout=600)
    return run.returncode, output, run.pid, reports / "latest"


def test_the_standard_suite_passes_on_the_example_project(tmp_path: Path) -> None:
    code, output, pid, latest = run_suite(tmp_path)
    assert code == 0, output[-4000:]
    assert "lacks a service with role 'dr-site'" in output  # skipped, saying why
    with open(latest / "results.csv", newline="") as f:
        rows = {row["name"].split("::")[-1]: row for row in csv.DictReader(f)}
    assert {"test_kill_replica[serving]", "test_hang_replica[serving-b]",
            "test_primary_link_fails_over[partition-refuse]",
            "test_newest_version_damage[silent-weight-change]",
            "test_checkpoint_damage_then_trainer_crash"} <= set(rows)  # fmt: skip
    for row in rows.values():
        assert row["verdict"] == "pass", row
        assert float(row["ttd_s"]) > 0 and float(row["rto_s"]) >= float(row["ttd_s"])
    checkpoint = rows["test_checkpoint_damage_then_trainer_crash"]
    assert checkpoint["integrity"] == "True" and float(checkpoint["rpo_s"]) >= 0
    assert int(checkpoint["rpo_steps"]) >= 0  # Keras checkpoints name their epoch
    damage = rows["test_newest_version_damage[bit-flip-variables]"]
    assert damage["integrity"] == "True" and damage["wrong_predictions"] == "0"
    left = [p for p, env in chaoskit_processes().items() if env[OWNER_ENV] == str(pid)]
    assert not left, f"services of the run were left behind: {left}"


def test_the_projects_own_quality_experiment_rolls_back_a_worse_version(tmp_path: Path) -> None:
    """The example's own experiment (examples/custom-model/experiments) on its stack
    file: the quality gate judges on its [quality] labelled set, pins versions over
    gRPC, refuses the worse version, and rewinds the Keras trainer."""
    reports = tmp_path / "reports"
    command = [sys.executable, "-m", "pytest", str(EXAMPLE.parent / "experiments"), "-q",
               "-p", "no:cacheprovider", f"--chaos-stack={EXAMPLE}",
               f"--chaos-report-dir={reports}"]  # fmt: skip
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as run:  # fmt: skip
        output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output[-4000:]
    with open(reports / "latest" / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["fault"], row["verdict"]) == ("worse-version", "pass"), row
    assert float(row["ttd_s"]) > 0 and float(row["rto_s"]) >= float(row["ttd_s"])
    assert float(row["rpo_s"]) >= 0 and row["wrong_predictions"] == "0"
    events = [json.loads(line) for line in (reports / "latest" / "journal.jsonl").open()]
    assert [e for e in events if e["event"] == "restore.done" and e.get("action") == "rewind"]
    applied = [e for e in events if e["event"] == "serving.config_applied"]
    assert applied and all(e.get("via") == "grpc" for e in applied)  # no config file
    left = [p for p, env in chaoskit_processes().items() if env[OWNER_ENV] == str(run.pid)]
    assert not left, f"services of the run were left behind: {left}"


def test_a_stack_probed_over_grpc_detects_kills_hangs_and_cut_links(tmp_path: Path) -> None:
    """The example with ``protocol = "grpc"``: the DR engine probes each replica's gRPC
    port through its own proxy (``<replica>-grpc``), so a kill, a hang and a cut link of
    the primary are all seen over gRPC (a cut of the replica's proxy cuts both) and
    recovered within the suite's budgets."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE.parent, project, ignore=shutil.ignore_patterns("experiments"))
    stack_file = project / "chaoskit.toml"
    text = stack_file.read_text()
    assert "replicas = 2\n" in text
    stack_file.write_text(text.replace("replicas = 2\n", 'replicas = 2\nprotocol = "grpc"\n'))
    reports = tmp_path / "reports"
    command = [sys.executable, "-m", "chaoskit.cli", "run", "--stack", str(stack_file),
               "--report-dir", str(reports), "--", "-k",
               "test_kill_replica or test_hang_replica or partition-refuse"]  # fmt: skip
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as run:  # fmt: skip
        output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output[-4000:]
    with open(reports / "latest" / "results.csv", newline="") as f:
        rows = {row["name"].split("::")[-1]: row for row in csv.DictReader(f)}
    assert {"test_kill_replica[serving]", "test_hang_replica[serving-b]",
            "test_primary_link_fails_over[partition-refuse]"} <= set(rows), sorted(rows)
    for row in rows.values():
        assert row["verdict"] == "pass", row
    events = [json.loads(line) for line in (reports / "latest" / "journal.jsonl").open()]
    cut = [e for e in events if e["event"] == "fault.injected" and e["fault"] == "partition"]
    assert cut and cut[0]["changes"]["also"] == ["serving-grpc"]
    detected = [e for e in events if e["event"] == "detected" and e["service"] == "serving"]
    assert detected and all(e["signal"] == "probe" and e["probe"] == "grpc" for e in detected)
