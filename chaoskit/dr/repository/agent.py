"""The backup agent: back up each new checkpoint as soon as it is complete.

It polls a checkpoint directory of one format (:mod:`chaoskit.dr.checkpoints`).  For a
CheckpointManager directory (``tf``) a checkpoint is ready when the ``checkpoint`` state
file names it (TensorFlow rewrites that file atomically, after the bundle) and its
``.index`` parses with every data shard holding all its tensors; its snapshot holds its
bundle files and the state file as read, so a restore gives a directory
``tf.train.latest_checkpoint`` resolves.  For ``keras`` / ``files`` every matching file
is a checkpoint, ready once it has settled and its structure is whole.  Each snapshot is
journaled as ``backup.recovery_point`` with the checkpoint's name, step (None when the
format does not tell it) and creation time, from which RPO is computed.  That keeps RPO
near one checkpoint interval.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

from chaoskit.background import BackgroundLoop
from chaoskit.dr.checkpoints import CheckpointFormat, TFFormat, bundle_files
from chaoskit.dr.repository.repo import Repository
from chaoskit.dr.repository.snapshots import Snapshot
from chaoskit.errors import ChaosKitError, ConfigError
from chaoskit.journal import Journal


def checkpoint_files(directory: Path, prefix: str) -> list[str]:
    """Relative names of a CheckpointManager checkpoint's ``.index`` and data shards."""
    return list(bundle_files(directory, prefix))


class BackupAgent(BackgroundLoop):
    """Watches *checkpoint_dir* (of *checkpoint_format*, default ``tf``) and backs up
    every new complete checkpoint once."""

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
        checkpoint_format: CheckpointFormat | None = None,
    ) -> None:
        self.repo = repo
        self.format = checkpoint_format or TFFormat()
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
        """Back up the oldest complete checkpoint not yet backed up (tf: only the latest)."""
        if not self.dir.is_dir():
            return None
        for checkpoint in self.format.candidates(self.dir):
            if checkpoint.name in self._done or not self.format.complete(self.dir, checkpoint):
                continue
            snap = self.repo.backup(
                self.dir,
                files=checkpoint.files,
                extra_files=dict(checkpoint.extra_files),
                tags=self.tags,
                time=checkpoint.wall_created,
                checkpoint_step=checkpoint.step,
                model_name=self.model_name,
                summary={"checkpoint": checkpoint.name, "format": self.format.kind},
            )
            self._record(snap, checkpoint.name)
            self._done.add(checkpoint.name)
            self.snapshots.append(snap)
            if self.on_backup is not None:
                self.on_backup(snap)
            return snap
        return None

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
