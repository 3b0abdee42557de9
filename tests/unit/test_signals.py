"""Feature extraction from hand-written windows (no processes, no network)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from chaoskit.dr.learned.signals import (
    GATEWAY_ROW,
    Window,
    canary_error,
    cpu_percent,
    parse_proc_stat,
    parse_rss_mb,
    percentile,
    split_events,
    window_features,
)


def test_percentile_interpolates_and_is_none_when_empty() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([float(i) for i in range(101)], 99) == pytest.approx(99.0)


def test_window_features_from_probes() -> None:
    w = Window(
        "serving",
        2.0,
        latencies=[0.01, 0.02, 0.03, 0.30],
        oks=[True, True, True, False],
        canary_error=0.0,
        served_version=400,
        exported_versions=(200, 400, 600, 800),
        cpu=12.5,
        rss_mb=640.0,
    )
    row = window_features(w)
    assert row["latency_p50"] == pytest.approx(0.025)
    assert row["latency_p99"] == pytest.approx(0.03 + 0.97 * 0.27)  # rank 2.97
    assert row["error_rate"] == pytest.approx(0.25)
    assert row["throughput"] == pytest.approx(2.0)  # 4 probes in 2 s
    assert row["version_lag"] == 2.0  # two versions behind, not 400 steps
    assert (row["cpu"], row["rss_mb"], row["canary_error"]) == (12.5, 640.0, 0.0)


def test_empty_window_has_no_evidence_but_zero_throughput() -> None:
    row = window_features(Window("serving", 1.0))
    assert row["throughput"] == 0.0
    assert row["latency_p50"] is None and row["error_rate"] is None
    assert row["version_lag"] is None


def test_split_events_routes_probes_per_replica_and_requests_to_gateway() -> None:
    events = [
        {"event": "probe", "t": 1.0, "service": "serving", "ok": True, "latency_s": 0.01},
        {"event": "probe", "t": 1.1, "service": "serving-b", "ok": False, "latency_s": 0.3},
        {"event": "probe", "t": 1.2, "service": "elsewhere", "ok": True, "latency_s": 0.5},
        {"event": "request", "t": 1.3, "ok": True, "correct": False, "latency_s": 0.02},
        {"event": "request", "t": 1.4, "ok": True, "correct": True, "latency_s": 0.04},
        {"event": "detected", "t": 1.5, "service": "serving"},
    ]
    windows = split_events(events, ["serving", "serving-b"], 1.0)
    assert windows["serving"].latencies == [0.01] and windows["serving"].oks == [True]
    assert windows["serving-b"].oks == [False]
    assert windows[GATEWAY_ROW].canary_error == pytest.approx(0.5)
    assert window_features(windows[GATEWAY_ROW])["latency_p50"] == pytest.approx(0.03)


def test_canary_error_is_distance_to_nearest_golden() -> None:
    goldens: list[dict[str, Any]] = [
        {"outputs": [[1.0, 2.0]], "tolerance": 1e-4},
        {"outputs": [[1.5, 2.0]]},
    ]
    assert canary_error([[1.5, 2.0]], goldens) == 0.0
    assert canary_error([[1.0, 2.25]], goldens) == pytest.approx(0.25)
    assert canary_error([[1.0]], goldens) == 1e6  # wrong shape: capped, still numeric
    assert canary_error([[1.0, 2.0]], []) is None


def test_proc_parsing_and_cpu_percent() -> None:
    stat = "4242 (python -m x) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0 100 200 300"
    assert parse_proc_stat(stat) == 200
    assert parse_rss_mb("Name:\tpython\nVmRSS:\t  655360 kB\n") == pytest.approx(640.0)
    assert parse_rss_mb("Name:\tzombie\n") is None
    assert cpu_percent(100, 150, 1.0, 100) == pytest.approx(50.0)
    assert cpu_percent(100, 150, 0.0, 100) == 0.0
    assert not math.isnan(cpu_percent(150, 100, 1.0, 100))


def test_process_tree_holds_the_root_and_all_descendants() -> None:
    import subprocess
    import time

    from chaoskit.dr.learned.signals import process_tree

    root = subprocess.Popen(["sh", "-c", "sleep 30 & (sleep 30 & wait) & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(root.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)  # the shells are still forking
        tree = process_tree(root.pid)
        assert tree[0] == root.pid and len(tree) == 4  # sh, sleep, sub-shell, its sleep
        assert sorted(tree) == sorted(set(tree))
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(root.pid)], check=False)
        root.kill()
        root.wait()
    assert process_tree(2**22 + 11) == [2**22 + 11]  # no such process: just the root
