"""The repository: a DR-site directory of config, keys, packs, index, snapshots and locks.

``init_repository`` and ``open_repository`` return a :class:`Repository`, whose methods
are the operations (backup, restore, verify, check, forget, prune, keys).  The config is
written last at init, so a half-made directory is never taken for a repository; it names
the format version, and a newer version is refused instead of being misread.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from chaoskit.atomic import atomic_write_bytes
from chaoskit.dr.protect.repository import keys as keyfiles
from chaoskit.dr.protect.repository.audit import AuditLog, public_text, signing_key
from chaoskit.dr.protect.repository.crypto import Cipher, MasterKey
from chaoskit.dr.protect.repository.index import Index, load_index
from chaoskit.dr.protect.repository.keyring import KeyRing
from chaoskit.dr.protect.repository.locks import STALE_AFTER, Lock
from chaoskit.dr.protect.repository.packs import list_packs, read_header
from chaoskit.dr.protect.repository.roles import ALLOWED, check_role, require
from chaoskit.dr.protect.repository.snapshots import (
    Snapshot,
    SnapshotHeader,
    load_header,
    load_snapshot,
    resolve,
    snapshot_ids,
)
from chaoskit.errors import IntegrityError, PermissionDeniedError, RepositoryError

if TYPE_CHECKING:
    from chaoskit.dr.protect.repository.check import CheckReport
    from chaoskit.dr.protect.repository.progress import Progress
    from chaoskit.dr.protect.repository.prune import ForgetResult, PruneStats
    from chaoskit.dr.protect.repository.restore import RestoreResult
    from chaoskit.dr.protect.repository.retention import RetentionPolicy
    from chaoskit.dr.protect.repository.verify import VerifyReport

FORMAT_VERSION = 1

_F = TypeVar("_F", bound=Callable[..., Any])


def _translating_os_errors(func: _F) -> _F:
    """An OSError (permissions, a vanished file, a full disk) becomes a RepositoryError
    naming the operation and the repository, so the CLI prints one line, no traceback."""

    @functools.wraps(func)
    def wrapper(self: Repository, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(self, *args, **kwargs)
        except OSError as e:
            raise RepositoryError(f"{func.__name__} on repository {self.root} failed: {e}") from e

    return wrapper  # type: ignore[return-value]


def _audited(operation: str, details: Callable[[Any], dict[str, Any]] | None = None) -> Any:
    """Append the operation's outcome (ok, refused or failed) to the audit log."""

    def decorate(func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(self: Repository, *args: Any, **kwargs: Any) -> Any:
            try:
                result = func(self, *args, **kwargs)
            except PermissionDeniedError:
                raise  # audited by require()
            except BaseException as e:
                self.audit(operation, "failed", error=f"{type(e).__name__}: {e}"[:300])
                raise
            self.audit(operation, "ok", **(details(result) if details else {}))
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


def _snapshot_details(snap: Snapshot) -> dict[str, Any]:
    return {"snapshot": snap.id, "source": snap.source, "step": snap.checkpoint_step,
            "model_version": snap.model_version}  # fmt: skip


def _config_body(config: dict[str, Any]) -> bytes:
    body = {k: v for k, v in config.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RepositoryError(f"repository {path} does not exist")
    if not path.is_dir():
        raise RepositoryError(f"{path} is not a chaoskit repository (not a directory)")
    try:
        config = json.loads((path / "config").read_bytes())
    except FileNotFoundError as e:
        raise RepositoryError(f"{path} is not a chaoskit repository (no config file)") from e
    except (OSError, ValueError) as e:
        raise IntegrityError(f"repository {path}: config file unreadable ({e})") from e
    if not isinstance(config, dict) or not isinstance(config.get("version"), int):
        raise IntegrityError(f"repository {path}: config file has no format version")
    if config["version"] > FORMAT_VERSION:
        raise RepositoryError(
            f"repository {path} has format version {config['version']}; this chaoskit reads "
            f"version {FORMAT_VERSION} only: upgrade chaoskit to use it"
        )
    return config


def init_repository(
    path: str | os.PathLike[str],
    password: str | bytes,
    *,
    scrypt_n: int = keyfiles.DEFAULT_SCRYPT_N,
) -> Repository:
    """Create a repository in an empty or missing directory and return it opened."""
    root = Path(path)
    if (root / "config").exists():
        raise RepositoryError(f"{root} is already a chaoskit repository")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise RepositoryError(f"{root} exists and is not an empty directory")
    pw = password.encode() if isinstance(password, str) else password
    master = MasterKey.generate()
    repo_id = os.urandom(16).hex()
    for sub in ("data", "index", "snapshots", "keys", "locks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key_id, secret = keyfiles.write_key_file(
        root / "keys", repo_id, master, pw, scrypt_n=scrypt_n
    )
    config: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "id": repo_id,
        "created": time.time(),
        "chunk_id": "hmac-sha256",
        "cipher": "aes-256-gcm",
    }
    config["mac"] = Cipher(master).mac(_config_body(config))
    atomic_write_bytes(root / "config", json.dumps(config, indent=1).encode())
    repo = Repository(root, config, master, key_id, secret)
    repo.audit("init", "ok", repository=repo_id, new_key=key_id, role="admin",
               signer=public_text(repo.audit_log.signer))  # fmt: skip
    return repo


def open_repository(path: str | os.PathLike[str], password: str | bytes) -> Repository:
    """Open an existing repository with the key file *password* opens, in that key's role
    (a writer key's password gives a write-only repository: see :attr:`Repository.role`);
    RepositoryError on a wrong password or a non-repository."""
    root = Path(path)
    config = _read_config(root)
    pw = password.encode() if isinstance(password, str) else password
    grant, key_id, secret = keyfiles.open_key(root / "keys", str(config.get("id")), pw)
    repo = Repository(root, config, grant, key_id, secret)
    try:
        repo.cipher.verify_mac(_config_body(config), str(config.get("mac")), what="config")
    except IntegrityError as e:
        warnings.warn(f"repository {root}: {e}", stacklevel=2)
    return repo


class Repository:
    """An opened repository: the opened key's secrets are in memory, operations take locks
    and are allowed by the key's role (:mod:`chaoskit.dr.protect.repository.roles`)."""

    def __init__(
        self,
        root: Path,
        config: dict[str, Any],
        grant: keyfiles.Grant | MasterKey,
        key_id: str,
        key_secret: bytes,
    ):
        if isinstance(grant, MasterKey):
            grant = keyfiles.Grant.of(grant)
        self.root = root
        self.config = config
        self.grant = grant
        self.role = grant.role
        self.master = grant.master  # None for a writer key
        self.key_id = key_id
        self.keyring = KeyRing(
            str(config["id"]), grant.mac_key, grant.master, grant.public, self._recipients
        )
        # the master cipher; a writer's has the index key (it opens index files, and its
        # MAC and chunk ids are the repository's), never a key that opens data
        self.cipher: Cipher = self.keyring.master_cipher or self.keyring.index
        self.data_dir = root / "data"
        self.index_dir = root / "index"
        self.snap_dir = root / "snapshots"
        self.keys_dir = root / "keys"
        self.locks_dir = root / "locks"
        self.stale_lock_after = STALE_AFTER
        self.audit_log = AuditLog(root, signing_key(key_secret), key_id, self.role)

    def audit(self, operation: str, outcome: str, **details: Any) -> None:
        """Append to the audit log; a log that cannot be written (a read-only DR-site
        mount) is warned about, it does not undo the operation."""
        try:
            self.audit_log.append(operation, outcome, **details)
        except OSError as e:
            warnings.warn(f"repository {self.root}: audit entry for {operation} not "
                          f"written ({e})", stacklevel=3)  # fmt: skip

    @property
    def id(self) -> str:
        return str(self.config["id"])

    def require(self, operation: str) -> None:
        """PermissionDeniedError (naming key, role and operation) unless the role allows
        it; a refusal is audited."""
        try:
            require(self.role, self.key_id, operation)
        except PermissionDeniedError as e:
            self.audit(operation, "refused", reason=str(e))
            raise

    def allows(self, operation: str) -> bool:
        """Whether this key's role may run *operation* (e.g. ``"snapshots"``)."""
        return operation in ALLOWED.get(self.role, frozenset())

    def _recipients(self) -> dict[bytes, Any]:
        if self.master is None:
            return {}
        return keyfiles.load_recipients(self.keys_dir, self.id, self.master)

    @_translating_os_errors
    def lock(self, *, exclusive: bool) -> Lock:
        """Take a lock.  A read-only repository (a DR site mounted read-only) can still be
        read and restored from: shared operations go on without a lock, with a warning."""
        lock = Lock(self.locks_dir, exclusive=exclusive, stale_after=self.stale_lock_after)
        try:
            return lock.acquire()
        except OSError as e:
            if exclusive or e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            warnings.warn(
                f"repository {self.root} is read-only ({e.strerror}): reading without a lock",
                stacklevel=3,
            )
            return lock

    # -- reading ---------------------------------------------------------------------
    def load_index(self) -> Index:
        """All index files; packs a damaged index file covered are re-read from headers."""
        index = load_index(self.index_dir, self.keyring)
        if index.damaged and self.keyring.can_read:  # a writer cannot read pack headers
            known = index.packs()
            for pack_id, path in list_packs(self.data_dir).items():
                if pack_id in known:
                    continue
                try:
                    for chunk_id, loc in read_header(path, pack_id, self.keyring):
                        index.blobs.setdefault(chunk_id, loc)
                except (OSError, IntegrityError):
                    continue
        return index

    def load_snapshots(self) -> tuple[list[Snapshot], dict[str, str]]:
        """(readable snapshots, damaged snapshot id -> problem)."""
        self.require("snapshots")
        snaps, damaged = [], {}
        for snap_id in snapshot_ids(self.snap_dir):
            try:
                snaps.append(load_snapshot(self.snap_dir, self.keyring, snap_id))
            except IntegrityError as e:
                damaged[snap_id] = str(e)
            except RepositoryError:  # removed meanwhile
                continue
        snaps.sort(key=lambda s: (s.time, s.backup_time))
        return snaps, damaged

    def snapshots(self) -> list[Snapshot]:
        """Readable snapshots, oldest checkpoint first; damaged ones are warned about."""
        snaps, damaged = self.load_snapshots()
        for problem in damaged.values():
            warnings.warn(f"skipping unreadable {problem}", stacklevel=2)
        return snaps

    def recovery_points(self) -> list[SnapshotHeader]:
        """Every readable snapshot's header, oldest checkpoint first: what a writer key may
        know (unreadable ones are warned about)."""
        self.require("list")
        headers = []
        for snap_id in snapshot_ids(self.snap_dir):
            try:
                headers.append(load_header(self.snap_dir, self.keyring, snap_id))
            except IntegrityError as e:
                warnings.warn(f"skipping unreadable {e}", stacklevel=2)
            except RepositoryError:  # removed meanwhile
                continue
        headers.sort(key=lambda h: (h.time, h.backup_time))
        return headers

    def snapshot(self, ref: str) -> Snapshot:
        """A snapshot by id, unique prefix or ``latest``."""
        self.require("snapshots")
        if ref != "latest" and len(ref) == 32 and (self.snap_dir / ref).exists():
            return load_snapshot(self.snap_dir, self.keyring, ref)
        matches = [i for i in snapshot_ids(self.snap_dir) if i.startswith(ref)]
        if ref != "latest" and len(matches) == 1:
            return load_snapshot(self.snap_dir, self.keyring, matches[0])
        return resolve(self.snapshots(), ref)

    # -- operations (implemented in their own modules) -------------------------------
    @_audited("backup", _snapshot_details)
    @_translating_os_errors
    def backup(self, source: str | os.PathLike[str], **kwargs: Any) -> Snapshot:
        self.require("backup")
        from chaoskit.dr.protect.repository.backup import run_backup

        return run_backup(self, Path(source), **kwargs)

    @_audited("restore", lambda r: {"snapshot": r.snapshot.id, "target": str(r.target),
                                    "files": r.files, "failures": len(r.failures)})  # fmt: skip
    @_translating_os_errors
    def restore(
        self, ref: str, target: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> RestoreResult:
        self.require("restore")
        from chaoskit.dr.protect.repository.restore import run_restore

        return run_restore(self, ref, Path(target), progress=progress)

    @_audited("verify", lambda r: {"snapshot": r.snapshot.id, "source": str(r.source),
                                   "ok": r.ok})  # fmt: skip
    @_translating_os_errors
    def verify(self, source: str | os.PathLike[str], ref: str = "latest") -> VerifyReport:
        self.require("verify")
        from chaoskit.dr.protect.repository.verify import verify_directory

        return verify_directory(self, Path(source), ref)

    @_audited("check", lambda r: {"ok": r.ok, "problems": len(r.problems),
                                  "bytes_read": r.bytes_read})  # fmt: skip
    @_translating_os_errors
    def check(self, *, read_data: bool = False, progress: Progress | None = None) -> CheckReport:
        self.require("check")
        from chaoskit.dr.protect.repository.check import run_check

        return run_check(self, read_data=read_data, progress=progress)

    @_audited("forget", lambda r: {"removed": [s.id for s in r.removed],
                                   "kept": len(r.kept), "pruned": r.prune is not None})  # fmt: skip
    @_translating_os_errors
    def forget(
        self,
        policy: RetentionPolicy | None = None,
        *,
        ids: Sequence[str] = (),
        prune: bool = False,
        dry_run: bool = False,
    ) -> ForgetResult:
        self.require("forget")
        from chaoskit.dr.protect.repository.prune import run_forget
        from chaoskit.dr.protect.repository.retention import RetentionPolicy

        return run_forget(
            self, policy or RetentionPolicy(), ids=tuple(ids), prune=prune, dry_run=dry_run
        )

    @_audited("prune", lambda r: {"packs_deleted": r.packs_deleted,
                                  "bytes_freed": r.bytes_freed})  # fmt: skip
    @_translating_os_errors
    def prune(self) -> PruneStats:
        self.require("prune")
        from chaoskit.dr.protect.repository.prune import run_prune

        return run_prune(self)

    # -- keys --------------------------------------------------------------------------
    @_translating_os_errors
    def add_key(
        self, password: str | bytes, *, role: str = "admin", scrypt_n: int | None = None
    ) -> str:
        """Add a key file for *password* with *role*; a writer's holds no key that reads
        data, only the chunk-id key and the public key its backups are sealed to."""
        self.require("key add")
        check_role(role)
        if role == "writer":
            grant = keyfiles.Grant.writer(self.grant.mac_key, self._public_key())
        else:
            assert self.master is not None  # admin keys hold it
            grant = keyfiles.Grant.of(self.master, role)
        key_id, secret = self._write_key(grant, password, scrypt_n)
        self.audit("key add", "ok", new_key=key_id, role=role,
                   signer=public_text(signing_key(secret)))  # fmt: skip
        return key_id

    def _write_key(
        self, grant: keyfiles.Grant, password: str | bytes, scrypt_n: int | None
    ) -> tuple[str, bytes]:
        pw = password.encode() if isinstance(password, str) else password
        n = scrypt_n or keyfiles.DEFAULT_SCRYPT_N
        return keyfiles.write_key_file(self.keys_dir, self.id, grant, pw, scrypt_n=n)

    def _public_key(self) -> bytes:
        """The repository's recipient public key, made on first need."""
        assert self.master is not None
        recipients = self._recipients()
        if recipients:
            return next(iter(recipients))
        return keyfiles.write_recipient(self.keys_dir, self.id, self.master)

    def list_keys(self) -> list[keyfiles.KeyInfo]:
        self.require("key list")
        return keyfiles.list_keys(self.keys_dir, self.key_id)

    @_translating_os_errors
    def remove_key(self, key_id: str) -> str:
        self.require("key remove")
        removed = keyfiles.remove_key(self.keys_dir, key_id, self.key_id)
        self.audit("key remove", "ok", removed_key=removed)
        return removed

    @_translating_os_errors
    def change_password(self, new_password: str | bytes, *, scrypt_n: int | None = None) -> str:
        """Write a key file for the new password (same role), then remove the current one."""
        self.require("key passwd")
        old = self.key_id
        new, secret = self._write_key(self.grant, new_password, scrypt_n)
        keyfiles.remove_key(self.keys_dir, old, new)
        # signed by the old key, which introduces the new one and leaves the log with it
        self.audit("key passwd", "ok", new_key=new, removed_key=old,
                   signer=public_text(signing_key(secret)))  # fmt: skip
        self.key_id = new
        self.audit_log = AuditLog(self.root, signing_key(secret), new, self.role)
        return new


def find_parent(snapshots: Sequence[Snapshot], hostname: str, source: str) -> Snapshot | None:
    """Newest earlier snapshot of the same source on the same host (to skip unchanged files)."""
    same = [s for s in snapshots if s.hostname == hostname and s.source == source]
    return max(same, key=lambda s: s.backup_time) if same else None
