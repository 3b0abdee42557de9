"""RTO benchmark, Docker Swarm: who recovers a serving replica, and how fast — Swarm on
its own (no health check; Docker's default 30 s one; a tuned 1 s one) or chaoskit's DR
engine — after a kill, a hang, a bad rollout (a version that serves no model) and the
loss of its node, side by side in one run on a two-node swarm on this machine.

Targets (issue 13): node-loss RTO with chaoskit's DR engine <= 0.3x Swarm's own (no
health check); a hang recovered by chaoskit within the budget where Swarm without a
health check never recovers it.  chaoskit runs twice: replacing a lost node's replica
with a new task (a cold start), and with one warm spare task (``--chaos-swarm-spares
1``); the targets are checked on the spare's column.

    .venv/bin/python bench/rto_swarm.py [--runs 3] [--slow-runs 1] [--timeout 40]

TTD and RTO come from each experiment's journal (the same metrics as the report). A
recovery (the DR engine's, or Swarm's while chaoskit watches) that has not ended within
``--timeout`` seconds of its start is "never"; an RTO runs from the fault over every
replica's recovery, so a recovered run's RTO can exceed ``--timeout``.  Kill and node
loss run ``--runs`` times; hang and bad rollout, where Swarm alone waits out the whole
timeout, ``--slow-runs`` times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from chaoskit.dr.online.engine import DRConfig
from chaoskit.experiment import Experiment, ExperimentFailed
from chaoskit.faults import BadRollout, HangService, KillService, NodeLoss
from chaoskit.faults.base import Fault
from chaoskit.journal import Journal
from chaoskit.objectives import Objectives
from chaoskit.stack.reference import ReferenceStack, StackConfig
from chaoskit.stack.swarm import SwarmBackend
from chaoskit.stack.swarm_mode import SwarmOptions

MODES = [  # (column, recovery, health check interval, warm spares)
    ("swarm, no healthcheck", "observe", None, 0),
    ("swarm, healthcheck 30s", "observe", 30.0, 0),
    ("swarm, healthcheck 1s", "observe", 1.0, 0),
    ("chaoskit", "chaoskit", None, 0),
    ("chaoskit, 1 spare", "chaoskit", None, 1),
]
OURS = "chaoskit, 1 spare"
"""The column the targets are checked on: the DR engine with a warm spare task."""
SLOW = ("hang", "bad rollout")
FAULTS: dict[str, Callable[[str], Fault]] = {  # given the replica on the manager's node
    "kill": lambda replica: KillService(replica),
    "hang": lambda replica: HangService(replica),
    "bad rollout": lambda replica: BadRollout("serving", change="no-model"),
    "node loss": lambda replica: NodeLoss(),  # the worker, with the other replica
}
Cell = tuple[list[float], list[float], int]
"""TTDs, RTOs of the recovered runs, and how many runs never recovered."""


def on_manager(stack: ReferenceStack) -> str:
    """The replica on the manager's node.  Kills and hangs hit that one: Swarm's scheduler
    avoids a node where a service's tasks failed 5 times in 5 minutes (swarmkit), so
    failing them on the worker would leave it nothing to run, and the node loss nothing
    to take."""
    backend = stack.backend
    assert isinstance(backend, SwarmBackend)
    own = backend.topology.own_id
    return next((r for r in stack.replicas if backend.node_of(r) == own), stack.replicas[-1])


def measure_mode(root: Path, recovery: str, healthcheck: float | None, spares: int,
                 runs: int, slow_runs: int, timeout: float) -> dict[str, Cell]:  # fmt: skip
    """Every fault *runs* (or *slow_runs*) times on one two-node stack recovered by
    *recovery*."""
    data = root / "data"
    options = SwarmOptions(workers=1, healthcheck=healthcheck, spares=spares)
    backend = SwarmBackend(root / "run", data, options=options)
    journal = Journal(root / "run" / "journal.jsonl", source="bench")
    stack = ReferenceStack(backend, data, journal.path, StackConfig())
    stack.recovery = recovery  # type: ignore[assignment]
    config = DRConfig(recovery_timeout=timeout)
    cells: dict[str, Cell] = {name: ([], [], 0) for name in FAULTS}
    with stack:
        for i in range(max(runs, slow_runs)):
            for name, fault in FAULTS.items():
                if i >= (slow_runs if name in SLOW else runs):
                    continue
                label = f"swarm-{recovery}-{healthcheck}-{spares}-{name}-{i}"
                experiment = Experiment(label, stack, journal, Objectives(), dr_config=config,
                                        seed=i, backend="swarm")  # fmt: skip
                with experiment:
                    try:
                        result = experiment.run(fault(on_manager(stack)))
                    except ExperimentFailed:  # not recovered in time: the result says so
                        failed = experiment.result
                        assert failed is not None
                        result = failed
                ttds, rtos, never = cells[name]
                if result.ttd_s is not None:
                    ttds.append(result.ttd_s)
                if result.rto_s is None:
                    cells[name] = (ttds, rtos, never + 1)
                else:
                    rtos.append(result.rto_s)
                print(f"  {recovery} hc={healthcheck} spares={spares} {name} run {i}: TTD "
                      f"{result.ttd_s} "
                      f"RTO {result.rto_s}", flush=True)  # fmt: skip
    return cells


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def show(cell: Cell, timeout: float) -> str:
    ttds, rtos, never = cell
    ttd = "  -  " if not ttds else f"{median(ttds):5.2f}"
    rto = "never" if not rtos else f"{median(rtos):5.1f}"
    if rtos and never:
        rto += f" ({never}x never)"
    elif not rtos:
        rto += f" (>{timeout:g}s)"
    return f"{ttd} / {rto}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slow-runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=40.0,
                        help="seconds each recovery gets before the platform is 'never'")
    args = parser.parse_args(argv)
    table: dict[str, dict[str, Cell]] = {}
    with tempfile.TemporaryDirectory(prefix="chaoskit-bench-swarm-") as tmp:
        for column, recovery, healthcheck, spares in MODES:
            print(f"{column}: measuring", flush=True)
            root = Path(tmp) / column.replace(" ", "-").replace(",", "")
            table[column] = measure_mode(root, recovery, healthcheck, spares, args.runs,
                                         args.slow_runs, args.timeout)  # fmt: skip
    print(f"\nTTD / RTO in seconds, medians of {args.runs} runs ({args.slow_runs} for "
          f"{' and '.join(SLOW)}); a two-node swarm, 2 serving replicas; kill and hang hit "
          "the replica on the manager's node, node loss the worker with the other one")
    width = 24
    print(f"{'fault':<14}" + "".join(f"{m[0]:>{width}}" for m in MODES))
    for name in FAULTS:
        print(f"{name:<14}" + "".join(f"{show(table[m[0]][name], args.timeout):>{width}}"
                                      for m in MODES))  # fmt: skip
    swarms = table["swarm, no healthcheck"]["node loss"][1]
    ratios: dict[str, float | None] = {}
    print()
    for column in ("chaoskit", OURS):
        ours = table[column]["node loss"][1]
        ratios[column] = median(ours) / median(swarms) if ours and swarms else None  # type: ignore[operator]
        shown = "n/a" if ratios[column] is None else f"{ratios[column]:.2f}x"
        target = " (target <= 0.3x)" if column == OURS else ""
        print(f"node loss RTO, {column} / swarm alone: {shown}{target}")
    ratio = ratios[OURS]
    hang_ours = table[OURS]["hang"]
    hang_swarm = table["swarm, no healthcheck"]["hang"]
    print(f"hang recovered: chaoskit {len(hang_ours[1])}/{args.slow_runs}, swarm without a "
          f"health check {len(hang_swarm[1])}/{args.slow_runs}")
    met = ratio is not None and ratio <= 0.3 and len(hang_ours[1]) == args.slow_runs
    print("swarm targets met" if met else "SWARM TARGETS MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
