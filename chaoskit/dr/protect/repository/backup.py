"""Back up one directory into a snapshot.

Order of durability: chunks go into packs (fsynced, renamed), then one index file for
the new chunks, then the snapshot.  A crash at any moment leaves at worst packs no index
names yet (prune removes them); it never leaves an index or snapshot pointing at data
that is not on disk.  Files unchanged since the parent snapshot (same size, mtime and
inode) are not read again.  The file SHA-256 runs in a worker thread beside the chunk
HMAC and encryption, which keeps both cores busy on large checkpoints.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import io
import os
import stat
import time
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chaoskit.dr.protect.repository.chunker import MAX_TENSOR_PIECE, Chunker, fixed_plan
from chaoskit.dr.protect.repository.crypto import Buffer
from chaoskit.dr.protect.repository.index import Index, write_index_file
from chaoskit.dr.protect.repository.packs import PackWriter
from chaoskit.dr.protect.repository.progress import Progress
from chaoskit.dr.protect.repository.repo import Repository, find_parent
from chaoskit.dr.protect.repository.snapshots import (
    FileEntry,
    Snapshot,
    new_snapshot_id,
    save_snapshot,
)
from chaoskit.dr.protect.repository.source import describe_source
from chaoskit.errors import ConfigError, RepositoryError

RACY_WINDOW = 2.0


def scan(source: Path, only: Iterable[str] | None = None) -> list[tuple[str, os.stat_result]]:
    """(relative path, lstat) of directories and regular files under *source*, sorted."""
    found: list[tuple[str, os.stat_result]] = []
    if only is not None:
        for rel in sorted(set(only)):
            found.append((rel, os.lstat(source / rel)))
        return found
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        base = Path(dirpath)
        for name in dirnames + sorted(filenames):
            full = base / name
            st = os.lstat(full)
            rel = full.relative_to(source).as_posix()
            if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                found.append((rel, st))
            else:
                warnings.warn(f"skipping {full}: not a regular file or directory", stacklevel=3)
    found.sort(key=lambda item: item[0])
    return found


class _Session:
    """State of one backup run: new chunks go to the pack writer exactly once."""

    def __init__(self, repo: Repository, index: Index, progress: Progress) -> None:
        self.repo = repo
        self.index = index
        self.sealer = repo.keyring.session()  # a writer's: a fresh data key, wrapped
        self.writer = PackWriter(repo.data_dir, self.sealer.cipher, envelope=self.sealer.envelope)
        self.chunker = Chunker()
        self.seen: set[bytes] = set()
        self.progress = progress
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="chaoskit-sha256")
        self.mac_key = repo.keyring.mac_key
        self.new_bytes = 0
        # two read buffers: the SHA-256 thread hashes one while the next is read into
        # the other, so large files cost no allocation (and no page faults) per chunk
        self.buffers = (Buffer(MAX_TENSOR_PIECE), Buffer(MAX_TENSOR_PIECE))

    def _store(self, data: bytes | memoryview) -> str:
        chunk_id = hmac.new(self.mac_key, data, hashlib.sha256).digest()
        if chunk_id not in self.seen and chunk_id not in self.index:
            self.seen.add(chunk_id)
            self.writer.add(chunk_id, data)
            self.new_bytes += len(data)
        return chunk_id.hex()

    def store_bytes(self, rel: str, data: bytes, mode: int, mtime_ns: int) -> FileEntry:
        chunks = [self._store(data[o : o + length]) for o, length in fixed_plan(len(data))]
        self.progress.add(len(data), 1)
        return FileEntry(
            path=rel,
            size=len(data),
            mode=mode,
            mtime_ns=mtime_ns,
            sha256=hashlib.sha256(data).hexdigest(),
            chunks=chunks,
        )

    def store_file(self, path: Path, rel: str, st: os.stat_result) -> FileEntry:
        digest = hashlib.sha256()
        chunks: list[str] = []
        pending: Future[None] | None = None
        size = 0
        with io.FileIO(path, "r") as f:
            for number, (_, length) in enumerate(self.chunker.plan(path, st.st_size)):
                data = _read_full(f, self.buffers[number % 2].view(length))
                if pending is not None:
                    pending.result()
                pending = self.pool.submit(digest.update, data)
                chunks.append(self._store(data))
                size += len(data)
                self.progress.add(len(data))
                if len(data) < length:
                    break
            if size == st.st_size and f.read(1):
                warnings.warn(
                    f"{path} grew during the backup; stored its first {size} bytes", stacklevel=4
                )
        if pending is not None:
            pending.result()
        if size != st.st_size:
            warnings.warn(f"{path} changed size during the backup", stacklevel=4)
        self.progress.add(0, 1)
        return FileEntry(
            path=rel,
            size=size,
            mode=stat.S_IMODE(st.st_mode),
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
            ino=st.st_ino,
            sha256=digest.hexdigest(),
            chunks=chunks,
        )


def _read_full(f: io.RawIOBase, view: memoryview) -> memoryview:
    """Fill *view* from *f*; shorter only at end of file."""
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return view[:got]


def run_backup(
    repo: Repository,
    source: Path,
    *,
    tags: Iterable[str] = (),
    files: Iterable[str] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    time: float | None = None,
    checkpoint_step: int | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    progress: Progress | None = None,
    summary: Mapping[str, Any] | None = None,
) -> Snapshot:
    """Back up *source* (or only *files* under it, plus in-memory *extra_files*)."""
    source = source.absolute()
    if not source.is_dir():
        raise ConfigError(f"backup source {source} is not a directory")
    hostname = os.uname().nodename
    with repo.lock(exclusive=False):
        index = repo.load_index()
        # a writer cannot read snapshots: no parent, every file is read (and deduplicated)
        snaps = repo.snapshots() if repo.keyring.can_read else []
        parent = find_parent(snaps, hostname, str(source))
        previous = {f.path: f for f in parent.files} if parent else {}
        # a file changed within the clock granularity of the parent's scan ("racily clean",
        # as git calls it) may show the same size and times with new content: read it again
        racy_after = (
            int((float(parent.summary.get("scan_started", 0)) - RACY_WINDOW) * 1e9) if parent else 0
        )
        scan_started = _now()
        try:
            entries = scan(source, files)
        except OSError as e:
            raise RepositoryError(f"cannot read backup source {source}: {e}") from e
        total = sum(st.st_size for _, st in entries if stat.S_ISREG(st.st_mode))
        prog = progress or Progress("backup")
        prog.total_bytes, prog.total_files = total, len(entries)
        session = _Session(repo, index, prog)
        manifest: list[FileEntry] = []
        reused = 0
        try:
            for rel, st in entries:
                if extra_files and rel in extra_files:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    manifest.append(FileEntry(path=rel, type="dir", mode=stat.S_IMODE(st.st_mode)))
                    continue
                old = previous.get(rel)
                if (
                    old is not None
                    and old.type == "file"
                    and old.size == st.st_size
                    and old.mtime_ns == st.st_mtime_ns
                    and old.ctime_ns == st.st_ctime_ns
                    and old.ino == st.st_ino
                    and old.mtime_ns < racy_after
                    and all(c in index for c in old.chunk_ids)
                ):
                    manifest.append(old)
                    reused += 1
                    prog.add(st.st_size, 1)
                    continue
                try:
                    manifest.append(session.store_file(source / rel, rel, st))
                except FileNotFoundError:  # removed since the scan, e.g. an old checkpoint
                    warnings.warn(
                        f"{source / rel} vanished during the backup; skipped", stacklevel=3
                    )
            for rel, data in sorted((extra_files or {}).items()):
                manifest.append(session.store_bytes(rel, data, 0o644, _now_ns()))
            located = session.writer.flush()
            if located:
                write_index_file(repo.index_dir, repo.keyring.index, located.items())
        except OSError as e:
            session.writer.abort()
            if e.errno == errno.ENOSPC:
                raise RepositoryError(
                    f"no space left on device while writing to {repo.root}: backup of {source} "
                    "abandoned, repository unchanged"
                ) from e
            raise RepositoryError(f"backup of {source} failed: {e}") from e
        except BaseException:
            session.writer.abort()
            raise
        finally:
            session.pool.shutdown(wait=True)
            session.writer.close()
        manifest.sort(key=lambda f: f.path)
        newest = max((st.st_mtime for _, st in entries), default=_now())
        info = describe_source(source, newest)
        snap = Snapshot(
            id=new_snapshot_id(),
            time=time if time is not None else info.time,
            backup_time=_now(),
            hostname=hostname,
            source=str(source),
            tags=sorted(set(tags)),
            checkpoint_step=checkpoint_step
            if checkpoint_step is not None
            else info.checkpoint_step,
            model_name=model_name or info.model_name,
            model_version=model_version or info.model_version,
            parent=parent.id if parent else None,
            files=manifest,
            summary={
                "files": sum(f.type == "file" for f in manifest),
                "bytes": total,
                "new_bytes": session.new_bytes,
                "new_chunks": len(session.seen),
                "stored_bytes": session.writer.bytes_written,
                "unchanged_files": reused,
                "bundle_files": session.chunker.bundle_files,
                "scan_started": scan_started,
                **(summary or {}),
            },
        )
        try:
            save_snapshot(repo.snap_dir, session.sealer, snap, repo.keyring)
        except OSError as e:
            raise RepositoryError(f"could not write snapshot to {repo.root}: {e}") from e
        prog.done()
        return snap


def _now() -> float:
    return time.time()


def _now_ns() -> int:
    return time.time_ns()
