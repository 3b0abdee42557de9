"""MemoryPressure's parameters and its contract with a backend (a fake one: the real
cgroups, balloon and OOM killer are in tests/integration/test_memory_limit.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chaoskit.errors import FaultError, StackError
from chaoskit.faults import FaultContext, MemoryPressure
from chaoskit.journal import Journal, read_journal
from chaoskit.stack.memory_limit import MB, LimitBelowUsage


class Squeeze:
    """What a backend's limit_memory returns, recording what was asked of it."""

    def __init__(self, kill: BaseException | dict[str, Any]) -> None:
        self.kill, self.lifted = kill, 0

    def await_kill(self) -> dict[str, Any]:
        if isinstance(self.kill, BaseException):
            raise self.kill
        return self.kill

    def facts(self) -> dict[str, Any]:
        return {"usage_bytes": 100 * MB, "limit_bytes": 164 * MB}

    def lift(self) -> None:
        self.lifted += 1


class Backend:
    name = "fake"

    def __init__(self, squeeze: Squeeze | None = None, refuse: StackError | None = None,
                 running: bool = True) -> None:  # fmt: skip
        self.squeeze, self.refuse, self.running = squeeze, refuse, running
        self.asked: list[tuple[str, int | None]] = []

    def instance(self, service: str) -> str | None:
        return "4242" if self.running else None

    def limit_memory(self, service: str, limit_bytes: int | None) -> Squeeze:
        self.asked.append((service, limit_bytes))
        if self.refuse is not None:
            raise self.refuse
        assert self.squeeze is not None
        return self.squeeze


@pytest.fixture
def journal(tmp_path: Path):
    journal = Journal(tmp_path / "journal.jsonl", source="test")
    yield journal
    journal.close()


def ctx(journal: Journal, backend: object) -> FaultContext:
    return FaultContext(journal, seed=1, stack=SimpleNamespace(backend=backend))


KILLED = {"oom_kills": 1, "exit_signal": "SIGKILL", "oom_killed": True, "balloon_alive": True}


@pytest.mark.parametrize("limit_mb", [0, -5, True, "lots", float("nan"), float("inf")])
def test_a_limit_that_is_not_a_positive_number_is_named(limit_mb):
    with pytest.raises(FaultError) as e:
        MemoryPressure("serving", limit_mb=limit_mb)
    assert str(e.value).startswith("memory-pressure: limit_mb must be a positive number of MB")
    assert str(e.value).endswith(f"got {limit_mb!r}")


@pytest.mark.parametrize("limit_mb", [None, 1, 700, 512.5])
def test_a_positive_limit_or_none_is_accepted(limit_mb):
    assert MemoryPressure("serving-a", limit_mb=limit_mb).params() == {
        "service": "serving-a", "limit_mb": limit_mb}  # fmt: skip


def test_the_kill_as_the_backend_saw_it_is_journaled_and_the_revert_lifts(journal, tmp_path):
    squeeze = Squeeze(KILLED)
    backend = Backend(squeeze)
    with MemoryPressure("serving-a", limit_mb=512.5).inject(ctx(journal, backend)):
        assert squeeze.lifted == 0
    assert backend.asked == [("serving-a", round(512.5 * MB))] and squeeze.lifted == 1
    (injected,) = [e for e in read_journal(tmp_path / "journal.jsonl")
                   if e["event"] == "fault.injected"]  # fmt: skip
    assert injected["changes"] == {"service": "serving-a", "instance": "4242", **KILLED,
                                   "usage_bytes": 100 * MB, "limit_bytes": 164 * MB}  # fmt: skip


def test_no_limit_asks_the_backend_for_its_default(journal):
    backend = Backend(Squeeze(KILLED))
    with MemoryPressure("serving-a").inject(ctx(journal, backend)):
        pass
    assert backend.asked == [("serving-a", None)]


def test_a_backend_that_cannot_limit_memory_is_named(journal):
    with pytest.raises(FaultError, match="^memory-pressure: the fake backend cannot limit memory$"):
        MemoryPressure().inject(ctx(journal, SimpleNamespace(name="fake")))


def test_a_service_that_is_not_running_is_named(journal):
    backend = Backend(Squeeze(KILLED), running=False)
    with pytest.raises(FaultError, match="^memory-pressure: serving is not running$"):
        MemoryPressure().inject(ctx(journal, backend))
    assert backend.asked == []


def test_a_limit_below_the_usage_names_the_value_and_the_usage(journal):
    backend = Backend(refuse=LimitBelowUsage("serving", 300 * MB, 641 * MB))
    with pytest.raises(FaultError) as e:
        MemoryPressure(limit_mb=300).inject(ctx(journal, backend))
    assert str(e.value) == ("memory-pressure: limit_mb 300 is below the current usage of "
                            "serving (641.0 MB)")  # fmt: skip


def test_a_backend_refusal_becomes_a_fault_error(journal):
    backend = Backend(refuse=StackError("cannot limit the memory of serving: needs root"))
    with pytest.raises(FaultError, match="^memory-pressure: cannot limit the memory of serving"):
        MemoryPressure().inject(ctx(journal, backend))


@pytest.mark.parametrize("error", [StackError("serving was not OOM-killed within 15s"),
                                   KeyboardInterrupt()])  # fmt: skip
def test_an_injection_that_does_not_end_in_a_kill_lifts_before_it_raises(journal, error):
    squeeze = Squeeze(error)
    expected = FaultError if isinstance(error, StackError) else KeyboardInterrupt
    with pytest.raises(expected):
        MemoryPressure().inject(ctx(journal, Backend(squeeze)))
    assert squeeze.lifted == 1  # nothing left limited, no balloon
