"""A cleanup that raises: the others still run, the report is still written, the failure
is printed in the summary and the session fails.  No stack is started: a conftest
fixture registers its cleanups through the plugin's RunState, as chaos_stack does."""

from __future__ import annotations

import json

import pytest

from chaoskit.journal import read_journal

CONFTEST = """
import pytest
from chaoskit.plugin import STATE

@pytest.fixture
def started(request):
    state = request.config.stash[STATE]
    state.open_journal()
    marker = request.config.rootpath / "stack-closed"

    def close_stack():
        marker.write_text("closed")

    def stop_guard():
        raise {error}

    state.cleanups += [close_stack, stop_guard]
    yield
"""


def run_with_failing_cleanup(pytester: pytest.Pytester, error: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST.format(error=error))
    pytester.makepyfile("def test_x(started): pass")
    return pytester.runpytest_subprocess(timeout=120)


def test_a_failing_cleanup_fails_the_session_after_the_report(pytester: pytest.Pytester) -> None:
    result = run_with_failing_cleanup(pytester, 'RuntimeError("guard lock held by pid 4242")')
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the test passed; its teardown did not
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*= chaoskit cleanup failures =*",
        "cleanup failed: *stop_guard: RuntimeError: guard lock held by pid 4242",
    ])  # fmt: skip
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert (pytester.path / "stack-closed").exists()  # the older cleanup still ran
    latest = pytester.path / "reports" / "latest"
    assert json.loads((latest / "results.json").read_text()) == []
    assert (latest / "report.html").exists()
    [failed] = [e for e in read_journal(latest / "journal.jsonl") if e["event"] == "cleanup.failed"]
    assert failed["name"].endswith("stop_guard") and failed["type"] == "RuntimeError"
    assert failed["message"] == "guard lock held by pid 4242"


def test_ctrl_c_in_a_cleanup_still_writes_the_report(pytester: pytest.Pytester) -> None:
    result = run_with_failing_cleanup(pytester, "KeyboardInterrupt")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["cleanup failed: *stop_guard: KeyboardInterrupt"])
    assert (pytester.path / "stack-closed").exists()
    assert (pytester.path / "reports" / "latest" / "report.html").exists()
