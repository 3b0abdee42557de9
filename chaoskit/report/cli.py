"""``chaoskit report [RUN_DIR]`` and ``chaoskit gate [RUN_DIR] --rto 30s ...``.

Both recompute everything from the run's journal, never from files a previous report
wrote, so a gate cannot be fooled by a stale results.csv.  Cheap to import: pandas and
matplotlib are imported only when ``report`` runs.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from chaoskit.errors import ChaosKitError

DEFAULT_RUN = "reports/latest"
GATE_OK, GATE_BREACHED, GATE_USAGE = 0, 1, 2


def register(subparsers: Any) -> None:
    report = subparsers.add_parser(
        "report",
        help="re-render a run's report (results, report.md, report.html) from its journal",
        description="Recompute a run's results from RUN_DIR/journal.jsonl and write "
        "results.csv, results.json, report.md and report.html there; put the run's rows "
        "into history.csv in the parent directory (replacing older rows of the same run).",
    )
    report.add_argument(
        "run_dir", nargs="?", default=DEFAULT_RUN, metavar="RUN_DIR",
        help=f"run directory, or a report dir with 'latest' (default: {DEFAULT_RUN})",
    )  # fmt: skip
    report.set_defaults(func=run_report)

    gate = subparsers.add_parser(
        "gate",
        help="fail (exit 1) when a run breaches TTD/RTO/RPO budgets, for CI",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check a run against budgets; print one line per breach.\n\n"
        "exit codes: 0 within budget, 1 breached, 2 usage error (bad budget, no journal)\n\n"
        "- TTD/RTO budgets apply to every experiment; a value never measured (never\n"
        "  detected, never recovered, no fault injected) breaches them.\n"
        "- An RPO budget applies to experiments that restored a recovery point or declared\n"
        "  an RPO objective (no restore is then an unbounded RPO).\n"
        "- An experiment whose own verdict is fail breaches the gate with its reasons,\n"
        "  unless --budgets-only.  A run without experiments fails.",
    )
    gate.add_argument("run_dir", nargs="?", default=DEFAULT_RUN, metavar="RUN_DIR",
                      help=f"run directory (default: {DEFAULT_RUN})")  # fmt: skip
    for metric, example in (("ttd", "2s"), ("rto", "30s"), ("rpo", "5m")):
        gate.add_argument(
            f"--{metric}", metavar="DURATION",
            help=f"{metric.upper()} budget, e.g. {example} (ms, s, m, h, d)",
        )  # fmt: skip
    gate.add_argument(
        "--budgets-only", action="store_true",
        help="ignore the experiments' own verdicts; check only the given budgets",
    )  # fmt: skip
    gate.set_defaults(func=run_gate)


def resolve_run_dir(value: str) -> Path:
    """The run directory meant by *value*: symlinks resolved; a report dir means its latest."""
    path = Path(value)
    if not (path / "journal.jsonl").exists() and (path / "latest").exists():
        path = path / "latest"
    return path.resolve()


def _say_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        print(f"chaoskit: warning: {w.message}", file=sys.stderr)


def run_report(args: argparse.Namespace) -> int:
    from chaoskit.report.results import (
        SUMMARY_HEADERS,
        format_table,
        summary_rows,
        write_run_report,
    )

    run_dir = resolve_run_dir(args.run_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            results = write_run_report(run_dir)
        finally:
            _say_warnings(caught)
    if results:
        for line in format_table(SUMMARY_HEADERS, summary_rows(results)):
            print(line)
    else:
        print(f"no experiments in {run_dir / 'journal.jsonl'}")
    print(f"report: {run_dir / 'report.html'}")
    return 0


def run_gate(args: argparse.Namespace) -> int:
    from chaoskit.journal import read_journal
    from chaoskit.report.gate import check, describe, parse_budgets, rpo_not_applicable
    from chaoskit.report.metrics import results_from_events

    budgets, errors = parse_budgets({m: getattr(args, m) for m in ("ttd", "rto", "rpo")})
    if not budgets and args.budgets_only:
        errors.append("--budgets-only needs at least one of --ttd, --rto, --rpo")
    for message in errors:
        print(f"chaoskit: error: {message}", file=sys.stderr)
    if errors:
        return GATE_USAGE
    run_dir = resolve_run_dir(args.run_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            results = results_from_events(read_journal(run_dir / "journal.jsonl"))
        except ChaosKitError as e:
            print(f"chaoskit: error: {e}", file=sys.stderr)
            return GATE_USAGE
        finally:
            _say_warnings(caught)
    if not results:
        print(f"FAIL {run_dir}: the journal holds no experiment, nothing was checked")
        return GATE_BREACHED
    breaches = check(results, budgets, verdicts=not args.budgets_only)
    checked = describe(budgets) or "no budgets"
    if not args.budgets_only:
        checked += ", own verdicts"
    for breach in breaches:
        print(breach.line())
    if breaches:
        print(
            f"chaoskit gate: {len(breaches)} breach(es) in {len(results)} experiment(s) "
            f"({checked}); run {run_dir.name}",
            file=sys.stderr,
        )
        return GATE_BREACHED
    note = ""
    skipped = rpo_not_applicable(results)
    if any(b.metric == "rpo" for b in budgets) and skipped:
        note = f"; RPO not applicable to {skipped} (nothing restored)"
    print(f"ok: {len(results)} experiment(s) within budget ({checked}){note}; run {run_dir.name}")
    return GATE_OK
