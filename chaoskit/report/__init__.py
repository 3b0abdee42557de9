"""Reports: metrics computed from the journal, tables, figures, history and the CI gate."""

from __future__ import annotations

from chaoskit.report.metrics import ExperimentResult, results_from_events
from chaoskit.report.results import point_latest, write_run_report

__all__ = ["ExperimentResult", "point_latest", "results_from_events", "write_run_report"]
