"""The ransomware drill (experiments/test_ransomware.py) end to end, on processes and on
Docker: it passes, the report has its TTD, RTO and RPO, the recovery came from the DR
site, and nothing of the run is left."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from docker_support import NOTHING_LEFT, backend, docker_client  # noqa: F401

from chaoskit.journal import read_journal
from chaoskit.stack.docker_engine import managed_objects

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DRILL = Path(__file__).resolve().parents[2] / "experiments" / "test_ransomware.py"


def test_the_drill_passes_from_the_off_site_copy(
    backend: tuple[str, object], pytester: pytest.Pytester  # noqa: F811
) -> None:
    name, engine = backend
    pytester.makepyfile(test_ransomware=DRILL.read_text())
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--chaos-backend={name}", timeout=600
    )
    result.assert_outcomes(passed=1)
    latest = pytester.path / "reports" / "latest"
    with open(latest / "results.csv") as f:
        (row,) = csv.DictReader(f)
    assert row["fault"] == "ransomware" and row["verdict"] == "pass", row
    assert float(row["ttd_s"]) <= 2 and float(row["rto_s"]) <= 60
    assert row["rpo_s"] and row["rpo_steps"], row
    assert int(row["wrong_predictions"]) == 0
    events = read_journal(latest / "journal.jsonl")
    fetched = [e for e in events if e.get("action") == "fetch-from-dr-site"
               and e["event"] == "recovered"]  # fmt: skip
    assert fetched and all(e["check_ok"] for e in fetched)  # again if it struck the copy
    if engine is not None:
        left = managed_objects(engine)
        assert left == NOTHING_LEFT, left
