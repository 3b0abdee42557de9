"""Experiment metrics computed from the journal alone (as Jepsen checks a history).

For each experiment window (experiment.started .. experiment.finished):
TTD  = first ``detected`` after the first ``fault.injected`` − fault time (its signal is
       ``detected_by``; ``ttd_learned_s`` is the same for the learned detectors alone);
       ``per_fault`` gives TTD and ``detected_by`` of every fault of the window, and
       ``detections`` every service and signal the DR engine detected after the fault;
RTO  = the first moment after the last ``fault.injected`` when every service a fault
       took down and every service detected as failing is back and confirmed, and the
       steady state was confirmed after the last foreground recovery action (the rule is
       in :mod:`chaoskit.report.recovery`) − the first fault's time;
RPO  = fault wall time − creation time of the recovery point restored (``restore.done``);
       without a restore, if the DR site was cut off (``detected`` naming ``dr-site``): the
       worst age of the DR site's newest recovery point from the fault until the DR site
       caught up — what losing the primary site at the worst moment would have cost;
failed_requests / wrong_predictions = ``request`` events that failed / answered wrongly;
retried_requests = ``request`` events the gateway answered through a retry (``retried``).
An experiment whose code raised has an ``experiment.error`` (name, type, message): its
first reason is that exception, so a failed experiment's report says what went wrong.
A background loop that died inside the window (``<loop>.crashed``: loop, type, message;
the DR engine, load generator, store guard, replicator, learned monitor) fails it too.
A value that an experiment does not measure is None (an empty cell), never zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from chaoskit.durations import format_duration
from chaoskit.journal import Event
from chaoskit.objectives import NAMES
from chaoskit.report.recovery import recovered_at

COLUMNS = (
    "name", "fault", "faults", "ttd_s", "detected_by", "ttd_learned_s", "rto_s", "recovered_by",
    "rpo_s", "rpo_steps", "failed_requests", "retried_requests", "wrong_predictions",
    "integrity", "verdict", "reasons", "ttd_budget_s", "rto_budget_s", "rpo_budget_s",
    "backend", "seed", "started_wall", "duration_s", "detections",
)  # fmt: skip
COLUMN_DTYPES = {
    "rpo_steps": "Int64", "failed_requests": "Int64", "retried_requests": "Int64",
    "wrong_predictions": "Int64",
    "seed": "Int64", "integrity": "boolean",
}  # fmt: skip
"""pandas types of the columns that are not floats or text, in results and history alike:
nullable, so an unmeasured value stays an empty cell and a count stays an integer."""


@dataclass
class ExperimentResult:
    name: str
    fault: str | None = None
    """The first fault's kind (``faults`` lists them all)."""
    faults: str | None = None
    """Every fault of the window, in injection order, kinds joined with ``+``."""
    ttd_s: float | None = None
    detected_by: str | None = None
    ttd_learned_s: float | None = None
    rto_s: float | None = None
    recovered_by: str | None = None
    """Who brought service back: ``chaoskit (<action>)`` or ``platform`` (observe mode)."""
    rpo_s: float | None = None
    rpo_steps: int | None = None
    failed_requests: int | None = None
    retried_requests: int | None = None
    wrong_predictions: int | None = None
    integrity: bool | None = None
    verdict: str = "fail"
    reasons: list[str] = field(default_factory=list)
    ttd_budget_s: float | None = None
    rto_budget_s: float | None = None
    rpo_budget_s: float | None = None
    backend: str | None = None
    seed: int | None = None
    started_wall: float | None = None
    duration_s: float | None = None
    per_fault: list[dict[str, Any]] = field(default_factory=list)
    """Per fault: kind, target, ttd_s and detected_by (its first detection)."""
    detections: list[dict[str, Any]] = field(default_factory=list)
    """Per detected service and signal: first detection after the first fault
    (``after_s``) and how often it was detected."""

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        row["reasons"] = "; ".join(self.reasons)
        row["detections"] = detections_text(self.detections) or None
        return {k: row[k] for k in COLUMNS}


def detections_text(detections: list[dict[str, Any]]) -> str:
    """``serving:probe@0.1s; serving-b:latency@0.31s x4``: the compact form of results.csv."""
    parts = []
    for d in detections:
        count = f" x{d['count']}" if d.get("count", 1) > 1 else ""
        parts.append(f"{d['service']}:{d['signal']}@{d['after_s']:g}s{count}")
    return "; ".join(parts)


def _wrong_predictions(events: list[Event]) -> int:
    """Answers that match no exported version's canary and, behind a quality gate,
    answers from a version the gate refused (from its breach until a version of that
    number passes: a rewound trainer exports the number again): what such a version
    computes is what was exported, but not good enough to serve."""
    refused: set[Any] = set()
    wrong = 0
    for e in events:
        if e["event"] == "quality.verdict":
            if e.get("decision") == "breach":
                refused.add(e.get("version"))
            elif e.get("decision") == "promote":
                refused.discard(e.get("version"))
        elif e["event"] == "request" and e.get("ok"):
            wrong += e.get("correct") is False or e.get("version") in refused
    return wrong


def split_experiments(events: Iterable[Event]) -> list[tuple[Event, list[Event]]]:
    """(experiment.started event, events inside its window) for every experiment."""
    windows: list[tuple[Event, list[Event]]] = []
    current: tuple[Event, list[Event]] | None = None
    for event in sorted(events, key=lambda e: e["t"]):
        kind = event["event"]
        if kind == "experiment.started":
            current = (event, [])
            windows.append(current)
        elif current is not None:
            current[1].append(event)
            if kind == "experiment.finished" and event.get("name") == current[0].get("name"):
                current = None
    return windows


def first_event(events: list[Event], kind: str, after: float, **match: Any) -> Event | None:
    """The first *kind* event at or after *after* whose fields equal *match*."""
    for event in events:
        if event["event"] == kind and event["t"] >= after:
            if all(event.get(k) == v for k, v in match.items()):
                return event
    return None


def compute(start: Event, events: list[Event]) -> ExperimentResult:
    """The measured values and verdict of one experiment window."""
    budgets = start.get("budgets") or {}
    result = ExperimentResult(
        name=start.get("name", "?"),
        ttd_budget_s=budgets.get("ttd"),
        rto_budget_s=budgets.get("rto"),
        rpo_budget_s=budgets.get("rpo"),
        backend=start.get("backend"),
        seed=start.get("seed"),
        started_wall=start.get("wall"),
    )
    finished = next((e for e in events if e["event"] == "experiment.finished"), None)
    if finished is not None:
        result.duration_s = round(finished["t"] - start["t"], 3)
    requests = [e for e in events if e["event"] == "request"]
    if requests:
        result.failed_requests = sum(1 for e in requests if not e.get("ok"))
        result.retried_requests = sum(1 for e in requests if e.get("retried"))
        result.wrong_predictions = _wrong_predictions(events)
    fault = first_event(events, "fault.injected", start["t"])
    reasons = result.reasons
    if fault is None:
        reasons.append("no fault was injected")
    else:
        result.fault = fault.get("fault")
        injected = [e for e in events if e["event"] == "fault.injected"]
        result.faults = "+".join(str(e.get("fault")) for e in injected)
        result.per_fault = _per_fault(injected, events)
        result.detections = _detections(fault, events)
        detected = first_event(events, "detected", fault["t"])
        recovered_t = recovered_at(start, events)
        if first_event(events, "experiment.unrecovered", fault["t"]) is not None:
            recovered_t = None  # chaos.run gave up with the fault held: what came after
            # the revert is the revert's doing, not a recovery
        if detected is not None:
            result.ttd_s = round(detected["t"] - fault["t"], 4)
            result.detected_by = detected.get("signal")
        learned = first_event(events, "detected", fault["t"], signal="learned")
        if learned is not None:
            result.ttd_learned_s = round(learned["t"] - fault["t"], 4)
        if recovered_t is not None:
            result.rto_s = round(recovered_t - fault["t"], 4)
            result.recovered_by = _recovered_by(events, fault["t"], recovered_t)
        _rpo(result, fault, events)
        if detected is None:
            reasons.append("the fault was never detected")
        if recovered_t is None:
            gave_up = first_event(events, "recovery.failed", fault["t"])
            why = f" ({gave_up['reason']})" if gave_up is not None and gave_up.get("reason") else ""
            reasons.append(f"the steady state was never restored{why}")
    for name in ("ttd", "rto", "rpo"):
        budget = budgets.get(name)
        measured = getattr(result, f"{name}_s")
        if budget is None:
            continue
        if measured is None:
            # an unmeasured RPO fails only a budget the experiment declared itself; a
            # default (ini, stack file) caps the RPO wherever data was restored or lost
            declared = start.get("declared", NAMES)
            if name != "rpo" or fault is None or name not in declared:
                continue
            result.rpo_s = math.inf
            measured = math.inf
        if measured > budget:
            got, limit = format_duration(measured), format_duration(budget)
            reasons.append(f"{name.upper()} {got} exceeds budget {limit}")
    if result.wrong_predictions:
        reasons.append(f"{result.wrong_predictions} wrong predictions were served")
    if result.integrity is False:
        reasons.append("restored data failed the integrity check")
    # a background loop that died stopped detecting (or loading, or backing up): the
    # experiment's figures cannot be trusted, whatever they say; its crash is a cause
    reasons[0:0] = [
        f"the {e.get('loop') or e['event'].removesuffix('.crashed')} crashed: {error_text(e)}"
        for e in events
        if e["event"].endswith(".crashed")
    ]
    outcome = finished.get("outcome") if finished else "interrupted"
    error = first_event(events, "experiment.error", start["t"])
    if error is not None:  # the cause comes first: the other reasons are its consequences
        failed = outcome if outcome not in (None, "passed") else "failed"
        reasons.insert(0, f"the experiment itself {failed}: {error_text(error)}")
    elif outcome not in (None, "passed"):
        reasons.append(f"the experiment itself {outcome}")
    after = first_event(events, "steady_state.violated", start["t"], phase="after")
    if after is not None:
        reasons.append(f"steady state violated after the experiment: {after.get('reason')}")
    result.verdict = "pass" if not reasons else "fail"
    return result


def fault_service(fault: Event) -> str | None:
    """The service a fault acts on (its ``service``, or the ``proxy`` named after it)."""
    params = fault.get("params") or {}
    return params.get("service") or params.get("proxy")


def _per_fault(injected: list[Event], events: list[Event]) -> list[dict[str, Any]]:
    """TTD and detected_by of each fault: its first detection of the service it acts on;
    for a fault without one (storage: the model store or the trainer notices), the first
    detection after it of a service no other fault of the window acts on."""
    services = {fault_service(f) for f in injected} - {None}
    rows = []
    for fault in injected:
        own = fault_service(fault)
        detected = next(
            (e for e in events if e["event"] == "detected" and e["t"] >= fault["t"]
             and (e.get("service") == own if own else e.get("service") not in services)),
            None,
        )  # fmt: skip
        params = fault.get("params") or {}
        rows.append({
            "kind": fault.get("fault"),
            "target": own or params.get("target"),
            "ttd_s": None if detected is None else round(detected["t"] - fault["t"], 4),
            "detected_by": None if detected is None else detected.get("signal"),
        })  # fmt: skip
    return rows


def _detections(fault: Event, events: list[Event]) -> list[dict[str, Any]]:
    """Every (service, signal) detected after the first fault, in order of first detection."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        if e["event"] != "detected" or e["t"] < fault["t"]:
            continue
        key = (str(e.get("service")), str(e.get("signal")))
        if key in found:
            found[key]["count"] += 1
        else:
            found[key] = {"service": key[0], "signal": key[1],
                          "after_s": round(e["t"] - fault["t"], 4), "count": 1}  # fmt: skip
    return list(found.values())


MAX_ERROR_TEXT = 500


def error_text(error: Event) -> str:
    """``Type: message`` of an ``experiment.error`` event, on one line and at most
    :data:`MAX_ERROR_TEXT` characters (the journal keeps the whole message)."""
    text = " ".join(f"{error.get('type', 'error')}: {error.get('message', '')}".split())
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 3] + "..."


DR_SITE = "dr-site"


def dr_site_rpo_series(
    events: list[Event], until_wall: float | None = None, *, since_wall: float | None = None
) -> list[tuple[float, float]]:
    """(wall time, DR-site RPO): the age of the newest recovery point the DR site holds,
    from the replicator's events (``site_newest_created``).  A sawtooth that rises with
    time and drops when a newer point arrives: two points per arrival (just before, just
    after), one at *until_wall*, and one at *since_wall* when the first event is not an
    arrival (nothing arrived before it, so what it reports held since)."""
    series: list[tuple[float, float]] = []
    newest: float | None = None
    for e in events:
        if e.get("site_newest_created") is None:
            continue
        wall = float(e["wall"])
        if newest is not None:
            series.append((wall, wall - newest))
        elif since_wall is not None and e["event"] != "backup.replicated":
            start = max(since_wall, float(e["site_newest_created"]))  # not before it existed
            if start < wall:
                series.append((start, start - float(e["site_newest_created"])))
        newest = float(e["site_newest_created"])
        series.append((wall, wall - newest))
    if newest is not None and until_wall is not None and until_wall > series[-1][0]:
        series.append((until_wall, until_wall - newest))
    return series


def _dr_site_outage_rpo(fault: Event, events: list[Event]) -> float | None:
    """The worst DR-site RPO from *fault* until the DR site caught up, if it was cut off."""
    if first_event(events, "detected", fault["t"], service=DR_SITE) is None:
        return None
    caught_up = first_event(events, "steady_state.ok", fault["t"], service=DR_SITE)
    until = caught_up["wall"] if caught_up else max(e["wall"] for e in events)
    window = [
        rpo for wall, rpo in dr_site_rpo_series(events, until) if fault["wall"] <= wall <= until
    ]
    return round(max(window), 3) if window else None


def _recovered_by(events: list[Event], since: float, until: float) -> str | None:
    """Who recovered: the last ``recovered`` action before the confirmation."""
    actions = [e for e in events if e["event"] == "recovered" and since <= e["t"] <= until]
    if not actions:
        return None
    last = actions[-1]
    if last.get("recovered_by") == "platform":
        return "platform"
    return f"chaoskit ({last.get('action')})"


def _rpo(result: ExperimentResult, fault: Event, events: list[Event]) -> None:
    """RPO: the data lost, i.e. the newest state that existed before the fault minus the
    state the stack resumed from (or could resume from), in wall seconds and in steps.

    - restored checkpoint: the trainer's state at the fault minus the restored one
      (seconds: fault time - its creation; steps: step at the fault - its step);
    - trainer resumed without a restore: step at the fault - the step it resumed at
      (seconds: fault time - the creation of the checkpoint it resumed from);
    - restored model version: the newest version at the fault minus the one now serving
      (0 when the damaged version itself was restored);
    - DR site cut off: the worst window during which losing the primary would have lost
      data, measured until the DR site caught up inside the experiment.
    The worst of these that apply is the RPO; none apply: no data was at risk (empty).
    """
    seconds: list[float] = []
    steps: list[int] = []
    step_at_fault = fault.get("trainer_step")
    restores = [e for e in events if e["event"] == "restore.done" and e["t"] >= fault["t"]]
    # per recovery point, its last restore decides: a quarantine that found the version
    # to serve still damaged (the attack was not over) and restored it after is intact
    final: dict[Any, bool] = {}
    for n, restore in enumerate(restores):
        if "integrity" in restore:
            final[restore.get("snapshot") or n] = bool(restore["integrity"])
    if final:
        result.integrity = all(final.values())
    # per family, the newest state restored counts (a ransomware drill restores every
    # version and every checkpoint: restoring the older ones too loses nothing more)
    versions = [e for e in restores if e.get("kind") == "model-version"]
    if versions:
        _version_rpo(versions, fault.get("newest_version") or {}, seconds, steps)
    others = [e for e in restores if e.get("kind") != "model-version"]
    created = _newest(others, "recovery_point_created_wall")
    if created is not None:  # one written after the fault loses nothing
        seconds.append(max(0.0, fault["wall"] - created))
    step = _newest(others, "recovery_point_step")
    if step_at_fault is not None and step is not None:
        steps.append(max(0, int(step_at_fault) - int(step)))
    resumed = first_event(events, "trainer.started", fault["t"])
    if not restores and resumed is not None and resumed.get("step") is not None:
        if step_at_fault is not None:
            steps.append(max(0, int(step_at_fault) - int(resumed["step"])))
        created = _checkpoint_created(fault, events, int(resumed["step"]))
        if created is not None:  # a checkpoint saved after the fault loses nothing
            seconds.append(max(0.0, fault["wall"] - created))
    outage = _dr_site_outage_rpo(fault, events)
    if outage is not None:
        seconds.append(outage)
    _disk_full_rpo(fault, events, seconds, steps)
    if steps:
        result.rpo_steps = max(steps)
    if seconds:
        result.rpo_s = round(max(seconds), 3)


def _disk_full_rpo(fault: Event, events: list[Event], seconds: list[float],
                   steps: list[int]) -> None:  # fmt: skip
    """A full checkpoint volume: the training a crash would have lost at the worst
    moment, from the newest checkpoint at the fault to the first one saved (and backed
    up) after the volume filled, or to the end of the window when none was."""
    full = first_event(events, "detected", fault["t"], signal="disk-full")
    newest = fault.get("newest_checkpoint") or {}
    if full is None or newest.get("created_wall") is None:
        return
    resumed = next((e for e in events if e["event"] == "backup.recovery_point"
                    and "checkpoint" in e and (e.get("wall_created") or 0) > full["wall"]),
                   None)  # fmt: skip
    until = resumed["wall_created"] if resumed else max(e["wall"] for e in events)
    seconds.append(max(0.0, float(until) - float(newest["created_wall"])))
    if resumed is not None and resumed.get("step") is not None and newest.get("step") is not None:
        steps.append(max(0, int(resumed["step"]) - int(newest["step"])))


def _checkpoint_created(fault: Event, events: list[Event], step: int) -> float | None:
    """When the checkpoint of *step* was written: the fault's newest checkpoint, or
    the trainer's ``checkpoint.saved`` / the backup of that step (one saved between the
    fault and a crash is the one the trainer resumes from)."""
    newest = fault.get("newest_checkpoint") or {}
    if newest.get("step") == step and newest.get("created_wall") is not None:
        return float(newest["created_wall"])
    for e in events:
        if (e["event"] in ("checkpoint.saved", "backup.recovery_point") and e.get("step") == step
                and e.get("wall_created") is not None):  # fmt: skip
            return float(e["wall_created"])
    return None


def _newest(restores: list[Event], field: str) -> float | None:
    return max((float(e[field]) for e in restores if e.get(field) is not None), default=None)


def _version_rpo(
    versions: list[Event], newest: dict[str, Any], seconds: list[float], steps: list[int]
) -> None:
    """The versions lost: the newest at the fault minus the newest restored (0 when
    the damaged version itself is back)."""
    best = _newest(versions, "recovery_point_step")
    if newest.get("version") is not None and best is not None and newest["version"] == best:
        seconds.append(0.0)
        steps.append(0)
        return
    created = _newest(versions, "recovery_point_created_wall")
    if newest.get("created_wall") is not None and created is not None:
        seconds.append(max(0.0, float(newest["created_wall"]) - created))
    if newest.get("version") is not None and best is not None:
        steps.append(max(0, int(newest["version"]) - int(best)))


def results_from_events(events: Iterable[Event]) -> list[ExperimentResult]:
    return [compute(start, window) for start, window in split_experiments(events)]
