"""Quality scoring benchmark: what judging one version on a 1,000-example labelled set costs.

A running ``python -m chaoskit.serving`` with one reference version; each run asks it
for the whole held-out set over REST (:func:`chaoskit.dr.online.quality.answers`) in
batches of 1,000, 250 and 100 rows, then judges the outputs (:class:`QualityGate`,
scoring and drift against the previous run's outputs).  Prints the medians of ``--runs``
for the answers, the verdict and both, side by side per batch size, and each total's
ratio to the budget (issue 15: <= 1 s here).

    .venv/bin/python bench/quality_scoring.py [--runs 9] [--examples 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rollback import Bench  # bench/: the model server under a config file

from chaoskit.dr.online.quality import REGRESSION, QualityGate, answers, reference_labelled_set
from chaoskit.waiting import wait_until

BUDGET = 1.0
BATCHES = (1000, 250, 100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--examples", type=int, default=1000)
    args = p.parse_args()
    labelled = reference_labelled_set(args.examples)
    with tempfile.TemporaryDirectory(prefix="chaoskit-quality-") as tmp:
        bench = Bench(Path(tmp), [1], poll=0.05)
        try:
            wait_until(lambda: bench.client.available_version() == 1, 60, what="version 1")
            rows = []
            for batch in BATCHES:
                gate = QualityGate(REGRESSION, margin=0.1, min_samples=args.examples)
                previous = answers(bench.client, labelled, batch=batch).outputs  # warm-up
                asked, judged = [], []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    got = answers(bench.client, labelled, batch=batch)
                    t1 = time.perf_counter()
                    verdict = gate.judge(1, got.outputs, labelled, previous)
                    t2 = time.perf_counter()
                    if got.error is not None or verdict.samples != args.examples:
                        print(f"run failed: {got.error or verdict.reason}", file=sys.stderr)
                        return 1
                    asked.append(t1 - t0)
                    judged.append(t2 - t1)
                    previous = got.outputs
                rows.append((batch, statistics.median(asked), statistics.median(judged),
                             statistics.median(a + j for a, j in zip(asked, judged, strict=True))))
        finally:
            bench.close()
    print(f"scoring one version on {args.examples} labelled examples, medians of {args.runs}")
    print(f"{'batch':>6} {'answers':>9} {'verdict':>9} {'total':>9} {'total/budget':>13}")
    for batch, asked_s, judged_s, total in rows:
        print(f"{batch:>6} {asked_s * 1e3:>7.1f}ms {judged_s * 1e3:>7.1f}ms "
              f"{total * 1e3:>7.1f}ms {total / BUDGET:>12.3f}x")  # fmt: skip
    worst = max(total for *_, total in rows)
    print(f"worst total / {BUDGET:.0f} s budget: {worst / BUDGET:.3f}")
    return 0 if worst <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
