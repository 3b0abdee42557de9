from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from chaoskit.errors import JournalError
from chaoskit.journal import Journal, read_journal


def test_events_are_timestamped_and_read_back(tmp_path):
    with Journal(tmp_path / "journal.jsonl", source="unit") as journal:
        first = journal.record("fault.injected", fault="kill")
        second = journal.record("detected", service="serving")
    events = read_journal(tmp_path)
    assert [e["event"] for e in events] == ["fault.injected", "detected"]
    assert events[0]["source"] == "unit" and events[0]["fault"] == "kill"
    assert second["t"] >= first["t"] and second["wall"] >= first["wall"]


def _append_many(path: str, worker: int) -> None:
    journal = Journal(path, source=f"w{worker}")
    for i in range(300):
        journal.record("request", worker=worker, i=i, payload="x" * 200)
    journal.close()


def test_concurrent_processes_never_interleave_lines(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    procs = [multiprocessing.Process(target=_append_many, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    events = read_journal(path)
    assert len(events) == 1200
    for worker in range(4):
        assert [e["i"] for e in events if e["worker"] == worker] == list(range(300))


def test_cut_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.record("a")
        journal.record("b")
    with open(path, "ab") as f:
        f.write(b'{"t": 1.0, "event": "c", "wa')
    with pytest.warns(UserWarning, match="cut off"):
        events = read_journal(path)
    assert [e["event"] for e in events] == ["a", "b"]


def test_damage_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    lines = [json.dumps({"t": 1, "event": "a"}), "garbage", json.dumps({"t": 2, "event": "b"})]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(JournalError, match="line 2"):
        read_journal(path)


def test_missing_journal_is_a_clear_error(tmp_path):
    with pytest.raises(JournalError, match=str(tmp_path / "nothing")):
        read_journal(tmp_path / "nothing" / "journal.jsonl")


def test_from_env(tmp_path, monkeypatch):
    monkeypatch.delenv("CHAOSKIT_JOURNAL", raising=False)
    assert Journal.from_env(source="x") is None
    monkeypatch.setenv("CHAOSKIT_JOURNAL", os.fspath(tmp_path / "j.jsonl"))
    journal = Journal.from_env(source="trainer")
    assert journal is not None
    journal.record("trainer.started")
    journal.close()
    assert read_journal(tmp_path / "j.jsonl")[0]["source"] == "trainer"


def test_tail_returns_only_new_complete_events(tmp_path):
    from chaoskit.journal import JournalTail

    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.record("old")
        tail = JournalTail(path)
        assert tail.new_events() == []
        journal.record("new")
        with open(path, "ab") as f:
            f.write(b'{"t": 5, "event": "half')
        assert [e["event"] for e in tail.new_events()] == ["new"]
        with open(path, "ab") as f:
            f.write(b'"}\n')
        assert [e["event"] for e in tail.new_events()] == ["half"]
    assert [e["event"] for e in JournalTail(path, from_start=True).new_events()] == [
        "old", "new", "half"
    ]


def test_tail_from_an_offset_streams_a_chunk_at_a_time(tmp_path, monkeypatch):
    """A window's events from where it began; a long journal read in chunks, an event
    cut by a chunk's end joined with the rest of it."""
    import chaoskit.journal as journal_module
    from chaoskit.journal import JournalTail

    monkeypatch.setattr(journal_module, "TAIL_CHUNK", 64)  # shorter than one event line
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.record("before")
        offset = path.stat().st_size
        for i in range(20):
            journal.record("inside", i=i)
    tail = JournalTail(path, offset=offset)
    streamed = tail.events()
    assert next(streamed)["i"] == 0  # a generator: events as they are read
    assert [e["i"] for e in streamed] == list(range(1, 20))
    assert tail.new_events() == []
    assert len(JournalTail(path, from_start=True).new_events()) == 21
