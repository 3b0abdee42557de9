"""End to end: the plugin runs real experiments on the real reference stack.

One pytest subprocess runs passing experiments and failing ones; another is
interrupted with Ctrl-C in the middle of an experiment.  Afterwards no service process
of either run may be left, and the report must say what happened.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from chaoskit.journal import read_journal
from chaoskit.stack.process import OWNER_ENV, chaoskit_processes
from chaoskit.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def leftovers(owner_pid: int) -> list[int]:
    return [pid for pid, env in chaoskit_processes().items() if env[OWNER_ENV] == str(owner_pid)]


def test_experiments_report_and_leave_nothing_behind(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_exp=textwrap.dedent(
            """
            import pytest
            from chaoskit.faults.network import Partition
            from chaoskit.faults.service import KillService

            @pytest.mark.chaos(ttd="2s", rto="30s")
            def test_kill(chaos):
                chaos.run(KillService("serving"))

            @pytest.mark.chaos(ttd="2s", rto="5s")
            def test_partition(chaos):
                chaos.run(Partition(proxy="serving", mode="hang"))

            @pytest.mark.chaos(rto="30s")
            def test_broken_experiment(chaos):
                with chaos.inject(KillService("serving")):
                    raise RuntimeError("the experiment body failed")

            def test_broken_example(chaos_experiments):
                with chaos_experiments("first"):
                    raise ValueError("the example failed")
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*chaoskit experiments*", "*test_kill*kill*PASS*",
                                 "*test_broken_experiment*kill*FAIL*"])  # fmt: skip
    latest = pytester.path / "reports" / "latest"
    with open(latest / "results.csv") as f:
        rows = {row["name"].rsplit("::", 1)[1]: row for row in csv.DictReader(f)}
    kill = rows["test_kill"]
    assert 0 < float(kill["ttd_s"]) <= 2 and float(kill["ttd_s"]) < float(kill["rto_s"]) <= 30
    assert kill["rpo_s"] == "" and kill["verdict"] == "pass" and kill["rto_budget_s"] == "30.0"
    partition = rows["test_partition"]
    assert partition["verdict"] == "pass" and float(partition["rto_s"]) <= 5
    events = read_journal(latest / "journal.jsonl")
    errors = {e["name"].rsplit("::", 1)[1]: e for e in events if e["event"] == "experiment.error"}
    report = (latest / "report.md").read_text()
    for name, kind, message in [
        ("test_broken_experiment", "RuntimeError", "the experiment body failed"),
        ("test_broken_example[first]", "ValueError", "the example failed"),
    ]:  # the exception, in the journal and as the first reason in results and report
        assert (errors[name]["type"], errors[name]["message"]) == (kind, message)
        reason = f"the experiment itself failed: {kind}: {message}"
        assert rows[name]["verdict"] == "fail" and rows[name]["reasons"].startswith(reason)
        assert f"- {reason}" in report
    assert set(errors) == {"test_broken_experiment", "test_broken_example[first]"}
    actions = [e.get("action") for e in events if e["event"] == "recovery.started"]
    assert "failover" in actions  # two replicas: the gateway moves, then moves back
    assert any(e["event"] == "failback" for e in events)
    owners = {e["pid"] for e in events if e["event"] == "serving.started" and "pid" in e}
    assert owners, "serving journals its start"
    assert not [pid for pid in chaoskit_processes() if pid in owners]


BLOCKING = """
import pathlib, time
import pytest
from chaoskit.faults.service import HangService

@pytest.mark.chaos(rto="60s")
def test_interrupted(chaos):
    with chaos.inject(HangService("serving")):
        pathlib.Path("inside-experiment").write_text("1")
        time.sleep(300)
"""


def test_ctrl_c_stops_the_stack_and_reverts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_block=BLOCKING)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_block.py"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # a run started as a shell's background job inherits SIGINT ignored, and pytest
        # then never sees the Ctrl-C (two CI dry runs timed out on it): the user's has it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        marker = pytester.path / "inside-experiment"
        wait_until(lambda: marker.exists() or proc.poll() is not None, 180, what="experiment")
        assert proc.poll() is None, proc.stdout.read()
        assert leftovers(proc.pid), "the stack runs while the experiment does"
        os.kill(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    assert leftovers(proc.pid) == []
    events = read_journal(pytester.path / "reports" / "latest" / "journal.jsonl")
    kinds = [e["event"] for e in events]
    assert "fault.injected" in kinds and "fault.reverted" in kinds
    finished = [e for e in events if e["event"] == "experiment.finished"]
    assert finished and finished[-1]["outcome"] == "interrupted"
