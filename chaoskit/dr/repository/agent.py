"""The backup agent: back up each new checkpoint as soon as it is complete.

It polls a CheckpointManager directory.  A checkpoint is ready when the ``checkpoint``
state file names it (TensorFlow rewrites that file atomically, after the bundle) and its
``.index`` parses with every data shard holding all its tensors.  Each ready checkpoint
becomes one snapshot holding its bundle files and the state file as read, so a restore
gives a directory ``tf.train.latest_checkpoint`` resolves.  Each snapshot is journaled
as ``backup.recovery_point`` with the checkpoint's creation time, from which RPO is
computed.  That keeps RPO near one checkpoint interval.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

from chaoskit.background import BackgroundLoop
from chaoskit.dr.repository.repo import Repository
from chaoskit.dr.repository.snapshots import Snapshot
from chaoskit.dr.repository.source import STATE_FILE, parse_checkpoint_state
from chaoskit.dr.repository.tfbundle import bundle_complete, read_bundle_index
from chaoskit.errors import ChaosKitError, ConfigError
from chaoskit.journal import Journal


def checkpoint_files(directory: Path, prefix: str) -> list[str]:
    """Relative names of a complete checkpoint's ``.index`` and data shards."""
    index = read_bundle_index(directory / f"{prefix}.index")
    shards = [f"{prefix}.data-{i:05d}-of-{index.num_shards:05d}" for i in range(index.num_shards)]
    return [f"{prefix}.index", *shards]


class BackupAgent(BackgroundLoop):
    """Watches *checkpoint_dir* and backs up every new complete checkpoint once."""

    def __init__(
        self,
        repo: Repository,
        checkpoint_dir: str | Path,
        *,
        interval: float = 0.5,
        tags: tuple[str, ...] = (),
        model_name: str | None = None,
        journal: Journal | None = None,
        on_backup: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.repo = repo
        self.dir = Path(checkpoint_dir).absolute()
        super().__init__()
        if interval <= 0:
            raise ConfigError(f"watch interval {interval!r} must be positive")
        self.interval = interval
        self.tags = tuple(tags)
        self.model_name = model_name
        self.journal = journal
        self.on_backup = on_backup
        self.snapshots: list[Snapshot] = []
        self.errors: list[str] = []
        self._done: set[str] = {
            str(s.summary.get("checkpoint"))
            for s in repo.snapshots()
            if s.source == str(self.dir) and s.summary.get("checkpoint")
        }

    def poll_once(self) -> Snapshot | None:
        """Back up the newest checkpoint if it is complete and not yet backed up."""
        try:
            raw = (self.dir / STATE_FILE).read_bytes()
        except OSError:
            return None
        state = parse_checkpoint_state(raw.decode("utf-8", "replace"))
        if state is None:
            return None
        prefix = state.latest
        if Path(prefix).is_absolute():
            try:
                prefix = Path(prefix).relative_to(self.dir).as_posix()
            except ValueError:
                return None
        if prefix in self._done or not bundle_complete(self.dir / prefix):
            return None
        files = checkpoint_files(self.dir, prefix)
        snap = self.repo.backup(
            self.dir,
            files=files,
            extra_files={STATE_FILE: raw},
            tags=self.tags,
            time=state.time,
            checkpoint_step=state.step,
            model_name=self.model_name,
            summary={"checkpoint": prefix},
        )
        self._record(snap, prefix)
        self._done.add(prefix)
        self.snapshots.append(snap)
        if self.on_backup is not None:
            self.on_backup(snap)
        return snap

    def _record(self, snap: Snapshot, prefix: str) -> None:
        if self.journal is not None:
            self.journal.record(
                "backup.recovery_point",
                snapshot=snap.id,
                checkpoint=prefix,
                step=snap.checkpoint_step,
                wall_created=snap.time,
                repository=str(self.repo.root),
            )

    def run(self, *, max_backups: int | None = None, timeout: float | None = None) -> None:
        """Poll until stopped, *max_backups* were made or *timeout* seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        made = 0
        while not self._stop.is_set():
            try:
                if self.poll_once() is not None:
                    made += 1
                    if max_backups is not None and made >= max_backups:
                        return
                    continue  # another checkpoint may already be waiting
            except (ChaosKitError, OSError) as e:
                self.errors.append(str(e))
                warnings.warn(f"backup agent: {e}", stacklevel=2)
            if deadline is not None and time.monotonic() >= deadline:
                return
            self._stop.wait(self.interval)

    def _loop(self) -> None:
        self.run()

    def __enter__(self) -> BackupAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
