"""Restore benchmark (issue 4): RTO of a corrupted latest version against its floor, and
RPO of a damaged checkpoint plus a trainer crash against the checkpoint interval.

One run, one stack, the store guard beside it as the pytest plugin starts it:

(a) N experiments "latest version corrupted" (bit flips in its variables data).  RTO is
    computed from the journal; its floor is what any restore must at least cost: the
    restore of that version's recovery point (``repo.restore`` timed directly, same
    repository, same disk) plus a model load: serving's own ``load_version`` (SavedModel
    load + canary warm-up) timed in a warm TensorFlow subprocess, as in a running server
    (the ``serving.version_loaded`` load_s of this run are shown beside it; a server
    loads few versions per run, the first one cold).  Target: RTO median <= 1.3 x floor.
(b) N experiments "checkpoint damaged, then the trainer crashes" (as
    experiments/test_corruption.py's test_checkpoint_damage_then_trainer_crash), with the
    backup agent running.  Target: RPO median <= 1.2 x the checkpoint interval, measured
    from this run's ``checkpoint.saved`` events.

    .venv/bin/python bench/restore_rto.py [--runs 5]

Exit status 1 when a target is missed or an experiment fails.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from math import nan
from pathlib import Path

from chaoskit.dr.protect.guard_keys import open_backup_repository
from chaoskit.dr.protect.store_guard import StoreGuard
from chaoskit.errors import ChaosKitError
from chaoskit.experiment import Experiment
from chaoskit.faults.service import KillService
from chaoskit.faults.storage import BitFlip
from chaoskit.journal import Journal, read_journal
from chaoskit.model import version_dirs
from chaoskit.objectives import Objectives
from chaoskit.report.metrics import ExperimentResult
from chaoskit.stack.reference import TRAINER, ReferenceStack, StackConfig, make_backend

VARIABLES = "model:latest/variables/variables.data-00000-of-00001"
DEFAULT_SCAN_INTERVAL = inspect.signature(StoreGuard).parameters["scan_interval"].default
RTO_RATIO_TARGET = 1.3
RPO_RATIO_TARGET = 1.2


def restore_seconds(guard: StoreGuard, scratch: Path) -> float:
    """Time one restore of the newest version's recovery point into a scratch directory."""
    version = max(guard.versions)
    target = scratch / f"restore-{version}-{time.monotonic_ns()}"
    start = time.monotonic()
    guard.repo.restore(guard.versions[version].id, target)
    return time.monotonic() - start


LOAD_TIMER = """
import json, sys, time
from pathlib import Path
from chaoskit.model import import_tensorflow
import_tensorflow(threads=2, lean=True)  # as the model server does
from chaoskit.serving.store import load_version
path, runs = Path(sys.argv[1]), int(sys.argv[2])
load_version(0, path)  # warm-up: a running server has TensorFlow initialised
times = []
for _ in range(runs):
    start = time.perf_counter()
    load_version(0, path)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def load_seconds(version_dir: Path, runs: int) -> list[float]:
    """Serving's load of one version (load + canary warm-up), timed in a warm subprocess."""
    done = subprocess.run([sys.executable, "-c", LOAD_TIMER, str(version_dir), str(runs)],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"timing the model load failed: {done.stderr.strip()[-500:]}")
    return [float(t) for t in json.loads(done.stdout.strip().splitlines()[-1])]


def checkpoint_interval(journal: Path, every: int) -> float:
    """Median seconds between consecutive checkpoints of one trainer run (no crash between)."""
    saved = [e for e in read_journal(journal) if e["event"] == "checkpoint.saved"]
    gaps = [b["t"] - a["t"] for a, b in zip(saved, saved[1:], strict=False)
            if b["step"] - a["step"] == every]  # fmt: skip
    if not gaps:
        raise SystemExit("no two consecutive checkpoint.saved events: cannot measure the interval")
    return statistics.median(gaps)


def run_one(stack: ReferenceStack, journal: Journal, name: str, seed: int,
            crash: bool) -> ExperimentResult:  # fmt: skip
    experiment = Experiment(name, stack, journal, Objectives(), seed=seed,
                            fresh_recovery_point=True)  # fmt: skip
    with experiment:
        if not crash:
            return experiment.run(BitFlip(VARIABLES, flips=3))
        fault = BitFlip("checkpoint:latest.data", flips=3)
        with experiment.inject(fault), experiment.inject(KillService(TRAINER)):
            if not experiment.wait_recovered():
                raise ChaosKitError(f"{name}: recovery was not confirmed in time")
        return experiment.verify()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scan-interval", type=float, default=DEFAULT_SCAN_INTERVAL,
                        help="the store guard's scan interval (default: its own default, "
                        f"{DEFAULT_SCAN_INTERVAL:g}s)")  # fmt: skip
    args = parser.parse_args(argv)
    config = StackConfig()
    failures: list[str] = []
    rtos: list[float] = []
    ttds: list[float] = []
    restores: list[float] = []
    rpos: list[float] = []
    with tempfile.TemporaryDirectory(prefix="chaoskit-bench-") as tmp:
        root = Path(tmp)
        journal = Journal(root / "run" / "journal.jsonl", source="bench")
        data = root / "data"
        stack = ReferenceStack(make_backend("process", root / "run", data), data, journal.path,
                               config)  # fmt: skip
        guard = None
        try:
            stack.start()
            guard = StoreGuard(open_backup_repository(data / "backups"), stack, journal,
                               scan_interval=args.scan_interval).start()  # fmt: skip
            for kind, crash in (("version", False), ("checkpoint", True)):
                for i in range(args.runs):
                    try:
                        result = run_one(stack, journal, f"{kind}-{i}", i, crash)
                    except (ChaosKitError, AssertionError) as e:
                        failures.append(f"{kind}-{i}: {e}")
                        print(f"{kind} run {i}: FAILED {e}", flush=True)
                        continue
                    if (
                        result.rto_s is None
                        or result.ttd_s is None
                        or (crash and result.rpo_s is None)
                    ):
                        failures.append(f"{kind}-{i}: not measured: {result.reasons}")
                        continue
                    if crash and result.rpo_s is not None:
                        rpos.append(result.rpo_s)
                        print(f"checkpoint run {i}: rpo {result.rpo_s:.3f}s "
                              f"({result.rpo_steps} steps)", flush=True)  # fmt: skip
                    else:
                        restores.append(restore_seconds(guard, root))
                        rtos.append(result.rto_s)
                        ttds.append(result.ttd_s)
                        print(f"version run {i}: ttd {result.ttd_s:.3f}s rto {result.rto_s:.3f}s "
                              f"restore {restores[-1]:.3f}s", flush=True)  # fmt: skip
            # timed while the stack runs, as the experiments' recoveries were
            versions = version_dirs(stack.model_base_path)
            loads = load_seconds(versions[max(versions)], args.runs)
        finally:
            if guard is not None:
                guard.stop()
            stack.close()
        served = [e["load_s"] for e in read_journal(journal.path)
                  if e["event"] == "serving.version_loaded"]  # fmt: skip
        interval = checkpoint_interval(journal.path, config.checkpoint_every)
    return report(rtos, ttds, restores, loads, served, rpos, interval, failures)


def report(
    rtos: list[float], ttds: list[float], restores: list[float], loads: list[float],
    served: list[float], rpos: list[float], interval: float, failures: list[str],
) -> int:  # fmt: skip
    """Print the table; 0 when every target is met and every experiment passed."""
    if not rtos or not rpos or not loads:
        print("not enough measurements: " + "; ".join(failures))
        return 1
    rto, ttd = statistics.median(rtos), statistics.median(ttds)
    restore, load = statistics.median(restores), statistics.median(loads)
    floor = restore + load
    rpo = statistics.median(rpos)
    recovery = statistics.median(r - t for r, t in zip(rtos, ttds, strict=True))
    rows = [
        ("TTD, latest version corrupted (s)", ttd, None),
        ("restore of its recovery point (s)", restore, None),
        ("model load, warm load_version (s)", load, None),
        ("  (serving.version_loaded load_s)", statistics.median(served) if served else nan, None),
        ("RTO floor = restore + load (s)", floor, None),
        ("RTO, latest version corrupted (s)", rto, RTO_RATIO_TARGET * floor),
        ("  RTO - TTD, per run (s)", recovery, None),
        ("checkpoint interval (s)", interval, None),
        ("RPO, checkpoint damaged + crash (s)", rpo, RPO_RATIO_TARGET * interval),
    ]
    print()
    print(f"{'metric':<38}{'median':>9}{'target':>9}{'ratio':>8}{'limit':>7}")
    for name, value, target in rows:
        line = f"{name:<38}{value:>9.3f}"
        if target is not None:
            base = floor if "RTO" in name else interval
            limit = RTO_RATIO_TARGET if "RTO" in name else RPO_RATIO_TARGET
            line += f"{target:>9.3f}{value / base:>8.2f}{limit:>7.1f}"
        print(line)
    print(f"runs: {len(rtos)} version + {len(rpos)} checkpoint experiments; "
          f"model loads timed: {len(loads)}; by serving in the run: {len(served)}")  # fmt: skip
    ok = rto <= RTO_RATIO_TARGET * floor and rpo <= RPO_RATIO_TARGET * interval and not failures
    for failure in failures:
        print(f"failed: {failure}")
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
