"""reports/history.csv: every experiment of every run, for RTO/RPO trends across runs.

Its columns have the types of results.csv (``COLUMN_DTYPES``: counts and steps are
integers, empty when not measured), however often it was read and rewritten.
The file is rewritten whole (read, replace this run's rows, write a temp file, rename),
under an advisory lock, so a crash leaves the old or the new history and two sessions
finishing at once do not lose each other's rows.  Re-rendering a run replaces its rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from chaoskit.atomic import atomic_write_text
from chaoskit.errors import ConfigError
from chaoskit.report.metrics import COLUMN_DTYPES, COLUMNS

if TYPE_CHECKING:
    import pandas as pd

HISTORY_FILE = "history.csv"
HISTORY_COLUMNS = ("run_id", *COLUMNS)
_REQUIRED = ("run_id", "name", "ttd_s", "rto_s", "rpo_s", "verdict", "started_wall")


@contextlib.contextmanager
def _locked(report_dir: Path) -> Iterator[None]:
    fd = os.open(report_dir / ".history.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_history(report_dir: Path) -> pd.DataFrame | None:
    """The history in *report_dir*, or None when there is none yet."""

    path = report_dir / HISTORY_FILE
    if not path.exists():
        return None
    return _parse(path, path)


def _parse(source: Path | io.StringIO, path: Path) -> pd.DataFrame:
    import pandas as pd

    def not_a_history(why: object) -> ConfigError:
        return ConfigError(
            f"{path} is not a chaoskit history ({why}); move it aside to start a new one"
        )

    try:
        frame = pd.read_csv(source, dtype={"run_id": str, "name": str, "fault": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise not_a_history(e) from e
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise not_a_history(f"no column {missing[0]!r}")
    for column in HISTORY_COLUMNS:  # older histories may lack newer columns: empty, not zero
        if column not in frame.columns:
            frame[column] = pd.NA
    try:  # the types results.csv has (a CSV reader makes an integer with gaps a float)
        return frame.astype(COLUMN_DTYPES)
    except (TypeError, ValueError) as e:
        raise not_a_history(e) from e


def update_history(report_dir: Path, run_id: str, results: pd.DataFrame) -> pd.DataFrame:
    """Put this run's rows (a results frame) into the history; return the whole history."""
    import pandas as pd

    rows = results.assign(run_id=run_id)[list(HISTORY_COLUMNS)]
    with _locked(report_dir):
        old = read_history(report_dir)
        if old is not None:
            old = old[old["run_id"] != run_id]
        parts = [frame for frame in (old, rows) if frame is not None and not frame.empty]
        if parts:
            merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        else:
            merged = rows
        merged = merged.sort_values(
            ["started_wall", "run_id"], kind="stable", na_position="last"
        ).reset_index(drop=True)
        text = merged.to_csv(index=False)
        atomic_write_text(report_dir / HISTORY_FILE, text)
    return _parse(io.StringIO(text), report_dir / HISTORY_FILE)  # the types a reader gets
