"""Signals: what the monitor sees, turned into one feature row per service per window.

The learned detectors (chaoskit/dr/learned/monitor.py) need numbers, not events.  Every window
(default 1 s) the :class:`SignalSampler` turns what happened into a row per service:

* ``latency_p50``/``latency_p99``, ``error_rate``, ``throughput`` -- for each replica
  from the DR engine's ``probe`` events, for ``gateway`` (what clients see) from the load
  generator's ``request`` events.  Both are read from the journal with a
  :class:`~chaoskit.journal.JournalTail`, so data still flows one way: the engine writes,
  the monitor reads.
* ``canary_error`` -- max abs error of one canary :predict against the goldens of the
  newest exported versions (0 when correct); for ``gateway`` the share of wrong answers.
* ``version_lag`` -- how many exported versions are newer than the served one (GET
  status): counted in versions, not version numbers (those are trainer steps), so a
  trainer that keeps exporting does not look like drift while a stuck replica does.
* ``cpu`` (% of one core) and ``rss_mb`` of the service's process tree from ``/proc``:
  the process itself, or a container's init and its descendants (a local engine).

A value the window has no evidence for is ``None``; the detectors treat it as
"as in the baseline", while a dead service still shows through throughput and RSS 0.
The functions above the sampler are pure, so the arithmetic unit-tests without processes.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from chaoskit.dr.online.goldens import max_abs_error
from chaoskit.errors import ChaosKitError
from chaoskit.journal import Event, JournalTail
from chaoskit.model import version_dirs

FEATURES = (
    "latency_p50",
    "latency_p99",
    "error_rate",
    "throughput",
    "canary_error",
    "version_lag",
    "cpu",
    "rss_mb",
)
GATEWAY_ROW = "gateway"
"""The pseudo-service whose row is built from the load generator's requests."""

Row = dict[str, float | None]


# -- pure functions ----------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100, linear interpolation), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Window:
    """What one service showed during one window (raw observations, before features)."""

    service: str
    duration: float
    latencies: list[float] = field(default_factory=list)
    oks: list[bool] = field(default_factory=list)
    canary_error: float | None = None
    served_version: int | None = None
    exported_versions: tuple[int, ...] | None = None
    cpu: float | None = None
    rss_mb: float | None = None


def window_features(window: Window) -> Row:
    """One feature row (see FEATURES) from one window's observations."""
    n = len(window.oks)
    lag: float | None = None
    if window.exported_versions is not None and window.served_version is not None:
        lag = float(sum(v > window.served_version for v in window.exported_versions))
    return {
        "latency_p50": percentile(window.latencies, 50),
        "latency_p99": percentile(window.latencies, 99),
        "error_rate": (n - sum(window.oks)) / n if n else None,
        "throughput": n / window.duration if window.duration > 0 else None,
        "canary_error": window.canary_error,
        "version_lag": lag,
        "cpu": window.cpu,
        "rss_mb": window.rss_mb,
    }


def split_events(
    events: Iterable[Event], replicas: Sequence[str], duration: float
) -> dict[str, Window]:
    """Bucket probe events per replica and request events into the gateway row."""
    windows = {name: Window(name, duration) for name in (*replicas, GATEWAY_ROW)}
    wrong = 0
    for e in events:
        if e.get("event") == "probe" and e.get("service") in windows:
            w = windows[e["service"]]
        elif e.get("event") == "request":
            w = windows[GATEWAY_ROW]
            wrong += e.get("correct") is False
        else:
            continue
        w.oks.append(bool(e.get("ok")))
        latency = e.get("latency_s")
        if isinstance(latency, int | float):
            w.latencies.append(float(latency))
    gateway = windows[GATEWAY_ROW]
    gateway.canary_error = wrong / len(gateway.oks) if gateway.oks else None
    return windows


def canary_error(predictions: Any, goldens: Sequence[dict[str, Any]]) -> float | None:
    """Distance of *predictions* to the nearest of the given golden canaries (0 = correct).

    Against several recent versions because a replica may switch version between the
    exporter's write and the probe; inf distances are capped at 1e6 to stay numeric.
    """
    if not goldens:
        return None
    errors = []
    for golden in goldens:
        err = max_abs_error(predictions, golden["outputs"])
        errors.append(0.0 if err <= golden.get("tolerance", 1e-4) else err)
    return min(min(errors), 1e6)


def parse_proc_stat(text: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat."""
    fields = text[text.rindex(")") + 2 :].split()  # the name may contain spaces
    return int(fields[11]) + int(fields[12])


def parse_rss_mb(status_text: str) -> float | None:
    """VmRSS in MB from the text of /proc/<pid>/status (None for a zombie)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def process_tree(pid: int) -> list[int]:
    """*pid* and its descendants from /proc (a container's init and what it runs)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(child) for child in f.read().split()]
        except (OSError, ValueError):
            continue  # gone meanwhile
    return tree


def cpu_percent(ticks_before: int, ticks_after: int, seconds: float, hz: int) -> float:
    """CPU use over an interval in % of one core."""
    if seconds <= 0:
        return 0.0
    return max(0.0, 100.0 * (ticks_after - ticks_before) / hz / seconds)


# -- the sampler ---------------------------------------------------------------------------
class SignalSampler:
    """Samples one feature row per service each time :meth:`sample` is called.

    *stack* is a ReferenceStack (replicas, replica_client, backend, model_base_path),
    *goldens* its Goldens.  Calls to the replicas run in parallel with a short timeout,
    so one hung replica does not stretch the window of the others.
    """

    def __init__(
        self,
        stack: Any,
        goldens: Any,
        journal_path: str | os.PathLike[str],
        *,
        call_timeout: float = 0.4,
        recent_versions: int = 3,
    ) -> None:
        self.stack = stack
        self.goldens = goldens
        self.replicas = list(getattr(stack, "replicas", ["serving"]))
        self.call_timeout = call_timeout
        self.recent_versions = recent_versions
        self._tail = JournalTail(journal_path)
        self._pending: list[Event] = []
        self._ticks: dict[str, tuple[str, int, float]] = {}
        self._hz = os.sysconf("SC_CLK_TCK")
        self._pool = ThreadPoolExecutor(max(1, len(self.replicas)), thread_name_prefix="signals")
        self._lock = threading.Lock()
        self._inputs: list[list[float]] | None = None

    @property
    def services(self) -> list[str]:
        return [*self.replicas, GATEWAY_ROW]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def sample(self, start: float, end: float) -> dict[str, Row]:
        """Feature rows for the window [start, end) in monotonic time."""
        with self._lock:
            events = self._pending + self._tail.new_events()
            current = [e for e in events if start <= e.get("t", 0.0) < end]
            self._pending = [e for e in events if e.get("t", 0.0) >= end]
        windows = split_events(current, self.replicas, end - start)
        exported, recent = self._recent_goldens()
        futures = {r: self._pool.submit(self._call_replica, r, recent) for r in self.replicas}
        for replica, future in futures.items():
            w = windows[replica]
            w.served_version, w.canary_error = future.result()
            w.exported_versions = exported
            w.cpu, w.rss_mb = self._proc(replica, end)
        return {name: window_features(w) for name, w in windows.items()}

    def _recent_goldens(self) -> tuple[tuple[int, ...], list[dict[str, Any]]]:
        """(every exported version, goldens of the newest few)."""
        exported = tuple(sorted(version_dirs(self.goldens.base)))
        newest = exported[-self.recent_versions :]
        recent = [g for g in (self.goldens.for_version(v) for v in newest) if g is not None]
        if self._inputs is None and recent:
            self._inputs = list(recent[-1]["inputs"])
        return exported, recent

    def _call_replica(
        self, replica: str, recent: list[dict[str, Any]]
    ) -> tuple[int | None, float | None]:
        """(served version, canary error) through the replica's proxy; None when unreachable."""
        client = self.stack.replica_client(replica, timeout=self.call_timeout)
        served = client.available_version(timeout=self.call_timeout)
        if self._inputs is None:
            return served, None
        try:
            answer = client.predict(self._inputs, timeout=self.call_timeout)
        except OSError:
            return served, None
        if not answer.ok:
            return served, None
        return served, canary_error(answer.body.get("predictions"), recent)

    def _root_pid(self, service: str, instance: str) -> int | None:
        """The service's process, or its container's init (None: a remote engine)."""
        if instance.isdigit():
            return int(instance)
        netns_pid = getattr(self.stack.backend, "netns_pid", None)
        try:
            return None if netns_pid is None else int(netns_pid(service))
        except ChaosKitError:
            return None

    def _proc(self, service: str, now: float) -> tuple[float | None, float | None]:
        """(CPU %, RSS MB) of the service's process tree; (0, 0) when it is not running."""
        backend = self.stack.backend
        instance = backend.instance(service) if hasattr(backend, "instance") else None
        if instance is None:
            self._ticks.pop(service, None)
            return 0.0, 0.0
        root = self._root_pid(service, str(instance))
        if root is None:
            return None, None
        ticks, rss = 0, 0.0
        for pid in process_tree(root):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ticks += parse_proc_stat(f.read())
                with open(f"/proc/{pid}/status") as f:
                    rss += parse_rss_mb(f.read()) or 0.0
            except (OSError, ValueError, IndexError):
                if pid == root:
                    return 0.0, 0.0
                continue  # a child that just exited
        before = self._ticks.get(service)
        self._ticks[service] = (str(instance), ticks, now)
        cpu = None
        if before is not None and before[0] == str(instance):
            cpu = cpu_percent(before[1], ticks, now - before[2], self._hz)
        return cpu, rss
