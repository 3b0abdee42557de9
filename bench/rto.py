"""RTO benchmark: the kill experiment N times against a plain cold start of serving.

All in one run: on a one-replica stack (recovery = restart) with N cold starts beside
it, then on the two-replica reference stack (recovery = failover).
Targets (issue "Foundation"): TTD median <= 2 probe intervals + 50 ms;
RTO median <= cold-start median + TTD median + 0.5 s.  Also prints the stack's peak RSS.

    .venv/bin/python bench/rto.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from chaoskit.dr.online.engine import DRConfig
from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.online.steady_state import check_steady_state
from chaoskit.experiment import Experiment
from chaoskit.faults.service import KillService
from chaoskit.journal import Journal
from chaoskit.objectives import Objectives
from chaoskit.stack.process import ProcessBackend
from chaoskit.stack.reference import SERVING, ReferenceStack, StackConfig
from chaoskit.waiting import wait_until


def cold_start(stack: ReferenceStack, goldens: Goldens) -> float:
    """Seconds from starting a stopped serving process to its first correct prediction."""
    stack.backend.stop(SERVING)
    client = stack.client(timeout=2.0)
    start = time.monotonic()
    stack.backend.restart(SERVING)
    wait_until(lambda: check_steady_state(client, goldens).ok, 60, interval=0.01, what="canary")
    return time.monotonic() - start


def peak_rss_mb(backend: ProcessBackend) -> dict[str, float]:
    """VmHWM (peak resident set) of each running service process, in MB."""
    peaks = {}
    for name in backend.services():
        pid = backend.instance(name)
        if pid is None:
            continue
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks[name] = int(line.split()[1]) / 1024
    return peaks


def kill_runs(
    root: Path, replicas: int, runs: int, config: DRConfig, *, cold_starts: bool
) -> tuple[list[float], list[float], list[float], dict[str, float]]:
    """Kill serving *runs* times on a stack with *replicas*; optionally time cold starts."""
    backend = ProcessBackend(root / "run", root / "data")
    journal = Journal(root / "run" / "journal.jsonl", source="bench")
    stack = ReferenceStack(backend, root / "data", journal.path, StackConfig(replicas=replicas))
    colds, ttds, rtos = [], [], []
    with stack:
        goldens = Goldens(stack.model_base_path)
        for i in range(runs):
            if cold_starts:
                colds.append(cold_start(stack, goldens))
            experiment = Experiment(
                f"kill-{i}", stack, journal, Objectives(), dr_config=config, seed=i
            )
            with experiment:
                result = experiment.run(KillService(SERVING))
            ttds.append(result.ttd_s)
            rtos.append(result.rto_s)
            cold = f"cold {colds[-1]:.3f}s  " if cold_starts else ""
            print(f"{replicas} replica(s), run {i}: {cold}ttd {ttds[-1]:.3f}s  rto {rtos[-1]:.3f}s",
                  flush=True)  # fmt: skip
        peaks = peak_rss_mb(backend)
    return colds, ttds, rtos, peaks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    config = DRConfig()
    with tempfile.TemporaryDirectory(prefix="chaoskit-bench-") as tmp:
        colds, ttds, rtos, peaks = kill_runs(
            Path(tmp) / "one", 1, args.runs, config, cold_starts=True
        )
        _, f_ttds, f_rtos, f_peaks = kill_runs(
            Path(tmp) / "two", 2, args.runs, config, cold_starts=False
        )
    cold, ttd, rto = (statistics.median(v) for v in (colds, ttds, rtos))
    f_ttd, f_rto = statistics.median(f_ttds), statistics.median(f_rtos)
    ttd_target = 2 * config.probe_interval + 0.05
    rto_target = cold + ttd + 0.5
    print()

    def row(label: str, value: float, target: float | None = None) -> None:
        tail = "" if target is None else f"{target:>10.3f}{value / target:>8.2f}"
        print(f"{label:<40}{value:>10.3f}{tail}")

    print(f"{'median of ' + str(args.runs) + ' runs':<40}{'value':>10}{'target':>10}{'ratio':>8}")
    row("serving cold start (s)", cold)
    row("TTD, kill, restart (s)", ttd, ttd_target)
    row("RTO, kill, restart (s)", rto, rto_target)
    row("TTD, kill, 2 replicas (s)", f_ttd, ttd_target)
    row("RTO, kill, 2 replicas, failover (s)", f_rto, rto_target)
    row("RTO restart / cold start", rto / cold)
    row("RTO failover / RTO restart", f_rto / rto)
    for label, p in (("1 replica", peaks), ("2 replicas", f_peaks)):
        parts = ", ".join(f"{k} {v:.0f} MB" for k, v in p.items())
        print(f"peak RSS, {label}: {parts} (stack {sum(p.values()):.0f} MB)")
    ok = max(ttd, f_ttd) <= ttd_target and max(rto, f_rto) <= rto_target
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
