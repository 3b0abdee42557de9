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
        ev(11.07, "request", ok=True, correct=True, retried="serving"),
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
    assert r.retried_requests == 1  # answered through the gateway's retry: not failed
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


def dr_site_journal():
    """Checkpoints every second reach the DR site 0.2 s after creation, until a partition
    at t=13 cuts the link; the backlog arrives at t=18.5, after the heal."""
    base = 1_700_000_000
    events = [ev(10.0, "experiment.started", name="exp", budgets={"rpo": 10.0})]
    for n in range(10, 13):
        events.append(ev(n + 0.2, "backup.replicated", site_newest_created=base + n))
    events.append(ev(13.0, "fault.injected", fault="partition"))
    events.append(
        ev(13.4, "detected", service="dr-site", signal="replication", site_newest_created=base + 12)
    )
    events.append(ev(18.0, "fault.reverted"))
    events.append(ev(18.2, "recovery.started", action="resume", service="dr-site"))
    for n in (15, 13, 17, 14, 16):  # shipped in any order: the newest held is what counts
        events.append(ev(18.5, "backup.replicated", site_newest_created=base + max(15, n)))
    events.append(ev(18.6, "steady_state.ok", phase="recovery", service="dr-site"))
    events.append(ev(19.2, "backup.replicated", site_newest_created=base + 19))
    events.append(ev(20.0, "experiment.finished", name="exp", outcome="passed"))
    return events


def test_dr_site_rpo_is_a_sawtooth_of_the_newest_replicated_point():
    from chaoskit.report.metrics import dr_site_rpo_series

    base = 1_700_000_000
    series = dr_site_rpo_series(dr_site_journal(), until_wall=base + 20.0)
    walls = [round(w - base, 3) for w, _ in series]
    rpos = [round(r, 3) for _, r in series]
    assert walls[:3] == [10.2, 11.2, 11.2] and rpos[:3] == [0.2, 1.2, 0.2]
    assert max(rpos) == 6.5, "just before the backlog arrived, the newest point was from t=12"
    assert rpos[-1] == 1.0  # at the end: the point made at t=19, seen at t=20


def test_rpo_of_a_dr_site_outage_is_its_worst_moment():
    [r] = results_from_events(dr_site_journal())
    assert math.isclose(r.rpo_s, 6.5) and math.isclose(r.ttd_s, 0.4)
    assert math.isclose(r.rto_s, 5.6), "RTO ends when the DR site has caught up"
    assert r.verdict == "pass", r.reasons


def test_dr_site_rpo_needs_no_replication_before_the_fault_in_the_window():
    """The outage's own event says what the DR site held when it was cut off."""
    events = [
        e for e in dr_site_journal() if not (e["event"] == "backup.replicated" and e["t"] < 13)
    ]
    [r] = results_from_events(events)
    assert math.isclose(r.rpo_s, 6.5)


def test_replication_alone_is_no_rpo_of_an_experiment_that_did_not_cut_the_dr_site():
    events = [e for e in dr_site_journal() if e.get("service") != "dr-site"]
    events[0] = {**events[0], "budgets": {}}
    [r] = results_from_events(events)
    assert r.rpo_s is None  # nothing restored, the DR site never cut off: not measured


def test_dr_site_rpo_series_reaches_back_from_an_outage_reported_first():
    """A window that opens after the last arrival: the outage event says what the DR site
    held, and it held that since the window opened."""
    from chaoskit.report.metrics import dr_site_rpo_series

    base = 1_700_000_000
    events = [e for e in dr_site_journal() if e["t"] >= 12.5]
    series = dr_site_rpo_series(events, since_wall=base + 12.5)
    assert [(round(w - base, 3), round(r, 3)) for w, r in series[:2]] == [(12.5, 0.5), (13.4, 1.4)]
    assert max(r for _, r in series) == 6.5
    late = dr_site_rpo_series(events, since_wall=base + 11.0)  # not before the point existed
    assert (round(late[0][0] - base, 3), round(late[0][1], 3)) == (12.0, 0.0)


def test_a_default_rpo_budget_does_not_fail_an_experiment_that_restored_nothing():
    def run(declared):
        events = [e for e in kill_journal({"rto": 10, "rpo": 60}) if e.get("correct") is not False]
        events[0]["declared"] = declared
        return results_from_events(events)[0]

    defaulted = run(["rto"])  # the RPO budget came from the stack file or ini
    assert defaulted.verdict == "pass" and defaulted.rpo_s is None, defaulted.reasons
    declared = run(["rto", "rpo"])  # the marker promised an RPO and nothing was restored
    assert declared.verdict == "fail" and declared.rpo_s == math.inf


def test_who_recovered_and_why_nothing_did():
    events = kill_journal({}, recovered=False)
    events.insert(-2, ev(11.3, "recovery.started", action="observe", service="serving"))
    events.insert(-2, ev(14.0, "recovered", action="observe", service="serving",
                         recovered_by="platform"))
    events.insert(-2, ev(14.1, "steady_state.ok", phase="recovery"))
    [r] = results_from_events(events)
    assert r.recovered_by == "platform" and math.isclose(r.rto_s, 3.1)

    events = kill_journal({}, recovered=False)
    events.insert(-2, ev(11.3, "recovered", action="restart", service="serving"))
    events.insert(-2, ev(11.4, "steady_state.ok", phase="recovery"))
    assert results_from_events(events)[0].recovered_by == "chaoskit (restart)"

    events = kill_journal({}, recovered=False)
    events.insert(-2, ev(15.0, "recovery.failed", action="observe",
                         reason="nothing recovered serving within 15s"))
    [r] = results_from_events(events)
    assert "the steady state was never restored (nothing recovered serving within 15s)" in r.reasons


def test_a_recovery_that_only_came_with_the_revert_is_no_recovery():
    events = kill_journal({"rto": 30}, recovered=False)
    events.insert(-2, ev(14.0, "experiment.unrecovered", name="exp", waited_s=3.0))
    events.insert(-1, ev(16.2, "steady_state.ok", phase="recovery"))  # after the revert
    [r] = results_from_events(events)
    assert r.rto_s is None and r.verdict == "fail"
    assert "the steady state was never restored" in r.reasons


def rpo_journal(fault_fields, *after_fault):
    """A window whose fault carries *fault_fields* and is followed by *after_fault*."""
    return [
        ev(10.0, "experiment.started", name="exp", budgets={}, backend="process", seed=7),
        ev(11.0, "fault.injected", fault="bit-flip", **fault_fields),
        *after_fault,
        ev(15.0, "steady_state.ok", phase="recovery"),
        ev(16.0, "fault.reverted"),
        ev(16.5, "experiment.finished", name="exp", outcome="passed"),
    ]


WALL = 1_700_000_011  # the fault's wall time in these journals


def test_rpo_of_a_restored_checkpoint_is_the_trainer_state_at_the_fault_minus_it():
    [r] = results_from_events(rpo_journal(
        {"trainer_step": 500},
        ev(12.0, "restore.done", kind="checkpoint-files", recovery_point_step=480,
           recovery_point_created_wall=WALL - 0.3, integrity=True),
    ))  # fmt: skip
    assert r.rpo_steps == 20 and math.isclose(r.rpo_s, 0.3)


def test_rpo_of_a_trainer_that_resumed_without_a_restore():
    [r] = results_from_events(rpo_journal(
        {"trainer_step": 161, "newest_checkpoint": {"step": 160, "created_wall": WALL - 0.2}},
        ev(13.0, "trainer.started", step=160),
    ))  # fmt: skip
    assert r.rpo_steps == 1 and math.isclose(r.rpo_s, 0.2)


def test_rpo_of_a_trainer_that_saved_again_between_the_fault_and_its_crash():
    """Soak, fault 275: the state file was removed at step 25139, the trainer saved
    ckpt-25140 (rewriting it) 24 ms later, was killed, and resumed from ckpt-25140.
    Nothing was lost: RPO 0 steps and 0 s (it was unbounded, failing the RPO budget)."""
    [r] = results_from_events(rpo_journal(
        {"trainer_step": 25139, "newest_checkpoint": {"step": 25120, "created_wall": WALL - 1.1}},
        ev(11.024, "checkpoint.saved", step=25140, wall_created=WALL + 0.024),
        ev(13.0, "trainer.started", step=25140),
    ))  # fmt: skip
    assert r.rpo_steps == 0 and r.rpo_s == 0.0
    [older] = results_from_events(rpo_journal(  # resumed from an older backed-up one
        {"trainer_step": 25139, "newest_checkpoint": {"step": 25120, "created_wall": WALL - 1.1}},
        ev(10.5, "backup.recovery_point", step=25100, wall_created=WALL - 2.5),
        ev(13.0, "trainer.started", step=25100),
    ))  # fmt: skip
    assert older.rpo_steps == 39 and math.isclose(older.rpo_s, 2.5)


def test_rpo_of_a_restored_model_version_counts_only_versions_lost():
    newest = {"newest_version": {"version": 200, "created_wall": WALL - 7.8}}
    [same] = results_from_events(rpo_journal(newest, ev(
        12.0, "restore.done", kind="model-version", recovery_point_step=200,
        recovery_point_created_wall=WALL - 7.8, integrity=True)))  # fmt: skip
    assert same.rpo_s == 0.0 and same.rpo_steps == 0  # the damaged version itself is back
    [older] = results_from_events(rpo_journal(newest, ev(
        12.0, "restore.done", kind="model-version", action="quarantine",
        recovery_point_step=0, recovery_point_created_wall=WALL - 17.8, integrity=True)))
    assert math.isclose(older.rpo_s, 10.0) and older.rpo_steps == 200


def test_rpo_of_many_restores_is_per_family_the_newest_restored_then_the_worst():
    """A ransomware drill restores every version and every checkpoint: versions 199 and
    200 (the newest at the fault: nothing lost there), checkpoints at steps 460 and 480
    (20 steps, 0.3 s lost since the fault); one restore that failed to verify fails all."""
    restores = [
        ev(12.0, "restore.done", kind="model-version", recovery_point_step=199,
           recovery_point_created_wall=WALL - 17.8, integrity=True),
        ev(12.1, "restore.done", kind="model-version", recovery_point_step=200,
           recovery_point_created_wall=WALL - 7.8, integrity=True),
        ev(12.2, "restore.done", kind="checkpoint-files", recovery_point_step=460,
           recovery_point_created_wall=WALL - 1.3, integrity=True),
        ev(12.3, "restore.done", kind="checkpoint-state", recovery_point_step=480,
           recovery_point_created_wall=WALL - 0.3, integrity=True),
    ]  # fmt: skip
    newest = {"trainer_step": 500, "newest_version": {"version": 200, "created_wall": WALL - 7.8}}
    [r] = results_from_events(rpo_journal(newest, *restores))
    assert r.rpo_steps == 20 and math.isclose(r.rpo_s, 0.3) and r.integrity is True
    restores[0]["integrity"] = False
    [bad] = results_from_events(rpo_journal(newest, *restores))
    assert bad.integrity is False
    assert "restored data failed the integrity check" in bad.reasons
    # drill on Docker: a quarantine found the version to serve still encrypted (the
    # attack was not over) and its recovery point was restored intact right after
    quarantine = ev(12.05, "restore.done", kind="model-version", action="quarantine",
                    snapshot="s200", recovery_point_step=200, integrity=False)
    restores[0]["integrity"] = True
    restores[1]["snapshot"] = "s200"
    [later] = results_from_events(rpo_journal(newest, quarantine, *restores))
    assert later.integrity is True
    assert "restored data failed the integrity check" not in later.reasons


def test_rpo_is_the_worst_of_what_applies():
    """A DR site cut off (worst 6.5 s) while the trainer lost one step of 0.2 s: 6.5 s."""
    events = dr_site_journal()
    fault = next(e for e in events if e["event"] == "fault.injected")
    fault.update(trainer_step=161,
                 newest_checkpoint={"step": 160, "created_wall": fault["wall"] - 0.2})
    events.insert(events.index(fault) + 1, ev(fault["t"] + 0.5, "trainer.started", step=160))
    [r] = results_from_events(events)
    assert r.rpo_steps == 1 and math.isclose(r.rpo_s, 6.5)


def test_a_checkpoint_restored_from_after_the_fault_loses_nothing():
    [r] = results_from_events(rpo_journal(
        {"trainer_step": 500},
        ev(12.0, "restore.done", kind="checkpoint-files", recovery_point_step=520,
           recovery_point_created_wall=WALL + 2.0, integrity=True),
    ))  # fmt: skip
    assert r.rpo_steps == 0 and r.rpo_s == 0.0


def test_behind_a_quality_gate_answers_of_a_refused_version_are_wrong_until_it_passes():
    """Version 400 is refused, so its answers count as wrong; the rewound trainer exports
    a new 400 that passes: from then on its answers are right."""
    [r] = results_from_events(rpo_journal(
        {},
        ev(11.1, "request", ok=True, correct=True, version=200),
        ev(11.2, "quality.verdict", version=400, decision="breach"),
        ev(11.3, "request", ok=True, correct=True, version=400),
        ev(11.4, "request", ok=True, correct=True, version=200),
        ev(11.5, "request", ok=False, correct=None, version=None),
        ev(12.0, "quality.verdict", version=400, decision="promote"),
        ev(12.1, "request", ok=True, correct=True, version=400),
        ev(12.2, "request", ok=True, correct=False, version=None),
    ))  # fmt: skip
    assert r.wrong_predictions == 2 and r.failed_requests == 1
    assert any("2 wrong predictions" in reason for reason in r.reasons)


def test_rpo_of_a_full_checkpoint_disk_is_the_gap_until_saves_resumed():
    newest = {"step": 480, "created_wall": WALL - 0.5}
    [r] = results_from_events(rpo_journal(
        {"trainer_step": 490, "newest_checkpoint": newest},
        ev(11.5, "detected", service="checkpoint-store", signal="disk-full"),
        ev(13.0, "backup.recovery_point", checkpoint="ckpt-520", step=520,
           wall_created=WALL + 1.8),
    ))  # fmt: skip
    assert r.rpo_steps == 40 and math.isclose(r.rpo_s, 2.3)
