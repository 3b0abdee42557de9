"""Write a run's results (pandas): results.csv, results.json and report.md in the run dir.

Everything is recomputed from the run's journal, so a report can always be re-rendered
from ``journal.jsonl`` alone.  Files are written atomically; ``reports/latest`` is a
symlink swapped atomically to the newest run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from chaoskit.atomic import atomic_write_text
from chaoskit.durations import format_duration
from chaoskit.journal import read_journal
from chaoskit.report.metrics import COLUMNS, ExperimentResult, results_from_events

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_HEADERS = ("experiment", "fault", "TTD", "RTO", "RPO", "failed req", "verdict")


def results_frame(results: list[ExperimentResult]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame([r.row() for r in results], columns=list(COLUMNS))
    for column in ("failed_requests", "wrong_predictions", "rpo_steps", "seed"):
        frame[column] = frame[column].astype("Int64")
    frame["integrity"] = frame["integrity"].astype("boolean")
    return frame


def summary_rows(results: list[ExperimentResult]) -> list[tuple[str, ...]]:
    """One human row per experiment, as printed in the terminal and in report.md."""
    return [
        (
            r.name,
            r.fault or "-",
            format_duration(r.ttd_s),
            format_duration(r.rto_s),
            format_duration(r.rpo_s),
            "-" if r.failed_requests is None else str(r.failed_requests),
            r.verdict.upper(),
        )
        for r in results
    ]


def format_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return [line, "  ".join("-" * w for w in widths), *body]


def write_run_report(run_dir: Path) -> list[ExperimentResult]:
    """(Re)compute results from ``run_dir/journal.jsonl`` and write the report files."""
    results = results_from_events(read_journal(run_dir / "journal.jsonl"))
    frame = results_frame(results)
    atomic_write_text(run_dir / "results.csv", frame.to_csv(index=False))
    records = json.loads(frame.to_json(orient="records"))
    atomic_write_text(run_dir / "results.json", json.dumps(records, indent=2) + "\n")
    atomic_write_text(run_dir / "report.md", _markdown(run_dir.name, results))
    return results


def _markdown(run_id: str, results: list[ExperimentResult]) -> str:
    passed = sum(r.verdict == "pass" for r in results)
    lines = [f"# chaoskit run {run_id}", "", f"{passed} of {len(results)} experiments passed.", ""]
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
