"""Realistic synthetic run journals, for report tests and for trying the report offline.

Events are written through the real :class:`~chaoskit.journal.Journal` with chosen ``t``
and ``wall`` values, so a 20-second experiment with probes every 100 ms and 20 requests/s
takes milliseconds to write but reads exactly like a recorded one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from chaoskit.journal import Journal

BASE_T = 5_000.0
BASE_WALL = 1_790_000_000.0


@dataclass(frozen=True)
class SampleExperiment:
    """One experiment's story; None for ``ttd``/``rto`` means it never happened."""

    name: str = "experiments/test_kill_serving.py::test_kill_serving"
    fault: str = "kill"
    budgets: dict[str, float | None] = field(
        default_factory=lambda: {"ttd": 1.0, "rto": 20.0, "rpo": None}
    )
    ttd: float | None = 0.32
    rto: float | None = 4.21
    hang: bool = False  # failures are timeouts (slow) instead of refused connections (fast)
    rpo: float | None = None  # emit restore.done with a recovery point this old at the fault
    rpo_steps: int | None = None
    integrity: bool | None = None
    wrong_predictions: int = 0
    outcome: str = "passed"
    error: tuple[str, str] | None = None  # (type, message) of an experiment.error event
    before: float = 4.0  # seconds of steady load before the fault
    after: float = 3.0  # seconds of load after recovery (or after giving up)
    finished: bool = True


def write_sample_run(
    run_dir: Path, experiments: list[SampleExperiment], *, seed: int = 7, start: float = 0.0
) -> Path:
    """Write ``run_dir/journal.jsonl`` telling *experiments* one after another."""
    rng = random.Random(seed)
    path = run_dir / "journal.jsonl"
    t = BASE_T + start
    with Journal(path, source="chaoskit") as journal:
        for exp in experiments:
            t = _write_experiment(journal, exp, t, rng, seed) + 2.0
    return path


def _write_experiment(
    journal: Journal, exp: SampleExperiment, t0: float, rng: random.Random, seed: int
) -> float:
    """Record one experiment starting at monotonic *t0*; return its end time."""

    def rec(t: float, event: str, **fields: object) -> None:
        journal.record(event, t=round(t, 6), wall=round(BASE_WALL + t - BASE_T, 6), **fields)

    rec(t0, "experiment.started", name=exp.name, budgets=exp.budgets, backend="process", seed=seed)
    rec(t0 + 0.4, "steady_state.ok", phase="before", version=3, max_abs_error=0.0)
    fault_t = t0 + 0.5 + exp.before
    ttd = exp.ttd
    rto = exp.rto
    outage_end = fault_t + rto - 0.05 if rto is not None else None
    end = (fault_t + rto if rto is not None else fault_t + 25.0) + exp.after
    timeline: list[tuple[float, str, dict[str, object]]] = []

    def failing(t: float) -> bool:
        return t >= fault_t and (outage_end is None or t < outage_end)

    def call(t: float) -> dict[str, object]:
        if failing(t):
            if exp.hang:
                return {"ok": False, "latency_s": 1.0, "status": None, "error": "timeout"}
            latency = rng.uniform(0.0003, 0.0012)
            error = "connection refused"
            return {"ok": False, "latency_s": latency, "status": None, "error": error}
        latency = rng.lognormvariate(-5.3, 0.35)  # ~5 ms
        return {"ok": True, "latency_s": round(latency, 6), "status": 200, "error": None}

    probe_t = t0 + 0.45
    while probe_t < end:
        timeline.append((probe_t, "probe", {"service": "serving", **call(probe_t)}))
        probe_t += 0.1
    request_t = t0 + 0.5
    wrong_left = exp.wrong_predictions
    while request_t < end:
        fields = call(request_t)
        correct = None if not fields["ok"] else True
        if fields["ok"] and wrong_left and request_t > fault_t:
            correct, wrong_left = False, wrong_left - 1
        fields.update(correct=correct, version=3 if correct else None)
        timeline.append((request_t, "request", fields))
        request_t += 0.05
    timeline.append(
        (fault_t, "fault.injected",
         {"fault": exp.fault, "params": {"service": "serving"}, "changes": {"pid": 4242},
          "seed": seed, "trainer_step": 1200})
    )  # fmt: skip
    if ttd is not None:
        reason = "timeout" if exp.hang else "connection refused"
        timeline.append(
            (fault_t + ttd, "detected",
             {"service": "serving", "signal": "probe", "failures": 3, "reason": reason})
        )  # fmt: skip
        timeline.append(
            (fault_t + ttd + 0.01, "recovery.started", {"action": "restart", "service": "serving"})
        )
    if rto is not None:
        if ttd is not None:
            recovered: dict[str, object] = {"action": "restart", "service": "serving"}
            timeline.append((fault_t + rto - 0.3, "recovered", recovered))
        if exp.rpo is not None:
            restore: dict[str, object] = {
                "recovery_point_created_wall": BASE_WALL + fault_t - BASE_T - exp.rpo,
                "recovery_point_step": None if exp.rpo_steps is None else 1200 - exp.rpo_steps,
            }
            if exp.integrity is not None:
                restore["integrity"] = exp.integrity
            timeline.append((fault_t + rto - 0.2, "restore.done", restore))
        timeline.append(
            (fault_t + rto, "steady_state.ok", {"phase": "recovery", "version": 3,
                                                "max_abs_error": 0.0})
        )  # fmt: skip
        timeline.append((fault_t + rto + 0.4, "fault.reverted", {"fault": exp.fault}))
    else:
        timeline.append((end - 0.5, "fault.reverted", {"fault": exp.fault}))
    for t, event, fields in sorted(timeline, key=lambda item: item[0]):
        rec(t, event, **fields)
    if not exp.finished:
        return end
    if exp.error is not None:
        rec(end + 0.1, "experiment.error", name=exp.name, type=exp.error[0],
            message=exp.error[1])  # fmt: skip
    rec(end + 0.2, "steady_state.ok", phase="after", version=3, max_abs_error=0.0)
    rec(end + 0.3, "experiment.finished", name=exp.name, outcome=exp.outcome)
    return end + 0.3


def cut_last_line(path: Path, keep: int = 25) -> None:
    """Simulate a crash mid-write: append the first *keep* bytes of one more event."""
    with path.open("ab") as f:
        f.write(b'{"t": 99999.0, "wall": 1790099999.0, "event": "probe", "ok": tr'[:keep])
