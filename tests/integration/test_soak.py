"""The soak's CI version: ``bench/soak.py --duration 5m`` on the reference stack passes
(every invariant held), prints its tables, and held each fault to its experiment's
budgets.  Adds ~6 minutes to CI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KINDS = [  # (what the kind contains, its family, (ttd, rto) of the experiment it runs)
    ("kill", "serving", (1.0, 20.0)), ("hang serving", "serving", (2.0, 20.0)),
    ("dr-site-", "dr-site", (5.0, 30.0)), ("partition-", "link", (2.0, 3.0)),
    ("latency", "link", (2.0, 3.0)), ("bandwidth-", "link", (2.0, 3.0)),
    ("reset-peer", "link", (2.0, 3.0)), ("checkpoint", "checkpoint", (2.0, 30.0)),
    ("", "model-store", (2.0, 15.0)),  # the rest: bit-flip-variables, stale-model, ...
]  # fmt: skip


def test_a_five_minute_soak_holds_every_invariant(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", "5m", "--seed", "12",
         "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=1800, cwd=ROOT,
    )  # fmt: skip
    out = done.stdout
    print(out)  # the tables, for the CI log (pytest -rP)
    assert done.returncode == 0, out[-6000:] + done.stderr[-3000:]
    assert "soak: every invariant held" in out and "broken:" not in out
    for table in ("=== faults by kind ===", "=== resource trend", "TTD p95", "RTO max",
                  "pytest threads", "serving rss_mb", "journal journal_write_ms",
                  "run disk_mb"):  # fmt: skip
        assert table in out, f"{table!r} missing from the output:\n{out[-4000:]}"
    assert out.count("chaoskit backup check --read-data") == 2
    with open(tmp_path / "reports" / "latest" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    families = set()
    for row in rows:
        kind = row["name"].rsplit("[", 1)[1].split(" ", 1)[1].rsplit(" seed=", 1)[0]
        family, budgets = next((f, b) for part, f, b in KINDS if part in kind)
        families.add(family)
        assert (float(row["ttd_budget_s"]), float(row["rto_budget_s"])) == budgets, row["name"]
        assert row["verdict"] == "pass" and row["wrong_predictions"] == "0", row["name"]
    assert families == {"serving", "link", "model-store", "checkpoint", "dr-site"}, families
