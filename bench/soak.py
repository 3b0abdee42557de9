"""Soak: random faults from every family, one at a time, for a long time, and nothing may rot.

    .venv/bin/python bench/soak.py --duration 1h [--seed N] [--backend process] [--out DIR]

Runs pytest on ``bench/soak_experiment.py`` (the plugin's own orchestration: stack, DR
engine, store guard, replicator, load generator, journal, report), which draws faults
from a seeded hypothesis strategy until ``--duration`` is used up, each its own report
row held to its experiment's budgets.  Meanwhile this process samples, every
``--interval``, the pytest process and the stack's long-lived services (open fds,
threads, child processes, RSS), the latency of appending a small record to the run's
journal (``soak.sample``, which also keeps the samples in the journal), and the disk
used by the run (report and data directories); it checks each fault's row as soon as
its experiment finishes.  At the end: every fault detected and recovered within budget,
zero wrong predictions, pytest passed, ``chaoskit backup check --read-data`` passes on
the local repository and on the DR site, no recovery point the run journaled is missing
from either, and no resource grew beyond its bound (:data:`BOUNDS`).  Prints a table of
faults by kind (TTD/RTO p50, p95, max) and the resource trend; exits 1 when any
invariant broke (each printed as ``broken: ...``), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoskit.dr.learned.signals import parse_rss_mb, percentile, process_tree
from chaoskit.durations import format_duration, parse_duration
from chaoskit.errors import ConfigError
from chaoskit.journal import Journal, JournalTail, read_journal
from chaoskit.report.metrics import ExperimentResult, compute, results_from_events
from chaoskit.report.results import format_table

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = Path(__file__).with_name("soak_experiment.py")
DURATION_ENV = "CHAOSKIT_SOAK_DURATION"  # bench/soak_experiment.py reads it
OVERRUN = 900.0
"""Seconds pytest may run past --duration (stack start, the last fault, the report)
before it is interrupted and the soak fails."""
LABEL = re.compile(r"\[(\d+) (.+) seed=(\d+)\]$")
"""A soak row's name ends ``[<n> <kind> seed=<seed>]`` (see bench/soak_experiment.py)."""


@dataclass(frozen=True)
class Bound:
    """How much a resource may grow: the median of the run's last quarter of samples
    against the median of its first quarter (medians: a sample taken while a service
    restarts or an experiment's loops run must not decide), ``last <= first * (1 +
    ratio) + slack``; ``per_hour``: the growth from the first sample to the last, per hour
    of run, must stay within ``slack`` (for what grows with the work done, like disk)."""

    slack: float
    ratio: float = 0.0
    per_hour: bool = False

    def limit(self, first: float, hours: float) -> float:
        if self.per_hour:
            return first + self.slack * max(hours, 1 / 60)
        return first * (1 + self.ratio) + self.slack

    def describe(self) -> str:
        if self.per_hour:
            return f"+{self.slack:g}/h"
        return " ".join(p for p in (f"+{self.ratio:.0%}" if self.ratio else "",
                                    f"+{self.slack:g}" if self.slack else "") if p) or "+0"


BOUNDS: dict[str, Bound] = {
    # a leaked socket or file per fault shows within a few faults; a dozen is noise
    # (connections of the load generator, probes and the replicator in flight)
    "fds": Bound(slack=16),
    # the experiment's loops start and stop per fault; a leaked one is a few per fault
    "threads": Bound(slack=6),
    # the stack's services and nothing else: an orphan or a zombie is a leak
    "children": Bound(slack=0),
    # Python and TensorFlow heaps settle after the first faults; a leak grows steadily
    "rss_mb": Bound(slack=64, ratio=0.25),
    # an O_APPEND write of one line: it must not slow down as the journal grows
    "journal_write_ms": Bound(slack=2, ratio=1.0),
    # checkpoints (CheckpointManager keeps 5), model versions, the repository and the
    # DR site grow with training; the journal with the load: MB per hour of run
    # (a 2-minute run on the reference stack used 6.4 MB: ~200 MB/h)
    "disk_mb": Bound(slack=1024, per_hour=True),
}


# -- sampling ------------------------------------------------------------------------------
def proc_stats(pid: int) -> dict[str, float] | None:
    """Open fds, threads and RSS (MB) of a live process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    threads = next((int(line.split()[1]) for line in status.splitlines()
                    if line.startswith("Threads:")), 0)  # fmt: skip
    rss = parse_rss_mb(status)
    if rss is None:
        return None  # a zombie
    return {"fds": fds, "threads": threads, "rss_mb": rss}


def service_name(pid: int) -> str | None:
    """The service a process backend's child runs: its stdout is ``logs/<service>.log``."""
    try:
        out = os.readlink(f"/proc/{pid}/fd/1")
    except OSError:
        return None
    return Path(out).stem if Path(out).parent.name == "logs" else None


def disk_mb(root: Path) -> float:
    """Disk blocks used under *root*, in MB (files vanish meanwhile: skipped)."""
    total, todo = 0, [root]
    while todo:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    todo.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total / 2**20


def sample(pytest_pid: int, root: Path) -> dict[str, float]:
    """One sample: ``pytest <metric>``, ``<service> <metric>``, children and disk."""
    values: dict[str, float] = {}
    own = proc_stats(pytest_pid)
    if own is not None:
        values.update({f"pytest {k}": v for k, v in own.items()})
    children = process_tree(pytest_pid)[1:]
    values["pytest children"] = len(children)
    for pid in children:
        name = service_name(pid)
        stats = proc_stats(pid) if name else None
        if stats is not None:
            values.update({f"{name} {k}": v for k, v in stats.items()})
    values["run disk_mb"] = disk_mb(root)
    return values


def metric_of(key: str) -> str:
    return key.rsplit(" ", 1)[1]


# -- checks --------------------------------------------------------------------------------
def trend(samples: list[tuple[float, dict[str, float]]]) -> list[tuple[str, ...]]:
    """Resource-trend rows (metric, first, last, bound, limit, ok) of every sampled key."""
    if len(samples) < 4:
        return []
    t0, t1 = samples[0][0], samples[-1][0]
    quarter, hours = (t1 - t0) / 4, (t1 - t0) / 3600
    keys = sorted({k for _, values in samples for k in values})
    rows: list[tuple[str, ...]] = []
    for key in keys:
        bound = BOUNDS[metric_of(key)]
        series = [(t, v[key]) for t, v in samples if key in v]
        if len(series) < 4:
            continue
        if bound.per_hour:
            first, last = series[0][1], series[-1][1]
        else:
            firsts = [v for t, v in series if t <= t0 + quarter]
            lasts = [v for t, v in series if t >= t1 - quarter]
            if not firsts or not lasts:
                continue
            first, last = statistics.median(firsts), statistics.median(lasts)
        limit = bound.limit(first, hours)
        rows.append((key, f"{first:.4g}", f"{last:.4g}", bound.describe(), f"{limit:.4g}",
                     "ok" if last <= limit else "GREW"))  # fmt: skip
    return rows


def kind_of(result: ExperimentResult) -> str:
    match = LABEL.search(result.name)
    return match.group(2) if match else result.name


def fault_rows(results: list[ExperimentResult]) -> list[tuple[str, ...]]:
    """Faults by kind: count, passed, TTD and RTO p50/p95/max; a last row for all."""
    by_kind: dict[str, list[ExperimentResult]] = defaultdict(list)
    for result in results:
        by_kind[kind_of(result)].append(result)
    rows = []
    for kind, group in [*sorted(by_kind.items()), ("all", results)]:
        cells = [kind, str(len(group)), str(sum(r.verdict == "pass" for r in group))]
        for name in ("ttd_s", "rto_s"):
            values = [getattr(r, name) for r in group if getattr(r, name) is not None]
            cells += [format_duration(percentile(values, q)) for q in (50, 95)]
            cells.append(format_duration(max(values, default=None)))
        rows.append(tuple(cells))
    return rows


def row_problems(result: ExperimentResult) -> list[str]:
    """Why one fault's row breaks an invariant (empty: it held)."""
    problems = []
    if result.verdict != "pass":
        problems.append("; ".join(result.reasons) or "failed")
    if result.wrong_predictions:
        problems.append(f"{result.wrong_predictions} wrong predictions")
    if result.ttd_budget_s is None or result.rto_budget_s is None:
        problems.append("no TTD/RTO budget (the fault's experiment sets them)")
    return [f"{result.name}: {p}" for p in problems]


def chaoskit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``chaoskit ARGS`` with this interpreter (and so this checkout's code)."""
    code = "import sys; from chaoskit.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=1800)  # fmt: skip


def backup_problems(data_dir: Path, events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """``backup check --read-data`` of the local repository and the DR site, and every
    journaled recovery point still in them: (lines to print, problems)."""
    password = data_dir / "backups.password"
    points = {e["snapshot"] for e in events if e["event"] == "backup.recovery_point"}
    shipped = {e["snapshot"] for e in events if e["event"] == "backup.replicated"}
    lines, problems = [], []
    for where, repo, wanted in (("local repository", data_dir / "backups", points),
                                ("DR site", data_dir / "dr-site", shipped)):  # fmt: skip
        auth = ["--repo", str(repo), "--password-file", str(password)]
        check = chaoskit_cli("backup", "check", "--read-data", *auth)
        said = (check.stdout + check.stderr).strip().splitlines()
        lines.append(f"chaoskit backup check --read-data ({where}): {said[-1] if said else ''}")
        if check.returncode != 0:
            problems.append(f"backup check --read-data of the {where} failed: "
                            + " | ".join(said[-5:]))  # fmt: skip
        listed = chaoskit_cli("backup", "snapshots", "--json", *auth)
        try:
            held = {s["id"] for s in json.loads(listed.stdout)}
        except (ValueError, KeyError, TypeError):
            problems.append(f"cannot list the snapshots of the {where}: {listed.stderr.strip()}")
            continue
        missing = sorted(wanted - held)
        lines.append(f"recovery points journaled for the {where}: {len(wanted)}, "
                     f"held: {len(wanted & held)}, missing: {len(missing)}")  # fmt: skip
        if missing:
            problems.append(f"{len(missing)} journaled recovery points are missing from the "
                            f"{where}: {', '.join(m[:8] for m in missing[:10])}")  # fmt: skip
    return lines, problems


# -- the run -------------------------------------------------------------------------------
class Follower:
    """Follows the run's journal: each fault's row is checked as soon as it finishes."""

    def __init__(self, path: Path, say: Callable[[str], None]) -> None:
        self.tail = JournalTail(path, from_start=True)
        self.say = say
        self.window: tuple[dict[str, Any], list[dict[str, Any]]] | None = None
        self.problems: list[str] = []
        self.rows = 0
        self.stack_up = False
        """The stack has started: resources are sampled from then on (before, there is
        nothing to compare: no services yet)."""

    def poll(self) -> None:
        for event in self.tail.new_events():
            self.stack_up |= event["event"] == "stack.started"
            if event["event"] == "experiment.started":
                self.window = (event, [])
            elif self.window is not None:
                self.window[1].append(event)
                if event["event"] == "experiment.finished" \
                        and event.get("name") == self.window[0].get("name"):
                    self._finished(compute(*self.window))
                    self.window = None

    def _finished(self, result: ExperimentResult) -> None:
        self.rows += 1
        problems = row_problems(result)
        self.problems += problems
        verdict = "pass" if not problems else "FAIL: " + "; ".join(problems)
        self.say(f"{kind_of(result):26} TTD {format_duration(result.ttd_s):>7}  "
                 f"RTO {format_duration(result.rto_s):>7}  {verdict}")  # fmt: skip


def run(args: argparse.Namespace, root: Path) -> int:
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[soak {time.monotonic() - started:6.0f}s] {text}", flush=True)

    reports, basetemp = root / "reports", root / "tmp"
    argv = [sys.executable, "-m", "pytest", str(EXPERIMENT), "-p", "no:cacheprovider", "-q",
            "-rA", f"--basetemp={basetemp}", f"--chaos-report-dir={reports}",
            f"--chaos-seed={args.seed}", f"--chaos-backend={args.backend}",
            "-o", f"timeout={int(args.duration + OVERRUN)}"]  # fmt: skip
    env = {**os.environ, DURATION_ENV: str(args.duration)}
    log = root / "pytest.log"
    say(f"seed {args.seed}, {format_duration(args.duration)} of faults; run in {root}")
    broken: list[str] = []
    samples: list[tuple[float, dict[str, float]]] = []
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        journal: Journal | None = None
        follower: Follower | None = None
        deadline = time.monotonic() + args.duration + OVERRUN
        next_sample = 0.0
        while proc.poll() is None:
            if time.monotonic() > deadline:
                broken.append(f"pytest still ran {OVERRUN:g}s after the soak's duration")
                proc.send_signal(signal.SIGINT)  # the plugin stops the stack, writes the report
                try:
                    proc.wait(300)
                except subprocess.TimeoutExpired:
                    proc.kill()
                break
            if journal is None:
                found = sorted(reports.glob("*/journal.jsonl"))
                if found:
                    journal = Journal(found[-1], source="soak")
                    follower = Follower(found[-1], say)
            if follower is not None:
                follower.poll()
            up = follower is not None and follower.stack_up
            if journal is not None and up and time.monotonic() >= next_sample:
                next_sample = time.monotonic() + args.interval
                values = sample(proc.pid, root)
                began = time.perf_counter()
                journal.record("soak.sample", values=values)
                values["journal journal_write_ms"] = (time.perf_counter() - began) * 1000
                samples.append((time.monotonic(), values))
            time.sleep(0.2)
        proc.wait()
        if journal is not None:
            journal.close()
    if follower is None or journal is None:
        tail = log.read_text(errors="replace")[-3000:]
        print(tail)
        return report([f"the run never started (pytest exit {proc.returncode}; {log})"])
    follower.poll()
    events = read_journal(journal.path)
    results = [r for r in results_from_events(events) if LABEL.search(r.name)]
    for result in results:
        broken += row_problems(result)
    broken += [f"{e['name']}: {e['type']}: {e['message']}" for e in events
               if e["event"] == "soak.failed"]  # fmt: skip
    if not results:
        broken.append("no fault ran")
    if proc.returncode != 0:
        broken.append(f"pytest exited {proc.returncode} (see {log})")
    data_dirs = sorted(basetemp.glob("chaoskit-stack*"))
    if data_dirs:
        lines, problems = backup_problems(data_dirs[-1], events)
        for line in lines:
            print(line)
        broken += problems
    else:
        broken.append(f"no stack data directory under {basetemp}")
    print("\n=== faults by kind ===")
    headers = ("kind", "count", "pass", "TTD p50", "TTD p95", "TTD max",
               "RTO p50", "RTO p95", "RTO max")  # fmt: skip
    for line in format_table(headers, fault_rows(results)):
        print(line)
    print("\n=== resource trend (first vs last quarter; disk: first vs last sample) ===")
    rows = trend(samples)
    for line in format_table(("resource", "first", "last", "bound", "limit", "ok"), rows):
        print(line)
    broken += [f"{r[0]} grew from {r[1]} to {r[2]} (bound {r[3]}: at most {r[4]})"
               for r in rows if r[5] != "ok"]  # fmt: skip
    if len(samples) < 4:
        broken.append(f"only {len(samples)} resource samples: no trend to check")
    print(f"\nrun: {root} (journal {journal.path}, pytest log {log})")
    return report(list(dict.fromkeys(broken)))


def report(broken: list[str]) -> int:
    for line in broken:
        print(f"broken: {line}")
    print("soak: every invariant held" if not broken else f"soak: {len(broken)} broken")
    return 1 if broken else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="1h", help="time during which faults start "
                        "(e.g. 5m, 1h; default 1h)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="hypothesis and fault seed")
    parser.add_argument("--backend", choices=("process", "docker"), default="process")
    parser.add_argument("--interval", default="5s", help="resource sampling interval")
    parser.add_argument("--out", help="run directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    try:
        args.duration = parse_duration(args.duration, what="--duration")
        args.interval = parse_duration(args.interval, what="--interval")
    except ConfigError as e:
        parser.exit(2, f"soak: error: {e}\n")
    if args.interval <= 0:
        parser.exit(2, f"soak: error: --interval {args.interval!r} must be positive\n")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big") >> 1
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="chaoskit-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, root.absolute())
    except KeyboardInterrupt:  # pytest got it too: it stops the stack and writes the report
        print(f"soak: interrupted; the run so far is in {root}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
