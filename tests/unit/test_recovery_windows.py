"""Recovered means recovered, and compound faults are first-class: journals by hand.

The journals follow what the DR engine writes (dr/engine.py, dr/failover.py,
dr/store_guard.py, dr/replication.py); the rule under test is the one
``Experiment.wait_recovered`` and the RTO share (chaoskit/report/recovery.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from chaoskit.journal import Journal
from chaoskit.report.metrics import results_from_events
from chaoskit.report.recovery import RecoveryTracker
from chaoskit.report.results import write_run_report


def ev(t, event, **fields):
    return {"t": t, "wall": 1_700_000_000 + t, "event": event, **fields}


def start(**fields):
    return ev(0.0, "experiment.started", name="exp", budgets={}, **fields)


def finished(t=9.0):
    return ev(t, "experiment.finished", name="exp", outcome="passed")


def held_kill_and_latency():
    """The issue's reproduction: kill serving and 200 ms on serving-b, both held.  The
    failover to serving-b is confirmed at once, then serving-b is judged too slow (its
    link: the repair waits), serving is restarted behind the failover, heals, and the
    gateway fails back to it."""
    return [
        start(routed="serving"),
        ev(1.0, "fault.injected", fault="kill", params={"service": "serving"}),
        ev(1.001, "fault.injected", fault="latency", params={"proxy": "serving-b"}),
        ev(1.2, "detected", service="serving", signal="probe"),
        ev(1.2, "recovery.started", action="failover", service="serving", to="serving-b"),
        ev(1.2, "recovered", action="failover", service="serving-b"),
        ev(1.21, "steady_state.ok", phase="recovery"),  # the old answer: RTO 210 ms
        ev(1.3, "detected", service="serving-b", signal="latency", reason="slow answer"),
        ev(1.31, "recovery.started", action="restart", service="serving", background=True),
        ev(3.2, "recovered", action="restart", service="serving"),
        ev(3.3, "steady_state.ok", phase="recovery"),  # the gateway's canary: serving-b
        ev(3.31, "repair.waiting", service="serving-b"),
        ev(3.8, "detected", service="serving-b", signal="latency"),  # held: detected again
        ev(3.81, "repair.waiting", service="serving-b"),
        ev(4.3, "healed", service="serving"),
        ev(4.3, "failback", service="serving"),
        ev(4.4, "detected", service="serving-b", signal="latency"),
        ev(4.41, "repair.waiting", service="serving-b"),
        ev(5.0, "fault.reverted", fault="latency"),
        ev(5.0, "fault.reverted", fault="kill"),
        ev(6.1, "healed", service="serving-b"),
        finished(),
    ]


def clear_after(events):
    """After each event, whether wait_recovered would return (as it reads the journal)."""
    tracker = RecoveryTracker(events[0])
    states = []
    for event in events[1:]:
        tracker.feed(event)
        states.append((event["t"], event["event"], tracker.clear()))
    return states


def test_held_compound_fault_is_not_recovered_at_the_first_steady_state():
    states = clear_after(held_kill_and_latency())
    first = next((t, kind) for t, kind, clear in states if clear)
    assert first == (4.3, "failback"), "serving back and serving-b out of the client path"
    [r] = results_from_events(held_kill_and_latency())
    assert math.isclose(r.rto_s, 3.3) and r.recovered_by == "chaoskit (restart)"
    assert r.detections == [
        {"service": "serving", "signal": "probe", "after_s": 0.2, "count": 1},
        {"service": "serving-b", "signal": "latency", "after_s": 0.3, "count": 3},
    ]
    assert r.row()["detections"] == "serving:probe@0.2s; serving-b:latency@0.3s x3"


def test_compound_faults_are_listed_with_ttd_and_detector_each():
    [r] = results_from_events(held_kill_and_latency())
    assert r.fault == "kill" and r.faults == "kill+latency"
    assert r.per_fault == [
        {"kind": "kill", "target": "serving", "ttd_s": 0.2, "detected_by": "probe"},
        {"kind": "latency", "target": "serving-b", "ttd_s": 0.299, "detected_by": "latency"},
    ]


def test_rto_ends_when_the_last_fault_is_recovered():
    """Bit flip, then a deleted version: the second restore and its confirmation end it."""
    events = [
        start(),
        ev(1.0, "fault.injected", fault="bit-flip", params={"target": "model:latest/x"}),
        ev(1.3, "detected", service="model-store", signal="integrity"),
        ev(1.3, "recovery.started", action="restore", target="/m/3"),
        ev(1.8, "recovered", action="restore", target="/m/3", service="model-store"),
        ev(1.9, "steady_state.ok", phase="recovery"),
        ev(2.0, "fault.injected", fault="delete-version", params={"target": "model:latest"}),
        ev(2.4, "detected", service="model-store", signal="integrity"),
        ev(2.4, "recovery.started", action="restore", target="/m/3"),
        ev(3.0, "recovered", action="restore", target="/m/3"),  # older journal: no service
        ev(3.1, "steady_state.ok", phase="recovery"),
        finished(),
    ]
    [r] = results_from_events(events)
    assert r.faults == "bit-flip+delete-version" and math.isclose(r.rto_s, 2.1)
    assert [(f["target"], f["ttd_s"]) for f in r.per_fault] == [
        ("model:latest/x", 0.3), ("model:latest", 0.4)
    ]  # fmt: skip


def test_a_repair_behind_a_failover_is_confirmed_by_the_replica_itself():
    """The gateway's canary after a background restart is answered by the other replica."""
    events = [e for e in held_kill_and_latency() if e.get("service") != "serving-b"]
    events = [e for e in events if e.get("fault") != "latency"]
    states = clear_after(events)
    assert [(t, kind) for t, kind, clear in states if clear][0] == (4.3, "healed")


def test_a_standby_whose_link_is_broken_is_out_of_harms_way():
    """serving-b was detected first, as a standby: the gateway never routed to it."""
    events = [
        start(routed="serving"),
        ev(1.0, "fault.injected", fault="kill", params={"service": "serving"}),
        ev(1.001, "fault.injected", fault="latency", params={"proxy": "serving-b"}),
        ev(1.2, "detected", service="serving-b", signal="latency"),
        ev(1.21, "repair.waiting", service="serving-b"),
        ev(1.3, "detected", service="serving", signal="probe"),
        ev(1.3, "recovery.started", action="restart", service="serving", background=False),
        ev(4.0, "recovered", action="restart", service="serving"),
        ev(4.1, "steady_state.ok", phase="recovery"),
        finished(),
    ]
    [r] = results_from_events(events)
    assert math.isclose(r.rto_s, 3.1)
    assert [d["service"] for d in r.detections] == ["serving-b", "serving"]


def test_a_process_fault_keeps_its_service_outstanding_until_it_is_detected_and_back():
    """Checkpoint damage restored first must not end the RTO of a killed trainer."""
    events = [
        start(),
        ev(1.0, "fault.injected", fault="bit-flip", params={"target": "checkpoint:latest"}),
        ev(1.01, "fault.injected", fault="kill", params={"service": "trainer"}),
        ev(1.2, "detected", service="model-store", signal="integrity"),
        ev(1.2, "recovery.started", action="restore", target="/ckpt"),
        ev(1.5, "recovered", action="restore", target="/ckpt", service="model-store"),
        ev(1.6, "steady_state.ok", phase="recovery"),
        ev(2.0, "detected", service="trainer", signal="process"),
        ev(2.0, "recovery.started", action="restore", target="/ckpt"),
        ev(3.0, "restore.done", recovery_point_created_wall=1_700_000_000.5),
        ev(3.0, "recovered", action="restore", target="/ckpt", service="trainer"),
        ev(3.2, "steady_state.ok", phase="recovery"),
        finished(),
    ]
    assert [(t, k) for t, k, clear in clear_after(events) if clear][0] == (3.2, "steady_state.ok")
    [r] = results_from_events(events)
    assert math.isclose(r.rto_s, 2.2)


def test_a_node_loss_keeps_every_service_of_the_node_outstanding():
    """The replica the probes saw is back; the trainer, lost with it, is not yet."""
    events = [
        start(routed="serving"),
        ev(1.0, "fault.injected", fault="node-loss", params={"node": None},
           changes={"node": "node1", "services": ["serving-b", "trainer"]}),
        ev(1.2, "detected", service="serving-b", signal="probe"),
        ev(1.2, "recovery.started", action="restart", service="serving-b", background=True),
        ev(5.0, "recovered", action="restart", service="serving-b"),
        ev(6.0, "healed", service="serving-b"),
        ev(6.1, "steady_state.ok", phase="recovery"),
        ev(17.0, "detected", service="trainer", signal="process"),
        ev(17.0, "recovery.started", action="restart", service="trainer"),
        ev(20.0, "recovered", action="restart", service="trainer"),
        ev(20.5, "steady_state.ok", phase="recovery"),
        finished(21.0),
    ]
    clears = [(t, k) for t, k, clear in clear_after(events) if clear]
    assert clears[0] == (20.5, "steady_state.ok")
    [r] = results_from_events(events)
    assert math.isclose(r.rto_s, 19.5)


def test_learned_detection_is_recovered_when_the_monitor_sees_normal_again():
    """(The learned detectors' ``gateway`` row is the client path, not a service.)"""
    events = [
        start(routed="serving"),
        ev(1.0, "fault.injected", fault="latency", params={"proxy": "serving"}),
        ev(3.0, "detected", service="serving", signal="learned"),
        ev(3.1, "detected", service="gateway", signal="learned"),
        ev(3.5, "steady_state.ok", phase="recovery"),
        ev(6.0, "learned.normal", service="serving"),
        finished(),
    ]
    [r] = results_from_events(events)
    assert math.isclose(r.rto_s, 5.0)
    assert [d["service"] for d in r.detections] == ["serving", "gateway"]


def test_a_dr_site_cut_off_is_back_when_it_has_caught_up():
    events = [
        start(routed="serving"),
        ev(1.0, "fault.injected", fault="partition", params={"proxy": "dr-site"}),
        ev(1.5, "detected", service="dr-site", signal="replication"),
        ev(1.5, "recovery.started", action="queue", service="dr-site", background=True),
        ev(2.0, "steady_state.ok", phase="recovery"),  # serving's: says nothing of the DR site
        ev(4.0, "fault.reverted", fault="partition"),
        ev(4.2, "recovery.started", action="resume", service="dr-site"),
        ev(5.0, "recovered", action="resume", service="dr-site"),
        ev(5.0, "steady_state.ok", phase="recovery", service="dr-site"),
        finished(),
    ]
    [r] = results_from_events(events)
    assert math.isclose(r.rto_s, 4.0)


def test_results_files_list_every_fault_and_detection(tmp_path: Path) -> None:
    run_dir = tmp_path / "20261201-120000-aaaa"
    run_dir.mkdir()
    journal = Journal(run_dir / "journal.jsonl")
    for event in held_kill_and_latency():
        journal.record(**{"event": event["event"]}, **{k: v for k, v in event.items()
                                                       if k != "event"})  # fmt: skip
    journal.close()
    write_run_report(run_dir)
    [row] = pd.read_csv(run_dir / "results.csv").to_dict("records")
    assert row["fault"] == "kill" and row["faults"] == "kill+latency"
    assert row["detections"] == "serving:probe@0.2s; serving-b:latency@0.3s x3"
    [record] = json.loads((run_dir / "results.json").read_text())
    assert record["faults"] == "kill+latency"
    assert [d["service"] for d in record["detections"]] == ["serving", "serving-b"]
    assert [(f["kind"], f["target"], f["detected_by"]) for f in record["per_fault"]] == [
        ("kill", "serving", "probe"), ("latency", "serving-b", "latency")
    ]  # fmt: skip
    assert "kill+latency" in (run_dir / "report.md").read_text()
    assert "serving-b:latency@0.3s x3" in (run_dir / "report.html").read_text()


def test_what_the_engine_journaled_while_a_fault_took_effect_counts():
    """A fault's event is written once it took effect, with the time it began: a detection
    meanwhile precedes it in the file (as wait_recovered reads it)."""
    events = [
        start(routed="serving"),
        ev(1.3, "detected", service="serving-b", signal="probe"),
        ev(1.0, "fault.injected", fault="partition", params={"proxy": "serving-b"}),
        ev(1.5, "steady_state.ok", phase="recovery"),
    ]
    tracker = RecoveryTracker(events[0])
    for event in events[1:]:
        tracker.feed(event)
    assert set(tracker.outstanding) == {"serving-b"} and not tracker.clear()
