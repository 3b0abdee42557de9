"""End to end on the reference stack: an experiment is one window, and recovered means
recovered (issue 16).  Each test starts the stack once (~40 s of CPU on this machine)."""

from __future__ import annotations

import csv
import json
import textwrap

import pytest

from chaoskit.journal import read_journal

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_second_run_is_an_error_and_injects_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_twice=textwrap.dedent(
            """
            import pytest
            from chaoskit.faults.service import KillService

            @pytest.mark.chaos(ttd="2s", rto="30s")
            def test_twice(chaos):
                chaos.run(KillService("serving"))
                chaos.run(KillService("serving-b"))
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E *StackError: experiment *test_twice has already finished*"
                                 "*use the chaos_experiments fixture for several"])  # fmt: skip
    events = read_journal(pytester.path / "reports" / "latest" / "journal.jsonl")
    injected = [e["params"]["service"] for e in events if e["event"] == "fault.injected"]
    assert injected == ["serving"], "the second kill acted outside any window"
    with open(pytester.path / "reports" / "latest" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


HELD = """
import time
import pytest
from chaoskit.faults.network import Latency
from chaoskit.faults.service import KillService

@pytest.mark.chaos(ttd="2s", rto="30s")
def test_held(chaos):
    with chaos.inject(KillService("serving")), chaos.inject(
        Latency(proxy="serving-b", delay="200ms")
    ):
        assert chaos.wait_recovered()
        returned = time.monotonic()
        events = chaos.events()
        assert not [e for e in events if e["event"] == "fault.reverted"], "reverted early"
        restarted = [e for e in events if e["event"] == "recovered"
                     and e.get("action") == "restart" and e.get("service") == "serving"]
        assert restarted and restarted[0]["t"] < returned, "returned before serving was back"
"""


def test_a_held_compound_fault_waits_for_every_service(pytester: pytest.Pytester) -> None:
    """The issue's reproduction: not done at the first steady state (the failover to the
    slow serving-b); serving-b's latency detection is part of the result."""
    pytester.makepyfile(test_held=HELD)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=1)
    latest = pytester.path / "reports" / "latest"
    events = read_journal(latest / "journal.jsonl")
    fault = next(e for e in events if e["event"] == "fault.injected")
    first_ok = next(
        e for e in events if e["event"] == "steady_state.ok" and e.get("phase") == "recovery"
    )
    with open(latest / "results.csv") as f:
        [row] = list(csv.DictReader(f))
    assert row["fault"] == "kill" and row["faults"] == "kill+latency"
    assert "serving-b:latency@" in row["detections"], row["detections"]
    assert float(row["rto_s"]) > first_ok["t"] - fault["t"] + 0.5, "RTO at the first steady state"
    [record] = json.loads((latest / "results.json").read_text())
    assert [(f["kind"], f["target"], f["detected_by"]) for f in record["per_fault"]] == [
        ("kill", "serving", "probe"), ("latency", "serving-b", "latency")
    ]  # fmt: skip
