"""Run reports written from real journals: files, empty-not-zero cells, HTML, bad input."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from chaoskit.errors import JournalError
from chaoskit.journal import read_journal
from chaoskit.report.figures import DETECTED, FAULT, RECOVERED, RECOVERY
from chaoskit.report.metrics import results_from_events
from chaoskit.report.results import point_latest, write_run_report
from chaoskit.report.testing import SampleExperiment, cut_last_line, write_sample_run

KILL = SampleExperiment()
RESTORE = SampleExperiment(
    name="experiments/test_restore.py::test_restore[<b>corrupt</b>]",
    fault="corrupt_checkpoint",
    budgets={"ttd": 1.0, "rto": 30.0, "rpo": 60.0},
    ttd=0.5,
    rto=8.4,
    rpo=30.0,
    rpo_steps=40,
    integrity=True,
)
NEVER = SampleExperiment(
    name="experiments/test_x.py::test_never_recovers",
    fault="partition",
    budgets={"ttd": 1.0, "rto": 10.0, "rpo": None},
    ttd=None,
    rto=None,
    outcome="failed",
)
DATA_URI = re.compile(r'<img class="(\w+)" alt="[^"]*" src="data:image/png;base64,([^"]+)">')


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One rendered run of three experiments (rendering figures is the slow part)."""
    run_dir = tmp_path_factory.mktemp("reports") / "20261127-120000-aaaa"
    write_sample_run(run_dir, [KILL, RESTORE, NEVER])
    write_run_report(run_dir)
    return run_dir


def test_results_files_hold_measured_values_and_leave_unmeasured_empty(run: Path) -> None:
    frame = pd.read_csv(run / "results.csv")
    kill, restore, never = frame.to_dict("records")
    assert math.isclose(kill["ttd_s"], 0.32) and math.isclose(kill["rto_s"], 4.21)
    assert math.isnan(kill["rpo_s"]) and math.isnan(kill["rpo_steps"])  # empty, not zero
    assert math.isclose(restore["rpo_s"], 30.0) and restore["rpo_steps"] == 40
    assert math.isnan(never["ttd_s"]) and math.isnan(never["rto_s"])
    assert [kill["verdict"], restore["verdict"], never["verdict"]] == ["pass", "pass", "fail"]
    records = json.loads((run / "results.json").read_text())
    assert records[0]["rpo_s"] is None and records[0]["integrity"] is None
    assert records[1]["integrity"] is True
    md = (run / "report.md").read_text()
    assert "2 of 3 experiments passed" in md and "the fault was never detected" in md
    assert f"| {KILL.name} | kill | 320ms | 4.21s | - | 84 | 0 | PASS |" in md  # RPO: not measured


def test_html_is_self_contained_with_one_decodable_timeline_per_experiment(run: Path) -> None:
    page = (run / "report.html").read_text()
    assert not re.search(r"(?:src|href)=\"(?!data:|#)", page)  # no file or network reference
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = DATA_URI.findall(page)
    timelines = [data for kind, data in images if kind == "timeline"]
    trends = [data for kind, data in images if kind == "trend"]
    assert len(timelines) == 3 and trends == []  # a first run has no trend yet
    assert page.count("No TTD/RTO/RPO trend yet") == 3
    for data in timelines:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG" and image.width > 800 and image.height > 400
        colors = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colors is not None and len(colors) > 50  # something was drawn, not blank


def test_html_summary_shows_budgets_values_and_verdicts_and_escapes_journal_text(
    run: Path,
) -> None:
    page = (run / "report.html").read_text()
    assert "<b>corrupt</b>" not in page  # an experiment name is data, not markup
    assert "&lt;b&gt;corrupt&lt;/b&gt;" in page
    summary = page[page.index('<table class="summary">') : page.index("</table>")]
    assert summary.count("<tr>") == 4  # header + 3 experiments
    assert "320ms / 1.00s" in summary and "4.21s / 20.00s" in summary
    assert "30.00s / 60.00s" in summary  # RPO with its budget
    assert '<span class="breach">-</span> / 10.00s' in summary  # never recovered: breach
    assert summary.count('class="pass"') == 2 and summary.count('class="fail"') == 1


def test_history_gains_runs_and_rerendering_replaces_a_runs_rows(tmp_path: Path) -> None:
    first, second = tmp_path / "20261127-100000-aaaa", tmp_path / "20261127-110000-bbbb"
    write_sample_run(first, [KILL])
    write_sample_run(second, [SampleExperiment(rto=6.5)], start=3600)
    write_run_report(first)
    write_run_report(second)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["run_id"]) == [first.name, second.name]
    assert list(history["rto_s"]) == [4.21, 6.5]
    assert len(DATA_URI.findall((second / "report.html").read_text())) == 2  # timeline, trend

    # the journal of the first run gains an experiment: re-rendering replaces, not appends
    write_sample_run(first, [NEVER], start=100)
    point_latest(tmp_path, first)
    write_run_report(tmp_path / "latest")  # through the symlink: still the run's own id
    history = pd.read_csv(tmp_path / "history.csv")
    assert sorted(history["run_id"]) == [first.name, first.name, second.name]
    assert history["name"].tolist().count(KILL.name) == 2
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_damaged_history_does_not_block_the_run_report(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text("this is,not\na history\n")
    run_dir = tmp_path / "20261127-120000-cccc"
    write_sample_run(run_dir, [KILL])
    with pytest.warns(UserWarning, match=r"history not updated: .*history.csv.*move it aside"):
        [result] = write_run_report(run_dir)
    assert result.verdict == "pass"
    assert (tmp_path / "history.csv").read_text() == "this is,not\na history\n"  # untouched
    page = (run_dir / "report.html").read_text()
    assert "history not updated" in page and 'class="timeline"' in page


def test_a_cut_off_last_line_is_skipped_with_a_warning_and_the_rest_reported(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "20261127-130000-dddd"
    journal = write_sample_run(run_dir, [KILL])
    cut_last_line(journal)
    with pytest.warns(UserWarning, match=r"skipped line \d+, cut off"):
        [result] = write_run_report(run_dir)
    assert result.verdict == "pass" and math.isclose(result.rto_s or 0, 4.21)
    assert "cut off (the run was probably interrupted)" in (run_dir / "report.html").read_text()


def test_a_run_dir_without_journal_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=re.escape(str(tmp_path / "journal.jsonl"))):
        write_run_report(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_an_empty_run_still_writes_a_report(tmp_path: Path) -> None:
    run_dir = tmp_path / "20261127-140000-eeee"
    run_dir.mkdir()
    (run_dir / "journal.jsonl").write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert write_run_report(run_dir) == []
    assert "holds no experiment" in (run_dir / "report.html").read_text()


def test_timeline_marks_come_from_the_journal_events(tmp_path: Path) -> None:
    from chaoskit.journal import read_journal
    from chaoskit.report.figures import _marks
    from chaoskit.report.metrics import split_experiments

    write_sample_run(tmp_path, [KILL])
    [(start, window)] = split_experiments(read_journal(tmp_path / "journal.jsonl"))
    [result] = results_from_events([start, *window])
    fault = next(e for e in window if e["event"] == "fault.injected")
    marks = _marks(window, fault, fault["t"], 99.0, result)
    [(x0, x1)] = marks["window"]
    assert x0 == 0.0 and math.isclose(x1, 4.21 + 0.4, abs_tol=1e-6)  # until fault.reverted
    lines = [(round(x, 3), color, width) for x, color, _, width in marks["lines"]]
    assert lines == [
        (0.0, FAULT, 1.0), (0.32, DETECTED, 1.0), (0.33, RECOVERY, 1.0), (4.21, RECOVERED, 1.0),
        (0.32, DETECTED, 2.2), (4.21, RECOVERED, 2.2),  # TTD and RTO as computed
    ]  # fmt: skip


def test_timeline_marks_every_recovery_and_the_rto_one_thick() -> None:
    from chaoskit.report.figures import _marks

    def ev(t: float, event: str, **fields: object) -> dict[str, object]:
        return {"t": t, "wall": t, "event": event, **fields}

    window = [
        ev(1.0, "fault.injected", fault="bit-flip"), ev(1.01, "detected"),
        ev(1.015, "recovery.started", action="restore"), ev(1.02, "fault.injected", fault="kill"),
        ev(1.1, "steady_state.ok", phase="recovery"), ev(1.3, "detected"),
        ev(1.31, "recovery.started", action="restart"),
        ev(11.0, "steady_state.ok", phase="recovery"),
        ev(11.1, "fault.reverted", fault="kill"), ev(11.2, "fault.reverted", fault="bit-flip"),
    ]  # fmt: skip
    start = ev(0.0, "experiment.started", name="x", budgets={})
    [result] = results_from_events([start, *window])
    marks = _marks(window, window[0], 1.0, 12.0, result)
    assert [(round(a, 2), round(b, 2)) for a, b in marks["window"]] == [(0.0, 10.2), (0.02, 10.1)]
    thick = [(round(x, 2), color) for x, color, _, width in marks["lines"] if width > 1]
    assert thick == [(0.01, DETECTED), (10.0, RECOVERED)]  # service back after the last one
    thin_green = [round(x, 2) for x, color, _, w in marks["lines"] if color == RECOVERED and w == 1]
    assert thin_green == [0.1, 10.0]


def test_an_interrupted_experiment_is_reported_as_failed(tmp_path: Path) -> None:
    run_dir = tmp_path / "20261127-150000-ffff"
    write_sample_run(run_dir, [SampleExperiment(finished=False)])
    [result] = write_run_report(run_dir)
    assert result.verdict == "fail" and "the experiment itself interrupted" in result.reasons
    assert (run_dir / "report.html").read_text().count('class="timeline"') == 1


def test_a_failed_experiments_exception_is_its_first_reason_in_md_and_html(
    tmp_path: Path,
) -> None:
    message = "assert <Result ok=False>\n +  where <Result ok=False> = check()"
    broken = SampleExperiment(
        name="experiments/test_x.py::test_broken", rto=None, outcome="failed",
        error=("AssertionError", message),
    )  # fmt: skip
    long = SampleExperiment(name="experiments/test_x.py::test_long", outcome="failed",
                            error=("RuntimeError", "x" * 2000))  # fmt: skip
    write_sample_run(tmp_path, [broken, long])
    first, second = write_run_report(tmp_path)
    shown = "the experiment itself failed: AssertionError: assert <Result ok=False> + where"
    assert first.reasons[0].startswith(shown)  # one line, the cause before its consequences
    assert "the steady state was never restored" in first.reasons[1:]
    long_error = second.reasons[0].split(": ", 1)[1]
    assert len(long_error) == 500 and long_error.startswith("RuntimeError: xxx")
    assert long_error.endswith("x...")
    md = (tmp_path / "report.md").read_text()
    assert f"- {first.reasons[0]}" in md
    page = (tmp_path / "report.html").read_text()
    assert "<Result" not in page  # journal text is escaped
    escaped = shown.replace("<", "&lt;").replace(">", "&gt;")
    assert page.count(escaped) == 2  # the summary's reasons and the experiment's section
    event = next(e for e in read_journal(tmp_path / "journal.jsonl")
                 if e["event"] == "experiment.error")  # fmt: skip
    assert event["message"] == message  # the journal keeps it whole


def test_an_unbounded_rpo_stays_distinct_from_an_unmeasured_one(tmp_path: Path) -> None:
    promised = SampleExperiment(budgets={"ttd": 1.0, "rto": 20.0, "rpo": 60.0})  # no restore
    write_sample_run(tmp_path, [promised, KILL])
    write_run_report(tmp_path)
    unbounded, unmeasured = json.loads((tmp_path / "results.json").read_text())
    assert unbounded["rpo_s"] == "inf" and unmeasured["rpo_s"] is None
    csv_rpo = pd.read_csv(tmp_path / "results.csv")["rpo_s"].tolist()
    assert csv_rpo[0] == math.inf and math.isnan(csv_rpo[1])


def test_a_figure_that_fails_to_draw_costs_only_that_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chaoskit.report.figures as figures

    def broken(*args: object) -> bytes:
        raise ValueError("odd event")

    monkeypatch.setattr(figures, "timeline_png", broken)
    write_sample_run(tmp_path, [KILL])
    with pytest.warns(UserWarning, match="timeline of .*test_kill_serving could not be drawn"):
        [result] = write_run_report(tmp_path)
    assert result.verdict == "pass"
    page = (tmp_path / "report.html").read_text()
    assert "ValueError: odd event" in page and "The timeline could not be drawn" in page


def test_journal_text_is_literal_in_figures_too(tmp_path: Path) -> None:
    odd = SampleExperiment(name="t.py::test[$a^$]", fault="kill")  # $..$ = mathtext
    write_sample_run(tmp_path, [odd])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_run_report(tmp_path)
    assert 'class="timeline"' in (tmp_path / "report.html").read_text()


def test_results_and_history_agree_on_integer_columns(tmp_path: Path) -> None:
    """rpo_steps, counts and seed are integers in both files (no "40.0" in the history),
    an unmeasured one stays empty in both, and reading the history gives results' types."""
    first, second = tmp_path / "20261127-100000-aaaa", tmp_path / "20261127-110000-bbbb"
    write_sample_run(first, [KILL, RESTORE])
    write_sample_run(second, [KILL, RESTORE], start=3600)
    write_run_report(first)
    write_run_report(second)  # the history is read back and rewritten once here

    def cells(path: Path) -> list[dict[str, str]]:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return frame.to_dict("records")

    integers = ("rpo_steps", "failed_requests", "retried_requests", "wrong_predictions", "seed")
    rows = cells(second / "results.csv") + cells(first / "results.csv")
    history = cells(tmp_path / "history.csv")
    assert len(history) == 4
    for row in rows + history:
        for column in integers:
            assert row[column] == "" or re.fullmatch(r"-?\d+", row[column]), (column, row)
    assert [r["rpo_steps"] for r in history] == ["", "40", "", "40"]
    assert sorted(r["rpo_steps"] for r in rows) == ["", "", "40", "40"]
    assert [r["integrity"] for r in history] == ["", "True", "", "True"]

    from chaoskit.report.history import read_history
    from chaoskit.report.results import results_frame

    read = read_history(tmp_path)
    assert read is not None
    typed = results_frame(results_from_events([]))
    for column in (*integers, "integrity"):
        assert read[column].dtype == typed[column].dtype, column


def test_an_older_history_with_float_steps_is_read_as_integers(tmp_path: Path) -> None:
    run_dir = tmp_path / "20261127-100000-aaaa"
    write_sample_run(run_dir, [RESTORE])
    write_run_report(run_dir)
    history = tmp_path / "history.csv"
    history.write_text(history.read_text().replace(",40,", ",40.0,"))  # as written before
    later = tmp_path / "20261127-110000-bbbb"
    write_sample_run(later, [KILL], start=3600)
    write_run_report(later)
    steps = pd.read_csv(history, dtype=str, keep_default_na=False)["rpo_steps"].tolist()
    assert steps == ["40", ""]
