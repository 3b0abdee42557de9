"""Learned detectors on seeded synthetic windows: quiet on steady data, fire on shifts."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from chaoskit.dr.learned.monitor import (
    Baseline,
    IsolationForestDetector,
    KMeansDetector,
    LearnedMonitor,
    ServiceDetector,
)
from chaoskit.dr.learned.signals import Row
from chaoskit.errors import ConfigError
from chaoskit.journal import Journal, read_journal


def steady_rows(rng: random.Random, n: int) -> list[Row]:
    """Windows of a healthy replica: ~10 ms answers, 10 probes/s, rare slow window."""
    rows: list[Row] = []
    for _ in range(n):
        p50 = rng.lognormvariate(-4.6, 0.3)
        rows.append({
            "latency_p50": p50, "latency_p99": p50 * rng.uniform(1.5, 4.0),
            "error_rate": 0.1 if rng.random() < 0.02 else 0.0,
            "throughput": rng.gauss(10.0, 0.7), "canary_error": 0.0,
            "version_lag": 1.0 if rng.random() < 0.1 else 0.0,
            "cpu": rng.gammavariate(2.0, 5.0), "rss_mb": rng.gauss(650.0, 5.0),
        })  # fmt: skip
    return rows


DETECTORS = [IsolationForestDetector, KMeansDetector]


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_quiet_on_steady_data_from_the_baseline_distribution(detector: type, seed: int) -> None:
    rng = random.Random(seed)
    d = ServiceDetector.train(steady_rows(rng, 30), detector(seed=seed), consecutive=2)
    alerts = [d.observe(row).alert for row in steady_rows(rng, 600)]  # 10 min of 1 s windows
    assert sum(alerts) == 0


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.name)
@pytest.mark.parametrize("consecutive", [2, 3])
def test_dead_replica_alerts_after_exactly_k_windows(detector: type, consecutive: int) -> None:
    rng = random.Random(7)
    d = ServiceDetector.train(steady_rows(rng, 30), detector(seed=7), consecutive=consecutive)
    down = [dict(r, error_rate=1.0, throughput=3.0, latency_p50=0.3, latency_p99=0.3,
                 cpu=0.0, rss_mb=0.0) for r in steady_rows(rng, consecutive + 3)]  # fmt: skip
    verdicts = [d.observe(row) for row in down]
    assert [v.alert for v in verdicts].index(True) == consecutive - 1
    assert sum(v.alert for v in verdicts) == 1  # once per anomaly, not per window
    names = {item["signal"] for item in verdicts[consecutive - 1].diagnosis}
    assert names & {"error_rate", "latency_p50", "throughput", "rss_mb"}


def test_kmeans_catches_a_latency_shift_and_names_latency() -> None:
    """A link 3x slower than the baseline p99: only latency moves."""
    rng = random.Random(3)
    base = steady_rows(rng, 30)
    p99 = max(float(r["latency_p99"] or 0.0) for r in base)
    d = ServiceDetector.train(base, KMeansDetector(seed=3), consecutive=2)
    shifted = []
    for r in steady_rows(rng, 4):
        p50_99 = float(r["latency_p50"] or 0.0), float(r["latency_p99"] or 0.0)
        shifted.append(dict(r, latency_p50=p50_99[0] + 3 * p99, latency_p99=p50_99[1] + 3 * p99))
    verdicts = [d.observe(row) for row in shifted]
    assert [v.alert for v in verdicts] == [False, True, False, False]
    assert verdicts[1].diagnosis[0]["signal"] in ("latency_p50", "latency_p99")


def test_diagnosis_names_the_signal_that_moved() -> None:
    rng = random.Random(5)
    baseline = Baseline.fit(steady_rows(rng, 40))
    row = dict(steady_rows(rng, 1)[0], canary_error=0.8)
    assert baseline.diagnosis(row)[0]["signal"] == "canary_error"
    row = dict(steady_rows(rng, 1)[0], rss_mb=0.0)
    assert baseline.diagnosis(row)[0]["signal"] == "rss_mb"


def test_baseline_drops_features_never_observed_and_floors_the_scale() -> None:
    rows = [{"latency_p50": 0.01, "error_rate": 0.0, "cpu": None} for _ in range(20)]
    baseline = Baseline.fit(rows)
    assert baseline.features == ["latency_p50", "error_rate"]
    assert min(baseline.scale) > 0  # constant features get the floor, not 0
    assert baseline.z({"latency_p50": 0.01, "error_rate": None}) == [0.0, 0.0]
    with pytest.raises(ConfigError):
        Baseline.fit([{"cpu": None}] * 20)


def test_isolation_forest_scores_like_sklearn_inside_the_baseline_range() -> None:
    import numpy as np
    from sklearn.ensemble import IsolationForest

    from chaoskit.dr.learned.monitor import _augment

    rng = np.random.default_rng(0)
    z_rows = rng.normal(size=(40, 5))
    ours = IsolationForestDetector(seed=1)
    ours.fit(z_rows)
    theirs = IsolationForest(n_estimators=100, random_state=1)
    theirs.fit(_augment(z_rows, 4, 0.3, 1))
    inside = z_rows[:6]  # training points: inside every box, so the walks agree
    want = -theirs.score_samples(inside)
    assert [ours.score(row) for row in inside.tolist()] == pytest.approx(want.tolist(), abs=1e-9)
    far = [0.0, 0.0, 40.0, 0.0, 0.0]  # sklearn saturates here; the box check does not
    assert ours.score(far) > ours.threshold > max(want)
    assert -theirs.score_samples([far])[0] < ours.threshold


class ListSampler:
    """Feeds prepared windows to the monitor (stands in for the SignalSampler)."""

    def __init__(self, windows: list[dict[str, Row]]) -> None:
        self.windows = windows
        self.spans: list[tuple[float, float]] = []
        self.exhausted = threading.Event()

    def sample(self, start: float, end: float) -> dict[str, Row]:
        self.spans.append((start, end))
        if len(self.spans) >= len(self.windows):
            self.exhausted.set()
            return {}
        return self.windows[len(self.spans) - 1]


def test_monitor_thread_trains_on_contiguous_windows(tmp_path: Path) -> None:
    rng = random.Random(13)
    sampler = ListSampler([{"serving": row} for row in steady_rows(rng, 40)])
    journal = Journal(tmp_path / "journal.jsonl")
    monitor = LearnedMonitor(sampler, journal, window=0.005, baseline_windows=20,
                             detectors=["kmeans"], journal_windows=False).start()  # fmt: skip
    try:
        assert monitor.trained.wait(20) and sampler.exhausted.wait(20)
    finally:
        monitor.stop()
    spans = sampler.spans
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    events = read_journal(journal.path)
    assert [e["event"] for e in events] == ["learned.trained"]  # steady: no alert


def test_monitor_trains_then_journals_one_learned_alert(tmp_path: Path) -> None:
    rng = random.Random(11)
    journal = Journal(tmp_path / "journal.jsonl")
    monitor = LearnedMonitor(ListSampler([]), journal, baseline_windows=20, consecutive=2,
                             detectors=["kmeans"], journal_windows=False)  # fmt: skip
    for row in steady_rows(rng, 20):
        monitor.process({"serving": row})
    assert monitor.trained.is_set()
    for row in steady_rows(rng, 30):
        monitor.process({"serving": row})
    for row in steady_rows(rng, 3):
        monitor.process({"serving": dict(row, error_rate=1.0, throughput=2.0)})
    journal.close()
    detected = [e for e in read_journal(journal.path) if e["event"] == "detected"]
    assert len(detected) == 1
    alert = detected[0]
    assert [alert[k] for k in ("service", "signal", "detector")] == ["serving", "learned", "kmeans"]
    assert alert["diagnosis"][0]["signal"] in ("error_rate", "throughput")
    json.dumps(alert)  # the diagnosis is plain JSON


def test_monitor_rejects_bad_configuration(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    with pytest.raises(ConfigError):
        LearnedMonitor(ListSampler([]), journal, detectors=["lof"])
    with pytest.raises(ConfigError):
        LearnedMonitor(ListSampler([]), journal, baseline_windows=3)
    with pytest.raises(ConfigError):
        LearnedMonitor(ListSampler([]), journal, window=0)


def test_monitor_calls_back_on_the_alert_and_once_normal_again(tmp_path: Path) -> None:
    rng = random.Random(5)
    journal = Journal(tmp_path / "journal.jsonl")
    calls: list[tuple[str, str]] = []
    monitor = LearnedMonitor(
        ListSampler([]), journal, baseline_windows=20, consecutive=2, normal_windows=4,
        on_alert=lambda s: calls.append(("alert", s)),
        on_normal=lambda s: calls.append(("normal", s)), journal_windows=False,
    )  # fmt: skip
    for row in steady_rows(rng, 20):
        monitor.process({"serving": row, "serving-b": row})
    slow = [dict(r, latency_p50=0.2, latency_p99=0.3) for r in steady_rows(rng, 4)]
    for row, steady in zip(slow, steady_rows(rng, 4), strict=True):
        monitor.process({"serving": row, "serving-b": steady})
    assert calls == [("alert", "serving")], "one call, although both detectors alerted"
    for i, row in enumerate(steady_rows(rng, 4)):
        monitor.process({"serving": row, "serving-b": row})
        assert (("normal", "serving") in calls) is (i == 3), f"normal after {i + 1} windows"
    journal.close()
    normal = [e for e in read_journal(journal.path) if e["event"] == "learned.normal"]
    assert [e["service"] for e in normal] == ["serving"]
