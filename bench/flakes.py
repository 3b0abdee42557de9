"""Flake hunt: run ``make experiments`` N times in a row and count, per experiment, how
often it passed (issue "A gate people can trust": 10/10 on processes, 5/5 on Docker).

Each run is the real ``make experiments`` (with ``--junitxml`` added), so what is
counted is exactly what a user's gate sees: the pytest outcome of every experiment.
A failed experiment is listed with its run's report directory and the first line of its
failure, so its journal can be read for the cause.  Exit status 1 if any run failed.

    .venv/bin/python bench/flakes.py [--runs 10] [--backend process|docker]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """Experiment id -> (outcome, first line of the failure) from a JUnit XML file."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = (element.get("message") or element.text or "").strip()
                message = message.splitlines()[0][:160] if message else ""
                break
        found[name] = (outcome, message)
    return found


def report_dir(output: str) -> str:
    match = re.search(r"report: (\S+)/report\.html", output)
    return match.group(1) if match else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backend", choices=("process", "docker"), default="process")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")

    passes: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    failures: list[tuple[int, str, str, str]] = []
    durations: list[float] = []
    with tempfile.TemporaryDirectory(prefix="chaoskit-flakes-") as tmp:
        for run in range(1, args.runs + 1):
            junit = Path(tmp) / f"run-{run}.xml"
            pytest_args = f"--junitxml={junit} -q --chaos-backend={args.backend}"
            started = time.monotonic()
            done = subprocess.run(
                ["make", "-s", "experiments", f"PYTEST_ARGS={pytest_args}"],
                cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(),
            )  # fmt: skip
            durations.append(time.monotonic() - started)
            where = report_dir(done.stdout)
            if not junit.exists():
                print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
                failures.append((run, "(the whole run)", f"exit {done.returncode}", where))
                continue
            results = outcomes(junit)
            for name, (outcome, message) in results.items():
                seen[name] += 1
                if outcome == "passed":
                    passes[name] += 1
                elif outcome != "skipped":
                    failures.append((run, name, message, where))
            failed = sum(1 for o, _ in results.values() if o in ("failed", "error"))
            print(f"run {run}/{args.runs}: {len(results) - failed} of {len(results)} passed "
                  f"in {durations[-1]:.0f} s, exit {done.returncode}, {where}",
                  flush=True)  # fmt: skip

    width = max(len(n) for n in seen) if seen else 10
    print(f"\nbackend {args.backend}, {args.runs} runs, median run "
          f"{sorted(durations)[len(durations) // 2]:.0f} s\n")  # fmt: skip
    print(f"{'experiment'.ljust(width)}  passed")
    print(f"{'-' * width}  ------")
    for name in sorted(seen):
        print(f"{name.ljust(width)}  {passes[name]}/{seen[name]}")
    if failures:
        print("\nfailures:")
        for run, name, message, where in failures:
            print(f"  run {run}: {name}: {message}  ({where})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
