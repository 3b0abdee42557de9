"""Snapshots: the sealed manifest of one backed-up directory, i.e. one recovery point.

A snapshot lists every file (relative path, size, mode, mtime, SHA-256 of the plaintext,
chunk ids) and the source's metadata.  ``time`` is when the *checkpoint* was created,
not when it was backed up: RPO is measured from it.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass, field
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


def _aad(snap_id: str) -> bytes:
    return b"chaoskit-snapshot\0" + snap_id.encode()


def new_snapshot_id() -> str:
    return os.urandom(16).hex()


def save_snapshot(snap_dir: Path, sealer: Sealer, snap: Snapshot) -> None:
    snap_dir.mkdir(parents=True, exist_ok=True)
    raw = zlib.compress(json.dumps(asdict(snap), separators=(",", ":")).encode(), 6)
    atomic_write_bytes(snap_dir / snap.id, sealer.seal_file(raw, _aad(snap.id)))


def load_snapshot(snap_dir: Path, keys: KeyRing, snap_id: str) -> Snapshot:
    what = f"snapshot {snap_id[:8]}"
    try:
        sealed = (snap_dir / snap_id).read_bytes()
    except FileNotFoundError as e:
        raise RepositoryError(f"{what}: no such snapshot") from e
    raw = keys.open_file(sealed, _aad(snap_id), what=what)
    try:
        return Snapshot.from_json(json.loads(zlib.decompress(raw)))
    except (ValueError, TypeError, zlib.error) as e:
        raise IntegrityError(f"{what}: undecodable manifest ({e})") from e


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
