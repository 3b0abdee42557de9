"""One chaos experiment against a running stack: steady state, fault, DR engine, verdict.

Flow: record ``experiment.started`` with the budgets → confirm the steady state holds →
start the load generator and the DR engine → inject faults (each reverted on exit) →
wait until the engine confirms recovery → stop, check the steady state again → record
``experiment.finished``.  The verdict is computed from the journal.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from chaoskit.background import BackgroundLoop
from chaoskit.dr.online.engine import DRConfig, DREngine
from chaoskit.dr.online.failover import FailoverThenRepair
from chaoskit.dr.online.quality import QualityGate, check_labelled
from chaoskit.dr.online.quality_guard import STABLE, QualityGuard
from chaoskit.dr.online.quality_targets import QualityTargets
from chaoskit.dr.online.recovery import (
    ObservePlatform,
    RecoveryAction,
    RestartService,
    confirm_steady_state,
)
from chaoskit.errors import ChaosKitError, StackError
from chaoskit.faults.base import Fault, FaultContext, Injection
from chaoskit.journal import Event, Journal, JournalTail
from chaoskit.loadgen import LoadGenerator
from chaoskit.model import version_dirs
from chaoskit.objectives import Objectives
from chaoskit.report.metrics import ExperimentResult, compute, split_experiments
from chaoskit.report.recovery import RecoveryTracker
from chaoskit.stack.protocol import Stack

PROGRESS_EVERY = 5.0
"""Seconds between progress lines while an experiment waits for recovery."""


class ExperimentFailed(AssertionError):
    """The experiment ran, and a budget or invariant did not hold."""


class Experiment:
    """Drives one experiment; use as a context manager or through the ``chaos`` fixture.

    An experiment is one window with a defined end: ``verify()`` or ``finish()`` closes
    it (``experiment.finished``).  After that, ``run``, ``inject`` and ``wait_recovered``
    raise StackError: a fault injected then would act outside any measured window, with
    the DR engine stopped, and no result could belong to it.  Several windows in one test
    are several experiments: the ``chaos_experiments`` fixture makes them.
    """

    def __init__(
        self,
        name: str,
        stack: Stack,
        journal: Journal,
        objectives: Objectives,
        *,
        backend: str = "process",
        seed: int = 0,
        dr_config: DRConfig | None = None,
        load_rate: float = 20.0,
        record_property: Callable[[str, Any], None] | None = None,
        fresh_recovery_point: bool = False,
        progress: Callable[[str], None] | None = None,
        learned_baseline: float | None = None,
        declared: tuple[str, ...] | None = None,
        session_loops: Sequence[BackgroundLoop] = (),
        quality: QualityTargets | None = None,
        store_guard: Any = None,
    ) -> None:
        self.name = name
        self.stack = stack
        self.journal = journal
        self.objectives = objectives
        self.backend = backend
        self.seed = seed
        self.dr_config = dr_config or stack.dr_config
        self.load_rate = load_rate
        self.record_property = record_property
        self.fresh_recovery_point = fresh_recovery_point
        self.progress = progress
        self.learned_baseline = learned_baseline
        self.declared = declared
        """Budgets the experiment set itself (None: all of them); the others are defaults."""
        """Seconds of steady state the learned detectors train on; None: no learned detection."""
        self.session_loops = list(session_loops)
        """Loops that outlive experiments (store guard, replicator): checked at start."""
        self.quality = quality
        """A quality gate's targets: clients predict on ``stable``, which only a version
        that passed the gate reaches (None: clients predict on the newest version)."""
        self.store_guard = store_guard
        self._quality_guard: QualityGuard | None = None
        self.client = stack.client()
        self.goldens = stack.goldens
        self._injections: list[Injection] = []
        self._engines: list[DREngine] = []
        self._load: LoadGenerator | None = None
        self._monitor: Any = None
        self._learned_recoveries: list[threading.Thread] = []
        self._started_t = float("inf")
        self._journal_offset = 0
        self._finished = False
        self._tracker = RecoveryTracker()
        self.result: ExperimentResult | None = None

    # -- lifecycle ------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """Its window is closed (finish ran to the end)."""
        return self._finished

    def start(self) -> Experiment:
        self._require_open("start")
        for loop in self.session_loops:
            if loop.crashed is not None:
                raise StackError(
                    f"experiment {self.name}: the {loop.loop_label} died before it started "
                    f"({type(loop.crashed).__name__}: {loop.crashed}); without it nothing "
                    "would guard this experiment (its crash is in the journal)"
                )
        self._started_t = time.monotonic()
        try:  # where this experiment's window begins in the journal (see events())
            self._journal_offset = os.path.getsize(self.journal.path)
        except OSError:
            self._journal_offset = 0
        gateway = self.stack.gateway
        started = self.journal.record(
            "experiment.started",
            name=self.name,
            budgets=self.objectives.as_dict(),
            **({} if self.declared is None else {"declared": list(self.declared)}),
            backend=self.backend,
            seed=self.seed,
            # where clients are served from: a replica out of that path is out of harm's way
            **({} if gateway is None else {"routed": gateway.routed}),
        )
        self._tracker = RecoveryTracker(started)
        repaired = self.stack.ensure_running()
        if repaired:
            self.journal.record("stack.repaired", services=repaired)
        if not confirm_steady_state(
            self.client, self.goldens, self.journal, timeout=60.0, phase="before"
        ):
            raise StackError(
                f"experiment {self.name}: the steady state does not hold before the fault "
                "(serving does not answer its canary correctly); see the service logs"
            )
        self._tail = JournalTail(self.journal.path)
        if self.fresh_recovery_point:
            self._await_fresh_recovery_point()
        load_client = self.client
        if self.quality is not None:
            self._quality_guard = self._start_quality_guard(self.quality)
            load_client = self.client.on_label(STABLE)
        self._load = LoadGenerator(load_client, self.goldens, self.journal, rate=self.load_rate)
        self._load.start()
        restart = RestartService(
            self.stack, self.client, self.goldens, self.journal,
            timeout=self.dr_config.recovery_timeout,
        )  # fmt: skip
        replicas = list(self.stack.replicas)
        recovery: RecoveryAction = restart
        if self.stack.recovery == "observe":
            recovery = ObservePlatform(self.stack, self.goldens, self.journal,
                                       timeout=self.dr_config.recovery_timeout)  # fmt: skip
        elif self.stack.gateway is not None and len(replicas) > 1:
            recovery = FailoverThenRepair(self.stack, self.goldens, self.journal, restart)
        self._engines = [
            DREngine(
                self.stack.probe_client(replica),
                self.goldens, self.journal, recovery, service=replica, config=self.dr_config,
            ).start()
            for replica in replicas
        ]  # fmt: skip
        if self.learned_baseline is not None:
            self._start_learned_monitor(recovery, replicas)
        return self

    def _start_quality_guard(self, targets: QualityTargets) -> QualityGuard:
        labelled_set = getattr(self.stack, "labelled_set", None)
        if labelled_set is None:
            raise StackError(f"experiment {self.name}: the stack has no labelled set to "
                             "judge model versions on")  # fmt: skip
        labelled = labelled_set()
        check_labelled(labelled, self.stack.client(timeout=10.0))  # shapes: one message
        if self.stack.trainer is not None:  # a baseline it trained, with a checkpoint to
            self._await_version_count(2, "the quality gate")  # rewind to (not step 0)
        gate = QualityGate(labelled.task, margin=targets.margin, floor=targets.floor,
                           min_samples=targets.min_samples)  # fmt: skip
        guard = QualityGuard(self.stack, labelled, gate, self.journal,
                             store_guard=self.store_guard,
                             max_slowdown=targets.max_slowdown)  # fmt: skip
        return guard.start()

    def _start_learned_monitor(self, recovery: RecoveryAction, replicas: list[str]) -> None:
        """Learned detection: train on this experiment's steady state (1 s windows), then
        alert.  A replica it flags is failed over like one the probes flag, and failed
        back only once it looks normal to the monitor again: probes pass a replica that
        is merely slower than usual, so they cannot tell when that has healed."""
        from chaoskit.dr.learned.monitor import LearnedMonitor
        from chaoskit.dr.learned.signals import SignalSampler

        hold, release = getattr(recovery, "hold", None), getattr(recovery, "release", None)

        def on_alert(service: str) -> None:
            if hold is None or service not in replicas:
                return  # the gateway row, or a stack without failover: the alert is all
            hold(service)
            thread = threading.Thread(target=recovery.run, args=(service,), daemon=True,
                                      name="chaoskit-learned-recovery")  # fmt: skip
            self._learned_recoveries.append(thread)
            thread.start()

        def on_normal(service: str) -> None:
            if release is not None:
                release(service)

        windows = max(10, round(self.learned_baseline or 0))
        sampler = SignalSampler(self.stack, self.goldens, self.journal.path)
        self._monitor = LearnedMonitor(
            sampler, self.journal, baseline_windows=windows, seed=self.seed,
            on_alert=on_alert, on_normal=on_normal,
        ).start()  # fmt: skip
        if not self._monitor.trained.wait(3 * windows + 30):
            raise StackError(
                f"experiment {self.name}: the learned detectors did not finish their "
                f"{windows}-window baseline (see learned.* events in the journal)"
            )

    def _await_fresh_recovery_point(self, timeout: float = 60.0) -> None:
        """Part of the steady state: the trainer progresses and everything is backed up
        (and, when a replicator runs, a fresh checkpoint has reached the DR site).

        Without it, an experiment right after one that stopped the trainer would measure
        the previous experiment's outage as its own RPO.
        """
        tail = JournalTail(self.journal.path, from_start=True)
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        fresh: set[str] = set()
        versions: set[int] = set()
        replicating, replicated = False, False
        while time.monotonic() < deadline:
            for e in tail.events():  # streamed: the whole journal is read the first time
                if e["event"] == "backup.recovery_point":
                    if "checkpoint" in e and e["t"] >= started:
                        fresh.add(e["snapshot"])
                    if "version" in e:
                        versions.add(e["version"])
                elif e["event"] == "backup.replicated":
                    replicating = True
                    replicated |= e["snapshot"] in fresh
            latest = max(version_dirs(self.stack.model_base_path), default=None)
            checkpointing = self.stack.checkpoint_dir is not None and self.stack.trainer
            backed_up = (fresh or not checkpointing) and (latest is None or latest in versions)
            if backed_up and (replicated or not replicating):
                return
            time.sleep(0.05)
        self.journal.record("steady_state.violated", phase="before", reason="no new recovery point")
        raise StackError(
            f"experiment {self.name}: no new checkpoint and newest version were backed up"
            f"{' and shipped to the DR site' if replicating else ''} within {timeout:g}s "
            "(is the trainer running? is the DR site reachable? see the service logs)"
        )

    def _require_open(self, call: str) -> None:
        """No fault, wait or run outside the window (see the class docstring)."""
        if self._finished:
            raise StackError(
                f"experiment {self.name} has already finished (verify() or finish() ran), "
                f"so {call}() would act outside any experiment window and measure nothing; "
                "one experiment is one window: use the chaos_experiments fixture for several"
            )
        if call != "start" and self._started_t == float("inf"):
            raise StackError(
                f"experiment {self.name} was not started: {call}() needs a started "
                "experiment (the chaos fixture, or `with chaos_experiments(...) as experiment`)"
            )

    def inject(self, fault: Fault) -> Injection:
        """Apply *fault* now; the returned injection reverts when its ``with`` block ends."""
        self._require_open("inject")
        self._await_versions(fault)
        fault = self._served_latest(fault)
        ctx = FaultContext(
            self.journal, seed=self.seed, stack=self.stack, annotations=self._annotations()
        )
        injection = fault.inject(ctx)
        self._injections.append(injection)
        return injection

    def _await_versions(self, fault: Fault) -> None:
        """Hold *fault* until the model store has the versions it needs, each backed up
        (a stale-model fault needs a previous version: its absence is a precondition to
        await, not a failure of the stack)."""
        self._await_version_count(fault.versions_needed(), fault.kind)

    def _served_latest(self, fault: Fault, timeout: float = 30.0) -> Fault:
        """*fault* with a ``model:latest`` target pinned to the newest version whose golden
        outputs are known, awaited: the newest version serving has answered with.  A
        version the trainer exported a moment before, that no replica had loaded yet, would
        be damaged before serving or chaoskit first saw it, so a user's replica loads the
        damaged files, and the golden recorded from its answers is the damage's (seen: a
        silent weight change 40 ms after an export, served and recorded as good)."""
        target = getattr(fault, "target", None)
        latest = "model:latest"
        if not isinstance(target, str) or not (target == latest or target.startswith(latest + "/")):
            return fault
        deadline = time.monotonic() + timeout
        while True:
            newest = max(version_dirs(self.stack.model_base_path), default=None)
            if newest is None:
                return fault  # the fault says there is no version
            self.goldens.refresh()
            if self.goldens.for_version(newest) is not None:
                break
            if time.monotonic() > deadline:
                raise StackError(f"experiment {self.name}: version {newest}, the newest, was "
                                 f"not served within {timeout:g}s: no golden outputs to "
                                 "damage it against (see serving.load_failed)")  # fmt: skip
            time.sleep(0.05)
        pinned = {"target": f"model:{newest}{target[len(latest):]}"}  # a field of this fault
        return dataclasses.replace(fault, **pinned)

    def _await_version_count(self, needed: int, what: str, timeout: float = 90.0) -> None:
        if needed <= 1 or len(version_dirs(self.stack.model_base_path)) >= needed:
            return
        deadline = time.monotonic() + timeout
        while len(version_dirs(self.stack.model_base_path)) < needed:
            if time.monotonic() > deadline:
                raise StackError(
                    f"experiment {self.name}: {what} needs {needed} model versions; "
                    f"{self.stack.model_base_path} has "
                    f"{len(version_dirs(self.stack.model_base_path))} after {timeout:g}s "
                    "(is the trainer exporting?)"
                )
            time.sleep(0.1)
        self._await_fresh_recovery_point()

    def _annotations(self) -> dict[str, Any]:
        """The newest state at the fault, against which RPO is measured: the trainer's
        step, the newest checkpoint and the newest model version (step, creation time)."""
        notes: dict[str, Any] = {}
        step = self.stack.trainer_step()
        if step is not None:
            notes["trainer_step"] = step
        if self.stack.checkpoint_dir is not None:
            try:
                latest = self.stack.checkpoint_format.latest(self.stack.checkpoint_dir)
            except (OSError, ChaosKitError):
                latest = None
            if latest is not None:
                notes["newest_checkpoint"] = {"name": latest.name, "step": latest.step,
                                              "created_wall": latest.wall_created}  # fmt: skip
        versions = version_dirs(self.stack.model_base_path)
        if versions:
            newest = max(versions)
            try:
                created = versions[newest].stat().st_mtime
            except OSError:
                created = None
            notes["newest_version"] = {"version": newest, "created_wall": created}
        return notes

    def wait_for(
        self, event: str, *, count: int = 1, since: float | None = None, timeout: float = 60.0,
        **match: Any,
    ) -> list[Event]:  # fmt: skip
        """The first *count* *event* events whose fields equal *match*, at or after *since*
        (default: the experiment's start), as soon as the journal holds them.

        For experiments that hold a fault until something happened (detection, recovery
        points queued) rather than for a fixed time.  StackError naming what was awaited
        if *timeout* passes first.
        """
        since = self._started_t if since is None else since
        tail = JournalTail(self.journal.path, from_start=True)
        found: list[Event] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in tail.events():
                if e["event"] == event and e["t"] >= since:
                    if all(e.get(k) == v for k, v in match.items()):
                        found.append(e)
            if len(found) >= count:
                return found[:count]
            time.sleep(0.02)
        fields = "".join(f", {k}={v!r}" for k, v in match.items())
        raise StackError(
            f"experiment {self.name}: {len(found)} of {count} {event!r} events{fields} "
            f"within {timeout:g}s"
        )

    def default_timeout(self) -> float:
        rto = self.objectives.rto
        return 120.0 if rto is None else max(2 * rto, rto + 30.0)

    def wait_recovered(self, timeout: float | None = None) -> bool:
        """Wait until every service a fault took down and every service the DR engine
        detected as failing is back and confirmed (the rule of
        :mod:`chaoskit.report.recovery`, which also ends the RTO), and every service runs.

        The faults stay in force meanwhile: they revert when their ``with`` blocks end,
        however early a first steady state was confirmed.  False if *timeout* passes, or
        at once when a background loop crashed (``<loop>.crashed``: nothing left to wait
        for; the crash fails the experiment).
        """
        self._require_open("wait_recovered")
        deadline = time.monotonic() + (self.default_timeout() if timeout is None else timeout)
        started, shown = time.monotonic(), time.monotonic()
        while time.monotonic() < deadline:
            for event in self._tail.new_events():
                self._tracker.feed(event)
                if str(event["event"]).endswith(".crashed"):
                    return False  # a loop detection or recovery needs is gone: no waiting
            if self._tracker.clear() and self._all_services_running():
                return True
            if self.progress is not None and time.monotonic() - shown >= PROGRESS_EVERY:
                shown = time.monotonic()
                waiting = ", ".join(sorted(self._tracker.outstanding)) or "a confirmation"
                self.progress(f"{self.name}: {shown - started:.0f}s, waiting for {waiting}")
            time.sleep(0.02)
        return False

    def _all_services_running(self) -> bool:
        backend = self.stack.backend
        return all(backend.status(name) == "running" for name in self.stack.services)

    def run(self, fault: Fault, *, timeout: float | None = None) -> ExperimentResult:
        """Inject, wait for recovery, revert, and verify the budgets (raises on failure).

        Once per experiment: it ends the window (see the class docstring)."""
        self._require_open("run")
        with self.inject(fault):
            waiting = time.monotonic()
            if not self.wait_recovered(timeout):
                # recorded while the fault is still held: a recovery that only comes with
                # the revert is the revert's doing, not the stack's
                waited = round(time.monotonic() - waiting, 3)
                self.journal.record("experiment.unrecovered", name=self.name, waited_s=waited)
        return self.verify()

    def finish(self, outcome: str = "passed", *, error: BaseException | None = None) -> None:
        """Revert every fault, stop load and engine, re-check the steady state.

        Idempotent once it succeeded, and retryable until then: a revert or stop that
        raised is tried again by the next call (the cleanup the plugin registers makes
        one), while what already completed is not redone (a reverted injection, a
        stopped loop).  ``experiment.finished`` is journaled only when all completed, so
        a finish that never does leaves the experiment unfinished (failed) in the report.
        *error*, what made the experiment fail, is journaled (``experiment.error``) so the
        report can say why, not only that it failed.
        """
        if self._finished:
            return
        errors: list[str] = []

        def journal(event: str, **fields: Any) -> None:
            """A journal that fails (full disk) must not keep the faults applied."""
            try:
                self.journal.record(event, **fields)
            except (ChaosKitError, OSError) as e:
                errors.append(f"could not journal {event}: {e}")

        if error is not None:
            journal("experiment.error", name=self.name,
                    type=type(error).__name__, message=str(error))  # fmt: skip
        for injection in reversed(self._injections):
            try:
                injection.revert()  # idempotent: a retry reverts only what is still applied
            except ChaosKitError as e:
                errors.append(str(e))
                journal("fault.revert_failed", fault=injection.fault.kind, error=str(e))
        if not errors and any(engine.running for engine in self._engines):
            self._await_failback()  # with a fault still applied, or no engine, it cannot come
        loops = [self._monitor, *self._engines, self._load, self._quality_guard]
        for loop in loops:  # each one, even after another raised; a stopped one is a no-op
            if loop is None:
                continue
            try:
                loop.stop()
            except Exception as e:
                what = f"{type(e).__name__}: {e}"
                errors.append(f"could not stop the {loop.loop_label}: {what}")
                journal("experiment.stop_failed", name=self.name, loop=loop.loop_label, error=what)
            if loop is self._monitor:  # its alerts start these; none may outlive it
                for thread in self._learned_recoveries:
                    thread.join(30.0)
        if errors:
            raise StackError(f"experiment {self.name}: " + "; ".join(errors))
        if self._engines:
            confirm_steady_state(
                self.client, self.goldens, self.journal, timeout=30.0, phase="after"
            )
        self.journal.record("experiment.finished", name=self.name, outcome=outcome)
        self._finished = True

    def _await_failback(self, timeout: float = 30.0) -> None:
        """With the faults reverted, give the DR engine time to move the gateway back."""
        gateway = self.stack.gateway
        if gateway is None or not self._engines:
            return
        deadline = time.monotonic() + timeout
        while gateway.routed != gateway.primary and time.monotonic() < deadline:
            time.sleep(0.05)

    def _window(self) -> tuple[Event, list[Event]]:
        """This experiment's window, read from where it began in the journal: a soak's
        journal grows all along, and reading it whole for every experiment costs each a
        little more time and the process a little more memory than the one before."""
        since_start = JournalTail(self.journal.path, offset=self._journal_offset)
        windows = [
            w for w in split_experiments(since_start.events()) if w[0].get("name") == self.name
        ]
        if not windows:
            raise StackError(f"experiment {self.name} has no events in {self.journal.path}")
        return windows[-1]

    def events(self) -> list[Event]:
        """This experiment's journal events (after its ``experiment.started``), in order."""
        return self._window()[1]

    def compute_result(self) -> ExperimentResult:
        return compute(*self._window())

    def verify(self) -> ExperimentResult:
        """Finish, compute the result from the journal, and raise if the verdict is fail."""
        self.finish()
        self.result = result = self.compute_result()
        if self.record_property is not None:
            for key in ("ttd_s", "detected_by", "rto_s", "recovered_by", "rpo_s",
                        "failed_requests", "verdict"):  # fmt: skip
                self.record_property(key, getattr(result, key))
        if result.verdict != "pass":
            raise ExperimentFailed(f"{self.name}: " + "; ".join(result.reasons))
        return result

    def __enter__(self) -> Experiment:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        error = exc if isinstance(exc, BaseException) else None
        self.finish("passed" if exc_type is None else "failed", error=error)
