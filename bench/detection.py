"""Detection quality: a labelled campaign on the reference stack, scored per detector.

One two-replica process stack with the store guard, one experiment (load generator and
DR engines) and a LearnedMonitor beside it.  After the monitor's baseline: a steady
period (``--steady-minutes``, default 10), then ``--rounds`` rounds of kill, hang,
partition (the replica proxy "serving"), latency (3x the steady p99 of serving's probes
unless ``--latency-ms``) and corruption (a bit flip in serving's newest version).  Each
fault is followed by a cool-down that is scored neither way.  Everything is journaled
(``bench.period`` labels) and scored from the journal afterwards:

* probe = the DR engine's probe detector (signals probe, canary, latency), as journaled;
* guard = the store guard (integrity scanner, trainer watch), as journaled;
* isolation_forest, kmeans = LearnedMonitor alerts; any = the union of all of them.

Recall per fault kind (an alert counts if it names the faulty service or the gateway),
precision (such alerts / all alerts in fault or steady windows), false alerts per hour
of steady state, median TTD per fault kind.
Targets (issue 7): recall 1.0 for kill, hang, partition, corruption; >= 0.95 for latency;
no false alert in 10 minutes of steady state.

    .venv/bin/python bench/detection.py [--steady-minutes 10] [--rounds 8]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chaoskit.dr.learned.monitor import LearnedMonitor
from chaoskit.dr.learned.signals import SignalSampler, percentile
from chaoskit.dr.protect.guard_keys import open_backup_repository
from chaoskit.dr.protect.store_guard import StoreGuard
from chaoskit.experiment import Experiment
from chaoskit.faults import BitFlip, Fault, HangService, KillService, Latency, Partition
from chaoskit.journal import Event, Journal, JournalTail, read_journal
from chaoskit.objectives import Objectives
from chaoskit.stack.process import ProcessBackend
from chaoskit.stack.reference import SERVING, ReferenceStack, StackConfig

KINDS = ("kill", "hang", "partition", "latency", "corruption")
DETECTORS = ("probe", "guard", "isolation_forest", "kmeans", "any")
ENGINE_SIGNALS = ("probe", "canary", "latency")
"""Signals of the DR engine's probe detector; the store guard journals integrity/process."""
TARGETS = {"kill": SERVING, "hang": SERVING, "partition": SERVING, "latency": SERVING,
           "corruption": "model-store"}  # fmt: skip
"""An alert counts for a fault only if it names the faulty service (or what clients see)."""
GRACE = 2.0
"""Seconds after a fault's revert in which an alert still counts for it."""


def _fault(kind: str, latency_ms: int) -> Fault:
    return {
        "kill": lambda: KillService(SERVING),
        "hang": lambda: HangService(SERVING),
        "partition": lambda: Partition(proxy=SERVING),
        "latency": lambda: Latency(proxy=SERVING, delay=f"{latency_ms}ms"),
        "corruption": lambda: BitFlip(
            target="model:latest/variables/variables.data-00000-of-00001"
        ),
    }[kind]()


def _recovered(tail: JournalTail, since: float) -> bool:
    return any(
        e["event"] == "steady_state.ok" and e.get("phase") == "recovery" and e["t"] >= since
        for e in tail.new_events()
    )


def _settled(stack: ReferenceStack) -> bool:
    backend, gateway = stack.backend, stack.gateway
    running = all(backend.status(name) == "running" for name in stack.services)
    return running and (gateway is None or gateway.routed == gateway.primary)


def run_campaign(root: Path, args: argparse.Namespace) -> Path:
    """Run the labelled campaign; returns the journal path."""
    backend = ProcessBackend(root / "run", root / "data")
    journal = Journal(root / "run" / "journal.jsonl", source="bench")
    stack = ReferenceStack(backend, root / "data", journal.path, StackConfig(replicas=2))
    with stack:
        guard = StoreGuard(
            open_backup_repository(root / "data" / "backups"), stack, journal
        ).start()
        experiment = Experiment("detection", stack, journal, Objectives(), seed=args.seed)
        monitor = None
        try:
            experiment.start()
            sampler = SignalSampler(stack, experiment.goldens, journal.path)
            monitor = LearnedMonitor(
                sampler, journal, window=args.window, baseline_windows=args.baseline_windows,
                consecutive=args.consecutive, seed=args.seed,
            ).start()  # fmt: skip
            if not monitor.trained.wait(args.baseline_windows * args.window * 3 + 30):
                raise RuntimeError("the learned monitor did not finish its baseline")
            print(f"baseline recorded ({args.baseline_windows} windows)", flush=True)
            journal.record("bench.period", kind="steady", phase="start")
            time.sleep(args.steady_minutes * 60)
            journal.record("bench.period", kind="steady", phase="end")
            latency_ms = args.latency_ms or _three_p99_ms(journal.path)
            print(f"steady period done; latency fault = {latency_ms} ms", flush=True)
            for r in range(args.rounds):
                for kind in KINDS:
                    _one_fault(experiment, stack, journal, kind, latency_ms, args)
                    print(f"round {r} {kind} done", flush=True)
        finally:
            if monitor is not None:
                monitor.stop()
            experiment.finish()
            guard.stop()
    return journal.path


def _three_p99_ms(journal: Path) -> int:
    """3x the p99 of serving's probe latency during the steady period, in whole ms."""
    events = read_journal(journal)
    start, end = _steady_span(events)
    lat = [
        e["latency_s"]
        for e in events
        if e["event"] == "probe" and e.get("service") == SERVING and start <= e["t"] < end
    ]
    return max(1, math.ceil(3 * 1000 * (percentile(lat, 99) or 0.01)))


def _steady_span(events: list[Event]) -> tuple[float, float]:
    marks = [e for e in events if e["event"] == "bench.period" and e.get("kind") == "steady"]
    return marks[0]["t"], marks[-1]["t"]


def _one_fault(
    experiment: Experiment, stack: ReferenceStack, journal: Journal, kind: str,
    latency_ms: int, args: argparse.Namespace,
) -> None:  # fmt: skip
    """Inject, hold (until recovered for outages), revert, cool down (unscored)."""
    start, tail = time.monotonic(), JournalTail(journal.path)
    recovered = False
    with experiment.inject(_fault(kind, latency_ms)):
        outage = kind in ("kill", "hang", "partition")
        deadline = start + (60.0 if outage else args.hold)
        while time.monotonic() < deadline:
            recovered = recovered or _recovered(tail, start)
            if outage and recovered and time.monotonic() - start >= 3:
                break
            time.sleep(0.25)
    journal.record("bench.period", kind=kind, phase="end")
    until = time.monotonic() + 60
    while not _settled(stack) and time.monotonic() < until:
        time.sleep(0.25)
    if not _settled(stack):
        stack.ensure_running()
    time.sleep(args.cooldown)
    journal.record("bench.period", kind="cooldown", phase="end")


def _is(det: str, e: Event) -> bool:
    signal = e.get("signal")
    if det == "any":
        return True
    if det == "probe":
        return signal in ENGINE_SIGNALS
    if det == "guard":
        return signal != "learned" and signal not in ENGINE_SIGNALS
    return signal == "learned" and e.get("detector") == det


def _names(alert: Event, kind: str) -> bool:
    return alert.get("service") in (TARGETS[kind], "gateway")


def score(events: list[Event]) -> tuple[dict[str, Any], list[str]]:
    """Per detector: recall/TTDs per kind, alerts in fault and steady windows."""
    steady = _steady_span(events)
    faults = []  # (kind, injected t, window end t)
    pending: tuple[str, float] | None = None
    for e in events:
        if e["event"] == "fault.injected":
            pending = (str(e.get("fault")), e["t"])
        elif e["event"] == "bench.period" and e.get("phase") == "end" and pending is not None:
            if e.get("kind") in KINDS:
                faults.append((e["kind"], pending[1], e["t"] + GRACE))
                pending = None
    alerts = [e for e in events if e["event"] == "detected"]
    out: dict[str, Any] = {}
    lines = []
    for det in DETECTORS:
        mine = [a for a in alerts if _is(det, a)]
        windowed = [(a, [k for k, s, end in faults if s <= a["t"] <= end]) for a in mine]
        in_fault = sum(any(_names(a, k) for k in kinds) for a, kinds in windowed)
        wrong = sum(bool(kinds) and not any(_names(a, k) for k in kinds) for a, kinds in windowed)
        in_steady = sum(steady[0] <= a["t"] < steady[1] for a in mine)
        per_kind: dict[str, list[float | None]] = {k: [] for k in KINDS}
        for kind, s, end in faults:
            first = next((a for a in mine if s <= a["t"] <= end and _names(a, kind)), None)
            per_kind[kind].append(None if first is None else first["t"] - s)
            if first is not None:
                why = first.get("diagnosis") or first.get("reason") or first.get("problems")
                lines.append(
                    f"  {kind:<10} {det:<16} ttd {first['t'] - s:6.2f}s  "
                    f"{first.get('service')}/{first.get('signal')}: {str(why)[:90]}"
                )
            else:
                lines.append(f"  {kind:<10} {det:<16} MISSED")
        out[det] = {"per_kind": per_kind, "in_fault": in_fault, "in_steady": in_steady,
                    "wrong": wrong}  # fmt: skip
    out["steady_hours"] = (steady[1] - steady[0]) / 3600
    return out, lines


def print_table(scores: dict[str, Any]) -> bool:
    hours = scores["steady_hours"]
    print(f"\nsteady state scored: {hours * 60:.1f} min")
    head = f"{'detector':<17}{'precision':>10}{'FA/h':>8}"
    head += "".join(f"{k + ' R':>13}{'TTD':>7}" for k in KINDS)
    print(head)
    ok = True
    for det in DETECTORS:
        s = scores[det]
        total = s["in_fault"] + s["in_steady"] + s["wrong"]
        precision = s["in_fault"] / total if total else float("nan")
        line = f"{det:<17}{precision:>10.2f}{s['in_steady'] / hours:>8.1f}"
        for kind in KINDS:
            ttds = s["per_kind"][kind]
            hits = [t for t in ttds if t is not None]
            recall = len(hits) / len(ttds) if ttds else float("nan")
            med = f"{statistics.median(hits):.2f}" if hits else "-"
            line += f"{f'{len(hits)}/{len(ttds)} {recall:.2f}':>13}{med:>7}"
        print(line)
    union = scores["any"]["per_kind"]
    ok = all(t is not None for k in KINDS if k != "latency" for t in union[k])
    latency = union["latency"]
    ok &= bool(latency) and sum(t is not None for t in latency) / len(latency) >= 0.95
    print("recall targets (any detector):", "met" if ok else "MISSED")
    for det in DETECTORS:
        print(f"false alerts in {hours * 60:.1f} min of steady state, {det}: "
              f"{scores[det]['in_steady']}")  # fmt: skip
    ok &= all(scores[d]["in_steady"] == 0 for d in ("isolation_forest", "kmeans"))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady-minutes", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--baseline-windows", type=int, default=30)
    parser.add_argument("--consecutive", type=int, default=3)
    parser.add_argument("--hold", type=float, default=8.0, help="latency/corruption hold (s)")
    parser.add_argument("--cooldown", type=float, default=15.0)
    parser.add_argument("--latency-ms", type=int, default=0, help="0: 3x steady p99")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="copy the journal here")
    args = parser.parse_args(argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chaoskit-detect-") as tmp:
        path = run_campaign(Path(tmp), args)
        events = read_journal(path)
        if args.keep is not None:
            args.keep.write_bytes(path.read_bytes())
    scores, lines = score(events)
    print("\nfirst alert per fault:")
    print("\n".join(lines))
    ok = print_table(scores)
    print(f"campaign took {(time.monotonic() - began) / 60:.1f} min")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
