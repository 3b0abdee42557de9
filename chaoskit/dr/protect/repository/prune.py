"""Forget snapshots by policy, and prune: remove data no snapshot needs.

Prune runs under the exclusive lock and in an order that is safe to kill at any point:
(1) copy the still-used chunks of mostly-garbage packs, and of packs whose header is
damaged, into new packs (fsynced, each chunk authenticated on the way),
(2) write one new index of everything kept, (3) delete the old index files, (4) delete
the packs no index names any more, and leftovers of interrupted runs.  Until (3) the old
index still names the old packs, which are deleted only in (4).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from chaoskit.atomic import fsync_dir
from chaoskit.dr.protect.repository.index import list_index_files, write_index_file
from chaoskit.dr.protect.repository.packs import (
    BlobLocation,
    PackWriter,
    list_packs,
    pack_path,
    read_header,
)
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.restore import PackReader
from chaoskit.dr.protect.repository.retention import RetentionPolicy, apply_policy
from chaoskit.dr.protect.repository.snapshots import Snapshot, remove_snapshot
from chaoskit.errors import ConfigError, IntegrityError

REWRITE_GARBAGE_SHARE = 0.5


@dataclass
class PruneStats:
    packs_deleted: int = 0
    packs_rewritten: int = 0
    orphan_packs_deleted: int = 0
    chunks_kept: int = 0
    chunks_removed: int = 0
    bytes_freed: int = 0


@dataclass
class ForgetResult:
    kept: list[tuple[Snapshot, list[str]]] = field(default_factory=list)
    removed: list[Snapshot] = field(default_factory=list)
    prune: PruneStats | None = None


def run_forget(
    repo: Repository,
    policy: RetentionPolicy,
    *,
    ids: tuple[str, ...] = (),
    prune: bool = False,
    dry_run: bool = False,
) -> ForgetResult:
    """Remove the snapshots *policy* (per host and source) does not keep, or those in *ids*."""
    if policy.empty and not ids:
        raise ConfigError("forget needs a policy (--keep-last, --keep-within, ...) or snapshot ids")
    with repo.lock(exclusive=prune):
        result = ForgetResult()
        snaps = repo.snapshots()
        if ids:
            # an exact id may name a damaged snapshot, which only forget can remove
            doomed = {i if (repo.snap_dir / i).exists() else repo.snapshot(i).id for i in ids}
            result.removed = [s for s in snaps if s.id in doomed]
            result.kept = [(s, ["not named"]) for s in snaps if s.id not in doomed]
        else:
            groups: dict[tuple[str, str], list[Snapshot]] = defaultdict(list)
            for s in snaps:
                groups[(s.hostname, s.source)].append(s)
            for group in groups.values():
                kept, removed = apply_policy(group, policy)
                result.kept += kept
                result.removed += removed
            doomed = {s.id for s in result.removed}
        if not dry_run:
            for snap_id in sorted(doomed):
                remove_snapshot(repo.snap_dir, snap_id)
            if prune:
                result.prune = prune_locked(repo)
        return result


def run_prune(repo: Repository) -> PruneStats:
    with repo.lock(exclusive=True):
        return prune_locked(repo)


def _remove_leftovers(repo: Repository) -> None:
    """Temporary files of killed writers (only safe under the exclusive lock)."""
    dirs = [repo.index_dir, repo.snap_dir, repo.keys_dir, repo.root]
    if repo.data_dir.is_dir():
        dirs += [d for d in repo.data_dir.iterdir() if d.is_dir()]
    for directory in dirs:
        for path in directory.glob(".*tmp*"):
            with contextlib.suppress(OSError):
                path.unlink()


def _header_ok(repo: Repository, pack: str, path: Path | None) -> bool:
    if path is None:
        return False
    try:
        read_header(path, pack, repo.keyring)
    except (OSError, IntegrityError):
        return False
    return True


def prune_locked(repo: Repository) -> PruneStats:
    stats = PruneStats()
    snaps, damaged = repo.load_snapshots()
    if damaged:
        raise IntegrityError(
            f"prune refused: snapshot(s) {', '.join(i[:8] for i in damaged)} are unreadable, so "
            "the chunks they need are unknown; run check, then forget them by id"
        )
    index = repo.load_index()
    used: set[bytes] = set()
    for snap in snaps:
        used |= snap.chunk_ids()
    missing = [c for c in used if c not in index]
    if missing:
        raise IntegrityError(
            f"prune refused: {len(missing)} chunk(s) used by snapshots are not "
            f"in the index (e.g. {missing[0].hex()[:16]}); run check"
        )
    by_pack: dict[str, list[tuple[bytes, BlobLocation]]] = defaultdict(list)
    for chunk_id, loc in index.blobs.items():
        by_pack[loc.pack].append((chunk_id, loc))
    on_disk = list_packs(repo.data_dir)
    keep: set[str] = set()
    rewrite: set[str] = set()
    drop: set[str] = set()
    for pack, blobs in by_pack.items():
        used_bytes = sum(loc.length for c, loc in blobs if c in used)
        total = sum(loc.length for _, loc in blobs)
        if used_bytes == 0:
            drop.add(pack)
        elif total - used_bytes > REWRITE_GARBAGE_SHARE * total or not _header_ok(
            repo, pack, on_disk.get(pack)
        ):
            rewrite.add(pack)  # mostly garbage, or its header is damaged: copy what is used
        else:
            keep.add(pack)
    orphans = set(on_disk) - set(by_pack)
    new_blobs: dict[bytes, BlobLocation] = {
        c: loc for c, loc in index.blobs.items() if loc.pack in keep
    }
    if rewrite:
        writer = PackWriter(repo.data_dir, repo.keyring.session().cipher)
        reader = PackReader(repo)
        try:
            for pack in sorted(rewrite):
                for chunk_id, _loc in by_pack[pack]:
                    if chunk_id in used:
                        data = reader.read(chunk_id, index)  # authenticates before copying
                        writer.add(chunk_id, data)
            new_blobs.update(writer.flush())
        except BaseException:
            writer.abort()
            raise
        finally:
            reader.close()
            writer.close()
    old_index_files = list_index_files(repo.index_dir)
    changed = bool(drop or rewrite or len(old_index_files) != 1 or index.damaged)
    if changed:
        new_file = write_index_file(repo.index_dir, repo.keyring.index, new_blobs.items())
        for name in old_index_files:
            if name != new_file:
                with contextlib.suppress(FileNotFoundError):
                    (repo.index_dir / name).unlink()
        fsync_dir(repo.index_dir)
    for pack in sorted(drop | rewrite | orphans):
        path: Path = on_disk.get(pack) or pack_path(repo.data_dir, pack)
        with contextlib.suppress(FileNotFoundError):
            stats.bytes_freed += path.stat().st_size
            path.unlink()
    for sub in {pack_path(repo.data_dir, p).parent for p in drop | rewrite | orphans}:
        with contextlib.suppress(FileNotFoundError):
            fsync_dir(sub)
    _remove_leftovers(repo)
    stats.packs_deleted = len(drop)
    stats.packs_rewritten = len(rewrite)
    stats.orphan_packs_deleted = len(orphans)
    stats.chunks_kept = len(new_blobs)
    stats.chunks_removed = len(index.blobs) - len(new_blobs)
    return stats
