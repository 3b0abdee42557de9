"""The CI gate and the report/gate commands, on journals written like real runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from chaoskit.cli import main
from chaoskit.report.gate import Budget, check, parse_budgets
from chaoskit.report.metrics import ExperimentResult
from chaoskit.report.testing import SampleExperiment, cut_last_line, write_sample_run

KILL = SampleExperiment()  # ttd 320ms, rto 4.21s, own budgets ttd 1s / rto 20s
HANG = SampleExperiment(
    name="experiments/test_kill_serving.py::test_hang_serving", fault="hang", hang=True,
    ttd=1.4, rto=7.2, budgets={"ttd": 2.0, "rto": 20.0, "rpo": None},
)  # fmt: skip


def result(**fields: object) -> ExperimentResult:
    base: dict[str, object] = {"name": "exp", "fault": "kill", "ttd_s": 0.3, "rto_s": 4.0}
    base.update(fields)
    verdict = "pass" if not base.get("reasons") else "fail"
    return ExperimentResult(verdict=verdict, **base)  # type: ignore[arg-type]


def budgets(**values: str) -> list[Budget]:
    parsed, errors = parse_budgets(values)
    assert not errors
    return parsed


def test_generous_budgets_pass_and_tight_ones_name_value_and_budget() -> None:
    assert check([result()], budgets(ttd="2s", rto="30s", rpo="5m")) == []
    lines = [b.line() for b in check([result()], budgets(ttd="100ms", rto="2s"))]
    assert lines == [
        "FAIL exp: TTD 300ms exceeds budget 100ms",
        "FAIL exp: RTO 4.00s exceeds budget 2s",
    ]


def test_never_recovered_or_never_faulted_breaches_instead_of_passing() -> None:
    reasons = ["the fault was never detected", "the steady state was never restored"]
    never = result(ttd_s=None, rto_s=None, reasons=reasons)
    lines = [b.line() for b in check([never], budgets(ttd="1h", rto="1h"))]
    assert lines == [
        "FAIL exp: TTD not measured (the fault was never detected), budget 1h",
        "FAIL exp: RTO not measured (the steady state was never restored), budget 1h",
    ]  # the experiment's own identical reasons are not repeated
    no_fault = result(fault=None, ttd_s=None, rto_s=None, reasons=["no fault was injected"])
    assert [b.line() for b in check([no_fault], budgets(rto="1h"))] == [
        "FAIL exp: RTO not measured: no fault was injected"
    ]


def test_rpo_applies_only_where_recovery_points_matter() -> None:
    kill = result()  # restarting a server restores no data: no RPO
    restored = result(name="restore", rpo_s=400.0)
    promised = result(name="promised", rpo_s=math.inf, reasons=["RPO unbounded exceeds budget"])
    lines = [b.line() for b in check([kill, restored, promised], budgets(rpo="5m"))]
    assert lines == [
        "FAIL restore: RPO 6.7m exceeds budget 5m",
        "FAIL promised: RPO unbounded (no recovery point was restored) exceeds budget 5m",
    ]


def test_own_failed_verdict_breaches_unless_budgets_only() -> None:
    wrong = result(reasons=["3 wrong predictions were served"])
    assert [b.line() for b in check([wrong], budgets(rto="30s"))] == [
        "FAIL exp: experiment failed: 3 wrong predictions were served"
    ]
    assert check([wrong], budgets(rto="30s"), verdicts=False) == []


def test_each_bad_budget_gets_its_own_message() -> None:
    parsed, errors = parse_budgets({"ttd": "soon", "rto": "30s", "rpo": "-5m"})
    assert [b.metric for b in parsed] == ["rto"]
    assert errors == [
        "--ttd: 'soon' is not a duration (use e.g. 500ms, 30s, 5m)",
        "--rpo: '-5m' is not a duration (use e.g. 500ms, 30s, 5m)",
    ]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "20261127-120000-abcd"
    write_sample_run(run, [KILL, HANG])
    return run


def test_gate_command_exit_codes_and_lines(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gate", str(run_dir), "--rto", "30s", "--rpo", "5m", "--ttd", "2s"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 2 experiment(s) within budget (TTD 2s, RTO 30s, RPO 5m")
    assert "RPO not applicable to 2" in out

    assert main(["gate", str(run_dir), "--rto", "5s", "--ttd", "1s"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "FAIL experiments/test_kill_serving.py::test_hang_serving: TTD 1.40s exceeds budget 1s",
        "FAIL experiments/test_kill_serving.py::test_hang_serving: RTO 7.20s exceeds budget 5s",
    ]
    assert "2 breach(es) in 2 experiment(s)" in captured.err


def test_gate_usage_errors_exit_2_with_one_line_each(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gate", str(run_dir), "--rto", "30x", "--rpo", "five minutes"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "chaoskit: error: --rto: '30x' is not a duration (use e.g. 500ms, 30s, 5m)",
        "chaoskit: error: --rpo: 'five minutes' is not a duration (use e.g. 500ms, 30s, 5m)",
    ]
    assert main(["gate", str(tmp_path / "nowhere"), "--rto", "30s"]) == 2
    assert capsys.readouterr().err == (
        f"chaoskit: error: no journal at {tmp_path / 'nowhere' / 'journal.jsonl'}\n"
    )


def test_gate_fails_a_run_without_experiments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "journal.jsonl").write_text("")
    assert main(["gate", str(tmp_path), "--rto", "30s"]) == 1
    assert "nothing was checked" in capsys.readouterr().out


def test_gate_reads_a_cut_off_journal_with_a_warning(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut_last_line(run_dir / "journal.jsonl")
    assert main(["gate", str(run_dir), "--rto", "30s"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("chaoskit: warning: ") and "cut off" in err


def test_report_command_renders_from_the_journal_via_latest(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run_dir.parent / "latest").symlink_to(run_dir.name)
    assert main(["report", str(run_dir.parent)]) == 0
    out = capsys.readouterr().out
    assert "test_hang_serving" in out and "PASS" in out
    assert out.splitlines()[-1] == f"report: {run_dir / 'report.html'}"
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert main(["report", str(run_dir)]) == 0  # again: history keeps one copy of the run
    history = (run_dir.parent / "history.csv").read_text().splitlines()
    assert len(history) == 3


def test_report_command_without_journal_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"chaoskit: error: no journal at {tmp_path / 'journal.jsonl'}\n"
    )
