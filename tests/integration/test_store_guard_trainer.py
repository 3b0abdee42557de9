"""The store guard restarts a user's trainer that is down, on a ``files`` checkpoint glob.

The trainer is a real process (a small script, no TensorFlow) that resumes from the
newest ``step-*.pt`` it finds and writes one more every 0.2 s; it journals nothing, so
the guard sees that it resumed from the checkpoint it wrote after the restart.  With its
latest checkpoint intact the guard only restarts it; with the latest deleted it restores
that checkpoint first, so the trainer resumes there instead of one step back.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chaoskit.dr.online.goldens import Goldens
from chaoskit.dr.protect.checkpoints import checkpoint_format
from chaoskit.dr.protect.repository.repo import init_repository
from chaoskit.dr.protect.store_guard import StoreGuard
from chaoskit.journal import Journal, JournalTail
from chaoskit.serving.client import ServingClient
from chaoskit.stack.ports import free_port
from chaoskit.stack.process import ProcessBackend
from chaoskit.stack.service import ServiceSpec
from chaoskit.waiting import wait_until

pytestmark = [pytest.mark.integration]

TRAINER = r"""
import os, re, sys, time
directory = sys.argv[1]
steps = [int(m[1]) for n in os.listdir(directory) if (m := re.fullmatch(r"step-(\d+)\.pt", n))]
step = max(steps, default=0)
while True:
    step += 1
    with open(os.path.join(directory, f"step-{step:04d}.pt"), "wb") as f:
        f.write(step.to_bytes(4, "big") * 2500)
    time.sleep(0.2)
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A trainer that ran and was killed, every checkpoint it wrote backed up."""
    checkpoints = tmp_path / "data" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (tmp_path / "data" / "models").mkdir()
    script = tmp_path / "train.py"
    script.write_text(TRAINER)
    backend = ProcessBackend(tmp_path / "run", tmp_path / "data")
    port = free_port()  # nothing serves here: steady state cannot be confirmed
    stack = SimpleNamespace(
        goldens=Goldens(tmp_path / "data" / "models"),
        data_dir=tmp_path / "data", model_base_path=tmp_path / "data" / "models",
        checkpoint_dir=checkpoints, model_name="m", trainer="trainer", backend=backend,
        checkpoint_format=checkpoint_format("files", "step-*.pt"),
        client=lambda timeout: ServingClient("127.0.0.1", port, "m", timeout=timeout),
    )  # fmt: skip
    try:
        backend.start(ServiceSpec("trainer", (sys.executable, str(script), str(checkpoints))))
        wait_until(lambda: len(list(checkpoints.glob("step-*.pt"))) >= 3, 30, what="3 checkpoints")
        backend.kill("trainer")
        wait_until(lambda: backend.status("trainer") == "exited", 10, what="the trainer exits")
        repo = init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)
        journal = Journal(tmp_path / "journal.jsonl")
        guard = StoreGuard(repo, stack, journal, confirm_timeout=0.2)
        assert guard.agent is not None
        written = len(list(checkpoints.glob("step-*.pt")))
        guard.agent.interval = 0.05
        guard.agent.run(max_backups=written, timeout=30)
        assert len(guard.agent.snapshots) == written
        tail = JournalTail(journal.path)
        yield {"guard": guard, "dir": checkpoints, "last": written, "tail": tail}
        guard.stop()
    finally:
        backend.close()


def await_event(tail: JournalTail, name: str, timeout: float = 30.0) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def found() -> dict[str, Any] | None:
        seen.extend(tail.new_events())
        return next((e for e in seen if e["event"] == name), None)

    return wait_until(found, timeout, what=f"a {name} event")


def test_a_down_trainer_with_an_intact_latest_is_only_restarted(setup: dict[str, Any]) -> None:
    setup["guard"].start()
    event = await_event(setup["tail"], "recovered")
    assert event["action"] == "restart" and event["resumed"] is True
    assert (setup["dir"] / f"step-{setup['last'] + 1:04d}.pt").exists()  # resumed, not anew


def test_a_deleted_latest_is_restored_before_the_trainer_restarts(setup: dict[str, Any]) -> None:
    latest = setup["dir"] / f"step-{setup['last']:04d}.pt"
    content, mtime = latest.read_bytes(), latest.stat().st_mtime_ns
    latest.unlink()
    setup["guard"].start()
    done = await_event(setup["tail"], "restore.done")
    assert done["recovery_point_step"] == setup["last"] and done["integrity"] is True
    assert latest.read_bytes() == content and latest.stat().st_mtime_ns == mtime  # not rewritten
    assert (setup["dir"] / f"step-{setup['last'] + 1:04d}.pt").exists()
