"""The user's own stack: the standard suite against examples/custom-model, end to end.

``chaoskit run --stack examples/custom-model/chaoskit.toml`` starts the example's own
trainer (Keras ModelCheckpoint, ``model.export()``) and two replicas of chaoskit's
server over its two-input model, runs every applicable experiment of the standard suite
and writes the report; the DR-site experiments are skipped, naming what is missing.
Afterwards no process of the run may be left.
"""

from __future__ import annotations

import csv
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
