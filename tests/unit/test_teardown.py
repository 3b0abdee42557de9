"""Teardown that survives its own failures: each failure injected with a small subclass
of chaoskit's own classes (a journal that cannot write, a fault whose revert fails, a loop
that raises or will not stop), never a mock."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from chaoskit.background import BackgroundLoop
from chaoskit.dr.online.engine import DRConfig, DREngine
from chaoskit.errors import FaultError, JournalError, StackError
from chaoskit.experiment import Experiment
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.journal import Event, Journal, read_journal
from chaoskit.loadgen import LoadGenerator
from chaoskit.objectives import Objectives
from chaoskit.report.metrics import results_from_events
from chaoskit.run_state import RunState
from chaoskit.waiting import wait_until


class FailingJournal(Journal):
    """A real journal whose ``record`` raises *error* for the events in *fail_on*."""

    def __init__(self, path: Path, fail_on: set[str], error: BaseException | None = None) -> None:
        super().__init__(path)
        self.fail_on = fail_on
        self.error = error or JournalError(f"journal {path}: no space left on device")

    def record(self, event: str, **fields: Any) -> Event:
        if event in self.fail_on:
            raise self.error
        return super().record(event, **fields)


@dataclass(frozen=True)
class TouchFile(Fault):
    """Creates *path*; reverting removes it, after failing *fail_reverts* times."""

    kind: ClassVar[str] = "touch"
    path: str
    fail_reverts: int = 0

    def _inject(self, ctx: FaultContext) -> Changes:
        Path(self.path).write_text("applied")
        return Changes(record={"path": self.path}, undo=[self.fail_reverts])

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        if changes.undo[0] > 0:
            changes.undo[0] -= 1
            raise OSError(f"{self.path}: device busy")
        Path(self.path).unlink(missing_ok=True)


def events_named(path: Path, name: str) -> list[Event]:
    return [e for e in read_journal(path) if e["event"] == name]


# -- a fault whose journal record failed is still reverted ----------------------------
def test_injection_that_cannot_be_journaled_is_reverted(tmp_path: Path) -> None:
    target = tmp_path / "fault-applied"
    journal = FailingJournal(tmp_path / "j.jsonl", {"fault.injected"})
    with pytest.raises(FaultError, match="could not journal the injection, so it was reverted"):
        TouchFile(str(target)).inject(FaultContext(journal))
    assert not target.exists()
    assert events_named(journal.path, "fault.injected") == []


def test_unjournaled_injection_whose_revert_fails_says_it_is_still_applied(
    tmp_path: Path,
) -> None:
    target = tmp_path / "fault-applied"
    journal = FailingJournal(tmp_path / "j.jsonl", {"fault.injected"})
    with pytest.raises(FaultError, match="could not revert it either, so it is still applied"):
        TouchFile(str(target), fail_reverts=1).inject(FaultContext(journal))
    assert target.exists()


def test_ctrl_c_while_journaling_an_injection_reverts_it_and_stays_a_ctrl_c(
    tmp_path: Path,
) -> None:
    target = tmp_path / "fault-applied"
    journal = FailingJournal(tmp_path / "j.jsonl", {"fault.injected"}, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        TouchFile(str(target)).inject(FaultContext(journal))
    assert not target.exists()
    with pytest.raises(KeyboardInterrupt) as caught:
        TouchFile(str(target), fail_reverts=1).inject(FaultContext(journal))
    assert any("still applied" in note for note in caught.value.__notes__)


# -- background loops that die ----------------------------------------------------------
class ProbeLoop(BackgroundLoop):
    """Raises *error* on its *crash_at*-th round (never, with None)."""

    thread_name = "chaoskit-test-probe"

    def __init__(self, journal: Journal | None, error: BaseException | None = None) -> None:
        super().__init__()
        self.journal = journal
        self.error = error
        self.rounds = 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.rounds += 1
            if self.error is not None and self.rounds == 3:
                raise self.error
            self._stop.wait(0.01)


def test_loop_names_come_from_the_class() -> None:
    assert (DREngine.loop_name, DREngine.loop_label) == ("dr_engine", "DR engine")
    assert (LoadGenerator.loop_name, LoadGenerator.loop_label) == (
        "load_generator",
        "load generator",
    )
    assert ProbeLoop.loop_name == "probe_loop"


def test_a_crashed_loop_keeps_its_exception_and_journals_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    loop = ProbeLoop(journal, ValueError("bad sample 7")).start()
    wait_until(lambda: not loop.running, timeout=10, what="the loop to crash")
    assert isinstance(loop.crashed, ValueError)
    [event] = events_named(journal.path, "probe_loop.crashed")
    assert (event["loop"], event["type"], event["message"]) == (
        "probe loop",
        "ValueError",
        "bad sample 7",
    )
    assert event["thread"] == "chaoskit-test-probe"
    assert "raise self.error" in event["traceback"]
    loop.stop()  # stopping a crashed loop is harmless


def test_a_loop_stopped_cleanly_has_not_crashed(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    loop = ProbeLoop(journal).start()
    wait_until(lambda: loop.rounds >= 3, timeout=10, what="three rounds")
    loop.stop()
    assert not loop.running and loop.crashed is None
    assert events_named(journal.path, "probe_loop.crashed") == []


@pytest.mark.parametrize("journal_state", ["none", "closed"])
def test_a_crash_with_nowhere_to_journal_reaches_threading_excepthook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal_state: str
) -> None:
    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    journal = None if journal_state == "none" else Journal(tmp_path / "j.jsonl")
    if journal is not None:
        journal.close()
    loop = ProbeLoop(journal, RuntimeError("lost")).start()
    wait_until(lambda: not loop.running, timeout=10, what="the loop to crash")
    assert isinstance(loop.crashed, RuntimeError)
    assert seen == [loop.crashed]


def test_a_crash_inside_an_experiment_fails_it_naming_the_loop(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.record("experiment.started", name="exp", budgets={})
    journal.record("fault.injected", fault="kill", trainer_step=None)

    class DREngineStandIn(ProbeLoop):
        loop_name, loop_label = DREngine.loop_name, DREngine.loop_label

    loop = DREngineStandIn(journal, ValueError("canary shape (3,) != (4,)")).start()
    wait_until(lambda: not loop.running, timeout=10, what="the loop to crash")
    journal.record("detected", service="serving", signal="probe")
    journal.record("steady_state.ok", phase="recovery")
    journal.record("experiment.finished", name="exp", outcome="passed")
    journal.record("experiment.started", name="next", budgets={})
    journal.record("fault.injected", fault="kill")
    journal.record("detected", service="serving", signal="probe")
    journal.record("steady_state.ok", phase="recovery")
    journal.record("experiment.finished", name="next", outcome="passed")
    crashed, after = results_from_events(read_journal(journal.path))
    assert crashed.verdict == "fail"
    assert crashed.reasons == ["the DR engine crashed: ValueError: canary shape (3,) != (4,)"]
    assert after.verdict == "pass"  # outside its window, the crash is not the next one's


def test_a_session_loop_that_died_between_experiments_fails_the_next_one(
    tmp_path: Path,
) -> None:
    """The store guard outlives experiments: its crash between two falls in no window, so
    the next experiment refuses to start unguarded instead of passing without it."""
    journal = Journal(tmp_path / "j.jsonl")

    class StoreGuardStandIn(ProbeLoop):
        loop_label = "store guard"

    guard = StoreGuardStandIn(journal, OSError("inotify watch limit reached")).start()
    wait_until(lambda: not guard.running, timeout=10, what="the loop to crash")
    experiment = Experiment("exp", SimpleNamespace(dr_config=DRConfig(), client=lambda: None,
                            goldens=None), journal, Objectives(),
                            session_loops=[guard])  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(StackError, match=r"the store guard died before it started "
                                         r"\(OSError: inotify watch limit reached\)"):
        experiment.start()
    assert events_named(journal.path, "experiment.started") == []


def test_waiting_for_recovery_ends_when_a_loop_crashed(tmp_path: Path) -> None:
    """No recovery can come once the DR engine is dead: waiting out the timeout would only
    delay the failure (the crash fails the experiment by itself)."""
    from chaoskit.journal import JournalTail
    from chaoskit.report.recovery import RecoveryTracker

    experiment = new_experiment(tmp_path)
    started = experiment.journal.record("experiment.started", name="exp", budgets={})
    experiment._tracker, experiment._tail = RecoveryTracker(started), JournalTail(
        experiment.journal.path)  # fmt: skip
    experiment.journal.record("fault.injected", fault="kill", target="serving")
    experiment.journal.record("dr_engine.crashed", loop="DR engine", type="ValueError",
                              message="boom")  # fmt: skip
    waited = time.monotonic()
    assert experiment.wait_recovered(timeout=600) is False
    assert time.monotonic() - waited < 60, "waited for a recovery that could not come"


# -- RunState.run_cleanups --------------------------------------------------------------
def test_every_cleanup_runs_and_each_failure_is_journaled(tmp_path: Path) -> None:
    state = RunState(backend="process", report_dir=tmp_path, seed=1, defaults=Objectives())
    journal = state.open_journal()
    ran: list[str] = []
    stopped_loop = ProbeLoop(None)

    def close_stack() -> None:
        ran.append("stack")

    def stop_guard() -> None:
        ran.append("guard")
        raise StackError("guard: repository lock is held by pid 4242")

    def finish_experiment() -> None:
        ran.append("experiment")
        raise KeyboardInterrupt

    def stop_replicator() -> None:
        ran.append("replicator")
        raise OSError("DR site unreachable")

    state.cleanups += [close_stack, stop_guard, stopped_loop.stop, finish_experiment,
                       stop_replicator]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):  # re-raised once every cleanup ran
        state.run_cleanups()
    assert ran == ["replicator", "experiment", "guard", "stack"]
    assert state.cleanups == []
    assert [f.split(": ", 1)[1] for f in state.cleanup_failures] == [
        "OSError: DR site unreachable",
        "KeyboardInterrupt",
        "StackError: guard: repository lock is held by pid 4242",
    ]
    failed = events_named(journal.path, "cleanup.failed")
    assert [(e["name"].rsplit(".", 1)[-1], e["type"]) for e in failed] == [
        ("stop_replicator", "OSError"),
        ("finish_experiment", "KeyboardInterrupt"),
        ("stop_guard", "StackError"),
    ]
    assert failed[2]["message"] == "guard: repository lock is held by pid 4242"
    state.run_cleanups()  # nothing left: a second call (pytest_unconfigure) is a no-op


def test_a_cleanup_failure_after_the_journal_closed_is_still_listed(tmp_path: Path) -> None:
    state = RunState(backend="process", report_dir=tmp_path, seed=1, defaults=Objectives())
    state.open_journal().close()

    def stop() -> None:
        raise RuntimeError("thread would not join")

    state.cleanups.append(stop)
    state.run_cleanups()
    [failure] = state.cleanup_failures
    assert failure.endswith("stop: RuntimeError: thread would not join")


def test_a_bound_method_cleanup_is_named_by_its_class() -> None:
    from chaoskit.run_state import cleanup_name

    assert cleanup_name(ProbeLoop(None).stop) == "ProbeLoop.stop"


# -- Experiment.finish can be retried ---------------------------------------------------
class StubbornLoop(ProbeLoop):
    """A loop whose ``stop`` raises *refusals* times before it stops."""

    def __init__(self, refusals: int) -> None:
        super().__init__(None)
        self.refusals = refusals

    def stop(self, timeout: float | None = None) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise RuntimeError("monitor is busy training")
        super().stop(timeout)


def new_experiment(tmp_path: Path) -> Experiment:
    """An experiment marked started, without loops: finish has faults and loops to undo.
    (The stack is never touched then, so a namespace of the attributes read stands in.)"""
    stack = SimpleNamespace(dr_config=DRConfig(), client=lambda: None, goldens=None,
                            gateway=None, trainer_step=lambda: None, checkpoint_dir=None,
                            model_base_path=tmp_path / "models")  # fmt: skip
    journal = Journal(tmp_path / "j.jsonl")
    experiment = Experiment("exp", stack, journal, Objectives())  # type: ignore[arg-type]
    experiment._started_t = time.monotonic()  # as start() marks it, without a stack to start
    return experiment


def test_a_finish_whose_revert_failed_is_completed_by_the_next_call(tmp_path: Path) -> None:
    experiment = new_experiment(tmp_path)
    target = tmp_path / "fault-applied"
    experiment.inject(TouchFile(str(target), fail_reverts=1))
    with pytest.raises(StackError, match="could not revert touch.*device busy"):
        experiment.finish()
    assert target.exists()
    path = experiment.journal.path
    assert len(events_named(path, "fault.revert_failed")) == 1
    assert events_named(path, "experiment.finished") == []  # not finished: not claimed
    experiment.finish("failed")
    assert not target.exists()
    experiment.finish("passed")  # done: idempotent
    assert [e["outcome"] for e in events_named(path, "experiment.finished")] == ["failed"]
    assert len(events_named(path, "fault.reverted")) == 1


def test_a_loop_that_would_not_stop_does_not_keep_the_others_running(tmp_path: Path) -> None:
    experiment = new_experiment(tmp_path)
    stubborn, load = StubbornLoop(refusals=1).start(), ProbeLoop(None).start()
    experiment._monitor, experiment._load = stubborn, load
    target = tmp_path / "fault-applied"
    experiment.inject(TouchFile(str(target)))
    with pytest.raises(StackError, match="could not stop the stubborn loop: RuntimeError"):
        experiment.finish()
    assert not target.exists() and not load.running and stubborn.running
    [failed] = events_named(experiment.journal.path, "experiment.stop_failed")
    assert failed["loop"] == "stubborn loop"
    experiment.finish()
    assert not stubborn.running
    assert len(events_named(experiment.journal.path, "experiment.finished")) == 1


def test_a_journal_that_fails_does_not_keep_the_fault_applied(tmp_path: Path) -> None:
    experiment = new_experiment(tmp_path)
    target = tmp_path / "fault-applied"
    experiment.inject(TouchFile(str(target)))
    experiment.journal = FailingJournal(tmp_path / "j.jsonl", {"experiment.error"})
    with pytest.raises(StackError, match="could not journal experiment.error"):
        experiment.finish("failed", error=ValueError("body failed"))
    assert not target.exists()  # reverted although the first record failed
    experiment.finish("failed")
    assert len(events_named(experiment.journal.path, "experiment.finished")) == 1
