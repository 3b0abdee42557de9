"""Write a run's report from its journal: results.csv/.json, report.md, report.html, history.

Everything is recomputed from the run's ``journal.jsonl``, so a report can always be
re-rendered from the journal alone (``chaoskit report RUN_DIR``).  Files are written
atomically; ``reports/latest`` is a symlink swapped atomically to the newest run, and
``reports/history.csv`` collects every run's rows for the trends in report.html.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoskit.atomic import atomic_write_text
from chaoskit.durations import format_duration
from chaoskit.errors import ChaosKitError
from chaoskit.journal import Event, read_journal
from chaoskit.report.metrics import (
    COLUMN_DTYPES,
    COLUMNS,
    ExperimentResult,
    results_from_events,
    split_experiments,
)

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_HEADERS = (
    "experiment", "fault", "TTD", "RTO", "RPO", "failed req", "retried", "verdict",
)  # fmt: skip


def results_frame(results: list[ExperimentResult]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame([r.row() for r in results], columns=list(COLUMNS))
    return frame.astype(COLUMN_DTYPES)


def summary_rows(results: list[ExperimentResult]) -> list[tuple[str, ...]]:
    """One human row per experiment, as printed in the terminal and in report.md."""
    return [
        (
            r.name,
            r.faults or r.fault or "-",
            format_duration(r.ttd_s),
            format_duration(r.rto_s),
            format_duration(r.rpo_s),
            "-" if r.failed_requests is None else str(r.failed_requests),
            "-" if r.retried_requests is None else str(r.retried_requests),
            r.verdict.upper(),
        )
        for r in results
    ]


def format_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return [line, "  ".join("-" * w for w in widths), *body]


def load_journal(run_dir: Path) -> tuple[list[Event], list[str]]:
    """The run's events and the warnings met reading them (e.g. a cut-off last line).

    The warnings are re-issued so pytest and the CLI still show them, and also returned
    so the report can say what it skipped.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = read_journal(run_dir / "journal.jsonl")
    notes = [str(w.message) for w in caught]
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    return events, notes


def write_run_report(run_dir: Path) -> list[ExperimentResult]:
    """(Re)compute results from ``run_dir/journal.jsonl`` and write the report files.

    Writes results.csv, results.json, report.md and report.html into *run_dir* and puts
    the run's rows into ``history.csv`` in its parent (the report dir).  A history that
    cannot be read is reported as a warning, not allowed to block this run's report.
    """
    run_dir = Path(run_dir).resolve()  # "reports/latest" names the run it points at
    events, notes = load_journal(run_dir)
    results = results_from_events(events)
    frame = results_frame(results)
    atomic_write_text(run_dir / "results.csv", frame.to_csv(index=False))
    records = json.loads(frame.to_json(orient="records"))
    for record, result in zip(records, results, strict=True):
        for column in ("ttd_s", "rto_s", "rpo_s"):  # JSON has no infinity; null = not measured
            value = getattr(result, column)
            if value is not None and math.isinf(value):
                record[column] = "inf"
        record["faults"] = result.faults  # the CSV's text forms, as lists here
        record["detections"] = result.detections
        record["per_fault"] = result.per_fault
    atomic_write_text(run_dir / "results.json", json.dumps(records, indent=2) + "\n")
    atomic_write_text(run_dir / "report.md", _markdown(run_dir.name, results))
    history = None
    try:
        from chaoskit.report.history import update_history

        history = update_history(run_dir.parent, run_dir.name, frame)
    except (ChaosKitError, OSError) as e:
        message = f"history not updated: {e}"
        notes.append(message)
        warnings.warn(message, stacklevel=2)
    atomic_write_text(run_dir / "report.html", _html(run_dir, events, results, history, notes))
    return results


def _html(
    run_dir: Path,
    events: list[Event],
    results: list[ExperimentResult],
    history: pd.DataFrame | None,
    notes: list[str],
) -> str:
    from chaoskit.report.figures import timeline_png, trend_png
    from chaoskit.report.page import ExperimentView, render_html

    def drawn(what: str, draw: Callable[..., bytes | None], *args: Any) -> bytes | None:
        try:
            return draw(*args)
        except Exception as e:  # one odd journal must not cost the whole run its report
            message = f"{what} could not be drawn: {type(e).__name__}: {e}"
            notes.append(message)
            warnings.warn(message, stacklevel=3)
            return None

    views = []
    windows = split_experiments(events)
    for number, ((start, window), result) in enumerate(zip(windows, results, strict=True), 1):
        timeline = drawn(f"timeline of {result.name}", timeline_png, start, window, result)
        trend = None
        if history is not None:
            trend = drawn(f"trend of {result.name}", trend_png, history, result.name, run_dir.name)
        views.append(
            ExperimentView(
                result=result,
                start=start,
                events=window,
                timeline_png=timeline,
                trend_png=trend,
                anchor=f"experiment-{number}",
            )
        )
    return render_html(run_dir.name, views, notes=notes, journal=str(run_dir / "journal.jsonl"))


def _markdown(run_id: str, results: list[ExperimentResult]) -> str:
    passed = sum(r.verdict == "pass" for r in results)
    lines = [
        f"# chaoskit run {run_id}", "",
        f"{passed} of {len(results)} experiments passed. Timelines and trends: report.html", "",
    ]  # fmt: skip
    if results:
        lines.append("| " + " | ".join(SUMMARY_HEADERS) + " |")
        lines.append("|" + "---|" * len(SUMMARY_HEADERS))
        lines.extend("| " + " | ".join(row) + " |" for row in summary_rows(results))
    for r in results:
        if r.reasons:
            lines += ["", f"## {r.name}", "", *(f"- {reason}" for reason in r.reasons)]
    return "\n".join(lines) + "\n"


def point_latest(report_dir: Path, run_dir: Path) -> None:
    """Make ``report_dir/latest`` point at *run_dir*, replacing the old link atomically."""
    link = report_dir / "latest"
    tmp = report_dir / f".latest-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)
