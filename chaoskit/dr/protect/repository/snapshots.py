"""Snapshots: the sealed manifest of one backed-up directory, i.e. one recovery point.

A snapshot lists every file (relative path, size, mode, mtime, SHA-256 of the plaintext,
chunk ids) and the source's metadata.  ``time`` is when the *checkpoint* was created,
not when it was backed up: RPO is measured from it.

A snapshot file begins with its *header* (:class:`SnapshotHeader`: when, from where,
which checkpoint, no file list), sealed with the index key that every key holds, then
the whole manifest sealed as the backup sealed it.  A writer key thus knows which
recovery points exist and when they were made (the backup agent must not back up a
checkpoint twice; the replicator reports the DR site's newest recovery point) while it
still cannot learn what they contain.  A key that reads the manifest checks that the
header says the same.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaoskit.atomic import atomic_write_bytes, fsync_dir
from chaoskit.dr.protect.repository.keyring import KeyRing, Sealer
from chaoskit.errors import ConfigError, IntegrityError, RepositoryError


@dataclass
class FileEntry:
    """One regular file or directory of a snapshot."""

    path: str
    type: str = "file"  # "file" | "dir"
    size: int = 0
    mode: int = 0o644
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0
    sha256: str = ""
    chunks: list[str] = field(default_factory=list)

    @property
    def chunk_ids(self) -> list[bytes]:
        return [bytes.fromhex(c) for c in self.chunks]


@dataclass(frozen=True)
class SnapshotHeader:
    """What a snapshot says about itself without its file list: readable by every key."""

    id: str
    time: float
    backup_time: float
    hostname: str
    source: str
    tags: list[str] = field(default_factory=list)
    checkpoint_step: int | None = None
    model_name: str | None = None
    model_version: str | None = None
    parent: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Snapshot:
    """A recovery point: where it came from, when the checkpoint was made, what it holds."""

    id: str
    time: float
    backup_time: float
    hostname: str
    source: str
    tags: list[str] = field(default_factory=list)
    checkpoint_step: int | None = None
    model_name: str | None = None
    model_version: str | None = None
    parent: str | None = None
    files: list[FileEntry] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def time_iso(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).isoformat(timespec="seconds")

    def chunk_ids(self) -> set[bytes]:
        return {bytes.fromhex(c) for f in self.files for c in f.chunks}

    def header(self) -> SnapshotHeader:
        return SnapshotHeader(**{f.name: getattr(self, f.name) for f in fields(SnapshotHeader)})

    def to_json(self, *, with_files: bool = True) -> dict[str, Any]:
        doc = asdict(self)
        if not with_files:
            doc.pop("files")
        doc["time_iso"] = self.time_iso
        doc["short_id"] = self.short_id
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Snapshot:
        files = [FileEntry(**f) for f in doc.pop("files", [])]
        doc.pop("time_iso", None)
        doc.pop("short_id", None)
        return cls(files=files, **doc)


HEADER_MAGIC = b"CKSNAPH1"
_HEADER_LEN = struct.Struct("<I")


def _aad(snap_id: str) -> bytes:
    return b"chaoskit-snapshot\0" + snap_id.encode()


def _header_aad(snap_id: str) -> bytes:
    return b"chaoskit-snapshot-header\0" + snap_id.encode()


def new_snapshot_id() -> str:
    return os.urandom(16).hex()


def _pack(doc: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)


def save_snapshot(snap_dir: Path, sealer: Sealer, snap: Snapshot, keys: KeyRing) -> None:
    snap_dir.mkdir(parents=True, exist_ok=True)
    header = keys.index.seal(_pack(asdict(snap.header())), _header_aad(snap.id))
    body = sealer.seal_file(_pack(asdict(snap)), _aad(snap.id))
    blob = HEADER_MAGIC + _HEADER_LEN.pack(len(header)) + header + body
    atomic_write_bytes(snap_dir / snap.id, blob)


def _read(snap_dir: Path, snap_id: str) -> tuple[bytes | None, bytes]:
    """(sealed header, sealed manifest) of a snapshot file; no header in an older one."""
    try:
        blob = (snap_dir / snap_id).read_bytes()
    except FileNotFoundError as e:
        raise RepositoryError(f"snapshot {snap_id[:8]}: no such snapshot") from e
    start = len(HEADER_MAGIC) + _HEADER_LEN.size
    if not blob.startswith(HEADER_MAGIC) or len(blob) < start:
        return None, blob
    (length,) = _HEADER_LEN.unpack_from(blob, len(HEADER_MAGIC))
    if start + length > len(blob):
        raise IntegrityError(f"snapshot {snap_id[:8]}: truncated header")
    return blob[start : start + length], blob[start + length :]


def _unpack(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(zlib.decompress(raw))
    except (ValueError, zlib.error) as e:
        raise IntegrityError(f"{what}: undecodable manifest ({e})") from e
    if not isinstance(doc, dict):
        raise IntegrityError(f"{what}: undecodable manifest (not an object)")
    return doc


def load_snapshot(snap_dir: Path, keys: KeyRing, snap_id: str) -> Snapshot:
    what = f"snapshot {snap_id[:8]}"
    header, sealed = _read(snap_dir, snap_id)
    doc = _unpack(keys.open_file(sealed, _aad(snap_id), what=what), what)
    try:
        snap = Snapshot.from_json(doc)
    except TypeError as e:
        raise IntegrityError(f"{what}: undecodable manifest ({e})") from e
    if header is not None and _header(keys, snap_id, header) != snap.header():
        raise IntegrityError(f"{what}: its header does not match its manifest")
    return snap


def load_header(snap_dir: Path, keys: KeyRing, snap_id: str) -> SnapshotHeader:
    """The snapshot's header; a key that reads manifests opens an older, header-less one."""
    header, _ = _read(snap_dir, snap_id)
    if header is None:
        if not keys.can_read:
            raise IntegrityError(f"snapshot {snap_id[:8]}: written before snapshot headers; "
                                 "only a key that reads data can list it")  # fmt: skip
        return load_snapshot(snap_dir, keys, snap_id).header()
    return _header(keys, snap_id, header)


def _header(keys: KeyRing, snap_id: str, sealed: bytes) -> SnapshotHeader:
    what = f"snapshot {snap_id[:8]} header"
    doc = _unpack(keys.index.open(sealed, _header_aad(snap_id), what=what), what)
    try:
        header = SnapshotHeader(**doc)
    except TypeError as e:
        raise IntegrityError(f"{what}: undecodable ({e})") from e
    if header.id != snap_id:
        raise IntegrityError(f"{what}: names snapshot {header.id[:8]}")
    return header


def snapshot_ids(snap_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in snap_dir.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return []


def remove_snapshot(snap_dir: Path, snap_id: str) -> None:
    try:
        (snap_dir / snap_id).unlink()
    except FileNotFoundError:
        return
    fsync_dir(snap_dir)


def resolve(snapshots: list[Snapshot], ref: str) -> Snapshot:
    """A snapshot by id, unique id prefix, or ``latest`` (newest checkpoint time)."""
    if not snapshots:
        raise RepositoryError("the repository has no snapshots")
    if ref == "latest":
        return max(snapshots, key=lambda s: (s.time, s.backup_time))
    matches = [s for s in snapshots if s.id.startswith(ref)]
    if len(matches) != 1 or not ref:
        raise ConfigError(f"snapshot {ref!r} matches {len(matches)} snapshots, expected one")
    return matches[0]
