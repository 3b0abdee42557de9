"""The store guard: recovery points of the model store and checkpoints, scanning, restore.

It backs up every new SavedModel version (with its canary goldens) and, through the
backup agent, every new checkpoint into the local backup repository (the replicator,
:mod:`chaoskit.dr.protect.replication`, ships it on to the DR site).  A scanner compares the
live store with those manifests (SHA-256 per file) whenever inotify reports a change,
and at least every ``scan_interval``; damage is
journaled as ``detected`` (signal ``integrity``) and repaired by restoring the newest
recovery point that restores and verifies — atomically, while serving keeps answering
from memory.  A trainer that is down is restarted, after restoring its checkpoints when
the latest one is damaged, so it resumes from the restored step.

Checkpoints are read through the stack's format (:mod:`chaoskit.dr.protect.checkpoints`).  Which
recovery points the live directory must still match is the format's rule: for ``tf``
those the state file lists (CheckpointManager's sweep unlists what it deletes; see
``_scan_checkpoints`` for its timing); for ``keras`` / ``files`` every backed-up file
still present, and a deleted one only while no newer checkpoint is present — a trainer's
own rotation deletes old checkpoints after writing a new one, so that is not damage,
while a deleted (or damaged) latest checkpoint is restored.  A stack without a
checkpoint directory gets no backup agent and no checkpoint scanning; one without a
trainer gets no trainer restart.

New content becomes a recovery point only if it matches what its producer wrote
(:mod:`chaoskit.dr.protect.manifest`): damage that lands between the producer's write and the
first backup (a stale model copied over a version just exported) would otherwise become
the recovery point and never be seen.  A mismatch is a detection at first sight
(``detected``, signal ``integrity``, ``rule: producer-manifest``, the manifest named) and
is never backed up.  There is no recovery point of that version or checkpoint to
restore, so the repair is to *quarantine* it: the version directory (or checkpoint
files) is moved, never deleted, out of the watched directory
(:mod:`chaoskit.dr.protect.quarantine`),
so serving falls back to the previous version (and a tf trainer's state file is put
back to the newest recovery point), and ``model.quarantined`` / ``checkpoint.quarantined``
journal what moved where.  Content without a manifest (a user's trainer) is trusted at
first sight; every ``backup.recovery_point`` says which ``rule`` applied.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Self, TypeVar

from chaoskit.atomic import atomic_move, atomic_write_bytes, fsync_dir
from chaoskit.background import BackgroundLoop
from chaoskit.dr.online.recovery import confirm_steady_state
from chaoskit.dr.protect.checkpoints import CheckpointFormat, TFFormat, from_snapshot
from chaoskit.dr.protect.first_sight import REFUSED, Damage, FirstSight, rule_fields
from chaoskit.dr.protect.inotify import Watcher
from chaoskit.dr.protect.manifest import Verdict
from chaoskit.dr.protect.offsite import OffsiteRecovery, RepositoryWatch, Site
from chaoskit.dr.protect.quarantine import move_aside, quarantine_dir
from chaoskit.dr.protect.repository.agent import BackupAgent
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.snapshots import Snapshot
from chaoskit.dr.protect.repository.source import STATE_FILE, parse_checkpoint_state
from chaoskit.dr.protect.repository.verify import verify_snapshot
from chaoskit.errors import ChaosKitError, StackError
from chaoskit.journal import Journal, JournalTail

T = TypeVar("T")
HOUSEKEEPING_SETTLE = 0.1
"""Seconds a checkpoint problem must persist to count (see ``_scan_checkpoints``)."""
SWEEP_SETTLE = 1.0
"""Seconds an older checkpoint gone entirely must stay listed to count: that is what
CheckpointManager's own sweep looks like until it rewrites the state file, which a
loaded machine can delay well past ``HOUSEKEEPING_SETTLE``."""
CHECKPOINT_TAG = "checkpoint"
CHECKPOINT_STORE = "checkpoint-store"
"""The service name a full checkpoint volume is detected on."""
FREE_FLOOR = 1 << 20
"""Free bytes below which the checkpoint volume counts as full (or a tenth of a smaller
volume): a checkpoint no longer fits, or soon will not."""
WATCHED_VERSIONS = 3
"""Model versions guarded: the newest ones (what serving loads and a rollback needs);
older ones stay in the repository."""


class StoreGuard(FirstSight, OffsiteRecovery, BackgroundLoop):
    """Runs beside the stack for the whole session (a backup agent plus a scanner)."""

    thread_name = "chaoskit-store-guard"
    stop_timeout = 60.0

    def __init__(
        self,
        repo: Repository,
        stack: Any,
        journal: Journal,
        *,
        scan_interval: float = 0.25,
        watched_versions: int = WATCHED_VERSIONS,
        confirm_timeout: float = 60.0,
        repair: bool = True,
        writer: Repository | None = None,
        offsite: Site | None = None,
        repository_lock: threading.Lock | None = None,
    ) -> None:
        """*repo* verifies and restores (a key that reads); *writer* (default *repo*),
        a write-only key, makes every backup; *offsite*, the DR site, is where a
        destroyed local repository is fetched back from.  *repair* False (``recovery =
        "observe"``): detect and journal, never restore or restart; each problem is
        journaled once, until it is gone."""
        super().__init__()
        self.repair = repair
        self._observed: set[str] = set()
        self.repo = repo
        self.writer = writer or repo
        self.stack = stack
        self.journal = journal
        self.scan_interval = scan_interval
        self.watched_versions = watched_versions
        self.confirm_timeout = confirm_timeout
        self.model_base = Path(stack.model_base_path)
        self.trainer: str | None = stack.trainer
        self.format: CheckpointFormat = stack.checkpoint_format
        self.goldens = stack.goldens
        self.versions: dict[int, Snapshot] = {}
        self.refused_versions: dict[int, Verdict] = {}
        """New versions that did not match their producer manifest (never backed up)."""
        self._expects_manifests = False
        self.checkpoint_dir: Path | None = None
        self.agent: BackupAgent | None = None
        if stack.checkpoint_dir is not None:
            self.checkpoint_dir = Path(stack.checkpoint_dir)
            self.agent = BackupAgent(
                self.writer, self.checkpoint_dir, interval=scan_interval,
                tags=(CHECKPOINT_TAG,), model_name=stack.model_name, journal=journal,
                checkpoint_format=self.format, forget_with=repo,
            )  # fmt: skip
        self._watcher = Watcher()
        self.offsite = offsite
        self.repository_lock = repository_lock  # the replicator's (see guard_repository)
        self.repo_watch = RepositoryWatch(repo.root)
        self._full_since: float | None = None
        """Since when the checkpoint volume is full (wall time), None while it is not."""
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> Self:
        """Back up what exists now, then watch."""
        self._backup_new_versions()
        if self.agent is not None:
            self.agent.poll_once()
        return super().start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._serve_requests()
            try:
                if self.repair:
                    self._guard_repository()
                self._backup_new_versions()
                self._watch_space()
                status = None if self.trainer is None else self.stack.backend.status(self.trainer)
                if not self.repair:
                    self._observe(status)
                elif status not in (None, "running"):
                    self._recover_trainer(str(status))
                else:
                    if self.agent is not None:
                        self.agent.poll_once()
                    for damage in self.scan():
                        self._repair(damage)
            except (ChaosKitError, OSError) as e:
                self.journal.record("store_guard.error", error=str(e))
            self._watch_store()
            if not self._watcher.wait(self.scan_interval):  # a change wakes the scan at once
                self._stop.wait(0 if self._watcher.available else self.scan_interval)
        self._watcher.close()

    def _watch_store(self) -> None:
        """Watch the model base path, the watched versions and the checkpoint directory."""
        self._watcher.forget_missing()
        self._watcher.watch(self.model_base)
        if self.checkpoint_dir is not None:
            self._watcher.watch(self.checkpoint_dir)
        for version in sorted(self.versions)[-self.watched_versions :]:
            version_dir = self.model_base / str(version)
            for directory in (version_dir, version_dir / "variables", version_dir / "assets.extra"):
                self._watcher.watch(directory)

    # -- free space ----------------------------------------------------------------------
    def _watch_space(self) -> None:
        """A checkpoint volume about to be full is a detection (``disk-full``): the
        trainer's next saves fail and what a crash would lose grows.  Nothing here can
        free it; it is back once space is free again and a checkpoint written after the
        detection has been backed up (saves resumed)."""
        if self.checkpoint_dir is None:
            return
        try:
            fs = os.statvfs(self.checkpoint_dir)
        except OSError:
            return
        free, size = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
        floor = min(FREE_FLOOR, size // 10)
        if self._full_since is None:
            if free < floor:
                self._full_since = time.time()
                self.journal.record("detected", service=CHECKPOINT_STORE, signal="disk-full",
                                    free_bytes=free, volume_bytes=size,
                                    reason=f"{free} bytes free on {self.checkpoint_dir}'s file "
                                    f"system (of {size}; the floor is {floor})")  # fmt: skip
            return
        newest = max((s.time for s in self._snapshots), default=0.0)
        if free >= floor and newest > self._full_since:
            self._full_since = None
            self.journal.record("steady_state.ok", phase="recovery", service=CHECKPOINT_STORE,
                                free_bytes=free, reason="checkpoints are saved again")  # fmt: skip

    # -- work asked for by other loops -------------------------------------------------
    def call(self, work: Callable[[], T], *, timeout: float = 120.0) -> T:
        """Run *work* on the guard's own thread between two scans and return its result:
        what moves or restores guarded files must not race a scan that would take it
        for damage.  StackError when the guard is not running or *timeout* passes."""
        if not self.running:
            raise StackError("the store guard is not running: nothing can change the store")
        done: Future[T] = Future()
        self._requests.put((work, done))
        deadline = time.monotonic() + timeout
        while not done.done():
            if not self.running:
                raise StackError("the store guard stopped before it did what was asked")
            if time.monotonic() > deadline:
                raise StackError(f"the store guard did not do what was asked in {timeout:g}s")
            time.sleep(0.02)
        return done.result()

    def _serve_requests(self) -> None:
        while True:
            try:
                work, done = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                done.set_result(work())
            except BaseException as e:
                done.set_exception(e)

    def set_version_aside(self, version: int, reason: str) -> None:
        """Move model *version* out of the store, for good (a version judged too bad to
        serve): it is no longer guarded, so nothing restores it.  Call through :meth:`call`."""
        to = quarantine_dir(self.model_base)
        moved = move_aside(self.model_base, [str(version)], to)
        self.versions.pop(version, None)
        self.refused_versions.pop(version, None)
        self.goldens.forget(version)
        self.journal.record("model.quarantined", version=version, files=moved, to=str(to),
                            reason=reason)  # fmt: skip

    def rewind_trainer(self, step: int, reason: str) -> bool:
        """Restart the trainer from its newest recovery point at or before *step* (the
        checkpoint a good model version came from), setting every newer checkpoint aside:
        what it learned since is what made the bad versions.  True once it resumed there
        and the restored checkpoint verifies.  Call through :meth:`call`."""
        if self.trainer is None or self.checkpoint_dir is None:
            raise StackError("rewinding training needs a trainer and its checkpoints")
        assert self.agent is not None
        candidates = [s for s in self._newest_first()
                      if s.checkpoint_step is not None and s.checkpoint_step <= step]  # fmt: skip
        self.journal.record("recovery.started", action="rewind", service=self.trainer,
                            step=step, reason=reason)  # fmt: skip
        tail = JournalTail(self.journal.path)
        self.stack.backend.stop(self.trainer)
        restored = None
        for candidate in candidates:
            floor = candidate.checkpoint_step or 0
            newer = [c for c in self.format.checkpoints(self.checkpoint_dir)
                     if c.step is not None and c.step > floor]  # fmt: skip
            if newer:
                to = quarantine_dir(self.checkpoint_dir)
                moved = move_aside(self.checkpoint_dir, [r for c in newer for r in c.files], to)
                self.journal.record("checkpoint.quarantined", files=moved, to=str(to),
                                    reason=f"trained after step {step}: {reason}")  # fmt: skip
            self.agent.forget_newer_than(floor)
            restored, _ = self._restore_files([candidate], with_state=True)
            if restored is not None:
                self._restore_listed()
                break
        since = time.time()
        self.stack.backend.restart(self.trainer)
        if restored is None:
            self._finish(self.checkpoint_dir, None, False, action="rewind", service=self.trainer)
            return False
        self._set_aside_newer_than(restored)
        resumed = self._trainer_resumed_at(tail, restored.checkpoint_step, since)
        intact = resumed and not self._verify_checkpoint(restored)
        self._finish(self.checkpoint_dir, restored, intact, action="rewind",
                     service=self.trainer, kind="checkpoint-files")  # fmt: skip
        return intact

    def _restore_listed(self) -> None:
        """Put back the older checkpoints a restored state file lists that the trainer's
        rotation had deleted, so they are not taken for damage."""
        assert self.checkpoint_dir is not None
        listed = {c.name for c in self.format.checkpoints(self.checkpoint_dir)}
        gone = [s for s in self._snapshots if s.summary.get("checkpoint") in listed]
        gone = [s for s in gone if self._verify_checkpoint(s)]
        if gone:
            self._restore_files(gone)

    # -- scanning ------------------------------------------------------------------------
    def scan(self) -> list[Damage]:
        """Compare the live store with its manifests; one Damage per damaged unit."""
        found = self._refused()
        for version in sorted(self.versions)[-self.watched_versions :]:
            path = self.model_base / str(version)
            problems = self._verify(path, self.versions[version])
            if problems:
                found.append(Damage("model-version", path, problems, [self.versions[version]]))
        damage = self._scan_checkpoints()
        if damage is not None:
            found.append(damage)
        return found

    def _verify(self, path: Path, snap: Snapshot, *, ignore: tuple[str, ...] = ()) -> list[str]:
        if not path.is_dir():
            return [f"missing  {path}"]
        report = verify_snapshot(snap, path)
        lines = [f"missing  {p}" for p in report.missing if p not in ignore]
        lines += [f"changed  {p} ({why})" for p, why in report.changed.items() if p not in ignore]
        return lines

    @property
    def _snapshots(self) -> list[Snapshot]:
        return [] if self.agent is None else self.agent.snapshots

    @property
    def _has_state(self) -> bool:
        return bool(self.format.state_files)

    def _scan_checkpoints(self) -> Damage | None:
        """Damage to any guarded checkpoint (the format says which), or to the state file."""
        if self.checkpoint_dir is None:
            return None
        if self._has_state and self._checkpoint_state() is None:
            if not self._snapshots:
                return None
            return Damage("checkpoint-state", self.checkpoint_dir / STATE_FILE,
                          [f"unreadable  {STATE_FILE}"], self._newest_first())  # fmt: skip
        problems, damaged = self._checkpoint_problems()
        # CheckpointManager lists the checkpoint it is deleting until it has deleted it
        # and rewritten the state file (a keep-last-N script may delete before the new
        # file is visible): only what is still guarded and still wrong a moment later is
        # damage (longer for what looks like CheckpointManager's sweep)
        settle = SWEEP_SETTLE if problems and self._looks_swept(damaged) else HOUSEKEEPING_SETTLE
        deadline = time.monotonic() + settle
        while problems and time.monotonic() < deadline and not self._stop.is_set():
            self._stop.wait(min(0.05, settle))
            problems, damaged = self._checkpoint_problems()
        if not problems:
            return None
        return Damage("checkpoint-files", self.checkpoint_dir, problems, damaged)

    def _looks_swept(self, damaged: list[Snapshot]) -> bool:
        """tf only: every damaged checkpoint is an older one whose files are all gone."""
        if not isinstance(self.format, TFFormat) or self.checkpoint_dir is None:
            return False
        latest = self.format.latest(self.checkpoint_dir)
        return all(
            snap.summary.get("checkpoint") != (latest.name if latest else None)
            and not any(
                (self.checkpoint_dir / path).exists()
                for path in from_snapshot(snap, self.format).files
            )
            for snap in damaged
        )

    def _guarded(self) -> list[Snapshot]:
        """The recovery points of the checkpoints the directory must still hold as saved."""
        assert self.checkpoint_dir is not None
        backed = {str(snap.summary.get("checkpoint")): snap for snap in self._snapshots}
        held = [from_snapshot(snap, self.format) for snap in backed.values()]
        return [backed[c.name] for c in self.format.guarded(self.checkpoint_dir, held)]

    def _checkpoint_problems(self) -> tuple[list[str], list[Snapshot]]:
        """(problems, their recovery points) of the guarded checkpoints."""
        problems: list[str] = []
        damaged: list[Snapshot] = []
        for snap in self._guarded():
            found = self._verify_checkpoint(snap)
            if found:
                problems += found
                damaged.append(snap)
        return problems, damaged

    def _verify_checkpoint(self, snap: Snapshot) -> list[str]:
        """What differs between the live checkpoint and its recovery point (its own files)."""
        assert self.checkpoint_dir is not None
        return self._verify(self.checkpoint_dir, snap, ignore=self.format.state_files)

    def _checkpoint_state(self) -> Any:
        assert self.checkpoint_dir is not None
        try:
            return parse_checkpoint_state((self.checkpoint_dir / STATE_FILE).read_text())
        except (OSError, UnicodeDecodeError):
            return None

    def _newest_first(self) -> list[Snapshot]:
        return sorted(
            self._snapshots, key=lambda s: from_snapshot(s, self.format).order, reverse=True
        )

    def _observe(self, trainer_status: str | None) -> None:
        """Observe mode: journal each new problem once (a platform is to fix it)."""
        if self.agent is not None and trainer_status in (None, "running"):
            self.agent.poll_once()
        now: dict[str, dict[str, Any]] = {}
        if trainer_status not in (None, "running"):
            reason = f"trainer is {trainer_status}"
            now[f"trainer:{trainer_status}"] = {
                "service": self.trainer, "signal": "process", "reason": reason,
            }  # fmt: skip
        for damage in self.scan():
            now[f"{damage.kind}:{damage.path}"] = {
                "service": "model-store", "signal": "integrity", "target": str(damage.path),
                "problems": damage.problems[:20], **rule_fields(damage),
            }  # fmt: skip
        for key in now.keys() - self._observed:
            self.journal.record("detected", **now[key], observe=True)
        self._observed = set(now)

    # -- repair ----------------------------------------------------------------------------
    def _repair(self, damage: Damage) -> None:
        """Restore what *damage* names from its recovery point, then confirm."""
        self.journal.record("detected", service="model-store", signal="integrity",
                            target=str(damage.path), problems=damage.problems[:20],
                            **rule_fields(damage))  # fmt: skip
        if damage.kind in REFUSED:
            self.journal.record("recovery.started", action="quarantine", target=str(damage.path))
            self._quarantine(damage)
            return
        self.journal.record("recovery.started", action="restore", target=str(damage.path))
        restored, intact = self.restore(damage)
        self._finish(damage.path, restored, intact, kind=damage.kind)

    def restore(self, damage: Damage) -> tuple[Snapshot | None, bool]:
        """Put back what *damage* names: (the recovery point used, whether it verifies)."""
        if damage.kind == "model-version":
            restored = self._restore_first(damage.candidates, damage.path)
            if restored is None and not self.repo_watch.problems():
                self._forget_unrestorable(damage.candidates)
            return restored, restored is not None and not self._verify(damage.path, restored)
        if damage.kind == "checkpoint-files":
            return self._restore_files(damage.candidates)
        # the state file: rewrite it as the newest recovery point still present had it;
        # none present intact (ransomware hit them too): the newest comes back with it
        restored, intact = self._restore_state_file(damage.candidates)
        if restored is None and damage.candidates:
            return self._restore_files(damage.candidates[:1], with_state=True)
        return restored, intact

    def _recover_trainer(self, status: str) -> None:
        """The trainer is down: restart it, from the newest checkpoint that verifies."""
        assert self.trainer is not None
        self.journal.record("detected", service=self.trainer, signal="process",
                            reason=f"trainer is {status}")  # fmt: skip
        tail = JournalTail(self.journal.path)
        latest = self._verified_latest_checkpoint()
        restored = None
        if latest is None and self._snapshots:
            self.journal.record(
                "recovery.started", action="restore", target=str(self.checkpoint_dir)
            )
            for candidate in self._newest_first():
                restored, _ = self._restore_files([candidate], with_state=True)
                if restored is not None:
                    break
            if restored is None:
                self._finish(self.checkpoint_dir or self.model_base, None, False,
                             service=self.trainer)  # fmt: skip
                return
            self._set_aside_newer_than(restored)
        else:
            self.journal.record("recovery.started", action="restart", service=self.trainer)
        since = time.time()
        self.stack.backend.restart(self.trainer)
        expected = (
            restored.checkpoint_step if restored else (latest.checkpoint_step if latest else None)
        )
        resumed = self._trainer_resumed_at(tail, expected, since)
        if restored is not None and self.checkpoint_dir is not None:
            intact = resumed and not self._verify_checkpoint(restored)
            self._finish(self.checkpoint_dir, restored, intact, service=self.trainer,
                         kind="checkpoint-files")  # fmt: skip
        else:
            self.journal.record("recovered", action="restart", service=self.trainer,
                                resumed=resumed)  # fmt: skip
            self._confirm()

    def _set_aside_newer_than(self, restored: Snapshot) -> None:
        """Move live checkpoints newer than *restored* (none of them verifies: damaged, or
        written after the last backup) into a quarantine directory beside the checkpoints,
        so a trainer that resumes from its newest file resumes from *restored*.  Nothing
        is deleted: the files stay there for a post-mortem.  (tf: the restored state file
        already names the checkpoint to resume from.)"""
        assert self.checkpoint_dir is not None
        if self.format.kind == "tf":
            return
        floor = from_snapshot(restored, self.format).order
        newer = [c for c in self.format.checkpoints(self.checkpoint_dir) if c.order > floor]
        if not newer:
            return
        quarantine = quarantine_dir(self.checkpoint_dir)
        moved = move_aside(self.checkpoint_dir, [r for c in newer for r in c.files], quarantine)
        self.journal.record("checkpoint.quarantined", files=moved, to=str(quarantine),
                            reason=f"newer than the restored {restored.summary.get('checkpoint')}"
                            " and not verified")  # fmt: skip

    def _verified_latest_checkpoint(self) -> Snapshot | None:
        """The recovery point of the latest checkpoint, if the live files match it.

        None when the live latest is damaged, is older than the newest recovery point
        (the latest was deleted), or was written after the last backup (nothing proves
        it intact)."""
        if self.checkpoint_dir is None:
            return None
        live = self.format.latest(self.checkpoint_dir)
        newest = self._newest_first()
        if live is None or (newest and from_snapshot(newest[0], self.format).order > live.order):
            return None
        for snap in self._snapshots:
            if snap.summary.get("checkpoint") == live.name:
                return None if self._verify_checkpoint(snap) else snap
        return None

    def _restore_first(self, candidates: list[Snapshot], target: Path) -> Snapshot | None:
        """Restore the first candidate that restores completely (authenticated) as *target*."""
        for snap in candidates:
            try:
                result = self.repo.restore(snap.id, target)
            except ChaosKitError as e:
                self.journal.record("restore.failed", snapshot=snap.id, error=str(e))
                continue
            if not result.failures:
                return snap
            self.journal.record("restore.failed", snapshot=snap.id,
                                error="; ".join(result.failures.values())[:500])  # fmt: skip
        return None

    def _restore_files(
        self, damaged: list[Snapshot], *, with_state: bool = False
    ) -> tuple[Snapshot | None, bool]:
        """Put the files of these checkpoints back one by one, keeping the other checkpoints.

        With ``with_state`` the format's state file is restored too, so the trainer
        resumes there.
        """
        assert self.checkpoint_dir is not None
        staging = self.checkpoint_dir.with_name(f".{self.checkpoint_dir.name}-repair")
        restored = None
        for snap in damaged:
            shutil.rmtree(staging, ignore_errors=True)
            if self._restore_first([snap], staging) is None:
                return None, False
            wanted = self.format.restore_files(from_snapshot(snap, self.format),
                                               with_state=with_state)  # fmt: skip
            for rel in wanted:
                if (staging / rel).is_file():
                    (self.checkpoint_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    atomic_move(staging / rel, self.checkpoint_dir / rel)
            fsync_dir(self.checkpoint_dir)
            restored = snap
        shutil.rmtree(staging, ignore_errors=True)
        # one the trainer rotated out meanwhile (it saved while we restored) is gone by
        # design: a failure counts if that checkpoint is still guarded once seen failing
        # (CheckpointManager rewrites its state file before it deletes the old files)
        failing = [s for s in damaged if self._verify_checkpoint(s)]
        guarded = {s.id for s in self._guarded()} | {s.id for s in damaged[-1:]}
        intact = not any(s.id in guarded for s in failing)
        return restored, intact

    def _restore_state_file(self, candidates: list[Snapshot]) -> tuple[Snapshot | None, bool]:
        assert self.checkpoint_dir is not None
        for snap in candidates:
            if self._verify_checkpoint(snap):
                continue  # that checkpoint's files are not (all) here any more
            staging = self.checkpoint_dir.with_name(f".{self.checkpoint_dir.name}-state")
            shutil.rmtree(staging, ignore_errors=True)
            if self._restore_first([snap], staging) is None:
                continue
            atomic_write_bytes(
                self.checkpoint_dir / STATE_FILE, (staging / STATE_FILE).read_bytes()
            )
            shutil.rmtree(staging, ignore_errors=True)
            return snap, self._checkpoint_state() is not None
        return None, False

    def _finish(
        self, target: Path, restored: Snapshot | None, intact: bool, *,
        action: str = "restore", service: str = "model-store", **details: Any,
    ) -> None:  # fmt: skip
        """Journal the outcome: *restored* is the recovery point now live (for a
        quarantine: what serves, or the checkpoint a trainer resumes from, instead);
        ``recovered`` names the model store or the trainer."""
        if restored is None:
            self.journal.record("recovery.failed", action=action, target=str(target),
                                reason="no recovery point restored and verified")  # fmt: skip
            return
        self.journal.record(
            "restore.done",
            target=str(target),
            snapshot=restored.id,
            recovery_point_created_wall=restored.time,
            recovery_point_step=restored.checkpoint_step,
            integrity=intact,
            action=action,
            **details,
        )
        self.journal.record("recovered", action=action, target=str(target), service=service)
        self._confirm()

    def _confirm(self) -> None:
        """Steady state: serving answers its canary correctly *and* the trainer runs."""
        if self.trainer is not None and self.stack.backend.status(self.trainer) != "running":
            self.journal.record("steady_state.violated", phase="recovery",
                                reason="the trainer is not running")  # fmt: skip
            return
        confirm_steady_state(
            self.stack.client(timeout=2.0), self.goldens, self.journal, timeout=self.confirm_timeout
        )

    def _trainer_resumed_at(
        self, tail: JournalTail, step: int | None, since: float, timeout: float = 60.0
    ) -> bool:
        """The restarted trainer resumed from *step*.  chaoskit's trainer journals
        ``trainer.started`` with the step it resumed at; any other trainer shows it by
        writing, after the restart (wall time *since*), a checkpoint later than *step*
        (one started over from scratch writes lower steps).  Without a checkpoint
        directory, running is all that can be seen."""
        assert self.trainer is not None
        if self.checkpoint_dir is None:
            return self.stack.backend.status(self.trainer) == "running"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            for event in tail.new_events():
                if event["event"] == "trainer.started":
                    return step is None or event.get("step") == step
            latest = self.format.latest(self.checkpoint_dir)
            if (
                latest is not None
                and latest.wall_created >= since
                and (step is None or (latest.step is not None and latest.step > step))
            ):
                return True
            time.sleep(0.05)
        return False

