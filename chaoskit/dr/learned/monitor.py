"""Learned detectors: anomalies against a steady-state baseline, with a diagnosis.

The probe detector knows what "down" looks like; these learn what "normal" looks like
from the first windows of an experiment (the steady state) and flag what is far from
it -- a degraded link, a replica answering slowly, a process behaving oddly.

* :class:`Baseline` scales each feature robustly (median, IQR) with a floor per feature,
  so a signal that barely moves in the baseline (errors 0, lag 0) does not turn jitter
  into huge z-scores.
* :class:`IsolationForestDetector` and :class:`KMeansDetector` score a scaled row; the
  threshold comes from the baseline's own scores with a margin.  Trees cannot split a
  feature that is constant in the baseline, so both train on the baseline plus jittered
  copies of it (seeded).
* :class:`ServiceDetector` raises an alert after K consecutive anomalous windows and
  re-arms after a normal one; the diagnosis names the features with the largest |z|.
* :class:`LearnedMonitor` is the thread: sample, train once the baseline is recorded,
  score, journal ``detected`` {service, signal: "learned", detector, diagnosis}, and
  ``learned.normal`` once an alerted service looked normal again for a few windows.

scikit-learn and numpy are imported inside functions: importing chaoskit stays cheap.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chaoskit.background import BackgroundLoop
from chaoskit.dr.learned.signals import FEATURES, Row
from chaoskit.errors import ConfigError
from chaoskit.journal import Journal

SCALE_FLOORS: dict[str, tuple[float, float]] = {
    # feature: (absolute floor, floor relative to |median|)
    "latency_p50": (0.004, 0.25),
    "latency_p99": (0.008, 0.25),
    "error_rate": (0.05, 0.0),
    "throughput": (1.0, 0.1),
    "canary_error": (1e-3, 0.0),
    "version_lag": (1.0, 0.0),
    "cpu": (10.0, 0.25),
    "rss_mb": (20.0, 0.1),
}
"""Smallest scale per feature: below it, a change is noise on a loaded 2-core machine."""

Z_CLIP = 50.0


@dataclass
class Baseline:
    """Robust location and scale of each feature present in the baseline windows."""

    features: list[str]
    median: list[float]
    scale: list[float]

    @classmethod
    def fit(cls, rows: Sequence[Row], features: Sequence[str] = FEATURES) -> Baseline:
        """Keep the features observed in at least half of *rows*."""
        import numpy as np

        kept, medians, scales = [], [], []
        for name in features:
            values = [r[name] for r in rows if r.get(name) is not None]
            if not rows or len(values) < len(rows) / 2:
                continue
            arr = np.asarray(values, dtype=float)
            med = float(np.median(arr))
            q1, q3 = np.percentile(arr, [25, 75])
            absolute, relative = SCALE_FLOORS.get(name, (1e-6, 0.0))
            scale = max(float(q3 - q1) / 1.349, absolute, relative * abs(med))
            kept.append(name)
            medians.append(med)
            scales.append(scale)
        if not kept:
            raise ConfigError("the baseline has no feature observed in half of its windows")
        return cls(kept, medians, scales)

    def z(self, row: Row) -> list[float]:
        """Signed z-scores of *row* (a missing value counts as the median), clipped."""
        out = []
        for name, med, scale in zip(self.features, self.median, self.scale, strict=True):
            value = row.get(name)
            zv = 0.0 if value is None or not math.isfinite(value) else (value - med) / scale
            out.append(max(-Z_CLIP, min(Z_CLIP, zv)))
        return out

    def diagnosis(self, row: Row, *, top: int = 3, min_z: float = 3.0) -> list[dict[str, Any]]:
        """The features that deviate most, largest |z| first (at least the largest one)."""
        zs = sorted(zip(self.features, self.z(row), strict=True), key=lambda p: -abs(p[1]))
        picked = [p for p in zs[:top] if abs(p[1]) >= min_z] or zs[:1]
        index = {n: i for i, n in enumerate(self.features)}
        return [
            {"signal": name, "z": round(zv, 2), "value": row.get(name),
             "baseline": round(self.median[index[name]], 6)}
            for name, zv in picked
        ]  # fmt: skip


def _augment(z_rows: Any, copies: int, jitter: float, seed: int) -> Any:
    """Baseline plus jittered copies (z units): every feature gets some spread."""
    import numpy as np

    rng = np.random.default_rng(seed)
    noisy = [z_rows + rng.normal(0.0, jitter, z_rows.shape) for _ in range(copies)]
    return np.vstack([z_rows, *noisy])


class Detector(Protocol):
    name: str
    threshold: float

    def fit(self, z_rows: Any) -> None: ...

    def score(self, z: Sequence[float]) -> float: ...


def _path_length_c(n: float) -> float:
    """Average path length of an unsuccessful search in a BST of n points (Liu et al.)."""
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + 0.5772156649) - 2.0 * (n - 1.0) / n


class IsolationForestDetector:
    """scikit-learn IsolationForest on scaled rows; score = 2^(-mean path / c(n)), higher = odder.

    Isolation trees saturate beyond their training range: a point far outside lands in
    the leaf of the most extreme baseline point and scores like it.  So the walk (in
    plain Python, also because sklearn's per-call overhead is tens of ms) stops at the
    first of the top ``box_depth`` nodes whose training box the point leaves by
    more than ``slack`` z: a real
    isolation tree would cut it off there.  Inside every box the score is sklearn's.
    The threshold is calibrated on jittered copies of the baseline it was not fitted on.
    """

    name = "isolation_forest"

    def __init__(self, *, seed: int = 0, margin: float = 0.02, slack: float = 4.0,
                 box_depth: int = 3, n_estimators: int = 100) -> None:  # fmt: skip
        self.seed, self.margin, self.slack, self.n_estimators = seed, margin, slack, n_estimators
        self.box_depth = box_depth
        self.threshold = math.inf
        self._trees: list[tuple[Any, ...]] = []
        self._norm = 1.0

    def fit(self, z_rows: Any) -> None:
        import numpy as np
        from sklearn.ensemble import IsolationForest

        data = _augment(z_rows, 4, 0.3, self.seed)
        model = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        model.fit(data)
        self._trees = []
        for est, feats in zip(model.estimators_, model.estimators_features_, strict=True):
            t, cols = est.tree_, np.asarray(feats, dtype=int)
            x = data[:, cols]
            paths = est.decision_path(x).tocsc()
            lo: dict[int, list[float]] = {}
            hi: dict[int, list[float]] = {}
            shallow = [(0, 0)]
            while shallow:  # boxes of the nodes the walk checks (depth <= box_depth)
                node, depth = shallow.pop()
                rows = x[paths[:, node].nonzero()[0]]
                lo[node] = (rows.min(axis=0) - self.slack).tolist()
                hi[node] = (rows.max(axis=0) + self.slack).tolist()
                if depth < self.box_depth and t.children_left[node] != -1:
                    shallow += [(t.children_left[node], depth + 1),
                                (t.children_right[node], depth + 1)]  # fmt: skip
            left, right = t.children_left, t.children_right
            cs = [_path_length_c(n) for n in t.n_node_samples]
            self._trees.append((left.tolist(), right.tolist(), t.feature.tolist(),
                                t.threshold.tolist(), cs, cols.tolist(), lo, hi))  # fmt: skip
        self._norm = len(self._trees) * _path_length_c(model.max_samples_)
        held_out = _augment(z_rows, 4, 0.3, self.seed + 1)[len(z_rows) :]
        self.threshold = max(self.score(row) for row in held_out.tolist()) + self.margin

    def score(self, z: Sequence[float]) -> float:
        total = 0.0
        for left, right, feature, threshold, cs, cols, lo, hi in self._trees:
            x = [z[c] for c in cols]
            node, depth = 0, 0
            while True:
                if depth <= self.box_depth and any(
                    v < a or v > b for v, a, b in zip(x, lo[node], hi[node], strict=True)
                ):
                    total += depth + 1  # outside this node's data: isolated by its next cut
                    break
                if left[node] == -1:
                    total += depth + cs[node]
                    break
                node = left[node] if x[feature[node]] <= threshold[node] else right[node]
                depth += 1
        return float(2.0 ** (-total / self._norm)) if self._norm > 0 else 1.0


class KMeansDetector:
    """Distance (z units) to the nearest of k KMeans centres of the baseline."""

    name = "kmeans"

    def __init__(self, *, seed: int = 0, clusters: int = 3, factor: float = 1.5,
                 slack: float = 2.0) -> None:  # fmt: skip
        self.seed, self.clusters, self.factor, self.slack = seed, clusters, factor, slack
        self.threshold = math.inf
        self._centres: Any = None

    def fit(self, z_rows: Any) -> None:
        import numpy as np
        from sklearn.cluster import KMeans

        data = _augment(z_rows, 4, 0.3, self.seed)
        k = max(1, min(self.clusters, len(z_rows) // 5))
        model = KMeans(n_clusters=k, n_init=4, random_state=self.seed).fit(data)
        self._centres = model.cluster_centers_
        dists = np.min(np.linalg.norm(data[:, None, :] - self._centres[None], axis=2), axis=1)
        self.threshold = float(dists.max()) * self.factor + self.slack

    def score(self, z: Sequence[float]) -> float:
        import numpy as np

        return float(np.min(np.linalg.norm(self._centres - np.asarray(z), axis=1)))


DETECTORS: dict[str, type[IsolationForestDetector] | type[KMeansDetector]] = {
    IsolationForestDetector.name: IsolationForestDetector,
    KMeansDetector.name: KMeansDetector,
}


@dataclass
class Verdict:
    """One window scored by one detector; ``alert`` is True once per anomaly."""

    anomalous: bool
    alert: bool
    score: float
    streak: int
    diagnosis: list[dict[str, Any]] = field(default_factory=list)


class ServiceDetector:
    """One detector for one service: baseline, K-consecutive rule, diagnosis."""

    def __init__(self, baseline: Baseline, detector: Detector, *, consecutive: int = 2) -> None:
        if consecutive < 1:
            raise ConfigError(f"consecutive must be >= 1, got {consecutive!r}")
        self.baseline, self.detector, self.consecutive = baseline, detector, consecutive
        self.streak = 0
        self._fired = False

    @classmethod
    def train(cls, rows: Sequence[Row], detector: Detector, *, consecutive: int = 2
              ) -> ServiceDetector:  # fmt: skip
        import numpy as np

        baseline = Baseline.fit(rows)
        detector.fit(np.asarray([baseline.z(r) for r in rows], dtype=float))
        return cls(baseline, detector, consecutive=consecutive)

    def observe(self, row: Row) -> Verdict:
        score = self.detector.score(self.baseline.z(row))
        if score <= self.detector.threshold:
            self.streak, self._fired = 0, False
            return Verdict(False, False, score, 0)
        self.streak += 1
        alert = self.streak >= self.consecutive and not self._fired
        self._fired |= alert
        diagnosis = self.baseline.diagnosis(row) if alert else []
        return Verdict(True, alert, score, self.streak, diagnosis)


class LearnedMonitor(BackgroundLoop):
    """Thread: sample every *window* s, learn from the first *baseline_windows*, then alert.

    *sampler* has ``sample(start, end) -> {service: row}`` (a SignalSampler).  Journals
    ``learned.trained`` once, ``signals.window`` per service and window when
    *journal_windows*, and ``detected`` {service, signal: "learned", detector, diagnosis}.
    Default K = 3 windows: on a loaded 2-core machine about 1-2 % of 1 s windows carry one
    stray slow probe (p99 of ~10 samples is their maximum), and two in a row happen
    within minutes; three in a row did not in the bench's steady state.
    The *settle_windows* windows after training are not scored (training stalls this
    process).  It does not recover anything itself: *on_alert(service)* is called on a
    service's first alert, *on_normal(service)* once every detector saw it normal for
    *normal_windows* windows in a row (so a failover it caused can be undone).
    """

    thread_name = "chaoskit-learned"
    stop_timeout = 10.0

    def __init__(
        self,
        sampler: Any,
        journal: Journal,
        *,
        window: float = 1.0,
        baseline_windows: int = 30,
        consecutive: int = 3,
        detectors: Sequence[str] = ("isolation_forest", "kmeans"),
        seed: int = 0,
        journal_windows: bool = True,
        settle_windows: int = 2,
        normal_windows: int = 5,
        on_alert: Callable[[str], None] | None = None,
        on_normal: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        if not window > 0:
            raise ConfigError(f"window must be > 0 seconds, got {window!r}")
        if baseline_windows < 10:
            raise ConfigError(f"baseline_windows must be >= 10, got {baseline_windows!r}")
        unknown = [d for d in detectors if d not in DETECTORS]
        if unknown or not detectors:
            raise ConfigError(f"unknown detectors {unknown!r} (choose from {sorted(DETECTORS)})")
        self.sampler, self.journal, self.window = sampler, journal, window
        self.baseline_windows, self.consecutive = baseline_windows, consecutive
        self.detector_names, self.seed = list(detectors), seed
        self.journal_windows, self.settle_windows = journal_windows, settle_windows
        self.normal_windows, self.on_alert, self.on_normal = normal_windows, on_alert, on_normal
        self._alerted: dict[str, int] = {}
        """Services alerted and not yet normal again -> normal windows seen in a row."""
        self.baseline_rows: dict[str, list[Row]] = {}
        self.detectors: dict[tuple[str, str], ServiceDetector] = {}
        self.trained = threading.Event()

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        close = getattr(self.sampler, "close", None)
        if close is not None:
            close()

    def _loop(self) -> None:
        # Importing scikit-learn and training hold the GIL for seconds on a loaded
        # machine, which stalls the load generator and the probes in this process: the
        # import happens before the baseline, and the windows around training are dropped.
        import sklearn.cluster  # noqa: F401
        import sklearn.ensemble  # noqa: F401

        start, skip = time.monotonic(), 0
        while not self._stop.wait(max(0.0, start + self.window - time.monotonic())):
            end = time.monotonic()
            try:
                rows = self.sampler.sample(start, end)
            except Exception as e:  # noqa: BLE001 - a monitor must outlive a bad window
                self.journal.record("learned.sample_failed", error=f"{type(e).__name__}: {e}")
                rows = {}
            start = end
            if skip:
                skip -= 1
                continue
            trained = self.trained.is_set()
            self.process(rows, end)
            if not trained and self.trained.is_set():
                start, skip = time.monotonic(), self.settle_windows

    def process(self, rows: Mapping[str, Row], now: float | None = None) -> None:
        """Feed one window of rows (public so a test can drive it without threads)."""
        if self.journal_windows:
            for service, row in rows.items():
                self.journal.record("signals.window", service=service, features=row)
        if not self.trained.is_set():
            for service, row in rows.items():
                self.baseline_rows.setdefault(service, []).append(dict(row))
            if (
                min((len(v) for v in self.baseline_rows.values()), default=0)
                >= self.baseline_windows
            ):
                self._train()
            return
        anomalous: set[str] = set()
        for (service, name), detector in self.detectors.items():
            if service not in rows:
                continue
            verdict = detector.observe(rows[service])
            if verdict.anomalous:
                anomalous.add(service)
            if verdict.alert:
                self.journal.record(
                    "detected", service=service, signal="learned", detector=name,
                    diagnosis=verdict.diagnosis, score=round(verdict.score, 4),
                    threshold=round(detector.detector.threshold, 4), windows=verdict.streak,
                )  # fmt: skip
                if service not in self._alerted:
                    self._alerted[service] = 0
                    if self.on_alert is not None:
                        self.on_alert(service)
        self._track_normal(rows, anomalous)

    def _track_normal(self, rows: Mapping[str, Row], anomalous: set[str]) -> None:
        for service in [s for s in self._alerted if s in rows]:
            self._alerted[service] = 0 if service in anomalous else self._alerted[service] + 1
            if self._alerted[service] >= self.normal_windows:
                del self._alerted[service]
                self.journal.record("learned.normal", service=service,
                                    windows=self.normal_windows)  # fmt: skip
                if self.on_normal is not None:
                    self.on_normal(service)

    def _train(self) -> None:
        summary = {}
        for service, rows in self.baseline_rows.items():
            for name in self.detector_names:
                try:
                    self.detectors[(service, name)] = ServiceDetector.train(
                        rows, DETECTORS[name](seed=self.seed), consecutive=self.consecutive
                    )
                except ConfigError as e:
                    self.journal.record("learned.untrained", service=service, error=str(e))
                    break
            trained = self.detectors.get((service, self.detector_names[0]))
            if trained is not None:
                summary[service] = trained.baseline.features
        self.journal.record(
            "learned.trained", windows=self.baseline_windows, features=summary,
            thresholds={f"{s}/{n}": round(d.detector.threshold, 4)
                        for (s, n), d in self.detectors.items()},
        )  # fmt: skip
        self.trained.set()
