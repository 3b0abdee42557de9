"""The backup agent: back up each new checkpoint as soon as it is complete.

It polls a checkpoint directory of one format (:mod:`chaoskit.dr.protect.checkpoints`).  For a
CheckpointManager directory (``tf``) a checkpoint is ready when the ``checkpoint`` state
file names it (TensorFlow rewrites that file atomically, after the bundle) and its
``.index`` parses with every data shard holding all its tensors; its snapshot holds its
bundle files and the state file as read, so a restore gives a directory
``tf.train.latest_checkpoint`` resolves.  For ``keras`` / ``files`` every matching file
is a checkpoint, ready once it has settled and its structure is whole.  Each snapshot is
journaled as ``backup.recovery_point`` with the checkpoint's name, step (None when the
format does not tell it) and creation time, from which RPO is computed.  That keeps RPO
near one checkpoint interval.

A checkpoint with a producer manifest (``<name>.manifest.json``,
:mod:`chaoskit.dr.protect.manifest`)
becomes a recovery point only if its files, and then what the backup read, match it
(``rule: producer-manifest``); one that does not is refused (kept in ``refused`` for
the store guard to report) and never backed up.  Once a manifest has been seen in the
directory, a new checkpoint waits up to ``MANIFEST_GRACE`` seconds for its own (the
trainer writes it just after the save); without one it is trusted at first sight
(``rule: first-sight``), as is every checkpoint of a producer that writes no manifests.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

from chaoskit.background import BackgroundLoop
from chaoskit.dr.protect.checkpoints import (
    Checkpoint,
    CheckpointFormat,
    TFFormat,
    bundle_files,
    from_snapshot,
)
from chaoskit.dr.protect.manifest import (
    CHECKPOINT_SUFFIX,
    RULE_FIRST_SIGHT,
    Verdict,
    vet_backed_up,
    vet_checkpoint,
)
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.snapshots import Snapshot
from chaoskit.errors import ChaosKitError, ConfigError, RepositoryError
from chaoskit.journal import Journal

MANIFEST_GRACE = 5.0
"""Seconds a checkpoint may wait for its producer manifest (a trainer killed between
the save and the manifest leaves none: after this it is trusted at first sight)."""


def checkpoint_files(directory: Path, prefix: str) -> list[str]:
    """Relative names of a CheckpointManager checkpoint's ``.index`` and data shards."""
    return list(bundle_files(directory, prefix))


def discard_snapshot(repo: Repository, snap: Snapshot) -> None:
    """Forget a snapshot of damaged content that must not be a recovery point (a writer
    key may not forget: it then stays in the repository, never journaled or used)."""
    if repo.allows("forget"):
        repo.forget(ids=[snap.id])


RECENT = 64
"""Recovery points an agent keeps in memory besides those of checkpoints still on disk:
the store guard scans and sorts them every pass, so a list that grew with every save
(~3,600 an hour on the reference stack) cost memory and time without end; older ones
stay in the repository (``chaoskit backup restore``)."""


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
        forget_with: Repository | None = None,
    ) -> None:
        """*forget_with*: a key that may forget (default *repo*'s), for a snapshot of
        content that changed while it was read: a writer key cannot forget it."""
        self.repo = repo
        self.forget_with = forget_with or repo
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
        self.refused: dict[str, Verdict] = {}
        """Checkpoints that did not match their producer manifest (name -> verdict)."""
        self.expects_manifests = self.dir.is_dir() and any(
            self.dir.glob(f"*{CHECKPOINT_SUFFIX}")
        )
        self._done: set[str] = {
            str(s.summary.get("checkpoint"))
            for s in repo.recovery_points()
            if s.source == str(self.dir) and s.summary.get("checkpoint")
        }

    def poll_once(self) -> Snapshot | None:
        """Back up the oldest complete checkpoint not yet backed up (tf: only the latest)."""
        if not self.dir.is_dir():
            return None
        for checkpoint in self.format.candidates(self.dir):
            if checkpoint.name in self._done or checkpoint.name in self.refused:
                continue
            if not self.format.complete(self.dir, checkpoint):
                continue
            verdict = self._vet(checkpoint)
            if verdict is None:
                continue  # its manifest is still to come
            if not verdict.ok:
                self.refused[checkpoint.name] = verdict
                continue
            snap = self._back_up(checkpoint, verdict)
            if snap is None:
                continue
            verdict = vet_backed_up(verdict, "checkpoint", checkpoint.name, snap.files)
            if not verdict.ok:  # changed between the check and the backup's read
                discard_snapshot(self.forget_with, snap)
                self.refused[checkpoint.name] = verdict
                continue
            self._record(snap, checkpoint.name, verdict)
            self._done.add(checkpoint.name)
            self.snapshots.append(snap)
            self._trim()
            if self.on_backup is not None:
                self.on_backup(snap)
            return snap
        return None

    def _back_up(self, checkpoint: Checkpoint, verdict: Verdict) -> Snapshot | None:
        """The checkpoint's snapshot; None when its trainer removed it (a kept-N rotation)
        before the backup had read all of it: nothing of it is left to protect, and a
        snapshot missing a file is no recovery point."""
        try:
            snap = self.repo.backup(
                self.dir,
                files=checkpoint.files,
                extra_files=dict(checkpoint.extra_files),
                tags=self.tags,
                time=checkpoint.wall_created,
                checkpoint_step=checkpoint.step,
                model_name=self.model_name,
                summary={"checkpoint": checkpoint.name, "format": self.format.kind,
                         "rule": verdict.rule},
            )  # fmt: skip
        except RepositoryError:
            if self._on_disk(checkpoint):
                raise
            snap = None
        if snap is not None and {f.path for f in snap.files} >= set(checkpoint.files):
            return snap
        if snap is not None:
            discard_snapshot(self.forget_with, snap)
        self._done.add(checkpoint.name)  # gone: never tried again
        if self.journal is not None:
            reason = "its trainer removed it before the backup read it"
            self.journal.record("backup.skipped", checkpoint=checkpoint.name, reason=reason)
        return None

    def _on_disk(self, checkpoint: Checkpoint) -> bool:
        return all((self.dir / name).exists() for name in checkpoint.files)

    def _trim(self) -> None:
        """Keep the newest :data:`RECENT` recovery points and any older one whose
        checkpoint still has a file on disk (a format that keeps many stays guarded)."""
        if len(self.snapshots) <= RECENT:
            return
        older, recent = self.snapshots[:-RECENT], self.snapshots[-RECENT:]
        on_disk = [
            snap for snap in older
            if any((self.dir / path).exists() for path in from_snapshot(snap, self.format).files)
        ]  # fmt: skip
        self.snapshots = on_disk + recent

    def forget_lost(self, kept: set[str]) -> None:
        """Forget the backups whose snapshots are no longer in the repository (lost with
        it when it was recovered from an older copy): their checkpoints count as new."""
        lost = [s for s in self.snapshots if s.id not in kept]
        self.snapshots = [s for s in self.snapshots if s.id in kept]
        self._done -= {str(s.summary.get("checkpoint")) for s in lost}

    def forget_newer_than(self, step: int) -> None:
        """Stop guarding the recovery points of checkpoints after *step*: training was
        rewound past them, and the checkpoints it writes next reuse their names.  The
        snapshots stay in the repository."""
        newer = [s for s in self.snapshots if (s.checkpoint_step or 0) > step]
        self.snapshots = [s for s in self.snapshots if (s.checkpoint_step or 0) <= step]
        self._done -= {str(s.summary.get("checkpoint")) for s in newer}

    def _vet(self, checkpoint: Checkpoint) -> Verdict | None:
        """The producer manifest's verdict; None while it may still be written."""
        verdict = vet_checkpoint(self.dir, checkpoint.name, checkpoint.files)
        if verdict is not None:
            self.expects_manifests = True
            return verdict
        if self.expects_manifests and time.time() - checkpoint.wall_created < MANIFEST_GRACE:
            return None
        return Verdict(RULE_FIRST_SIGHT)

    def _record(self, snap: Snapshot, prefix: str, verdict: Verdict) -> None:
        if self.journal is not None:
            self.journal.record(
                "backup.recovery_point",
                snapshot=snap.id,
                checkpoint=prefix,
                step=snap.checkpoint_step,
                wall_created=snap.time,
                repository=str(self.repo.root),
                rule=verdict.rule,
                manifest=None if verdict.manifest is None else str(verdict.manifest),
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
