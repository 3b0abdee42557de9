"""Metrics are computed from journal events only; these journals are written by hand."""

from __future__ import annotations

import math

from chaoskit.report.metrics import results_from_events


def ev(t, event, **fields):
    return {"t": t, "wall": 1_700_000_000 + t, "event": event, **fields}


def kill_journal(budgets, *, detected=True, recovered=True, outcome="passed"):
    events = [
        ev(10.0, "experiment.started", name="exp", budgets=budgets, backend="process", seed=7),
        ev(10.1, "steady_state.ok", phase="before"),
        ev(10.2, "request", ok=True, correct=True),
        ev(11.0, "fault.injected", fault="kill", trainer_step=500),
        ev(11.05, "request", ok=False, correct=None),
        ev(11.1, "request", ok=True, correct=False),
    ]
    if detected:
        events.append(ev(11.2, "detected", service="serving"))
    if recovered:
        events.append(ev(15.5, "steady_state.ok", phase="recovery"))
    events.append(ev(16.0, "fault.reverted"))
    events.append(ev(16.5, "experiment.finished", name="exp", outcome=outcome))
    return events


def test_ttd_rto_and_request_counts_come_from_event_times():
    [r] = results_from_events(kill_journal({"ttd": 1.0, "rto": 10.0, "rpo": None}))
    assert r.fault == "kill"
    assert math.isclose(r.ttd_s, 0.2) and math.isclose(r.rto_s, 4.5)
    assert r.failed_requests == 1 and r.wrong_predictions == 1
    assert r.rpo_s is None and r.integrity is None  # not measured: empty, not zero
    assert r.verdict == "fail" and r.reasons == ["1 wrong predictions were served"]


def test_budget_breach_names_measured_and_budget():
    events = [e for e in kill_journal({"ttd": 0.1, "rto": 3.0}) if e.get("correct") is not False]
    [r] = results_from_events(events)
    assert r.verdict == "fail"
    assert "TTD 200ms exceeds budget 100ms" in r.reasons
    assert "RTO 4.50s exceeds budget 3.00s" in r.reasons


def test_pass_when_within_budgets():
    events = [e for e in kill_journal({"ttd": 1, "rto": 10}) if e.get("correct") is not False]
    [r] = results_from_events(events)
    assert r.verdict == "pass", r.reasons
    assert r.duration_s == 6.5 and r.seed == 7 and r.backend == "process"


def test_undetected_and_unrecovered_fail():
    [r] = results_from_events(kill_journal({}, detected=False, recovered=False))
    assert r.ttd_s is None and r.rto_s is None
    assert "the fault was never detected" in r.reasons
    assert "the steady state was never restored" in r.reasons


def test_rpo_budget_without_a_restore_is_unbounded():
    [r] = results_from_events(kill_journal({"rpo": 60}))
    assert r.rpo_s == math.inf
    assert any(reason.startswith("RPO unbounded") for reason in r.reasons)


def test_rpo_and_integrity_from_restore_event():
    events = kill_journal({"rpo": 60})
    events.insert(-2, ev(14.0, "restore.done", recovery_point_created_wall=1_700_000_000 + 5.0,
                         recovery_point_step=460, integrity=True))  # fmt: skip
    [r] = results_from_events(events)
    assert math.isclose(r.rpo_s, 6.0) and r.rpo_steps == 40 and r.integrity is True


def test_experiments_are_split_by_window_and_interrupted_ones_fail():
    first = kill_journal({"rto": 10})
    second = [dict(e, t=e["t"] + 100, name=e.get("name") and "exp2") for e in kill_journal({})]
    second = [e for e in second if e["event"] != "experiment.finished"]
    results = results_from_events(first + second)
    assert [r.name for r in results] == ["exp", "exp2"]
    assert "the experiment itself interrupted" in results[1].reasons
