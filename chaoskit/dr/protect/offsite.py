"""Recovery from the off-site copy: a destroyed local repository is fetched back from the DR site.

A repository's files never change once written (new ones appear by rename; a key's new
password is a new file), so :class:`RepositoryWatch` fingerprints them (inode, size,
mtime) and names any that changed, and a config, key or recovery point that is gone:
what ransomware on the primary does to it, or a disk that lost it.
:func:`fetch_repository` then brings every file the DR site holds into a staging
directory beside the repository, opens it (every sealed file it reads authenticates),
moves the damaged directory aside for the post-mortem and renames the copy into its
place.  Recovery points made after the last replication are lost: that is the DR
site's RPO, which the report shows.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from chaoskit.atomic import atomic_write_bytes, fsync_dir
from chaoskit.dr.protect.repository.agent import BackupAgent
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.snapshots import Snapshot, snapshot_ids
from chaoskit.dr.protect.site import file_mode, repository_files
from chaoskit.errors import ChaosKitError, RepositoryError

Fingerprint = tuple[int, int, int]
"""(inode, size, mtime in ns) of a file."""
SERVICE = "backup-repository"
"""The service a damaged local repository is journaled as."""
ACTION = "fetch-from-dr-site"
_MUST_STAY = ("config", "keys/")
"""Files whose loss is damage whatever else happens (a prune removes packs, index files
and forgotten snapshots; nothing removes these)."""


class Site(Protocol):
    def list(self) -> set[str]: ...
    def get(self, path: str) -> bytes: ...


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def fingerprints(root: Path) -> dict[str, Fingerprint]:
    found = {}
    for rel in repository_files(root):
        fingerprint = _fingerprint(root / rel)
        if fingerprint is not None:
            found[rel] = fingerprint
    return found


class RepositoryWatch:
    """What changed in a repository since it was last looked at, file by file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: dict[str, Fingerprint] = {}
        self.accept()

    def accept(self, root: Path | None = None) -> None:
        """Take the repository as it is now as the baseline (or as it is in *root*, a
        copy about to be renamed into its place: renaming keeps every file's inode
        and mtime, so whatever touches the copy after this is caught)."""
        self.seen = fingerprints(root or self.root)

    def problems(self, recovery_points: Iterable[str] = ()) -> list[str]:
        """Changed files, and lost config, keys or *recovery_points* (snapshot ids); new
        files join the baseline, other losses (a prune's) leave it."""
        found = []
        if not (self.root / "config").is_file():
            found.append(f"missing  {self.root / 'config'}")
        for rel, before in list(self.seen.items()):
            now = _fingerprint(self.root / rel)
            if now is None:
                del self.seen[rel]
                if rel.startswith(_MUST_STAY):
                    found.append(f"missing  {self.root / rel}")
            elif now != before:
                found.append(f"changed  {self.root / rel} (rewritten: repository files never are)")
        for snap_id in recovery_points:
            if not (self.root / "snapshots" / snap_id).is_file():
                found.append(f"missing  {self.root / 'snapshots' / snap_id} (a recovery point)")
        for rel in repository_files(self.root):
            if rel not in self.seen:
                fingerprint = _fingerprint(self.root / rel)
                if fingerprint is not None:
                    self.seen[rel] = fingerprint
        return sorted(set(found))


def fetch_repository(
    site: Site, root: Path, watch: RepositoryWatch | None = None
) -> tuple[int, Path | None]:
    """Replace the repository at *root* with the DR site's copy; returns (files fetched,
    where the damaged one was moved, None if there was none).  The copy is staged and
    fsynced beside *root* first, so a failure midway leaves *root* as it was; *watch*
    takes the staged copy as its baseline just before it goes into place (an attacker
    still at work is caught at its next touch)."""
    staging = root.with_name(f".{root.name}-from-dr-site")
    shutil.rmtree(staging, ignore_errors=True)
    paths = sorted(site.list())
    if "config" not in paths:
        raise RepositoryError("the DR site holds no repository (no config) to recover from")
    try:
        for rel in paths:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, site.get(rel), mode=file_mode(rel))
        for directory in {(staging / rel).parent for rel in paths}:
            fsync_dir(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if watch is not None:
        watch.accept(staging)
    aside = None
    if root.exists():
        aside = root.with_name(f".{root.name}-damaged-{time.time_ns()}")
        os.rename(root, aside)
    os.rename(staging, root)
    fsync_dir(root.parent)
    return len(paths), aside


class Recorder(Protocol):
    def record(self, event: str, **fields: Any) -> Any: ...


@dataclass(frozen=True)
class Recovery:
    """How a damaged repository came back: *recovered* from the DR site or not, and
    the snapshots (short ids) its copy holds damaged (the check names them: a file the
    attacker rewrote before the replicator shipped it)."""

    recovered: bool
    damaged: frozenset[str] = frozenset()


def guard_repository(
    repo: Repository, watch: RepositoryWatch, site: Site | None, journal: Recorder,
    recovery_points: Iterable[str], lock: threading.Lock | None = None,
) -> Recovery | None:  # fmt: skip
    """Detect damage to *repo* and fetch it back from *site*: None when there was none
    (journaled: ``detected``, then ``recovery.started``/``recovered`` or
    ``recovery.failed``, service ``backup-repository``).  Each damage is reported once:
    after a failure, the damaged repository is the baseline.  *lock* is the
    replicator's: a pass that shipped a file of the old repository after the copy was
    listed would leave the DR site one entry ahead of the local audit log, and the next
    local entry would take that place with other content."""
    problems = watch.problems(recovery_points)
    if not problems:
        return None
    target = str(repo.root)
    journal.record("detected", service=SERVICE, signal="integrity", target=target,
                   problems=problems[:20])  # fmt: skip
    if site is None:
        watch.accept()
        journal.record("recovery.failed", action=ACTION, service=SERVICE, target=target,
                       reason="no DR site to fetch the repository from")  # fmt: skip
        return Recovery(False)
    journal.record("recovery.started", action=ACTION, service=SERVICE, target=target)
    try:
        with lock or threading.Lock():  # the replicator's: it must not ship meanwhile
            fetched, aside = fetch_repository(site, repo.root, watch)
            report = repo.check()
    except (ChaosKitError, OSError) as e:
        watch.accept()
        journal.record("recovery.failed", action=ACTION, service=SERVICE, target=target,
                       reason=f"fetching the repository from the DR site failed: {e}")  # fmt: skip
        return Recovery(False)
    journal.record(
        "recovered", action=ACTION, service=SERVICE, target=target, files=fetched,
        damaged_moved_to=None if aside is None else str(aside), check_ok=report.ok,
        check_problems=[str(p) for p in report.problems][:20],
    )  # fmt: skip
    return Recovery(True, frozenset(report.affected_snapshots))


class OffsiteRecovery:
    """The store guard's recovery of its repository from the DR site (a mixin)."""

    repo: Repository
    repo_watch: RepositoryWatch
    offsite: Site | None
    repository_lock: threading.Lock | None
    journal: Any
    versions: dict[int, Snapshot]
    agent: BackupAgent | None

    @property
    def _snapshots(self) -> list[Snapshot]:
        raise NotImplementedError

    def _confirm(self) -> None:
        raise NotImplementedError

    def _guard_repository(self) -> None:
        """A damaged local repository comes back from the DR site first (every restore
        needs it).  The recovery points it lost, or holds damaged, are forgotten here
        too, so a version or checkpoint that only they held is vetted again as new (and
        quarantined when damaged) instead of being restored from nothing, again and
        again."""
        held = [*self.versions.values(), *self._snapshots]
        outcome = guard_repository(self.repo, self.repo_watch, self.offsite, self.journal,
                                   [s.id for s in held], self.repository_lock)  # fmt: skip
        if outcome is None or not outcome.recovered:
            return
        present = set(snapshot_ids(self.repo.snap_dir))
        kept = {i for i in present if i[:8] not in outcome.damaged}
        self.versions = {v: s for v, s in self.versions.items() if s.id in kept}
        if self.agent is not None:
            self.agent.forget_lost(kept)
        for snap in (s for s in held if s.id not in kept):
            why = "damaged at the DR site" if snap.id in present else "not yet at the DR site"
            self.journal.record("backup.lost", snapshot=snap.id, step=snap.checkpoint_step,
                                wall_created=snap.time, tags=list(snap.tags),
                                reason=f"{why} when the repository was destroyed")  # fmt: skip
        self._confirm()

    def _forget_unrestorable(self, candidates: list[Snapshot]) -> None:
        """Recovery points that failed to restore from an intact repository are damaged
        themselves: forgotten (``backup.lost``), so their version is vetted again as new
        content (and quarantined when damaged) rather than restored in vain every scan."""
        for snap in candidates:
            for version, held in list(self.versions.items()):
                if held.id == snap.id:
                    del self.versions[version]
                    self.journal.record("backup.lost", snapshot=snap.id, step=version,
                                        wall_created=snap.time, tags=list(snap.tags),
                                        reason="it failed to restore")  # fmt: skip
