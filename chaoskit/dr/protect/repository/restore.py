"""Restore a snapshot: into a temporary directory beside the target, swapped in only
after every file was authenticated chunk by chunk and matched its SHA-256.

The target is therefore never half-restored: either it is the old directory or the
complete snapshot.  Restoring over a damaged directory is the normal repair case.  When
some files cannot be restored (damaged chunks), the target is left alone, the files that
did verify are kept in ``<target>.partial-<snapshot>`` and the error names the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from chaoskit.atomic import exchange_paths, fsync_dir
from chaoskit.dr.protect.repository.crypto import Buffer, Cipher
from chaoskit.dr.protect.repository.index import Index
from chaoskit.dr.protect.repository.packs import pack_cipher, pack_path, start_writeback
from chaoskit.dr.protect.repository.progress import Progress
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.snapshots import FileEntry, Snapshot
from chaoskit.errors import ConfigError, IntegrityError, RepositoryError


@dataclass
class RestoreResult:
    snapshot: Snapshot
    target: Path
    files: int = 0
    bytes: int = 0
    failures: dict[str, str] = field(default_factory=dict)


class PackReader:
    """Reads sealed blobs by location, keeping pack files open."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._fds: dict[str, int] = {}
        self._ciphers: dict[str, Cipher] = {}  # pack -> the key its blobs are sealed with
        self._sealed = Buffer(1 << 20)

    def read(self, chunk_id: bytes, index: Index) -> bytes:
        """The authenticated plaintext of one chunk; IntegrityError names the chunk."""
        return bytes(self.read_into(chunk_id, index, Buffer()))

    def read_into(self, chunk_id: bytes, index: Index, out: Buffer) -> memoryview:
        """Like :meth:`read`, into *out*'s memory (valid until *out* is reused)."""
        loc = index.get(chunk_id)
        if loc is None:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is not in the index")
        fd = self._fds.get(loc.pack)
        what = f"chunk {chunk_id.hex()[:16]} in pack {loc.pack[:16]}"
        if fd is None:
            try:
                fd = self._fds[loc.pack] = os.open(
                    pack_path(self.repo.data_dir, loc.pack), os.O_RDONLY
                )
            except OSError as e:
                raise IntegrityError(f"{what}: pack unreadable ({e.strerror})") from e
        cipher = self._ciphers.get(loc.pack)
        if cipher is None:
            cipher = self._ciphers[loc.pack] = pack_cipher(fd, loc.pack, self.repo.keyring)
        sealed = self._sealed.view(loc.length)
        if os.preadv(fd, [sealed], loc.offset) != loc.length:
            raise IntegrityError(f"{what}: pack is shorter than the index says")
        data = cipher.open_into(sealed, chunk_id, out, what=what)
        if len(data) != loc.raw_length:
            raise IntegrityError(f"{what}: length differs from the index")
        return data

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def swap_into_place(staged: Path, target: Path) -> None:
    """Make *staged* the *target*; the old target (if any) is deleted afterwards."""
    if target.exists() or target.is_symlink():
        if exchange_paths(staged, target):
            fsync_dir(target.parent)
            shutil.rmtree(staged, ignore_errors=True)
            return
        old = target.with_name(f".{target.name}.chaoskit-old-{os.urandom(4).hex()}")
        os.rename(target, old)
        os.rename(staged, target)
        fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(staged, target)
    fsync_dir(target.parent)


class _Restorer:
    def __init__(self, repo: Repository, index: Index, staged: Path, progress: Progress):
        self.reader = PackReader(repo)
        self.index = index
        self.staged = staged
        self.progress = progress
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="chaoskit-verify")
        self.sync_pool = ThreadPoolExecutor(1, thread_name_prefix="chaoskit-fsync")
        self.syncs: list[Future[None]] = []
        self.buffers = (Buffer(1 << 20), Buffer(1 << 20))  # decrypt into one, hash the other

    def file(self, entry: FileEntry) -> None:
        path = self.staged / _safe(entry.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        digest = hashlib.sha256()
        pending: Future[None] | None = None
        written = 0
        try:
            for number, chunk_id in enumerate(entry.chunk_ids):
                data = self.reader.read_into(chunk_id, self.index, self.buffers[number % 2])
                if pending is not None:
                    pending.result()
                pending = self.pool.submit(digest.update, data)
                view = data
                while view:
                    view = view[os.write(fd, view) :]
                if len(data) >= 1 << 20:
                    start_writeback(fd, written, len(data))
                written += len(data)
                self.progress.add(len(data))
            if pending is not None:
                pending.result()
            if written != entry.size or digest.hexdigest() != entry.sha256:
                raise IntegrityError(f"{entry.path}: restored content does not match its SHA-256")
        except BaseException:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    pending.result()
            os.close(fd)
            path.unlink()
            raise
        os.fchmod(fd, entry.mode)
        self.syncs.append(self.sync_pool.submit(_sync_close, fd, path, entry.mtime_ns))
        self.progress.add(0, 1)

    def finish(self) -> None:
        try:
            for future in self.syncs:
                future.result()
        finally:
            self.pool.shutdown(wait=True)
            self.sync_pool.shutdown(wait=True)
            self.reader.close()


def _safe(rel: str) -> str:
    """*rel* if it stays inside the restore directory; a manifest never names other places."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise IntegrityError(f"snapshot names the path {rel!r}, which leaves the target")
    return rel


def _sync_close(fd: int, path: Path, mtime_ns: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def run_restore(
    repo: Repository, ref: str, target: Path, *, progress: Progress | None = None
) -> RestoreResult:
    """Restore snapshot *ref* as directory *target* (see the module docstring)."""
    target = target.absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"restore target {target} exists and is not a directory")
    with repo.lock(exclusive=False):
        snap = repo.snapshot(ref)
        index = repo.load_index()
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.chaoskit-restore-{os.urandom(4).hex()}")
        staged.mkdir(mode=0o700)
        result = RestoreResult(snapshot=snap, target=target)
        prog = progress or Progress("restore")
        prog.total_bytes = sum(f.size for f in snap.files)
        prog.total_files = sum(f.type == "file" for f in snap.files)
        restorer = _Restorer(repo, index, staged, prog)
        try:
            for entry in snap.files:
                if entry.type == "dir":
                    (staged / _safe(entry.path)).mkdir(parents=True, exist_ok=True)
                    continue
                try:
                    restorer.file(entry)
                except IntegrityError as e:
                    result.failures[entry.path] = str(e)
                    continue
                result.files += 1
                result.bytes += entry.size
            restorer.finish()
            for entry in sorted(
                (f for f in snap.files if f.type == "dir"),
                key=lambda f: f.path.count("/"),
                reverse=True,
            ):
                os.chmod(staged / entry.path, entry.mode)
            staged.chmod(0o755)
            for dirpath, _, _ in os.walk(staged):  # every directory entry must be durable
                fsync_dir(dirpath)
            if result.failures:
                partial = target.with_name(f"{target.name}.partial-{snap.short_id}")
                shutil.rmtree(partial, ignore_errors=True)
                os.rename(staged, partial)
                names = "; ".join(f"{p}: {why}" for p, why in sorted(result.failures.items()))
                raise IntegrityError(
                    f"restore of snapshot {snap.short_id} failed for {len(result.failures)} "
                    f"file(s): {names}. {target} was left unchanged; the {result.files} "
                    f"verified file(s) are in {partial}"
                )
            swap_into_place(staged, target)
        except OSError as e:
            raise RepositoryError(f"restore into {target} failed: {e}") from e
        finally:
            restorer.finish()
            if staged.exists():
                shutil.rmtree(staged, ignore_errors=True)
        prog.done()
        return result
