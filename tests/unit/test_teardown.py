"""Teardown that survives its own failures: each failure injected with a small subclass
of chaoskit's own classes (a journal that cannot write, a fault whose revert fails, a loop
that raises or will not stop), never a mock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from chaoskit.errors import FaultError, JournalError
from chaoskit.faults.base import Changes, Fault, FaultContext
from chaoskit.journal import Event, Journal, read_journal


class FailingJournal(Journal):
    """A real journal whose ``record`` raises *error* for the events in *fail_on*."""

    def __init__(self, path: Path, fail_on: set[str], error: BaseException | None = None) -> None:
        super().__init__(path)
        self.fail_on = fail_on
        self.error = error or JournalError(f"journal {path}: no space left on device")

    def record(self, event: str, **fields: Any) -> Event:
        if event in self.fail_on:
            raise self.error
        return super().record(event, **fields)


@dataclass(frozen=True)
class TouchFile(Fault):
    """Creates *path*; reverting removes it, after failing *fail_reverts* times."""

    kind: ClassVar[str] = "touch"
    path: str
    fail_reverts: int = 0

    def _inject(self, ctx: FaultContext) -> Changes:
        Path(self.path).write_text("applied")
        return Changes(record={"path": self.path}, undo=[self.fail_reverts])

    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        if changes.undo[0] > 0:
            changes.undo[0] -= 1
            raise OSError(f"{self.path}: device busy")
        Path(self.path).unlink(missing_ok=True)


def events_named(path: Path, name: str) -> list[Event]:
    return [e for e in read_journal(path) if e["event"] == name]


# -- a fault whose journal record failed is still reverted ----------------------------
def test_injection_that_cannot_be_journaled_is_reverted(tmp_path: Path) -> None:
    target = tmp_path / "fault-applied"
    journal = FailingJournal(tmp_path / "j.jsonl", {"fault.injected"})
    with pytest.raises(FaultError, match="could not journal the injection, so it was reverted"):
        TouchFile(str(target)).inject(FaultContext(journal))
    assert not target.exists()
    assert events_named(journal.path, "fault.injected") == []


def test_unjournaled_injection_whose_revert_fails_says_it_is_still_applied(
    tmp_path: Path,
) -> None:
    target = tmp_path / "fault-applied"
    journal = FailingJournal(tmp_path / "j.jsonl", {"fault.injected"})
    with pytest.raises(FaultError, match="could not revert it either, so it is still applied"):
        TouchFile(str(target), fail_reverts=1).inject(FaultContext(journal))
    assert target.exists()


def test_ctrl_c_while_journaling_an_injection_reverts_it_and_stays_a_ctrl_c(
    tmp_path: Path,
) -> None:
    target = tmp_path / "fault-applied"
    journal = FailingJournal(tmp_path / "j.jsonl", {"fault.injected"}, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        TouchFile(str(target)).inject(FaultContext(journal))
    assert not target.exists()
    with pytest.raises(KeyboardInterrupt) as caught:
        TouchFile(str(target), fail_reverts=1).inject(FaultContext(journal))
    assert any("still applied" in note for note in caught.value.__notes__)
