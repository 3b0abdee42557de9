"""RTO benchmark: the kill experiment N times against a plain cold start of serving.

Both run in the same process, on the same stack, in one run, so their medians compare.
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

from chaoskit.dr.engine import DRConfig
from chaoskit.dr.goldens import Goldens
from chaoskit.dr.steady_state import check_steady_state
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    config = DRConfig()
    with tempfile.TemporaryDirectory(prefix="chaoskit-bench-") as tmp:
        root = Path(tmp)
        backend = ProcessBackend(root / "run", root / "data")
        journal = Journal(root / "run" / "journal.jsonl", source="bench")
        stack = ReferenceStack(backend, root / "data", journal.path, StackConfig())
        with stack:
            goldens = Goldens(stack.model_base_path)
            colds, ttds, rtos = [], [], []
            for i in range(args.runs):
                colds.append(cold_start(stack, goldens))
                experiment = Experiment(
                    f"kill-{i}", stack, journal, Objectives(), dr_config=config, seed=i
                )
                with experiment:
                    result = experiment.run(KillService(SERVING))
                ttds.append(result.ttd_s)
                rtos.append(result.rto_s)
                print(f"run {i}: cold {colds[-1]:.3f}s  ttd {ttds[-1]:.3f}s  rto {rtos[-1]:.3f}s",
                      flush=True)  # fmt: skip
            peaks = peak_rss_mb(backend)
    cold, ttd, rto = (statistics.median(v) for v in (colds, ttds, rtos))
    ttd_target = 2 * config.probe_interval + 0.05
    rto_target = cold + ttd + 0.5
    print()
    print(f"{'metric':<34}{'median':>10}{'target':>10}{'ratio':>8}")
    print(f"{'serving cold start (s)':<34}{cold:>10.3f}")
    print(f"{'TTD, kill (s)':<34}{ttd:>10.3f}{ttd_target:>10.3f}{ttd / ttd_target:>8.2f}")
    print(f"{'RTO, kill (s)':<34}{rto:>10.3f}{rto_target:>10.3f}{rto / rto_target:>8.2f}")
    print(f"{'RTO / cold start':<34}{rto / cold:>10.2f}")
    print("peak RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in peaks.items())
          + f" (stack {sum(peaks.values()):.0f} MB)")  # fmt: skip
    ok = ttd <= ttd_target and rto <= rto_target
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
