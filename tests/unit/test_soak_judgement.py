"""bench/soak.py's judgement: growth bounds, the fault table, the usage errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaoskit.report.metrics import ExperimentResult

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
spec = importlib.util.spec_from_file_location("soak", SOAK)
assert spec is not None and spec.loader is not None
soak = importlib.util.module_from_spec(spec)
sys.modules.setdefault("soak", soak)  # dataclasses look their module up there
spec.loader.exec_module(soak)


def samples(values: list[float], key: str, every: float = 5.0) -> list[tuple[float, dict]]:
    return [(i * every, {key: v}) for i, v in enumerate(values)]


def test_a_flat_series_with_noise_holds_and_a_steady_leak_does_not() -> None:
    noisy = [20, 21, 35, 20, 21, 20, 36, 21, 20, 22, 21, 20]  # spikes, no growth
    leak = [20 + 3 * i for i in range(12)]  # 3 fds per sample
    [flat] = soak.trend(samples(noisy, "pytest fds"))
    [grew] = soak.trend(samples(leak, "pytest fds"))
    assert flat[-1] == "ok" and flat[1:3] == ("21", "21")
    assert grew[-1] == "GREW" and float(grew[2]) > float(grew[4])


def test_rss_may_grow_by_its_ratio_and_slack_only() -> None:
    bound = soak.BOUNDS["rss_mb"]
    assert bound.limit(100.0, 1.0) == pytest.approx(100 * (1 + bound.ratio) + bound.slack)
    start = [500.0] * 6
    [ok] = soak.trend(samples(start + [560.0] * 6, "serving rss_mb"))
    [bad] = soak.trend(samples(start + [800.0] * 6, "serving rss_mb"))
    assert (ok[-1], bad[-1]) == ("ok", "GREW")


def test_disk_growth_is_judged_per_hour_of_run_from_first_to_last_sample() -> None:
    slack = soak.BOUNDS["disk_mb"].slack
    hour = [(0.0, {"run disk_mb": 10.0}), (1200.0, {"run disk_mb": 20.0}),
            (2400.0, {"run disk_mb": 30.0}), (3600.0, {"run disk_mb": 10 + slack - 1})]  # fmt: skip
    [row] = soak.trend(hour)
    assert row[-1] == "ok" and row[2] == f"{10 + slack - 1:.4g}"
    hour[-1] = (3600.0, {"run disk_mb": 10 + slack + 1})
    assert soak.trend(hour)[0][-1] == "GREW"


def test_too_few_samples_give_no_trend() -> None:
    assert soak.trend(samples([1, 2, 3], "pytest threads")) == []


def result(kind: str, n: int, ttd: float | None, rto: float | None, verdict: str = "pass"):
    return ExperimentResult(name=f"bench/soak_experiment.py::test_soak[{n:03d} {kind} seed=7]",
                            ttd_s=ttd, rto_s=rto, verdict=verdict,
                            ttd_budget_s=2.0, rto_budget_s=3.0)  # fmt: skip


def test_the_fault_table_gives_percentiles_per_kind_and_for_all() -> None:
    results = [result("kill serving", i, 0.1 * (i + 1), 1.0 + i) for i in range(5)]
    results.append(result("latency", 5, None, None, verdict="fail"))
    rows = {row[0]: row for row in soak.fault_rows(results)}
    assert rows["kill serving"] == ("kill serving", "5", "5", "300ms", "480ms", "500ms",
                                    "3.00s", "4.80s", "5.00s")  # fmt: skip
    assert rows["latency"][1:4] == ("1", "0", "-")
    assert rows["all"][1:3] == ("6", "5")


def test_a_row_breaks_an_invariant_when_it_failed_served_wrong_answers_or_had_no_budget():
    good = result("kill serving", 0, 0.1, 1.0)
    assert soak.row_problems(good) == []
    wrong = result("kill serving", 1, 0.1, 1.0)
    wrong.wrong_predictions = 2
    unbudgeted = result("latency", 2, 0.1, 1.0)
    unbudgeted.rto_budget_s = None
    assert "2 wrong predictions" in soak.row_problems(wrong)[0]
    assert "no TTD/RTO budget" in soak.row_problems(unbudgeted)[0]


@pytest.mark.parametrize(
    "argv, message",
    [(["--duration", "5x"], "--duration: '5x' is not a duration"),
     (["--interval", "0"], "--interval 0.0 must be positive")],
)  # fmt: skip
def test_bad_options_are_one_line_and_exit_2(argv: list[str], message: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(SOAK.parents[1])}
    done = subprocess.run([sys.executable, str(SOAK), *argv], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
