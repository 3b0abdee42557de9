"""The backup agent on synthetic tensor bundles (real TensorFlow: tests/integration)."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pytest
from test_tfbundle import write_index

from chaoskit.dr import BackupAgent, init_repository, open_repository
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.errors import ConfigError, PermissionDeniedError
from chaoskit.journal import Journal, read_journal


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return init_repository(tmp_path / "repo", "pw", scrypt_n=2**10)


def save(ckpt_dir: Path, step: int, *, complete: bool = True, stamp: float = 1.7e9) -> bytes:
    """Write ckpt-<step> like CheckpointManager: bundle first, then the state file."""
    ckpt_dir.mkdir(exist_ok=True)
    write_index(ckpt_dir / f"ckpt-{step}.index", {"w": ((2500,), 0, 10_000)})
    data = os.urandom(10_000)
    (ckpt_dir / f"ckpt-{step}.data-00000-of-00001").write_bytes(data if complete else data[:5000])
    (ckpt_dir / "checkpoint").write_text(
        f'model_checkpoint_path: "ckpt-{step}"\n'
        f'all_model_checkpoint_paths: "ckpt-{step}"\n'
        f"all_model_checkpoint_timestamps: {stamp + step}\n"
    )
    return data


def test_only_complete_checkpoints_are_backed_up(repo: Repository, tmp_path: Path) -> None:
    ckpts = tmp_path / "ckpts"
    agent = BackupAgent(repo, ckpts)
    assert agent.poll_once() is None  # no directory, no state file
    ckpts.mkdir()
    (ckpts / "checkpoint").write_text("garbage")
    assert agent.poll_once() is None
    save(ckpts, 1, complete=False)
    assert agent.poll_once() is None  # the state file names it, but the data is short
    data = save(ckpts, 1)
    (ckpts / "unrelated.txt").write_text("not part of the checkpoint")
    snap = agent.poll_once()
    assert snap is not None and snap.checkpoint_step == 1 and snap.time == 1.7e9 + 1
    assert sorted(f.path for f in snap.files) == [
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
    ]
    assert agent.poll_once() is None  # once per checkpoint
    repo.restore(snap.id, tmp_path / "out")
    assert (tmp_path / "out" / "ckpt-1.data-00000-of-00001").read_bytes() == data
    assert "ckpt-1" in (tmp_path / "out" / "checkpoint").read_text()


def test_restarted_agent_does_not_repeat_and_journals(repo: Repository, tmp_path: Path) -> None:
    ckpts = tmp_path / "ckpts"
    save(ckpts, 1)
    assert BackupAgent(repo, ckpts).poll_once() is not None
    with Journal(tmp_path / "journal.jsonl") as journal:
        again = BackupAgent(repo, ckpts, journal=journal)
        assert again.poll_once() is None
        save(ckpts, 2)
        snap = again.poll_once()
    assert snap is not None
    (event,) = read_journal(tmp_path / "journal.jsonl")
    assert event["event"] == "backup.recovery_point" and event["snapshot"] == snap.id
    assert event["step"] == 2 and event["wall_created"] == 1.7e9 + 2


def test_agent_thread_backs_up_new_checkpoints(repo: Repository, tmp_path: Path) -> None:
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    seen: list[int | None] = []
    with BackupAgent(
        repo, ckpts, interval=0.01, on_backup=lambda s: seen.append(s.checkpoint_step)
    ) as agent:
        for step in (1, 2, 3):
            save(ckpts, step)
            deadline = time.monotonic() + 30
            while step not in seen:
                assert time.monotonic() < deadline, f"ckpt-{step} was never backed up"
                time.sleep(0.01)
    assert seen == [1, 2, 3] and not agent.errors
    assert [s.checkpoint_step for s in repo.snapshots()] == [1, 2, 3]


def test_bad_interval_is_refused(repo: Repository, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="interval 0"):
        BackupAgent(repo, tmp_path, interval=0)


def test_keras_files_are_backed_up_each_with_its_step_once_settled(
    repo: Repository, tmp_path: Path
) -> None:
    from test_checkpoints import OLD, write_h5

    from chaoskit.dr.protect.checkpoints import KerasFormat

    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    write_h5(ckpts / "ckpt-0001.weights.h5", 1, mtime=OLD + 1)
    write_h5(ckpts / "ckpt-0002.weights.h5", 2, mtime=None)  # just written
    with Journal(tmp_path / "journal.jsonl") as journal:
        agent = BackupAgent(repo, ckpts, journal=journal, checkpoint_format=KerasFormat(settle=30))
        first = agent.poll_once()
        assert first is not None and agent.poll_once() is None  # ckpt-2 has not settled
        os.utime(ckpts / "ckpt-0002.weights.h5", (OLD + 2, OLD + 2))
        second = agent.poll_once()
        assert second is not None and agent.poll_once() is None
    assert [f.path for f in second.files] == ["ckpt-0002.weights.h5"]
    assert (first.checkpoint_step, second.checkpoint_step) == (1, 2)
    points = read_journal(tmp_path / "journal.jsonl")
    assert [(p["checkpoint"], p["step"], p["wall_created"]) for p in points] == [
        ("ckpt-0001.weights.h5", 1, OLD + 1), ("ckpt-0002.weights.h5", 2, OLD + 2),
    ]  # fmt: skip
    again = BackupAgent(repo, ckpts, checkpoint_format=KerasFormat(settle=30))
    assert again.poll_once() is None  # a restarted agent knows what it did
    repo.restore(second.id, tmp_path / "out")
    assert (tmp_path / "out" / "ckpt-0002.weights.h5").read_bytes() == (
        ckpts / "ckpt-0002.weights.h5"
    ).read_bytes()


def test_agent_on_a_writer_key_backs_up_each_checkpoint_once_across_restarts(
    repo: Repository, tmp_path: Path
) -> None:
    """The agent runs on a write-only key: it learns what is already backed up from the
    snapshots' headers, and what it backs up opens only with a reading key."""
    repo.add_key("writer pw", role="writer", scrypt_n=2**10)
    writer = open_repository(repo.root, "writer pw")
    ckpts = tmp_path / "ckpts"
    data = save(ckpts, 1)
    first = BackupAgent(writer, ckpts).poll_once()
    assert first is not None and first.checkpoint_step == 1
    again = BackupAgent(writer, ckpts)
    assert again.poll_once() is None
    save(ckpts, 2)
    second = again.poll_once()
    assert second is not None and second.checkpoint_step == 2
    assert [s.id for s in repo.snapshots()] == [first.id, second.id]
    repo.restore(first.id, tmp_path / "out")
    assert (tmp_path / "out" / "ckpt-1.data-00000-of-00001").read_bytes() == data
    with pytest.raises(PermissionDeniedError):
        writer.restore(first.id, tmp_path / "refused")


def test_memory_keeps_the_recent_recovery_points_and_those_still_on_disk(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chaoskit.dr.protect.repository.agent as agent_module

    monkeypatch.setattr(agent_module, "RECENT", 2)
    ckpts = tmp_path / "ckpts"
    agent = BackupAgent(repo, ckpts)

    def back_up(step: int) -> list[int | None]:
        save(ckpts, step)
        assert agent.poll_once() is not None
        return [s.checkpoint_step for s in agent.snapshots]

    def delete(step: int) -> None:
        for path in ckpts.glob(f"ckpt-{step}.*"):
            path.unlink()

    assert [back_up(1), back_up(2), back_up(3)][-1] == [1, 2, 3]  # 1 is still on disk
    delete(1)
    assert back_up(4) == [2, 3, 4]
    delete(2)
    delete(3)
    assert back_up(5) == [4, 5]
    assert len(repo.snapshots()) == 5  # the repository keeps every one


def test_a_rewound_trainer_reuses_checkpoint_names_and_each_is_backed_up_anew(
    repo: Repository, tmp_path: Path
) -> None:
    """After a rewind to step 1 the trainer writes ckpt-2 again, with new weights: the
    agent must back that up (not skip the name it has seen) and stop guarding the old."""
    ckpts = tmp_path / "ckpts"
    agent = BackupAgent(repo, ckpts)
    save(ckpts, 1)
    first = agent.poll_once()
    save(ckpts, 2)
    old = agent.poll_once()
    assert first is not None and old is not None
    agent.forget_newer_than(1)
    assert [s.id for s in agent.snapshots] == [first.id]
    data = save(ckpts, 2)  # the same name, other content
    new = agent.poll_once()
    assert new is not None and new.id != old.id and new.checkpoint_step == 2
    repo.restore(new.id, tmp_path / "out")
    assert (tmp_path / "out" / "ckpt-2.data-00000-of-00001").read_bytes() == data
    assert {s.id for s in repo.snapshots()} >= {first.id, old.id, new.id}  # nothing lost


@pytest.mark.parametrize("when", ["before-the-scan", "after-the-scan"])
def test_a_checkpoint_its_trainer_rotates_away_before_it_is_read_is_skipped(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A trainer keeping its newest N checkpoints removes the oldest while the agent is
    about to read it (CI: the Keras example's stack failed to start): that one is skipped
    and journaled, no snapshot of part of it is kept, and the next is backed up."""
    from test_checkpoints import OLD, write_h5

    from chaoskit.dr.protect.checkpoints import KerasFormat
    from chaoskit.dr.protect.repository import backup

    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    write_h5(ckpts / "ckpt-0001.weights.h5", 1, mtime=OLD + 1)
    write_h5(ckpts / "ckpt-0002.weights.h5", 2, mtime=OLD + 2)
    oldest = ckpts / "ckpt-0001.weights.h5"

    if when == "before-the-scan":
        real_backup = repo.backup

        def rotating_backup(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            oldest.unlink(missing_ok=True)
            return real_backup(*args, **kwargs)

        monkeypatch.setattr(repo, "backup", rotating_backup)
    else:
        real_scan = backup.scan

        def rotating_scan(*args: object):  # type: ignore[no-untyped-def]
            found = real_scan(*args)
            oldest.unlink(missing_ok=True)
            return found

        monkeypatch.setattr(backup, "scan", rotating_scan)
    with Journal(tmp_path / "journal.jsonl") as journal:
        agent = BackupAgent(repo, ckpts, journal=journal, checkpoint_format=KerasFormat(settle=30))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "vanished during the backup; skipped"
            snap = agent.poll_once()
        assert snap is not None and snap.checkpoint_step == 2
        assert agent.poll_once() is None and agent.refused == {}
    assert [s.checkpoint_step for s in repo.snapshots()] == [2]  # none of part of ckpt-1
    events = read_journal(tmp_path / "journal.jsonl")
    assert [(e["event"], e["checkpoint"]) for e in events] == [
        ("backup.skipped", "ckpt-0001.weights.h5"),
        ("backup.recovery_point", "ckpt-0002.weights.h5"),
    ]
